"""brainpred.results: tidy tables and named-dimension maps read back from tiny results folders
written here as the stages write them (and once more under other, BIDS-style names)."""

import json

import numpy as np
import pandas as pd
import pytest

from brainpred import io, results
from brainpred import provenance as prov
from brainpred.errors import DataError
from brainpred.results import Map, hemisphere_of, parse_entities

V = 6                                   # vertices: 3 left, 3 right
DISTANCES = [0, 5, 10]
SUBJECTS = ["sub-001", "sub-002"]
REGIONS = [("whole", "whole cortex"), ("bilateral", "auditory"), ("parcel", "L auditory"),
           ("parcel", "R auditory")]


def _value(run, subject, d):
    """A known number per (run, subject, distance): checks that nothing is mixed up."""
    return 0.1 * run + 0.01 * SUBJECTS.index(subject) + 0.001 * (0 if d is None else d + 1)


def _rec(kind, model, layer, **extra):
    return prov.to_array(prov.record(kind, model=model, layer=layer, distances=DISTANCES,
                                     **extra))


def _write_run(root, model, layer, run, renamed=False):
    """One run (model, layer) as the stages write it; ``renamed``: under other names (entities
    reordered, hemi before space, provenance in JSON sidecars, model and layer only in the
    provenance of the score files)."""
    label = f"layer-{layer}_model-{model}" if renamed else f"model-{model}_layer-{layer}"
    # renamed: the subject files' run is known from their provenance only
    scores_dir = root / "derivatives" / f"batch{run}" if renamed else root / "scores" / label
    group_dir = root / "group" / label
    grid = np.logspace(-1, 3, 5).astype(np.float32)
    for s, sub in enumerate(SUBJECTS):
        R = np.full(V, _value(run, sub, None), np.float32)
        F = np.stack([np.full(V, _value(run, sub, d), np.float32) for d in DISTANCES])
        alpha = np.broadcast_to(grid[(np.arange(V) + s) % 5], (4, 3, V)).astype(np.float32)
        arrays = dict(subject=np.array(sub), distances=np.array(DISTANCES), brain_score=R,
                      forecast_brain_score=F + R, forecast_score=F, alpha=alpha,
                      conditions=np.array(["base"] + [f"d-{d}" for d in DISTANCES]))
        rec = _rec("subject_scores", model, layer, subject=sub)
        if renamed:
            stem = f"{sub}_hemi-LR_stat-scores"
            (scores_dir / sub).mkdir(parents=True, exist_ok=True)
            io.save_npz(scores_dir / sub / f"{stem}.npz", **arrays)
            io.write_json(scores_dir / sub / f"{stem}.json", json.loads(str(rec)))
        else:
            io.save_npz(scores_dir / sub / f"{sub}_desc-scores.npz", **arrays,
                        **{prov.KEY: rec})
            rows = [{"subject": sub, "region": r, "measure": "brainscore", "distance": np.nan,
                     "value": _value(run, sub, None)} for _, r in REGIONS]
            io.write_tsv(scores_dir / sub / f"{sub}_desc-regions_scores.tsv", pd.DataFrame(rows))
    rows, stats = [], []
    for level, region in REGIONS:
        for d in [None] + DISTANCES:
            measure = "brainscore" if d is None else "forecastscore"
            vals = [_value(run, sub, d) for sub in SUBJECTS]
            rows += [{"subject": sub, "level": level, "region": region, "measure": measure,
                      "distance": d, "value": v} for sub, v in zip(SUBJECTS, vals)]
            stats.append({"level": level, "region": region, "measure": measure, "distance": d,
                          "n": 2, "mean": np.mean(vals), "ci_low": min(vals),
                          "ci_high": max(vals), "p": 0.5, "q": 0.5})
    name = "group_stat-regions" if renamed else "group_desc-regions"
    io.write_tsv(group_dir / f"{name}_scores.tsv", pd.DataFrame(rows))
    io.write_tsv(group_dir / f"{name}_stats.tsv", pd.DataFrame(stats))
    F = np.stack([np.full(V, np.mean([_value(run, s, d) for s in SUBJECTS])) for d in DISTANCES])
    io.save_npz(group_dir / "group_desc-scores.npz", brain_score=np.arange(V) + 10.0 * run,
                forecast_score=F, dstar=np.full(V, 10.0), gain_mean=np.array(1.5),
                gain_subjects=np.array([1.0, 2.0]), dstar_subjects=np.ones((2, V)),
                distances=np.array(DISTANCES), subjects=np.array(SUBJECTS))
    # a further analysis: layers (x = layer)
    adir = root / "analyses" / label / "layers"
    names = ["layer-0", "layer-0_d-5", "layer-1", "layer-1_d-5"]
    fit = {"conditions": np.array(names), "conditions_json": np.array("[]"),
           "subjects": np.array(SUBJECTS), "analysis": np.array("layers"),
           prov.KEY: _rec("analysis_fit", model, layer, analysis="layers")}
    for s, sub in enumerate(SUBJECTS):
        fit[f"{sub}__scores"] = np.full((4, V), run + s, np.float32)
        fit[f"{sub}__alpha"] = np.ones((4, 3, V), np.float32)
    io.save_npz(adir / "fits" / "fit-001_desc-layers_scores.npz", **fit)
    io.save_npz(adir / "group_desc-layers_scores.npz", subjects=np.array(SUBJECTS),
                analysis=np.array("layers"), responsive=np.ones(V, bool),
                kstar=np.full(V, 1.0), forecastscore__layer__x=np.array([0.0, 1.0]),
                forecastscore__layer__mean=np.stack([np.zeros(V), np.full(V, run)]))
    rows = [{"subject": sub, "level": "whole", "region": "whole cortex",
             "measure": "forecastscore", "series": "layer", "x": k, "value": run + k}
            for sub in SUBJECTS for k in (0, 1)]
    io.write_tsv(adir / "group_desc-layersregions_scores.tsv", pd.DataFrame(rows))


