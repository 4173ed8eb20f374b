"""Cross-validated ridge encoding models: brain scores and forecast scores.

For each outer fold of contiguous TRs, everything is fitted on the training fold only:

1. per feature block: ``StandardScaler`` + ``PCA(n_components)`` (:func:`_reduce_block`);
2. blocks concatenated, FIR delays per segment (zero-padded, :func:`brainpred.design.fir_delays`),
   ``StandardScaler`` again (:func:`_fold_design`);
3. ridge with one alpha per target chosen by inner cross-validation on the training fold
   (contiguous inner folds through :func:`himalaya.ridge.solve_ridge_cv_svd`, or efficient
   leave-one-out, :func:`_ridge_cv_predict`); targets centred on the training mean;
4. Pearson r per target on the test fold (:func:`pearson_r`).

The brain score is the mean of the fold scores. Targets (vertices) that contain a NaN or are
constant are never sent to the solver and score NaN.
"""

from __future__ import annotations

import contextlib

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from .design import fir_delays
from .errors import ConfigError

__all__ = ["resolve_backend", "contiguous_folds", "pearson_r", "encoding_scores",
           "forecast_scores", "valid_targets"]

DEFAULT_ALPHAS = np.logspace(-1, 8, 10)
_BACKENDS = ("numpy", "torch", "torch_cuda")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def resolve_backend(backend="auto"):
    """Name of the himalaya backend to use.

    Parameters
    ----------
    backend : {"auto", "numpy", "torch", "torch_cuda"}
        ``"auto"``: ``"torch_cuda"`` when a CUDA device is available, else ``"torch"`` (on CPU
        torch was about 1.4x faster than numpy for a (300, 240) x (300, 20000) ridge CV).

    Returns
    -------
    name : str
    """
    if backend == "auto":
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return "numpy"
        return "torch_cuda" if torch.cuda.is_available() else "torch"
    if backend not in _BACKENDS:
        raise ConfigError(f"mapping backend must be 'auto' or one of {_BACKENDS}, got "
                          f"{backend!r}.")
    return backend


@contextlib.contextmanager
def _himalaya_backend(name):
    """Set the himalaya backend for the duration of the block, then restore the previous one."""
    from himalaya.backend import get_backend, set_backend

    previous = get_backend().__name__.rsplit(".", 1)[-1]
    backend = set_backend(resolve_backend(name), on_error="raise")
    try:
        yield backend
    finally:
        set_backend(previous, on_error="warn")


def contiguous_folds(n_samples, n_folds=5, groups=None):
    """Contiguous, unshuffled cross-validation folds.

    Parameters
    ----------
    n_samples : int
    n_folds : int
    groups : array of shape (n_samples,) or None
        Group label (story) of each sample. If given, every fold is made of whole groups: the
        groups, in order of first appearance, are cut into ``n_folds`` consecutive runs of groups
        of about equal numbers of samples.

    Returns
    -------
    folds : list of (train_idx, test_idx)
        ``n_folds`` pairs of sorted int arrays; the test sets partition ``range(n_samples)``.
        Without groups the test sets are ``np.array_split(range(n_samples), n_folds)`` (as
        ``sklearn.model_selection.KFold(n_folds)``).
    """
    n_samples, n_folds = int(n_samples), int(n_folds)
    if n_folds < 2:
        raise ConfigError(f"the number of folds must be >= 2, got {n_folds}.")
    all_idx = np.arange(n_samples)
    if groups is None:
        if n_samples < n_folds:
            raise ConfigError(f"cannot make {n_folds} folds of {n_samples} samples.")
        tests = np.array_split(all_idx, n_folds)
    else:
        groups = np.asarray(groups).reshape(-1)
        if groups.shape[0] != n_samples:
            raise ValueError(f"groups has {groups.shape[0]} entries for {n_samples} samples.")
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        order = np.argsort(first)                      # group ids by first appearance
        n_groups = len(order)
        if n_groups < n_folds:
            raise ConfigError(f"cannot make {n_folds} folds of whole groups (stories) from "
                              f"{n_groups} groups; lower mapping n_folds or do not group folds "
                              "by story.")
        sizes = np.bincount(inverse, minlength=n_groups)[order]
        cum = np.cumsum(sizes)
        bounds = [0]
        for k in range(1, n_folds):
            b = int(np.argmin(np.abs(cum - k * n_samples / n_folds))) + 1
            b = min(max(b, bounds[-1] + 1), n_groups - (n_folds - k))
            bounds.append(b)
        bounds.append(n_groups)
        rank = np.empty(n_groups, dtype=np.int64)
        rank[order] = np.arange(n_groups)
        fold_of_group = np.searchsorted(bounds, np.arange(n_groups), side="right") - 1
        fold_of_sample = fold_of_group[rank[inverse]]
        tests = [np.flatnonzero(fold_of_sample == k) for k in range(n_folds)]
    return [(np.setdiff1d(all_idx, test, assume_unique=True), test) for test in tests]


