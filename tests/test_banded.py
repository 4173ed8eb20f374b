"""Banded ridge (``penalty="banded"``): one penalty per block of the design, by inner CV.

(a) equal to a brute-force scikit-learn reference and to himalaya's ``BandedRidgeCV`` on the
same candidates, alphas and folds; (b) on planted data (generated here with numpy only), a
window that carries nothing costs prediction with the shared penalty and not with the banded
one, and a planted forecast distance is still the best one; (c) one block = shared,
deterministic, bad values rejected.
"""

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import brainpred.mapping as mapping
from brainpred.design import fir_delays
from brainpred.errors import ConfigError
from brainpred.mapping import banded_weights, design_scores, forecast_scores

ALPHAS = np.logspace(-1, 8, 10)
SEGMENTS = [70, 50]
DELAYS = range(2)


# --------------------------------------------------------------------------------------------
# (a) references
# --------------------------------------------------------------------------------------------
def _small(seed=0, n=120, v=15):
    rng = np.random.default_rng(seed)
    blocks = [rng.standard_normal((n, w)) for w in (6, 5, 4)]
    Y = rng.standard_normal((n, v))
    Y += blocks[0][:, :2] @ rng.standard_normal((2, v))
    Y += 0.5 * blocks[2][:, :1] @ rng.standard_normal((1, v))  # block 1 carries nothing
    return [b.astype(np.float32) for b in blocks], Y.astype(np.float32)


def _splits(n, k):
    """Contiguous folds (as KFold(k) unshuffled): list of (train, test)."""
    tests = np.array_split(np.arange(n), k)
    return [(np.setdiff1d(np.arange(n), t), t) for t in tests]


def _design(blocks, train, delays, segments):
    """Standardise + full PCA per block, FIR delays, standardise (scikit-learn), and the band
    of every column (the FIR copies are delay-major)."""
    reduced = [make_pipeline(StandardScaler(), PCA(B.shape[1], svd_solver="full"))
               .fit(B[train]).transform(B) for B in blocks]
    D = fir_delays(np.concatenate(reduced, 1), delays, segments).astype(np.float64)
    D = StandardScaler().fit(D[train]).transform(D)
    bands = np.tile(np.concatenate([np.full(B.shape[1], b) for b, B in enumerate(blocks)]),
                    len(list(delays)))
    return D, bands


def _sk_banded(blocks, Y, gammas, n_folds=5, n_inner=5):
    """Brute force: every (gamma, alpha) by scikit-learn Ridge on every inner fold."""
    n, V = Y.shape
    Y = Y.astype(np.float64)
    fold_r = []
    for train, test in _splits(n, n_folds):
        D, bands = _design(blocks, train, DELAYS, SEGMENTS)
        mse = np.zeros((len(gammas), len(ALPHAS), V))
        for c, g in enumerate(gammas):
            Dg = D * np.sqrt(g)[bands]
            for itr, ival in _splits(len(train), n_inner):
                for a, alpha in enumerate(ALPHAS):
                    m = Ridge(alpha=alpha, fit_intercept=True).fit(Dg[train][itr], Y[train][itr])
                    mse[c, a] += ((m.predict(Dg[train][ival]) - Y[train][ival]) ** 2).mean(0)
        best = np.argmin(mse.reshape(-1, V) / n_inner, 0)     # first minimum: candidate-major
        r = np.empty(V)
        for v in range(V):
            c, a = divmod(int(best[v]), len(ALPHAS))
            Dg = D * np.sqrt(gammas[c])[bands]
            m = Ridge(alpha=ALPHAS[a]).fit(Dg[train], Y[train, v])
            r[v] = pearsonr(m.predict(Dg[test]), Y[test, v])[0]
        fold_r.append(r)
    return np.mean(fold_r, 0)


