"""The GPU code path, tested on CPU, and its CUDA-only counterpart.

Every function of brainpred that takes a ``device``, a ``dtype`` or a mapping ``backend`` is
run here on its torch path with explicit CPU arguments (``"cpu"`` and ``torch.device("cpu")``;
the himalaya ``"torch"`` backend, which runs on the CPU) and compared with the default / numpy
path; bfloat16 is checked against float32 on CPU with a model cast by hand (``load_model``
refuses half precision on CPU by design, tested separately).

The tests marked ``cuda`` run only where ``torch.cuda.is_available()`` (they are skipped
elsewhere); ``benchmarks/gpu_check.sh`` runs them on a GPU machine, with the CUDA-vs-CPU
comparisons and the GPU benchmarks.

Tolerances (measured on CPU with the random ``tiny-gpt2``, 12 x 64, torch 2.13; the CUDA ones
are the same bounds, not yet measured on a GPU):

* same device given as ``None`` / ``"cpu"`` / ``torch.device("cpu")``: bit-identical;
* bfloat16 vs float32 activations, per layer: ``||bf16 - f32|| / ||f32||`` measured 1.6e-3
  (layer 0) to 9.3e-3 (layer 12), bound :data:`BF16_REL` = 2e-2; correlation measured
  >= 0.99995, bound :data:`BF16_CORR` = 0.9995. float16 (CUDA only): bound
  :data:`FP16_REL` = 5e-3 (CPU float16 measured 1.2e-3, but too slow on CPU to test here);
  the same bounds hold for X_syn (bfloat16 measured 7.4e-3, correlation >= 0.99997) and for
  the continuations' activations of the words whose greedy tokens agree (measured 9.3e-3;
  all 14 words agreed);
* CUDA float32 vs CPU float32 activations: :data:`F32_REL` = 2e-4 relative per layer;
* himalaya torch / torch_cuda vs numpy scores (Pearson r): :data:`SCORE_ATOL` = 1e-4 absolute
  (torch on CPU measured 2.1e-7; ``benchmarks/gpu_check.sh`` prints the CUDA difference).
"""

import copy
import os
import re

import numpy as np
import pandas as pd
import pytest
import factories
from factories import config
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from brainpred import io, mapping  # noqa: E402
from brainpred.stages import analyses as stage_analyses  # noqa: E402
from brainpred.stages import features as stage_features  # noqa: E402
from brainpred.stages import mapping as stage_mapping  # noqa: E402
from brainpred import continuations as C  # noqa: E402
from brainpred import features as F  # noqa: E402
from brainpred import finetune as ft  # noqa: E402
from brainpred import lm  # noqa: E402
from brainpred.errors import ConfigError  # noqa: E402
from brainpred.features import load_features  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread", "cache_dir")

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA, reason="needs a CUDA GPU: run benchmarks/gpu_check.sh on a GPU machine")

BF16_REL, BF16_CORR = 2e-2, 0.9995
BF16_REL_CUDA = 3e-2          # other kernels (cuBLAS, fused attention): a little more room
FP16_REL, FP16_CORR = 5e-3, 0.9999
F32_REL = 2e-4
SCORE_ATOL = 1e-4

_WORDS = ("the cat sat on a mat and looked at the old door while cold rain fell over "
          "town, so every quiet stranger waited near our boat.").split()


# ------------------------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def tiny():
    return lm.load_model("tiny-gpt2", seed=0, device="cpu")


def _text(n_words, seed=0):
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(_WORDS, n_words))


def _word_table(text):
    spans = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    return pd.DataFrame({"word": [s[0] for s in spans],
                         "start": 1.0 + 0.6 * np.arange(len(spans)),
                         "char_start": [s[1] for s in spans],
                         "char_end": [s[2] for s in spans]})


@pytest.fixture(scope="module")
def story_tokens(tiny):
    """A 300-word story: (input_ids, last_token), about 2.5 windows of 128 tokens."""
    text = _text(300)
    words = _word_table(text)
    return F.word_token_index(text, words["char_start"].to_numpy(),
                              words["char_end"].to_numpy(), tiny[1])


