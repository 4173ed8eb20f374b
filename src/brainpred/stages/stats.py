"""Stage entry point of ``workflow/rules/stats.smk``: the main analysis' group maps and region
tables (:func:`brainpred.group.forecast_group`, :func:`brainpred.tables.group_region_tables`)."""

from __future__ import annotations

import logging

import numpy as np

from .. import group, io, tables
from ..errors import DataError
from .common import atlas_levels, load_ceilings, read_subject_scores

__all__ = ["make_group"]

log = logging.getLogger(__name__)


def make_group(subject_npzs, config, outputs, ceiling_npzs=(), labels_paths=None,
               surface_paths=None):
    """Rule ``group``: group maps (npz + GIfTI) and region tables of every score.

    Parameters
    ----------
    subject_npzs : list of path
    config : dict
    outputs : dict
        ``npz``, ``regions`` (tidy per-subject region table), ``regions_stats`` (group
        statistics per region) and GIfTI pairs ``<name>_L``/``<name>_R`` for ``brain``,
        ``brain_fdr``, ``forecast`` (mean F(d), one data array per distance), ``forecast_fdr``
        (the same where ``forecast_q <= stats.fdr_q`` and the mean is above 0, NaN elsewhere),
        ``dstar``, ``gain``, ``gain_maxd`` and, with noise ceilings, ``ceiling`` and
        ``pct_ceiling`` (any pair missing from ``outputs`` is not written), each with its JSON
        sidecar.
    ceiling_npzs : list of path
        Noise ceilings of the same subjects (empty: no ceiling).
    labels_paths, surface_paths : (path, path) or None
        Atlas and surfaces (:func:`brainpred.stages.common.atlas_levels`).

    The npz holds :func:`brainpred.group.forecast_group` and ``subjects``.
    """
    R, F, distances, subjects = read_subject_scores(subject_npzs)
    NC = load_ceilings(ceiling_npzs, subjects) if ceiling_npzs else None
    min_c = float(config["noise_ceiling"]["min_ceiling"])
    g = group.forecast_group(R, F, distances, config["stats"], NC=NC, min_ceiling=min_c)
    g["subjects"] = subjects
    io.save_npz(outputs["npz"], **g)
    maps = {"brain": (g["brain_score"], "mean brain score"),
            "brain_fdr": (g["brain_score_fdr"], "mean brain score, FDR-significant vertices"),
            "dstar": (g["dstar"], "forecast distance d*"),
            "gain": (g["gain"], f"forecast gain at d* = {g['gain_dstar']:g} (%)"),
            "gain_maxd": (g["gain_maxd"], "max over d of the forecast gain (%), biased upward")}
    if "noise_ceiling" in g:
        maps["ceiling"] = (g["noise_ceiling"], "mean noise ceiling")
        maps["pct_ceiling"] = (g["percent_ceiling"], "brain score (% of noise ceiling)")
    for key, (values, name) in maps.items():
        if f"{key}_L" in outputs:
            io.write_surface_maps(outputs[f"{key}_L"], outputs[f"{key}_R"], values[None],
                                  [name])
    # F(d): one data array per distance, and the same where it passes BH-FDR across vertices
    fdr = float(config["stats"]["fdr_q"])
    F_fdr = np.where((g["forecast_q"] <= fdr) & (np.nan_to_num(g["forecast_score"]) > 0),
                     g["forecast_score"], np.nan)
    for key, values, name in (("forecast", g["forecast_score"], "mean forecast score"),
                              ("forecast_fdr", F_fdr,
                               "mean forecast score, FDR-significant vertices")):
        if f"{key}_L" in outputs:
            io.write_surface_maps(outputs[f"{key}_L"], outputs[f"{key}_R"], values,
                                  [f"{name} d={int(d)}" for d in distances],
                                  distances=distances)
    levels = atlas_levels(labels_paths, surface_paths, config)
    if levels is not None and len(levels["parcel"][0]) != R.shape[1]:
        raise DataError(f"{labels_paths[0]}: {len(levels['parcel'][0])} labelled vertices, the "
                        f"score maps have {R.shape[1]}. Use labels of the same surface "
                        "(dataset.space).")
    scores, stats_table = tables.group_region_tables(R, F, distances, subjects, levels,
                                                     config["stats"], NC=NC, min_ceiling=min_c)
    io.write_tsv(outputs["regions"], scores)
    if "regions_stats" in outputs:
        io.write_tsv(outputs["regions_stats"], stats_table)
    n_mask = int(np.sum(g["dstar_mask"]))
    log.info("group: %d subjects; peak mean brain score %.3f; %d FDR-significant vertices; "
             "d* shown on %d vertices", len(g["subjects"]), float(np.nanmax(g["brain_score"])),
             int(np.sum(g["brain_reject"])), n_mask)
    if "noise_ceiling" in g:
        log.info("group: peak mean noise ceiling %.3f", float(np.nanmax(g["noise_ceiling"])))