def _himalaya_banded(blocks, Y, gammas, n_folds=5, n_inner=5):
    """himalaya's BandedRidgeCV (random search on the given candidates) on the same design."""
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV

    set_backend("numpy")
    n = Y.shape[0]
    # himalaya scales the bands by sqrt(gamma) and back: an exact 0 would divide by 0
    g = np.maximum(gammas, 1e-12)
    fold_r = []
    for train, test in _splits(n, n_folds):
        D, bands = _design(blocks, train, DELAYS, SEGMENTS)
        Xs = [D[:, bands == b] for b in range(len(blocks))]
        model = BandedRidgeCV(groups="input", fit_intercept=True,
                              cv=_splits(len(train), n_inner),
                              solver_params=dict(n_iter=g, alphas=ALPHAS, progress_bar=False,
                                                 warn=False))
        model.fit([X[train] for X in Xs], Y[train].astype(np.float64))
        pred = model.predict([X[test] for X in Xs])
        fold_r.append([pearsonr(pred[:, v], Y[test, v])[0] for v in range(Y.shape[1])])
    return np.mean(fold_r, 0)


def test_banded_weights_candidates():
    g = banded_weights(3, 12, seed=4)
    assert g.shape == (12, 3) and np.isfinite(g).all() and (g >= 0).all()
    np.testing.assert_array_equal(g[0], 1.0)                 # the shared penalty first
    np.testing.assert_array_equal(g[1:4], np.eye(3))         # each band alone
    np.testing.assert_array_equal(g[4:7], 1.0 - np.eye(3))   # each band dropped
    np.testing.assert_allclose(g.max(1), 1.0)
    np.testing.assert_array_equal(g, banded_weights(3, 12, seed=4))
    assert not np.array_equal(g, banded_weights(3, 12, seed=5))
    np.testing.assert_array_equal(banded_weights(1, 20), [[1.0]])
    np.testing.assert_array_equal(banded_weights(2, 2), [[1.0, 1.0], [1.0, 0.0]])


def test_banded_equals_sklearn_and_himalaya_references():
    """Scores of the banded engine = brute-force scikit-learn to 1e-4 (the same criterion:
    mean over contiguous inner folds of the validation MSE, each inner training fold centred
    on its own means) and = himalaya's BandedRidgeCV (same candidates, alphas, inner folds;
    its exact zeros replaced by 1e-12)."""
    blocks, Y = _small()
    gammas = banded_weights(3, 10, seed=1)
    ours = design_scores(blocks, [(0, 1, 2)], [Y], SEGMENTS, n_components=10, delays=DELAYS,
                         alphas=ALPHAS, penalty="banded", banded_candidates=10,
                         banded_seed=1)[0][0]
    ref = _sk_banded(blocks, Y, gammas)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    him = _himalaya_banded(blocks, Y, gammas)
    np.testing.assert_allclose(ours, him, atol=1e-4)
    # and banded differs from shared here (the search is not a no-op)
    shared = design_scores(blocks, [(0, 1, 2)], [Y], SEGMENTS, n_components=10,
                           delays=DELAYS, alphas=ALPHAS)[0][0]
    assert np.abs(ours - shared).max() > 1e-3


@pytest.mark.parametrize("inner_cv", ["contiguous", "loo"])
def test_band_alphas_are_the_chosen_candidates(inner_cv):
    """``return_alphas="bands"``: per design (n_bands, n_folds, V) penalties alpha / gamma_b,
    consistent with ``return_alphas=True`` (the first block's) and with a candidate row."""
    blocks, Y = _small(seed=3)
    designs = [(0,), (0, 1), (0, 1, 2)]
    kw = dict(n_components=10, delays=DELAYS, alphas=ALPHAS, penalty="banded",
              banded_candidates=8, inner_cv=inner_cv)
    s1, a1 = design_scores(blocks, designs, [Y], SEGMENTS, return_alphas=True, **kw)
    s2, a2 = design_scores(blocks, designs, [Y], SEGMENTS, return_alphas="bands", **kw)
    np.testing.assert_array_equal(s1[0], s2[0])
    assert [a.shape for a in a2[0]] == [(1, 5, 15), (2, 5, 15), (3, 5, 15)]
    for j, d in enumerate(designs):
        np.testing.assert_array_equal(a2[0][j][0], a1[0][j])
        # alpha_b = alpha_grid / gamma_b for one candidate gamma (largest entry 1)
        grid = a2[0][j].min(0)
        assert np.isin(np.round(np.log10(grid), 4), np.round(np.log10(ALPHAS), 4)).all()
        gam = grid[None] / a2[0][j]
        cands = banded_weights(len(d), 8)
        rows = gam.reshape(len(d), -1).T
        assert all(np.abs(cands - row).max(1).min() < 1e-5 for row in rows)


