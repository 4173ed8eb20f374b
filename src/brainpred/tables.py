"""Region tables of score maps: tidy per-subject region means and their group statistics.

Pure functions on arrays and tables. A region *level* is ``level -> (labels (V,), names)``
(``parcel``: the split atlas per hemisphere, ``bilateral``, ``key``; see
:func:`brainpred.regions.atlas_levels`); the ``whole`` level is the mean of every vertex with a
score (region ``whole cortex``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import regions, stats
from .noise_ceiling import percent_of_ceiling

__all__ = ["WHOLE_CORTEX", "LEVEL_RANK", "RESPONSIVE_LEVEL", "RESPONSIVE_REGION",
           "region_table", "subject_region_means", "group_region_tables", "tidy_group_stats",
           "region_curves", "one_level", "curve_regions", "region_best", "MODEL_COMPARISON_COLUMNS",
           "model_comparison"]


WHOLE_CORTEX = "whole cortex"

LEVEL_RANK = {"whole": 0, "key": 1, "bilateral": 2}


#: Region level / name of the vertices with a reliable brain score in the analysis tables.
RESPONSIVE_LEVEL, RESPONSIVE_REGION = "responsive", "reliable brain score"


def region_table(R_X, F, distances, labels=None, names=None):
    """Tidy table of region means: ``region, measure, distance, value``.

    ``measure`` is ``brainscore`` (distance NaN) or ``forecastscore``; the region
    ``whole cortex`` averages every vertex with a score.

    Parameters
    ----------
    R_X : ndarray, shape (V,)
    F : ndarray, shape (n_d, V)
    distances : sequence of int, length n_d
    labels : ndarray of int, shape (V,), optional
        Atlas labels (:func:`brainpred.regions.load_labels`); None: whole cortex only.
    names : dict, optional
        ``label -> region name``.

    Returns
    -------
    DataFrame
    """
    rows = []

    def add(region, values_bs, values_f):
        rows.append((region, "brainscore", np.nan, float(values_bs)))
        for d, v in zip(distances, values_f):
            rows.append((region, "forecastscore", float(d), float(v)))

    with np.errstate(invalid="ignore"), stats.quiet_nan_warnings():
        add(WHOLE_CORTEX, np.nanmean(R_X), np.nanmean(F, axis=1))
    if labels is not None:
        for lab, nam in ((labels, names), regions.bilateral_labels(labels, names)):
            bs = regions.region_means(R_X, lab, nam)
            fs = regions.region_means(F, lab, nam, dims=["distance"],
                                      coords={"distance": list(distances)})
            for region in bs["region"]:
                vf = fs[fs["region"] == region].sort_values("distance")["value"].to_numpy()
                add(region, bs.loc[bs["region"] == region, "value"].iloc[0], vf)
    return pd.DataFrame(rows, columns=["region", "measure", "distance", "value"])


def subject_region_means(maps, levels, column, values):
    """Region means of one subject's maps at every level: the rows both region tables share.

    Parameters
    ----------
    maps : ndarray, shape (n_maps, V)
    levels : dict or None
        ``level -> (labels (V,), names)``; the ``whole`` level (region ``whole cortex``, the
        mean of every vertex with a value) comes first.
    column : str
        Name of the column indexing the maps (``map``, ``x``).
    values : array_like, shape (n_maps,)
        Its value for each map.

    Returns
    -------
    DataFrame
        ``level, region, <column>, value``.
    """
    with stats.quiet_nan_warnings():
        whole = np.nanmean(maps, axis=1)
    parts = [pd.DataFrame({"level": "whole", "region": WHOLE_CORTEX, column: values,
                           "value": whole})]
    for level, (lab, nam) in (levels or {}).items():
        t = regions.region_means(maps, lab, nam, dims=[column], coords={column: values})
        t.insert(0, "level", level)
        parts.append(t[["level", "region", column, "value"]])
    return pd.concat(parts, ignore_index=True)


def group_region_tables(R, F, distances, subjects, levels, stats_cfg, NC=None, min_ceiling=0.05):
    """Region tables of every score: one row per subject (tidy) and group statistics.

    Parameters
    ----------
    R : ndarray (S, V)
        Brain scores. F : ndarray (S, n_d, V) forecast scores. NC : ndarray (S, V) or None
        noise ceilings.
    distances : array (n_d,)
    subjects : array (S,)
    levels : dict or None
        ``level -> (labels, names)`` (:func:`brainpred.stages.common.atlas_levels`); None = whole cortex only.
    stats_cfg : dict
        ``stats`` (``ci``, ``fdr_q``).
    min_ceiling : float
        ``noise_ceiling.min_ceiling``.

    Returns
    -------
    scores : DataFrame
        ``subject, level, region, measure, distance, value``; ``level`` is ``whole``,
        ``parcel`` (split atlas, per hemisphere), ``bilateral`` or ``key``; ``measure`` is
        ``brainscore``, ``forecastscore`` (one row per distance), ``noiseceiling`` and
        ``brainscore_pct_ceiling`` (100 x region-mean brain score / region-mean ceiling, NaN
        where the ceiling is <= noise_ceiling.min_ceiling); distance is NaN but for F(d).
    group : DataFrame
        ``level, region, measure, distance, n, mean, ci_low, ci_high, p, q``: mean across
        subjects, CI, two-sided Wilcoxon p, BH q across the regions of a level (per measure
        and distance).
    """
    min_c = float(min_ceiling)
    distances = np.asarray(distances)
    frames = []
    for s, sub in enumerate(subjects):
        maps = [R[s][None], F[s]] + ([NC[s][None]] if NC is not None else [])
        M = np.concatenate(maps)                              # (n_maps, V)
        measure = (["brainscore"] + ["forecastscore"] * len(distances)
                   + (["noiseceiling"] if NC is not None else []))
        dist = ([np.nan] + [float(d) for d in distances]
                + ([np.nan] if NC is not None else []))
        t = subject_region_means(M, levels, "map", np.arange(len(M)))
        t["measure"] = np.asarray(measure, dtype=object)[t["map"]]
        t["distance"] = np.asarray(dist)[t["map"]]
        if NC is not None:
            bs = t[t["measure"] == "brainscore"].set_index(["level", "region"])["value"]
            nc = t[t["measure"] == "noiseceiling"].set_index(["level", "region"])["value"]
            pct = pd.DataFrame({"level": [i[0] for i in bs.index],
                                "region": [i[1] for i in bs.index],
                                "measure": "brainscore_pct_ceiling", "distance": np.nan,
                                "value": percent_of_ceiling(bs.to_numpy(),
                                                            nc.reindex(bs.index).to_numpy(),
                                                            min_c)})
            t = pd.concat([t, pct], ignore_index=True)
        t.insert(0, "subject", sub)
        frames.append(t[["subject", "level", "region", "measure", "distance", "value"]])
    scores = pd.concat(frames, ignore_index=True)
    group = tidy_group_stats(scores, ["level", "region", "measure", "distance"], "distance",
                             list(pd.unique(scores["subject"])), stats_cfg)
    return scores, group


def tidy_group_stats(scores, keys, x, subjects, stats_cfg):
    """Group statistics of a tidy per-subject table: one row per ``keys`` combination.

    Parameters
    ----------
    scores : DataFrame
        ``subject``, the ``keys`` columns and ``value``.
    keys : list of str
        Columns identifying a measured quantity; must include ``level``, ``region`` and ``x``.
    x : str
        The key column that may be NaN (distance, layer...).
    subjects : list of str
        Column order of the subjects.
    stats_cfg : dict
        ``stats`` (``ci``, ``fdr_q``).

    Returns
    -------
    DataFrame
        ``keys, n, mean, ci_low, ci_high, p, q``: mean across subjects, Student-t CI,
        two-sided Wilcoxon p, and BH q across the regions of a level (per combination of the
        other keys).
    """
    ci, q = float(stats_cfg["ci"]), float(stats_cfg["fdr_q"])
    nan_x = -1e9                                              # NaN as a sortable key
    tmp = scores.assign(**{x: scores[x].fillna(nan_x)})
    wide = tmp.groupby(keys + ["subject"], sort=False)["value"].first().unstack("subject")
    wide = wide.reindex(columns=list(subjects))
    vals = wide.to_numpy(dtype=float).T                       # (S, rows)
    with stats.quiet_nan_warnings():
        mean, low, high = stats.mean_ci(vals, level=ci)
        _, p = stats.wilcoxon_test(vals)
    group = wide.index.to_frame(index=False)
    group[x] = group[x].where(group[x] != nan_x, np.nan)
    group["n"] = np.isfinite(vals).sum(0)
    group["mean"], group["ci_low"], group["ci_high"], group["p"] = mean, low, high, p
    group["q"] = np.nan
    fdr_keys = [k for k in keys if k != "region"]
    for _, idx in group.groupby(fdr_keys, dropna=False).groups.items():
        group.loc[idx, "q"] = stats.fdr_bh(group.loc[idx, "p"].to_numpy(), q=q)[1]
    return group


def region_curves(per, subjects, levels, stats_cfg):
    """Region means of every measure: per subject (tidy) and group statistics.

    Parameters
    ----------
    per : dict
        From :func:`measures`.
    subjects : list of str
    levels : dict or None
        ``level -> (labels, names)`` (:func:`brainpred.stages.common.atlas_levels`).

    Returns
    -------
    scores : DataFrame
        ``subject, level, region, measure, series, x, value``.
    group : DataFrame
        ``level, region, measure, series, x, n, mean, ci_low, ci_high, p, q`` (q: BH across
        the regions of a level, per measure, series and x).
    """
    frames = []
    for (measure, series), (xs, maps) in per.items():
        for s, sub in enumerate(subjects):
            t = subject_region_means(maps[s], levels, "x", xs)
            t.insert(0, "subject", sub)
            t["measure"], t["series"] = measure, series
            frames.append(t[["subject", "level", "region", "measure", "series", "x", "value"]])
    scores = pd.concat(frames, ignore_index=True)
    group = tidy_group_stats(scores, ["level", "region", "measure", "series", "x"], "x",
                             list(subjects), stats_cfg)
    # readable order: whole cortex, key regions, bilateral regions, then the split parcels
    rank = group["level"].map({**LEVEL_RANK, "parcel": 3}).fillna(4)
    group = (group.assign(_r=rank).sort_values(["_r", "measure", "series", "region", "x"],
                                                kind="stable")
             .drop(columns="_r").reset_index(drop=True))
    return scores, group


def one_level(table, keys):
    """Rows of the levels drawn in curves (whole cortex, key regions, then bilateral
    regions), one row per region name and ``keys`` (the first level wins)."""
    if "level" not in table:
        return table
    t = table[table["level"].isin(list(LEVEL_RANK))]
    return (t.assign(_r=t["level"].map(LEVEL_RANK)).sort_values("_r", kind="stable")
            .drop_duplicates(["subject", "region", *keys]).drop(columns="_r"))


def curve_regions(table, key_regions):
    """Whole cortex and the configured key regions (``regions.key``) present in ``table``."""
    key = list(key_regions or [])
    present = set(table["region"])
    return [WHOLE_CORTEX] + [r for r in key if r in present]


def region_best(curves, regions):
    """Per-subject d* of each region from the tidy F(d) table."""
    out = {}
    for region in regions:
        sub = curves[curves["region"] == region].dropna(subset=["F"])
        best = sub.loc[sub.groupby("subject")["F"].idxmax()]
        out[region] = best["distance"].to_numpy()
    return out


#: Columns of :func:`model_comparison` (the ``desc-models_comparison`` table).
MODEL_COMPARISON_COLUMNS = ["model", "label", "layer", "n_layers", "relative_depth", "level",
                            "region", "measure", "distance", "n", "value", "ci_low", "ci_high"]


def model_comparison(scores, models, level=0.95):
    """Tidy comparison of several models' layers (analysis ``models``): brain score, F(d) at
    each distance and F(d*) at the group's best distance, against relative depth.

    Parameters
    ----------
    scores : DataFrame
        Per-subject region table of the models analysis (:func:`region_curves`: ``subject,
        [level,] region, measure, series, x, value``): ``brainscore`` rows of series
        ``<label>`` with x = layer, ``forecastscore`` rows of series ``<label>_layer-<k>``
        with x = distance.
    models : list of dict
        ``label``, ``name`` and ``n_layers`` (transformer blocks) of each model, in the order
        of the table's rows.
    level : float
        Confidence level of the CIs (Student t across subjects, :func:`brainpred.stats.mean_ci`).

    Returns
    -------
    DataFrame
        :data:`MODEL_COMPARISON_COLUMNS`, one row per (model, layer, level, region, measure,
        distance): ``relative_depth`` = layer / n_layers; ``measure`` is ``brainscore``
        (distance NaN), ``forecastscore`` (every distance) or ``forecastscore_dstar``: F at
        d*, the distance with the largest group-mean F of that model, layer and region (the
        first one on ties; no row where every F is NaN); ``value`` the mean across subjects,
        ``ci_low``/``ci_high`` its CI, ``n`` the subjects with a value.
    """
    if "level" not in scores:
        scores = scores.assign(level="whole")
    rows = []

    def summary(t):
        wide = t.pivot_table(index="subject", columns="x", values="value", aggfunc="mean",
                             dropna=False)
        wide = wide.reindex(sorted(wide.columns), axis=1)
        vals = wide.to_numpy(dtype=float)
        with stats.quiet_nan_warnings():
            mean, low, high = stats.mean_ci(vals, level=level)
        return wide.columns.to_numpy(dtype=float), mean, low, high, np.isfinite(vals).sum(0)

    for m in models:
        label, L = m["label"], int(m["n_layers"])
        head = {"model": m["name"], "label": label, "n_layers": L}
        bs = scores[(scores["measure"] == "brainscore") & (scores["series"] == label)]
        for (lev, region), t in bs.groupby(["level", "region"], sort=False):
            for k, mean, low, high, n in zip(*summary(t)):
                rows.append({**head, "layer": int(k), "relative_depth": k / L, "level": lev,
                             "region": region, "measure": "brainscore", "distance": np.nan,
                             "n": int(n), "value": mean, "ci_low": low, "ci_high": high})
        fs = scores[(scores["measure"] == "forecastscore")
                    & scores["series"].str.startswith(f"{label}_layer-")]
        for (series, lev, region), t in fs.groupby(["series", "level", "region"], sort=False):
            k = int(series[len(f"{label}_layer-"):])
            d, mean, low, high, n = summary(t)
            base = {**head, "layer": k, "relative_depth": k / L, "level": lev, "region": region}
            for i in range(d.size):
                rows.append({**base, "measure": "forecastscore", "distance": d[i], "n": int(n[i]),
                             "value": mean[i], "ci_low": low[i], "ci_high": high[i]})
            if np.isfinite(mean).any():
                i = int(np.nanargmax(mean))
                rows.append({**base, "measure": "forecastscore_dstar", "distance": d[i],
                             "n": int(n[i]), "value": mean[i], "ci_low": low[i],
                             "ci_high": high[i]})
    out = pd.DataFrame(rows, columns=MODEL_COMPARISON_COLUMNS)
    if out.empty:
        return out
    order = {m["label"]: i for i, m in enumerate(models)}
    out = out.assign(_m=out["label"].map(order),
                     _r=out["level"].map({**LEVEL_RANK, "parcel": 3}).fillna(4),
                     _s=out["measure"].map({"brainscore": 0, "forecastscore_dstar": 1,
                                            "forecastscore": 2}))
    return (out.sort_values(["_m", "_r", "region", "_s", "layer", "distance"], kind="stable")
            .drop(columns=["_m", "_r", "_s"]).reset_index(drop=True))