def _rel_errors(ref, got):
    """Per layer: ||got - ref|| / ||ref|| and the correlation of the flattened arrays."""
    rel = [float(np.linalg.norm(g - r) / np.linalg.norm(r)) for r, g in zip(ref, got)]
    corr = [float(np.corrcoef(r.ravel(), g.ravel())[0, 1]) for r, g in zip(ref, got)]
    return np.array(rel), np.array(corr)


def _assert_close_layers(ref, got, rel_tol, corr_tol=None):
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.isfinite(got).all()
    rel, corr = _rel_errors(ref, got)
    assert rel.max() < rel_tol, dict(enumerate(rel.round(5)))
    if corr_tol is not None:
        assert corr.min() > corr_tol, dict(enumerate(corr.round(6)))
    return rel, corr


def _cast(model, dtype, device="cpu"):
    return copy.deepcopy(model).to(device=device, dtype=dtype).eval()


def _same_params(a, b):
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k].cpu(), pb[k].cpu()) for k in pa)


# ================================================================ features: device and dtype

def test_resolve_device_accepts_strings_and_torch_devices(monkeypatch):
    for dev in ("cpu", torch.device("cpu")):
        got = lm.resolve_device(dev)
        assert isinstance(got, torch.device) and got.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert lm.resolve_device("auto") == torch.device("cpu")
    for dev in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(ConfigError, match="CUDA is not available"):
            lm.resolve_device(dev)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert lm.resolve_device(None).type == "cuda"
    assert lm.resolve_device(torch.device("cuda:1")) == torch.device("cuda:1")


def test_resolve_dtype_names_and_torch_dtypes():
    cpu = torch.device("cpu")
    for dt in ("float32", torch.float32, "torch.float32"):
        assert lm.resolve_dtype(dt, cpu) is torch.float32
    for dt in ("bfloat16", torch.bfloat16, "float16", torch.float16):
        with pytest.raises(ConfigError, match=r"model\.dtype: b?float16 is only supported on "
                                              r"GPU; use float32 on CPU"):
            lm.resolve_dtype(dt, cpu)
        assert lm.resolve_dtype(dt, torch.device("cuda")) is getattr(
            torch, str(dt).replace("torch.", ""))
    with pytest.raises(ConfigError, match="model.dtype: 'float64' is not one of"):
        lm.resolve_dtype("float64", cpu)


def test_load_model_on_cpu_as_string_or_torch_device(tiny):
    ref, _ = tiny
    for dev in ("cpu", torch.device("cpu")):
        model, _ = lm.load_model("tiny-gpt2", seed=0, device=dev, dtype="float32")
        assert {p.device.type for p in model.parameters()} == {"cpu"}
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert not model.training and _same_params(model, ref)
    with pytest.raises(ConfigError, match="model.dtype: bfloat16 is only supported on GPU"):
        lm.load_model("tiny-gpt2", device="cpu", dtype="bfloat16")


def test_load_model_leaves_the_cuda_rng_untouched(monkeypatch):
    """load_model('tiny-gpt2') leaves the global RNG untouched: a ``torch.manual_seed``
    inside ``fork_rng(devices=[])`` would also reseed every CUDA generator
    (``torch.cuda.manual_seed_all``), which that fork does not restore."""
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    lm.load_model("tiny-gpt2", seed=5, device="cpu")
    assert not calls, f"torch.cuda.manual_seed_all({calls[0]}): the CUDA RNG was reseeded"


def test_place_model_moves_to_the_device_and_sets_eval(tiny):
    model = copy.deepcopy(tiny[0]).train()
    assert lm.place_model(model, None) == torch.device("cpu") and not model.training
    for dev in ("cpu", torch.device("cpu")):
        model.train()
        assert lm.place_model(model, dev) == torch.device("cpu") and not model.training