# --------------------------------------------------------------------------------------------
# (b) planted data (numpy only)
# --------------------------------------------------------------------------------------------
def _planted(n=800, v=120, seed=0, future=None, dim=48):
    """X drives every target through a random map; ``future`` = (distances, d_true): windows
    of the latent sequence ``d`` steps ahead, ``W_{d_true}`` driving the second half."""
    rng = np.random.default_rng(seed)
    extra = 0 if future is None else max(future[0])
    e = rng.standard_normal((n + extra, dim))
    for t in range(1, n + extra):                            # mild autocorrelation
        e[t] += 0.3 * e[t - 1]
    X = e[:n]
    Y = X[:, :6] @ rng.standard_normal((6, v)) / np.sqrt(6)
    windows = {}
    if future is not None:
        distances, d_true = future
        windows = {d: e[d:n + d] for d in distances}
        Y[:, v // 2:] += 0.8 * windows[d_true][:, :6] @ rng.standard_normal((6, v - v // 2))
    Y += 1.5 * rng.standard_normal((n, v))
    return X.astype(np.float32), {d: w.astype(np.float32) for d, w in windows.items()}, \
        Y.astype(np.float32), rng


def test_control_windows_cost_nothing_with_the_banded_penalty():
    """Random and time-shuffled windows (no signal): with the project's default settings (20
    PCA components, delays 0..5, 10 alphas, 5 x 5 contiguous folds) the shared penalty gives
    clearly negative F = R(X + W) - R(X); the banded one F close to 0.

    8 candidates here (the default 20 costs 2.5x the time for the same result). Measured on
    800 TRs x 60 targets, seeds 0 / 1, (random, shuffled) median F: shared (-0.045, -0.039) /
    (-0.041, -0.040); banded, 10 candidates (-0.0032, -0.0000) / (-0.0000, -0.0003), 20
    candidates (-0.0029, -0.0008) / (-0.0015, -0.0012); |F| < 0.02 for 90-98% of targets
    (shared: 13-27%). The
    remaining cost is the selection among candidates x alphas on 640 training rows; it falls
    with more data (1,000 TRs: median -0.0003, 99% within 0.02)."""
    X, _, Y, rng = _planted(n=800, v=60)
    controls = {0: rng.standard_normal(X.shape).astype(np.float32),
                1: X[rng.permutation(len(X))]}
    out = {}
    for penalty in ("shared", "banded"):
        R_X, R_XW = forecast_scores(X, controls, Y, penalty=penalty, banded_candidates=8)
        out[penalty] = R_XW - R_X
        assert np.median(R_X) > 0.2
    for k in range(2):
        shared, banded = out["shared"][k], out["banded"][k]
        assert np.median(shared) < -0.03, np.median(shared)
        assert np.mean(np.abs(shared) < 0.02) < 0.4
        assert abs(np.median(banded)) < 0.005, np.median(banded)
        assert np.mean(np.abs(banded) < 0.02) >= 0.85, np.mean(np.abs(banded) < 0.02)


def test_planted_forecast_distance_recovered_by_banded():
    """A window that carries signal at one of several distances: banded still scores it
    clearly above 0 and picks its distance (the others near 0). Measured, median F of the
    future-driven targets at d = 1, 4, 8: banded (0.000, 0.176, -0.013), shared (0.004, 0.173,
    -0.034); of the X-only targets: banded within 0.002 of 0, shared down to -0.027."""
    distances, d_true = (1, 4, 8), 4
    X, windows, Y, _ = _planted(n=600, future=(distances, d_true))
    kw = dict(n_components=10, delays=range(3), penalty="banded", banded_candidates=8)
    R_X, R_XW = forecast_scores(X, windows, Y, **kw)
    F = np.median((R_XW - R_X)[:, Y.shape[1] // 2:], axis=1)   # the future-driven targets
    assert distances[int(np.argmax(F))] == d_true, F
    assert F[distances.index(d_true)] > 0.05, F
    others = np.delete(F, distances.index(d_true))
    assert np.abs(others).max() < 0.025, F
    F_plain = np.median((R_XW - R_X)[:, :Y.shape[1] // 2], axis=1)   # X-only targets
    assert np.abs(F_plain).max() < 0.005, F_plain


# --------------------------------------------------------------------------------------------
# (c) one block, determinism, bad values
# --------------------------------------------------------------------------------------------
def test_one_block_banded_equals_shared_and_is_deterministic():
    blocks, Y = _small(seed=5)
    kw = dict(n_components=10, delays=DELAYS, alphas=ALPHAS, return_alphas=True)
    for inner_cv in ("contiguous", "loo"):
        s, a = design_scores(blocks, [(0,), (2,)], [Y], SEGMENTS, inner_cv=inner_cv, **kw)
        b, ab = design_scores(blocks, [(0,), (2,)], [Y], SEGMENTS, inner_cv=inner_cv,
                              penalty="banded", **kw)
        np.testing.assert_array_equal(s[0], b[0])
        np.testing.assert_array_equal(a[0], ab[0])
    r1 = design_scores(blocks, [(0, 1), (0, 1, 2)], [Y], SEGMENTS, penalty="banded",
                       banded_candidates=6, banded_seed=3, **kw)
    r2 = design_scores(blocks, [(0, 1), (0, 1, 2)], [Y], SEGMENTS, penalty="banded",
                       banded_candidates=6, banded_seed=3, **kw)
    np.testing.assert_array_equal(r1[0][0], r2[0][0])
    np.testing.assert_array_equal(r1[1][0], r2[1][0])
    # one candidate = the shared penalty on every design
    one = design_scores(blocks, [(0, 1, 2)], [Y], SEGMENTS, penalty="banded",
                        banded_candidates=1, **kw)
    shared = design_scores(blocks, [(0, 1, 2)], [Y], SEGMENTS, **kw)
    np.testing.assert_array_equal(one[0][0], shared[0][0])
    np.testing.assert_array_equal(one[1][0], shared[1][0])


@pytest.mark.parametrize("kw, match", [
    (dict(penalty="band"), "mapping penalty must be one of"),
    (dict(penalty="banded", banded_candidates=0), "banded_candidates must be an integer"),
    (dict(penalty="banded", banded_seed=-1), "banded_seed must be an integer >= 0"),
])
def test_bad_penalty_settings_are_config_errors(kw, match):
    blocks, Y = _small()
    with pytest.raises(ConfigError, match=match):
        design_scores(blocks, [(0, 1)], [Y], SEGMENTS, n_components=4, delays=DELAYS, **kw)
    with pytest.raises(ConfigError, match=match):
        mapping.encoding_scores(blocks, Y, SEGMENTS, n_components=4, delays=DELAYS, **kw)


def test_banded_progress_counts_every_candidate(caplog, monkeypatch):
    blocks, Y = _small(seed=6, v=6)
    monkeypatch.setattr(mapping, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level("INFO", logger="brainpred.mapping"):
        design_scores(blocks, [(0,), (0, 1)], [Y], SEGMENTS, n_components=4, delays=DELAYS,
                      n_folds=3, penalty="banded", banded_candidates=4)
    lines = [r.getMessage() for r in caplog.records if r.name == "brainpred.mapping"]
    assert "banded penalty (4 candidates per multi-block design, seed 0)" in lines[0]
    eta = [s for s in lines if "ETA" in s]
    assert len(eta) == 3 * (1 + 4)                       # folds x (shared X + 4 candidates)
    assert eta[-1].startswith("ridge: fold 3/3") and "100% done" in eta[-1]


def test_mapping_kwargs_pass_the_penalty():
    from brainpred.stages.common import mapping_kwargs

    from factories import config

    kw = mapping_kwargs(config(mapping={"penalty": "banded", "banded_candidates": 7}), None)
    assert (kw["penalty"], kw["banded_candidates"], kw["banded_seed"]) == ("banded", 7, 0)
    assert mapping_kwargs(config(), None)["penalty"] == "shared"
