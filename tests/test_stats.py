import numpy as np
import pytest
from scipy import stats as sps

from brainpred.stats import best_distance, fdr_bh, mean_ci, relative_gain, wilcoxon_test


def test_wilcoxon_matches_scipy_per_column():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, size=(12, 7))
    x[:, 1] = np.round(x[:, 1] * 2)  # ties and zeros
    x[:, 2] = rng.normal(0, 1, 12)
    stat, p = wilcoxon_test(x)
    assert stat.shape == p.shape == (7,)
    for j in range(7):
        ref = sps.wilcoxon(x[:, j])
        np.testing.assert_allclose(stat[j], ref.statistic)
        np.testing.assert_allclose(p[j], ref.pvalue)


def test_wilcoxon_nan_and_extra_axes():
    rng = np.random.default_rng(1)
    x = rng.normal(0.5, 1.0, size=(10, 3, 4))
    x[2, 0, 1] = np.nan
    x[[0, 5, 7], 1, 2] = np.nan
    x[:, 2, 3] = np.nan           # all NaN
    x[1:, 0, 0] = np.nan          # one subject left: too few
    stat, p = wilcoxon_test(x)
    assert p.shape == (3, 4)
    assert np.isnan(p[2, 3]) and np.isnan(stat[2, 3])
    assert np.isnan(p[0, 0])
    for i, j in [(0, 1), (1, 2), (1, 1)]:
        col = x[:, i, j]
        ref = sps.wilcoxon(col[np.isfinite(col)])
        np.testing.assert_allclose(p[i, j], ref.pvalue)
        np.testing.assert_allclose(stat[i, j], ref.statistic)


def test_wilcoxon_detects_effect():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(1, 0.3, (20, 5)), rng.normal(0, 1, (20, 5))], axis=1)
    _, p = wilcoxon_test(x)
    assert np.all(p[:5] < 1e-4)


def test_fdr_bh_hand_example():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005 (rank 1), 0.01 (2), 0.03 (3), 0.04 (4); m = 4
    # p*m/rank: 0.02, 0.02, 0.04, 0.04 ; running min from the top keeps them
    expected = np.array([0.02, 0.04, 0.04, 0.02])
    reject, adj = fdr_bh(p, q=0.05)
    np.testing.assert_allclose(adj, expected)
    assert reject.all()
    reject, _ = fdr_bh(p, q=0.03)
    np.testing.assert_array_equal(reject, [True, False, False, True])


def test_fdr_bh_vs_scipy_and_nan():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0, 1, 200), rng.uniform(0, 1e-3, 20)])
    reject, adj = fdr_bh(p, q=0.01)
    np.testing.assert_allclose(adj, sps.false_discovery_control(p, method="bh"))
    np.testing.assert_array_equal(reject, adj <= 0.01)
    p_nan = np.concatenate([p, [np.nan, np.nan]]).reshape(2, -1)
    reject2, adj2 = fdr_bh(p_nan, q=0.01)
    assert adj2.shape == (2, 111)
    np.testing.assert_allclose(adj2.ravel()[:-2], adj)
    assert np.isnan(adj2.ravel()[-2:]).all() and not reject2.ravel()[-2:].any()


def test_mean_ci_vs_t_interval():
    rng = np.random.default_rng(4)
    x = rng.normal(1, 2, size=(9, 3))
    x[0, 2] = np.nan
    mean, low, high = mean_ci(x, level=0.95)
    for j in range(3):
        col = x[:, j][np.isfinite(x[:, j])]
        lo, hi = sps.t.interval(0.95, len(col) - 1, loc=col.mean(), scale=sps.sem(col))
        np.testing.assert_allclose([mean[j], low[j], high[j]], [col.mean(), lo, hi])
    m1, l1, h1 = mean_ci(np.array([[1.0, np.nan], [np.nan, np.nan]]))
    assert m1[0] == 1.0 and np.isnan(l1[0]) and np.isnan(h1[0]) and np.isnan(m1[1])


def test_best_distance_ties_and_nan():
    d = np.array([-2, 0, 5, 8])
    F = np.array([[0.1, np.nan, 1.0, np.nan],
                  [0.3, 0.2, 1.0, np.nan],
                  [0.2, np.nan, 0.5, np.nan],
                  [0.3, 0.1, 0.0, np.nan]])
    out = best_distance(F, d)
    np.testing.assert_array_equal(out[:3], [0, 0, -2])  # tie -> first distance
    assert np.isnan(out[3])
    with pytest.raises(ValueError):
        best_distance(F, d[:3])


def test_relative_gain():
    g = relative_gain(np.array([0.023, 0.01, 0.01, np.nan]), np.array([0.1, 0.0, -0.1, 0.1]))
    np.testing.assert_allclose(g[0], 23.0)
    assert np.isnan(g[1:]).all()
