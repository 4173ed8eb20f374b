import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brainpred.design import fir_delays
from brainpred.errors import ConfigError
import brainpred.mapping as mapping
from brainpred.mapping import (contiguous_folds, encoding_scores, forecast_scores,
                               forecast_scores_shared, pearson_r, resolve_backend)

ALPHAS = np.logspace(-1, 8, 10)
SEGMENTS = [70, 50]
DELAYS = range(3)


def _data(seed=0, n=120, v=30, signal=1.0):
    rng = np.random.default_rng(seed)
    X1 = rng.standard_normal((n, 12))
    X2 = rng.standard_normal((n, 9))
    Y = rng.standard_normal((n, v))
    Y += signal * (X1[:, :2] @ rng.standard_normal((2, v))
                   + X2[:, :1] @ rng.standard_normal((1, v)))
    return X1.astype(np.float32), X2.astype(np.float32), Y.astype(np.float32)


def _sk_design(blocks, train, n_components, delays, segments):
    reduced = []
    for X in blocks:
        k = min(n_components, X.shape[1], len(train))
        pipe = make_pipeline(StandardScaler(), PCA(k, svd_solver="full")).fit(X[train])
        reduced.append(pipe.transform(X))
    D = fir_delays(np.concatenate(reduced, 1), delays, segments)
    D = StandardScaler().fit(D[train]).transform(D)
    return D


def _sk_reference(blocks, Y, segments, n_components, delays, n_folds=5, n_inner=5, loo=False,
                  gap=0):
    """The whole pipeline with scikit-learn only (``gap``: training rows within ``gap`` rows
    of the test fold removed, written out here independently of contiguous_folds)."""
    n = Y.shape[0]
    scores = []
    for _, test in contiguous_folds(n, n_folds):
        lo, hi = test.min() - gap, test.max() + gap
        train = np.array([i for i in range(n) if i < lo or i > hi])
        D = _sk_design(blocks, train, n_components, delays, segments)
        Dtr, Dte, Ytr = D[train].astype(np.float64), D[test].astype(np.float64), Y[train]
        if loo:
            pred = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(Dtr, Ytr).predict(Dte)
        else:
            # mean over the same contiguous inner folds of the per-fold MSE
            mse = np.zeros((len(ALPHAS), Y.shape[1]))
            for itr, ite in contiguous_folds(len(train), n_inner):
                for a, alpha in enumerate(ALPHAS):
                    p = Ridge(alpha=alpha).fit(Dtr[itr], Ytr[itr]).predict(Dtr[ite])
                    mse[a] += ((Ytr[ite] - p) ** 2).mean(0) / n_inner
            best = np.argmin(mse, 0)
            pred = np.empty((len(test), Y.shape[1]))
            for a in np.unique(best):
                cols = best == a
                pred[:, cols] = Ridge(alpha=ALPHAS[a]).fit(Dtr, Ytr[:, cols]).predict(Dte).reshape(
                    len(test), -1)
        scores.append([pearsonr(Y[test, j], pred[:, j])[0] for j in range(Y.shape[1])])
    return np.mean(scores, 0)


KW = dict(n_components=5, delays=DELAYS, alphas=ALPHAS)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_encoding_matches_sklearn_contiguous(backend):
    X1, X2, Y = _data()
    ours = encoding_scores([X1, X2], Y, SEGMENTS, backend=backend, **KW)
    ref = _sk_reference([X1, X2], Y, SEGMENTS, 5, DELAYS)
    assert ours.shape == (30,) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_encoding_matches_sklearn_loo():
    X1, X2, Y = _data(seed=1)
    ours = encoding_scores([X1, X2], Y, SEGMENTS, inner_cv="loo", **KW)
    ref = _sk_reference([X1, X2], Y, SEGMENTS, 5, DELAYS, loo=True)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    ours_t = encoding_scores([X1, X2], Y, SEGMENTS, inner_cv="loo", backend="torch",
                             target_batch=7, **KW)
    np.testing.assert_allclose(ours_t, ref, atol=1e-4)


