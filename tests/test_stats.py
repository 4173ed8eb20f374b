import warnings

import numpy as np
import pytest
from scipy import stats as sps

from brainpred.config import load_schema, schema_defaults
from brainpred.group import forecast_group
from brainpred.stats import (best_distance, bootstrap_best, fdr_bh, forecast_gain, mean_ci,
                             relative_gain, wilcoxon_test)
from brainpred.tables import group_region_tables


def _cfg(**stats):
    """A group config: the schema's stats and noise_ceiling defaults, ``stats`` overriding."""
    d = schema_defaults(load_schema())
    return {"stats": {**d["stats"], **stats}, "noise_ceiling": d["noise_ceiling"]}


def _signflip_reference(col):
    """scipy's exact permutation test of the signed-rank statistic R+ (zeros dropped, average
    ranks) over every sign flip: the test wilcoxon_test uses on columns with zeros or ties."""
    col = col[np.isfinite(col)]
    if not np.any(col):
        return 0.0, 1.0

    def r_plus(d):
        nz = d != 0
        return np.sum(sps.rankdata(np.abs(d[nz])) * (d[nz] > 0))

    res = sps.permutation_test((col,), r_plus, permutation_type="samples", n_resamples=np.inf,
                               alternative="two-sided", vectorized=False)
    ranks = sps.rankdata(np.abs(col[col != 0]))
    return min(res.statistic, ranks.sum() - res.statistic), res.pvalue


def _reference(col):
    """What wilcoxon_test should give for one column."""
    a = np.sort(np.abs(col))
    dirty = np.any(a == 0) or np.any(np.diff(a) == 0)
    if dirty and len(col) <= 13:
        return _signflip_reference(col)
    if dirty and not np.any(col):
        return 0.0, 1.0
    ref = sps.wilcoxon(col)
    return ref.statistic, ref.pvalue


def test_wilcoxon_matches_scipy_per_column():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, size=(12, 7))
    x[:, 1] = np.round(x[:, 1] * 2)  # ties and zeros
    x[:, 2] = rng.normal(0, 1, 12)
    stat, p = wilcoxon_test(x)
    assert stat.shape == p.shape == (7,)
    for j in range(7):
        ref_stat, ref_p = _reference(x[:, j])
        np.testing.assert_allclose(stat[j], ref_stat)
        np.testing.assert_allclose(p[j], ref_p)


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


def _subject_npzs(tmp_path, R, F, distances, ceilings=None):
    from brainpred import provenance as prov
    from brainpred.io import save_npz

    paths, cpaths = [], []
    for s in range(R.shape[0]):
        paths.append(tmp_path / f"sub-{s:03d}_desc-scores.npz")
        rec = prov.scores_record("subject_scores", [f"sub-{s:03d}"], model="test", layer=1,
                                 distances=distances, subject=f"sub-{s:03d}")
        save_npz(paths[-1], subject=np.array(f"sub-{s:03d}"), distances=np.array(distances),
                 brain_score=R[s].astype(np.float32), forecast_score=F[s].astype(np.float32),
                 provenance=prov.to_array(rec))
        if ceilings is not None:
            cpaths.append(tmp_path / f"sub-{s:03d}_desc-noiseceiling.npz")
            save_npz(cpaths[-1], subject=np.array(f"sub-{s:03d}"),
                     noise_ceiling=ceilings[s].astype(np.float32))
    return paths, cpaths


