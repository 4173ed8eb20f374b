"""Provenance of caches and results: a file made from another story, run, model or fit is
refused with a message naming both, as is a legacy file that records nothing."""

import json
import re
import shutil
from importlib import metadata

import numpy as np
import pandas as pd
import pytest
import factories
from factories import config

from brainpred import io
from brainpred.stages import analyses as stage_analyses
from brainpred.stages import bold as stage_bold
from brainpred.stages import common as stages_common
from brainpred.stages import features as stage_features
from brainpred.stages import mapping as stage_mapping
from brainpred import provenance as prov
from brainpred.errors import DataError
from brainpred.features import load_features, save_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL = {"name": "tiny-gpt2", "seed": 0, "context_tokens": 32, "mode": "exact",
         "min_context": 16, "batch_size": 4, "device": "cpu", "dtype": "float32"}
TEXTS = {"a": "The cat sat on the mat and looked at the old door for a while.",
         "b": "A dog ran in the park while the cold rain fell on the town."}
FIX = "delete it and re-run snakemake"


def _words(folder, story, text):
    spans = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    words = pd.DataFrame({"word": [s[0] for s in spans],
                          "start": 1.0 + 0.6 * np.arange(len(spans)),
                          "char_start": [s[1] for s in spans],
                          "char_end": [s[2] for s in spans]})
    tsv = folder / f"story-{story}_desc-words_table.tsv"
    txt = folder / f"story-{story}_desc-text.txt"
    io.write_tsv(tsv, words)
    txt.write_text(text, encoding="utf-8")
    return tsv, txt


@pytest.fixture(scope="module")
def stories(tmp_path_factory, cache_dir):
    """Words tables, texts and tiny-gpt2 feature caches of two stories (``story -> (tsv,
    txt, npz)``), written by the workflow's own functions."""
    root = tmp_path_factory.mktemp("provenance")
    out = {}
    for story, text in TEXTS.items():
        tsv, txt = _words(root / "words", story, text)
        npz = root / "features" / f"story-{story}_desc-activations.npz"
        stage_features.make_story_features(tsv, txt, MODEL, npz)
        out[story] = (tsv, txt, npz)
    return out


def _raises(fn, *needles):
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg


# --------------------------------------------------------------------------------------------
# feature caches
# --------------------------------------------------------------------------------------------

def test_feature_cache_records_what_it_was_made_from(stories):
    tsv, txt, npz = stories["a"]
    with np.load(npz) as z:
        raw = z[prov.KEY]
    assert raw.ndim == 0 and raw.dtype.kind == "U"         # a JSON string array
    rec = json.loads(str(raw))
    assert rec == load_features(npz)[2]["provenance"]
    assert rec["kind"] == "features" and rec["story"] == "a"
    assert rec["words_sha256"] == prov.sha256_file(tsv)
    assert rec["text_sha256"] == prov.sha256_file(txt)
    assert rec["model"] == "tiny-gpt2" and rec["model_revision"] == "tiny-gpt2 seed 0"
    assert rec["model_settings"] == {"name": "tiny-gpt2", "seed": 0, "context_tokens": 32,
                                     "mode": "exact", "min_context": 16, "dtype": "float32"}
    assert rec["brainpred_version"] == metadata.version("brainpred")


def test_batch_size_and_device_do_not_change_the_recorded_settings(stories, tmp_path):
    other = {**MODEL, "batch_size": 1, "device": "cpu"}
    assert prov.model_settings(other) == prov.model_settings({**MODEL, "batch_size": 64,
                                                              "device": "cuda"})
    assert prov.model_settings({**MODEL, "context_tokens": 64}) != prov.model_settings(MODEL)
    tsv, txt, npz = stories["a"]
    stage_features.make_story_features(tsv, txt, other, tmp_path / "story-a_desc-activations.npz")
    again = load_features(tmp_path / "story-a_desc-activations.npz")[2]["provenance"]
    first = load_features(npz)[2]["provenance"]
    assert again["model_settings"] == first["model_settings"]
    # and the reader accepts the cache under a config differing only in batch size
    stages_common.load_story_features({"a": npz}, ["a"], words_paths={"a": tsv}, model_cfg=other)


