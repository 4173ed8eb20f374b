"""The paper's summary figures, computed from a run's group outputs (method.md section 8).

:func:`paper_comparison` turns the group maps and the tidy region tables of a run into one row
per quantity that Caucheteux, Gramfort & King (2023) report, beside the paper's value, with this
run's value, its uncertainty across subjects, the number of subjects, the regions and the
settings used. A quantity whose analysis is switched off gets a row that says so instead of a
number. Everything here is pure: tables and arrays in, a table out.

Definitions (all across subjects; CI = Student-t 95% CI of the mean, as ``stats.ci``):

- *peak brain score*: the bilateral atlas region with the highest group-mean brain score; its
  mean and CI; *% of the noise ceiling* there: the region's ``brainscore_pct_ceiling``.
- *forecast gain*: each subject's ``100 * F_s(d*) / R_s`` over the vertices with a reliable
  group brain score, at the group's d* (``stats.gain_distance``; group step,
  :func:`brainpred.stats.forecast_gain`); mean and CI.
- *d**: the distance maximising the mean of those per-subject F(d) curves, with a 95% bootstrap
  interval over subjects (:func:`brainpred.stats.bootstrap_best`).
- *d'(IFG) - d'(aSTS)*: per subject, the argmax over d of the region-mean F(d) in each region,
  their difference; mean and CI. *k*(angular) - k*(Heschl)*: likewise over the layers of the
  layer sweep (F_k at ``layers.distance``).
- *syntactic / semantic d**: as d*, on the F_syn(d) / F_sem(d) curves of the syntax analysis
  averaged over the vertices whose brain score's CI is above 0 (its ``responsive`` level).
- *fine-tuning gain*: per subject, ``100 * (R(alpha) - R(0)) / R(0)`` of the last checkpoint at
  the loss mix nearest 0.5, in IFG and in angular + supramarginal (the two regions' means).
- *per-method rows* (``[paper]``, ``[banded]``, ``[nuisance]``, ``[banded-nuisance]``, when the
  ``variants`` analysis ran): the peak bilateral brain score, d* and F(d*) over the vertices
  with a reliable brain score (as above), and F of the random and shuffled control windows
  there, for the paper's method and this run's, fitted with the same folds.

The paper's regions are looked up in the run's atlas through ``report.paper_regions`` (the demo
maps them onto its planted patches).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats

__all__ = ["PAPER", "COLUMNS", "LEVELS", "RESPONSIVE", "paper_comparison"]

#: The analyses' region of the vertices with a reliable brain score (level "responsive").
RESPONSIVE = "reliable brain score"
#: Region levels searched for a region name, first match wins.
LEVELS = ("key", "bilateral", "whole")

#: quantity -> the paper's value (method.md section 8).
PAPER = {
    "peak brain score": "r = 0.23 (superior temporal sulcus), GPT-2 layer 8",
    "brain score at the peak, % of noise ceiling": "about 60%",
    "forecast gain F(d*) / R(X)": "23% +/- 9%",
    "forecast distance d*": "8 words",
    "d'(IFG) - d'(aSTS)": "+0.9 +/- 0.2 words",
    "k*(angular) - k*(Heschl)": "+2.5 +/- 0.3 layers",
    "syntactic d*": "5 words",
    "semantic d*": "8 words",
    "fine-tuning gain, IFG": "> 2% (loss mix 0.5)",
    "fine-tuning gain, angular + supramarginal": "> 2% (loss mix 0.5)",
}

COLUMNS = ["quantity", "paper", "value", "ci_low", "ci_high", "uncertainty", "n_subjects",
           "regions", "settings", "status"]


def _row(quantity, value=np.nan, low=np.nan, high=np.nan, uncertainty="", n=0, regions="",
         settings="", status="computed", paper=None):
    return {"quantity": quantity, "paper": PAPER[quantity] if paper is None else paper,
            "value": float(value),
            "ci_low": float(low), "ci_high": float(high), "uncertainty": uncertainty,
            "n_subjects": int(n), "regions": regions, "settings": settings, "status": status}


def _off(quantity, why):
    return _row(quantity, status=f"not computed: {why}")


def _ci(values, level):
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.nan, np.nan, np.nan, 0
    mean, low, high = stats.mean_ci(v[:, None], level=level)
    return float(mean[0]), float(low[0]), float(high[0]), int(v.size)


def _region_rows(table, region, levels=LEVELS):
    """Rows of ``region`` at the first of ``levels`` that has it."""
    for level in levels:
        rows = table[(table["level"] == level) & (table["region"] == region)]
        if len(rows):
            return rows
    return table.iloc[0:0]


def _subject_argmax(rows, x_col):
    """Per subject, the ``x_col`` value maximising ``value`` (Series indexed by subject)."""
    rows = rows.dropna(subset=["value"])
    if rows.empty:
        return pd.Series(dtype=float)
    best = rows.loc[rows.groupby("subject")["value"].idxmax()]
    return best.set_index("subject")[x_col].astype(float)


def _difference_row(quantity, table, x_col, a, b, level, unit, settings):
    ra, rb = _region_rows(table, a), _region_rows(table, b)
    missing = [name for name, r in ((a, ra), (b, rb)) if r.empty]
    if missing:
        return _off(quantity, f"region(s) {missing} not in the run's atlas (regions.labels, "
                              "report.paper_regions)")
    da, db = _subject_argmax(ra, x_col), _subject_argmax(rb, x_col)
    diff = (da - db).dropna()
    mean, low, high, n = _ci(diff.to_numpy(), level)
    return _row(quantity, mean, low, high, f"{level:.0%} CI across subjects ({unit})", n,
                f"{a} vs {b}", settings)


def _curve_best(table, measure, series, region, level, seed, x_col="x", levels=LEVELS):
    rows = table[(table["measure"] == measure) & (table["series"] == series)]
    rows = _region_rows(rows, region, levels)
    wide = rows.pivot_table(index="subject", columns=x_col, values="value", aggfunc="first")
    if wide.empty:
        return np.nan, np.nan, np.nan, 0
    best, low, high = stats.bootstrap_best(wide.to_numpy(), wide.columns.to_numpy(float),
                                           level=level, seed=seed)
    return best, low, high, len(wide)


def paper_comparison(group, scores, region_stats, config, analyses=None):
    """One row per quantity of the paper's summary table, computed from a run's outputs.

    Parameters
    ----------
    group : dict of ndarray
        The group maps (``group_desc-scores.npz``): ``distances``, ``subjects``, ``gain_dstar``,
        ``gain_subjects`` (S,), ``gain_F_subjects`` (S, n_d), ``gain_mask`` (V,).
    scores : DataFrame
        Per-subject region table of the main analysis (``subject, level, region, measure,
        distance, value``).
    region_stats : DataFrame
        Its group statistics (``level, region, measure, distance, n, mean, ci_low, ci_high``).
    config : dict
        The effective config (``stats``, ``features``, ``model``, ``layers``, ``report``...).
    analyses : dict, optional
        ``analysis -> per-subject region table`` (``subject, level, region, measure, series,
        x, value``) of the layers, syntax, finetune and variants analyses that ran.

    Returns
    -------
    DataFrame
        :data:`COLUMNS`, one row per key of :data:`PAPER`, in that order, then the per-method
        rows of the variants analysis.
    """
    analyses = analyses or {}
    level = float(config["stats"]["ci"])
    names = config["report"]["paper_regions"]
    model = f"{config['model']['name']}, layer {config['features']['layer']}"
    rows = []

    # peak brain score and its share of the noise ceiling
    bs = region_stats[(region_stats["measure"] == "brainscore")
                      & (region_stats["level"] == "bilateral")].dropna(subset=["mean"])
    if bs.empty:
        bs = region_stats[(region_stats["measure"] == "brainscore")].dropna(subset=["mean"])
    peak = bs.loc[bs["mean"].idxmax()]
    rows.append(_row("peak brain score", peak["mean"], peak["ci_low"], peak["ci_high"],
                     f"{level:.0%} CI across subjects (Pearson r)", peak["n"],
                     f"{peak['region']} ({peak['level']})", model))
    pct = region_stats[(region_stats["measure"] == "brainscore_pct_ceiling")
                       & (region_stats["level"] == peak["level"])
                       & (region_stats["region"] == peak["region"])]
    if not config["noise_ceiling"]["enabled"]:
        rows.append(_off("brain score at the peak, % of noise ceiling",
                         "noise_ceiling.enabled is false"))
    elif pct.empty or not np.isfinite(pct["mean"].iloc[0]):
        rows.append(_off("brain score at the peak, % of noise ceiling",
                         f"the noise ceiling in {peak['region']} is below "
                         "noise_ceiling.min_ceiling"))
    else:
        p = pct.iloc[0]
        rows.append(_row("brain score at the peak, % of noise ceiling", p["mean"], p["ci_low"],
                         p["ci_high"], f"{level:.0%} CI across subjects (%)", p["n"],
                         f"{peak['region']} ({peak['level']})", model))

    # forecast gain and d*
    distances = np.asarray(group["distances"])
    n_mask = int(np.sum(group["gain_mask"]))
    mask_text = (f"{n_mask} vertices with a reliable group brain score "
                 f"(stats.dstar_mask = {config['stats']['dstar_mask']})")
    if n_mask == 0:
        why = "no vertex has a reliable group brain score (stats.dstar_mask)"
        rows += [_off("forecast gain F(d*) / R(X)", why), _off("forecast distance d*", why)]
    else:
        mean, low, high, n = _ci(group["gain_subjects"], level)
        rows.append(_row("forecast gain F(d*) / R(X)", mean, low, high,
                         f"{level:.0%} CI across subjects (%)", n, mask_text,
                         f"d* = {float(group['gain_dstar']):g} (stats.gain_distance = "
                         f"{config['stats']['gain_distance']}); {model}"))
        best, blow, bhigh = stats.bootstrap_best(group["gain_F_subjects"], distances,
                                                 level=level, seed=0)
        rows.append(_row("forecast distance d*", best, blow, bhigh,
                         f"{level:.0%} bootstrap interval over subjects (words)",
                         len(group["subjects"]), mask_text,
                         f"distances {int(distances.min())}..{int(distances.max())} "
                         f"({len(distances)}); window width {config['forecast']['width']}"))

    # forecast distance IFG vs aSTS
    F = scores[scores["measure"] == "forecastscore"]
    rows.append(_difference_row("d'(IFG) - d'(aSTS)", F, "distance", names["IFG"],
                                names["aSTS"], level, "words",
                                "per-subject argmax over d of the region-mean F(d)"))

    # forecast depth angular vs Heschl
    if "layers" in analyses:
        t = analyses["layers"]
        t = t[(t["measure"] == "forecastscore") & (t["series"] == "layer")]
        rows.append(_difference_row(
            "k*(angular) - k*(Heschl)", t, "x", names["angular"], names["Heschl"], level,
            "layers", f"per-subject argmax over k of F_k(d = {config['layers']['distance']})"))
    else:
        rows.append(_off("k*(angular) - k*(Heschl)", "layers.enabled is false"))

    # syntactic and semantic d*
    for part in ("syntactic", "semantic"):
        quantity = f"{part} d*"
        if "syntax" not in analyses:
            rows.append(_off(quantity, "syntax.enabled is false"))
            continue
        t = analyses["syntax"]
        t = t[(t["level"] == "responsive") & (t["region"] == RESPONSIVE)]
        if t.empty:
            rows.append(_off(quantity, "no vertex has a reliable brain score in the syntax "
                                       "analysis"))
            continue
        best, low, high, n = _curve_best(t, "forecastscore", part, RESPONSIVE, level, seed=0,
                                         levels=("responsive",))
        rows.append(_row(quantity, best, low, high,
                         f"{level:.0%} bootstrap interval over subjects (words)", n,
                         "vertices whose brain-score CI is above 0",
                         f"argmax of the mean F_{part[:3]}(d); syntax.n_futures = "
                         f"{config['syntax']['n_futures']}, context = "
                         f"{config['syntax']['context']}"))

    # fine-tuning
    ft_rows = [("fine-tuning gain, IFG", [names["IFG"]]),
               ("fine-tuning gain, angular + supramarginal",
                [names["angular"], names["supramarginal"]])]
    if "finetune" not in analyses:
        rows += [_off(q, "finetune.enabled is false") for q, _ in ft_rows]
    else:
        rows += _finetune_rows(analyses["finetune"], ft_rows, level, config)
    if "variants" in analyses:
        rows += _variant_rows(analyses["variants"], level, config)
    return pd.DataFrame(rows, columns=COLUMNS)


#: The paper's value of each per-method row (the quantity its rows repeat per method).
_VARIANT_PAPER = {"peak brain score": PAPER["peak brain score"],
                  "forecast distance d*": PAPER["forecast distance d*"],
                  "F(d*)": "not reported (Fig. 2: F > 0 up to d = 30)",
                  "random-window F": "not reported (expected 0)",
                  "shuffled-window F": "not reported (expected 0)"}


def _subject_values(rows):
    """Per-subject values of one (measure, series, x, region) selection as an array."""
    return rows.dropna(subset=["value"]).groupby("subject")["value"].first().to_numpy()


def _variant_rows(table, level, config):
    """Per fitting method of the ``variants`` analysis (the paper's first): peak brain score,
    d*, F(d*) and the control windows' F over the vertices with a reliable brain score."""
    rows = []
    resp = table[(table["level"] == "responsive") & (table["region"] == RESPONSIVE)]
    bilateral = table[table["level"] == "bilateral"]
    if bilateral.empty:
        bilateral = table
    methods = list(dict.fromkeys(
        table.loc[table["measure"] == "brainscore", "series"].astype(str)))
    for m in methods:
        what = (f"mapping.penalty {'banded' if m.startswith('banded') else 'shared'}, "
                f"nuisance {config['nuisance'] if 'nuisance' in m else '[]'}")
        b = bilateral[(bilateral["measure"] == "brainscore") & (bilateral["series"] == m)]
        if b.empty:
            continue
        means = b.groupby("region")["value"].mean()
        region = means.idxmax()
        mean, low, high, n = _ci(_subject_values(b[b["region"] == region]), level)
        rows.append(_row(f"peak brain score [{m}]", mean, low, high,
                         f"{level:.0%} CI across subjects (Pearson r)", n, region, what,
                         paper=_VARIANT_PAPER["peak brain score"]))
        if resp.empty:
            rows.append(_row(f"forecast distance d* [{m}]", paper="",
                             status="not computed: no vertex has a reliable brain score"))
            continue
        best, blow, bhigh, n = _curve_best(resp, "forecastscore", m, RESPONSIVE, level,
                                           seed=0, levels=("responsive",))
        rows.append(_row(f"forecast distance d* [{m}]", best, blow, bhigh,
                         f"{level:.0%} bootstrap interval over subjects (words)", n,
                         "vertices whose brain-score CI is above 0", what,
                         paper=_VARIANT_PAPER["forecast distance d*"]))
        F = resp[(resp["measure"] == "forecastscore") & (resp["series"] == m)]
        mean, low, high, n = _ci(_subject_values(F[F["x"] == best]), level)
        rows.append(_row(f"F(d*) [{m}]", mean, low, high,
                         f"{level:.0%} CI across subjects (Δr)", n,
                         "vertices whose brain-score CI is above 0", f"d = {best:g}; {what}",
                         paper=_VARIANT_PAPER["F(d*)"]))
        for kind in ("random", "shuffled"):
            c = resp[(resp["measure"] == "forecastscore") & (resp["series"] == f"{m}-{kind}")]
            if c.empty:
                continue
            d = float(c["x"].min())
            mean, low, high, n = _ci(_subject_values(c[c["x"] == d]), level)
            rows.append(_row(f"{kind}-window F [{m}]", mean, low, high,
                             f"{level:.0%} CI across subjects (Δr)", n,
                             "vertices whose brain-score CI is above 0",
                             f"d = {d:g} (controls.distances); {what}",
                             paper=_VARIANT_PAPER[f"{kind}-window F"]))
    return rows


def _finetune_rows(table, wanted, level, config):
    gains = table[table["measure"] == "gain"]
    if gains.empty:
        return [_off(q, "the finetune analysis has no loss mix but 0") for q, _ in wanted]
    alphas = np.unique(gains["x"].astype(float))
    alpha = float(alphas[np.argmin(np.abs(alphas - 0.5))])
    steps = sorted({int(s.split("-")[1]) for s in gains["series"]})
    series = f"step-{steps[-1]}"
    base = table[(table["measure"] == "brainscore") & (table["series"] == series)
                 & (table["x"].astype(float) == 0.0)]
    gain = gains[(gains["series"] == series) & (gains["x"].astype(float) == alpha)]
    out = []
    for quantity, regions in wanted:
        g_parts, r_parts = [], []
        for region in regions:
            g, r = _region_rows(gain, region), _region_rows(base, region)
            if g.empty or r.empty:
                break
            g_parts.append(g.set_index("subject")["value"])
            r_parts.append(r.set_index("subject")["value"])
        if len(g_parts) != len(regions):
            out.append(_off(quantity, f"region(s) {regions} not in the run's atlas"))
            continue
        g = pd.concat(g_parts, axis=1).mean(axis=1)
        r = pd.concat(r_parts, axis=1).mean(axis=1)
        rel = 100.0 * g / r.where(r > 0)
        mean, low, high, n = _ci(rel.to_numpy(), level)
        out.append(_row(quantity, mean, low, high,
                        f"{level:.0%} CI across subjects (% of R(alpha = 0))", n,
                        " + ".join(regions),
                        f"loss mix {alpha:g} vs 0, step {steps[-1]}, eval layers "
                        f"{config['finetune']['eval_layers']}, corpus "
                        f"{_corpus_text(config['finetune']['corpus'])}"))
    return out


def _corpus_text(corpus):
    if isinstance(corpus, dict):
        return corpus.get("hf_dataset", "?") + (f"/{corpus['config']}" if corpus.get("config")
                                                else "")
    if isinstance(corpus, list):
        return f"{len(corpus)} text files"
    return str(corpus)
