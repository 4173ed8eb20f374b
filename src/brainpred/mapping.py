"""Cross-validated ridge encoding models: brain scores and forecast scores.

For each outer fold of contiguous TRs, everything is fitted on the training fold only:

1. per feature block: ``StandardScaler`` + ``PCA(n_components)`` (:func:`_reduce_block`);
2. blocks concatenated, FIR delays per segment (zero-padded, :func:`brainpred.design.fir_delays`),
   ``StandardScaler`` again (:func:`_fold_design`);
3. ridge with one alpha per target chosen by inner cross-validation on the training fold
   (contiguous inner folds, or efficient leave-one-out as scikit-learn's ``RidgeCV``): the
   target-independent algebra is done once per (fold, design) in float64 (:class:`_RidgePlan`),
   then all alphas' validation errors of a target batch come from a few large float32 matrix
   products on the himalaya backend's device (:func:`_ridge_batch_scores`);
4. Pearson r per target on the test fold.

The targets are centred on the training rows of each fold (the test rows on their own mean,
which Pearson r ignores); they are not scaled there: a per-target scale changes neither the
alpha the inner CV picks (every alpha's error is scaled alike) nor r. Per-run z-scoring of the
BOLD over all its TRs (``mapping.zscore_runs``, the paper) happens before the folds, in
:func:`brainpred.stages.common.subject_bold`. ``gap_trs`` drops training rows next to every outer
test fold (:func:`contiguous_folds`); the inner folds have no gap. Effect of both on the demo:
``docs/validation_choices.md``.

Subjects who heard the same stimulus sequence are fitted together, their vertices stacked as
targets (:func:`forecast_scores_shared`). Measured speed and memory: ``docs/performance.md``.

The same ridge on designs that differ between targets, each target predicted from its own
predictor with FIR delays (the noise ceiling: the other listeners' mean at the same vertex), is
:func:`per_target_scores` (solver :func:`ridge_cv_per_target`): same folds, standardisation,
inner folds, refit and r, solved on each target's ``k x k`` sufficient statistics.

Penalty (``penalty`` keyword, ``mapping.penalty``): ``"shared"`` (the paper) is one alpha per
target for the whole design; ``"banded"`` gives every block of a design (X, each W_d, each
nuisance block) its own alpha per target, ``alpha_b = alpha / gamma_b``, chosen with the same
inner CV by a random search over candidate band weights gamma (:func:`banded_weights`, as
himalaya's ``solve_banded_ridge_random_search``; the first candidate is the shared penalty and
the next ones switch blocks off, so that a block that carries nothing costs no prediction).
A design of one block is fitted with the shared penalty in both cases.

The brain score is the mean of the fold scores. Targets (vertices) that contain a NaN or are
constant are never sent to the solver and score NaN. The alpha chosen for each target in each
outer fold comes back with ``design_scores(..., return_alphas=True)``.

Progress: every engine call logs (``logging``, logger ``brainpred.mapping``, INFO) its size,
then the outer fold, condition (design), targets done and an ETA after each outer fold and at
most every :data:`PROGRESS_SECONDS` in between; on an interactive terminal (stderr is a tty) a
tqdm bar shows the same (``progress`` keyword).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

import numpy as np

from .design import fir_delays
from .errors import ConfigError

__all__ = ["DEFAULT_ALPHAS", "STATS", "PROGRESS_SECONDS", "resolve_backend", "contiguous_folds",
           "pearson_r", "valid_targets", "encoding_scores", "forecast_scores",
           "forecast_scores_shared", "design_scores", "per_target_scores", "ridge_cv_per_target",
           "banded_weights"]

DEFAULT_ALPHAS = np.logspace(-1, 8, 10)
_BACKENDS = ("numpy", "torch", "torch_cuda")
#: Seconds between two progress lines of a fit within an outer fold (one line ends each fold).
PROGRESS_SECONDS = 10.0

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def resolve_backend(backend="auto"):
    """Name of the himalaya backend to use.

    Parameters
    ----------
    backend : {"auto", "numpy", "torch", "torch_cuda"}
        ``"auto"``: ``"torch_cuda"`` when a CUDA device is available, else ``"numpy"``: the
        engine's CPU work is a few large float32 matrix products plus element-wise passes, where
        numpy (OpenBLAS) was 2x faster than torch on a 2-core machine, and mixing torch's and
        OpenBLAS's thread pools in one process made both slower (``docs/performance.md``).

    Returns
    -------
    name : str
    """
    if backend == "auto":
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return "numpy"
        return "torch_cuda" if torch.cuda.is_available() else "numpy"
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


def contiguous_folds(n_samples, n_folds=5, groups=None, gap_trs=0):
    """Contiguous, unshuffled cross-validation folds.

    Parameters
    ----------
    n_samples : int
    n_folds : int
    groups : array of shape (n_samples,) or None
        Group label (story) of each sample. If given, every fold is made of whole groups: the
        groups, in order of first appearance, are cut into ``n_folds`` consecutive runs of groups
        of about equal numbers of samples.
    gap_trs : int
        Samples dropped from the training set on each side of the test set: no training index
        lies within ``gap_trs`` of a test index (``|i - j| <= gap_trs``). BOLD is
        autocorrelated and the FIR design spans several TRs, so the training rows next to the
        test fold carry part of its signal and noise; 0 (the paper) drops none. The distance
        is counted in the concatenated index, across story boundaries too.

    Returns
    -------
    folds : list of (train_idx, test_idx)
        ``n_folds`` pairs of sorted int arrays; the test sets partition ``range(n_samples)``.
        Without groups the test sets are ``np.array_split(range(n_samples), n_folds)`` (as
        ``sklearn.model_selection.KFold(n_folds)``). With ``gap_trs = 0`` the training set is
        the complement of the test set.

    Raises
    ------
    ConfigError
        Fewer than 2 folds, too few samples or groups, ``gap_trs`` not an integer >= 0, or a
        gap that leaves a fold without training samples.
    """
    n_samples, n_folds = int(n_samples), int(n_folds)
    if n_folds < 2:
        raise ConfigError(f"the number of folds must be >= 2, got {n_folds}.")
    if isinstance(gap_trs, bool) or not isinstance(gap_trs, (int, np.integer)) or gap_trs < 0:
        raise ConfigError(f"mapping gap_trs must be an integer >= 0, got {gap_trs!r}.")
    gap_trs = int(gap_trs)
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
    folds = []
    for test in tests:
        if gap_trs == 0:
            train = np.setdiff1d(all_idx, test, assume_unique=True)
        else:
            # distance of every sample to the nearest test sample (test is sorted, non-empty)
            pos = np.searchsorted(test, all_idx)
            right = test[np.minimum(pos, len(test) - 1)]
            left = test[np.maximum(pos - 1, 0)]
            near = np.minimum(np.abs(all_idx - right), np.abs(all_idx - left))
            train = all_idx[near > gap_trs]
        if train.size == 0:
            raise ConfigError(f"mapping gap_trs = {gap_trs} leaves no training sample in a "
                              f"fold of {len(test)} test samples out of {n_samples}; lower "
                              "gap_trs or n_folds.")
        folds.append((train, test))
    return folds


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
def _standardise_fit(Xtr):
    """Mean and scale of ``StandardScaler`` fitted on ``Xtr`` (float64; constant columns -> 1)."""
    Xtr = np.asarray(Xtr)
    n = Xtr.shape[0]
    mean = Xtr.mean(0, dtype=np.float64)
    var = Xtr.var(0, dtype=np.float64)
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant | (scale < 10 * eps)] = 1.0
    return mean, scale


def _top_eigh(G, k):
    """Top-``k`` eigenpairs of the symmetric PSD matrix ``G``, largest first (deterministic).

    Dense LAPACK for small matrices; Lanczos (ARPACK, fixed start vector) for large ones, where
    only ``k`` of ``m`` eigenpairs are needed.
    """
    m = G.shape[0]
    if m <= 600 or k >= m // 4:
        with _small_blas():
            w, U = np.linalg.eigh(np.asarray(G, dtype=np.float64))
        return w[::-1][:k], U[:, ::-1][:, :k]
    from scipy.sparse.linalg import eigsh

    v0 = np.random.default_rng(0).standard_normal(m)
    w, U = eigsh(np.asarray(G, dtype=np.float64), k=k, which="LA", v0=v0)
    order = np.argsort(w)[::-1]
    return w[order], U[:, order]


def _reduce_block(X, train, n_components):
    """Standardise + PCA one feature block, fitted on the training rows.

    Same subspace as ``StandardScaler`` + ``PCA(k, svd_solver="full")`` (component signs may
    differ, which changes no score), computed from the eigendecomposition of the smaller of
    the covariance (``D x D``) and Gram (``n_train x n_train``) matrices of the training rows.

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
    n_train, dim = len(train), X.shape[1]
    k = int(min(n_components, dim, n_train))
    mean, scale = _standardise_fit(X[train])
    # float64 products for small blocks, float32 (BLAS sgemm) for large ones
    dtype = np.float64 if dim * n_train * min(dim, n_train) <= _PCA_FLOAT64_MAX else np.float32
    Xs = ((X - mean.astype(dtype)) / scale.astype(dtype)).astype(dtype, copy=False)
    M = Xs[train]
    mu = M.mean(0, dtype=np.float64).astype(dtype)
    M -= mu
    if dim <= n_train:
        _, comps = _top_eigh(M.T @ M, k)                      # (D, k)
    else:
        lam, U = _top_eigh(M @ M.T, k)                         # (n_train, k)
        lam = np.maximum(lam, 0.0)
        inv = np.zeros_like(lam)
        keep = lam > max(lam[0], 0.0) * 1e-10 if k else np.zeros(0, bool)
        inv[keep] = 1.0 / np.sqrt(lam[keep])
        comps = (M.T @ U.astype(dtype)) * inv.astype(dtype)    # (D, k), unit columns
    Xs -= mu
    return (Xs @ comps.astype(dtype)).astype(np.float32)


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
    X_train : float64 array of shape (len(train), sum(k_i) * n_delays)
    X_test : float64 array of shape (len(test), sum(k_i) * n_delays)
        Blocks concatenated, FIR-delayed per segment, standardised on the training rows (the
        training columns have mean 0).
    """
    Z = np.concatenate(reduced_blocks, axis=1)
    D = fir_delays(Z, delays, segment_lengths).astype(np.float64)
    mean, scale = _standardise_fit(D[train])
    D -= mean
    D /= scale
    return D[train], D[test]


# --------------------------------------------------------------------------------------------
# ridge: one alpha per target by inner cross-validation
# --------------------------------------------------------------------------------------------
# Everything that does not depend on the targets (eigendecompositions, the linear maps from the
# training targets to the validation residuals) is computed once per (outer fold, design) in
# float64 on the host (:class:`_RidgePlan`, sizes F x F and n_train x F). The targets then go
# through a few large float32 matrix products per target batch (:func:`_ridge_batch_scores`),
# on the himalaya backend's device:
#
#   S = Xc' Y                                       (F x b)     once
#   contiguous inner fold k (validation rows v, training rows t, n_k rows):
#     Z_k = S - Xv' Yv - n_k xbar_k ybar_k'         (F x b)     = (X_t - xbar_k)' Y_t
#     P_k = L_k Z_k                                 (a*m x b)   all alphas in one product,
#           L_k = stack_a (Xv - xbar_k) V_k diag(1 / (s_k^2 + alpha_a)) V_k'
#   or, when n_train is not larger than F ("kernel" form), P_k = A_k Y with the (a*m x n_train)
#   map A_k; leave-one-out uses the same two forms with row weights w = 1 / (1 - h_ii)^2.
#   P_k holds predictions; with y the validation targets (centred on the inner training rows):
#   err[a] += sum_i w_i p_i (p_i - 2 y_i) + sum_i (w_i - 1) y_i^2
#           = sum_i w_i (p_i - y_i)^2 - sum_i y_i^2      (in cache-sized chunks)
#   dropping the alpha-independent sum_i y_i^2 keeps the large alphas' errors apart in float32.
#   final: W = V diag(1 / (s^2 + alpha_best)) V' S, Pearson r of (X_test - mean) W with Y_test.

#: Time and floating-point operations of the target-dependent solver (the dominant step), and
#: the seconds spent on each design (by its index in ``designs``: block PCA, plan, solver),
#: accumulated over calls; reset with
#: ``STATS.update(solver_seconds=0, solver_flops=0, design_seconds={})``.
STATS = {"solver_seconds": 0.0, "solver_flops": 0.0, "design_seconds": {}}

_PCA_FLOAT64_MAX = 2e8    # block PCA in float64 up to this D x n_train x min(D, n_train)
_KERNEL_RATIO = 1.25      # kernel form when n_train <= _KERNEL_RATIO * F
_CHUNK_BYTES = 16 << 20   # residual block per chunk on CPU: the element-wise passes that
_MIN_CHUNK = 256          # follow its product run from cache (64 MiB chunks: 25% slower)


def _batches(n, size):
    size = n if not size else int(size)
    return [slice(s, min(s + size, n)) for s in range(0, n, max(size, 1))] or [slice(0, 0)]


def _neg_mse(y_true, y_pred):
    """Negative mean squared error per prediction and target (himalaya ``score_func``).

    Same values as himalaya's ``l2_neg_loss`` without its input checks.

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