def test_matching_feature_caches_pass(stories):
    paths = {s: v[2] for s, v in stories.items()}
    words = {s: v[0] for s, v in stories.items()}
    feats, records = stages_common.load_story_features(paths, ["a", "b"], words_paths=words,
                                                  model_cfg=MODEL)
    assert set(feats) == {"a", "b"} and records["b"]["story"] == "b"
    assert feats["a"][0].shape[1] == len(TEXTS["a"].split())


def test_another_storys_cache_is_refused(stories, tmp_path):
    copy = tmp_path / "story-a_desc-activations.npz"
    shutil.copyfile(stories["b"][2], copy)
    _raises(lambda: stages_common.load_story_features({"a": copy}, ["a"],
                                                 words_paths={"a": stories["a"][0]}),
            copy, "story 'b'", "story 'a'", FIX)
    # the fit job refuses it before fitting anything
    io.write_tsv(tmp_path / "runs.tsv", pd.DataFrame([{
        "subject": "sub-001", "task": "a", "story": "a", "run": "", "basename": "sub-001_task-a",
        "audio_onset": 0.0, "tr": 1.5, "n_trs": 10, "kept": True}]))
    config = {"forecast": {"distances": [0], "width": 1}, "features": {"layer": 1},
              "mapping": {}}
    _raises(lambda: stage_mapping.make_fit_scores(["sub-001"], tmp_path / "runs.tsv", {"a": copy},
                                             {}, config, tmp_path / "fit.npz"),
            copy, "story 'b'", "story 'a'")


def test_cache_of_another_words_table_is_refused(stories, tmp_path):
    tsv = tmp_path / "story-a_desc-words_table.tsv"
    words = io.read_tsv(stories["a"][0])
    words.loc[0, "start"] += 0.5                         # a re-aligned transcript
    io.write_tsv(tsv, words)
    _raises(lambda: stages_common.load_story_features({"a": stories["a"][2]}, ["a"],
                                                 words_paths={"a": tsv}),
            stories["a"][2], "words_sha256", prov.sha256_file(tsv)[:16],
            prov.sha256_file(stories["a"][0])[:16], FIX)


def test_cache_of_other_model_settings_is_refused(stories):
    _raises(lambda: stages_common.load_story_features(
        {"a": stories["a"][2]}, ["a"], model_cfg={**MODEL, "context_tokens": 64}),
        stories["a"][2], 'model_settings {"context_tokens": 32}',
        'model_settings {"context_tokens": 64}')


def test_legacy_feature_cache_is_refused(stories, tmp_path):
    acts, words, meta = load_features(stories["a"][2])
    meta.pop("provenance")
    legacy = tmp_path / "story-a_desc-activations.npz"
    save_features(legacy, acts, words, meta)
    _raises(lambda: stages_common.load_story_features({"a": legacy}, ["a"]),
            legacy, "records no provenance", "story 'a'", FIX)


def test_caches_of_two_models_are_refused(stories, tmp_path):
    acts, words, meta = load_features(stories["b"][2])
    rec = {**meta.pop("provenance"), "model_revision": "tiny-gpt2 seed 1"}
    forged = tmp_path / "story-b_desc-activations.npz"
    save_features(forged, acts, words, meta, provenance=rec)
    _raises(lambda: stages_common.load_story_features({"a": stories["a"][2], "b": forged},
                                                 ["a", "b"]),
            forged, stories["a"][2], "tiny-gpt2 seed 1", "tiny-gpt2 seed 0")


def test_a_features_cache_is_not_a_syntactic_one(stories):
    _raises(lambda: stages_common.load_story_features({"a": stories["a"][2]}, ["a"],
                                                 kind="syntactic_activations"),
            stories["a"][2], "kind 'features'", "kind 'syntactic_activations'")


def _table(path, rows):
    io.write_tsv(path, pd.DataFrame(rows))
    return path