def test_forecast_group_against_scipy():
    rng = np.random.default_rng(5)
    S, V, distances = 10, 6, [0, 4, 8]
    R = rng.normal([0.3, 0.2, 0.0, 0.1, 0.05, 0.4], 0.05, (S, V))
    R[:, 5] = np.nan                                    # medial wall
    F = rng.normal(0, 0.01, (S, 3, V))
    F[:, 2, :2] += 0.05                                 # d = 8 beats d = 0 on vertices 0, 1
    NC = rng.normal(0.5, 0.05, (S, V))
    cfg = _cfg(ci=0.95, fdr_q=0.05, dstar_reference=[0, 8], dstar_mask="fdr",
               gain_distance="best")
    R32, F32, NC32 = R, F, NC
    g = forecast_group(R, F, np.array(distances), cfg["stats"], NC=NC, min_ceiling=0.05)
    np.testing.assert_allclose(g["brain_score"][:5], R32[:, :5].mean(0), rtol=1e-6)
    assert np.isnan(g["brain_score"][5]) and np.isnan(g["brain_p"][5])
    for v in range(5):
        ref = sps.wilcoxon(R32[:, v])
        np.testing.assert_allclose(g["brain_p"][v], ref.pvalue)
        lo, hi = sps.t.interval(0.95, S - 1, loc=R32[:, v].mean(), scale=sps.sem(R32[:, v]))
        np.testing.assert_allclose([g["brain_low"][v], g["brain_high"][v]], [lo, hi])
        for i in range(3):
            np.testing.assert_allclose(g["forecast_p"][i, v], sps.wilcoxon(F32[:, i, v]).pvalue)
    q = sps.false_discovery_control(g["brain_p"][:5], method="bh")
    np.testing.assert_allclose(g["brain_q"][:5], q)
    np.testing.assert_array_equal(g["brain_reject"][:5], (q <= 0.05) & (g["brain_score"][:5] > 0))
    np.testing.assert_array_equal(np.isfinite(g["brain_score_fdr"]), g["brain_reject"])
    # d* map: argmax of the mean F, shown where F(8) - F(0) is FDR-significant and positive
    diff_p = np.array([sps.wilcoxon(F32[:, 2, v] - F32[:, 0, v]).pvalue for v in range(V)])
    np.testing.assert_allclose(g["diff_p"], diff_p)
    mask = (sps.false_discovery_control(diff_p, method="bh") <= 0.05) & \
        ((F32[:, 2] - F32[:, 0]).mean(0) > 0)
    np.testing.assert_array_equal(g["dstar_mask"], mask)
    assert mask[0] and mask[1]
    np.testing.assert_array_equal(g["dstar"][:2], [8, 8])
    assert np.isnan(g["dstar"][~mask]).all()
    best = F32.mean(0).max(0)
    np.testing.assert_allclose(g["gain_maxd"][:5], np.where(R32[:, :5].mean(0) > 0,
                                                            100 * best[:5] / R32[:, :5].mean(0),
                                                            np.nan), rtol=1e-6)
    # the reported gain: one d* for the group over the FDR-significant brain-score vertices
    resp = g["brain_reject"]
    assert resp.sum() >= 3
    Fs = F32[:, :, resp].mean(2)                             # (S, n_d)
    i = int(Fs.mean(0).argmax())
    assert g["gain_dstar"] == distances[i] == 8
    np.testing.assert_allclose(g["gain_subjects"], 100 * Fs[:, i] / R32[:, resp].mean(1),
                               rtol=1e-6)
    Rm = R32[:, :5].mean(0)
    np.testing.assert_allclose(g["gain"][:5], np.where(Rm > 0, 100 * F32.mean(0)[i, :5] / Rm,
                                                       np.nan), rtol=1e-6)
    np.testing.assert_allclose(g["noise_ceiling"], NC32.mean(0), rtol=1e-6)
    np.testing.assert_allclose(g["percent_ceiling"][:5],
                               100 * R32[:, :5].mean(0) / NC32[:, :5].mean(0), rtol=1e-6)


def test_make_group_writes_the_forecast_group_of_the_subject_files(tmp_path):
    """The stage reads the subject files (float32 on disk) and writes exactly
    :func:`forecast_group` of their arrays, the subjects and their region tables."""
    from brainpred.io import load_npz, read_tsv
    from brainpred.stages.stats import make_group

    rng = np.random.default_rng(3)
    S, V, distances = 6, 8, [0, 4, 8]
    R = rng.normal(0.2, 0.05, (S, V))
    F = rng.normal(0.01, 0.01, (S, 3, V))
    NC = rng.normal(0.5, 0.05, (S, V))
    paths, cpaths = _subject_npzs(tmp_path, R, F, distances, NC)
    cfg = {**_cfg(dstar_reference=[0, 8], dstar_mask="ci"), "regions": {"split_max_size": 0}}
    out = {"npz": tmp_path / "group.npz", "regions": tmp_path / "regions.tsv",
           "regions_stats": tmp_path / "stats.tsv"}
    make_group(paths, cfg, out, ceiling_npzs=cpaths)
    g = load_npz(out["npz"])
    R32, F32, NC32 = (x.astype(np.float32).astype(np.float64) for x in (R, F, NC))
    ref = forecast_group(R32, F32, np.array(distances), cfg["stats"], NC=NC32,
                         min_ceiling=cfg["noise_ceiling"]["min_ceiling"])
    assert set(g) == set(ref) | {"subjects"}
    for key, value in ref.items():
        np.testing.assert_array_equal(g[key], value)
    assert g["subjects"].tolist() == [f"sub-{s:03d}" for s in range(S)]
    whole = read_tsv(out["regions"]).query("measure == 'brainscore'")["value"]
    np.testing.assert_allclose(whole, np.nanmean(R32, axis=1), rtol=1e-6)