def test_extract_word_activations_device_forms_are_identical(tiny, story_tokens):
    model, _ = tiny
    ids, last = story_tokens
    kw = dict(context_tokens=128, batch_size=8)
    ref = F.extract_word_activations(model, ids, last, **kw)
    assert ref.shape == (13, last.size, 64) and ref.dtype == np.float32
    for dev in ("cpu", torch.device("cpu")):
        np.testing.assert_array_equal(F.extract_word_activations(model, ids, last, device=dev,
                                                                 **kw), ref)
    strided = F.extract_word_activations(model, ids, last, mode="strided", min_context=64,
                                         device=torch.device("cpu"), **kw)
    first = last < 128
    np.testing.assert_array_equal(strided[:, first], ref[:, first])


def test_bfloat16_extraction_close_to_float32(tiny, story_tokens):
    """A bfloat16 copy of the model (cast by hand: load_model refuses it on CPU) gives float32
    activations within BF16_REL of the float32 model's, per layer."""
    model, _ = tiny
    ids, last = story_tokens
    kw = dict(context_tokens=128, batch_size=8)
    ref = F.extract_word_activations(model, ids, last, **kw)
    half = _cast(model, torch.bfloat16)
    got = F.extract_word_activations(half, ids, last, device="cpu", **kw)
    _assert_close_layers(ref, got, BF16_REL, BF16_CORR)
    assert next(half.parameters()).dtype == torch.bfloat16   # extraction does not cast back
    hf = F.extract_word_activations(half, ids, last[:40], backend="hf", **kw)
    _assert_close_layers(ref[:, :40], hf, BF16_REL, BF16_CORR)


def _story_files(folder, text, story="a"):
    words = _word_table(text)
    tsv = folder / f"story-{story}_desc-words_table.tsv"
    txt = folder / f"story-{story}_desc-text.txt"
    io.write_tsv(tsv, words)
    txt.write_text(text, encoding="utf-8")
    return tsv, txt, words


MODEL_CFG = {"name": "tiny-gpt2", "seed": 0, "context_tokens": 32, "mode": "exact",
             "min_context": 16, "batch_size": 4, "device": "cpu", "dtype": "float32"}


def test_story_features_rule_on_cpu(tiny, tmp_path):
    """stages.features.make_story_features loads the model with model.device / model.dtype."""
    model, tok = tiny
    tsv, txt, words = _story_files(tmp_path, _text(40, seed=1))
    out = tmp_path / "story-a_desc-activations.npz"
    stage_features.make_story_features(tsv, txt, MODEL_CFG, out)
    acts, _, _ = load_features(out)
    ref = F.story_features(words, txt.read_text(encoding="utf-8"), model, tok,
                           context_tokens=32, batch_size=4)
    np.testing.assert_array_equal(acts, ref)
    with pytest.raises(ConfigError, match="model.dtype: bfloat16 is only supported on GPU"):
        stage_features.make_story_features(tsv, txt, {**MODEL_CFG, "dtype": "bfloat16"},
                                     tmp_path / "bf16.npz")


# ============================================================================= continuations

@pytest.fixture(scope="module")
def short_story(tiny):
    text = _text(14, seed=2)
    words = _word_table(text)
    ids, last = F.word_token_index(text, words["char_start"].to_numpy(),
                                   words["char_end"].to_numpy(), tiny[1])
    return text, words, ids, last


GEN_KW = dict(horizon=2, context_tokens=48, batch_size=4, return_info=True)


def test_continuations_device_forms_are_identical(tiny, short_story):
    model, tok = tiny
    text, words, ids, last = short_story
    ref, info = C.generate_from_tokens(model, tok, ids, last, **GEN_KW)
    for dev in ("cpu", torch.device("cpu")):
        got, ginfo = C.generate_from_tokens(model, tok, ids, last, device=dev, **GEN_KW)
        np.testing.assert_array_equal(got, ref)
        assert all(np.array_equal(a, b) for a, b in zip(ginfo["tokens"], info["tokens"]))
    got, _ = C.generate_continuations(words, text, model, tok, device=torch.device("cpu"),
                                      layers=[0, 6, 12], **GEN_KW)
    np.testing.assert_array_equal(got, ref[[0, 6, 12]])