def test_continuations_cache_of_another_story_is_refused(stories, tmp_path):
    out = {}
    for story in ("a", "b"):
        tsv, txt, _ = stories[story]
        out[story] = tmp_path / f"story-{story}_layer-2_desc-continuations.npz"
        stage_analyses.make_story_continuations(tsv, txt, MODEL, config()["controls"], 2, 2,
                                                out[story])
    rec = prov.read(out["a"], io.load_npz(out["a"]))
    assert rec["kind"] == "continuations" and rec["story"] == "a" and rec["layer"] == 2
    assert rec["words_sha256"] == prov.sha256_file(stories["a"][0])
    copy = tmp_path / "copy" / out["a"].name
    copy.parent.mkdir()
    shutil.copyfile(out["b"], copy)
    table = _table(tmp_path / "runs.tsv", [{"subject": "sub-001", "story": "a", "run": "",
                                            "kept": True}])
    cfg = config(model=MODEL, features={"layer": 2}, forecast={"distances": [0]})

    def fit(generated):
        stage_analyses.make_analysis_fit("controls", ["sub-001"], table,
                                         {"acts": {"a": stories["a"][2]},
                                          "generated": generated},
                                         {}, cfg, tmp_path / "fit.npz")

    _raises(lambda: fit({"a": copy}), copy, "story 'b'", "story 'a'", FIX)
    z = io.load_npz(out["a"])
    z.pop(prov.KEY)
    io.save_npz(copy, **z)
    _raises(lambda: fit({"a": copy}), copy, "records no provenance")


def test_finetune_features_record_the_checkpoint(stories, tmp_path):
    from brainpred.lm import load_model

    model, tokenizer = load_model("tiny-gpt2", seed=0, device="cpu")
    ckpt = tmp_path / "checkpoint-3"
    model.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    io.write_json(tmp_path / "manifest.json", {"alpha": 0.5, "model": "tiny-gpt2",
                                               "checkpoints": {"3": str(ckpt)}})
    outs = [tmp_path / "ft" / f"story-{s}_desc-activations.npz" for s in ("a", "b")]
    stage_analyses.make_finetune_features(tmp_path / "manifest.json", 3,
                                    [stories[s][0] for s in ("a", "b")],
                                    [stories[s][1] for s in ("a", "b")], MODEL, outs)
    rec = load_features(outs[0])[2]["provenance"]
    assert rec["kind"] == "finetune_features" and rec["story"] == "a" and rec["step"] == 3
    assert rec["model"] == str(ckpt) and rec["base_model"] == "tiny-gpt2"
    assert rec["model_revision"] == ("config.json sha256 "
                                     + prov.sha256_file(ckpt / "config.json"))
    stages_common.load_story_features({"a": outs[0]}, ["a"], kind="finetune_features",
                                 words_paths={"a": stories["a"][0]})
    copy = tmp_path / "copy.npz"
    shutil.copyfile(outs[1], copy)
    _raises(lambda: stages_common.load_story_features({"a": copy}, ["a"], kind="finetune_features"),
            copy, "story 'b'", "story 'a'")


# --------------------------------------------------------------------------------------------
# BOLD caches
# --------------------------------------------------------------------------------------------

@pytest.fixture()
def bold_caches(tmp_path):
    """Two runs' GIfTIs and BOLD caches (6 and 5 TRs, 3 + 3 vertices)."""
    from brainpred.io import write_func_gifti as _write_gifti

    rng = np.random.default_rng(0)
    rows, out = [], {}
    for sub, n in (("sub-001", 6), ("sub-002", 5)):
        base = f"{sub}_task-a"
        rows.append({"subject": sub, "task": "a", "story": "a", "run": "", "basename": base,
                     "audio_onset": 0.0, "tr": 1.5, "n_trs": n, "kept": True})
        gii = [tmp_path / "gii" / f"{base}_hemi-{h}.func.gii" for h in "LR"]
        for path in gii:
            _write_gifti(path, rng.standard_normal((n + 2, 3)))
        out[base] = (gii, n, tmp_path / "bold" / sub / f"{base}_space-x_desc-clean_bold.npy")
    table = _table(tmp_path / "runs.tsv", rows)
    for base, (gii, _, npy) in out.items():
        stage_bold.make_bold_cache(*gii, table, base, npy)
    return out


