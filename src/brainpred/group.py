"""Group statistics of score maps across subjects, on arrays (method.md section 7).

Every analysis, the main forecast curve included, goes through the same two steps:

1. :func:`measure_stats`: per measured quantity (brain score, forecast score at each d, ...),
   the mean across subjects, its CI and the two-sided Wilcoxon p per vertex;
2. :func:`reliable_argmax`: per vertex, the x (distance, layer, width) that maximises the group
   mean, kept where the configured test (``stats.dstar_mask``) says it is reliable. One
   definition of each test serves every map (d*, k*, syntactic / semantic d*, best width).

:func:`forecast_group` adds the main analysis' gain and FDR maps; :func:`analysis_group` reads
an analysis' conditions (:func:`brainpred.conditions.measures`) into the same statistics.
"""

from __future__ import annotations

import numpy as np

from . import stats
from .conditions import ARGMAX_MAPS, measures
from .errors import ConfigError
from .noise_ceiling import percent_of_ceiling

__all__ = ["DSTAR_MASKS", "reliable_argmax", "responsive_vertices", "measure_stats",
           "forecast_group", "analysis_group", "best_group_distance", "best_group_index"]

#: The tests of ``stats.dstar_mask``.
DSTAR_MASKS = ("fdr", "ci", "ci_best", "none")


def reliable_argmax(maps, xs, mode="ci_best", level=0.95, q=0.01, responsive=None,
                    reference=None):
    """Per vertex, the x that maximises the group mean of a measure, where it is reliable.

    Parameters
    ----------
    maps : ndarray, shape (S, n_x, V)
        The measure of each subject at each x (e.g. F(d)).
    xs : ndarray, shape (n_x,)
    mode : {"fdr", "ci", "ci_best", "none"}
        ``stats.dstar_mask``. The *contrast* tested is ``maps[x1] - maps[x0]`` for
        ``reference = (x0, x1)`` (the paper's F(8) − F(0)) when both are in ``xs``, else the
        measure at the vertex's best x.

        - ``fdr``: two-sided Wilcoxon of the contrast across subjects, Benjamini-Hochberg across
          vertices at ``q``, and a positive mean contrast;
        - ``ci``: the CI across subjects of the contrast is above 0;
        - ``ci_best``: the CI of the measure at the best x is above 0 (whatever ``reference``);
        - ``none``: every vertex with a value.
    level, q : float
        ``stats.ci`` and ``stats.fdr_q``.
    responsive : ndarray of bool, shape (V,), optional
        Further restricts the map (e.g. the vertices whose brain score CI is above 0).
    reference : (x0, x1), optional

    Returns
    -------
    best : ndarray, shape (V,)
        x of the maximum of the mean, NaN where masked.
    best_all : ndarray, shape (V,)
        Unmasked.
    mask : ndarray of bool, shape (V,)
    """
    maps = np.asarray(maps, dtype=np.float64)
    xs = np.asarray(xs)
    if mode not in DSTAR_MASKS:
        raise ConfigError(f"stats.dstar_mask: unknown mode {mode!r} ({', '.join(DSTAR_MASKS)}).")
    with stats.quiet_nan_warnings():
        mean, low, _ = stats.mean_ci(maps, level=level)
        best_all = stats.best_distance(mean, xs)
        finite = np.isfinite(best_all)
        idx = np.argmax(np.where(np.isnan(mean), -np.inf, mean), axis=0)
        at_best = np.take_along_axis(maps, np.broadcast_to(idx, (maps.shape[0], 1,
                                                                 maps.shape[2])), axis=1)[:, 0]
        contrast = at_best
        if mode != "ci_best" and reference is not None:
            x0, x1 = reference
            if x0 in set(xs.tolist()) and x1 in set(xs.tolist()):
                i0, i1 = (int(np.flatnonzero(xs == x)[0]) for x in (x0, x1))
                contrast = maps[:, i1] - maps[:, i0]
        if mode == "fdr":
            _, p = stats.wilcoxon_test(contrast)
            reject, _ = stats.fdr_bh(p, q=q)
            mask = np.asarray(reject, bool) & (np.nan_to_num(np.nanmean(contrast, 0)) > 0)
        elif mode in ("ci", "ci_best"):
            _, c_low, _ = stats.mean_ci(contrast, level=level)
            mask = np.nan_to_num(c_low, nan=-np.inf) > 0
        else:
            mask = finite.copy()
    mask &= finite
    if responsive is not None:
        mask &= np.asarray(responsive, bool)
    return np.where(mask, best_all, np.nan), best_all, mask