def _gen_compare(ref, info, got, ginfo, rel_tol):
    """Words whose generated tokens agree: their activations within ``rel_tol``; returns the
    fraction of words whose tokens agree."""
    same = np.array([np.array_equal(a, b) for a, b in zip(info["tokens"], ginfo["tokens"])])
    assert got.dtype == np.float32 and got.shape == ref.shape and np.isfinite(got).all()
    if same.any():
        r = ref[:, same].reshape(ref.shape[0], -1)
        g = got[:, same].reshape(got.shape[0], -1)
        rel = np.linalg.norm(g - r, axis=1) / np.maximum(np.linalg.norm(r, axis=1), 1e-12)
        assert rel.max() < rel_tol, rel
    return same.mean()


def test_continuations_bfloat16_close_to_float32(tiny, short_story):
    """bfloat16 decoding runs (cache, masks and softmax in the model's dtype) and, for the
    words whose greedy tokens agree with float32, gives activations within BF16_REL."""
    model, tok = tiny
    _, _, ids, last = short_story
    ref, info = C.generate_from_tokens(model, tok, ids, last, **GEN_KW)
    got, ginfo = C.generate_from_tokens(_cast(model, torch.bfloat16), tok, ids, last,
                                        device="cpu", **GEN_KW)
    _gen_compare(ref, info, got, ginfo, BF16_REL)
    hf, hinfo = C.generate_from_tokens(_cast(model, torch.bfloat16), tok, ids, last,
                                       backend="hf", **GEN_KW)
    _gen_compare(ref, info, hf, hinfo, BF16_REL)


def test_story_continuations_rule_on_cpu(tiny, tmp_path):
    model, tok = tiny
    tsv, txt, words = _story_files(tmp_path, _text(12, seed=3))
    out = tmp_path / "story-a_layer-2_desc-continuations.npz"
    stage_analyses.make_story_continuations(tsv, txt, MODEL_CFG, config()["controls"], 2, 2, out)
    ref = C.generate_continuations(words, txt.read_text(encoding="utf-8"), model, tok, 2,
                                   context_tokens=32, batch_size=4, layers=[2])
    np.testing.assert_array_equal(io.load_npz(out)["generated"], ref[0])
    with pytest.raises(ConfigError, match="model.dtype: float16 is only supported on GPU"):
        stage_analyses.make_story_continuations(tsv, txt, {**MODEL_CFG, "dtype": "float16"},
                                          config()["controls"], 2, 2, tmp_path / "x.npz")


# ==================================================================================== syntax

@pytest.fixture(scope="module")
def syn_story():
    spacy = pytest.importorskip("spacy")  # noqa: F841
    from brainpred import syntax as S
    from brainpred.synthetic import random_sentence as _sentence

    nlp = S.load_spacy()
    rng = np.random.default_rng(4)
    chunks = []
    for _ in range(5):
        chunks += _sentence(rng)
    text = " ".join(chunks)
    words = _word_table(text)
    tagged = S.tag_words(words, text, nlp)
    return S, nlp, text, words, tagged, S.word_classes([tagged])


SYN_CASES = [("story", True), ("true_past", True), ("true_past", False)]


@pytest.mark.parametrize("context, reuse", SYN_CASES)
def test_syntactic_activations_bfloat16_close_to_float32(tiny, syn_story, context, reuse):
    """X_syn runs on the model's device and dtype (no device argument): alternative stories
    (extract_word_activations), shared-context prefixes + continuations, and one pass per
    future; a bfloat16 copy of the model gives X_syn within BF16_REL of float32."""
    S, nlp, text, words, tagged, classes = syn_story
    model, tok = tiny
    kw = dict(n_futures=2, seed=1, tagged=tagged, context=context, reuse_context=reuse,
              context_tokens=64, batch_size=4)
    ref = S.syntactic_activations(words, text, model, tok, nlp, classes, **kw)
    assert ref.shape == (13, len(words), 64) and np.isfinite(ref).all()
    got = S.syntactic_activations(words, text, _cast(model, torch.bfloat16), tok, nlp, classes,
                                  **kw)
    _assert_close_layers(ref, got, BF16_REL, BF16_CORR)