def test_bold_cache_sidecar_records_its_sources(bold_caches):
    gii, n, npy = bold_caches["sub-001_task-a"]
    side = io.read_json(npy.with_suffix(".json"))
    assert side["kind"] == "bold_cache" and side["subject"] == "sub-001"
    assert side["basename"] == "sub-001_task-a" and side["n_trs"] == n == 6
    assert side["tr"] == 1.5 and side["n_vertices"] == 6
    assert [s["path"] for s in side["sources"]] == [str(p) for p in gii]
    assert [s["size"] for s in side["sources"]] == [p.stat().st_size for p in gii]
    assert all(s["mtime"] == p.stat().st_mtime for s, p in zip(side["sources"], gii))
    assert side["brainpred_version"] == metadata.version("brainpred")
    y = stages_common.load_run_bold(npy, 6, zscore=False, basename="sub-001_task-a")
    assert y.shape == (6, 6)
    # the basename defaults to the file name's
    assert stages_common.load_run_bold(npy, 6, zscore=False).shape == (6, 6)


def test_another_runs_bold_cache_is_refused(bold_caches):
    _, _, npy1 = bold_caches["sub-001_task-a"]
    _, _, npy2 = bold_caches["sub-002_task-a"]
    shutil.copyfile(npy1, npy2)
    shutil.copyfile(npy1.with_suffix(".json"), npy2.with_suffix(".json"))
    runs = pd.DataFrame({"basename": ["sub-002_task-a"], "n_trs": [5]})
    _raises(lambda: stages_common.subject_bold(runs, {"sub-002_task-a": npy2}),
            npy2, "sub-001_task-a", "sub-002_task-a", "n_trs 6", "n_trs 5", FIX)


def test_bold_array_replaced_under_its_sidecar_is_refused(bold_caches):
    _, _, npy1 = bold_caches["sub-001_task-a"]
    _, _, npy2 = bold_caches["sub-002_task-a"]
    shutil.copyfile(npy2, npy1)                           # 5 TRs under a 6-TR sidecar
    _raises(lambda: stages_common.load_run_bold(npy1, 6, basename="sub-001_task-a"),
            npy1, "(5, 6)", "n_trs 6")


def test_bold_cache_of_another_length_is_refused(bold_caches):
    _, _, npy = bold_caches["sub-001_task-a"]
    _raises(lambda: stages_common.load_run_bold(npy, 4, basename="sub-001_task-a"),
            npy, "n_trs 6", "n_trs 4")


def test_legacy_bold_cache_without_sidecar_is_refused(bold_caches):
    _, _, npy = bold_caches["sub-001_task-a"]
    npy.with_suffix(".json").unlink()
    _raises(lambda: stages_common.load_run_bold(npy, 6, basename="sub-001_task-a"),
            npy, "no sidecar", "sub-001_task-a", FIX)


# --------------------------------------------------------------------------------------------
# score files
# --------------------------------------------------------------------------------------------

FIT_CONFIG = factories.fit_config()


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """Two fits of a 40-word story (fit-001: sub-001, sub-002; fit-002: sub-003) and the
    subject score files, all written by the workflow's functions."""
    tmp = tmp_path_factory.mktemp("fits")
    out = factories.fit_inputs(tmp, subjects=("sub-001", "sub-002", "sub-003"))
    table, bold = out["table"], out["bold"]
    for fit, subjects in (("fit-001", ["sub-001", "sub-002"]), ("fit-002", ["sub-003"])):
        out[fit] = tmp / "fits" / f"{fit}_desc-fitscores.npz"
        stage_mapping.make_fit_scores(subjects, table, out["features"], bold, FIT_CONFIG, out[fit])
        for sub in subjects:
            out[sub] = tmp / sub / f"{sub}_desc-scores.npz"
            stage_mapping.make_subject_scores(sub, out[fit], _subject_outputs(tmp / sub, sub))
    return out


