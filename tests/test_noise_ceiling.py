"""Noise ceiling on planted data: shared signal -> high ceiling, independent noise -> about 0."""

import numpy as np
import pandas as pd
import pytest

from brainpred import noise_ceiling as nc


def _subjects(n_subjects=5, n_trs=120, V=40, shared=20, seed=0):
    """Runs of one story; the first ``shared`` vertices carry a common signal."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n_trs, V))
    bold = {}
    for s in range(n_subjects):
        y = rng.standard_normal((n_trs, V))
        y[:, :shared] += 1.5 * signal[:, :shared]
        bold[f"sub-{s + 1:03d}_task-a"] = y.astype(np.float32)
    runs = pd.DataFrame({"subject": [f"sub-{s + 1:03d}" for s in range(n_subjects)],
                         "task": "a", "condition": "", "n_trs": n_trs,
                         "basename": list(bold)})
    return runs, bold


def test_other_subjects_mean_leaves_the_subject_out():
    runs, bold = _subjects(n_subjects=4)
    Y, P, lengths, n_others = nc.other_subjects_mean("sub-002", runs,
                                                     lambda b, n: bold[b][:n])
    assert lengths == [120] and n_others == [3]
    np.testing.assert_allclose(Y, bold["sub-002_task-a"])
    others = np.mean([bold[b] for b in bold if not b.startswith("sub-002")], axis=0)
    np.testing.assert_allclose(P, others, rtol=1e-5, atol=1e-6)


def test_other_subjects_mean_without_other_listener():
    runs, bold = _subjects(n_subjects=1)
    Y, P, lengths, _ = nc.other_subjects_mean("sub-001", runs, lambda b, n: bold[b][:n])
    assert Y is None and P is None and lengths == []


def test_planted_shared_signal_gives_high_ceiling_and_noise_about_zero():
    runs, bold = _subjects(n_subjects=6, n_trs=200, V=60, shared=30)
    Y, P, lengths, _ = nc.other_subjects_mean("sub-001", runs, lambda b, n: bold[b][:n])
    r = nc.ceiling_scores(P, Y, lengths, delays=range(3), alphas=np.logspace(-1, 4, 6),
                          n_folds=5, batch=17)
    assert r.shape == (60,)
    assert np.mean(r[:30]) > 0.6 and np.min(r[:30]) > 0.4
    assert abs(np.mean(r[30:])) < 0.05 and np.max(np.abs(r[30:])) < 0.35


def test_ceiling_scores_matches_sklearn_ridge_on_one_vertex():
    from sklearn.linear_model import Ridge

    from brainpred.design import fir_delays
    from brainpred.mapping import contiguous_folds, pearson_r

    rng = np.random.default_rng(3)
    n = 90
    p = rng.standard_normal((n, 1))
    y = (np.roll(p[:, 0], 1) + 0.8 * rng.standard_normal(n))[:, None]
    alpha = [10.0]  # one alpha: no inner choice, the outer fits must agree
    r = nc.ceiling_scores(p, y, [n], delays=[0, 1], alphas=alpha, n_folds=3)
    D = fir_delays(p, [0, 1], [n]).astype(float)
    rs = []
    for train, test in contiguous_folds(n, 3):
        mu, sd = D[train].mean(0), D[train].std(0)
        model = Ridge(alpha=alpha[0]).fit((D[train] - mu) / sd, y[train, 0])
        rs.append(pearson_r(y[test], model.predict((D[test] - mu) / sd)[:, None])[0])
    np.testing.assert_allclose(r[0], np.mean(rs), rtol=1e-5)


def test_nan_and_constant_vertices():
    rng = np.random.default_rng(1)
    P = rng.standard_normal((50, 3)).astype(np.float32)
    Y = (P + rng.standard_normal((50, 3))).astype(np.float32)
    Y[:, 1] = np.nan
    P[:, 2] = 1.0
    r = nc.ceiling_scores(P, Y, delays=[0], n_folds=2, n_inner_folds=2)
    assert np.isfinite(r[0]) and np.isnan(r[1]) and np.isnan(r[2])


def test_percent_of_ceiling():
    out = nc.percent_of_ceiling([0.1, 0.1, 0.1, np.nan], [0.2, 0.01, -0.1, 0.3],
                                min_ceiling=0.05)
    np.testing.assert_allclose(out[0], 50.0)
    assert np.isnan(out[1:]).all()


def test_shapes_must_match():
    with pytest.raises(ValueError):
        nc.ceiling_scores(np.zeros((10, 2)), np.zeros((10, 3)))


def test_listener_sums_give_the_same_leave_one_out_mean(tmp_path):
    """Subtracting a subject's run from the listeners' sum equals averaging the others."""
    runs, bold = _subjects(n_subjects=5, n_trs=60, V=12)
    bold["sub-003_task-a"][5:9, 2] = np.nan           # missing values are counted out
    load = lambda b, n: bold[b][:n]                   # noqa: E731
    sums = nc.listener_sums(runs, load)
    total, count, members = sums[("a", "")]
    assert members["subject"].tolist() == [f"sub-{s:03d}" for s in range(1, 6)]
    assert count[5, 2] == 4 and count[0, 0] == 5
    nc.save_listener_sums(tmp_path / "sums.npz", sums)
    loaded = nc.load_listener_sums([tmp_path / "sums.npz"])
    for subject in ("sub-001", "sub-003", "sub-005"):
        Y, P, lengths, n_others = nc.other_subjects_mean(subject, runs, load)
        Y2, P2, lengths2, n_others2 = nc.other_subjects_mean(subject, runs, load, sums=loaded)
        np.testing.assert_array_equal(Y, Y2)
        np.testing.assert_allclose(P2, P, rtol=1e-5, atol=1e-5)
        assert lengths == lengths2 and n_others == n_others2 == [4]


def test_listener_sums_reject_unequal_lengths_and_missing_story():
    from brainpred.errors import DataError

    runs, bold = _subjects(n_subjects=3, n_trs=40, V=4)
    bad = runs.copy()
    bad.loc[0, "n_trs"] = 30
    with pytest.raises(DataError, match="different lengths"):
        nc.listener_sums(bad, lambda b, n: bold[b][:n])
    with pytest.raises(DataError, match="no listener sum"):
        nc.other_subjects_mean("sub-001", runs, lambda b, n: bold[b][:n], sums={})