# ================================================================================ fine-tuning

FT_CFG = dict(alpha=0.5, steps=2, lr=1e-3, context=32, batch_size=2, checkpoints=[], seed=3,
              queue_size=16, temperature=0.1, target_layer=8, target_distance=8,
              rescale_every=50, train_layers=[8, 12])


@pytest.fixture(scope="module")
def ft_seqs(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("ftcorpus")
    path = root / "doc.txt"
    path.write_text(_text(400, seed=5), encoding="utf-8")
    return ft.load_corpus([str(path)], tiny[1], context=32, seed=0)


def _loss(run):
    return ft.loss_curves(run)[["ce", "nce", "lambda"]].to_numpy()


def test_finetune_device_forms_are_identical(ft_seqs, tmp_path):
    runs = {}
    for name, dev in (("str", "cpu"), ("obj", torch.device("cpu"))):
        runs[name] = ft.train("tiny-gpt2", ft_seqs, tmp_path / name, FT_CFG, device=dev,
                              progress=False)
    np.testing.assert_array_equal(_loss(tmp_path / "str"), _loss(tmp_path / "obj"))
    a, _ = lm.load_model(str(runs["str"][-1]), device="cpu")
    b, _ = lm.load_model(str(runs["obj"][-1]), device=torch.device("cpu"))
    assert _same_params(a, b)
    state = torch.load(runs["str"][-1] / "training_state.pt", map_location="cpu",
                       weights_only=True)
    assert set(state["rng"]) == {"cpu"}            # no CUDA generator state on CPU
    assert np.isfinite(_loss(tmp_path / "str")).all()


def test_finetuner_and_rng_state_follow_the_model_device(tiny):
    model = copy.deepcopy(tiny[0])
    tuner = ft.FineTuner(model, FT_CFG)
    assert tuner.device == torch.device("cpu")
    assert tuner.queue.buffer.device == tuner.device
    assert next(tuner.head.parameters()).device == tuner.device
    state = ft._rng_state(torch.device("cpu"))
    a = torch.rand(3)
    ft._set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), a)
    q = ft.TargetQueue(4, 3, device=torch.device("cpu"))
    q.push(torch.ones(2, 3))
    assert q.get().shape == (2, 3) and q.get().device.type == "cpu"


# ==================================================================================== mapping

def test_resolve_backend(monkeypatch):
    for name in ("numpy", "torch", "torch_cuda"):
        assert mapping.resolve_backend(name) == name
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert mapping.resolve_backend("auto") == "numpy"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert mapping.resolve_backend("auto") == "torch_cuda"
    with pytest.raises(ConfigError, match="mapping backend"):
        mapping.resolve_backend("cuda")


def _mapping_data(seed=0, n=150, v=25):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 20)).astype(np.float32)
    W = {d: rng.standard_normal((n, 30)).astype(np.float32) for d in (0, 3)}
    Ys = []
    for s in range(2):
        Y = rng.standard_normal((n, v)) + X[:, :2] @ rng.standard_normal((2, v))
        Y[:, 0] = 0.0                                   # a constant target: NaN score
        Ys.append(Y.astype(np.float32))
    return X, W, Ys, [80, 70]


MAP_KW = dict(n_components=5, delays=range(3), alphas=np.logspace(-1, 6, 8), n_folds=4,
              n_inner_folds=3)


