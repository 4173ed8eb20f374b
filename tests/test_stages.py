"""Stage wiring and the pure pieces it calls: the subject design, BOLD z-scoring, region
tables, fit groups and the shared fit loop, on tiny arrays."""

import numpy as np
import pandas as pd
import pytest
from factories import fit_config, fit_inputs

from brainpred import stats, tables
from brainpred.design import subject_design
from brainpred.errors import ConfigError
from brainpred.plan import fit_groups, fit_label
from brainpred.stages import mapping as mapping_stage
from brainpred.stages.common import load_atlas_labels, ridge_alphas


def _features(n_words, dim=2, n_layers=3, onset0=0.0, step=1.5, seed=0):
    rng = np.random.default_rng(seed)
    acts = rng.standard_normal((n_layers + 1, n_words, dim)).astype(np.float32)
    words = pd.DataFrame({"word": [f"w{i}" for i in range(n_words)],
                          "start": onset0 + step * np.arange(n_words)})
    return acts, words


def _runs(rows):
    return pd.DataFrame(rows, columns=["basename", "story", "audio_onset", "tr", "n_trs"])


def test_subject_design_places_words_on_the_tr_grid():
    acts, words = _features(4, step=1.5)
    runs = _runs([("sub-001_task-a", "a", 3.0, 1.5, 8)])
    X, windows, lengths, groups = subject_design(runs, {"a": (acts, words)}, layer=2,
                                                          distances=[0, 2], width=2,
                                                          tr_offset=1)
    assert lengths == [8] and X.shape == (8, 2)
    np.testing.assert_array_equal(groups, np.zeros(8))
    # word i at scan time 3.0 + 1.5 i -> TR floor(t / 1.5) + 1 = i + 3
    for i in range(4):
        np.testing.assert_allclose(X[i + 3], acts[2, i])
    assert np.all(X[:3] == 0) and np.all(X[7:] == 0)
    # W_2 of word i = [word i+1, word i+2] (zeros past the end)
    W = windows[2]
    assert W.shape == (8, 4)
    np.testing.assert_allclose(W[3], np.concatenate([acts[2, 1], acts[2, 2]]))
    np.testing.assert_allclose(W[5], np.concatenate([acts[2, 3], np.zeros(2)]))
    np.testing.assert_allclose(W[6], 0)


def test_subject_design_concatenates_runs_without_spill_over():
    fa = _features(3, seed=1)
    fb = _features(3, seed=2)
    runs = _runs([("r1", "a", 0.0, 1.5, 5), ("r2", "b", 0.0, 1.5, 6)])
    X, windows, lengths, groups = subject_design(runs, {"a": fa, "b": fb}, layer=1,
                                                          distances=[3], width=1)
    assert lengths == [5, 6] and X.shape == (11, 2)
    np.testing.assert_array_equal(groups, [0] * 5 + [1] * 6)
    # the window of the last words of run 1 never reaches into run 2
    np.testing.assert_allclose(windows[3][:5], 0)
    np.testing.assert_allclose(X[5 + 1], fb[0][1, 0])


def test_subject_design_bad_layer():
    acts, words = _features(3, n_layers=2)
    runs = _runs([("r1", "a", 0.0, 1.5, 5)])
    with pytest.raises(ConfigError, match="features.layer"):
        subject_design(runs, {"a": (acts, words)}, layer=5, distances=[0])


