"""The paper's method beside this run's (analysis ``variants``) and variance partitioning
(analysis ``partition``): conditions, the signed-R² measures, the per-penalty fit loop, planted
partitions and the paper table's per-method rows."""

import numpy as np
import pandas as pd
import pytest
from factories import config, fit_config, fit_inputs

from brainpred import conditions, group, mapping
from brainpred.comparison import RESPONSIVE, paper_comparison
from brainpred.conditions import Block, Condition
from brainpred.stages import mapping as mapping_stage


def _config(penalty="shared", nuisance=(), **sections):
    return config(**{"forecast": {"distances": [0, 3], "width": 3}, "features": {"layer": 2},
                     "controls": {"distances": [3], "random": True, "shuffled": False},
                     "mapping": {"penalty": penalty}, "nuisance": list(nuisance), **sections})


@pytest.mark.parametrize("penalty, nuisance, expected", [
    ("shared", [], ["paper"]),
    ("banded", [], ["paper", "banded"]),
    ("shared", ["word_rate"], ["paper", "nuisance"]),
    ("banded", ["word_rate"], ["paper", "banded", "nuisance", "banded-nuisance"]),
])
def test_methods_and_when_the_variants_analysis_runs(penalty, nuisance, expected):
    cfg = _config(penalty, nuisance)
    assert [m for m, _, _ in conditions.methods(cfg)] == expected
    assert conditions.enabled(cfg, "variants") == (len(expected) > 1)


def test_variant_conditions_fit_the_papers_method_beside_the_runs():
    cfg = _config("banded", ["word_rate", "word_length"])
    conds = {c.name: c for c in conditions.conditions("variants", cfg, n_layers=4)}
    X, W3 = Block("acts", 2), Block("acts", 2, 3, 3)
    N = (Block("nuisance:word_rate", 0), Block("nuisance:word_length", 0))
    assert conds["paper_d-3"].blocks == (X, W3) and conds["paper_d-3"].penalty == "shared"
    assert conds["paper_base"].blocks == (X,)
    assert conds["banded_d-3"].blocks == (X, W3) and conds["banded_d-3"].penalty == "banded"
    assert conds["nuisance_d-3"].blocks == (X, W3, *N)
    assert conds["nuisance_d-3"].penalty == "shared"
    assert conds["banded-nuisance_base"].blocks == (X, *N)
    r = conds["banded-nuisance_random_d-3"]
    assert r.blocks == (X, Block("random", 2, 3, 3), *N)
    assert (r.measure, r.series, r.x, r.baseline) == ("forecastscore", "banded-nuisance-random",
                                                       3, "banded-nuisance_base")
    # the run's own method is exactly the main analysis: same blocks in the same order
    main = conditions.conditions("main", cfg, n_layers=4)
    assert [c.blocks for c in main] == [conds["banded-nuisance_base"].blocks,
                                        conds["banded-nuisance_d-0"].blocks,
                                        conds["banded-nuisance_d-3"].blocks]
    assert all(c.penalty == "" for c in main)


def test_partition_conditions_and_signed_r2_measures():
    cfg = _config(nuisance=["word_rate"], partition={"enabled": True, "distances": [3]})
    conds = conditions.conditions("partition", cfg, n_layers=4)
    names = [c.name for c in conds]
    assert names == ["base", "d-3", "window_d-3"]
    assert all(c.penalty == "banded" for c in conds)
    assert conds[2].blocks == (Block("acts", 2, 3, 3),)            # B = W_d alone
    assert conds[1].blocks[-1] == Block("nuisance:word_rate", 0)   # A + B holds the nuisance
    # scores r of A, A+B, B for 2 subjects x 3 vertices
    rA = np.array([[0.3, 0.2, -0.1], [0.4, 0.0, 0.1]])
    rAB = np.array([[0.5, 0.2, 0.2], [0.5, 0.1, 0.1]])
    rB = np.array([[0.4, 0.1, 0.3], [0.2, 0.1, -0.2]])
    per = conditions.measures(conds, np.stack([rA, rAB, rB], axis=1))
    r2 = lambda r: r * np.abs(r)                                        # noqa: E731
    np.testing.assert_allclose(per[("unique", "window")][1][:, 0], r2(rAB) - r2(rA),
                               atol=1e-12)
    np.testing.assert_allclose(per[("shared", "window")][1][:, 0],
                               r2(rA) + r2(rB) - r2(rAB), atol=1e-12)
    np.testing.assert_allclose(per[("brainscore", "window")][1][:, 0], rB)   # raw r of W_d
    assert list(per[("unique", "window")][0]) == [3.0]