def _all_scores(backend, inner_cv, X, W, Ys, seg):
    """Every public scorer's output, flattened to one float64 vector (NaN kept)."""
    kw = dict(MAP_KW, backend=backend, inner_cv=inner_cv, target_batch=10)
    out = [mapping.encoding_scores([X, W[0]], Ys[0], seg, **kw),
           mapping.encoding_scores([X], Ys[0], seg, return_folds=True, **kw)[1]]
    out += list(mapping.forecast_scores(X, W, Ys[1], seg, **kw))
    for r_x, r_xw in mapping.forecast_scores_shared(X, W, Ys, seg, **kw):
        out += [r_x, r_xw]
    out += mapping.design_scores([X, W[0], W[3]], [(0,), (0, 2), (1, 2)], Ys, seg, **kw)
    return np.concatenate([np.asarray(o, np.float64).ravel() for o in out])


def _check_backend(backend, inner_cv):
    from himalaya.backend import get_backend, set_backend

    X, W, Ys, seg = _mapping_data()
    set_backend("numpy")
    ref = _all_scores("numpy", inner_cv, X, W, Ys, seg)
    got = _all_scores(backend, inner_cv, X, W, Ys, seg)
    assert get_backend().__name__.endswith("numpy")      # restored after each call
    assert np.array_equal(np.isnan(ref), np.isnan(got)) and np.isnan(ref).any()
    ok = np.isfinite(ref)
    diff = float(np.abs(got[ok] - ref[ok]).max())
    assert diff < SCORE_ATOL, diff
    return diff


@pytest.mark.parametrize("inner_cv", ["contiguous", "loo"])
def test_torch_backend_scores_equal_numpy(inner_cv):
    _check_backend("torch", inner_cv)


def test_backend_restored_after_an_error():
    from himalaya.backend import get_backend, set_backend

    set_backend("numpy")
    with pytest.raises(ValueError):
        mapping.encoding_scores([np.ones((20, 3), np.float32)], np.ones((21, 2), np.float32),
                                None, backend="torch", n_folds=2, n_inner_folds=2)
    assert get_backend().__name__.endswith("numpy")


FIT_CONFIG = factories.fit_config()


@pytest.fixture(scope="module")
def fit_inputs(tmp_path_factory):
    """A 60-word story's features cache, two subjects' BOLD caches and the run table."""
    return factories.fit_inputs(tmp_path_factory.mktemp("fits"), n_words=60)


def _rule_scores(fit_inputs, backend, name):
    """Scores of the fit_scores and layers analysis_fit rules with mapping.backend."""
    config = {**FIT_CONFIG, "mapping": {**FIT_CONFIG["mapping"], "backend": backend},
              "layers": {"layers": [0, 1, 2], "distance": 4}}
    subjects = ["sub-001", "sub-002"]
    fit = fit_inputs["dir"] / f"{name}_fitscores.npz"
    stage_mapping.make_fit_scores(subjects, fit_inputs["table"], fit_inputs["features"],
                             fit_inputs["bold"], config, fit)
    lay = fit_inputs["dir"] / f"{name}_layersfit.npz"
    stage_analyses.make_analysis_fit("layers", subjects, fit_inputs["table"],
                               {"acts": fit_inputs["features"]}, fit_inputs["bold"], config,
                               lay)
    z, a = io.load_npz(fit), io.load_npz(lay)
    return np.concatenate([np.asarray(v, np.float64).ravel() for s in subjects
                           for v in (z[f"{s}__brain_score"], z[f"{s}__forecast_brain_score"],
                                     a[f"{s}__scores"])])


def _check_rules(fit_inputs, backend):
    ref = _rule_scores(fit_inputs, "numpy", f"numpy-{backend}")
    got = _rule_scores(fit_inputs, backend, backend)
    assert np.array_equal(np.isnan(ref), np.isnan(got))
    diff = float(np.nanmax(np.abs(got - ref)))
    assert diff < SCORE_ATOL, diff
    return diff


def test_fit_rules_with_the_torch_backend_equal_numpy(fit_inputs):
    """make_fit_scores and make_analysis_fit take mapping.backend from the config."""
    _check_rules(fit_inputs, "torch")