def responsive_vertices(mode, reject, low, mean):
    """Vertices whose group brain score is reliable, by the ``stats.dstar_mask`` family:
    ``fdr``: FDR-significant and positive; ``ci``/``ci_best``: CI above 0; ``none``: all.

    Parameters
    ----------
    mode : str
    reject, low, mean : ndarray, shape (V,)
        FDR decision (with a positive mean), CI lower bound and mean of the brain score.

    Returns
    -------
    ndarray of bool, shape (V,)
    """
    if mode == "fdr":
        return np.asarray(reject, bool)
    if mode in ("ci", "ci_best"):
        return np.nan_to_num(low, nan=-np.inf) > 0
    return np.isfinite(mean)


def measure_stats(per, level=0.95):
    """Mean, CI and Wilcoxon p across subjects of every measure.

    Parameters
    ----------
    per : dict
        ``(measure, series) -> (x (n_x,), maps (S, n_x, V))`` (:func:`brainpred.conditions.
        measures`).
    level : float

    Returns
    -------
    dict of ndarray
        ``<measure>__<series>__x`` (n_x,), ``__mean``, ``__low``, ``__high``, ``__p``
        (n_x, V) for every key of ``per``.
    """
    out = {}
    with stats.quiet_nan_warnings():
        for (measure, series), (xs, maps) in per.items():
            key = f"{measure}__{series}"
            mean, low, high = stats.mean_ci(maps, level=level)
            _, p = stats.wilcoxon_test(maps)
            out.update({f"{key}__x": xs, f"{key}__mean": mean, f"{key}__low": low,
                        f"{key}__high": high, f"{key}__p": p})
    return out


