"""Analyses as conditions: conditions, control sources, block designs, the group step."""

import numpy as np
import pandas as pd
import pytest
from factories import config, runs, story

from brainpred import conditions, design, group, mapping
from brainpred.conditions import Block, Condition
from brainpred.design import WordSources, subject_design
from brainpred.errors import ConfigError
from brainpred.stages.common import read_fits


def _config(**sections):
    return config(**{"forecast": {"distances": [-2, 0, 3], "width": 3},
                     "features": {"layer": 2},
                     "stats": {"ci": 0.95, "fdr_q": 0.05, "dstar_mask": "ci_best"}, **sections})


_story, _runs = story, runs


def test_layer_conditions_pair_each_layer_with_its_window():
    cfg = _config(layers={"enabled": True, "layers": [0, 3], "distance": 3})
    conds = conditions.conditions("layers", cfg, n_layers=4)
    assert [c.name for c in conds] == ["layer-0", "layer-0_d-3", "layer-3", "layer-3_d-3"]
    fc = conds[3]
    assert fc.blocks == (Block("acts", 3), Block("acts", 3, 3, 3))
    assert (fc.measure, fc.series, fc.x, fc.baseline) == ("forecastscore", "layer", 3,
                                                          "layer-3")
    assert len(conditions.conditions("layers", _config(layers={"layers": "all"}), 4)) == 10
    with pytest.raises(ConfigError, match="layers.layers"):
        conditions.conditions("layers", _config(layers={"layers": [7]}), n_layers=4)


def test_control_conditions_kinds_distances_and_widths():
    cfg = _config(controls={"enabled": True, "distances": [0, 3], "widths": [1, 4],
                            "generated": {"enabled": True}})
    conds = conditions.conditions("controls", cfg, n_layers=4, width_distance=3)
    names = [c.name for c in conds]
    assert names[0] == "base"
    for kind in ("true", "random", "shuffled", "generated"):
        assert f"{kind}_d-0" in names and f"{kind}_d-3" in names
    width4 = conds[names.index("width-4")]
    assert width4.blocks[1] == Block("acts", 2, 3, 4) and width4.measure == "widthscore"
    no_random = _config(controls={"random": False, "shuffled": False, "distances": None})
    kinds = {c.series for c in conditions.conditions("controls", no_random, 4)}
    assert kinds == {"base", "true"}
    with pytest.raises(ValueError, match="width_distance"):
        conditions.conditions("controls", cfg, n_layers=4)
    with pytest.raises(ConfigError, match="unknown analysis"):
        conditions.conditions("nope", cfg, n_layers=4)


def test_random_vectors_match_each_unit_variance_with_zero_mean():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20000, 3)) * [1.0, 5.0, 0.1] + [0.0, 2.0, -1.0]
    r = design.random_vectors(x, seed=[0, 1])
    assert r.shape == x.shape and r.dtype == np.float32
    np.testing.assert_allclose(r.mean(0), 0, atol=0.1)
    np.testing.assert_allclose(r.std(0), x.std(0), rtol=0.05)
    assert abs(np.corrcoef(r[:, 1], x[:, 1])[0, 1]) < 0.05
    np.testing.assert_array_equal(r, design.random_vectors(x, seed=[0, 1]))


def test_shuffled_vectors_is_a_seeded_row_permutation():
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    s = design.shuffled_vectors(x, seed=3)
    assert sorted(map(tuple, s)) == sorted(map(tuple, x))
    assert not np.array_equal(s, x)
    np.testing.assert_array_equal(s, design.shuffled_vectors(x, seed=3))


def test_block_design_equals_subject_design_and_sums_words_per_tr():
    acts, words = _story()
    runs = _runs()
    src = WordSources({"a": words}, {"a": acts})
    blocks = [Block("acts", 2), Block("acts", 2, 3, 3), Block("acts", 1, -2, 2)]
    arrays, lengths, groups = design.block_design(runs, src, blocks)
    X, windows, lengths2, _ = subject_design(runs, {"a": (acts, words)}, 2, [3], width=3)
    np.testing.assert_array_equal(arrays[0], X)
    np.testing.assert_array_equal(arrays[1], windows[3])
    expected = design.words_to_trs(design.forecast_windows(acts[1], -2, 2),
                                   words["start"].to_numpy(), 1.5, 60)
    np.testing.assert_allclose(arrays[2], expected, rtol=1e-6)
    assert lengths == lengths2 == [60] and groups.tolist() == [0] * 60