# ======================================================================= CUDA only (GPU runs)

def _cuda_model(dtype="float32", device="cuda"):
    model, tok = lm.load_model("tiny-gpt2", seed=0, device=device, dtype=dtype)
    assert next(model.parameters()).device.type == "cuda"
    assert next(model.parameters()).dtype == getattr(torch, dtype)
    return model, tok


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("mode", ["exact", "strided"])
def test_cuda_features_float32_match_cpu(tiny, story_tokens, mode):
    ids, last = story_tokens
    kw = dict(context_tokens=128, batch_size=16, mode=mode, min_context=64)
    ref = F.extract_word_activations(tiny[0], ids, last, **kw)
    model, _ = _cuda_model()
    got = F.extract_word_activations(model, ids, last, **kw)
    _assert_close_layers(ref, got, F32_REL)
    hf = F.extract_word_activations(model, ids, last, backend="hf", **kw)
    _assert_close_layers(ref, hf, F32_REL)
    # a CPU model moved by the device argument, given in every form
    for dev in ("cuda", "cuda:0", torch.device("cuda", 0)):
        moved = copy.deepcopy(tiny[0])
        got = F.extract_word_activations(moved, ids, last, device=dev, **kw)
        assert next(moved.parameters()).device.type == "cuda"
        _assert_close_layers(ref, got, F32_REL)
    back = lm.place_model(moved, "cpu")
    assert back.type == "cpu" and next(moved.parameters()).device.type == "cpu"


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype, rel_tol, corr_tol", [("bfloat16", BF16_REL_CUDA, BF16_CORR),
                                                     ("float16", FP16_REL, FP16_CORR)])
def test_cuda_half_features_close_to_cpu_float32(tiny, story_tokens, dtype, rel_tol, corr_tol):
    ids, last = story_tokens
    kw = dict(context_tokens=128, batch_size=16)
    ref = F.extract_word_activations(tiny[0], ids, last, **kw)
    model, _ = _cuda_model(dtype)
    _assert_close_layers(ref, F.extract_word_activations(model, ids, last, **kw), rel_tol,
                         corr_tol)
    _assert_close_layers(ref, F.extract_word_activations(model, ids, last, backend="hf", **kw),
                         rel_tol, corr_tol)


@pytest.mark.cuda
@needs_cuda
def test_cuda_load_model_leaves_the_cuda_rng_untouched():
    torch.cuda.init()
    before = torch.cuda.get_rng_state()
    lm.load_model("tiny-gpt2", seed=5, device="cuda")
    assert torch.equal(before, torch.cuda.get_rng_state())


@pytest.mark.cuda
@needs_cuda
def test_cuda_story_features_rule(tiny, tmp_path):
    tsv, txt, words = _story_files(tmp_path, _text(40, seed=1))
    ref = F.story_features(words, txt.read_text(encoding="utf-8"), *tiny, context_tokens=32,
                           batch_size=4)
    for dtype, tol in (("float32", F32_REL), ("bfloat16", BF16_REL_CUDA)):
        out = tmp_path / f"{dtype}.npz"
        stage_features.make_story_features(tsv, txt, {**MODEL_CFG, "device": "cuda", "dtype": dtype},
                                     out)
        _assert_close_layers(ref, load_features(out)[0], tol)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("backend", ["torch_cuda", "auto"])
@pytest.mark.parametrize("inner_cv", ["contiguous", "loo"])
def test_cuda_mapping_scores_equal_numpy(backend, inner_cv):
    assert mapping.resolve_backend("auto") == "torch_cuda"
    _check_backend(backend, inner_cv)


@pytest.mark.cuda
@needs_cuda
def test_cuda_fit_rules_equal_numpy(fit_inputs):
    _check_rules(fit_inputs, "torch_cuda")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("backend", ["auto", "hf"])
