"""The models analysis: several language models in one run (config list ``models``).

Offline (HF_HUB_OFFLINE=1) with the three built-in random test models, all reading the real
GPT-2 tokenizer: ``tiny-gpt2`` (FastGPT2), ``tiny-gptneox`` and ``tiny-llama`` (HuggingFace
forward). References are plain HuggingFace forwards (``output_hidden_states=True``).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from brainpred import conditions, config as bconfig, features, figures, io, lm, tables  # noqa: E402
from brainpred import provenance as prov  # noqa: E402
from brainpred.errors import ConfigError  # noqa: E402
from brainpred.features import read_positions  # noqa: E402
from brainpred.stages import analyses as stage_analyses  # noqa: E402
from brainpred.stages import features as stage_features  # noqa: E402

import factories  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
TOL = dict(atol=1e-5, rtol=1e-5)
TINY = (lm.TINY_GPT2, lm.TINY_GPTNEOX, lm.TINY_LLAMA)


@pytest.fixture(scope="module")
def tiny_models(cache_dir):
    return {name: lm.load_model(name, seed=0, device="cpu") for name in TINY}


def _hf_states(model, ids):
    """States of one sequence by HF's forward: (L + 1, T, dim), layer 0 the token embedding."""
    with torch.inference_mode():
        t = torch.as_tensor(np.asarray(ids, dtype=np.int64))[None]
        out = model(input_ids=t, output_hidden_states=True, use_cache=False)
        emb = model.get_input_embeddings()(t[0])
        return torch.stack([emb] + [h[0] for h in out.hidden_states[1:]]).numpy()


def _story(n_words=30, seed=0):
    """A text and its words table (spans, onsets every 1.2 s)."""
    rng = np.random.default_rng(seed)
    vocab = ["the", "cat", "sat", "on", "a", "mat,", "and", "then", "it", "ran.", "Dogs",
             "bark", "loudly", "at", "night"]
    words = [vocab[i] for i in rng.integers(0, len(vocab), n_words)]
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    text = " ".join(words)
    table = pd.DataFrame({"word": words, "char_start": starts,
                          "char_end": [s + len(w) for s, w in zip(starts, words)],
                          "start": 1.0 + 1.2 * np.arange(n_words)})
    table["end"] = table["start"] + 0.3
    return text, table


# --------------------------------------------------------------------------------------------
# (a), (b), (c): the models and their word features
# --------------------------------------------------------------------------------------------

def test_tiny_models_are_seeded_and_read_the_gpt2_tokenizer(tiny_models):
    ref_tok = lm.gpt2_tokenizer()
    for name, (model, tok) in tiny_models.items():
        assert tok.get_vocab() == ref_tok.get_vocab()
        assert model.config.vocab_size == len(ref_tok) == 50257
        assert (lm.n_layers(model), model.get_input_embeddings().embedding_dim) \
            == lm.tiny_dims(name) == bconfig.model_dims(name)
        assert lm.max_positions(model) == 1024
        assert lm.FastGPT2.supports(model) == (name == lm.TINY_GPT2)
        assert isinstance(lm.states_forward(model), lm.FastGPT2) == (name == lm.TINY_GPT2)
    assert type(tiny_models[lm.TINY_GPTNEOX][0]).__name__ == "GPTNeoXForCausalLM"
    assert type(tiny_models[lm.TINY_LLAMA][0]).__name__ == "LlamaForCausalLM"
    # same seed, same weights; another seed, other weights
    again, _ = lm.load_model(lm.TINY_LLAMA, seed=0, device="cpu")
    other, _ = lm.load_model(lm.TINY_LLAMA, seed=1, device="cpu")
    w0 = tiny_models[lm.TINY_LLAMA][0].get_input_embeddings().weight
    assert torch.equal(again.get_input_embeddings().weight, w0)
    assert not torch.equal(other.get_input_embeddings().weight, w0)