@pytest.fixture(params=[False, True], ids=["names-of-today", "renamed"])
def two_runs(tmp_path, request):
    _write_run(tmp_path, "tiny-gpt2", 8, run=1, renamed=request.param)
    _write_run(tmp_path, "gpt2", 4, run=2, renamed=request.param)
    # files that are no results: skipped
    io.write_tsv(tmp_path / "tables" / "desc-runs_table.tsv", pd.DataFrame({"subject": ["x"]}))
    io.save_npz(tmp_path / "features" / "story-a_desc-activations.npz", acts=np.zeros(3))
    io.write_tsv(tmp_path / "tables" / "desc-paper_comparison.tsv",
                 pd.DataFrame({"quantity": ["peak brain score"], "paper": ["r = 0.23"],
                               "value": [0.2]}))
    return tmp_path


def test_parse_entities():
    assert parse_entities("sub-001_space-fsaverage5_hemi-L_desc-forecastscore.func.gii") == {
        "sub": "001", "space": "fsaverage5", "hemi": "L", "desc": "forecastscore"}
    assert parse_entities("model-tiny-gpt2_layer-8") == {"model": "tiny-gpt2", "layer": "8"}
    assert parse_entities("alpha-0.5") == {"alpha": "0.5"}
    assert parse_entities("group_desc-regions_scores.tsv") == {"desc": "regions"}
    assert parse_entities("results/x/layer-3_model-a.npz") == {"layer": "3", "model": "a"}
    assert hemisphere_of(4).tolist() == ["L", "L", "R", "R"]


def test_map_sel_isel_mean_to_frame():
    values = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    m = Map(values, ("subject", "distance", "vertex"),
            {"subject": np.array(["s1", "s2"]), "distance": np.array([0, 5, 10])},
            {"name": "F"})
    assert m.shape == (2, 3, 4) and m.coords["vertex"].tolist() == [0, 1, 2, 3]
    one = m.sel(distance=5, subject="s2")
    assert one.dims == ("vertex",) and one.values.tolist() == values[1, 1].tolist()
    assert one.attrs == {"name": "F", "distance": 5, "subject": "s2"}
    kept = m.sel(distance=[10, 0])
    assert kept.dims == m.dims and kept.coords["distance"].tolist() == [10, 0]
    np.testing.assert_array_equal(kept.values, values[:, [2, 0]])
    np.testing.assert_array_equal(m.isel(vertex=[0, 3]).values, values[..., [0, 3]])
    np.testing.assert_array_equal(m.mean("subject").values, values.mean(0))
    np.testing.assert_array_equal(m.hemisphere("R").coords["vertex"], [2, 3])
    frame = m.to_frame()
    assert list(frame.columns) == ["subject", "distance", "vertex", "value"]
    assert len(frame) == 24 and frame.iloc[5].tolist() == ["s1", 5, 1, 5.0]
    assert np.asarray(m).shape == (2, 3, 4)
    with pytest.raises(KeyError, match="distance = 7"):
        m.sel(distance=7)
    with pytest.raises(KeyError, match="no dimension 'layer'"):
        m.sel(layer=1)
    with pytest.raises(ValueError, match="dims"):
        Map(values, ("a", "b"), {})