_THREADPOOL = None


def _small_blas():
    """Context: host BLAS limited to one thread, for the many small (F x F) decompositions.

    On a loaded 2-core machine a 2-thread 240 x 240 ``eigh`` was about 7x slower than a
    1-thread one (threads spin while waiting for each other).
    """
    global _THREADPOOL
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
        return contextlib.nullcontext()
    if _THREADPOOL is None:
        _THREADPOOL = ThreadpoolController()
    return _THREADPOOL.limit(limits=1, user_api="blas")


def _eig_gram(Xc):
    """Eigendecomposition ``Xc' Xc = V diag(s2) V'`` (float64, s2 >= 0)."""
    s2, V = np.linalg.eigh(Xc.T @ Xc)
    return np.maximum(s2, 0.0), V


class _RidgePlan:
    """Target-independent operators of one (outer fold, design); see the comment above.

    Parameters
    ----------
    X_train : float64 array of shape (n_train, F)
        Columns centred on the training rows.
    X_test : float64 array of shape (n_test, F)
    alphas : array of shape (n_alphas,)
    inner_cv : {"contiguous", "loo"}
    n_inner_folds : int
    form : {"auto", "factor", "kernel"}
    backend : himalaya backend module
    """

    def __init__(self, X_train, X_test, alphas, inner_cv, n_inner_folds, form, backend):
        with _small_blas():
            self._build(X_train, X_test, alphas, inner_cv, n_inner_folds, form, backend)

    def _build(self, X_train, X_test, alphas, inner_cv, n_inner_folds, form, backend):
        if inner_cv not in ("contiguous", "loo"):
            raise ConfigError(f"mapping inner_cv must be 'contiguous' or 'loo', got "
                              f"{inner_cv!r}.")
        n, F = X_train.shape
        alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
        a = len(alphas)
        if form == "auto":
            form = "kernel" if n <= _KERNEL_RATIO * F else "factor"
        self.kernel = form == "kernel"
        self.n_alphas = a
        self.best = None                # CV-best alpha index of the last target batch
        self.keep_err = False           # banded: also keep the inner-CV error of that alpha
        self.best_err = None
        self.backend = backend
        dev = lambda M: backend.asarray(np.ascontiguousarray(M, dtype=np.float32))  # noqa: E731
        Xc = X_train - X_train.mean(0)
        self.Xc_T = dev(Xc.T)                                   # (F, n)
        s2, V = _eig_gram(Xc)
        H = 1.0 / (s2[None, :] + alphas[:, None])               # (a, F)
        self.final_V_T = dev(V.T)
        self.final_H_T = dev(H.T)                               # (F, a)
        Xte = X_test - X_test.mean(0)
        self.test_XV = dev(Xte @ V)                             # (n_test, F)
        # final T = V' S = (Xc V)' Y: from S (contiguous, factor form), else directly from Y
        direct = self.kernel or inner_cv == "loo"
        self.final_B_T = dev((Xc @ V).T) if direct else None
        self.flops = 2.0 * F * n + 2.0 * X_test.shape[0] * F + 4.0 * X_test.shape[0] + \
            (0.0 if direct else 2.0 * F * F)
        self.blocks = []
        if inner_cv == "loo":
            B = Xc @ V                                           # (n, F)
            lev = (B ** 2) @ H.T + 1.0 / n                       # (n, a)
            w = (1.0 / (1.0 - lev.T)) ** 2                       # (a, n) LOO row weights
            blk = dict(rows=slice(0, n), scale=1.0 / n, loo=True, rw2=dev(w[:, None, :]),
                       rw2m1=dev(w - 1.0))
            if self.kernel:
                # predictions of the centred targets: B diag(H_a) B' Y
                blk["A"] = dev(np.concatenate([(B * H[j]) @ B.T for j in range(a)]))
                self.flops += 2.0 * a * n * n
            else:
                blk["L"] = dev((B[None] * H[:, None, :]).reshape(a * n, F))  # B diag(H_a)
                self.flops += 2.0 * a * n * F
            self.flops += 7.0 * a * n + n
            self.blocks.append(blk)
            return
        for _, val in contiguous_folds(n, n_inner_folds):
            s, e = int(val[0]), int(val[-1]) + 1
            m, nk = e - s, n - (e - s)
            tr = np.r_[0:s, e:n]
            xbar = Xc[tr].mean(0)
            Xk = Xc[tr] - xbar
            s2k, Vk = _eig_gram(Xk)
            Hk = 1.0 / (s2k[None, :] + alphas[:, None])          # (a, F)
            Bv = (Xc[s:e] - xbar) @ Vk                            # (m, F)
            L = ((Bv[None] * Hk[:, None, :]) @ Vk.T).reshape(a * m, F)
            blk = dict(rows=slice(s, e), scale=1.0 / m, loo=False, nk=nk)
            if self.kernel:
                # predictions of the validation targets (centred on the inner training mean)
                A = np.zeros((a * m, n))
                A[:, tr] = L @ Xk.T
                blk["A"] = dev(A)
                self.flops += 2.0 * a * m * n
            else:
                blk.update(L=dev(L), Xv_T=dev(Xc[s:e].T), xbar=dev(xbar))
                self.flops += 2.0 * F * m + 2.0 * a * m * F + 4.0 * F
            self.flops += 5.0 * a * m + 3.0 * m
            self.blocks.append(blk)