def test_semantic_plus_syntactic_is_the_activation():
    acts, words = _story()
    syn = np.random.default_rng(5).standard_normal(acts.shape).astype(np.float32)
    src = WordSources({"a": words}, {"a": acts}, syntactic={"a": syn})
    total = src.vectors("a", "syntactic", 2) + src.vectors("a", "semantic", 2)
    np.testing.assert_allclose(total, acts[2], atol=1e-6)


def test_design_scores_equal_encoding_scores_per_design():
    rng = np.random.default_rng(0)
    n = 120
    A = rng.standard_normal((n, 6)).astype(np.float32)
    B = rng.standard_normal((n, 8)).astype(np.float32)
    C = rng.standard_normal((n, 4)).astype(np.float32)
    Y = (A[:, :2] @ rng.standard_normal((2, 5)) + C[:, :1] + rng.standard_normal((n, 5)))
    Y = Y.astype(np.float32)
    kw = dict(n_components=3, delays=[0, 1], n_folds=3, alphas=np.logspace(-1, 3, 5))
    designs = [(0,), (0, 1), (0, 2), (2,)]
    got = mapping.design_scores([A, B, C], designs, [Y, Y[:, :3]], [n], **kw)
    for j, d in enumerate(designs):
        ref = mapping.encoding_scores([[A, B, C][i] for i in d], Y, [n], **kw)
        np.testing.assert_allclose(got[0][j], ref, atol=1e-5)
        np.testing.assert_allclose(got[1][j], ref[:3], atol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        mapping.design_scores([A], [(0, 1)], [Y], [n], **kw)


def test_measures_subtract_the_baseline():
    conds = [Condition("base", (), "brainscore", "base"),
             Condition("k-1", (), "forecastscore", "layer", 1.0, "base"),
             Condition("k-0", (), "forecastscore", "layer", 0.0, "base"),
             Condition("helper", ())]
    scores = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3)
    per = conditions.measures(conds, scores)
    assert set(per) == {("brainscore", "base"), ("forecastscore", "layer")}
    xs, maps = per[("forecastscore", "layer")]
    assert xs.tolist() == [0.0, 1.0]
    np.testing.assert_array_equal(maps[:, 0], scores[:, 2] - scores[:, 0])
    np.testing.assert_array_equal(maps[:, 1], scores[:, 1] - scores[:, 0])


def test_argmax_map_known_answer_and_masks():
    rng = np.random.default_rng(0)
    S, V = 10, 4
    maps = rng.normal(0, 0.01, (S, 3, V))
    maps[:, 2, 0] += 0.5          # vertex 0: x = 2, reliable
    maps[:, 0, 1] += 0.5          # vertex 1: x = 0, reliable
    maps[:, 1, 2] += rng.normal(0, 1, S)   # vertex 2: noisy maximum
    xs = np.array([0.0, 4.0, 8.0])
    best, best_all, mask = group.reliable_argmax(maps, xs, mode="ci_best")
    assert best[0] == 8.0 and best[1] == 0.0
    assert mask[0] and mask[1] and not mask[3]
    assert np.isnan(best[3]) and np.isfinite(best_all[3])
    best, _, mask = group.reliable_argmax(maps, xs, mode="none",
                                        responsive=np.array([True, False, True, True]))
    assert mask.tolist() == [True, False, True, True]
    best, _, mask = group.reliable_argmax(maps, xs, mode="fdr", q=0.05)
    assert mask[0] and mask[1] and not mask[3]
    with pytest.raises(ConfigError, match="dstar_mask"):
        group.reliable_argmax(maps, xs, mode="bogus")