def _planted(rng, n=600, p=8):
    """Present features X, a window W with a part of its own, and targets: columns 0-3 driven
    by W's own part (unique to W), 4-7 by a part X and W share, 8-11 by X alone."""
    common = rng.standard_normal((n, 2))
    own = rng.standard_normal((n, 2))
    X = np.hstack([common, rng.standard_normal((n, p - 2))])
    W = np.hstack([common, own, rng.standard_normal((n, p - 4))])
    Y = rng.standard_normal((n, 12))
    Y[:, 0:4] += own @ rng.standard_normal((2, 4)) * 1.5
    Y[:, 4:8] += common @ rng.standard_normal((2, 4)) * 1.5
    Y[:, 8:12] += X[:, 2:4] @ rng.standard_normal((2, 4)) * 1.5
    return X.astype(np.float32), W.astype(np.float32), Y.astype(np.float32)


def test_partition_recovers_planted_unique_and_shared_variance():
    cfg = _config(partition={"enabled": True, "distances": [3]})
    conds = conditions.conditions("partition", cfg, n_layers=4)
    subjects = [_planted(np.random.default_rng(s)) for s in range(3)]
    scores = []
    for X, W, Y in subjects:
        # blocks in the order of the conditions: X, W (no nuisance)
        s = mapping.design_scores([X, W], [(0,), (0, 1), (1,)], [Y], n_components=8,
                                  delays=[0], n_folds=4, penalty="banded")[0]
        scores.append(s)
    per = conditions.measures(conds, np.stack(scores))
    unique = per[("unique", "window")][1][:, 0].mean(0)
    shared = per[("shared", "window")][1][:, 0].mean(0)
    assert unique[0:4].min() > 0.2 and shared[0:4].max() < 0.05
    assert shared[4:8].min() > 0.2 and np.abs(unique[4:8]).max() < 0.05
    assert np.abs(unique[8:12]).max() < 0.05 and np.abs(shared[8:12]).max() < 0.05


def test_fit_loop_fits_each_condition_with_its_own_penalty(tmp_path):
    """Conditions with another penalty than mapping.penalty are fitted in their own call and
    land in their own rows: each row equals design_scores of that design alone."""
    from brainpred import io
    from brainpred.design import WordSources, block_design
    from brainpred.stages.common import load_story_features, mapping_kwargs, subject_bold

    subjects = ["sub-001", "sub-002"]
    inputs = fit_inputs(tmp_path, subjects=subjects, n_vertices=10)
    cfg = fit_config()
    X, W = Block("acts", 1), Block("acts", 1, 2, 3)
    conds = [Condition("base", (X,), "brainscore", "base"),
             Condition("shared", (X, W), "forecastscore", "s", 2, "base"),
             Condition("banded", (X, W), "forecastscore", "b", 2, "base", penalty="banded")]
    table = io.read_tsv(tmp_path / "runs.tsv", dtype={"run": str})
    feats, _ = load_story_features(inputs["features"], ["a"])
    sources = WordSources({s: w for s, (_, w) in feats.items()},
                          {s: a for s, (a, _) in feats.items()})
    scores = mapping_stage.fit_conditions(conds, subjects, table, sources, inputs["bold"], cfg)
    runs = table[table["kept"] & (table["subject"] == subjects[0])]
    arrays, lengths, groups = block_design(runs, sources, [X, W])
    Y = subject_bold(runs, inputs["bold"], zscore=cfg["mapping"]["zscore_runs"])
    kw = mapping_kwargs(cfg, groups)
    shared = mapping.design_scores(arrays, [(0,), (0, 1)], [Y], lengths,
                                   **{**kw, "penalty": "shared"})[0]
    banded = mapping.design_scores(arrays, [(0, 1)], [Y], lengths,
                                   **{**kw, "penalty": "banded"})[0]
    got = scores[subjects[0]]
    np.testing.assert_allclose(got[:2], shared, atol=1e-6)
    np.testing.assert_allclose(got[2], banded[0], atol=1e-6)
    assert not np.allclose(got[1], got[2])