def test_target_batch_and_n_components_clip():
    X1, X2, Y = _data(seed=2)
    a = encoding_scores([X1, X2[:, :3]], Y, SEGMENTS, n_components=20, delays=DELAYS)
    b = encoding_scores([X1, X2[:, :3]], Y, SEGMENTS, n_components=20, delays=DELAYS,
                        target_batch=4)
    ref = _sk_reference([X1, X2[:, :3]], Y, SEGMENTS, 20, DELAYS)
    np.testing.assert_allclose(a, ref, atol=1e-4)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_planted_signal_recovered():
    rng = np.random.default_rng(3)
    n = 300
    X = rng.standard_normal((n, 40)).astype(np.float32)
    w = rng.standard_normal((40, 50))
    Y = (X @ w + 0.5 * rng.standard_normal((n, 50)) * np.linalg.norm(w, axis=0)).astype(
        np.float32)
    s = encoding_scores([X], Y, [150, 150], n_components=40, delays=[0])
    assert np.all(s > 0.8)


def _null_scores(n=600, V=1000, seed=4):
    """Brain scores of independent noise targets, with the pipeline's 20 components x 6
    delays (a large design relative to the training fold: the ridge path, and hence the
    test r, varies a lot with alpha, which is what a test-fold alpha choice exploits)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 30)).astype(np.float32)
    Y = rng.standard_normal((n, V)).astype(np.float32)
    return encoding_scores([X], Y, None, n_components=20, delays=range(6), backend="numpy")


def _assert_null_centred(s, n):
    """|mean r| < 3 standard errors.

    Given X, the per-target scores of independent noise targets are independent with mean
    exactly 0 (the test targets are symmetric and independent of the predictions), so the SE
    of their mean is sd(scores) / sqrt(V), estimated from the scores. Under the null a test r
    over n_test TRs has sd ~ 1 / sqrt(n_test) and the score averages 5 folds, so sd(scores) ~
    1 / sqrt(n) (measured 1.35 / sqrt(n): the folds' r are positively correlated through their
    shared training rows); it is checked within 0.7-2 / sqrt(n) so that a spread inflated by a
    bug cannot loosen the bound. At 600 TRs and 1,000 targets: 3 SE ~ 0.005."""
    V = s.size
    sd = np.std(s, ddof=1)
    assert 0.7 / np.sqrt(n) < sd < 2.0 / np.sqrt(n), f"per-target sd {sd:.4f}"
    se = sd / np.sqrt(V)
    assert abs(np.mean(s)) < 3 * se, f"mean r {np.mean(s):.4f}, 3 SE {3 * se:.4f}"


def test_noise_scores_centred_on_zero():
    _assert_null_centred(_null_scores(), 600)


def _best_test_fold_r(plan, Y, Y_test_c, test_norm):
    """A leak: per target, the best test-fold r over every alpha (numpy backend)."""
    S, T = mapping._target_products(plan, Y)
    T = np.asarray(plan.final_V_T @ S if T is None else T, dtype=np.float64)
    H = np.asarray(plan.final_H_T, dtype=np.float64)
    XV, Yt = np.asarray(plan.test_XV, np.float64), np.asarray(Y_test_c, np.float64)
    best = np.full(T.shape[1], -np.inf)
    for a in range(H.shape[1]):
        P = XV @ (T * H[:, a:a + 1])
        P -= P.mean(0)
        best = np.fmax(best, (P * Yt).sum(0) / np.sqrt((P * P).sum(0) * (Yt * Yt).sum(0)))
    return best.astype(np.float32)


def test_test_fold_alpha_leak_fails_the_null_bound(monkeypatch):
    """The null bound has the power to see an alpha chosen on the test fold at the same data
    size (measured: mean r +0.0185 against 3 SE = 0.005; the old |mean| < 0.05 let it pass)."""
    monkeypatch.setattr(mapping, "_ridge_batch_scores", _best_test_fold_r)
    s = _null_scores()
    assert abs(np.mean(s)) < 0.05                   # the old bound: passed with the leak
    with pytest.raises(AssertionError, match="3 SE"):
        _assert_null_centred(s, 600)


def test_nan_and_constant_targets_are_nan():
    X1, X2, Y = _data(seed=5)
    Y[:, 3] = np.nan
    Y[10, 4] = np.nan
    Y[:, 5] = 2.5
    s = encoding_scores([X1, X2], Y, SEGMENTS, **KW)
    assert np.isnan(s[[3, 4, 5]]).all()
    assert np.isfinite(np.delete(s, [3, 4, 5])).all()
    # the other targets are unaffected by the masked ones
    keep = np.delete(np.arange(30), [3, 4, 5])
    np.testing.assert_allclose(np.delete(s, [3, 4, 5]),
                               encoding_scores([X1, X2], Y[:, keep], SEGMENTS, **KW), atol=1e-6)
    allnan = encoding_scores([X1], np.full((120, 2), np.nan, np.float32), SEGMENTS, **KW)
    assert np.isnan(allnan).all()


def test_forecast_scores_share_x_pca_and_equal_encoding():
    X1, X2, Y = _data(seed=6, v=12)
    rng = np.random.default_rng(6)
    windows = {8: rng.standard_normal((120, 14)).astype(np.float32), -2: X2}
    R_X, R_XW = forecast_scores(X1, windows, Y, SEGMENTS, **KW)
    assert R_X.shape == (12,) and R_XW.shape == (2, 12)
    np.testing.assert_allclose(R_X, encoding_scores([X1], Y, SEGMENTS, **KW), atol=1e-6)
    for j, d in enumerate(sorted(windows)):
        np.testing.assert_allclose(R_XW[j], encoding_scores([X1, windows[d]], Y, SEGMENTS, **KW),
                                   atol=1e-6)


def test_forecast_scores_reduce_x_once_per_fold(monkeypatch):
    import brainpred.mapping as m
    calls = []
    orig = m._reduce_block

    def spy(X, train, n_components):
        calls.append(X.shape[1])
        return orig(X, train, n_components)

    monkeypatch.setattr(m, "_reduce_block", spy)
    X1, X2, Y = _data(seed=7, v=5)
    windows = {0: X2, 3: X2 * 2, 5: X2 + 1}
    m.forecast_scores(X1, windows, Y, SEGMENTS, n_folds=3, **KW)
    assert calls.count(X1.shape[1]) == 3          # once per outer fold
    assert calls.count(X2.shape[1]) == 9          # once per fold and distance


def test_contiguous_folds_plain():
    folds = contiguous_folds(11, 3)
    tests = [t for _, t in folds]
    np.testing.assert_array_equal(tests[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(tests[2], [8, 9, 10])
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 11
    with pytest.raises(ConfigError):
        contiguous_folds(3, 5)


def test_contiguous_folds_groups_align():
    groups = np.repeat(["a", "b", "c", "d", "e", "f"], [30, 10, 25, 20, 15, 20])
    folds = contiguous_folds(len(groups), 3, groups=groups)
    covered = np.concatenate([t for _, t in folds])
    np.testing.assert_array_equal(np.sort(covered), np.arange(len(groups)))
    for train, test in folds:
        assert len(test) > 0
        # whole groups: no group is split between train and test
        assert not set(groups[train]) & set(groups[test])
    with pytest.raises(ConfigError):
        contiguous_folds(len(groups), 7, groups=groups)
    # groups="segments" in encoding_scores: test folds are whole stories
    X1, X2, Y = _data(seed=8, v=4)
    s = encoding_scores([X1], Y, [30, 30, 20, 40], groups="segments", n_folds=4, **KW)
    assert s.shape == (4,) and np.isfinite(s).all()


def test_pearson_r():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((50, 4))
    b = a + rng.standard_normal((50, 4))
    b[:, 2] = 1.0
    b[3, 3] = np.nan
    r = pearson_r(a, b)
    assert r[0] == pytest.approx(pearsonr(a[:, 0], b[:, 0])[0], abs=1e-6)
    assert np.isnan(r[2]) and np.isnan(r[3])


def test_resolve_backend():
    import torch
    assert resolve_backend("auto") == ("torch_cuda" if torch.cuda.is_available() else "numpy")
    assert resolve_backend("numpy") == "numpy"
    with pytest.raises(ConfigError):
        resolve_backend("cupyx")
    with pytest.raises(ConfigError):
        encoding_scores([np.random.rand(20, 2)], np.random.rand(20, 2), None, n_folds=2,
                        n_inner_folds=2, inner_cv="gcv")


@pytest.mark.parametrize("ratio", [0.0, 1e9])          # always "factor" / always "kernel"
@pytest.mark.parametrize("loo", [False, True])
@pytest.mark.parametrize("chunked", [False, True])     # targets in several residual chunks
def test_both_solver_forms_match_sklearn(monkeypatch, ratio, loo, chunked):
    monkeypatch.setattr(mapping, "_KERNEL_RATIO", ratio)
    if chunked:
        monkeypatch.setattr(mapping, "_CHUNK_BYTES", 1)
        monkeypatch.setattr(mapping, "_MIN_CHUNK", 3)
    X1, X2, Y = _data(seed=10)
    inner = "loo" if loo else "contiguous"
    ref = _sk_reference([X1, X2], Y, SEGMENTS, 5, DELAYS, loo=loo)
    for backend in ("numpy", "torch"):
        ours = encoding_scores([X1, X2], Y, SEGMENTS, inner_cv=inner, backend=backend,
                               target_batch=13, **KW)
        np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_ridge_cv_predict_matches_sklearn_predictions():
    rng = np.random.default_rng(11)
    Xtr, Xte = rng.standard_normal((90, 7)), rng.standard_normal((30, 7))
    Y = (Xtr @ rng.standard_normal((7, 30)) * rng.uniform(0, 1, 30)
         + rng.standard_normal((90, 30)) + 5.0).astype(np.float32)
    pred, best = mapping._ridge_cv_predict(Xtr, Y, Xte, ALPHAS, inner_cv="loo", target_batch=8)
    sk = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(Xtr, Y.astype(np.float64))
    np.testing.assert_allclose(best, sk.alpha_)
    np.testing.assert_allclose(pred, sk.predict(Xte), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n, dim", [(120, 30), (90, 200), (760, 800)])
def test_reduce_block_matches_sklearn_pca(n, dim):
    # covariance branch, Gram branch (dense eigh) and Gram branch (Lanczos, > 600 samples)
    rng = np.random.default_rng(n)
    X = (rng.standard_normal((n, 8)) @ rng.standard_normal((8, dim)) * 3
         + rng.standard_normal((n, dim))).astype(np.float32)
    X[:, 0] = 0.0                                       # a constant column
    train = np.arange(n // 5, n)
    k = 6
    ours = mapping._reduce_block(X, train, k)
    pipe = make_pipeline(StandardScaler(), PCA(k, svd_solver="full")).fit(X[train])
    ref = pipe.transform(X)
    assert ours.shape == (n, k) and ours.dtype == np.float32
    # same components up to sign
    signs = np.sign((ours[train] * ref[train]).sum(0))
    np.testing.assert_allclose(ours * signs, ref, atol=2e-3 * np.abs(ref).max())


def test_forecast_scores_shared_equals_separate():
    X1, X2, Y = _data(seed=12, v=16)
    rng = np.random.default_rng(12)
    Y2 = (Y[:, :9] + rng.standard_normal((120, 9))).astype(np.float32)
    Y2[:, 4] = np.nan
    Y3 = np.full((120, 3), 1.0, np.float32)             # all constant: all NaN
    windows = {8: rng.standard_normal((120, 14)).astype(np.float32), -2: X2}
    shared = forecast_scores_shared(X1, windows, [Y, Y2, Y3], SEGMENTS, target_batch=7, **KW)
    assert len(shared) == 3
    for Ys, (R_X, R_XW) in zip([Y, Y2, Y3], shared):
        ref_X, ref_XW = forecast_scores(X1, windows, Ys, SEGMENTS, **KW)
        assert R_X.shape == (Ys.shape[1],) and R_XW.shape == (2, Ys.shape[1])
        np.testing.assert_allclose(R_X, ref_X, atol=1e-6)
        np.testing.assert_allclose(R_XW, ref_XW, atol=1e-6)
    assert np.isnan(shared[1][0][4]) and np.isnan(shared[2][1]).all()
    assert forecast_scores_shared(X1, windows, [], SEGMENTS, **KW) == []
    with pytest.raises(ValueError):
        forecast_scores_shared(X1, windows, [Y, Y[:100]], SEGMENTS, **KW)
    with pytest.raises(TypeError):
        forecast_scores(X1, windows, Y, SEGMENTS, bogus=1, **KW)


def test_solver_stats_count_work():
    mapping.STATS.update(solver_seconds=0.0, solver_flops=0.0, design_seconds={})
    X1, X2, Y = _data(seed=13)
    encoding_scores([X1, X2], Y, SEGMENTS, **KW)
    assert mapping.STATS["solver_flops"] > 0 and mapping.STATS["solver_seconds"] > 0
    forecast_scores_shared(X1, {1: X2, 2: X2[::-1].copy()}, [Y, Y], SEGMENTS, **KW)
    seconds = mapping.STATS["design_seconds"]
    assert sorted(seconds) == [0, 1, 2] and all(s > 0 for s in seconds.values())
    assert sum(seconds.values()) >= mapping.STATS["solver_seconds"] * 0.99


@pytest.mark.parametrize("rows", [np.r_[0:10, 30:50], np.arange(50), "shuffled"])
@pytest.mark.parametrize("cols", ["all", "runs", "scattered"])
def test_take_2d_equals_fancy_indexing(rows, cols):
    # block copies (few index runs) and the row-by-row fallback (many runs) give np.ix_
    rng = np.random.default_rng(3)
    Y = rng.standard_normal((50, 80)).astype(np.float32)
    rows = rng.permutation(50)[:20] if isinstance(rows, str) else rows
    cols = dict(all=np.arange(80), runs=np.r_[2:30, 41:77],
                scattered=np.sort(rng.choice(80, 60, replace=False)))[cols]
    out = np.full((len(rows), len(cols)), np.nan, np.float32)
    mapping._take_2d(Y, rows, cols, out)
    np.testing.assert_array_equal(out, Y[np.ix_(rows, cols)])


def _loo_errors_float64(X, Y):
    Xc, Yc = X - X.mean(0), (Y - Y.mean(0)).astype(np.float64)
    n, F = X.shape
    out = []
    for a in ALPHAS:
        H = Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(F), Xc.T) + 1.0 / n
        R = (np.eye(n) - H) @ Yc / (1.0 - np.diag(H))[:, None]
        out.append((R ** 2).mean(0))
    return np.array(out)


@pytest.mark.parametrize("form", ["factor", "kernel"])
def test_loo_alpha_choice_exact_between_near_tied_large_alphas(form):
    rng = np.random.default_rng(0)
    n, F = 150, 120
    X = rng.standard_normal((n, F))
    Y = (rng.standard_normal((n, 600)) * 3 + X[:, :4] @ rng.standard_normal((4, 600)) * 0.3
         ).astype(np.float32)
    _, best = mapping._ridge_cv_predict(X, Y, X[:5], ALPHAS, inner_cv="loo", form=form)
    ref = _loo_errors_float64(X, Y)
    np.testing.assert_array_equal(best, ALPHAS[ref.argmin(0)])


# ------------------------------------------------------------- gap between train and test folds
# (issue 15, item 6c: mapping.gap_trs)

@pytest.mark.parametrize("n, n_folds, gap, grouped", [
    (11, 3, 0, False), (11, 3, 1, False), (100, 5, 5, False), (97, 4, 13, False),
    (120, 3, 4, True)])
def test_contiguous_folds_gap(n, n_folds, gap, grouped):
    groups = np.repeat(np.arange(6), [30, 10, 25, 20, 15, 20])[:n] if grouped else None
    plain = contiguous_folds(n, n_folds, groups=groups)
    folds = contiguous_folds(n, n_folds, groups=groups, gap_trs=gap)
    for (train0, test0), (train, test) in zip(plain, folds):
        np.testing.assert_array_equal(test, test0)            # the gap never moves a test row
        dist = np.abs(train[:, None] - test[None, :]).min(1)
        assert (dist > gap).all()                             # no training row within gap
        # ... and only those rows are dropped
        np.testing.assert_array_equal(train, train0[np.abs(train0[:, None] - test[None, :])
                                                    .min(1) > gap])
        assert len(train0) - len(train) <= 2 * gap
    if gap == 0:
        for (a, _), (b, _) in zip(plain, folds):
            np.testing.assert_array_equal(a, b)


def test_contiguous_folds_gap_errors():
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="gap_trs"):
            contiguous_folds(20, 2, gap_trs=bad)
    contiguous_folds(20, 2, gap_trs=np.int64(3))
    with pytest.raises(ConfigError, match="leaves no training sample"):
        contiguous_folds(20, 2, gap_trs=10)


def test_encoding_with_gap_matches_sklearn():
    """The engine's folds with a gap equal the scikit-learn pipeline with the gap written out:
    an engine that ignored gap_trs (or dropped other rows) fails here."""
    X1, X2, Y = _data(seed=21, n=150, v=6)
    got = encoding_scores([X1, X2], Y, [90, 60], gap_trs=6, **KW)
    ref = _sk_reference([X1, X2], Y, [90, 60], 5, DELAYS, gap=6)
    np.testing.assert_allclose(got, ref, atol=2e-4)
    assert not np.allclose(got, encoding_scores([X1, X2], Y, [90, 60], **KW), atol=1e-3)
    # the same keyword through the shared and design scorers
    r_x, _ = forecast_scores(X1, {3: X2}, Y, [90, 60], gap_trs=6, **KW)
    np.testing.assert_allclose(r_x, encoding_scores([X1], Y, [90, 60], gap_trs=6, **KW),
                               atol=1e-5)


def _ar1(rng, n, d, phi):
    e = rng.standard_normal((n, d))
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + np.sqrt(1 - phi ** 2) * e[t]
    return x.astype(np.float32)


def test_gap_removes_the_autocorrelation_leak():
    """Targets and features are independent AR(1) noises (phi = 0.97, as slow as BOLD drifts
    and smoothed features): nothing generalises, yet without a gap the ridge interpolates the
    targets' noise across the fold boundaries (the FIR-delayed design rows beside a test fold
    resemble its first and last rows) and the mean r is clearly positive. Dropping 40 TRs on
    each side of the test fold (about the noise's correlation length, 1 / (1 - phi)) brings it
    back to about 0. Measured: 0.175 (gap 0), 0.135 (5), 0.097 (10), 0.048 (20), 0.011 (40)."""
    rng = np.random.default_rng(0)
    Y = _ar1(rng, 400, 200, 0.97)
    X = _ar1(rng, 400, 50, 0.97)
    kw = dict(n_components=20, delays=range(6), n_folds=5)
    r = {g: float(encoding_scores([X], Y, gap_trs=g, **kw).mean()) for g in (0, 10, 40)}
    assert r[0] > 0.1
    assert r[0] > r[10] > r[40]
    assert abs(r[40]) < 0.03


def test_noise_ceiling_uses_the_gap():
    from brainpred.noise_ceiling import ceiling_scores

    rng = np.random.default_rng(3)
    P = _ar1(rng, 200, 8, 0.9)
    Y = 0.5 * P + _ar1(rng, 200, 8, 0.9)
    kw = dict(delays=range(3), alphas=ALPHAS, n_folds=4)
    r0, r5 = ceiling_scores(P, Y, **kw), ceiling_scores(P, Y, gap_trs=5, **kw)
    np.testing.assert_array_equal(r0, ceiling_scores(P, Y, gap_trs=0, **kw))
    assert np.isfinite(r5).all() and not np.allclose(r0, r5)
    with pytest.raises(ConfigError, match="gap_trs"):
        ceiling_scores(P, Y, gap_trs=200, **kw)


# --------------------------------------------------------------------------------------------
# ridge on per-target designs (the noise ceiling's solver)
# --------------------------------------------------------------------------------------------

def _per_target_problem(seed, n=131, k=3, T=40):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n, k, T))
    D[:, 1] += 0.5 * D[:, 0]                             # correlated columns, as FIR delays
    levels = np.geomspace(1e-3, 3.0, T) * (rng.random(T) < 0.8)
    Y = (levels * np.einsum("nkt,kt->nt", D, rng.standard_normal((k, T)))
         + rng.standard_normal((n, T)) + 2.0)
    return D, Y


def _inner_errors(D, Y, train, n_inner, summed):
    """Inner-CV error of every alpha and target, written out: ridge with intercept by
    ``np.linalg.solve`` per target on each inner training block."""
    err = np.zeros((len(ALPHAS), D.shape[2]))
    for itr, ite in contiguous_folds(len(train), n_inner):
        fit, val = train[itr], train[ite]
        for t in range(D.shape[2]):
            X, y = D[fit, :, t], Y[fit, t]
            xm, ym = X.mean(0), y.mean()
            for a, alpha in enumerate(ALPHAS):
                w = np.linalg.solve((X - xm).T @ (X - xm) + alpha * np.eye(X.shape[1]),
                                    (X - xm).T @ (y - ym))
                sq = (Y[val, t] - ym - (D[val, :, t] - xm) @ w) ** 2
                err[a, t] += sq.sum() if summed else sq.mean() / n_inner
    return err


def test_ridge_cv_per_target_equals_sklearn_ridge_with_the_chosen_alpha():
    """Each target's prediction is scikit-learn's Ridge (with intercept) on its own design with
    the chosen alpha; that alpha is the least squared error summed over the contiguous inner
    folds of the training rows (inner folds of unequal sizes here: 21 and 20 rows)."""
    D, Y = _per_target_problem(0)
    train, test = contiguous_folds(D.shape[0], 5)[0]
    assert len(train) % 5                                  # unequal inner folds
    pred, best = mapping.ridge_cv_per_target(D, Y, train, test, ALPHAS, n_inner_folds=5)
    assert pred.shape == (len(test), D.shape[2]) and best.shape == (D.shape[2],)
    assert len(np.unique(best)) >= 3, np.unique(best)
    err = _inner_errors(D, Y, train, 5, summed=True)
    np.testing.assert_allclose(err[np.searchsorted(ALPHAS, best), np.arange(D.shape[2])],
                               err.min(0), rtol=1e-10)
    for t in range(D.shape[2]):
        sk = Ridge(alpha=best[t]).fit(D[train, :, t], Y[train, t])
        np.testing.assert_allclose(pred[:, t], sk.predict(D[test, :, t]), rtol=1e-9, atol=1e-9)


def test_ridge_cv_per_target_equals_the_shared_design_solver():
    """On one design shared by all targets (broadcast to every target) and inner folds of equal
    sizes, the per-target solver picks the alphas of the encoding model's solver
    (_ridge_cv_predict, contiguous inner CV) and predicts the same."""
    rng = np.random.default_rng(5)
    n_train, k, T = 100, 4, 30
    X = rng.standard_normal((n_train + 20, k))
    Y = (X @ rng.standard_normal((k, T)) * np.geomspace(0.05, 2.0, T)
         + rng.standard_normal((n_train + 20, T)))
    train, test = np.arange(n_train), np.arange(n_train, n_train + 20)
    D = np.broadcast_to(X[:, :, None], X.shape + (T,))
    pred, best = mapping.ridge_cv_per_target(D, Y, train, test, ALPHAS, n_inner_folds=5)
    ref_pred, ref_best = mapping._ridge_cv_predict(X[train], Y[train], X[test], ALPHAS,
                                                   inner_cv="contiguous", n_inner_folds=5)
    np.testing.assert_array_equal(best, ref_best)
    np.testing.assert_allclose(pred, ref_pred, rtol=1e-4, atol=1e-4)


def test_per_target_scores_shapes_and_invalid_targets():
    rng = np.random.default_rng(2)
    P = rng.standard_normal((80, 5)).astype(np.float32)
    Y = (np.roll(P, 1, 0) + rng.standard_normal((80, 5))).astype(np.float32)
    Y[:, 1] = np.nan
    P[:, 3] = 0.0
    r = mapping.per_target_scores(P, Y, [40, 40], delays=[0, 1], n_folds=2, n_inner_folds=2,
                                  batch=2)
    assert r.shape == (5,) and r.dtype == np.float32
    assert np.isnan(r[[1, 3]]).all() and np.isfinite(r[[0, 2, 4]]).all() and r[0] > 0.3
    with pytest.raises(ValueError, match="segment_lengths"):
        mapping.per_target_scores(P, Y, [40, 30])
    with pytest.raises(ValueError):
        mapping.ridge_cv_per_target(P, Y, np.arange(40), np.arange(40, 80))


def _sk_alphas(blocks, Y, segments, n_components, delays, n_folds=5, n_inner=5, loo=False):
    """The alpha scikit-learn's pipeline chooses for each target in each outer fold."""
    out = []
    for train, _ in contiguous_folds(Y.shape[0], n_folds):
        D = _sk_design(blocks, train, n_components, delays, segments)
        Dtr, Ytr = D[train].astype(np.float64), Y[train].astype(np.float64)
        if loo:
            out.append(RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(Dtr, Ytr).alpha_)
            continue
        mse = np.zeros((len(ALPHAS), Y.shape[1]))
        for itr, ite in contiguous_folds(len(train), n_inner):
            for a, alpha in enumerate(ALPHAS):
                p = Ridge(alpha=alpha).fit(Dtr[itr], Ytr[itr]).predict(Dtr[ite])
                mse[a] += ((Ytr[ite] - p) ** 2).mean(0) / n_inner
        out.append(ALPHAS[np.argmin(mse, 0)])
    return np.array(out)


@pytest.mark.parametrize("loo", [False, True])
def test_design_scores_return_the_alphas_sklearn_chooses(loo):
    """The alpha of each (design, outer fold, target) is the one scikit-learn's inner CV
    picks; the scores are those returned without ``return_alphas``."""
    X1, X2, Y = _data(seed=21, v=12)
    Y2 = Y[:, :5].copy()
    Y2[:, 1] = np.nan                                   # not fitted: NaN alpha
    inner = "loo" if loo else "contiguous"
    designs = [(0,), (0, 1)]
    plain = mapping.design_scores([X1, X2], designs, [Y, Y2], SEGMENTS, inner_cv=inner,
                                  target_batch=5, **KW)
    scores, alphas = mapping.design_scores([X1, X2], designs, [Y, Y2], SEGMENTS,
                                           inner_cv=inner, target_batch=5,
                                           return_alphas=True, **KW)
    for a, b in zip(plain, scores):
        np.testing.assert_array_equal(a, b)
    assert [a.shape for a in alphas] == [(2, 5, 12), (2, 5, 5)]
    assert alphas[0].dtype == np.float32
    assert np.isnan(alphas[1][:, :, 1]).all() and np.isfinite(alphas[1][:, :, [0, 2]]).all()
    for j, design in enumerate(designs):
        ref = _sk_alphas([[X1, X2][i] for i in design], Y, SEGMENTS, 5, DELAYS, loo=loo)
        np.testing.assert_allclose(alphas[0][j], ref, rtol=1e-6)
        np.testing.assert_array_equal(alphas[1][j][:, [0, 2, 3, 4]],
                                      alphas[0][j][:, [0, 2, 3, 4]])
    assert mapping.design_scores([X1], [(0,)], [], return_alphas=True) == ([], [])


def test_fit_logs_progress_with_fold_and_eta(caplog, monkeypatch):
    """Each outer fold ends with a progress line (fold, condition, targets, ETA); in between at
    most one every PROGRESS_SECONDS."""
    X1, X2, Y = _data(seed=22, v=10)
    with caplog.at_level("INFO", logger="brainpred.mapping"):
        mapping.design_scores([X1, X2], [(0,), (0, 1)], [Y], SEGMENTS, n_folds=3,
                              target_batch=4, **KW)
    lines = [r.getMessage() for r in caplog.records if r.name == "brainpred.mapping"]
    assert lines[0].startswith("ridge: 3 outer folds x 2 conditions x 10 targets")
    folds = [s for s in lines if "ETA" in s]
    assert len(folds) == 3, lines
    assert folds[0].startswith("ridge: fold 1/3, condition 2/2, targets 10/10; 33% done")
    assert folds[-1].startswith("ridge: fold 3/3") and folds[-1].endswith("ETA 0s")
    # with a zero interval: one line per target batch (3 batches x 2 conditions x 3 folds)
    caplog.clear()
    monkeypatch.setattr(mapping, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level("INFO", logger="brainpred.mapping"):
        mapping.design_scores([X1, X2], [(0,), (0, 1)], [Y], SEGMENTS, n_folds=3,
                              target_batch=4, **KW)
    assert sum("ETA" in r.getMessage() for r in caplog.records) == 18


def test_progress_bar_on_request(capsys):
    X1, _, Y = _data(seed=23, v=6)
    a = mapping.design_scores([X1], [(0,)], [Y], SEGMENTS, progress=True, **KW)
    b = mapping.design_scores([X1], [(0,)], [Y], SEGMENTS, progress=False, **KW)
    np.testing.assert_array_equal(a[0], b[0])
    assert "ridge" in capsys.readouterr().err