def _chunk_size(backend, rows, b):
    if getattr(backend, "name", "") == "torch_cuda":
        return b
    return int(min(b, max(_MIN_CHUNK, _CHUNK_BYTES // (4 * max(rows, 1)))))


def _argmin0(backend, err):
    if getattr(backend, "name", "numpy") == "numpy":
        return np.argmin(err, axis=0)
    return err.argmin(0)


def _error_chunk(blk, Y, Yr, Z, err, c, buf=None):
    """Add the validation errors of the targets ``c`` in block ``blk`` to ``err[:, c]``.

    Each alpha's prediction ``p`` of the validation targets ``y`` (``Yr``) adds
    ``sum_i w_i p_i (p_i - 2 y_i) + sum_i (w_i - 1) y_i^2`` (``w`` = 1, or the leave-one-out
    weights 1 / (1 - h_ii)^2): the squared error ``sum_i w_i (p_i - y_i)^2`` less the
    alpha-independent ``sum_i y_i^2``. Without that common term the errors of the large alphas,
    which differ by less than float32's resolution of the squared error itself, are compared
    exactly.
    """
    a, y = err.shape[0], Yr[:, c]
    op, rhs = (blk["A"], Y[:, c]) if Z is None else (blk["L"], Z[:, c])
    if buf is None:
        P = op @ rhs                                                    # predictions
        P = P.reshape(a, -1, P.shape[-1])
        Q = P - 2.0 * y[None]
    else:                          # numpy: reuse two buffers (fresh 16 MiB arrays page-fault)
        size = op.shape[0] * (c.stop - c.start)
        P = np.matmul(op, rhs, out=buf[0][:size].reshape(op.shape[0], -1))
        P = P.reshape(a, -1, P.shape[-1])
        Q = np.subtract(P, 2.0 * y, out=buf[1][:size].reshape(P.shape))
    Q *= P                                                              # (a, m, chunk)
    if "rw2" in blk:
        e = (blk["rw2"] @ Q)[:, 0]
        e += blk["rw2m1"] @ (y * y)
    else:
        e = Q.sum(1)
    e *= blk["scale"]
    err[:, c] += e


def _target_products(plan, Y):
    """``(S, T)``: ``S = Xc' Y`` for the contiguous factor form, else ``T = (Xc V)' Y``."""
    if plan.final_B_T is not None:
        return None, plan.final_B_T @ Y
    return plan.Xc_T @ Y, None


def _ridge_cv_errors(plan, Y, S, T=None):
    """Inner-CV error of every alpha for every target of the batch, up to a per-target constant.

    Parameters
    ----------
    plan : _RidgePlan
    Y : backend float32 array of shape (n_train, b)
        Training targets centred on the training rows.
    S, T : backend arrays of shape (F, b) or None
        As returned by :func:`_target_products`.

    Returns
    -------
    err : backend array of shape (n_alphas, b)
        Mean over inner folds of the validation mean squared error (leave-one-out: mean over
        samples of the squared leave-one-out residual), less the same alpha-independent
        constant for every alpha of a target (see :func:`_error_chunk`): its argmin over
        alphas is the CV-best alpha.
    """
    bk = plan.backend
    a, b = plan.n_alphas, Y.shape[1]
    err = np.zeros((a, b), np.float32) if bk.name == "numpy" else bk.zeros((a, b), bk.float32)
    colsum = None
    for blk in plan.blocks:
        rows = blk["rows"]
        m = rows.stop - rows.start
        Z = None
        if blk["loo"]:
            Yr = Y
            if "A" not in blk:
                Z = T                                                  # B' Y
        else:
            Yv = Y[rows]
            if colsum is None:
                colsum = Y.sum(0)
            ybar = (colsum - Yv.sum(0)) / blk["nk"]
            Yr = Yv - ybar[None, :]
            if "A" not in blk:
                Z = S - blk["Xv_T"] @ Yv
                Z -= blk["nk"] * (blk["xbar"][:, None] * ybar[None, :])
        step = _chunk_size(bk, a * m, b)
        buf = None
        if bk.name == "numpy" and step < b:
            buf = (np.empty(a * m * step, np.float32), np.empty(a * m * step, np.float32))
        for c0 in range(0, b, step):
            _error_chunk(blk, Y, Yr, Z, err, slice(c0, min(c0 + step, b)), buf)
    return err


def _ridge_batch_scores(plan, Y, Y_test_c, test_norm):
    """Pearson r on the test fold of the ridge with the CV-best alpha of each target.

    Parameters
    ----------
    plan : _RidgePlan
    Y : backend float32 array of shape (n_train, b)
        Centred training targets.
    Y_test_c : backend float32 array of shape (n_test, b)
        Test targets centred on the test rows.
    test_norm : backend array of shape (b,)
        Norm of each column of ``Y_test_c``.

    Returns
    -------
    r : float32 numpy array of shape (b,)
        The index (in ``alphas``) of each target's CV-best alpha is left in ``plan.best``
        (int numpy array of shape (b,)), so that a replacement of this function with the same
        signature (the sensitivity tests' leaks) still runs in the engine. If
        ``plan.keep_err`` (the banded penalty), that alpha's inner-CV error (as returned by
        :func:`_ridge_cv_errors`: up to a per-target constant that does not depend on the
        design) is left in ``plan.best_err`` (float32 numpy array of shape (b,)).
    """
    bk = plan.backend
    t0 = time.perf_counter()
    S, T = _target_products(plan, Y)
    err = _ridge_cv_errors(plan, Y, S, T)
    best = _argmin0(bk, err)
    plan.best = np.asarray(bk.to_numpy(best))
    if plan.keep_err:
        plan.best_err = np.asarray(bk.to_numpy(err))[plan.best, np.arange(plan.best.size)]
    if T is None:
        T = plan.final_V_T @ S
    T *= plan.final_H_T[:, best]
    pred = plan.test_XV @ T
    num = bk.to_numpy((pred * Y_test_c).sum(0)).astype(np.float64)
    pn = bk.to_numpy((pred * pred).sum(0)).astype(np.float64)
    den = np.sqrt(pn) * bk.to_numpy(test_norm).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    r[~(den > 0)] = np.nan
    STATS["solver_seconds"] += time.perf_counter() - t0
    STATS["solver_flops"] += plan.flops * Y.shape[1]
    return r.astype(np.float32)


def _ridge_cv_predict(X_train, Y_train, X_test, alphas=DEFAULT_ALPHAS, inner_cv="contiguous",
                      n_inner_folds=5, target_batch=None, form="auto"):
    """Fit ridge (one alpha per target by inner CV) on the training fold, predict the test fold.

    Reference implementation of the engine's solver with explicit predictions (used by tests);
    the engine itself only needs the test-fold correlations.

    Parameters
    ----------
    X_train : array of shape (n_train, F)
    Y_train : array of shape (n_train, T)
    X_test : array of shape (n_test, F)
    alphas : array of shape (n_alphas,)
    inner_cv : {"contiguous", "loo"}
    n_inner_folds : int
    target_batch : int or None
    form : {"auto", "factor", "kernel"}

    Returns
    -------
    Y_pred : float32 array of shape (n_test, T)
    best_alpha : float array of shape (T,)
    """
    from himalaya.backend import get_backend

    bk = get_backend()
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    x_mean = X_train.mean(0)
    plan = _RidgePlan(X_train - x_mean, X_test - x_mean, alphas, inner_cv, n_inner_folds, form,
                      bk)
    V_T = bk.to_numpy(plan.final_V_T).astype(np.float64)
    Xte = (X_test - x_mean) @ V_T.T
    Y_train = np.asarray(Y_train, dtype=np.float32)
    y_mean = Y_train.mean(0, dtype=np.float64)
    out = np.empty((X_test.shape[0], Y_train.shape[1]), dtype=np.float32)
    best_alpha = np.empty(Y_train.shape[1])
    for batch in _batches(Y_train.shape[1], target_batch):
        Y = bk.asarray(np.ascontiguousarray(Y_train[:, batch] - y_mean[batch],
                                            dtype=np.float32))
        S, T = _target_products(plan, Y)
        best = bk.to_numpy(_argmin0(bk, _ridge_cv_errors(plan, Y, S, T)))
        T = bk.to_numpy(plan.final_V_T @ S if T is None else T).astype(np.float64)
        T *= bk.to_numpy(plan.final_H_T).astype(np.float64)[:, best]
        out[:, batch] = Xte @ T + y_mean[batch]
        best_alpha[batch] = np.asarray(alphas)[best]
    return out, best_alpha


# --------------------------------------------------------------------------------------------
# banded ridge: one penalty per block (band) of the design, by the same inner CV
# --------------------------------------------------------------------------------------------
# Per target: min ||y - sum_b X_b w_b||^2 + sum_b alpha_b ||w_b||^2, i.e. the ridge of penalty
# alpha on the design whose band b is scaled by sqrt(gamma_b) (alpha_b = alpha / gamma_b). A
# random search as himalaya's ``solve_banded_ridge_random_search``: for each candidate gamma
# (:func:`banded_weights`), the shared-penalty plan of the scaled design gives every alpha's
# inner-CV error; each target keeps the (gamma, alpha) of least error (ties to the earlier
# candidate, so the first one, all gamma_b = 1, is the shared penalty) and its test-fold r.
# Every candidate's error is the same criterion less the same design-independent constant
# (:func:`_error_chunk`), so errors of different candidates compare exactly as alphas do.
_PENALTIES = ("shared", "banded")
_DIRICHLET_CONCENTRATIONS = (0.1, 1.0)


def banded_weights(n_bands, n_candidates=20, seed=0):
    """Candidate band weights of the banded ridge's random search.

    Band ``b`` of a candidate ``gamma`` gets the penalty ``alpha / gamma_b`` (``alpha`` from
    the alpha grid, chosen with gamma by the inner CV); ``gamma_b = 0`` switches band ``b``
    off (``alpha_b`` infinite). Rows, in this order, until ``n_candidates``:

    1. all ones: the shared penalty (so that banded's inner-CV error is never above shared's);
    2. each band alone (one-hot rows), and, with more than two bands, each band dropped (ones
       with one zero): the corners where a band that carries nothing is switched off;
    3. Dirichlet samples (``numpy.random.default_rng(seed)``), concentrations alternating 0.1
       and 1 (himalaya's default), each divided by its largest entry.

    Every row has largest entry 1: the least-penalised band gets the grid alpha itself.

    Parameters
    ----------
    n_bands : int
        Blocks of the design (>= 1).
    n_candidates : int
        Rows wanted (>= 1); with fewer than the rows of 1. and 2., those are cut in order.
    seed : int
        Seed of the Dirichlet samples.

    Returns
    -------
    gammas : float64 array of shape (n, n_bands)
        ``n = n_candidates``, or 1 when ``n_bands == 1`` (every candidate is the shared
        penalty then).
    """
    n_bands = int(n_bands)
    if n_bands < 1:
        raise ValueError(f"banded_weights: n_bands must be >= 1, got {n_bands}.")
    if isinstance(n_candidates, bool) or int(n_candidates) != n_candidates or n_candidates < 1:
        raise ConfigError(f"mapping banded_candidates must be an integer >= 1, got "
                          f"{n_candidates!r}.")
    n_candidates = int(n_candidates)
    rows = [np.ones(n_bands)]
    if n_bands > 1:
        rows += list(np.eye(n_bands))
        if n_bands > 2:
            rows += list(1.0 - np.eye(n_bands))
    rng = np.random.default_rng(seed)
    i = 0
    while len(rows) < n_candidates and n_bands > 1:
        g = rng.dirichlet(np.full(n_bands, _DIRICHLET_CONCENTRATIONS[i % 2]))
        rows.append(g / g.max())
        i += 1
    return np.array(rows[:n_candidates if n_bands > 1 else 1], dtype=np.float64)


def _band_labels(widths, n_delays):
    """Band index of every column of a fold design (:func:`_fold_design`: FIR delay-major
    copies of the concatenated reduced blocks of ``widths`` columns)."""
    return np.tile(np.repeat(np.arange(len(widths)), widths), n_delays)


def _banded_fit(X_train, X_test, labels, gammas, plan_args, batches, Ytr, Yte, Ynorm,
                on_batch):
    """Banded ridge of one (outer fold, design): every target batch, every candidate.

    Parameters
    ----------
    X_train, X_test : float64 arrays of shape (n_train, F), (n_test, F)
        The fold design (:func:`_fold_design`).
    labels : int array of shape (F,)
        Band of each column (:func:`_band_labels`).
    gammas : array of shape (n_candidates, n_bands)
        Candidates (:func:`banded_weights`), the first one all ones.
    plan_args : tuple
        ``(alphas, inner_cv, n_inner_folds, form, backend)`` of :class:`_RidgePlan`.
    batches : list of slices
    Ytr, Yte, Ynorm : lists (one per batch) of backend arrays
        Centred training targets, centred test targets, test norms.
    on_batch : callable ``(candidate, batch_index)``
        Called after each (candidate, target batch): the engine's progress.

    Returns
    -------
    r, alpha_index, candidate : lists (one per batch) of arrays of shape (b,)
        Test-fold Pearson r, grid index of alpha and row of ``gammas`` chosen per target.
    """
    r = [None] * len(batches)
    best_a = [None] * len(batches)
    best_c = [None] * len(batches)
    best_e = [None] * len(batches)
    for c, gamma in enumerate(gammas):
        if c == 0:
            Xtr, Xte = X_train, X_test
        else:
            scale = np.sqrt(gamma)[labels]
            Xtr, Xte = X_train * scale, X_test * scale
        plan = _RidgePlan(Xtr, Xte, *plan_args)
        plan.keep_err = True
        for k, (Y, Yt, nrm) in enumerate(zip(Ytr, Yte, Ynorm)):
            rk = _ridge_batch_scores(plan, Y, Yt, nrm)
            if c == 0:
                r[k], best_a[k], best_e[k] = rk, plan.best.copy(), plan.best_err.copy()
                best_c[k] = np.zeros(rk.shape, np.int64)
            else:
                better = plan.best_err < best_e[k]
                r[k][better] = rk[better]
                best_a[k][better] = plan.best[better]
                best_e[k][better] = plan.best_err[better]
                best_c[k][better] = c
            on_batch(c, k)
        del plan
    return r, best_a, best_c


# --------------------------------------------------------------------------------------------
# ridge of each target on its own small design (the noise ceiling's per-vertex predictor)
# --------------------------------------------------------------------------------------------
# Same model, inner folds and refit as the shared-design solver above: contiguous inner folds
# of the training rows, each inner training block centred on its own means, one alpha per
# target by least validation error (ties to the first alpha), refit on all training rows with
# an intercept, weights V diag(1 / (s2 + alpha)) V' X'y from the eigendecomposition
# X'X = V diag(s2) V' of the centred design (as :func:`_eig_gram`). But every target t has its
# own design D[:, :, t] of k columns: a shared-design plan would be one plan per target, so the
# algebra works on the k x k sufficient statistics of each inner block, batched over targets,
# in float64; the validation error of an inner block is y'y - 2 w'X'y + w'X'Xw on its rows
# centred on the inner training means, and no validation prediction is formed (O(n k^2) per
# target and fold, plus O(n_alphas k^3) per inner block).
# One difference, kept so that the noise ceiling is unchanged: the error of an alpha is the
# squared error summed over all inner validation rows (each inner fold weighted by its size),
# where the shared-design solver averages the folds' mean squared errors; the two are equal
# when the inner folds have equal sizes (n_train a multiple of n_inner_folds) and otherwise can
# pick different alphas for near-tied targets.
def _block_stats(D, Y, rows):
    """Sufficient statistics of ``rows``: n, sum x (T, k), sum y (T,), X'X (T, k, k), X'y
    (T, k), y'y (T,)."""
    Dr = D[rows]                      # (m, k, T)
    yr = Y[rows]                      # (m, T)
    k = Dr.shape[1]
    sxx = np.empty((Dr.shape[2], k, k))
    for i in range(k):
        for j in range(i, k):
            sxx[:, i, j] = sxx[:, j, i] = np.einsum("mt,mt->t", Dr[:, i], Dr[:, j])
    sxy = np.einsum("mkt,mt->tk", Dr, yr)
    return (len(rows), Dr.sum(0).T, yr.sum(0), sxx, sxy, np.einsum("mt,mt->t", yr, yr))


def _centred_stats(stats):
    """Means (T, k), (T,) and centred Gram (T, k, k) / cross products (T, k) of a row set."""
    n, sx, sy, sxx, sxy, _ = stats
    xbar, ybar = sx / n, sy / n
    G = sxx - n * xbar[:, :, None] * xbar[:, None, :]
    b = sxy - n * xbar * ybar[:, None]
    return xbar, ybar, G, b


def _eig_system(G, b):
    """``(V, s2, V'b)`` of the batched centred Grams ``G`` (T, k, k); the ridge weights of a
    penalty ``alpha`` (scalar or (T,)) are ``V @ (V'b / (s2 + alpha))``."""
    s2, V = np.linalg.eigh(G)
    return V, np.maximum(s2, 0.0), np.einsum("tkj,tk->tj", V, b)


def _eig_weights(V, s2, q, alpha):
    """Ridge weights (T, k) of the :func:`_eig_system` for one penalty per target or for all."""
    alpha = np.asarray(alpha, dtype=np.float64)
    return np.einsum("tkj,tj->tk", V, q / (s2 + (alpha[:, None] if alpha.ndim else alpha)))


def ridge_cv_per_target(D, Y, train, test, alphas=DEFAULT_ALPHAS, n_inner_folds=5):
    """Ridge of every target on its own small design: alpha by inner CV, refit, predict.

    The solver of :func:`per_target_scores` (the noise ceiling): the model, contiguous inner
    folds and refit of the encoding model's solver (:func:`encoding_scores`), for designs that
    differ between targets.

    Parameters
    ----------
    D : array of shape (n_samples, k, T)
        Design of each target: target ``t`` is predicted from ``D[:, :, t]`` (k columns,
        e.g. the FIR delays of one predictor), as given (standardise beforehand).
    Y : array of shape (n_samples, T)
    train, test : int arrays
        Rows fitted (and split into ``n_inner_folds`` contiguous inner folds,
        :func:`contiguous_folds`) and rows predicted.
    alphas : array of shape (n_alphas,)
    n_inner_folds : int

    Returns
    -------
    Y_pred : float64 array of shape (len(test), T)
        Predictions of ``Y[test]`` by the ridge refitted on all the training rows with the
        chosen alpha (with intercept).
    best_alpha : float64 array of shape (T,)
        Alpha of least validation squared error summed over the inner folds (each inner
        training block centred on its own means), the first one on ties. With inner folds of
        equal sizes this is the encoding model's criterion (mean over the inner folds of the
        validation MSE); with unequal ones the folds are weighted by their sizes.
    """
    D = np.asarray(D, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if D.ndim != 3 or Y.shape != (D.shape[0], D.shape[2]):
        raise ValueError(f"ridge_cv_per_target: D {D.shape} must be (n, k, T) and Y {Y.shape} "
                         "(n, T)")
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    train, test = np.asarray(train), np.asarray(test)
    blocks = [_block_stats(D, Y, train[val])
              for _, val in contiguous_folds(len(train), n_inner_folds)]
    total = tuple(sum(parts) for parts in zip(*blocks))
    err = np.zeros((len(alphas), D.shape[2]))
    for val in blocks:
        m, sx_v, sy_v, sxx_v, sxy_v, syy_v = val
        xbar, ybar, G, b = _centred_stats(tuple(t - v for t, v in zip(total, val)))
        # the validation rows centred on the inner training means
        xx = (sxx_v - sx_v[:, :, None] * xbar[:, None, :] - xbar[:, :, None] * sx_v[:, None, :]
              + m * xbar[:, :, None] * xbar[:, None, :])
        xy = sxy_v - sx_v * ybar[:, None] - xbar * sy_v[:, None] + m * xbar * ybar[:, None]
        yy = syy_v - 2 * ybar * sy_v + m * ybar ** 2
        system = _eig_system(G, b)
        xxt, xyt = xx.transpose(1, 2, 0), xy.T                  # (k, k, T), (k, T)
        for a, alpha in enumerate(alphas):
            w = _eig_weights(*system, alpha).T                  # (k, T)
            # squared error summed over the block (the shared-design solver: its mean)
            err[a] += yy - 2 * (w * xyt).sum(0) + (w[:, None] * xxt * w[None]).sum((0, 1))
    best = alphas[np.argmin(err, axis=0)]
    xbar, ybar, G, b = _centred_stats(total)
    W = _eig_weights(*_eig_system(G, b), best)                  # (T, k)
    return np.einsum("mkt,tk->mt", D[test] - xbar.T[None], W) + ybar[None], best


# --------------------------------------------------------------------------------------------
# public scores
# --------------------------------------------------------------------------------------------
def _segments_and_folds(n, segment_lengths, n_folds, groups, gap_trs=0):
    if segment_lengths is None:
        segment_lengths = [n]
    segment_lengths = np.asarray(segment_lengths, dtype=np.int64).reshape(-1)
    if segment_lengths.sum() != n:
        raise ValueError(f"segment_lengths sum to {segment_lengths.sum()} but Y has {n} TRs.")
    if isinstance(groups, str):
        if groups != "segments":
            raise ConfigError(f"groups must be None, 'segments' or an array, got {groups!r}.")
        groups = np.repeat(np.arange(len(segment_lengths)), segment_lengths)
    return segment_lengths, contiguous_folds(n, n_folds, groups, gap_trs=gap_trs)


def _check_targets(Y, n=None):
    Y = np.asarray(Y)
    if Y.dtype != np.float32:
        Y = Y.astype(np.float32)
    if Y.ndim == 1:
        Y = Y[:, None]
    if n is not None and Y.shape[0] != n:
        raise ValueError(f"all subjects must have the same number of TRs ({n}), got "
                         f"{Y.shape[0]}.")
    return Y


def _check_block(X, n):
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[:, None]
    if X.shape[0] != n:
        raise ValueError(f"a feature block has {X.shape[0]} rows but Y has {n} TRs.")
    return X


def _runs(idx):
    """Runs of consecutive integers in ``idx``: list of (first, stop, position in idx)."""
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts, stops = np.r_[0, breaks], np.r_[breaks, len(idx)]
    return [(int(idx[a]), int(idx[b - 1]) + 1, int(a)) for a, b in zip(starts, stops)]


def _take_2d(Y, rows, cols, out):
    """``out[...] = Y[np.ix_(rows, cols)]``, by block copies when both index runs are few.

    Folds are one or two row ranges and valid vertices long column runs, so this is usually a
    handful of slice copies (3-4x faster than fancy indexing on (2,000 x 20,000) arrays).
    """
    row_runs, col_runs = _runs(rows), _runs(cols)
    if len(row_runs) * len(col_runs) <= 256:
        for r0, r1, ro in row_runs:
            for c0, c1, co in col_runs:
                out[ro:ro + r1 - r0, co:co + c1 - c0] = Y[r0:r1, c0:c1]
    else:
        for i, r in enumerate(rows):
            np.take(Y[r], cols, out=out[i])


class _Targets:
    """Valid targets of several subjects (same TRs), gathered per fold without a full copy."""

    def __init__(self, Y_list):
        self.Y_list = Y_list
        self.valid = [valid_targets(Y) for Y in Y_list]
        self.cols = [np.flatnonzero(v) for v in self.valid]
        self.offsets = np.cumsum([0] + [len(c) for c in self.cols])
        self.n_valid = int(self.offsets[-1])

    def gather(self, rows, sl):
        """Rows ``rows`` of the valid columns ``sl`` (of the concatenation), float32 C array."""
        rows = np.asarray(rows)
        out = np.empty((len(rows), sl.stop - sl.start), dtype=np.float32)
        for s, (Y, cols) in enumerate(zip(self.Y_list, self.cols)):
            lo, hi = max(sl.start, self.offsets[s]), min(sl.stop, self.offsets[s + 1])
            if hi > lo:
                c = cols[lo - self.offsets[s]:hi - self.offsets[s]]
                _take_2d(Y, rows, c, out[:, lo - sl.start:hi - sl.start])
        return out

    def scatter(self, flat):
        """Split a (..., n_valid) array back to a list of (..., V_s) arrays with NaN."""
        out = []
        for s, (Y, cols) in enumerate(zip(self.Y_list, self.cols)):
            full = np.full(flat.shape[:-1] + (Y.shape[1],), np.nan, dtype=np.float32)
            full[..., cols] = flat[..., self.offsets[s]:self.offsets[s + 1]]
            out.append(full)
        return out


def _duration(seconds):
    """``1h02m``, ``3m05s`` or ``12s``."""
    seconds = int(round(max(seconds, 0.0)))
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


class _Progress:
    """Progress of one engine call: INFO log lines and, on a terminal, a tqdm bar.

    The work is counted in target fits (outer folds x designs x targets; a banded design
    counts one fit per candidate of its random search). A line is logged
    after each outer fold and at most every :data:`PROGRESS_SECONDS` in between (checked after
    each target batch: a few comparisons per batch, nothing per target).
    """

    def __init__(self, n_folds, n_designs, n_targets, bar, fits_per_design=None):
        self.n_folds, self.n_designs, self.n_targets = n_folds, n_designs, n_targets
        # banded designs: one fit per candidate (``fits_per_design``: fits of each design)
        per_fold = n_designs if fits_per_design is None else int(sum(fits_per_design))
        self.total = n_folds * per_fold * n_targets
        self.done = 0
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if bar and self.total:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, desc="ridge", unit="fits", unit_scale=True,
                            leave=False, file=sys.stderr)

    def update(self, fold, design, targets_done, n, end_of_fold=False):
        """``n`` more target fits; ``targets_done`` of this (fold, design) so far."""
        self.done += n
        if self.bar is not None:
            self.bar.set_postfix_str(f"fold {fold + 1}/{self.n_folds}, condition "
                                     f"{design + 1}/{self.n_designs}", refresh=False)
            self.bar.update(n)
        now = time.perf_counter()
        if not (end_of_fold or now - self.last >= PROGRESS_SECONDS):
            return
        self.last = now
        elapsed = now - self.t0
        frac = self.done / self.total if self.total else 1.0
        eta = elapsed * (1.0 - frac) / frac if frac > 0 else float("nan")
        log.info("ridge: fold %d/%d, condition %d/%d, targets %d/%d; %.0f%% done in %s, "
                 "ETA %s", fold + 1, self.n_folds, design + 1, self.n_designs, targets_done,
                 self.n_targets, 100.0 * frac, _duration(elapsed),
                 _duration(eta) if np.isfinite(eta) else "?")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _show_bar(progress):
    if progress == "auto":
        try:
            return bool(sys.stderr.isatty())
        except (AttributeError, ValueError):      # no stderr, or a closed one
            return False
    return bool(progress)


def _check_penalty(penalty, banded_candidates, banded_seed):
    if penalty not in _PENALTIES:
        raise ConfigError(f"mapping penalty must be one of {_PENALTIES}, got {penalty!r}.")
    if (isinstance(banded_candidates, bool) or not isinstance(banded_candidates,
                                                              (int, np.integer))
            or banded_candidates < 1):
        raise ConfigError(f"mapping banded_candidates must be an integer >= 1, got "
                          f"{banded_candidates!r}.")
    if (isinstance(banded_seed, bool) or not isinstance(banded_seed, (int, np.integer))
            or banded_seed < 0):
        raise ConfigError(f"mapping banded_seed must be an integer >= 0, got {banded_seed!r}.")


def _engine(blocks, designs, Y_list, segment_lengths, *, n_components=20, delays=range(6),
            alphas=DEFAULT_ALPHAS, n_folds=5, inner_cv="contiguous", n_inner_folds=5,
            backend="numpy", target_batch=None, groups=None, form="auto", gap_trs=0,
            progress="auto", penalty="shared", banded_candidates=20, banded_seed=0,
            band_alphas=False):
    """Fold scores and chosen alphas of several designs (tuples of block indices) for several
    subjects.

    ``progress``: "auto" (a tqdm bar when stderr is a terminal), True or False; the log lines
    (:class:`_Progress`) are written in every case. ``penalty``, ``banded_candidates``,
    ``banded_seed``: as :func:`design_scores`.

    Returns
    -------
    fold_scores : list (per subject) of float32 arrays of shape (n_designs, n_folds, V_s)
    fold_alphas : list (per subject) of float32 arrays of shape (n_designs, n_folds, V_s)
        The alpha chosen by the inner CV for each target in each outer fold (NaN for targets
        that are not fitted); banded designs: the first block's ``alpha / gamma_0``.
    fold_band_alphas : list (per subject) of lists (per design) of float32 arrays of shape
        (n_bands_j, n_folds, V_s), or None
        Only if ``band_alphas``: the penalty of every block (``inf``: switched off).
    """
    if inner_cv not in ("contiguous", "loo"):
        raise ConfigError(f"mapping inner_cv must be 'contiguous' or 'loo', got {inner_cv!r}.")
    _check_penalty(penalty, banded_candidates, banded_seed)
    n = Y_list[0].shape[0]
    segment_lengths, folds = _segments_and_folds(n, segment_lengths, n_folds, groups,
                                                 gap_trs=gap_trs)
    blocks = [_check_block(X, n) for X in blocks]
    targets = _Targets(Y_list)
    alpha_grid = np.asarray(alphas, dtype=np.float32).reshape(-1)
    flat = np.full((len(designs), len(folds), targets.n_valid), np.nan, dtype=np.float32)
    flat_alpha = np.full(flat.shape, np.nan, dtype=np.float32)
    # banded: the candidates of each design (None: one band or the shared penalty) and the
    # candidate each target chose
    gammas = [banded_weights(len(d), banded_candidates, banded_seed)
              if penalty == "banded" and len(d) > 1 else None for d in designs]
    flat_cand = np.zeros(flat.shape, dtype=np.int16) if band_alphas else None
    flat_grid = np.full(flat.shape, np.nan, np.float32) if band_alphas else None  # grid alpha
    if targets.n_valid:
        batches = _batches(targets.n_valid, target_batch)
        last_use = {}
        for j, design in enumerate(designs):
            for i in design:
                last_use[i] = j
        fits = [1 if g is None else len(g) for g in gammas]
        log.info("ridge: %d outer folds x %d conditions x %d targets (%d subjects, %d TRs), "
                 "%d target batches, backend %s, %s penalty%s", len(folds), len(designs),
                 targets.n_valid, len(Y_list), n, len(batches), resolve_backend(backend),
                 penalty, f" ({max(fits)} candidates per multi-block design, seed "
                 f"{banded_seed})" if penalty == "banded" else "")
        progress = _Progress(len(folds), len(designs), targets.n_valid, _show_bar(progress),
                             fits_per_design=fits)
        try:
            with _himalaya_backend(backend) as bk:
                for f, (train, test) in enumerate(folds):
                    # targets of this fold, centred, on the device (one copy)
                    Ytr, Yte, Ynorm = [], [], []
                    for sl in batches:
                        Y = targets.gather(train, sl)
                        Y -= Y.mean(0, dtype=np.float64).astype(np.float32)
                        Ytr.append(bk.asarray(Y))
                        Yt = targets.gather(test, sl)
                        Yt -= Yt.mean(0, dtype=np.float64).astype(np.float32)
                        Ynorm.append(bk.asarray(np.sqrt((Yt.astype(np.float64) ** 2).sum(0))
                                                .astype(np.float32)))
                        Yte.append(bk.asarray(Yt))
                        del Y, Yt
                    reduced = {}
                    for j, design in enumerate(designs):
                        t0 = time.perf_counter()
                        for i in design:
                            if i not in reduced:
                                reduced[i] = _reduce_block(blocks[i], train, n_components)
                        X_train, X_test = _fold_design([reduced[i] for i in design], train,
                                                       test, delays, segment_lengths)
                        if gammas[j] is not None:
                            _banded_into(flat, flat_alpha, (flat_cand, flat_grid), j, f,
                                         X_train, X_test,
                                         [reduced[i].shape[1] for i in design], len(delays),
                                         gammas[j], (alphas, inner_cv, n_inner_folds, form,
                                                     bk), batches, Ytr, Yte, Ynorm,
                                         progress, j == len(designs) - 1, targets.n_valid)
                        else:
                            plan = _RidgePlan(X_train, X_test, alphas, inner_cv,
                                              n_inner_folds, form, bk)
                            for sl, Y, Yt, nrm in zip(batches, Ytr, Yte, Ynorm):
                                plan.best = None
                                flat[j, f, sl] = _ridge_batch_scores(plan, Y, Yt, nrm)
                                if plan.best is not None:
                                    flat_alpha[j, f, sl] = alpha_grid[plan.best]
                                progress.update(f, j, sl.stop, sl.stop - sl.start,
                                                end_of_fold=(j == len(designs) - 1
                                                             and sl.stop == targets.n_valid))
                            del plan
                        for i in design:
                            if last_use[i] == j:
                                del reduced[i]
                        STATS["design_seconds"][j] = (STATS["design_seconds"].get(j, 0.0)
                                                      + time.perf_counter() - t0)
                    del Ytr, Yte, Ynorm
        finally:
            progress.close()
    per_band = None
    if band_alphas:
        per_band = [[] for _ in Y_list]
        for j, design in enumerate(designs):
            g = np.ones((1, len(design))) if gammas[j] is None else gammas[j]
            ga = np.moveaxis(g[flat_cand[j]], -1, 0)             # (n_bands, n_folds, n_valid)
            grid = flat_alpha[j] if gammas[j] is None else flat_grid[j]
            with np.errstate(divide="ignore"):
                band = (grid[None].astype(np.float64) / ga).astype(np.float32)
            for s, arr in enumerate(targets.scatter(band)):
                per_band[s].append(arr)
    return targets.scatter(flat), targets.scatter(flat_alpha), per_band


def _banded_into(flat, flat_alpha, choice, j, f, X_train, X_test, widths, n_delays, gammas,
                 plan_args, batches, Ytr, Yte, Ynorm, progress, last_design, n_valid):
    """Banded fit of design ``j`` in outer fold ``f`` (:func:`_banded_fit`) into the engine's
    arrays: r, ``alpha / gamma_0`` (``inf`` where the first block is switched off) and, when
    ``choice = (flat_cand, flat_grid)`` holds arrays, the chosen candidate and grid alpha."""
    alpha_grid = np.asarray(plan_args[0], dtype=np.float64).reshape(-1)
    last = len(gammas) - 1

    def on_batch(c, k):
        sl = batches[k]
        progress.update(f, j, sl.stop, sl.stop - sl.start,
                        end_of_fold=last_design and c == last and sl.stop == n_valid)

    r, best_a, best_c = _banded_fit(X_train, X_test, _band_labels(widths, n_delays), gammas,
                                    plan_args, batches, Ytr, Yte, Ynorm, on_batch)
    for sl, rk, ak, ck in zip(batches, r, best_a, best_c):
        flat[j, f, sl] = rk
        with np.errstate(divide="ignore"):
            flat_alpha[j, f, sl] = (alpha_grid[ak] / gammas[ck, 0]).astype(np.float32)
        if choice[0] is not None:
            choice[0][j, f, sl] = ck
            choice[1][j, f, sl] = alpha_grid[ak]


def _mean_scores(fold_scores):
    """(n_designs, n_folds, V) -> (n_designs, V) mean over folds ignoring NaN folds."""
    if fold_scores.shape[0] == 0:
        return np.empty((0, fold_scores.shape[2]), np.float32)
    return np.stack([_fold_mean(r) for r in fold_scores])


def encoding_scores(X_blocks, Y, segment_lengths=None, *, n_components=20, delays=range(6),
                    alphas=DEFAULT_ALPHAS, n_folds=5, inner_cv="contiguous", n_inner_folds=5,
                    backend="numpy", target_batch=None, groups=None, return_folds=False,
                    gap_trs=0, penalty="shared", banded_candidates=20, banded_seed=0):
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
        Inner CV used to choose alpha on the training fold (mean over the inner folds of the
        validation mean squared error; "loo": efficient leave-one-out as scikit-learn's
        ``RidgeCV``).
    n_inner_folds : int
        Number of contiguous inner folds.
    backend : {"numpy", "torch", "torch_cuda", "auto"}
        himalaya backend (restored afterwards).
    target_batch : int or None
        Targets solved at once (bounds the memory of the solver); None = all.
    groups : None, "segments" or array of shape (n_trs,)
        If given, outer folds are made of whole groups ("segments": whole stories).
    return_folds : bool
        Also return the per-fold scores.
    gap_trs : int
        TRs dropped from the training set on each side of every outer test fold
        (:func:`contiguous_folds`); 0 = the paper. The inner folds have no gap.
    penalty : {"shared", "banded"}
        ``"shared"`` (the paper): one ridge penalty per target for the whole design.
        ``"banded"``: one penalty per block (band) and target, ``alpha_b = alpha / gamma_b``,
        (gamma, alpha) chosen together by the same inner CV among ``banded_candidates``
        candidate weights (:func:`banded_weights`; the first one is the shared penalty, the
        next ones switch blocks off) x the ``alphas`` grid. With one block both are equal.
        Costs about ``banded_candidates`` shared fits per multi-block design.
    banded_candidates : int
        Candidate band weights of the banded random search (>= 1).
    banded_seed : int
        Seed of its Dirichlet candidates (the fit is deterministic for a seed).

    Returns
    -------
    scores : float32 array of shape (V,)
        Mean Pearson r over the outer folds (folds where r is undefined are skipped).
    fold_scores : float32 array of shape (n_folds, V)
        Only if ``return_folds``.
    """
    if not isinstance(X_blocks, (list, tuple)):
        X_blocks = [X_blocks]
    Y = _check_targets(Y)
    fold = _engine(list(X_blocks), [tuple(range(len(X_blocks)))], [Y], segment_lengths,
                   n_components=n_components, delays=delays, alphas=alphas, n_folds=n_folds,
                   inner_cv=inner_cv, n_inner_folds=n_inner_folds, backend=backend,
                   target_batch=target_batch, groups=groups, gap_trs=gap_trs,
                   penalty=penalty, banded_candidates=banded_candidates,
                   banded_seed=banded_seed)[0][0][0]
    scores = _fold_mean(fold)
    return (scores, fold) if return_folds else scores


_FORECAST_KW = ("n_components", "delays", "alphas", "n_folds", "inner_cv", "n_inner_folds",
                "backend", "target_batch", "groups", "gap_trs", "progress", "penalty",
                "banded_candidates", "banded_seed")


def _engine_kwargs(kwargs, caller):
    """The engine keywords of a public scorer (TypeError on an unknown one; numpy backend by
    default)."""
    unknown = sorted(set(kwargs) - set(_FORECAST_KW) - {"form"})
    if unknown:
        raise TypeError(f"{caller} got unexpected arguments {unknown}.")
    return {"backend": "numpy", **kwargs}


def forecast_scores_shared(X, windows, Y_list, segment_lengths=None, **kwargs):
    """Forecast scores of several subjects who heard the same stimulus sequence, in one fit.

    The subjects' vertices are stacked as targets: features, PCA, FIR design and every
    decomposition of a fold are computed once for all of them. Each subject's scores equal
    ``forecast_scores(X, windows, Y_list[s], ...)``.

    Parameters
    ----------
    X : array of shape (n_trs, D)
    windows : dict {distance: array of shape (n_trs, Dw)} or sequence of (distance, array)
    Y_list : sequence of arrays of shape (n_trs, V_s)
        BOLD of each subject, on the same TRs (same stories in the same order).
    segment_lengths : sequence of int or None
    **kwargs
        As :func:`forecast_scores`.

    Returns
    -------
    scores : list of (R_X, R_XW)
        One pair per subject, as returned by :func:`forecast_scores`.
    """
    kwargs = _engine_kwargs(kwargs, "forecast_scores")
    if len(Y_list) == 0:
        return []
    Y_list = [_check_targets(Y) for Y in Y_list]
    n = Y_list[0].shape[0]
    Y_list = [_check_targets(Y, n) for Y in Y_list]
    items = sorted(windows.items()) if isinstance(windows, dict) else list(windows)
    blocks = [X] + [W for _, W in items]
    designs = [(0,)] + [(0, j + 1) for j in range(len(items))]
    out = []
    for fold in _engine(blocks, designs, Y_list, segment_lengths, **kwargs)[0]:
        means = _mean_scores(fold)
        out.append((means[0], means[1:]))
    return out


def design_scores(blocks, designs, Y_list, segment_lengths=None, return_alphas=False,
                  **kwargs):
    """Brain scores of several designs (concatenations of feature blocks), in one fit.

    The general form of :func:`forecast_scores_shared`: each block is standardised and reduced
    by its own PCA once per outer fold, and every design that uses it shares that reduction.

    Parameters
    ----------
    blocks : sequence of arrays of shape (n_trs, D_i)
        Feature blocks at TR level (before PCA).
    designs : sequence of tuples of int
        Each design lists the blocks it concatenates (after their PCA), e.g. ``(0,)`` and
        ``(0, 3)``.
    Y_list : sequence of arrays of shape (n_trs, V_s)
        BOLD of each subject, on the same TRs.
    segment_lengths : sequence of int or None
    return_alphas : bool or "bands"
        Also return the alpha chosen for each target in each outer fold; ``"bands"``: the
        penalty of every block (see below).
    **kwargs
        As :func:`forecast_scores` (``penalty``, ``banded_candidates``, ``banded_seed``: as
        :func:`encoding_scores`), and ``progress`` ("auto": a tqdm bar when stderr is a
        terminal; True; False). Progress lines are logged in every case (module docstring).

    Returns
    -------
    scores : list (one per subject) of float32 arrays of shape (n_designs, V_s)
        Mean Pearson r over the outer folds; row ``j`` equals
        ``encoding_scores([blocks[i] for i in designs[j]], Y_list[s], ...)``.
    alphas : list (one per subject) of float32 arrays of shape (n_designs, n_folds, V_s)
        Only if ``return_alphas``: the ridge penalty chosen by the inner CV for each design,
        outer fold and target (a value of the ``alphas`` grid; NaN for targets not fitted, a
        NaN or constant column of ``Y``). With ``penalty="banded"``, a design of several
        blocks holds the penalty of its first block, ``alpha / gamma_0`` (``inf`` where the
        search switched that block off).
        With ``return_alphas="bands"``: per subject, a list (one per design) of float32 arrays
        of shape (n_blocks_j, n_folds, V_s), the penalty ``alpha / gamma_b`` of every block
        of the design (``inf``: block switched off; the shared penalty repeats its alpha).
    """
    kwargs = _engine_kwargs(kwargs, "design_scores")
    if len(Y_list) == 0:
        return ([], []) if return_alphas else []
    designs = [tuple(int(i) for i in d) for d in designs]
    for d in designs:
        if not d or min(d) < 0 or max(d) >= len(blocks):
            raise ValueError(f"design_scores: design {d} refers to blocks outside "
                             f"0..{len(blocks) - 1}.")
    Y_list = [_check_targets(Y) for Y in Y_list]
    n = Y_list[0].shape[0]
    Y_list = [_check_targets(Y, n) for Y in Y_list]
    if return_alphas not in (False, True, "bands"):
        raise ValueError(f"design_scores: return_alphas must be True, False or 'bands', got "
                         f"{return_alphas!r}.")
    folds, alphas, per_band = _engine(list(blocks), designs, Y_list, segment_lengths,
                                      band_alphas=return_alphas == "bands", **kwargs)
    if return_alphas == "bands":
        alphas = per_band
    scores = [_mean_scores(fold) for fold in folds]
    return (scores, alphas) if return_alphas else scores


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
        ``inner_cv``, ``n_inner_folds``, ``backend``, ``target_batch``, ``groups``,
        ``gap_trs``, ``penalty``, ``banded_candidates``, ``banded_seed``). With the banded
        penalty, ``R_X`` (one block) is the shared fit and each ``[X, W_d]`` gets its own
        penalty per block.

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
    return forecast_scores_shared(X, windows, [Y], segment_lengths, **kwargs)[0]


def per_target_scores(P, Y, segment_lengths=None, *, delays=range(6), alphas=DEFAULT_ALPHAS,
                      n_folds=5, groups=None, n_inner_folds=5, batch=4096, gap_trs=0,
                      progress="auto"):
    """Cross-validated score of each target predicted from its own predictor, with FIR delays.

    Target ``Y[:, v]`` is predicted from ``P[:, v]`` alone, delayed by ``delays`` (zero-padded
    per segment, :func:`brainpred.design.fir_delays`): the noise ceiling's model
    (:func:`brainpred.noise_ceiling.ceiling_scores`). As in :func:`encoding_scores` (no PCA:
    the design of a target is its ``len(delays)`` delayed columns): outer contiguous folds
    (:func:`contiguous_folds`), the design standardised on the training rows of each fold, one
    alpha per target and fold by contiguous inner CV (:func:`ridge_cv_per_target`), Pearson r
    on the test fold, mean over the folds where r is defined.

    Parameters
    ----------
    P : array of shape (n_trs, V)
        Predictor of each target.
    Y : array of shape (n_trs, V)
    segment_lengths : sequence of int or None
        TRs per segment (delays never cross a segment boundary); None = one segment.
    delays : iterable of int
    alphas : array of shape (n_alphas,)
    n_folds : int
    groups : None, "segments" or array of shape (n_trs,)
        If given, outer folds are made of whole groups.
    n_inner_folds : int
    batch : int
        Targets solved at once (memory: about ``n_trs * len(delays) * batch * 8`` bytes x 3).
    gap_trs : int
        TRs dropped from the training set on each side of every outer test fold.
    progress : {"auto", True, False}
        A tqdm bar (``"auto"``: when stderr is a terminal); INFO log lines with the fold, the
        targets done and an ETA are written in every case.

    Returns
    -------
    r : float32 array of shape (V,)
        NaN where ``Y`` or ``P`` is NaN or constant, or r is undefined in every fold.
    """
    P = np.asarray(P, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    if P.shape != Y.shape or P.ndim != 2:
        raise ValueError(f"per_target_scores: P {P.shape} and Y {Y.shape} must be equal 2-D "
                         "shapes")
    n, V = Y.shape
    delays = [int(d) for d in delays]
    segment_lengths, folds = _segments_and_folds(n, segment_lengths, n_folds, groups,
                                                 gap_trs=gap_trs)
    fold_r = np.full((len(folds), V), np.nan, dtype=np.float32)
    cols = np.flatnonzero(valid_targets(Y) & valid_targets(P))
    log.info("ridge (per target): %d TRs, %d targets, %d delays, %d outer folds", n, cols.size,
             len(delays), len(folds))
    tracker = _Progress(len(folds), 1, cols.size, _show_bar(progress))
    try:
        for start in range(0, cols.size, max(int(batch), 1)):
            c = cols[start:start + int(batch)]
            D = fir_delays(P[:, c], delays, segment_lengths).astype(np.float64)
            D = D.reshape(n, len(delays), c.size)                  # (n, k, b)
            y = Y[:, c].astype(np.float64)
            for f, (train, test) in enumerate(folds):
                mean, scale = _standardise_fit(D[train])
                pred, _ = ridge_cv_per_target((D - mean) / scale, y, train, test, alphas,
                                              n_inner_folds)
                fold_r[f, c] = pearson_r(y[test], pred)
                tracker.update(f, 0, start + c.size, c.size,
                               end_of_fold=start + c.size >= cols.size)
    finally:
        tracker.close()
    return _fold_mean(fold_r)
