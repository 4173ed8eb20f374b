"""Stage entry points of ``workflow/rules/mapping.smk``: the ridge fits of the main analysis
and each subject's score maps; :func:`fit_conditions` is the fit loop of every analysis."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .. import design, io, mapping, tables
from .. import provenance as prov
from ..conditions import MAIN, blocks_and_designs, conditions
from ..errors import DataError
from .common import (load_atlas_labels, load_story_features, mapping_kwargs, nuisance_audio,
                     scores_provenance, subject_bold)

__all__ = ["fit_conditions", "make_fit_scores", "make_subject_scores"]

log = logging.getLogger(__name__)


def fit_conditions(conds, subjects, table, sources, bold_paths, config, where="run table",
                   what="analysis", return_alphas=False):
    """The fit loop of every analysis: scores of every condition for each subject.

    Each subject's design (the TR-level arrays of the conditions' blocks,
    :func:`brainpred.design.block_design`) is built; subjects whose designs are identical
    (the same stories in the same order and onsets) are fitted in one call of
    :func:`brainpred.mapping.design_scores` per ridge penalty (``mapping.penalty``, or the
    condition's own ``penalty``), their vertices stacked as targets, so the PCAs and fold
    decompositions are computed once; a subject whose design differs (another audio onset,
    say) is fitted on its own.

    Parameters
    ----------
    conds : list of Condition
    subjects : list of str
    table : DataFrame
        The run table (``kept``, ``subject``, ``basename``, ``story``, ``audio_onset``, ``tr``,
        ``n_trs``).
    sources : brainpred.design.WordSources
    bold_paths : dict
        ``basename -> BOLD .npy`` for the runs of every subject.
    config : dict
        ``features`` (``tr_offset``, ``tr_method``) and ``mapping``.
    where, what : str
        The run table's path and the analysis, for messages.
    return_alphas : bool
        Also return the ridge penalty chosen for each condition, outer fold and vertex.

    Returns
    -------
    dict
        ``subject -> float32 ndarray (n_conditions, V)``: the brain score of each condition.
    dict
        Only if ``return_alphas``: ``subject -> float32 ndarray (n_conditions, n_folds, V)``,
        the alpha chosen by the inner CV (NaN where a vertex is not fitted).
    """
    feat, mc = config["features"], config["mapping"]
    blocks, designs = blocks_and_designs(conds)
    penalties = [c.penalty or mc["penalty"] for c in conds]
    shared = []     # [(arrays, lengths, groups, [subjects])]
    for subject in subjects:
        runs = table[table["kept"] & (table["subject"] == subject)]
        if runs.empty:
            raise DataError(f"{where}: no kept run for {subject}.")
        arrays, lengths, groups = design.block_design(runs, sources, blocks,
                                                      tr_offset=int(feat["tr_offset"]),
                                                      tr_method=feat["tr_method"])
        for g in shared:
            if g[1] == lengths and all(np.array_equal(a, b) for a, b in zip(g[0], arrays)):
                g[3].append(subject)
                break
        else:
            shared.append((arrays, lengths, groups, [subject]))
    scores, alphas = {}, {}
    for n, (arrays, lengths, groups, members) in enumerate(shared):
        Y_list = []
        for subject in members:
            runs = table[table["kept"] & (table["subject"] == subject)]
            Y = subject_bold(runs, bold_paths, zscore=mc["zscore_runs"])
            if Y.shape[0] != arrays[0].shape[0]:
                raise DataError(f"{subject}: BOLD has {Y.shape[0]} TRs, the design "
                                f"{arrays[0].shape[0]}.")
            Y_list.append(Y)
        log.info("%s: fit %d/%d: %s, %d TRs, %d vertices each, %d conditions (%d blocks), "
                 "fitted together", what, n + 1, len(shared), ", ".join(members),
                 arrays[0].shape[0], Y_list[0].shape[1], len(conds), len(blocks))
        kwargs = mapping_kwargs(config, groups)
        for penalty in dict.fromkeys(penalties):
            # one call per penalty (a condition may set its own, e.g. the paper's method)
            idx = [i for i, p in enumerate(penalties) if p == penalty]
            results, chosen = mapping.design_scores(arrays, [designs[i] for i in idx], Y_list,
                                                    lengths, return_alphas=True,
                                                    **{**kwargs, "penalty": penalty})
            for subject, s, a in zip(members, results, chosen):
                if subject not in scores:
                    scores[subject] = np.full((len(conds), s.shape[1]), np.nan, np.float32)
                    alphas[subject] = np.full((len(conds), *a.shape[1:]), np.nan, np.float32)
                scores[subject][idx] = s
                alphas[subject][idx] = a
        del Y_list
    return (scores, alphas) if return_alphas else scores


def make_fit_scores(subjects, run_table_tsv, feature_paths, bold_paths, config, out_npz,
                    words_paths=None, audio_paths=None):
    """Rule ``fit_scores``: brain and forecast scores of subjects who share a stimulus.

    The main analysis' conditions (:func:`brainpred.conditions.conditions` ``"main"``: X, and
    X with each forecast window) go through the fit loop of every analysis
    (:func:`fit_conditions`).

    Parameters
    ----------
    subjects : list of str
    run_table_tsv : path
    feature_paths : dict
        ``story -> features .npz``.
    bold_paths : dict
        ``basename -> BOLD .npy`` for the runs of every subject.
    config : dict
        ``features``, ``forecast``, ``mapping`` and, when present, ``model`` (the feature
        caches' recorded model settings are then checked against it).
    out_npz : path
        Written with ``distances``, ``conditions`` (names: ``base``, then ``d-<d>`` per
        distance) and, per subject, ``<subject>__brain_score`` (V,),
        ``<subject>__forecast_brain_score`` (n_d, V) and ``<subject>__alpha``
        (n_conditions, n_folds, V: the ridge penalty chosen by the inner CV in each outer fold,
        NaN where a vertex is not fitted), and ``provenance`` (:func:`scores_provenance`).
    words_paths : dict, optional
        ``story -> words table``: the feature caches' recorded words sha256 are checked
        against them (without: only the recorded story, kind and model consistency).
    audio_paths : dict, optional
        ``story -> .wav``, read when ``nuisance`` lists ``audio_envelope`` (default:
        ``config["audio"]``, where the workflow's params put them).
    """
    table = io.read_tsv(run_table_tsv, dtype={"run": str})
    kept = table[table["kept"] & table["subject"].isin(list(subjects))]
    story_feats, records = load_story_features(feature_paths, list(pd.unique(kept["story"])),
                                               words_paths=words_paths,
                                               model_cfg=config.get("model"))
    sources = design.WordSources({s: w for s, (_, w) in story_feats.items()},
                                 {s: a for s, (a, _) in story_feats.items()},
                                 audio=nuisance_audio(config, story_feats, audio_paths))
    n_layers = next(iter(story_feats.values()))[0].shape[0] - 1
    conds = conditions(MAIN, config, n_layers)
    scores, alphas = fit_conditions(conds, subjects, table, sources, bold_paths, config,
                                    where=run_table_tsv, what="main analysis",
                                    return_alphas=True)
    out = {"distances": np.array([int(c.x) for c in conds[1:]]),
           "conditions": np.array([c.name for c in conds]),
           "subjects": np.array(list(subjects)),
           prov.KEY: prov.to_array(scores_provenance("fit_scores", subjects, list(records),
                                                     records, config,
                                                     file=Path(out_npz).name))}
    for subject in subjects:
        out[f"{subject}__brain_score"] = scores[subject][0]
        out[f"{subject}__forecast_brain_score"] = scores[subject][1:]
        out[f"{subject}__alpha"] = alphas[subject]
    io.save_npz(out_npz, **out)
    log.info("main analysis: wrote %s (%s)", out_npz, ", ".join(subjects))


def make_subject_scores(subject, fit_npz, outputs, labels_paths=None):
    """Rule ``subject_scores``: one subject's score maps (npz, GIfTI) and region table.

    Parameters
    ----------
    subject : str
    fit_npz : path
        Output of :func:`make_fit_scores` holding this subject.
    outputs : dict
        ``npz``, ``brain_L``, ``brain_R``, ``forecast_L``, ``forecast_R``, ``regions`` paths.
        The npz holds ``subject``, ``distances``, ``brain_score`` (V,),
        ``forecast_brain_score`` and ``forecast_score`` (n_d, V), ``provenance`` and, when the
        fit file has them, ``alpha`` (n_conditions, n_folds, V: the ridge penalty chosen in
        each outer fold) with ``conditions`` (their names: ``base``, ``d-<d>``...).
    labels_paths : (path, path) or None
        Region labels of the left and right hemispheres.
    """
    fit = io.load_npz(fit_npz)
    rec = prov.read(fit_npz, fit)
    prov.check(fit_npz, rec, {"kind": "fit_scores"}, what="fit score file")
    prov.check_file_name(fit_npz, rec, what="fit score file")
    if subject not in rec.get("subjects", []):
        raise DataError(f"{fit_npz}: this fit score file was made for subjects "
                        f"{rec.get('subjects')}, not {subject}: {prov.FIX}.")
    key = f"{subject}__brain_score"
    if key not in fit:
        raise DataError(f"{fit_npz}: holds no scores of {subject}; re-run snakemake.")
    distances = [int(d) for d in fit["distances"]]
    if distances != rec.get("distances"):
        raise DataError(f"{fit_npz}: distances {distances}, its provenance records "
                        f"{rec.get('distances')}: {prov.FIX}.")
    R_X, R_XW = fit[key], fit[f"{subject}__forecast_brain_score"]
    F = (R_XW - R_X[None]).astype(np.float32)
    mine = {**rec, "kind": "subject_scores", "subject": subject, "fit": Path(fit_npz).name,
            "file": Path(outputs["npz"]).name, "brainpred_version": prov.brainpred_version()}
    extra = {}
    if f"{subject}__alpha" in fit:          # fit files written before the alphas were kept
        extra = {"alpha": fit[f"{subject}__alpha"], "conditions": fit["conditions"]}
    io.save_npz(outputs["npz"], subject=np.array(subject), distances=np.array(distances),
                brain_score=R_X, forecast_brain_score=R_XW, forecast_score=F, **extra,
                **{prov.KEY: prov.to_array(mine)})
    io.write_surface_maps(outputs["brain_L"], outputs["brain_R"], R_X[None], ["brain score"])
    io.write_surface_maps(outputs["forecast_L"], outputs["forecast_R"], F,
                       [f"forecast score d={d}" for d in distances])
    labels, names = load_atlas_labels(labels_paths, len(R_X))
    regions = tables.region_table(R_X, F, distances, labels, names)
    regions.insert(0, "subject", subject)
    io.write_tsv(outputs["regions"], regions)
    log.info("%s: wrote its score maps and region table (%s)", subject, outputs["npz"])