def test_zscore_columns_nan_for_constant_and_medial_wall():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((50, 4)) * 3 + 100
    Y[:, 1] = 7.0
    Y[:, 2] = np.nan
    Z = stats.zscore_columns(Y)
    assert np.all(np.isnan(Z[:, 1])) and np.all(np.isnan(Z[:, 2]))
    np.testing.assert_allclose(Z[:, [0, 3]].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(Z[:, [0, 3]].std(0), 1, atol=1e-5)


def test_region_table(tmp_path):
    from brainpred.regions import write_label_gifti

    names = {0: "other", 1: "auditory", 2: "frontal"}
    lab = np.array([1, 1, 2, 0])
    paths = []
    for h in "LR":
        paths.append(tmp_path / f"hemi-{h}.label.gii")
        write_label_gifti(paths[-1], lab, names)
    R = np.array([0.1, 0.3, 0.5, np.nan, 0.2, 0.2, 0.7, 0.0])
    F = np.stack([R * 0, R * 0.1])
    table = tables.region_table(R, F, [0, 8], *load_atlas_labels(tuple(paths), len(R)))
    bs = table[table["measure"] == "brainscore"].set_index("region")["value"]
    assert bs["whole cortex"] == pytest.approx(np.nanmean(R))
    assert bs["L auditory"] == pytest.approx(0.2)
    assert bs["auditory"] == pytest.approx(np.mean([0.1, 0.3, 0.2, 0.2]))
    assert bs["frontal"] == pytest.approx(0.6)
    fs = table[(table["measure"] == "forecastscore") & (table["region"] == "frontal")]
    np.testing.assert_allclose(fs.sort_values("distance")["value"], [0.0, 0.06])


def test_ridge_alphas():
    a = ridge_alphas({"alphas": {"start": -1, "stop": 8, "num": 10}})
    np.testing.assert_allclose(a, np.logspace(-1, 8, 10))


def test_fit_groups_share_identical_stimulus_sequences():
    plan = pd.DataFrame({
        "subject": ["sub-001", "sub-001", "sub-002", "sub-002", "sub-003", "sub-004", "sub-005"],
        "task": ["a", "b", "a", "b", "a", "a", "a"],
        "story": ["a", "b", "a", "b", "a", "a", "a"],
    })
    ab, a = [("a", "a"), ("b", "b")], [("a", "a")]
    fits = fit_groups(plan, max_subjects=2)
    assert fits == {fit_label(ab, 1, 2): ["sub-001", "sub-002"],
                    fit_label(a, 3, 4): ["sub-003", "sub-004"],
                    fit_label(a, 5, 6): ["sub-005"]}
    assert fit_groups(plan, max_subjects=1) == {
        fit_label(ab if i < 3 else a, i, i): [f"sub-{i:03d}"] for i in range(1, 6)}
    # the labels depend on no other subject: dropping sub-003 or adding sub-009 leaves the
    # other fits as they were
    assert fit_groups(plan[plan["subject"] != "sub-003"], 2) == {
        **{k: v for k, v in fits.items() if "sub-003" not in v},
        fit_label(a, 3, 4): ["sub-004"]}
    more = pd.concat([plan, pd.DataFrame({"subject": ["sub-009"], "task": ["a"],
                                          "story": ["a"]})])
    assert fit_groups(more, 2) == {**fits, fit_label(a, 9, 10): ["sub-009"]}
    assert fit_label(a, 1, 8) == "fit-s001to008seq" + fit_label(a, 3, 4)[-6:]
    assert fit_label(a, 1, 8)[4:].isalnum()


def test_make_fit_scores_shares_identical_designs_only(tmp_path):
    """Subjects with the same design are fitted together, a subject with another audio onset
    apart; each subject's scores equal a fit of that subject alone."""
    from brainpred import io

    subjects = ["sub-001", "sub-002", "sub-003"]
    inputs = fit_inputs(tmp_path, subjects=subjects, onsets=(0.0, 0.0, 3.0), n_vertices=12)
    bold, config = inputs["bold"], fit_config()
    feats = {"a": tmp_path / "a.npz"}
    mapping_stage.make_fit_scores(subjects, tmp_path / "runs.tsv", feats, bold, config,
                             tmp_path / "fit.npz")
    fit = io.load_npz(tmp_path / "fit.npz")
    for sub in subjects:
        mapping_stage.make_fit_scores([sub], tmp_path / "runs.tsv", feats, bold, config,
                                 tmp_path / f"{sub}.npz")
        alone = io.load_npz(tmp_path / f"{sub}.npz")
        for key in ("brain_score", "forecast_brain_score"):
            np.testing.assert_allclose(fit[f"{sub}__{key}"], alone[f"{sub}__{key}"], atol=1e-6)
    outputs = {k: tmp_path / f"out-{k}" for k in ("npz", "regions")}
    outputs.update({k: tmp_path / f"{k}.func.gii" for k in
                    ("brain_L", "brain_R", "forecast_L", "forecast_R")})
    outputs["npz"] = tmp_path / "sub-002_desc-scores.npz"
    outputs["regions"] = tmp_path / "sub-002_regions.tsv"
    mapping_stage.make_subject_scores("sub-002", tmp_path / "fit.npz", outputs)
    scores = io.load_npz(outputs["npz"])
    np.testing.assert_allclose(scores["forecast_score"],
                               fit["sub-002__forecast_brain_score"] - fit["sub-002__brain_score"])


def test_fit_files_keep_the_chosen_alphas(tmp_path, caplog):
    """The main and the analyses' fit files hold ``<subject>__alpha`` (n_conditions, n_folds,
    V), the subject score file ``alpha`` (values of the alpha grid); the fit logs its
    progress; a fit file without alphas (an older run) still makes a subject score file."""
    from brainpred import io
    from brainpred.stages import analyses as analyses_stage

    subjects = ["sub-001", "sub-002"]
    inputs = fit_inputs(tmp_path, subjects=subjects, n_vertices=6)
    config = fit_config()
    grid = ridge_alphas(config["mapping"])
    with caplog.at_level("INFO", logger="brainpred"):
        mapping_stage.make_fit_scores(subjects, inputs["table"], inputs["features"],
                                      inputs["bold"], config, tmp_path / "fit.npz")
    assert any("fold 3/3" in r.getMessage() and "ETA" in r.getMessage()
               for r in caplog.records)
    fit = io.load_npz(tmp_path / "fit.npz")
    assert fit["conditions"].tolist() == ["base", "d-0", "d-4"]
    for sub in subjects:
        a = fit[f"{sub}__alpha"]
        assert a.shape == (3, 3, 6) and a.dtype == np.float32
        assert np.isin(a, grid.astype(np.float32)).all()
    outputs = {k: tmp_path / f"{k}.func.gii" for k in
               ("brain_L", "brain_R", "forecast_L", "forecast_R")}
    outputs.update(npz=tmp_path / "sub-002_desc-scores.npz", regions=tmp_path / "r.tsv")
    mapping_stage.make_subject_scores("sub-002", tmp_path / "fit.npz", outputs)
    scores = io.load_npz(outputs["npz"])
    np.testing.assert_array_equal(scores["alpha"], fit["sub-002__alpha"])
    assert scores["conditions"].tolist() == ["base", "d-0", "d-4"]
    # a fit file written before the alphas were kept still makes a subject score file
    old = {k: v for k, v in fit.items() if not k.endswith("__alpha") and k != "conditions"}
    io.save_npz(tmp_path / "fit.npz", **old)
    mapping_stage.make_subject_scores("sub-002", tmp_path / "fit.npz", outputs)
    assert "alpha" not in io.load_npz(outputs["npz"])
    # an analysis fit keeps them too
    config = {**config, "layers": {"layers": [0, 1], "distance": 4}}
    analyses_stage.make_analysis_fit("layers", subjects, inputs["table"],
                                     {"acts": inputs["features"]}, inputs["bold"], config,
                                     tmp_path / "fit-001_desc-layersfit.npz")
    afit = io.load_npz(tmp_path / "fit-001_desc-layersfit.npz")
    assert afit["sub-001__alpha"].shape == (4, 3, 6)
    assert np.isin(afit["sub-001__alpha"], grid.astype(np.float32)).all()