@pytest.mark.parametrize("name", TINY)
def test_batched_forward_equals_plain_hf_to_1e5(tiny_models, name):
    """(a) The forward features use (FastGPT2 for GPT-2, HF otherwise) and hf_states, on a
    right-padded batch read anywhere: HF's hidden states of each sequence alone, to 1e-5."""
    model = tiny_models[name][0]
    rng = np.random.default_rng(0)
    lengths = [20, 13, 7]
    seqs = [rng.integers(0, 50257, size=n) for n in lengths]
    reads = [np.array([2, 7, 19]), np.array([12]), np.array([0, 6])]
    qpos, qvalid = read_positions(reads)
    ids = torch.zeros((3, 20), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(s)
    ref = np.concatenate([_hf_states(model, s)[:, r] for s, r in zip(seqs, reads)], axis=1)
    with torch.inference_mode():
        got = lm.states_forward(model)(ids, lengths, qpos, qvalid).numpy()
        via_hf = lm.hf_states(model, ids, lengths, qpos, qvalid).numpy()
    assert got.shape == (lm.n_layers(model) + 1, 6, 64)
    np.testing.assert_allclose(got, ref, **TOL)
    np.testing.assert_allclose(via_hf, ref, **TOL)


@pytest.mark.parametrize("name", [lm.TINY_GPTNEOX, lm.TINY_LLAMA])
def test_word_features_of_hf_models_equal_a_plain_hf_reference(tiny_models, name):
    """(b) story_features (exact mode, windows of 12 tokens, batches of 3 padded windows) of a
    HF-path model: each word's state at its last token with its past-only window, from plain
    HF forwards one word at a time, to 1e-5."""
    model, tok = tiny_models[name]
    text, words = _story(30)
    got = features.story_features(words, text, model, tok, context_tokens=12, batch_size=3,
                                  mode="exact")
    ids, last = features.word_token_index(text, words["char_start"], words["char_end"], tok)
    ref = np.stack([_hf_states(model, ids[max(0, t - 11):t + 1])[:, -1] for t in last], axis=1)
    assert got.shape == ref.shape == (5, 30, 64)
    np.testing.assert_allclose(got, ref, **TOL)
    strided = features.story_features(words, text, model, tok, context_tokens=12,
                                      batch_size=3, mode="strided", min_context=6)
    head = last < 12          # words of the first window: identical in both modes
    np.testing.assert_allclose(strided[:, head], ref[:, head], **TOL)


def test_local_folder_model_loads_and_gives_the_same_features(tiny_models, tmp_path):
    """(c) A model saved with save_pretrained (with the GPT-2 tokenizer files) loads through
    load_model and gives the in-memory model's features; its dims come from its config."""
    model, tok = tiny_models[lm.TINY_LLAMA]
    folder = tmp_path / "my_llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    loaded, ltok = lm.load_model(str(folder), device="cpu")
    assert type(loaded).__name__ == "LlamaForCausalLM" and ltok.is_fast
    text, words = _story(20, seed=1)
    kw = dict(context_tokens=16, batch_size=4)
    np.testing.assert_allclose(features.story_features(words, text, loaded, ltok, **kw),
                               features.story_features(words, text, model, tok, **kw),
                               atol=1e-6, rtol=0)
    assert bconfig.model_dims(str(folder)) == (4, 64)
    entry = {"name": str(folder), "layers": "all", "seed": 0, "distances": None}
    assert conditions.model_label(entry) == "myllama"


@pytest.mark.parametrize("name", [lm.TINY_GPTNEOX, lm.TINY_LLAMA])
def test_continuations_of_hf_models_batched_equal_one_at_a_time(tiny_models, name):
    """model.name may now be a non-GPT-2 test model: its generated continuations (HF path,
    left-padded batches) equal those computed one word at a time."""
    from brainpred import continuations

    model, tok = tiny_models[name]
    text, words = _story(25, seed=3)
    out = [np.asarray(continuations.generate_continuations(
        words, text, model, tok, 3, context_tokens=12, batch_size=bs, layers=[2])[0])
        for bs in (1, 6)]
    assert out[0].shape == (25, 3, 64)
    np.testing.assert_allclose(out[1], out[0], atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# Config, conditions and the workflow plan
# --------------------------------------------------------------------------------------------

def _models_config(models, **sections):
    return factories.config(models=models, **sections)


def test_enabled_is_true_iff_the_models_list_is_not_empty():
    assert "models" in conditions.ANALYSES
    assert not conditions.enabled(factories.config(), "models")
    cfg = _models_config([{"name": "tiny-llama"}])
    assert conditions.enabled(cfg, "models")
    assert cfg["models"] == [{"name": "tiny-llama", "layers": "all", "seed": 0,
                              "distances": None}]             # item defaults from the schema
    # the other analyses keep their switch
    assert conditions.enabled(cfg, "main") and not conditions.enabled(cfg, "layers")
    assert conditions.enabled(factories.config(layers={"enabled": True}), "layers")


def test_conditions_of_the_models_analysis():
    cfg = _models_config([{"name": "tiny-gpt2", "layers": [0, 4]},
                          {"name": "tiny-llama", "distances": [5, 0]},
                          {"name": "tiny-gptneox", "seed": 2}], layers={"distance": 8})
    entries = conditions.model_entries(cfg)
    assert not any(m["main"] for m in entries)      # model.name is gpt2 (schema default)
    assert [m["label"] for m in entries] == ["tinygpt2", "tinyllama", "tinygptneoxseed2"]
    depths = {"tinygpt2": 12, "tinyllama": 4, "tinygptneoxseed2": 4}
    conds = conditions.conditions("models", cfg, 12, model_depths=depths)
    # tiny-gpt2: 2 layers x (R + F(8)); tiny-llama: 5 layers x (R + F(0), F(5)); neox: 5 x 2
    assert len(conds) == 2 * 2 + 5 * 3 + 5 * 2
    by = {c.name: c for c in conds}
    c = by["tinyllama_layer-3_d-5"]
    assert c.blocks == (conditions.Block("model:tinyllama", 3),
                        conditions.Block("model:tinyllama", 3, 5, 7))
    assert (c.measure, c.series, c.x, c.baseline) == ("forecastscore", "tinyllama_layer-3", 5,
                                                      "tinyllama_layer-3")
    b = by["tinygpt2_layer-4"]
    assert (b.measure, b.series, b.x, b.blocks) == ("brainscore", "tinygpt2", 4,
                                                    (conditions.Block("model:tinygpt2", 4),))
    assert conditions.figure_keys("models", cfg) == ["modelcomparison"]
    assert "modelcomparison" in conditions.FIGURE_CAPTIONS
    # the entry that is model.name itself reuses the main caches
    main = _models_config([{"name": "tiny-gpt2"}], model={"name": "tiny-gpt2"})
    assert conditions.model_entries(main)[0]["main"]
    with pytest.raises(ConfigError, match="label model-tinygpt2 of model.name"):
        conditions.model_entries(_models_config([{"name": "tiny-gpt2"}],
                                                model={"name": "tiny-gpt2", "seed": 3}))
    with pytest.raises(ConfigError, match="same file label"):
        conditions.model_entries(_models_config([{"name": "gpt2"}, {"name": "gpt-2"}]))


@pytest.mark.parametrize("models, match", [
    ([{"name": "tiny-llama"}, {"name": "tiny-llama", "seed": 0}], r"models\[1\].*listed twice"),
    ([{"name": "gpt2", "seed": 1}], r"models\[0\].seed = 1: only the offline test models"),
    ([{"name": "no such model!"}], r"models\[0\].name = 'no such model!': neither"),
    ([{"name": "./missing-folder"}], r"models\[0\].name = './missing-folder'"),
    ([{"name": "tiny-llama", "layers": [0, 5]}], r"models\[0\].layers = \[0, 5\]: \[5\] outside "
                                                 r"the layers 0..4 of 'tiny-llama'"),
    ([{"name": "tiny-llama", "distances": [0, 0]}], r"models\[0\].distances.*more than once"),
])
def test_bad_models_entries_stop_the_run_at_start(models, match):
    cfg = {"dataset": {"source": "synthetic", "root": "data"}, "model": {"name": "tiny-gpt2"},
           "models": models}
    with pytest.raises(ConfigError, match=match):
        bconfig.prepare_config(cfg)


def test_schema_refuses_unknown_entry_keys():
    cfg = {"dataset": {"source": "synthetic", "root": "data"}, "model": {"name": "tiny-gpt2"},
           "models": [{"name": "tiny-llama", "layer": 3}]}
    with pytest.raises(ConfigError, match="models.0"):
        bconfig.prepare_config(cfg)


def _planned_jobs(stdout):
    """``rule -> list of wildcard strings`` of the jobs a dry run plans."""
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", stdout):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if m:
            w = re.search(r"^\s*wildcards: (.*)$", block, flags=re.M)
            jobs.setdefault(m.group(1), []).append(w.group(1) if w else "")
    return jobs


def test_dry_run_plans_each_models_feature_jobs_and_the_analysis(tmp_path):
    """(d) On the demo config, three models plan one feature job per (model, story) for the
    models that are not model.name, the models analysis' fits, group, figures, and the
    report takes its figure."""
    extra = tmp_path / "models.yaml"
    extra.write_text("models: [{name: tiny-gpt2, layers: [0, 4]}, {name: tiny-gptneox, "
                     "layers: all}, {name: tiny-llama, layers: all}]\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BRAINPRED_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(REPO / "config" / "config.yaml"),
         str(extra), "--cores", "1", "-n"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = _planned_jobs(proc.stdout)
    stories = sorted(w for w in jobs["story_features"])
    assert len(stories) == 3
    # tiny-gpt2 (seed 0) is model.name: its caches are story_features'
    assert "model_features_tinygpt2" not in jobs
    assert sorted(jobs["model_features_tinygptneox"]) == stories
    assert sorted(jobs["model_features_tinyllama"]) == stories
    fits = [w for w in jobs["analysis_fit"] if "analysis=models" in w]
    assert len(fits) == len([w for w in jobs["analysis_fit"] if "analysis=layers" in w]) == 3
    assert jobs["analysis_group_models"] == [""] and jobs["analysis_figures_models"] == [""]
    out = proc.stdout
    assert "results/features/model-tinygptneox/story-" in out
    assert "results/tables/model-tinygpt2_layer-8_desc-models_comparison.tsv" in out
    assert re.search(r"rule report:\n\s+input:[^\n]*desc-modelcomparison_plot\.png", out)


# --------------------------------------------------------------------------------------------
# (e) The comparison table and figure, on tiny tables with known answers
# --------------------------------------------------------------------------------------------

def _comparison_scores():
    """Per-subject region table of two models: 'a' (4 blocks) at layers 0, 2, 4 and 'b'
    (2 blocks) at 0, 1, 2; R = 0.1 + 0.01 * layer; F(d) peaks at d = 5 for a's layer 2 and at
    d = 0 elsewhere; 3 subjects with offsets -0.01, 0, 0.01."""
    rows = []
    for s, off in zip(("sub-1", "sub-2", "sub-3"), (-0.01, 0.0, 0.01)):
        for label, layers in (("a", (0, 2, 4)), ("b", (0, 1, 2))):
            for k in layers:
                for region in ("whole cortex", "IFG"):
                    rows.append((s, "key" if region == "IFG" else "whole", region,
                                 "brainscore", label, k, 0.1 + 0.01 * k + off))
                    for d in (0, 5):
                        best = 5 if (label, k) == ("a", 2) else 0
                        rows.append((s, "key" if region == "IFG" else "whole", region,
                                     "forecastscore", f"{label}_layer-{k}", d,
                                     (0.02 if d == best else 0.005) + off))
    return pd.DataFrame(rows, columns=["subject", "level", "region", "measure", "series", "x",
                                       "value"])


def test_model_comparison_table_relative_depth_and_dstar():
    models = [{"label": "a", "name": "model-a", "n_layers": 4},
              {"label": "b", "name": "org/model-b", "n_layers": 2}]
    t = tables.model_comparison(_comparison_scores(), models)
    assert list(t.columns) == tables.MODEL_COMPARISON_COLUMNS
    bs = t[(t["measure"] == "brainscore") & (t["region"] == "IFG")]
    assert bs["label"].tolist() == ["a"] * 3 + ["b"] * 3
    np.testing.assert_allclose(bs["relative_depth"], [0, 0.5, 1, 0, 0.5, 1])
    np.testing.assert_allclose(bs["value"], [0.10, 0.12, 0.14, 0.10, 0.11, 0.12])
    assert bs["distance"].isna().all() and (bs["n"] == 3).all()
    # CI of 3 values -0.01, 0, 0.01 around the mean: t(0.975, 2) * 0.01 / sqrt(3)
    half = 4.302652729911275 * 0.01 / np.sqrt(3)
    np.testing.assert_allclose(bs["ci_high"] - bs["value"], half, rtol=1e-9)
    best = t[(t["measure"] == "forecastscore_dstar") & (t["region"] == "whole cortex")]
    assert list(zip(best["label"], best["layer"], best["distance"])) == [
        ("a", 0, 0), ("a", 2, 5), ("a", 4, 0), ("b", 0, 0), ("b", 1, 0), ("b", 2, 0)]
    np.testing.assert_allclose(best["value"], 0.02)
    assert best["model"].tolist()[-1] == "org/model-b"
    every = t[(t["measure"] == "forecastscore") & (t["label"] == "a") & (t["layer"] == 2)
              & (t["region"] == "IFG")]
    assert every["distance"].tolist() == [0, 5]
    np.testing.assert_allclose(every["value"], [0.005, 0.02])
    # a layer whose F is NaN everywhere has no d* row
    nan = _comparison_scores()
    nan.loc[nan["series"] == "b_layer-1", "value"] = np.nan
    t2 = tables.model_comparison(nan, models)
    assert not ((t2["measure"] == "forecastscore_dstar") & (t2["label"] == "b")
                & (t2["layer"] == 1)).any()


def test_plot_model_comparison_draws_a_png(tmp_path):
    models = [{"label": "a", "name": "model-a", "n_layers": 4},
              {"label": "b", "name": "model-b", "n_layers": 2}]
    t = tables.model_comparison(_comparison_scores(), models)
    out = figures.plot_model_comparison(t, tmp_path / "cmp.png", synthetic=True,
                                        regions=["whole cortex", "IFG", "absent"],
                                        title="models", labels={"a": "model-a"})
    assert out.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="lacks columns"):
        figures.plot_model_comparison(t.drop(columns="ci_low"), tmp_path / "x.png", False)


# --------------------------------------------------------------------------------------------
# The whole analysis at the stage level: features of two models, fit, group, figure
# --------------------------------------------------------------------------------------------

def test_models_analysis_end_to_end_at_the_stage_level(tmp_path, cache_dir):
    """Story features of tiny-gpt2 (the main model) and tiny-llama, the models analysis' fit of
    two subjects, its group step (comparison table) and figure, as the rules call them."""
    text, words = _story(40, seed=2)
    words_tsv, text_txt = tmp_path / "story-a_desc-words_table.tsv", tmp_path / "story-a.txt"
    io.write_tsv(words_tsv, words)
    text_txt.write_text(text, encoding="utf-8")
    cfg = factories.config(
        model={"name": "tiny-gpt2", "device": "cpu", "context_tokens": 16},
        models=[{"name": "tiny-gpt2", "layers": [0, 12]},
                {"name": "tiny-llama", "layers": [0, 2, 4], "distances": [0, 3]}],
        forecast={"distances": [0, 3], "width": 2}, layers={"distance": 3},
        features={"layer": 1, "tr_offset": 1, "tr_method": "sum"},
        mapping={"n_components": 3, "delays": [0, 1], "n_folds": 3, "n_inner_folds": 3,
                 "backend": "numpy", "alphas": {"start": -1, "stop": 3, "num": 5}},
        stats={"dstar_reference": [0, 3]})
    main = tmp_path / "model-tinygpt2" / "story-a_desc-activations.npz"
    stage_features.make_story_features(words_tsv, text_txt, cfg["model"], main)
    llama = tmp_path / "model-tinyllama" / "story-a_desc-activations.npz"
    stage_features.make_model_features(words_tsv, text_txt, cfg["model"],
                                       {"name": "tiny-llama", "seed": 0}, llama)
    rec = prov.read(llama, io.load_npz(llama))
    assert rec["model"] == "tiny-llama" and rec["model_revision"] == "tiny-llama seed 0"
    rows, bold = [], {}
    rng = np.random.default_rng(0)
    for sub in ("sub-001", "sub-002"):
        base = f"{sub}_task-a"
        rows.append({"subject": sub, "task": "a", "story": "a", "run": "", "basename": base,
                     "audio_onset": 0.0, "tr": 1.5, "n_trs": 40, "kept": True})
        bold[base] = tmp_path / f"{base}.npy"
        prov.save_bold(bold[base], rng.standard_normal((40, 6)), sub, base, tr=1.5)
    table = tmp_path / "runs.tsv"
    io.write_tsv(table, pd.DataFrame(rows))
    sources = {"acts": {"a": main}, "words": {"a": words_tsv},
               "models": {"tinygpt2": {"a": main}, "tinyllama": {"a": llama}}}
    fit = tmp_path / "fit-s001to008seqabcdef_desc-models_scores.npz"
    cfg["dataset"]["source"] = "local"

    def job(step):                   # the sections the rules pass each job
        return {k: cfg[k] for k in conditions.job_sections("models", step) if k in cfg}

    stage_analyses.make_analysis_fit("models", ["sub-001", "sub-002"], table, sources, bold,
                                     job("fit"), fit)
    z = io.load_npz(fit)
    assert [m["n_layers"] for m in json.loads(str(z["models_json"]))] == [12, 4]
    assert len(z["conditions"]) == 2 * 2 + 3 * 3
    assert np.isfinite(z["sub-001__scores"]).all()
    outputs = {"npz": tmp_path / "group.npz", "regions": tmp_path / "regions.tsv",
               "regions_stats": tmp_path / "stats.tsv", "comparison": tmp_path / "cmp.tsv"}
    stage_analyses.make_analysis_group([fit], "models", job("group"), outputs)
    comp = io.read_tsv(outputs["comparison"])
    assert set(comp["label"]) == {"tinygpt2", "tinyllama"}
    got = comp[comp["measure"] == "brainscore"][["label", "layer", "relative_depth"]]
    assert list(map(tuple, got.to_numpy())) == [("tinygpt2", 0, 0.0), ("tinygpt2", 12, 1.0),
                                                ("tinyllama", 0, 0.0), ("tinyllama", 2, 0.5),
                                                ("tinyllama", 4, 1.0)]
    dstar = comp[comp["measure"] == "forecastscore_dstar"]
    assert set(dstar["distance"]) <= {0, 3} and len(dstar) == 5
    # d* is the argmax of the group-mean F of the same model, layer and region
    every = comp[comp["measure"] == "forecastscore"]
    for r in dstar.itertuples():
        f = every[(every["label"] == r.label) & (every["layer"] == r.layer)]
        assert r.value == f["value"].max()
    fig = {"modelcomparison": tmp_path / "desc-modelcomparison_plot.png"}
    stage_analyses.make_analysis_figures("models", outputs["npz"], outputs["regions"],
                                         job("figures"), fig)
    assert fig["modelcomparison"].read_bytes().startswith(b"\x89PNG")