def test_layer_sweep_recovers_a_planted_layer(tmp_path):
    """Targets driven by the window of layer 1 of a toy 'model' whose layers differ: the
    forecast score peaks at layer 1 and k* = 1 on the driven vertices."""
    from brainpred import io

    rng = np.random.default_rng(0)
    n_layers, dim, n_words = 3, 6, 400
    base = rng.standard_normal((n_words, dim))
    acts = np.stack([base + 1.2 * rng.standard_normal((n_words, dim))
                     for _ in range(n_layers + 1)]).astype(np.float32)
    starts = np.arange(n_words) * 0.6 + 1.0
    words = pd.DataFrame({"word": ["w"] * n_words, "start": starts, "end": starts + 0.3})
    n_trs = int(starts[-1] / 1.5) + 4
    src = WordSources({"a": words}, {"a": acts})
    cfg = _config(layers={"enabled": True, "layers": "all", "distance": 3},
                  mapping={"n_components": 4, "delays": [0, 1], "n_folds": 4,
                           "alphas": {"start": -1, "stop": 4, "num": 6}})
    conds = conditions.conditions("layers", cfg, n_layers)
    blocks, designs = conditions.blocks_and_designs(conds)
    runs = _runs(n_trs=n_trs)
    arrays, lengths, _ = design.block_design(runs, src, blocks)
    W1 = design.words_to_trs(design.forecast_windows(acts[1] @ np.ones(dim), 3, 3)
                             .sum(1, keepdims=True), starts, 1.5, n_trs)[:, 0]
    Y_list = []
    for s in range(6):
        Y = np.random.default_rng(s + 10).standard_normal((n_trs, 8)) * 0.5
        Y[:, :4] += W1[:, None] / W1.std()
        Y_list.append(Y.astype(np.float32))
    scores = mapping.design_scores(arrays, designs, Y_list, lengths, n_components=4,
                                   delays=[0, 1], n_folds=4, alphas=np.logspace(-1, 4, 6))
    fits = []
    for s, sc in enumerate(scores):
        path = tmp_path / f"fit-{s}.npz"
        import json
        from dataclasses import asdict

        from brainpred import provenance as prov
        io.save_npz(path, conditions=np.array([c.name for c in conds]),
                    conditions_json=np.array(json.dumps([asdict(c) for c in conds])),
                    subjects=np.array([f"sub-{s:03d}"]), analysis=np.array("layers"),
                    provenance=prov.to_array(prov.scores_record(
                        "analysis_fit", [f"sub-{s:03d}"], analysis="layers", model="test")),
                    **{f"sub-{s:03d}__scores": sc})
        fits.append(path)
    conds, subjects, scores, _ = read_fits(fits, "layers")
    g, per = group.analysis_group(conds, scores, "layers", cfg["stats"])
    assert len(subjects) == 6
    assert np.all(g["kstar_all"][:4] == 1)
    assert np.all(g["kstar"][:4] == 1)
    assert np.all(np.isnan(g["kstar"][4:]))
    mean_f = g["forecastscore__layer__mean"]
    assert mean_f[1, :4].min() > 0.1


def test_reliable_argmax_tests_the_reference_contrast_in_every_distance_sweep():
    """``ci`` and ``fdr`` mean F(d1) - F(d0) wherever a sweep holds both reference distances
    (the main d*, the syntactic / semantic d*), the measure at the best x elsewhere (k*)."""
    rng = np.random.default_rng(4)
    S, V = 12, 3
    maps = rng.normal(0, 0.01, (S, 3, V))
    maps[:, 2, 0] += 0.3                 # vertex 0: F(8) above F(0): best at 8, contrast > 0
    maps[:, 1, 1] += 0.3                 # vertex 1: best at 4, F(8) - F(0) is noise
    xs = np.array([0, 4, 8])
    _, _, ci = group.reliable_argmax(maps, xs, mode="ci", reference=(0, 8))
    _, _, best = group.reliable_argmax(maps, xs, mode="ci_best", reference=(0, 8))
    _, _, no_ref = group.reliable_argmax(maps, xs, mode="ci")
    _, _, fdr = group.reliable_argmax(maps, xs, mode="fdr", q=0.05, reference=(0, 8))
    assert ci.tolist()[:2] == [True, False] and fdr.tolist()[:2] == [True, False]
    assert best.tolist()[:2] == [True, True] and no_ref.tolist()[:2] == [True, True]
    _, _, absent = group.reliable_argmax(maps, xs, mode="ci", reference=(0, 15))
    assert absent.tolist()[:2] == [True, True]          # 15 not swept: best-x test


def test_best_group_distance_reads_the_responsive_vertices():
    brain_low = np.array([0.1, 0.1, -0.2])
    brain = np.array([0.3, 0.3, 0.0])
    F = np.array([[0.0, 0.0, 0.9], [0.02, 0.01, 0.0], [0.01, 0.03, 0.0]])   # (n_d, V)
    assert group.best_group_distance(brain_low, brain, F, np.array([0, 4, 8])) == 8
    assert group.best_group_distance(np.full(3, -1.0), brain, F, np.array([0, 4, 8])) == 0
    from brainpred.stages.analyses import best_distance_from_group

    with pytest.raises(ConfigError, match="width_distance"):
        best_distance_from_group(None, _config())
    assert best_distance_from_group(None, _config(controls={"width_distance": 5})) == 5