def forecast_group(R, F, distances, stats_cfg, NC=None, min_ceiling=0.05):
    """Group maps of the main analysis: brain score, F(d), d*, gain, noise ceiling.

    Parameters
    ----------
    R : ndarray, shape (S, V)
        Brain scores R(X).
    F : ndarray, shape (S, n_d, V)
        Forecast scores F(d).
    distances : ndarray of int, shape (n_d,)
    stats_cfg : dict
        ``stats`` (``ci``, ``fdr_q``, ``dstar_reference``, ``dstar_mask``, ``gain_distance``).
    NC : ndarray, shape (S, V), optional
        Noise ceilings of the same subjects.
    min_ceiling : float
        ``noise_ceiling.min_ceiling``.

    Returns
    -------
    dict of ndarray
        ``brain_score`` (V,) mean across subjects, ``brain_low``/``brain_high`` its CI,
        ``brain_p``/``brain_q`` two-sided Wilcoxon p and BH-adjusted p (across vertices),
        ``brain_reject`` (q <= stats.fdr_q and mean > 0), ``brain_score_fdr`` the mean where
        ``brain_reject`` (NaN elsewhere);
        ``forecast_score`` (n_d, V) mean F(d), ``forecast_low``/``forecast_high`` CI,
        ``forecast_p``/``forecast_q`` Wilcoxon and BH (across vertices, per distance);
        ``diff_p``/``diff_q`` for F(d1) - F(d0) (``stats.dstar_reference``), ``dstar_mask``
        (V,) bool (:func:`reliable_argmax` with ``stats.dstar_mask``; ``ci_best`` also requires
        a brain score CI above 0), ``dstar`` (V,) argmax_d of the mean F(d) where the mask holds
        (NaN elsewhere), ``dstar_all`` unmasked, ``dstar_subjects`` (S, V) each subject's
        argmax; ``gain_dstar`` the group's d* (``stats.gain_distance``: the best distance of the
        subjects' F(d) averaged over ``gain_mask`` (V,), the vertices with a reliable brain
        score, or a fixed distance), ``gain_subjects`` (S,) each subject's
        ``100 * F_s(d*) / R_s`` over that mask (with ``gain_R_subjects`` (S,),
        ``gain_F_subjects`` (S, n_d)), ``gain_mean`` and ``gain_ci`` (2,) across subjects;
        ``gain`` (V,) ``100 * mean F(d*) / mean R(X)`` per vertex and ``gain_maxd`` (V,)
        ``100 * max_d mean F(d) / mean R(X)`` (biased upward: each vertex's best distance),
        NaN where the mean brain score is <= 0; ``distances``; with ``NC`` also
        ``noise_ceiling`` (V,) mean, ``ceiling_low``/``ceiling_high``, ``ceiling_p``/``ceiling_q``
        and ``percent_ceiling`` (V,) ``100 * mean R(X) / mean ceiling`` where the mean ceiling is
        above ``min_ceiling``.
    """
    R = np.asarray(R, dtype=np.float64)
    F = np.asarray(F, dtype=np.float64)
    distances = np.asarray(distances)
    level, q = float(stats_cfg["ci"]), float(stats_cfg["fdr_q"])
    d0, d1 = (int(x) for x in stats_cfg["dstar_reference"])
    for d in (d0, d1):
        if d not in set(distances.tolist()):
            raise ConfigError(f"stats.dstar_reference = {[d0, d1]}: {d} is not in "
                              f"forecast.distances {distances.tolist()}.")
    mode = stats_cfg["dstar_mask"]
    with stats.quiet_nan_warnings():
        bs_mean, bs_low, bs_high = stats.mean_ci(R, level=level)
        f_mean, f_low, f_high = stats.mean_ci(F, level=level)
        _, bs_p = stats.wilcoxon_test(R)
        bs_reject, bs_q = stats.fdr_bh(bs_p, q=q)
        bs_reject = bs_reject & (np.nan_to_num(bs_mean) > 0)
        _, f_p = stats.wilcoxon_test(F)
        f_q = np.stack([stats.fdr_bh(row, q=q)[1] for row in f_p])
        i0 = int(np.flatnonzero(distances == d0)[0])
        i1 = int(np.flatnonzero(distances == d1)[0])
        _, diff_p = stats.wilcoxon_test(F[:, i1] - F[:, i0])
        _, diff_q = stats.fdr_bh(diff_p, q=q)
        # ci_best: language-responsive vertices (brain-score CI above 0) where the best window
        # improves the prediction (CI of F(d*) above 0); uncorrected, for small samples
        dstar, dstar_all, mask = reliable_argmax(
            F, distances, mode=mode, level=level, q=q, reference=(d0, d1),
            responsive=(np.nan_to_num(bs_low, nan=-np.inf) > 0) if mode == "ci_best" else None)
        dstar_subjects = np.stack([stats.best_distance(f, distances) for f in F])
        # per-vertex max over d of the group-mean F: each vertex's luckiest distance, biased
        # upward; kept only as the "gainmaxd" map, never reported as the gain
        best = np.nanmax(np.where(np.isnan(f_mean), -np.inf, f_mean), axis=0)
        best[~np.isfinite(best)] = np.nan
        gain_maxd = stats.relative_gain(best, bs_mean)
        # the paper's gain: one d* for the group, F_s(d*) / R_s per subject over the vertices
        # with a reliable brain score (same criterion family as stats.dstar_mask)
        responsive = responsive_vertices(mode, bs_reject, bs_low, bs_mean)
        fg = stats.forecast_gain(R, F, distances, responsive,
                                 distance=stats_cfg["gain_distance"], level=level)
        if np.isfinite(fg["dstar"]):
            i_star = int(np.flatnonzero(distances == fg["dstar"])[0])
            gain = stats.relative_gain(f_mean[i_star], bs_mean)
        else:
            gain = np.full_like(bs_mean, np.nan)
    out = {"brain_score": bs_mean, "brain_low": bs_low, "brain_high": bs_high,
           "brain_p": bs_p, "brain_q": bs_q, "brain_reject": bs_reject,
           "brain_score_fdr": np.where(bs_reject, bs_mean, np.nan),
           "forecast_score": f_mean, "forecast_low": f_low, "forecast_high": f_high,
           "forecast_p": f_p, "forecast_q": f_q,
           "dstar": dstar, "dstar_all": dstar_all, "dstar_mask": mask,
           "dstar_subjects": dstar_subjects, "gain": gain, "gain_maxd": gain_maxd,
           "gain_dstar": np.float64(fg["dstar"]), "gain_mask": responsive,
           "gain_subjects": fg["gain_subjects"], "gain_R_subjects": fg["R_subjects"],
           "gain_F_subjects": fg["F_subjects"], "gain_mean": np.float64(fg["mean"]),
           "gain_ci": np.array([fg["ci_low"], fg["ci_high"]]),
           "diff_p": diff_p, "diff_q": diff_q, "distances": distances}
    if NC is not None:
        NC = np.asarray(NC, dtype=np.float64)
        with stats.quiet_nan_warnings():
            c_mean, c_low, c_high = stats.mean_ci(NC, level=level)
            _, c_p = stats.wilcoxon_test(NC)
            _, c_q = stats.fdr_bh(c_p, q=q)
        out.update(noise_ceiling=c_mean, ceiling_low=c_low, ceiling_high=c_high,
                   ceiling_p=c_p, ceiling_q=c_q,
                   percent_ceiling=percent_of_ceiling(bs_mean, c_mean, min_ceiling))
    return out