def pearson_r(y_true, y_pred):
    """Pearson correlation per column.

    Parameters
    ----------
    y_true, y_pred : arrays of shape (n_samples, V)

    Returns
    -------
    r : float32 array of shape (V,)
        NaN where either column has zero variance or contains a NaN.
    """
    a = np.asarray(y_true, dtype=np.float64)
    b = np.asarray(y_pred, dtype=np.float64)
    if a.ndim == 1:
        a, b = a[:, None], b[:, None]
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (a * b).sum(0) / den
    r[~(den > 0)] = np.nan
    return r.astype(np.float32)


def valid_targets(Y):
    """Targets that can be fitted: no NaN and not constant.

    Parameters
    ----------
    Y : array of shape (n_samples, V)

    Returns
    -------
    mask : bool array of shape (V,)
    """
    Y = np.asarray(Y)
    return np.isfinite(Y).all(0) & (np.ptp(Y, axis=0) > 0)


def _fold_mean(fold_scores):
    """Mean over folds (axis 0) ignoring NaN folds; NaN where every fold is NaN."""
    fold_scores = np.asarray(fold_scores, dtype=np.float64)
    ok = np.isfinite(fold_scores)
    n = ok.sum(0)
    total = np.where(ok, fold_scores, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / n
    out[n == 0] = np.nan
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# design of one fold
# --------------------------------------------------------------------------------------------
def _reduce_block(X, train, n_components):
    """Standardise + PCA one feature block, fitted on the training rows.

    Parameters
    ----------
    X : array of shape (n_trs, D)
    train : int array
    n_components : int
        Clipped to ``min(n_components, D, len(train))``.

    Returns
    -------
    Z : float32 array of shape (n_trs, k)
        All TRs projected on the ``k`` components.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[:, None]
    k = int(min(n_components, X.shape[1], len(train)))
    scaler = StandardScaler().fit(X[train])
    Xs = scaler.transform(X)
    pca = PCA(n_components=k, svd_solver="full").fit(Xs[train])
    return pca.transform(Xs).astype(np.float32)


def _fold_design(reduced_blocks, train, test, delays, segment_lengths):
    """Train / test design matrices from the reduced blocks of a fold.

    Parameters
    ----------
    reduced_blocks : list of arrays of shape (n_trs, k_i)
        Output of :func:`_reduce_block` for this fold.
    train, test : int arrays
    delays : iterable of int
    segment_lengths : sequence of int or None

    Returns
    -------
    X_train : float32 array of shape (len(train), sum(k_i) * n_delays)
    X_test : float32 array of shape (len(test), sum(k_i) * n_delays)
        Blocks concatenated, FIR-delayed per segment, standardised on the training rows.
    """
    Z = np.concatenate(reduced_blocks, axis=1)
    D = fir_delays(Z, delays, segment_lengths)
    scaler = StandardScaler().fit(D[train])
    D = scaler.transform(D).astype(np.float32)
    return D[train], D[test]


# --------------------------------------------------------------------------------------------
# ridge
# --------------------------------------------------------------------------------------------
def _batches(n, size):
    size = n if not size else int(size)
    return [slice(s, min(s + size, n)) for s in range(0, n, max(size, 1))] or [slice(0, 0)]


def _neg_mse(y_true, y_pred):
    """Negative mean squared error per prediction and target.

    Same values as himalaya's ``l2_neg_loss`` without its input checks (our inputs are finite
    by construction), which cost more than the loss itself at brain scale.

    Parameters
    ----------
    y_true : array, shape (n_samples, n_targets)
    y_pred : array, shape (n_alphas, n_samples, n_targets) or (n_samples, n_targets)

    Returns
    -------
    array, shape (n_alphas, n_targets) or (n_targets,)
    """
    axis = 1 if len(y_pred.shape) > len(y_true.shape) else 0
    diff = y_pred - y_true
    diff *= diff
    return -diff.sum(axis) / y_true.shape[0]


def _ridge_contiguous(X_train, Y_train, X_test, alphas, n_inner_folds, target_batch):
    """Ridge with per-target alpha chosen by contiguous inner CV (himalaya); test predictions."""
    from himalaya.backend import get_backend
    from himalaya.ridge import solve_ridge_cv_svd

    backend = get_backend()
    cv = contiguous_folds(X_train.shape[0], n_inner_folds)
    Xtr = backend.asarray(X_train)
    alphas_b = backend.asarray(np.asarray(alphas, dtype=np.float32))
    out = np.empty((X_test.shape[0], Y_train.shape[1]), dtype=np.float32)
    for batch in _batches(Y_train.shape[1], target_batch):
        _, coefs, _, intercept = solve_ridge_cv_svd(
            Xtr, backend.asarray(Y_train[:, batch]), alphas=alphas_b, fit_intercept=True,
            cv=cv, local_alpha=True, warn=False, score_func=_neg_mse)
        coefs = backend.to_numpy(coefs)
        intercept = backend.to_numpy(intercept)
        out[:, batch] = X_test @ coefs + intercept
    return out


def _ridge_loo(X_train, Y_train, X_test, alphas, target_batch):
    """Ridge with per-target alpha chosen by efficient leave-one-out; test predictions.

    Same criterion as ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=True)`` (mean
    squared leave-one-out error, unpenalised intercept, first best alpha), computed from one
    SVD of the centred training design with the current himalaya backend.
    """
    from himalaya.backend import get_backend

    backend = get_backend()
    n = X_train.shape[0]
    x_mean = X_train.mean(0)
    Xc = backend.asarray(X_train - x_mean)
    U, s, Vt = backend.svd(Xc, full_matrices=False)
    s2 = s ** 2
    U2 = U ** 2
    alphas = np.asarray(alphas, dtype=np.float64)
    leverages = []
    for alpha in alphas:
        f = s2 / (s2 + float(alpha))
        leverages.append(((U2 @ f) + 1.0 / n, f))
    out = np.empty((X_test.shape[0], Y_train.shape[1]), dtype=np.float32)
    Xte = backend.asarray(X_test - x_mean)
    for batch in _batches(Y_train.shape[1], target_batch):
        y_mean = Y_train[:, batch].mean(0)
        Yc = backend.asarray(Y_train[:, batch] - y_mean)
        UtY = U.T @ Yc
        mse = np.empty((len(alphas), UtY.shape[1]))
        for a, (h, f) in enumerate(leverages):
            resid = (Yc - U @ (f[:, None] * UtY)) / (1.0 - h)[:, None]
            mse[a] = backend.to_numpy((resid ** 2).mean(0))
        best = np.argmin(mse, axis=0)
        best_alpha = backend.asarray(alphas[best].astype(np.float32))
        g = s[:, None] / (s2[:, None] + best_alpha[None, :])
        W = Vt.T @ (g * UtY)
        out[:, batch] = backend.to_numpy(Xte @ W) + y_mean
    return out


def _ridge_cv_predict(X_train, Y_train, X_test, alphas=DEFAULT_ALPHAS, inner_cv="contiguous",
                      n_inner_folds=5, target_batch=None):
    """Fit ridge (one alpha per target by inner CV) on the training fold, predict the test fold.

    Parameters
    ----------
    X_train : float32 array of shape (n_train, F)
    Y_train : float32 array of shape (n_train, T)
        Valid targets only (no NaN, not constant).
    X_test : float32 array of shape (n_test, F)
    alphas : array of shape (n_alphas,)
    inner_cv : {"contiguous", "loo"}
    n_inner_folds : int
        Number of contiguous inner folds (``inner_cv="contiguous"``).
    target_batch : int or None
        Number of targets solved at once (memory bound); None = all.

    Returns
    -------
    Y_pred : float32 array of shape (n_test, T)
    """
    if inner_cv == "contiguous":
        return _ridge_contiguous(X_train, Y_train, X_test, alphas, n_inner_folds, target_batch)
    if inner_cv == "loo":
        return _ridge_loo(X_train, Y_train, X_test, alphas, target_batch)
    raise ConfigError(f"mapping inner_cv must be 'contiguous' or 'loo', got {inner_cv!r}.")


# --------------------------------------------------------------------------------------------
# public scores
# --------------------------------------------------------------------------------------------
def _prepare(Y, segment_lengths, n_folds, groups):
    Y = np.asarray(Y, dtype=np.float32)
    if Y.ndim == 1:
        Y = Y[:, None]
    n = Y.shape[0]
    if segment_lengths is None:
        segment_lengths = [n]
    segment_lengths = np.asarray(segment_lengths, dtype=np.int64).reshape(-1)
    if segment_lengths.sum() != n:
        raise ValueError(f"segment_lengths sum to {segment_lengths.sum()} but Y has {n} TRs.")
    if isinstance(groups, str):
        if groups != "segments":
            raise ConfigError(f"groups must be None, 'segments' or an array, got {groups!r}.")
        groups = np.repeat(np.arange(len(segment_lengths)), segment_lengths)
    folds = contiguous_folds(n, n_folds, groups)
    valid = valid_targets(Y)
    return Y, segment_lengths, folds, valid


def _check_block(X, n):
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[:, None]
    if X.shape[0] != n:
        raise ValueError(f"a feature block has {X.shape[0]} rows but Y has {n} TRs.")
    return X


def _score_fold(reduced, train, test, Yv, *, delays, segment_lengths, ridge_kw):
    """Pearson r on the test fold of the ridge fitted on the training fold (valid targets)."""
    X_train, X_test = _fold_design(reduced, train, test, delays, segment_lengths)
    pred = _ridge_cv_predict(X_train, Yv[train], X_test, **ridge_kw)
    return pearson_r(Yv[test], pred)


def encoding_scores(X_blocks, Y, segment_lengths=None, *, n_components=20, delays=range(6),
                    alphas=DEFAULT_ALPHAS, n_folds=5, inner_cv="contiguous", n_inner_folds=5,
                    backend="numpy", target_batch=None, groups=None, return_folds=False):
    """Cross-validated brain score of a (multi-block) feature space.

    Parameters
    ----------
    X_blocks : list of arrays of shape (n_trs, D_i)
        Feature blocks, each standardised and reduced by its own PCA (a single array = one
        block).
    Y : array of shape (n_trs, V)
        BOLD (targets); NaN or constant columns score NaN and are not fitted.
    segment_lengths : sequence of int or None
        TRs per story (sum ``n_trs``) for the FIR zero-padding; None = one segment.
    n_components : int
        PCA components per block (clipped to the block's features / training samples).
    delays : iterable of int
        FIR delays in TRs.
    alphas : array of shape (n_alphas,)
        Ridge grid; one alpha per target is chosen by inner CV.
    n_folds : int
        Outer contiguous folds.
    inner_cv : {"contiguous", "loo"}
        Inner CV used to choose alpha on the training fold.
    n_inner_folds : int
        Number of contiguous inner folds.
    backend : {"numpy", "torch", "torch_cuda", "auto"}
        himalaya backend (restored afterwards).
    target_batch : int or None
        Targets solved at once.
    groups : None, "segments" or array of shape (n_trs,)
        If given, outer folds are made of whole groups ("segments": whole stories).
    return_folds : bool
        Also return the per-fold scores.

    Returns
    -------
    scores : float32 array of shape (V,)
        Mean Pearson r over the outer folds (folds where r is undefined are skipped).
    fold_scores : float32 array of shape (n_folds, V)
        Only if ``return_folds``.
    """
    if not isinstance(X_blocks, (list, tuple)):
        X_blocks = [X_blocks]
    Y, segment_lengths, folds, valid = _prepare(Y, segment_lengths, n_folds, groups)
    X_blocks = [_check_block(X, Y.shape[0]) for X in X_blocks]
    Yv = Y[:, valid]
    fold_scores = np.full((len(folds), Y.shape[1]), np.nan, dtype=np.float32)
    ridge_kw = dict(alphas=alphas, inner_cv=inner_cv, n_inner_folds=n_inner_folds,
                    target_batch=target_batch)
    if valid.any():
        with _himalaya_backend(backend):
            for i, (train, test) in enumerate(folds):
                reduced = [_reduce_block(X, train, n_components) for X in X_blocks]
                fold_scores[i, valid] = _score_fold(reduced, train, test, Yv, delays=delays,
                                                    segment_lengths=segment_lengths,
                                                    ridge_kw=ridge_kw)
    scores = _fold_mean(fold_scores)
    return (scores, fold_scores) if return_folds else scores


def forecast_scores(X, windows, Y, segment_lengths=None, **kwargs):
    """Brain scores of X alone and of X concatenated with each forecast window.

    Parameters
    ----------
    X : array of shape (n_trs, D)
        Present features (TR level, before PCA).
    windows : dict {distance: array of shape (n_trs, Dw)} or sequence of (distance, array)
        Forecast windows at TR level. A dict is processed in the order ``sorted(windows)``; a
        sequence of pairs in its own order.
    Y : array of shape (n_trs, V)
    segment_lengths : sequence of int or None
    **kwargs
        As :func:`encoding_scores` (``n_components``, ``delays``, ``alphas``, ``n_folds``,
        ``inner_cv``, ``n_inner_folds``, ``backend``, ``target_batch``, ``groups``).

    Returns
    -------
    R_X : float32 array of shape (V,)
        Brain score of X.
    R_XW : float32 array of shape (n_d, V)
        Brain score of ``[X, W_d]`` for each distance, in the order described above; the
        forecast score is ``F(d) = R_XW - R_X``. Row ``j`` equals
        ``encoding_scores([X, W_j], Y, ...)``; the X-block scaling + PCA of each outer fold is
        computed once and shared by every distance.
    """
    n_components = kwargs.pop("n_components", 20)
    delays = kwargs.pop("delays", range(6))
    n_folds = kwargs.pop("n_folds", 5)
    groups = kwargs.pop("groups", None)
    backend = kwargs.pop("backend", "numpy")
    ridge_kw = dict(alphas=kwargs.pop("alphas", DEFAULT_ALPHAS),
                    inner_cv=kwargs.pop("inner_cv", "contiguous"),
                    n_inner_folds=kwargs.pop("n_inner_folds", 5),
                    target_batch=kwargs.pop("target_batch", None))
    if kwargs:
        raise TypeError(f"forecast_scores got unexpected arguments {sorted(kwargs)}.")
    items = sorted(windows.items()) if isinstance(windows, dict) else list(windows)

    Y, segment_lengths, folds, valid = _prepare(Y, segment_lengths, n_folds, groups)
    X = _check_block(X, Y.shape[0])
    items = [(d, _check_block(W, Y.shape[0])) for d, W in items]
    Yv = Y[:, valid]
    r_x = np.full((len(folds), Y.shape[1]), np.nan, dtype=np.float32)
    r_xw = np.full((len(items), len(folds), Y.shape[1]), np.nan, dtype=np.float32)
    score = dict(delays=delays, segment_lengths=segment_lengths, ridge_kw=ridge_kw)
    if valid.any():
        with _himalaya_backend(backend):
            for i, (train, test) in enumerate(folds):
                zx = _reduce_block(X, train, n_components)
                r_x[i, valid] = _score_fold([zx], train, test, Yv, **score)
                for j, (_, W) in enumerate(items):
                    zw = _reduce_block(W, train, n_components)
                    r_xw[j, i, valid] = _score_fold([zx, zw], train, test, Yv, **score)
    R_X = _fold_mean(r_x)
    R_XW = np.stack([_fold_mean(r) for r in r_xw]) if items else np.empty((0, Y.shape[1]),
                                                                            np.float32)
    return R_X, R_XW