def _subject_outputs(folder, sub):
    outputs = {k: folder / f"{sub}_{k}.func.gii" for k in
               ("brain_L", "brain_R", "forecast_L", "forecast_R")}
    outputs.update(npz=folder / f"{sub}_desc-scores.npz", regions=folder / f"{sub}.tsv")
    return outputs


def test_score_files_record_what_shaped_them(fits):
    rec = prov.read(fits["fit-001"], io.load_npz(fits["fit-001"]))
    assert rec["kind"] == "fit_scores" and rec["subjects"] == ["sub-001", "sub-002"]
    assert rec["stories"] == ["a"] and rec["model"] == "test" and rec["model_revision"] == "r1"
    assert rec["layer"] == 1 and rec["distances"] == [0, 4]
    assert rec["mapping"] == prov.mapping_settings(FIT_CONFIG["mapping"])
    assert "backend" not in rec["mapping"] and rec["mapping"]["n_components"] == 3
    assert rec["design"] == {"tr_offset": 1, "tr_method": "sum", "width": 2}
    assert rec["file"] == "fit-001_desc-fitscores.npz"
    assert rec["brainpred_version"] == metadata.version("brainpred")
    sub = prov.read(fits["sub-002"], io.load_npz(fits["sub-002"]))
    assert sub["kind"] == "subject_scores" and sub["subject"] == "sub-002"
    assert sub["fit"] == "fit-001_desc-fitscores.npz" and sub["layer"] == 1
    _, _, _, subjects = stages_common.read_subject_scores(
        [fits[s] for s in ("sub-001", "sub-002", "sub-003")])
    assert subjects.tolist() == ["sub-001", "sub-002", "sub-003"]


def test_another_fits_file_is_refused(fits, tmp_path):
    copy = tmp_path / "fit-002_desc-fitscores.npz"
    shutil.copyfile(fits["fit-001"], copy)
    _raises(lambda: stage_mapping.make_subject_scores("sub-003", copy,
                                                 _subject_outputs(tmp_path, "sub-003")),
            copy, "fit-001_desc-fitscores.npz", "fit-002_desc-fitscores.npz", FIX)


def test_legacy_fit_file_is_refused(fits, tmp_path):
    z = io.load_npz(fits["fit-002"])
    z.pop(prov.KEY)
    legacy = tmp_path / "fit-002_desc-fitscores.npz"
    io.save_npz(legacy, **z)
    _raises(lambda: stage_mapping.make_subject_scores("sub-003", legacy,
                                                 _subject_outputs(tmp_path, "sub-003")),
            legacy, "records no provenance", FIX)


def test_another_subjects_scores_are_refused(fits, tmp_path):
    copy = tmp_path / "sub-003_desc-scores.npz"
    shutil.copyfile(fits["sub-001"], copy)
    paths = [fits["sub-001"], fits["sub-002"], copy]
    _raises(lambda: stages_common.read_subject_scores(paths),
            copy, "sub-001_desc-scores.npz", "sub-003_desc-scores.npz", FIX)


def test_scores_of_another_layer_or_model_are_refused(fits, tmp_path):
    for field, value, shown in (("layer", 2, "layer 2"), ("model", "gpt2", "model 'gpt2'")):
        z = io.load_npz(fits["sub-003"])
        rec = {**prov.read(fits["sub-003"], z), field: value}
        other = tmp_path / "sub-003_desc-scores.npz"
        io.save_npz(other, **{**z, prov.KEY: prov.to_array(rec)})
        _raises(lambda: stages_common.read_subject_scores([fits["sub-001"], other]),
                other, fits["sub-001"], shown)


def test_legacy_subject_scores_are_refused(fits, tmp_path):
    z = io.load_npz(fits["sub-003"])
    z.pop(prov.KEY)
    legacy = tmp_path / "sub-003_desc-scores.npz"
    io.save_npz(legacy, **z)
    _raises(lambda: stages_common.read_subject_scores([fits["sub-001"], legacy]),
            legacy, "records no provenance", FIX)