def analysis_group(conds, scores, analysis, stats_cfg, reference=None):
    """Group statistics of one analysis from its per-subject condition scores.

    Parameters
    ----------
    conds : list of Condition
    scores : ndarray, shape (S, n_conditions, V)
    analysis : str
        The analysis (its argmax maps: :data:`brainpred.conditions.ARGMAX_MAPS`).
    stats_cfg : dict
        ``stats`` (``ci``, ``fdr_q``, ``dstar_mask``).
    reference : (x0, x1), optional
        The contrast of the ``fdr`` and ``ci`` tests of distance sweeps
        (``stats.dstar_reference``; see :func:`reliable_argmax`).

    Returns
    -------
    out : dict of ndarray
        :func:`measure_stats` of every measure; for the analysis' argmax maps: ``<name>`` (V,)
        masked, ``<name>_all``, ``<name>_mask``; ``responsive`` (V,) where the brain score of
        the base condition (the paper method's in ``variants``, any layer's in ``layers``) has a
        CI above 0, when the analysis has one.
    per : dict
        ``(measure, series) -> (x, maps (S, n_x, V))`` (:func:`brainpred.conditions.measures`).
    """
    per = measures(conds, scores)
    level, q = float(stats_cfg["ci"]), float(stats_cfg["fdr_q"])
    out = measure_stats(per, level=level)
    responsive = None
    with stats.quiet_nan_warnings():
        if ("brainscore", "base") in per:
            _, bl, _ = stats.mean_ci(per[("brainscore", "base")][1][:, 0], level=level)
            responsive = np.nan_to_num(bl, nan=-np.inf) > 0
        elif ("brainscore", "paper") in per:
            # variants: where the paper's method gives a reliable brain score
            _, bl, _ = stats.mean_ci(per[("brainscore", "paper")][1][:, 0], level=level)
            responsive = np.nan_to_num(bl, nan=-np.inf) > 0
        elif ("brainscore", "layer") in per:
            # responsive at any layer
            _, bl, _ = stats.mean_ci(per[("brainscore", "layer")][1], level=level)
            responsive = np.nan_to_num(bl, nan=-np.inf).max(0) > 0
    if responsive is not None:
        out["responsive"] = responsive
    for name, key in ARGMAX_MAPS.get(analysis, {}).items():
        if key not in per:
            continue
        xs, maps = per[key]
        best, best_all, mask = reliable_argmax(
            maps, xs, mode=stats_cfg["dstar_mask"], level=level, q=q, responsive=responsive,
            reference=reference if key[0] == "forecastscore" and key[1] != "layer" else None)
        out.update({name: best, f"{name}_all": best_all, f"{name}_mask": mask})
    return out, per


def best_group_distance(brain_low, brain_score, forecast_score, distances):
    """The d maximising the group F(d) averaged over the vertices whose brain-score CI is
    above 0 (every vertex with a score if none).

    Parameters
    ----------
    brain_low, brain_score : ndarray, shape (V,)
    forecast_score : ndarray, shape (n_d, V)
    distances : ndarray, shape (n_d,)

    Returns
    -------
    int
    """
    keep = np.nan_to_num(brain_low, nan=-np.inf) > 0
    if not keep.any():
        keep = np.isfinite(brain_score)
    with stats.quiet_nan_warnings():
        curve = np.nanmean(np.asarray(forecast_score)[:, keep], axis=1)
    return int(np.asarray(distances)[int(np.nanargmax(curve))])


def best_group_index(maps, keep=None):
    """Index of the row of ``maps`` with the largest mean over the vertices ``keep``.

    Parameters
    ----------
    maps : ndarray, shape (n_x, V)
        A group-mean measure at each x (e.g. the unique variance of W_d per distance).
    keep : ndarray of bool, shape (V,), optional
        The vertices averaged (e.g. those with a reliable brain score); None = every vertex.

    Returns
    -------
    int
        0 when no row has a finite mean.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if keep is not None:
        maps = maps[:, np.asarray(keep, bool)]
    with stats.quiet_nan_warnings():
        curve = np.nanmean(maps, axis=1) if maps.shape[1] else np.full(len(maps), np.nan)
    return int(np.nanargmax(curve)) if np.isfinite(curve).any() else 0