def test_forecast_group_ci_best_mask():
    rng = np.random.default_rng(7)
    S, V, distances = 8, 4, [0, 8, 15]
    R = rng.normal([0.3, 0.3, 0.0, 0.3], 0.02, (S, V))   # vertex 2 does not respond
    F = rng.normal(0, 0.01, (S, 3, V))
    F[:, 1, 0] += 0.05                                   # vertex 0: forecast at d = 8
    F[:, 2, 1] += 0.05                                   # vertex 1: forecast at d = 15
    F[:, 1, 2] += 0.05                                   # vertex 2: F > 0 but no brain score
    g = forecast_group(R, F, np.array(distances),
                       _cfg(dstar_reference=[0, 8], dstar_mask="ci_best")["stats"])
    F32 = F
    best = F32.mean(0).argmax(0)
    low = np.array([sps.t.interval(0.95, S - 1, loc=F32[:, best[v], v].mean(),
                                   scale=sps.sem(F32[:, best[v], v]))[0] for v in range(V)])
    assert low[0] > 0 and low[1] > 0 and low[2] > 0
    expected = (low > 0) & (np.array([sps.t.interval(0.95, S - 1, loc=r.mean(),
                                                       scale=sps.sem(r))[0]
                                      for r in R.T]) > 0)
    np.testing.assert_array_equal(g["dstar_mask"], expected)
    assert list(g["dstar_mask"][:3]) == [True, True, False]
    np.testing.assert_array_equal(g["dstar"][:2], [8, 15])


def test_forecast_group_rejects_a_missing_reference_distance():
    from brainpred.errors import ConfigError

    with pytest.raises(ConfigError, match="dstar_reference"):
        forecast_group(np.ones((3, 2)), np.ones((3, 2, 2)), np.array([0, 5]),
                       _cfg(dstar_reference=[0, 8])["stats"])


def test_group_region_tables():
    rng = np.random.default_rng(2)
    S, V = 6, 8
    R = rng.normal(0.2, 0.05, (S, V))
    F = rng.normal(0.01, 0.01, (S, 2, V))
    NC = np.full((S, V), 0.4)
    labels = np.array([1, 1, 2, 2, 1001, 1001, 1002, -1])
    names = {1: "L a", 2: "L b", 1001: "R a", 1002: "R b"}
    from brainpred.regions import atlas_levels

    levels = atlas_levels(labels, names, coords=None, max_size=0)
    scores, group = group_region_tables(R, F, [0, 8], [f"s{i}" for i in range(S)], levels,
                                        _cfg(fdr_q=0.01)["stats"], NC=NC, min_ceiling=0.05)
    assert set(scores["level"]) == {"whole", "parcel", "bilateral"}
    assert set(scores["measure"]) == {"brainscore", "forecastscore", "noiseceiling",
                                      "brainscore_pct_ceiling"}
    row = scores[(scores["subject"] == "s0") & (scores["region"] == "a")
                 & (scores["measure"] == "brainscore")]
    assert row["value"].item() == pytest.approx(R[0, [0, 1, 4, 5]].mean())
    pct = scores[(scores["subject"] == "s0") & (scores["region"] == "a")
                 & (scores["measure"] == "brainscore_pct_ceiling")]
    assert pct["value"].item() == pytest.approx(100 * R[0, [0, 1, 4, 5]].mean() / 0.4)
    g = group[(group["region"] == "L b") & (group["measure"] == "forecastscore")
              & (group["distance"] == 8)]
    vals = F[:, 1, 2:4].mean(1)
    assert g["mean"].item() == pytest.approx(vals.mean())
    assert g["p"].item() == pytest.approx(sps.wilcoxon(vals).pvalue)
    assert g["n"].item() == S
    whole = group[(group["level"] == "whole") & (group["measure"] == "brainscore")]
    assert len(whole) == 1 and np.isnan(whole["distance"].item())
    assert whole["mean"].item() == pytest.approx(R.mean())


