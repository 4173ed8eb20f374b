"""Stage entry points of ``workflow/rules/report.smk``: the main analysis' figures, the paper
comparison table and the HTML report."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import comparison, figures, io, report, viewer
from ..errors import DataError
from ..tables import curve_regions, one_level, region_best
from .common import ground_truth

__all__ = ["make_figures", "make_report", "make_paper_comparison", "PAPER_COMPARISON_CAPTION"]

log = logging.getLogger(__name__)


def make_figures(group_npz, regions_tsv, config, outputs):
    """Rule ``figures``: the report's PNG figures."""
    synthetic = config["dataset"]["source"] == "synthetic"
    g = io.load_npz(group_npz)
    truth = ground_truth(config)
    n = len(g["subjects"])
    figures.plot_surface(g["brain_score"], outputs["brain"],
                         title=f"Brain score R(X), mean of {n} subjects (Pearson r)",
                         synthetic=synthetic, cmap="hot", vmin=0)
    if "ceiling" in outputs:
        if "noise_ceiling" not in g:
            raise DataError(f"{group_npz}: no noise ceiling; re-run snakemake with "
                            "noise_ceiling.enabled true.")
        figures.plot_surface(g["noise_ceiling"], outputs["ceiling"],
                             title=f"Noise ceiling (Pearson r), mean of {n} subjects",
                             synthetic=synthetic, cmap="hot", vmin=0, cbar_label="r")
    figures.plot_surface(g["dstar"], outputs["dstar"],
                         title="Forecast distance d* (words), mask: stats.dstar_mask = "
                               f"{config['stats']['dstar_mask']}",
                         synthetic=synthetic, cmap="viridis",
                         vmin=float(np.min(g["distances"])), vmax=float(np.max(g["distances"])))
    figures.plot_surface(g["gain"], outputs["gain"],
                         title=f"Forecast gain F(d*) / R(X) at the group's d* = "
                               f"{float(g['gain_dstar']):g} (%)", synthetic=synthetic,
                         cmap="cold_hot", symmetric=True)
    table = io.read_tsv(regions_tsv)
    curves = table[table["measure"] == "forecastscore"].rename(columns={"value": "F"})
    curves = one_level(curves, ["distance"])
    regions = curve_regions(curves, config["regions"]["key"])
    figures.plot_forecast_curves(curves, outputs["curves"], synthetic=synthetic,
                                 regions=regions,
                                 true_distance=truth["window_distances"] if truth else None)
    dstar = region_best(curves, regions)
    peak = curves.groupby(["region", "distance"])["F"].mean().groupby("region").max()
    focus = max(regions, key=lambda r: peak.get(r, -np.inf))
    figures.plot_distribution(dstar[focus], outputs["distribution"],
                              title=f"Per-subject d* (argmax of F(d)) in {focus}",
                              synthetic=synthetic,
                              true_value=truth["distances"].get(focus) if truth else None)
    log.info("figures: %d maps and curves drawn (%s)", len(outputs), ", ".join(outputs))


def make_report(figure_paths, captions, config, out_html, tables=(), config_file=None,
                summary=None, group_npz=None):
    """Rule ``report``: a self-contained HTML report of the figures.

    Parameters
    ----------
    figure_paths, captions : list
    config : dict
        ``dataset`` and ``report`` sections at least.
    out_html : path
    tables : list of (tsv_path, caption)
    config_file : path, optional
        The effective config (rule ``effective_config``), shown in full in the report.
    summary : (tsv_path, caption), optional
        The paper comparison table, the report's first section.
    group_npz : path, optional
        The main analysis' group maps (rule ``group``): shown in the report's interactive
        viewer (brain score, d*, F(d) with a distance slider; :mod:`brainpred.viewer`).
    """
    synthetic = config["dataset"]["source"] == "synthetic"
    shown, name = config, "Configuration"
    if config_file is not None:
        shown = io.read_yaml(config_file)
        name = f"Effective configuration ({Path(config_file).name})"
    interactive = None
    if group_npz is not None:
        maps = viewer.group_maps(io.load_npz(group_npz))
        interactive = (viewer.viewer_html(maps, synthetic, title="Group maps"),
                       viewer.VIEWER_CAPTION)
    report.write_report(out_html, list(zip(figure_paths, captions)), shown,
                        synthetic=synthetic, title=config["report"]["title"],
                        tables=list(tables), summary=summary, config_name=name,
                        interactive=interactive)
    log.info("report: %s (%d figures, %d tables%s)", Path(out_html).name, len(figure_paths),
             len(tables), ", interactive maps" if interactive else "")


def make_paper_comparison(group_npz, scores_tsv, stats_tsv, analysis_tsvs, config, out_tsv):
    """Rule ``paper_comparison``: the paper's summary table from the group outputs.

    Parameters
    ----------
    group_npz, scores_tsv, stats_tsv : path
        Group maps, per-subject region scores and region statistics of the main analysis.
    analysis_tsvs : dict
        ``analysis -> per-subject region table`` of the analyses that ran.
    config : dict
        The effective config.
    out_tsv : path
        ``results/tables/desc-paper_comparison.tsv`` (:data:`brainpred.comparison.COLUMNS`).
    """
    table = comparison.paper_comparison(
        io.load_npz(group_npz), io.read_tsv(scores_tsv), io.read_tsv(stats_tsv), config,
        analyses={a: io.read_tsv(p) for a, p in analysis_tsvs.items()})
    io.write_tsv(out_tsv, table)
    for row in table.itertuples():
        log.info("paper comparison: %s = %s (paper: %s) %s", row.quantity,
                 f"{row.value:.4g} [{row.ci_low:.4g}, {row.ci_high:.4g}]"
                 if row.status == "computed" else "-", row.paper,
                 "" if row.status == "computed" else row.status)
    return table


PAPER_COMPARISON_CAPTION = (
    "The paper's summary figures (Caucheteux, Gramfort & King 2023; method.md section 8) beside "
    "this run's, each computed from the run's group outputs with its uncertainty across "
    "subjects, the number of subjects, the regions (report.paper_regions) and the settings "
    "used; a row whose analysis is off says so. Definitions: brainpred.comparison.")