def test_paper_table_shows_each_method_beside_the_papers():
    subjects = ["sub-1", "sub-2", "sub-3"]
    rows = []
    for i, s in enumerate(subjects):
        for m, peak, dbest, rand in (("paper", 0.30, 8, -0.05), ("banded", 0.31, 4, 0.0)):
            rows.append((s, "bilateral", "A", "brainscore", m, np.nan, peak + 0.01 * i))
            rows.append((s, "bilateral", "B", "brainscore", m, np.nan, 0.1))
            for d in (0, 4, 8):
                rows.append((s, "responsive", RESPONSIVE, "forecastscore", m, float(d),
                             0.02 if d == dbest else 0.0))
            rows.append((s, "responsive", RESPONSIVE, "forecastscore", f"{m}-random", 4.0,
                         rand + 0.001 * i))
    variants = pd.DataFrame(rows, columns=["subject", "level", "region", "measure", "series",
                                           "x", "value"])
    from test_comparison import _config as table_config

    cfg = table_config()
    cfg["mapping"]["penalty"] = "banded"
    scores = pd.DataFrame(columns=["subject", "level", "region", "measure", "distance",
                                   "value"])
    stats_t = pd.DataFrame([("bilateral", "A", "brainscore", np.nan, 3, 0.3, 0.2, 0.4)],
                           columns=["level", "region", "measure", "distance", "n", "mean",
                                    "ci_low", "ci_high"])
    g = {"distances": np.array([0, 4, 8]), "subjects": np.array(subjects), "gain_dstar": 8.0,
         "gain_subjects": np.array([1.0, 2.0, 3.0]), "gain_mask": np.ones(3, bool),
         "gain_F_subjects": np.array([[0.0, 0.0, 0.02]] * 3)}
    t = paper_comparison(g, scores, stats_t, cfg, analyses={"variants": variants})
    t = t.set_index("quantity")
    assert t.loc["peak brain score [paper]", "value"] == pytest.approx(0.31)
    assert t.loc["peak brain score [banded]", "regions"] == "A"
    assert t.loc["forecast distance d* [paper]", "value"] == 8
    assert t.loc["forecast distance d* [banded]", "value"] == 4
    assert t.loc["F(d*) [banded]", "value"] == pytest.approx(0.02)
    assert t.loc["random-window F [paper]", "value"] == pytest.approx(-0.049)
    assert t.loc["random-window F [banded]", "value"] == pytest.approx(0.001)
    assert "banded" in t.loc["F(d*) [banded]", "settings"]
    assert t.loc["forecast distance d* [banded]", "paper"] == "8 words"


def test_best_group_index_reads_the_kept_vertices():
    maps = np.array([[1.0, 0.0, 5.0], [0.0, 2.0, 0.0]])
    assert group.best_group_index(maps) == 0
    assert group.best_group_index(maps, np.array([False, True, False])) == 1
    assert group.best_group_index(np.full((2, 3), np.nan)) == 0


