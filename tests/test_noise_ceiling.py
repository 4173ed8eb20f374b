"""Noise ceiling on planted data: shared signal -> high ceiling, independent noise -> about 0;
listeners pooled per audio file (all its conditions), on the real Narratives metadata too."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import config

from brainpred import noise_ceiling as nc
from brainpred.errors import DataError
from brainpred.mapping import contiguous_folds, ridge_cv_per_target

SHARED = Path(__file__).resolve().parents[2] / "shared" / "narratives"
needs_shared = pytest.mark.skipif(
    not (SHARED / "participants.tsv").exists(),
    reason=f"real Narratives metadata not found at {SHARED} (clone shared/ beside the repo)")


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
    # keyed by (task, audio) since the ceiling pools the listeners of one audio (was (task,
    # condition)); without story / stim_file columns the audio is the task
    total, count, members = sums[("a", "a")]
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
    runs, bold = _subjects(n_subjects=3, n_trs=40, V=4)
    bad = runs.copy()
    bad.loc[0, "n_trs"] = 30
    with pytest.raises(DataError, match="different lengths"):
        nc.listener_sums(bad, lambda b, n: bold[b][:n])
    with pytest.raises(DataError, match="no listener sum"):
        nc.other_subjects_mean("sub-001", runs, lambda b, n: bold[b][:n], sums={})


# --------------------------------------------------------------------------------------------
# listeners pooled per audio file
# --------------------------------------------------------------------------------------------

def _table(groups, n_trs=30, V=3, seed=0):
    """Run table rows of one task: ``groups`` is [(condition, story, n_subjects), ...]."""
    rng = np.random.default_rng(seed)
    rows, bold, s = [], {}, 0
    for task, cond, story, n in groups:
        for _ in range(n):
            s += 1
            sub = f"sub-{s:03d}"
            base = f"{sub}_task-{task}"
            bold[base] = rng.standard_normal((n_trs, V)).astype(np.float32)
            rows.append({"subject": sub, "task": task, "story": story, "run": "",
                         "condition": cond, "audio_onset": 0.0, "tr": 1.5, "n_trs": n_trs,
                         "kept": True, "reason": "", "stim_file": f"{story}_audio.wav",
                         "basename": base})
    return pd.DataFrame(rows), bold


def test_two_conditions_of_one_audio_are_pooled(tmp_path):
    """prettymouth-like: the affair and paranoia listeners heard one audio, so a subject's
    ceiling averages all the other listeners (was: only those of its own condition)."""
    table, bold = _table([("pm", "affair", "pm", 3), ("pm", "paranoia", "pm", 4)])
    runs = nc.runs_frame(table)
    load = lambda b, n: bold[b][:n]                   # noqa: E731
    assert nc.other_subjects_mean("sub-001", runs, load)[3] == [6]   # 2 others of "affair"
    sums = nc.listener_sums(runs, load)
    assert list(sums) == [("pm", "pm")] and len(sums[("pm", "pm")][2]) == 7
    for with_sums in (None, sums):
        Y, P, lengths, n_others, used = nc.other_subjects_mean("sub-001", runs, load,
                                                               sums=with_sums, return_runs=True)
        assert n_others == [6] and used["n_listeners"].tolist() == [7]
        assert used["audio"].tolist() == ["pm"]
        others = np.mean([bold[b] for b in bold if not b.startswith("sub-001")], axis=0)
        np.testing.assert_allclose(P, others, rtol=1e-5, atol=1e-5)
    t = nc.listener_table(runs)
    assert t[["condition", "n_condition", "n_listeners"]].values.tolist() == [
        ["affair", 3, 7], ["paranoia", 4, 7]]


def test_milkyway_versions_stay_apart():
    """The milkyway versions are different audio files: their listeners are not pooled."""
    table, bold = _table([("milkyway", "original", "milkywayoriginal", 3),
                          ("milkyway", "vodka", "milkywayvodka", 2)])
    runs = nc.runs_frame(table)
    load = lambda b, n: bold[b][:n]                   # noqa: E731
    sums = nc.listener_sums(runs, load)
    assert {k: len(m) for k, (_, _, m) in sums.items()} == {
        ("milkyway", "milkywayoriginal"): 3, ("milkyway", "milkywayvodka"): 2}
    assert nc.other_subjects_mean("sub-001", runs, load, sums=sums)[3] == [2]
    assert nc.other_subjects_mean("sub-004", runs, load)[3] == [1]
    t = nc.listener_table(runs)
    assert t[["audio", "n_listeners"]].values.tolist() == [["milkywayoriginal", 3],
                                                          ["milkywayvodka", 2]]


def test_audio_of_story_stim_file_and_fallbacks():
    """The audio is the file holding the story (slumlord / reach -> slumlordreach), else the
    stim_file stem, else the task (an empty stim_file, no story)."""
    assert nc.audio_of({"task": "milkyway", "story": "milkywayvodka",
                        "stim_file": "milkywayvodka_audio.wav"}) == "milkywayvodka"
    assert nc.audio_of({"task": "slumlordreach", "story": "reach",
                        "stim_file": "slumlordreach_audio.wav"}) == "slumlordreach"
    assert nc.audio_of({"task": "t", "stim_file": "stimuli/x_audio.wav"}) == "x"
    assert nc.audio_of({"task": "t", "story": np.nan, "stim_file": np.nan}) == "t"
    assert nc.audio_of({"task": "t", "stim_file": ""}) == "t"
    # the two story rows of one slumlordreach run are one listener
    table, bold = _table([("slumlordreach", "", "slumlord", 3)])
    table = pd.concat([table, table.assign(story="reach")], ignore_index=True)
    table["stim_file"] = "slumlordreach_audio.wav"
    runs = nc.runs_frame(table)
    t = nc.listener_table(runs)
    assert t[["audio", "n_listeners"]].values.tolist() == [["slumlordreach", 3]]
    Y, P, lengths, n_others = nc.other_subjects_mean("sub-002", runs, lambda b, n: bold[b][:n])
    assert lengths == [30] and n_others == [2]


def test_listeners_on_different_grids_are_refused():
    """Two conditions of one audio with different audio onsets (or TRs) cannot be averaged TR
    by TR: refused with the onsets of each condition, not silently misaligned."""
    table, bold = _table([("pm", "affair", "pm", 2), ("pm", "paranoia", "pm", 2)])
    load = lambda b, n: bold[b][:n]                   # noqa: E731
    late = table.assign(audio_onset=np.where(table["condition"] == "paranoia", 3.0, 0.0))
    for bad, what in ((late, "audio onsets"),
                      (table.assign(tr=[1.5, 1.5, 1.5, 1.52]), "TRs")):
        runs = nc.runs_frame(bad)
        with pytest.raises(DataError, match=what):
            nc.listener_sums(runs, load)
        with pytest.raises(DataError, match=what):
            nc.listener_table(runs)
        with pytest.raises(DataError, match=what):
            nc.other_subjects_mean("sub-001", runs, load)


def test_audio_heard_in_two_tasks_is_refused():
    table, _ = _table([("a", "", "x", 2), ("b", "", "x", 2)])
    with pytest.raises(DataError, match="heard in tasks"):
        nc.runs_frame(table)


def test_old_listener_sums_are_refused(tmp_path):
    from brainpred.io import save_npz

    save_npz(tmp_path / "old.npz", keys_json=np.array(
        '[{"task": "a", "condition": "", "subject": ["sub-001"], "basename": ["b"]}]'),
        s0__total=np.zeros((2, 2)), s0__count=np.zeros((2, 2), dtype=np.int32))
    with pytest.raises(DataError, match="delete it"):
        nc.load_listener_sums([tmp_path / "old.npz"])


def test_pipeline_writes_listener_counts(tmp_path):
    """make_listener_sums writes the listeners table; the ceiling npz says how many listeners
    were pooled for each run."""
    from brainpred import io
    from brainpred import provenance as prov
    from brainpred.stages.noiseceiling import make_listener_sums, make_noise_ceiling

    table, bold = _table([("pm", "affair", "pm", 2), ("pm", "paranoia", "pm", 2)], n_trs=60,
                         V=4)
    table.loc[len(table)] = {**table.iloc[0].to_dict(), "subject": "sub-009",
                             "basename": "sub-009_task-pm", "kept": False,
                             "reason": "scan_exclude"}
    paths = {}
    for b, y in bold.items():
        paths[b] = tmp_path / f"{b}.npy"
        prov.save_bold(paths[b], y, b.split("_")[0], b, tr=1.5)
    io.write_tsv(tmp_path / "runs.tsv", table)
    cfg = config(mapping={"delays": [0, 1], "alphas": {"start": 0, "stop": 1, "num": 2},
                          "n_folds": 2, "n_inner_folds": 2, "gap_trs": 0},
                 noise_ceiling={"batch": 8})
    make_listener_sums("pm", tmp_path / "runs.tsv", paths, cfg, tmp_path / "sums.npz",
                       out_tsv=tmp_path / "listeners.tsv")
    t = io.read_tsv(tmp_path / "listeners.tsv")
    assert t.columns.tolist()[:5] == ["task", "audio", "condition", "n_condition", "n_listeners"]
    assert t[["condition", "n_condition", "n_listeners"]].values.tolist() == [
        ["affair", 2, 4], ["paranoia", 2, 4]]
    outs = {"npz": tmp_path / "c.npz", "ceiling_L": tmp_path / "L.func.gii",
            "ceiling_R": tmp_path / "R.func.gii"}
    make_noise_ceiling("sub-003", tmp_path / "runs.tsv", {"sub-003_task-pm": paths[
        "sub-003_task-pm"]}, cfg, outs, sums_paths=[tmp_path / "sums.npz"])
    z = io.load_npz(outs["npz"])
    assert z["n_listeners"].tolist() == [4] and z["n_others"].tolist() == [3]
    assert z["audio"].tolist() == ["pm"] and z["basenames"].tolist() == ["sub-003_task-pm"]


# --------------------------------------------------------------------------------------------
# real Narratives metadata
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_runs():
    if not (SHARED / "participants.tsv").exists():
        pytest.skip(f"real Narratives metadata not found at {SHARED} (clone shared/ beside "
                    "the repo)")
    from brainpred.narratives import build_run_table, split_story_rows
    from brainpred.plan import run_basename

    table = split_story_rows(build_run_table(SHARED))
    table["basename"] = [run_basename(s, t, r) for s, t, r in
                         zip(table["subject"], table["task"], table["run"])]
    table["n_trs"] = 5                  # no BOLD in shared/: any common length
    return nc.runs_frame(table)


@needs_shared
@pytest.mark.shared
def test_real_listeners_of_one_audio_share_one_grid(real_runs):
    """On the release, every kept run of an audio has the same audio onset and TR whatever its
    condition (listener_table would refuse otherwise); the milkyway versions are 3 audio."""
    t = nc.listener_table(real_runs)
    per_audio = t.drop_duplicates(["task", "audio"])
    assert set(t.loc[t["task"] == "milkyway", "audio"]) == {
        "milkywayoriginal", "milkywaysynonyms", "milkywayvodka"}
    assert (per_audio.groupby("audio")["task"].nunique() == 1).all()
    pm = t[t["audio"] == "prettymouth"]
    assert pm["condition"].tolist() == ["affair", "paranoia"]
    assert set(pm["audio_onset"]) == {0.0} and set(pm["tr"]) == {1.5}
    syn = t[t["audio"] == "milkywaysynonyms"]
    assert set(syn["tr"]) == {1.52}


@needs_shared
@pytest.mark.shared
def test_real_pooled_listener_counts(real_runs):
    """Each subject's ceiling averages every other kept listener of its audio, all conditions
    pooled: kept runs of that audio minus one (release 1.1.4 counts)."""
    from brainpred.narratives import story_folder

    expected = {"prettymouth": 38, "merlin": 35, "sherlock": 36, "notthefallintact": 54,
                "shapesphysical": 59, "milkywayoriginal": 17, "milkywaysynonyms": 16,
                "milkywayvodka": 17}
    audio = real_runs["story"].map(story_folder)
    rng = np.random.default_rng(0)
    for name, n in expected.items():
        runs = real_runs[audio == name]
        assert runs.drop_duplicates("basename")["subject"].nunique() == n, name
        bold = {b: rng.standard_normal((5, 2)).astype(np.float32)
                for b in runs["basename"].unique()}
        load = lambda b, n: bold[b][:n]               # noqa: E731
        sums = nc.listener_sums(runs, load)
        conds = runs.drop_duplicates("condition")
        assert len(conds) >= (2 if name in {"prettymouth", "merlin", "sherlock"} else 1)
        for subject in conds["subject"]:    # one subject of each condition
            assert nc.other_subjects_mean(subject, runs, load, sums=sums)[3] == [n - 1], (
                name, subject)
            assert nc.other_subjects_mean(subject, runs, load)[3] == [n - 1], (name, subject)
    t = nc.listener_table(real_runs[audio.isin(set(expected))])
    assert t.drop_duplicates("audio").set_index("audio")["n_listeners"].to_dict() == expected
    # with all the audio of a subject: the counts of each audio
    sub = real_runs[real_runs["subject"] == "sub-023"]            # prettymouth and others
    runs = real_runs[audio.isin(set(audio[sub.index]))]
    counts = runs.drop_duplicates("basename").groupby(audio[runs.index])["subject"].nunique()
    bold = {b: np.ones((5, 2), np.float32) for b in runs["basename"].unique()}
    _, _, _, n_others, used = nc.other_subjects_mean("sub-023", runs, lambda b, n: bold[b],
                                                     return_runs=True)
    assert len(used) > 1 and "prettymouth" in set(used["audio"])
    assert dict(zip(used["audio"], used["n_listeners"])) == counts[used["audio"]].to_dict()
    assert n_others == (used["n_listeners"] - 1).tolist()


# --------------------------------------------------------------------------------------------
# alpha selection against scikit-learn over the full grid
# --------------------------------------------------------------------------------------------

FULL_ALPHAS = np.logspace(-1, 8, 10)


def _sk_ceiling(P, Y, segments, delays, n_folds, n_inner, folds=None, summed=False):
    """scikit-learn reference of the ceiling, per vertex: the vertex's predictor with FIR
    delays (zero-padded per run, written out here), standardised on the training rows; alpha
    of least mean MSE over contiguous inner folds of the training rows (sklearn Ridge with
    intercept, every alpha of the grid; ``summed``: least squared error summed over the inner
    folds, i.e. the folds weighted by their sizes, the ceiling's criterion); refit on the
    training rows; test Pearson r. ``folds``: outer (train, test) pairs (default: contiguous,
    no gap).

    Returns the mean r over folds (V,), and per fold: (train, test, design, errors
    (n_alphas, V), predictions (n_test, V))."""
    from scipy.stats import pearsonr
    from sklearn.linear_model import Ridge

    n, V = Y.shape
    k = len(delays)
    D = np.zeros((n, k, V))
    start = 0
    for length in segments:
        for t in range(length):
            for j, d in enumerate(delays):
                if 0 <= t - d < length:
                    D[start + t, j] = P[start + t - d]
        start += length
    if folds is None:
        folds = [(np.setdiff1d(np.arange(n), test), test)
                 for test in np.array_split(np.arange(n), n_folds)]
    rs, out = [], []
    for train, test in folds:
        mu, sd = D[train].mean(0), D[train].std(0)
        Dz = (D - mu) / np.where(sd < 1e-12, 1.0, sd)
        err = np.zeros((len(FULL_ALPHAS), V))
        pred = np.zeros((len(test), V))
        for v in range(V):
            Xtr, ytr = Dz[train, :, v], Y[train, v].astype(np.float64)
            for val in np.array_split(np.arange(len(train)), n_inner):
                fit = np.setdiff1d(np.arange(len(train)), val)
                for a, alpha in enumerate(FULL_ALPHAS):
                    p = Ridge(alpha=alpha).fit(Xtr[fit], ytr[fit]).predict(Xtr[val])
                    sq = (ytr[val] - p) ** 2
                    err[a, v] += sq.sum() if summed else sq.mean() / n_inner
            best = FULL_ALPHAS[np.argmin(err[:, v])]
            pred[:, v] = Ridge(alpha=best).fit(Xtr, ytr).predict(Dz[test, :, v])
        rs.append([pearsonr(Y[test, v], pred[:, v])[0] for v in range(V)])
        out.append((train, test, Dz, err, pred))
    return np.mean(rs, 0), out


def test_ceiling_alpha_choice_matches_sklearn_over_the_full_grid():
    """Vertices from pure noise to a strong delayed copy of the others' mean: the inner CV
    picks very different alphas (at least 3 distinct ones over vertices and folds), and each
    is the one scikit-learn's Ridge finds with the same contiguous inner folds (up to exact
    ties), with the same predictions and ceiling."""
    rng = np.random.default_rng(7)
    n, segments, delays = 160, [90, 70], [0, 1, 2]
    levels = np.array([0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0, 3.0])
    V = levels.size
    P = rng.standard_normal((n, V))
    drive = 0.7 * np.roll(P, 1, axis=0) + 0.3 * np.roll(P, 2, axis=0)
    Y = (levels * drive + rng.standard_normal((n, V))).astype(np.float32)
    P = P.astype(np.float32)
    kw = dict(n_folds=4, n_inner=5)
    ref_r, folds = _sk_ceiling(P, Y, segments, delays, **kw)
    r = nc.ceiling_scores(P, Y, segments, delays=delays, alphas=FULL_ALPHAS, n_folds=4,
                          n_inner_folds=5)
    np.testing.assert_allclose(r, ref_r, rtol=1e-6, atol=1e-7)
    chosen = []
    for train, test, Dz, err, pred in folds:
        ours, best = ridge_cv_per_target(Dz, Y.astype(np.float64), train, test, FULL_ALPHAS, 5)
        idx = np.searchsorted(FULL_ALPHAS, best)
        np.testing.assert_allclose(FULL_ALPHAS[idx], best)
        # the chosen alpha's reference error is the minimum (exact ties aside)
        got = err[idx, np.arange(V)]
        np.testing.assert_allclose(got, err.min(0), rtol=1e-9)
        np.testing.assert_allclose(ours, pred, rtol=1e-7, atol=1e-9)
        chosen.append(best)
    chosen = np.array(chosen)
    assert len(np.unique(chosen)) >= 3, np.unique(chosen)
    assert (chosen[:, 0] > chosen[:, -1]).all()         # noise: more shrinkage than signal


def test_ceiling_matches_sklearn_with_gap_groups_and_unequal_inner_folds():
    """Before/after check of the ceiling (kept when its solver moved to
    mapping.ridge_cv_per_target): whole-run outer folds with a gap, inner folds of unequal
    sizes (the blocks' squared errors summed, each inner fold weighted by its size), equal to
    the scikit-learn reference vertex by vertex."""
    rng = np.random.default_rng(11)
    n, segments, delays = 183, [61, 50, 72], [0, 1, 3]
    levels = np.array([0.0, 0.05, 0.15, 0.4, 1.0, 2.5])
    P = rng.standard_normal((n, levels.size))
    Y = (levels * np.roll(P, 1, axis=0) + rng.standard_normal((n, levels.size)))
    P, Y = P.astype(np.float32), Y.astype(np.float32)
    groups = np.repeat(np.arange(len(segments)), segments)
    folds = contiguous_folds(n, 3, groups=groups, gap_trs=4)
    assert any(len(tr) % 5 for tr, _ in folds)          # unequal inner folds somewhere
    ref, _ = _sk_ceiling(P, Y, segments, delays, 3, 5, folds=folds, summed=True)
    r = nc.ceiling_scores(P, Y, segments, delays=delays, alphas=FULL_ALPHAS, n_folds=3,
                          groups=groups, gap_trs=4, n_inner_folds=5, batch=4)
    np.testing.assert_allclose(r, ref, rtol=1e-6, atol=1e-7)


def test_ceiling_fit_logs_its_progress(caplog):
    """The ceiling's ridge writes what it fits and, after the last batch of each fold, the
    fold, the targets done and an ETA (as the encoding fits do)."""
    import logging

    rng = np.random.default_rng(0)
    P = rng.standard_normal((60, 12)).astype(np.float32)
    Y = (P + rng.standard_normal((60, 12))).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="brainpred.mapping"):
        nc.ceiling_scores(P, Y, [60], delays=[0, 1], alphas=np.logspace(-1, 2, 3), n_folds=3,
                          n_inner_folds=3, batch=5)
    lines = [r.getMessage() for r in caplog.records]
    assert any("ridge (per target): 60 TRs, 12 targets" in m for m in lines)
    folds = [m for m in lines if m.startswith("ridge: fold") and "ETA" in m]
    assert [m.split(",")[0] for m in folds] == ["ridge: fold 1/3", "ridge: fold 2/3",
                                                "ridge: fold 3/3"]
    assert "targets 12/12" in folds[-1] and "100% done" in folds[-1]