def test_runs_and_tidy_tables(two_runs):
    res = results.load(two_runs)
    runs = res.runs.set_index("model")
    assert sorted(runs.index) == ["gpt2", "tiny-gpt2"]
    assert runs.loc["tiny-gpt2", "layer"] == 8 and runs.loc["gpt2", "layer"] == 4
    assert runs.loc["gpt2", "analyses"] == ["main", "layers"]
    assert runs.loc["gpt2", "n_subjects"] == 2
    scores = res.scores
    assert list(scores.columns) == ["run", "model", "layer", "analysis", "subject", "level",
                                    "region", "hemisphere", "measure", "condition", "x_name",
                                    "x", "distance", "value"]
    main = scores[scores["analysis"] == "main"]
    # the group tables (all subjects, with a level), not the subject tables too
    assert len(main) == 2 * len(SUBJECTS) * len(REGIONS) * (1 + len(DISTANCES))
    row = main[(main["model"] == "gpt2") & (main["subject"] == "sub-002")
               & (main["region"] == "R auditory") & (main["distance"] == 10)]
    assert row["value"].tolist() == pytest.approx([_value(2, "sub-002", 10)])
    assert row[["hemisphere", "condition", "x_name", "level"]].values.tolist() == [
        ["R", "true", "distance", "parcel"]]
    base = main[main["measure"] == "brainscore"]
    assert set(base["condition"]) == {"base"} and base["distance"].isna().all()
    assert set(main.loc[main["region"] == "auditory", "hemisphere"]) == {"both"}
    layers = scores[scores["analysis"] == "layers"]
    assert set(layers["x_name"]) == {"layer"} and layers["distance"].isna().all()
    assert set(layers["condition"]) == {"layer"} and len(layers) == 2 * 2 * 2
    stats = res.stats
    assert {"n", "mean", "ci_low", "ci_high", "p", "q"} <= set(stats.columns)
    assert "subject" not in stats and len(stats) == 2 * len(REGIONS) * 4
    wide = res.compare(measure="forecastscore", region="whole cortex", analysis="main")
    assert sorted(wide.columns) == ["model-gpt2_layer-4", "model-tiny-gpt2_layer-8"]
    assert wide.loc[("main", "whole", "whole cortex", "both", "forecastscore", "true", 5.0),
                    "model-gpt2_layer-4"] == pytest.approx(
        np.mean([_value(2, s, 5) for s in SUBJECTS]))
    by_subject = res.compare("value", measure="brainscore", region="auditory")
    assert by_subject.shape == (1, 2)
    assert res.paper["quantity"].tolist() == ["peak brain score"]
    with pytest.raises(KeyError, match="no column"):
        res.compare(bogus=1)


def test_maps_with_named_dimensions(two_runs):
    res = results.load(two_runs)
    F = res.maps("forecast_score", model="gpt2")
    assert F.dims == ("subject", "distance", "vertex") and F.shape == (2, 3, V)
    assert F.coords["subject"].tolist() == SUBJECTS
    assert F.sel(subject="sub-002", distance=10).values == pytest.approx(
        [_value(2, "sub-002", 10)] * V)
    assert F.attrs["model"] == "gpt2" and F.attrs["layer"] == 4 and F.attrs["n_per_hemi"] == 3
    alpha = res.maps("alpha", layer=8)
    assert alpha.dims == ("subject", "condition", "fold", "vertex")
    assert alpha.coords["condition"].tolist() == ["base", "d-0", "d-5", "d-10"]
    assert alpha.sel(subject="sub-001", condition="base", fold=0).values[0] == pytest.approx(0.1)
    # several runs: a leading run dimension
    both = res.maps("brain_score", level="group")
    assert both.dims == ("run", "vertex") and both.shape == (2, V)
    by_run = dict(zip(both.coords["run"], both.values[:, 0]))
    assert by_run == {"model-gpt2_layer-4": 20.0, "model-tiny-gpt2_layer-8": 10.0}
    g = res.maps("forecast_score", level="group", model="tiny-gpt2")
    assert g.dims == ("distance", "vertex") and g.coords["distance"].tolist() == DISTANCES
    assert res.maps("dstar_subjects", level="group", layer=4).dims == ("subject", "vertex")
    curve = res.maps("forecastscore__layer", level="group", analysis="layers", model="gpt2")
    assert curve.dims == ("x", "vertex") and curve.sel(x=1).values.tolist() == [2.0] * V
    fits = res.maps("scores", analysis="layers", model="gpt2")
    assert fits.dims == ("subject", "condition", "vertex")
    assert fits.sel(subject="sub-002", condition="layer-1").values[0] == 3.0
    assert "forecast_score" in res.map_names(layer=8)
    assert "gain_mean" not in res.map_names("group", layer=8)       # a scalar: not a map
    assert "gain_subjects" not in res.map_names("group", layer=8)
    assert "forecastscore__layer" in res.map_names("group", "layers", layer=8)
    with pytest.raises(DataError, match="its maps are"):
        res.maps("nope", model="gpt2")
    with pytest.raises(DataError, match="no run with"):
        res.maps("brain_score", model="gpt9")
    with pytest.raises(DataError, match="its maps are"):
        res.maps("gain_mean", level="group", model="gpt2")


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="no such results folder"):
        results.load(tmp_path / "missing")
    io.write_tsv(tmp_path / "tables" / "desc-runs_table.tsv", pd.DataFrame({"a": [1]}))
    with pytest.raises(DataError, match="holds no score file"):
        results.load(tmp_path)
