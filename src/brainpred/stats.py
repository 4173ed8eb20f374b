"""Group statistics across subjects: Wilcoxon tests, FDR, confidence intervals, best distance.

The paper (Caucheteux, Gramfort & King 2023) tests every vertex (or region) across subjects with
a two-sided Wilcoxon signed-rank test against 0, corrects across vertices with the
Benjamini-Hochberg false discovery rate at q = 0.01, and draws 95% confidence intervals across
subjects. All functions here are pure and NaN-aware: a NaN (medial wall, missing subject) is left
out of the computation, never counted as 0.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as _sps

__all__ = ["wilcoxon_test", "fdr_bh", "mean_ci", "best_distance", "relative_gain",
           "forecast_gain", "bootstrap_best", "zscore_columns", "quiet_nan_warnings"]


def wilcoxon_test(values, min_subjects=2):
    """Two-sided Wilcoxon signed-rank test against 0 along axis 0, vectorised over the rest.

    Parameters
    ----------
    values : array_like, shape (n_subjects, ...)
        One value per subject (axis 0) for every vertex / region / distance (other axes).
        NaN entries are left out (``nan_policy="omit"``).
    min_subjects : int
        Positions with fewer non-NaN subjects than this get NaN statistic and p-value.

    Returns
    -------
    stat : ndarray, shape (...)
        The signed-rank statistic (``scipy.stats.wilcoxon``: min of the positive and negative
        rank sums), float64.
    p : ndarray, shape (...)
        Two-sided p-value: without zeros or ties the exact distribution (up to 50 subjects)
        or the normal approximation (scipy's ``method="auto"``); with zeros or tied |values|
        the exact sign-flip permutation test up to 13 subjects (whatever the scipy version),
        the normal approximation above. Positions where all differences are exactly 0 get
        p = 1.

    Notes
    -----
    Columns with zeros or ties are tested apart from the others (scipy would otherwise switch a
    whole call to a slow permutation test), by the same exact sign-flip permutation test scipy
    chooses for them, vectorised (:func:`_signflip_wilcoxon`, up to 13 subjects). scipy loops slice by slice as soon as one NaN is present, which takes minutes for 81,924
    vertices. Here the non-NaN values of each column are moved to the top and columns are
    grouped by their number of subjects, so scipy is called once per distinct count.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("wilcoxon_test: values must have a subject axis (axis 0)")
    shape = x.shape[1:]
    x2 = x.reshape(x.shape[0], -1)
    n_cols = x2.shape[1]
    stat = np.full(n_cols, np.nan)
    pval = np.full(n_cols, np.nan)
    isnan = np.isnan(x2)
    counts = (~isnan).sum(axis=0)
    # Move finite values to the top of each column (stable order).
    order = np.argsort(isnan, axis=0, kind="stable")
    compact = np.take_along_axis(x2, order, axis=0)
    for n in np.unique(counts):
        if n < max(int(min_subjects), 1):
            continue
        cols = np.flatnonzero(counts == n)
        block = compact[:n, cols]
        # scipy decides exact / permutation / asymptotic for a whole call from the presence of
        # zeros or ties anywhere in it: columns with zeros or tied |values| go in their own call,
        # so the (many) clean columns keep the fast exact distribution and every column gets
        # the p-value scipy gives it alone.
        a = np.sort(np.abs(block), axis=0)
        dirty = np.any(a == 0, axis=0) | np.any(np.diff(a, axis=0) == 0, axis=0)
        for sel in (~dirty, dirty):
            if not sel.any():
                continue
            if sel is dirty and n <= _SIGNFLIP_MAX_N:
                # the exact sign-flip permutation test (scipy >= 1.15's own choice here, which
                # it runs column by column: hours on a map of banded fits, where a window
                # switched off gives exact zeros; older scipy uses the normal approximation)
                stat[cols[sel]], pval[cols[sel]] = _signflip_wilcoxon(block[:, sel])
                continue
            if sel is dirty:
                zero = np.all(block[:, sel] == 0, axis=0)       # no difference at all: p = 1
                stat[cols[sel][zero]], pval[cols[sel][zero]] = 0.0, 1.0
                sel = sel.copy()
                sel[np.flatnonzero(sel)[zero]] = False
                if not sel.any():
                    continue
            with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                warnings.simplefilter("ignore", UserWarning)
                res = _sps.wilcoxon(block[:, sel], axis=0, alternative="two-sided")
            stat[cols[sel]] = res.statistic
            pval[cols[sel]] = res.pvalue
    return stat.reshape(shape), pval.reshape(shape)


#: Largest sample of the exact sign-flip test (scipy's ``method="auto"``: 2**13 < 9999
#: resamples, so its permutation test is exact up to 13 subjects, asymptotic above).
_SIGNFLIP_MAX_N = 13


def _signflip_wilcoxon(d, chunk=2048):
    """The two-sided Wilcoxon signed-rank test by exact sign-flip permutation, per column.

    What ``scipy.stats.wilcoxon(d, axis=0)`` (scipy >= 1.15) computes for columns with zeros
    or tied |values| and at most 13 subjects (``method="auto"`` -> ``permutation_test`` over
    all 2**n sign flips, zeros dropped, average ranks), on all columns at once.

    Parameters
    ----------
    d : ndarray, shape (n, m)
        Finite values, n <= 13.

    Returns
    -------
    stat : ndarray, shape (m,)
        min(R+, R-), the rank sums of the positive and negative values.
    p : ndarray, shape (m,)
        2 min(P(T <= R+), P(T >= R+)) over the 2**n flips, clipped to 1.
    """
    n, m = d.shape
    absd = np.where(d != 0, np.abs(d), np.nan)
    ranks = np.nan_to_num(_sps.rankdata(absd, axis=0, nan_policy="omit"), nan=0.0)
    r_plus = (ranks * (d > 0)).sum(0)
    r_minus = (ranks * (d < 0)).sum(0)
    flips = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(np.float64)
    eps = np.finfo(np.float64).eps * 100           # permutation_test's tolerance
    p = np.empty(m)
    for i in range(0, m, chunk):
        null = flips @ ranks[:, i:i + chunk]       # (2**n, c): R+ under every flip
        obs = r_plus[i:i + chunk]
        gamma = np.abs(eps * obs)
        less = (null <= obs + gamma).mean(0)
        greater = (null >= obs - gamma).mean(0)
        p[i:i + chunk] = np.clip(2 * np.minimum(less, greater), 0, 1)
    return np.minimum(r_plus, r_minus), p


def fdr_bh(p, q=0.01):
    """Benjamini-Hochberg false discovery rate over all finite entries of ``p``.

    Parameters
    ----------
    p : array_like, any shape
        p-values. NaN entries are ignored (not counted in the number of tests) and stay NaN.
    q : float
        FDR level.

    Returns
    -------
    reject : ndarray of bool, same shape as ``p``
        True where the BH-adjusted p-value is <= q (False at NaN).
    p_adjusted : ndarray of float, same shape as ``p``
        BH-adjusted p-values (``min_{j>=i} p_(j) m / j``, clipped to 1), NaN where ``p`` is NaN.
    """
    p = np.asarray(p, dtype=np.float64)
    flat = p.ravel()
    adj = np.full(flat.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(flat))
    m = ok.size
    if m:
        pv = flat[ok]
        order = np.argsort(pv, kind="stable")
        ranked = pv[order] * m / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        out = np.empty(m)
        out[order] = np.clip(ranked, 0.0, 1.0)
        adj[ok] = out
    adj = adj.reshape(p.shape)
    with np.errstate(invalid="ignore"):
        reject = np.where(np.isnan(adj), False, adj <= q)
    return reject.astype(bool), adj


def mean_ci(values, level=0.95):
    """Mean across subjects (axis 0) and its Student-t confidence interval, NaN-aware.

    Parameters
    ----------
    values : array_like, shape (n_subjects, ...)
    level : float
        Confidence level (0.95 = 95% CI).

    Returns
    -------
    mean, low, high : ndarray, shape (...)
        ``mean +/- t_{(1+level)/2, n-1} * sd / sqrt(n)`` with ``n`` the number of non-NaN
        subjects at that position. ``mean`` is NaN where n = 0; ``low``/``high`` are NaN where
        n < 2.
    """
    x = np.asarray(values, dtype=np.float64)
    n = np.sum(np.isfinite(x), axis=0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
        sd = np.nanstd(x, axis=0, ddof=1)
        sem = sd / np.sqrt(n)
        tcrit = _sps.t.ppf((1.0 + level) / 2.0, np.maximum(n - 1, 1))
    half = np.where(n >= 2, tcrit * sem, np.nan)
    return mean, mean - half, mean + half


def best_distance(F, distances):
    """The distance d that maximises F(d), per vertex.

    Parameters
    ----------
    F : array_like, shape (n_d, V)
        Forecast scores, one row per distance (NaN allowed).
    distances : array_like, shape (n_d,)
        The distance of each row.

    Returns
    -------
    d_star : ndarray, shape (V,) float64
        ``distances[argmax_d F]``, ignoring NaN; ties go to the first row that reaches the
        maximum (the order of ``distances``); NaN where every row is NaN.
    """
    F = np.asarray(F, dtype=np.float64)
    distances = np.asarray(distances, dtype=np.float64)
    if F.shape[0] != distances.shape[0]:
        raise ValueError(f"best_distance: F has {F.shape[0]} rows but {distances.shape[0]} "
                         "distances were given")
    all_nan = np.all(np.isnan(F), axis=0)
    idx = np.argmax(np.where(np.isnan(F), -np.inf, F), axis=0)
    return np.where(all_nan, np.nan, distances[idx])


def relative_gain(F_best, R_X):
    """Forecast gain as a percentage of the brain score: ``100 * F_best / R_X``.

    Parameters
    ----------
    F_best : array_like
        Forecast score at the best distance (e.g. F(d*)).
    R_X : array_like, broadcastable with ``F_best``
        Brain score of the model's activations alone.

    Returns
    -------
    gain : ndarray, percent
        NaN where ``R_X <= 0`` or either input is NaN (a gain relative to a non-positive brain
        score is meaningless).
    """
    F_best = np.asarray(F_best, dtype=np.float64)
    R_X = np.asarray(R_X, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(R_X > 0, 100.0 * F_best / R_X, np.nan)


def bootstrap_best(curves, x, n_boot=1000, level=0.95, seed=0):
    """The x maximising the across-subject mean of per-subject curves, with a bootstrap interval.

    Parameters
    ----------
    curves : array_like, shape (S, n_x)
        One curve per subject (e.g. a region-mean F(d)); NaN rows or entries are ignored.
    x : array_like, shape (n_x,)
        The abscissa of each column (distances, layers).
    n_boot : int
        Resamples of the subjects (with replacement).
    level : float
        Coverage of the percentile interval.
    seed : int
        Seed of the resampling (results are deterministic).

    Returns
    -------
    best : float
        ``x[argmax mean_s curves]`` (NaN when every column is NaN).
    low, high : float
        Percentile interval of the best x over the bootstrap resamples of the subjects.
    """
    C = np.asarray(curves, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if C.ndim != 2 or C.shape[1] != x.shape[0]:
        raise ValueError(f"bootstrap_best: curves {C.shape} do not match {x.shape[0]} x values")

    def argbest(M):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmean(M, axis=-2)
        allnan = np.all(np.isnan(m), axis=-1)
        return np.where(allnan, np.nan, x[np.argmax(np.where(np.isnan(m), -np.inf, m), axis=-1)])

    best = float(argbest(C))
    if C.shape[0] < 2:
        return best, np.nan, np.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, C.shape[0], size=(n_boot, C.shape[0]))
    boots = argbest(C[idx])
    alpha = (1.0 - level) / 2.0
    return best, float(np.nanquantile(boots, alpha)), float(np.nanquantile(boots, 1 - alpha))


def forecast_gain(R, F, distances, mask, distance="best", level=0.95):
    """The paper's forecast gain: F(d*) / R(X) per subject, at one distance for the group.

    Each subject's brain score and forecast scores are averaged over the ``mask`` vertices;
    ``d*`` is the distance maximising the across-subject mean of those averaged F(d) (or the
    given distance); the gain of subject s is ``100 * F_s(d*) / R_s``. Unlike the per-vertex
    maximum over distances of the group-mean F, which picks each vertex's luckiest distance
    and is biased upward, one d* is chosen for everyone.

    Parameters
    ----------
    R : array_like, shape (S, V)
        Brain scores R(X).
    F : array_like, shape (S, n_d, V)
        Forecast scores F(d).
    distances : array_like, shape (n_d,)
    mask : array_like of bool, shape (V,)
        Vertices averaged (e.g. those with a reliable group brain score).
    distance : "best" or int
        ``"best"``: the group's best distance; an int: that distance (must be fitted).
    level : float
        CI level across subjects (Student t).

    Returns
    -------
    dict
        ``dstar`` (float), ``R_subjects`` (S,), ``F_subjects`` (S, n_d), ``gain_subjects`` (S,)
        percent (NaN where ``R_s <= 0``), ``mean``, ``ci_low``, ``ci_high`` (percent),
        ``n`` (subjects with a finite gain), ``n_vertices`` (mask size).
    """
    R = np.asarray(R, dtype=np.float64)
    F = np.asarray(F, dtype=np.float64)
    distances = np.asarray(distances)
    mask = np.asarray(mask, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        R_s = np.nanmean(R[:, mask], axis=1) if mask.any() else np.full(len(R), np.nan)
        F_s = (np.nanmean(F[:, :, mask], axis=2) if mask.any()
               else np.full(F.shape[:2], np.nan))
        if distance == "best":
            f_mean = np.nanmean(F_s, axis=0)
            dstar = (float(distances[np.nanargmax(f_mean)]) if np.isfinite(f_mean).any()
                     else np.nan)
        else:
            if int(distance) not in set(distances.tolist()):
                raise ValueError(f"forecast_gain: distance {distance} was not fitted "
                                 f"({distances.tolist()})")
            dstar = float(distance)
        if np.isfinite(dstar):
            gain = relative_gain(F_s[:, int(np.flatnonzero(distances == dstar)[0])], R_s)
        else:
            gain = np.full(len(R), np.nan)
        mean, low, high = mean_ci(gain[np.isfinite(gain)][:, None], level=level) \
            if np.isfinite(gain).any() else (np.array([np.nan]),) * 3
    return {"dstar": dstar, "R_subjects": R_s, "F_subjects": F_s, "gain_subjects": gain,
            "mean": float(mean[0]), "ci_low": float(low[0]), "ci_high": float(high[0]),
            "n": int(np.isfinite(gain).sum()), "n_vertices": int(mask.sum())}


def zscore_columns(Y):
    """Z-score each column over time; constant or NaN columns become NaN.

    Parameters
    ----------
    Y : ndarray, shape (n_trs, n_vertices)

    Returns
    -------
    Z : ndarray, shape (n_trs, n_vertices), float32
    """
    Y = np.asarray(Y, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = Y.mean(0)
        std = Y.std(0)
        Z = (Y - mean) / std
    Z[:, ~(std > 1e-8 * (np.abs(mean) + 1))] = np.nan
    return Z.astype(np.float32)


class quiet_nan_warnings:
    """Context manager silencing the RuntimeWarnings of NaN-only slices (``nanmean`` of the
    medial wall, a subject without a region): their NaN result is the intended answer."""

    def __enter__(self):
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)