def test_cuda_continuations(tiny, short_story, backend):
    """Greedy decoding on CUDA: the tokens of most words equal CPU's (a random model has
    near-ties, so an argmax may flip) and their activations are within F32_REL; bfloat16
    and sampling run and give finite float32 activations."""
    model, tok = tiny
    text, words, ids, last = short_story
    ref, info = C.generate_from_tokens(model, tok, ids, last, backend=backend, **GEN_KW)
    cuda_model, _ = _cuda_model()
    got, ginfo = C.generate_from_tokens(cuda_model, tok, ids, last, backend=backend, **GEN_KW)
    assert _gen_compare(ref, info, got, ginfo, F32_REL) >= 0.8
    half, _ = _cuda_model("bfloat16")
    got, ginfo = C.generate_continuations(words, text, half, tok, backend=backend, **GEN_KW)
    _gen_compare(ref, info, got, ginfo, BF16_REL_CUDA)
    s1, _ = C.generate_from_tokens(cuda_model, tok, ids, last, method="sample", seed=3,
                                   backend=backend, **GEN_KW)
    s2, _ = C.generate_from_tokens(copy.deepcopy(model), tok, ids, last, method="sample",
                                   seed=3, device="cuda", backend=backend, **GEN_KW)
    np.testing.assert_array_equal(s1, s2)           # seeded sampling on CUDA: repeatable


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("context, reuse", SYN_CASES)
def test_cuda_syntactic_activations(tiny, syn_story, context, reuse):
    S, nlp, text, words, tagged, classes = syn_story
    model, tok = tiny
    kw = dict(n_futures=2, seed=1, tagged=tagged, context=context, reuse_context=reuse,
              context_tokens=64, batch_size=4)
    ref = S.syntactic_activations(words, text, model, tok, nlp, classes, **kw)
    got = S.syntactic_activations(words, text, _cuda_model()[0], tok, nlp, classes, **kw)
    _assert_close_layers(ref, got, F32_REL)
    got = S.syntactic_activations(words, text, _cuda_model("bfloat16")[0], tok, nlp, classes,
                                  **kw)
    _assert_close_layers(ref, got, BF16_REL_CUDA, BF16_CORR)


@pytest.mark.cuda
@needs_cuda
def test_cuda_finetune_runs_and_resumes(ft_seqs, tmp_path):
    """A few fine-tuning steps on CUDA: finite losses, the first cross-entropy near CPU's
    (dropout masks differ between devices), CUDA RNG state saved, and a run resumed from a
    checkpoint equals the straight run (the per-device RNG state is restored)."""
    cfg = {**FT_CFG, "steps": 4}
    straight = ft.train("tiny-gpt2", ft_seqs, tmp_path / "a", cfg, device="cuda",
                        progress=False)
    loss = _loss(tmp_path / "a")
    assert loss.shape == (4, 3) and np.isfinite(loss).all()
    state = torch.load(straight[-1] / "training_state.pt", map_location="cpu",
                       weights_only=True)
    assert {"cpu", "cuda"} <= set(state["rng"])
    ft.train("tiny-gpt2", ft_seqs, tmp_path / "cpu", {**cfg, "steps": 1}, device="cpu",
             progress=False)
    cpu_first = _loss(tmp_path / "cpu")[0]
    # the cross-entropy of a random model is ~ln(vocabulary) whatever the dropout mask; the
    # contrastive loss (temperature 0.1) is not compared
    np.testing.assert_allclose(loss[0, 0], cpu_first[0], rtol=5e-2)
    b = tmp_path / "b"
    ft.train("tiny-gpt2", ft_seqs, b, {**cfg, "steps": 2}, device=torch.device("cuda"),
             progress=False)
    resumed = ft.train("tiny-gpt2", ft_seqs, b, cfg, device="cuda", progress=False)
    np.testing.assert_allclose(_loss(b), loss, rtol=1e-4, atol=1e-5)
    wa, _ = lm.load_model(str(straight[-1]), device="cpu")
    wb, _ = lm.load_model(str(resumed[-1]), device="cpu")
    for (ka, pa), (kb, pb) in zip(wa.named_parameters(), wb.named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=ka)