@pytest.fixture(scope="module")
def analysis_fits(fits):
    """The layers analysis fitted for both fits by :func:`brainpred.stages.analyses.make_analysis_fit`."""
    config = {**FIT_CONFIG, "layers": {"layers": [0, 1, 2], "distance": 4}}
    out = {}
    for fit, subjects in (("fit-001", ["sub-001", "sub-002"]), ("fit-002", ["sub-003"])):
        out[fit] = fits["dir"] / "layers" / f"{fit}_desc-layersfit.npz"
        stage_analyses.make_analysis_fit("layers", subjects, fits["table"],
                                   {"acts": fits["features"]}, fits["bold"], config, out[fit])
    return out


def test_analysis_fits_record_and_pass(analysis_fits):
    rec = prov.read(analysis_fits["fit-001"], io.load_npz(analysis_fits["fit-001"]))
    assert rec["kind"] == "analysis_fit" and rec["analysis"] == "layers"
    assert rec["subjects"] == ["sub-001", "sub-002"] and rec["layer"] == 1
    assert rec["settings"] == {"layers": [0, 1, 2], "distance": 4}
    assert rec["file"] == "fit-001_desc-layersfit.npz"
    _, subjects, scores, _ = stages_common.read_fits(list(analysis_fits.values()), "layers")
    assert subjects == ["sub-001", "sub-002", "sub-003"] and scores.shape[0] == 3


def test_another_analysis_fit_is_refused(analysis_fits, tmp_path):
    copy = tmp_path / "fit-002_desc-layersfit.npz"
    shutil.copyfile(analysis_fits["fit-001"], copy)
    _raises(lambda: stages_common.read_fits([analysis_fits["fit-001"], copy], "layers"),
            copy, "fit-001_desc-layersfit.npz", FIX)


def test_analysis_fits_of_two_models_are_refused(analysis_fits, tmp_path):
    z = io.load_npz(analysis_fits["fit-002"])
    rec = {**prov.read(analysis_fits["fit-002"], z), "model_revision": "r2"}
    other = tmp_path / "fit-002_desc-layersfit.npz"
    io.save_npz(other, **{**z, prov.KEY: prov.to_array(rec)})
    _raises(lambda: stages_common.read_fits([analysis_fits["fit-001"], other], "layers"),
            other, analysis_fits["fit-001"], "'r2'", "'r1'")


def test_legacy_analysis_fit_is_refused(analysis_fits, tmp_path):
    z = io.load_npz(analysis_fits["fit-002"])
    z.pop(prov.KEY)
    legacy = tmp_path / "fit-002_desc-layersfit.npz"
    io.save_npz(legacy, **z)
    _raises(lambda: stages_common.read_fits([legacy], "layers"), legacy, "records no provenance")


def test_recorded_settings_and_their_defaults_are_the_schemas():
    """The recorded keys are the schema's model / mapping keys that change results, and a key
    left out is recorded at its schema default (no second list of defaults)."""
    from brainpred.config import RUNTIME_KEYS, defaults

    model, mapping = defaults("model"), defaults("mapping")
    assert set(prov.MODEL_SETTINGS) == set(model) - set(RUNTIME_KEYS["model"])
    assert set(prov.MAPPING_SETTINGS) == (set(mapping) - set(RUNTIME_KEYS["mapping"])
                                          - {"shared_subjects"})
    assert prov.model_settings({}) == {k: model[k] for k in prov.MODEL_SETTINGS}
    assert prov.model_settings({})["name"] == "gpt2"           # the schema's, not None
    assert prov.model_settings({"name": None, "seed": 3})["name"] == "gpt2"
    assert prov.mapping_settings({}) == {k: mapping[k] for k in prov.MAPPING_SETTINGS}
    part = prov.mapping_settings({"alphas": {"start": 0}, "backend": "numpy"})
    assert part["alphas"] == {"start": 0, "stop": 8, "num": 10} and "backend" not in part