@pytest.mark.parametrize("analysis", ["variants", "partition"])
def test_variants_and_partition_through_their_stages(tmp_path, analysis):
    """The fit, group and figure stages of both analyses as the rules call them, on a small
    fit's cached inputs with the banded penalty and a word-rate nuisance block."""
    from brainpred import io
    from brainpred.stages import analyses as stage

    subjects = ["sub-001", "sub-002", "sub-003"]
    inputs = fit_inputs(tmp_path, subjects=subjects, n_words=60, n_vertices=6)
    cfg = fit_config(penalty="banded", banded_candidates=4)
    cfg["nuisance"] = ["word_rate"]
    cfg["controls"].update(distances=[4], random=True, shuffled=True)
    cfg["partition"].update(enabled=True, distances=[0, 4])
    cfg["dataset"]["source"] = "local"

    def job(step):                   # the sections the rules pass each job
        return {k: cfg[k] for k in conditions.job_sections(analysis, step) if k in cfg}

    fit = tmp_path / f"fit_desc-{analysis}_scores.npz"
    stage.make_analysis_fit(analysis, subjects, inputs["table"], {"acts": inputs["features"]},
                            inputs["bold"], job("fit"), fit)
    z = io.load_npz(fit)
    names = list(z["conditions"])
    if analysis == "variants":
        assert names[:4] == ["paper_base", "paper_d-0", "paper_d-4", "paper_random_d-4"]
        assert len(names) == 4 * 5                     # 4 methods x (base, 2 d, 2 controls)
    else:
        assert names == ["base", "d-0", "window_d-0", "d-4", "window_d-4"]
    assert np.isfinite(z["sub-001__scores"]).all()
    outputs = {"npz": tmp_path / "group.npz", "regions": tmp_path / "regions.tsv",
               "regions_stats": tmp_path / "stats.tsv"}
    if analysis == "partition":
        outputs.update({f"{m}_{h}": tmp_path / f"{m}_{h}.func.gii"
                        for m in ("unique", "shared") for h in "LR"})
    stage.make_analysis_group([fit], analysis, job("group"), outputs)
    table = io.read_tsv(outputs["regions"])
    if analysis == "variants":
        assert {"paper", "banded", "nuisance", "banded-nuisance", "paper-random",
                "banded-shuffled"} <= set(table["series"])
        figs = {k: tmp_path / f"{k}.png" for k in ("variantcurves", "variantcontrols")}
    else:
        assert {"unique", "shared"} <= set(table["measure"])
        import nibabel as nib

        img = nib.load(outputs["unique_L"])
        assert len(img.darrays) == 2                   # one map per distance
        figs = {k: tmp_path / f"{k}.png" for k in ("uniquecurves", "sharedcurves")}
    stage.make_analysis_figures(analysis, outputs["npz"], outputs["regions"], job("figures"),
                                figs)
    assert all(p.stat().st_size > 1000 for p in figs.values())


@pytest.mark.parametrize("analysis", conditions.ANALYSES)
def test_every_analysis_reads_only_the_sections_its_fit_job_gets(analysis):
    """The conditions of each analysis from the config sections rule analysis_fit passes
    (conditions.job_sections): a section read but not passed is a KeyError at run time."""
    cfg = _config("banded", ["word_rate"], models=[{"name": "tiny-gpt2", "layers": [0, 4]}],
                  controls={"distances": [3], "random": True, "shuffled": True,
                            "widths": [1, 3]},
                  finetune={"checkpoints": [], "steps": 2, "alphas": [0.0, 0.5],
                            "eval_layers": [0, 2]},
                  layers={"layers": [0, 2], "distance": 3})
    job = {k: cfg[k] for k in conditions.job_sections(analysis, "fit") if k in cfg}
    conds = conditions.conditions(analysis, job, n_layers=4, width_distance=3,
                                  model_depths={"tinygpt2": 12})
    assert conds