def test_wilcoxon_ties_are_tested_apart_fast():
    import time

    rng = np.random.default_rng(7)
    x = rng.normal(0.2, 1, (8, 50000))
    x[:, 0] = [1, 1, 2, 2, -1, 3, 0, 4]                 # zeros and ties in one column
    t = time.perf_counter()
    _, p = wilcoxon_test(x)
    assert time.perf_counter() - t < 10
    np.testing.assert_allclose(p[0], _reference(x[:, 0])[1])
    np.testing.assert_allclose(p[1], sps.wilcoxon(x[:, 1]).pvalue)


def test_forecast_gain_hand_example():
    # 2 subjects, 3 vertices (the last not responsive), distances 0 and 8
    R = np.array([[0.2, 0.4, 0.9], [0.1, 0.3, 0.9]])
    F = np.zeros((2, 2, 3))
    F[:, 1, :2] = [[0.03, 0.03], [0.01, 0.03]]               # d = 8
    F[:, 0, :2] = [[0.02, 0.0], [0.0, 0.0]]                  # d = 0
    F[:, :, 2] = [[0.5, -0.5], [0.5, -0.5]]                  # the mask leaves it out
    out = forecast_gain(R, F, [0, 8], np.array([True, True, False]))
    assert out["dstar"] == 8
    np.testing.assert_allclose(out["R_subjects"], [0.3, 0.2])
    np.testing.assert_allclose(out["gain_subjects"], [100 * 0.03 / 0.3, 100 * 0.02 / 0.2])
    assert out["mean"] == pytest.approx(10.0) and out["n"] == 2 and out["n_vertices"] == 2
    fixed = forecast_gain(R, F, [0, 8], np.array([True, True, False]), distance=0)
    np.testing.assert_allclose(fixed["gain_subjects"], [100 * 0.01 / 0.3, 0.0])
    with pytest.raises(ValueError, match="not fitted"):
        forecast_gain(R, F, [0, 8], np.ones(3, bool), distance=5)


def test_forecast_gain_is_not_the_biased_per_vertex_maximum():
    """Pure noise F(d): the per-vertex max over d of the mean F is clearly positive (each
    vertex keeps its luckiest distance); the paper's gain, one d* for the group, is not."""
    rng = np.random.default_rng(0)
    S, n_d, V = 20, 41, 500
    R = np.full((S, V), 0.1)
    F = rng.normal(0, 0.01, (S, n_d, V))
    maxd = relative_gain(F.mean(0).max(0), R.mean(0))
    assert np.mean(maxd) > 3.0                                # biased upward
    out = forecast_gain(R, F, np.arange(-10, 31), np.ones(V, bool))
    assert abs(out["mean"]) < 0.5 and out["ci_low"] < 0.5


def test_bootstrap_best_is_seeded_and_covers_the_truth():
    rng = np.random.default_rng(1)
    x = np.arange(-10, 31)
    curves = np.exp(-0.5 * ((x - 8) / 4.0) ** 2)[None] + rng.normal(0, 0.3, (30, x.size))
    best, low, high = bootstrap_best(curves, x, seed=0)
    assert low <= 8 <= high and low <= best <= high
    assert bootstrap_best(curves, x, seed=0) == (best, low, high)
    assert bootstrap_best(curves[:1], x)[1:] != bootstrap_best(curves, x)[1:]


@pytest.mark.parametrize("n", [3, 8, 13, 14])
def test_wilcoxon_columns_with_zeros_and_ties_equal_scipy(n):
    """Many columns with exact zeros (a banded fit that switches a window off gives F = 0) or
    tied |values|: each p-value and statistic equals scipy's exact sign-flip permutation test
    of that column alone up to 13 subjects, scipy's normal approximation above."""
    rng = np.random.default_rng(n)
    x = np.round(rng.normal(0.3, 1, (n, 400)), 1)      # ties everywhere
    x[0, :150] = 0.0                                     # zeros
    x[: n - 1, 150:200] = 0.0                            # a single non-zero value
    x[:, 200] = 0.0                                      # all zeros: p = 1
    stat, p = wilcoxon_test(x)
    assert p[200] == 1.0
    # scipy's permutation test costs ~0.5 s per column at 13 subjects: a few columns there
    for j in (list(range(0, 400, 7)) if n <= 8 else [0, 120, 260, 399]) + [150, 199, 200]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_stat, ref_p = _reference(x[:, j])
        np.testing.assert_allclose(p[j], ref_p, rtol=1e-12, atol=0)
        np.testing.assert_allclose(stat[j], ref_stat, rtol=1e-12, atol=0)
