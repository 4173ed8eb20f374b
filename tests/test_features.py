"""Tests of brainpred.features: tokens-to-words, past-only activations, cache files.

Runs offline (HF_HUB_OFFLINE=1) with the random ``tiny-gpt2`` and smaller random GPT-2s.
"""

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from brainpred import features as F  # noqa: E402
from brainpred import lm  # noqa: E402
from brainpred.errors import ConfigError, DataError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NARRATIVES = Path(__file__).resolve().parents[2] / "shared" / "narratives"
GENTLE = NARRATIVES / "stimuli" / "gentle"


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="session")
def tok(cache_dir):
    return lm.gpt2_tokenizer()


@pytest.fixture(scope="session")
def tiny(cache_dir):
    return lm.load_model("tiny-gpt2", seed=0, device="cpu")


def small_gpt2(seed=0, n_layer=2, n_embd=32, n_positions=64, wpe_scale=1.0):
    """A small random GPT-2 whose context window is shorter than a story."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=2,
                                       n_positions=n_positions, vocab_size=50257)).eval()
    if wpe_scale != 1.0:
        with torch.no_grad():
            model.transformer.wpe.weight.mul_(wpe_scale)
    return model


def chunk_spans(text):
    """Whitespace chunks of ``text`` as word spans (punctuation included)."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    return np.array([s for s, _ in spans]), np.array([e for _, e in spans])


def words_to_text(words):
    """Join words with single spaces; return text and spans."""
    starts, ends, pos = [], [], 0
    for w in words:
        starts.append(pos)
        ends.append(pos + len(w))
        pos += len(w) + 1
    return " ".join(words), np.array(starts), np.array(ends)


def read_align(story):
    path = GENTLE / story / "align.csv"
    if not path.exists():
        pytest.skip(f"{path} not found: the real Narratives files (../shared/narratives) are "
                    "absent in this checkout")
    df = pd.read_csv(path, header=None, names=["word", "dict_word", "start", "end"],
                     keep_default_na=False, dtype={"word": str, "dict_word": str})
    return df


def synthetic_words(n, seed=0):
    rng = np.random.RandomState(seed)
    vocab = ["the", "man", "don't", "91st", "said,", "quickly.", "Los", "Angeles", "it’s",
             "(really)", "a", "story", "of", "pie", "<unk>", "1930s", "and", "then"]
    return [vocab[i] for i in rng.randint(0, len(vocab), n)]


def one_by_one(model, ids, last, context_tokens):
    """Reference: run the model on each word's own past-only window, one word at a time."""
    out = []
    with torch.inference_mode():
        for t in np.asarray(last):
            w = torch.as_tensor(ids[max(0, t - context_tokens + 1): t + 1])[None]
            hs = model.transformer(w, output_hidden_states=True).hidden_states
            out.append(np.stack([model.transformer.wte(w[0, -1]).numpy()]
                                + [h[0, -1].numpy() for h in hs[1:]]))
    return np.stack(out, axis=1)


def assert_tokens_spell_words(tok, ids, last, words):
    """Tokens (last[w-1], last[w]] decode to word w (space-joined text: tokens never span
    two words), and every word has its own last token."""
    assert np.all(np.diff(last) > 0)
    prev = -1
    for w, t in zip(words, last):
        assert tok.decode(ids[prev + 1: t + 1]).strip() == w
        prev = t


# ---------------------------------------------------------------------------------- tokenizer

def test_gpt2_tokenizer_is_the_real_one(cache_dir, tok):
    assert tok.is_fast
    assert len(tok) == 50257
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 50256
    vocab = cache_dir / "gpt2-tokenizer" / "vocab.json"
    merges = cache_dir / "gpt2-tokenizer" / "merges.txt"
    assert vocab.exists() and merges.exists()
    mtime = vocab.stat().st_mtime_ns
    lm.gpt2_tokenizer()  # second call: files are not copied again
    assert vocab.stat().st_mtime_ns == mtime
    assert not [p for p in vocab.parent.iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.shared
@pytest.mark.parametrize("story", ["pieman", "forgot", "bronx"])
def test_word_token_index_real_narratives(tok, story):
    df = read_align(story)
    words = df["word"].tolist()
    text, cs, ce = words_to_text(words)
    ids, last = F.word_token_index(text, cs, ce, tok)
    assert ids.dtype == np.int64 and last.dtype == np.int64
    assert last.shape == (len(words),)
    assert ids.tolist() == tok(text)["input_ids"]  # one tokenisation of the whole text
    assert_tokens_spell_words(tok, ids, last, words)
    # words whose dictionary form is <unk> still get their own tokens
    unk = np.flatnonzero(df["dict_word"].to_numpy() == "<unk>")
    if story == "pieman":
        assert unk.size > 0
    for i in unk:
        assert tok.decode(ids[last[i - 1] + 1: last[i] + 1] if i else ids[: last[i] + 1]).strip() \
            == words[i]
    if story == "forgot":
        assert "91st" in words and "1930s" in words


def test_word_token_index_hand_cases(tok):
    text = "Hello world, I don't know. The 91st <unk> time—it’s “fine”. (Really?)"
    cs, ce = chunk_spans(text)
    ids, last = F.word_token_index(text, cs, ce, tok)
    toks = tok.convert_ids_to_tokens(ids.tolist())
    got = [toks[t] for t in last]
    # punctuation attached to a word (issue 15, item 6b): the word is read at its own last
    # token, not at the punctuation token that follows it
    assert got[0] == "Hello" and got[1] == "Ġworld"   # world, = Ġworld + ,
    assert got[3] == "'t"            # don't = Ġdon + 't (the apostrophe is inside the word)
    assert got[4] == "Ġknow"         # know. = Ġknow + .
    assert got[6] == "st"            # 91st = Ġ91 + st
    assert got[7] == "unk"           # <unk> = Ġ< + unk + >
    assert got[8] == "s"             # time—it’s = ... + it + ’ + s
    assert got[9] == "fine"          # “fine”. = Ġ“ + fine + ” + .
    assert got[-1] == "Really"       # (Really?) = Ġ( + Really + ?)
    # spans of words without their punctuation: the word's own last token
    text2 = "Hello world, I don't know."
    spans = [(m.start(), m.end()) for m in re.finditer(r"[\w']+", text2)]
    ids2, last2 = F.word_token_index(text2, [s for s, _ in spans], [e for _, e in spans], tok)
    toks2 = tok.convert_ids_to_tokens(ids2.tolist())
    assert [toks2[t] for t in last2] == ["Hello", "Ġworld", "ĠI", "'t", "Ġknow"]


def test_word_token_index_skips_trailing_punctuation(tok):
    """A punctuated transcript's word spans end with the chunk's punctuation (narratives
    story_words: ``"said,"``); the word is read at the last token of its letters, the
    punctuation stays in the token sequence (the next word's context), and a word that is only
    punctuation is read at its own last token. Today's code (before issue 15, item 6b) read
    ``","``, ``'."'``, ``"'"``, ``"..."``, ``"."`` and ``"!?"`` here."""
    text = 'He said, "Go home." Then \u2014 goin\' on... U.S. ok!?'
    cs, ce = chunk_spans(text)
    ids, last = F.word_token_index(text, cs, ce, tok)
    assert ids.tolist() == tok(text)["input_ids"]          # punctuation still read by the model
    toks = tok.convert_ids_to_tokens(ids.tolist())
    assert [toks[t] for t in last] == ["He", "Ġsaid", "Go", "Ġhome", "ĠThen", "ĠâĢĶ", "in",
                                       "Ġon", "S", "Ġok"]
    assert '."' in toks and "!?" in toks                    # the merged punctuation tokens
    # the same as reading the bare words
    bare = [(m.start(), m.end()) for m in re.finditer(r"\w(?:[\w.']*\w)?|\u2014", text)]
    _, last_bare = F.word_token_index(text, [a for a, _ in bare], [b for _, b in bare], tok)
    np.testing.assert_array_equal(last, last_bare)


@pytest.mark.shared
def test_word_token_index_punctuated_real_words(tok):
    """Real pieman words in a punctuated text built like a transcript (a comma, a period,
    quotes), spans from narratives' transcript matcher: every word is read at a token of
    its own letters, and the tokens up to it spell the word (punctuation before it)."""
    from brainpred.narratives import _word_spans

    words = read_align("pieman")["word"].tolist()[:400]
    marks = [",", ".", '."', "?", ""]
    parts = []
    for i, w in enumerate(words):
        parts.append(('"' if i % 11 == 0 else "") + w + marks[i % 5] * (i % 3 == 0))
    text = " ".join(parts)
    cs, ce = _word_spans(words, text, "transcript.txt", "align.csv")
    assert sum(not text[e - 1].isalnum() for e in ce) > 100   # spans end with punctuation
    ids, last = F.word_token_index(text, cs, ce, tok)
    toks = tok.convert_ids_to_tokens(ids.tolist())
    assert not any(set(toks[t]) <= set('.,?"') for t in last)
    prev = -1
    for w, t in zip(words, last):
        spelled = tok.decode(ids[prev + 1: t + 1]).lstrip('.,?" ')
        assert spelled == w, (w, spelled)
        prev = t


def test_word_token_index_both_offset_conventions(cache_dir):
    """GPT-2 offsets with (untrimmed) or without (trimmed) the leading space agree."""
    from tokenizers import processors

    text = "  I  don't   know,\nthe 91st <unk> man’s story."
    cs, ce = chunk_spans(text)
    plain = lm.gpt2_tokenizer()
    trimmed = lm.gpt2_tokenizer()
    trimmed.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    off_a = plain(text, return_offsets_mapping=True)["offset_mapping"]
    off_b = trimmed(text, return_offsets_mapping=True)["offset_mapping"]
    assert off_a != off_b  # the two conventions really differ
    ids_a, last_a = F.word_token_index(text, cs, ce, plain)
    ids_b, last_b = F.word_token_index(text, cs, ce, trimmed)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(last_a, last_b)


def test_word_token_index_errors(tok):
    with pytest.raises(DataError, match="word 1"):
        F.word_token_index("a b", [0, 2], [1, 9], tok)   # outside the text
    with pytest.raises(DataError, match="word 0"):
        F.word_token_index("a b", [1], [1], tok)         # empty span


# -------------------------------------------------------------------------------- activations

def test_exact_equals_one_by_one_tiny(tiny):
    model, tok = tiny
    text = "I began my illustrious career in journalism in the Bronx, where I don't know the 91st."
    cs, ce = chunk_spans(text)
    ids, last = F.word_token_index(text, cs, ce, tok)
    acts = F.extract_word_activations(model, ids, last)
    assert acts.dtype == np.float32
    assert acts.shape == (lm.n_layers(model) + 1, len(cs), 64) == (13, len(cs), 64)
    np.testing.assert_allclose(acts, one_by_one(model, ids, last, 1024), atol=1e-5, rtol=1e-4)
    # layer 0 = token embedding, without position embedding
    wte = model.transformer.wte.weight.detach().numpy()
    np.testing.assert_array_equal(acts[0], wte[ids[last]])
    # last layer = after the final layer norm (HF convention)
    with torch.inference_mode():
        h = model.transformer(torch.as_tensor(ids)[None]).last_hidden_state[0].numpy()
    np.testing.assert_allclose(acts[-1], h[last], atol=1e-5)


def _long_story(tok, n_words=260, real=False):
    """Token ids and last tokens of a long story: generated words, or with ``real`` the first
    words of the real pieman alignment (skipped, saying why, when ../shared is absent: never
    silently replaced by generated words)."""
    if real:
        words = read_align("pieman")["word"].astype(str).tolist()[:n_words]
    else:
        words = synthetic_words(n_words)
    text, cs, ce = words_to_text(words)
    return F.word_token_index(text, cs, ce, tok)


@pytest.mark.parametrize("real", [False, pytest.param(True, marks=pytest.mark.shared)],
                         ids=["generated", "pieman"])
@pytest.mark.parametrize("context,batch_size", [(64, 8), (40, 3), (40, 1)])
def test_exact_equals_one_by_one_beyond_context(tok, context, batch_size, real):
    model = small_gpt2()
    ids, last = _long_story(tok, real=real)
    assert ids.size > 4 * context  # most words see a full window
    acts = F.extract_word_activations(model, ids, last, context_tokens=context,
                                      batch_size=batch_size)
    np.testing.assert_allclose(acts, one_by_one(model, ids, last, context), atol=1e-5,
                               rtol=1e-4)


def test_words_sharing_a_token_and_unsorted(tok):
    model = small_gpt2()
    ids = np.random.RandomState(0).randint(0, 50257, 150)
    last = np.array([149, 3, 3, 70, 10, 70, 0])
    acts = F.extract_word_activations(model, ids, last, context_tokens=32, batch_size=2)
    np.testing.assert_allclose(acts, one_by_one(model, ids, last, 32), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["exact", "strided"])
def test_no_future_leakage(mode):
    model = small_gpt2()
    rng = np.random.RandomState(1)
    ids = rng.randint(0, 50257, 300)
    last = np.arange(0, 300, 2)
    p = 150
    ids2 = ids.copy()
    ids2[p:] = rng.randint(0, 50257, 300 - p)
    kw = dict(context_tokens=64, batch_size=4, mode=mode, min_context=32)
    a = F.extract_word_activations(model, ids, last, **kw)
    b = F.extract_word_activations(model, ids2, last, **kw)
    past = last < p
    np.testing.assert_allclose(a[:, past], b[:, past], atol=1e-6)
    assert not np.allclose(a[:, ~past], b[:, ~past])


def test_no_future_leakage_text(tiny):
    model, tok = tiny
    t1 = "The pie man came to town and nobody knew his name"
    t2 = "The pie man came to town and everybody loved his pies"
    a = F.story_features(pd.DataFrame(dict(zip(["char_start", "char_end"], chunk_spans(t1)))),
                         t1, model, tok)
    b = F.story_features(pd.DataFrame(dict(zip(["char_start", "char_end"], chunk_spans(t2)))),
                         t2, model, tok)
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert not np.allclose(a[:, 7], b[:, 7])


def test_tiny_gpt2_deterministic(cache_dir):
    state = torch.random.get_rng_state()
    m1, tok = lm.load_model("tiny-gpt2", seed=0, device="cpu")
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    m2, _ = lm.load_model("tiny-gpt2", seed=0, device="cpu")
    m3, _ = lm.load_model("tiny-gpt2", seed=1, device="cpu")
    assert not m1.training
    assert lm.n_layers(m1) == 12 and m1.config.n_embd == 64 and m1.config.vocab_size == 50257
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert not torch.equal(m1.transformer.wte.weight, m3.transformer.wte.weight)
    text = "Two loads of the same seed give the same activations, don't they?"
    cs, ce = chunk_spans(text)
    ids, last = F.word_token_index(text, cs, ce, tok)
    np.testing.assert_array_equal(F.extract_word_activations(m1, ids, last),
                                  F.extract_word_activations(m2, ids, last))


def test_strided_close_to_exact(tok):
    # a random GPT-2 with full-size position embeddings is dominated by them (a word read at
    # another position changes by a whole random vector); shrink them so that the test measures
    # the effect of the shorter context, which is what strided mode changes.
    model = small_gpt2(wpe_scale=0.1)
    ids, last = _long_story(tok)
    C, mc = 64, 32
    exact = F.extract_word_activations(model, ids, last, context_tokens=C)
    strided = F.extract_word_activations(model, ids, last, context_tokens=C, mode="strided",
                                         min_context=mc, batch_size=4)
    first = last < C
    assert first.any() and (~first).sum() > 100
    np.testing.assert_array_equal(strided[:, first], exact[:, first])
    for layer in range(exact.shape[0]):
        x = exact[layer, ~first] - exact[layer, ~first].mean(0)
        y = strided[layer, ~first] - strided[layer, ~first].mean(0)
        assert np.corrcoef(x.ravel(), y.ravel())[0, 1] > 0.9, layer
    # documented windows: starts every C - min_context tokens, read where >= min_context past
    stride = C - mc
    ref = []
    with torch.inference_mode():
        for t in last[~first]:
            s = ((t - C) // stride + 1) * stride
            assert mc <= t - s < C
            w = torch.as_tensor(ids[s: t + 1])[None]
            ref.append(model.transformer(w).last_hidden_state[0, -1].numpy())
    np.testing.assert_allclose(strided[-1, ~first], np.stack(ref), atol=1e-5, rtol=1e-4)


def window_states(backbone, emb, ids, s, t):
    """Reference for any HF model: states of token ``t`` run alone on ``ids[s..t]``."""
    with torch.inference_mode():
        w = torch.as_tensor(ids[s: t + 1])[None]
        hs = backbone(input_ids=w, output_hidden_states=True).hidden_states
        return np.stack([emb(w[0, -1]).numpy()] + [h[0, -1].numpy() for h in hs[1:]])


@pytest.mark.parametrize("cfg", [dict(), dict(activation_function="relu"),
                                 dict(scale_attn_by_inverse_layer_idx=True),
                                 dict(scale_attn_weights=False, n_layer=1)])
def test_fast_gpt2_equals_hf_forward(tok, cfg):
    """The GPT-2 fast path (last block at the read positions only, fused attention and GELU)
    is the same function as HF's forward, for the GPT-2 options it supports."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(3)
    conf = dict(n_layer=3, n_embd=32, n_head=4, n_positions=48, vocab_size=50257)
    model = GPT2LMHeadModel(GPT2Config(**{**conf, **cfg})).eval()
    assert lm.FastGPT2.supports(model)
    ids, last = _long_story(tok, 120)
    kw = dict(context_tokens=40, batch_size=3)
    fast = F.extract_word_activations(model, ids, last, **kw)
    hf = F.extract_word_activations(model, ids, last, backend="hf", **kw)
    np.testing.assert_allclose(fast, hf, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(fast, one_by_one(model, ids, last, 40), atol=1e-5, rtol=1e-4)


def test_gpt2_size_exact_equals_one_by_one(tok):
    """Float tolerance holds at GPT-2's real width and depth (12 x 768, random weights)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_positions=16, vocab_size=1000, bos_token_id=None,
                                       eos_token_id=None)).eval()
    assert lm.n_layers(model) == 12 and model.config.n_embd == 768
    ids, last = _long_story(tok, 30)
    ids = ids % 1000  # a small vocabulary keeps the random initialisation quick
    assert ids.size > 2 * 12
    acts = F.extract_word_activations(model, ids, last, context_tokens=12, batch_size=4)
    ref = one_by_one(model, ids, last, 12)
    scale = np.abs(ref).max(axis=(1, 2), keepdims=True)
    assert np.abs(acts - ref).max(axis=(1, 2)).max() < 1e-5 * scale.max()


def test_other_models_use_hf_forward(tok):
    """A non-GPT-2 causal LM (random tiny Llama) goes through the generic HF path."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, max_position_embeddings=64))
    model.eval()
    assert not lm.FastGPT2.supports(model)
    ids, last = _long_story(tok, 80)
    C = 32
    acts = F.extract_word_activations(model, ids, last, context_tokens=C, batch_size=3)
    ref = np.stack([window_states(model.model, model.get_input_embeddings(), ids,
                                  max(0, t - C + 1), t) for t in last], axis=1)
    np.testing.assert_allclose(acts, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", ["auto", "hf"])
def test_strided_all_layers_with_padding(tok, backend):
    """Strided windows of unequal length batched together (right padding + masks) give, at
    every layer, the states of each word's documented window run alone."""
    model = small_gpt2(n_layer=3)
    ids, last = _long_story(tok, 150)
    C, mc = 40, 16
    stride = C - mc
    n_tail_windows = len(np.unique((last[last >= C] - C) // stride + 1))
    bs = 3 if n_tail_windows % 3 else 4  # the truncated last window shares a batch
    assert n_tail_windows % bs
    acts = F.extract_word_activations(model, ids, last, context_tokens=C, mode="strided",
                                      min_context=mc, batch_size=bs, backend=backend)
    emb = model.get_input_embeddings()
    ref = []
    for t in last:
        s = 0 if t < C else ((t - C) // stride + 1) * stride
        assert t < C or mc <= t - s < C
        ref.append(window_states(model.transformer, emb, ids, s, t))
    np.testing.assert_allclose(acts, np.stack(ref, axis=1), atol=1e-5, rtol=1e-4)


def test_batch_size_and_empty(tok):
    model = small_gpt2()
    ids, last = _long_story(tok, 100)
    a = F.extract_word_activations(model, ids, last, context_tokens=32, batch_size=1)
    b = F.extract_word_activations(model, ids, last, context_tokens=32, batch_size=64)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    empty = F.extract_word_activations(model, ids, np.array([], dtype=int), context_tokens=32)
    assert empty.shape == (3, 0, 32) and empty.dtype == np.float32


def test_progress_bar(tok, capsys):
    model = small_gpt2()
    ids, last = _long_story(tok, 60)
    F.extract_word_activations(model, ids, last, context_tokens=32, progress=True)
    err = capsys.readouterr().err
    assert "activations (exact)" in err and "window" in err
    F.extract_word_activations(model, ids, last, context_tokens=32, progress=False)
    assert capsys.readouterr().err == ""


def test_device_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert lm.resolve_device("auto").type == "cpu"
    assert lm.resolve_device(None).type == "cpu"
    with pytest.raises(ConfigError, match="model.device.*CUDA"):
        lm.resolve_device("cuda")
    with pytest.raises(ConfigError, match="model.device"):
        lm.resolve_device("tpu-please")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert lm.resolve_device("auto").type == "cuda"   # auto prefers CUDA when present
    assert lm.resolve_dtype("bfloat16", torch.device("cuda")) == torch.bfloat16
    assert lm.resolve_dtype("float16", torch.device("cuda")) == torch.float16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_matches_cpu(cache_dir, tiny, dtype):
    cpu_model, tok = tiny
    model, _ = lm.load_model("tiny-gpt2", seed=0, device="auto", dtype=dtype)
    assert next(model.parameters()).device.type == "cuda"
    ids, last = _long_story(tok, 1500)
    assert ids.size > 1500  # beyond one 1024-token window
    kw = dict(context_tokens=1024, batch_size=16)
    ref = F.extract_word_activations(cpu_model, ids, last, **kw)
    gpu = F.extract_word_activations(model, ids, last, **kw)
    assert gpu.dtype == np.float32 and gpu.shape == ref.shape
    if dtype == "float32":
        np.testing.assert_allclose(gpu, ref, atol=1e-3, rtol=1e-3)
    else:  # half precision: close, not equal
        for layer in range(ref.shape[0]):
            r = np.corrcoef(gpu[layer].ravel(), ref[layer].ravel())[0, 1]
            assert r > 0.99, (layer, r)
    strided = F.extract_word_activations(model, ids, last, mode="strided", **kw)
    assert np.isfinite(strided).all()


def test_bad_arguments(tok):
    model = small_gpt2()
    ids, last = np.arange(10), np.array([3, 9])
    with pytest.raises(ConfigError, match="context_tokens"):
        F.extract_word_activations(model, ids, last, context_tokens=65)
    with pytest.raises(ConfigError, match="min_context"):
        F.extract_word_activations(model, np.arange(100), np.array([99]), context_tokens=32,
                                   mode="strided", min_context=32)
    with pytest.raises(ConfigError, match="mode"):
        F.extract_word_activations(model, ids, last, mode="fast")
    with pytest.raises(DataError, match="last_token"):
        F.extract_word_activations(model, ids, np.array([10]), context_tokens=32)
    with pytest.raises(ConfigError, match="batch_size"):
        F.extract_word_activations(model, ids, last, context_tokens=32, batch_size=0)
    with pytest.raises(ConfigError, match="backend"):
        F.extract_word_activations(model, ids, last, context_tokens=32, backend="jax")


def test_bad_model_name(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="model.name"):
        lm.load_model(str(tmp_path / "no" / "such" / "model"), device="cpu")
    with pytest.raises(ConfigError, match="model.name"):
        lm.load_model("./missing-model-dir", device="cpu")
    with pytest.raises(ConfigError, match="model.name.*HF_HUB_OFFLINE"):
        lm.load_model("brainpred-test/definitely-not-a-model", device="cpu")
    with pytest.raises(ConfigError, match="model.dtype"):
        lm.load_model("tiny-gpt2", device="cpu", dtype="float16")
    with pytest.raises(ConfigError, match="model.dtype"):
        lm.load_model("tiny-gpt2", device="cpu", dtype="float8")


def test_local_model_dir(tmp_path, tiny):
    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    m2, t2 = lm.load_model(str(tmp_path / "m"), device="cpu")
    assert t2.is_fast and t2("Hello world")["input_ids"] == [15496, 995]
    for v1, v2 in zip(model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(v1, v2)


# ------------------------------------------------------------------------------------- files

def test_save_load_round_trip(tmp_path):
    rng = np.random.RandomState(0)
    acts = rng.randn(3, 4, 5).astype(np.float32)
    words = pd.DataFrame({
        "word": ["I", "don't", "91st", "<unk>"],
        "start": [0.1, 0.5, np.nan, 1.5],
        "interpolated": [False, False, True, False],
        "char_start": np.array([0, 2, 8, 13], dtype=np.int64),
    })
    meta = {"model": "tiny-gpt2", "context_tokens": 1024, "mode": "exact",
            "n": np.int64(3), "nested": {"a": [1, 2]}}
    path = tmp_path / "sub" / "features.npz"
    F.save_features(path, acts, words, meta)
    assert [p.name for p in path.parent.iterdir()] == ["features.npz"]  # atomic, no temp left
    a2, w2, m2 = F.load_features(path)
    np.testing.assert_array_equal(a2, acts)
    assert a2.dtype == np.float32
    pd.testing.assert_frame_equal(w2, words, check_dtype=False)
    assert w2["interpolated"].dtype == bool and w2["char_start"].dtype == np.int64
    assert m2 == {**meta, "n": 3}


def test_load_features_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="bad.npz"):
        F.load_features(bad)
    with pytest.raises(DataError, match="missing.npz"):
        F.load_features(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(DataError, match="other.npz"):
        F.load_features(other)


def test_load_features_validates(tmp_path):
    acts = np.ones((3, 4, 5), np.float32)
    words = pd.DataFrame({"word": list("abcd"), "char_start": [0, 2, 4, 6]})
    meta = {"name": "tiny-gpt2", "context_tokens": 1024, "mode": "exact", "n_layers": 2}
    good = tmp_path / "good.npz"
    F.save_features(good, acts, words, meta)
    assert F.load_features(good, expect={"mode": "exact", "name": "tiny-gpt2"})[2] == meta
    with pytest.raises(DataError, match="good.npz.*mode = 'exact', expected 'strided'"):
        F.load_features(good, expect={"mode": "strided"})
    with pytest.raises(DataError, match="good.npz.*min_context = '<missing>'"):
        F.load_features(good, expect={"min_context": 512})

    def write(name, **arrays):
        base = dict(np.load(good))
        base.update(arrays)
        path = tmp_path / name
        np.savez(path, **base)
        return path

    with pytest.raises(DataError, match="short.npz.*4-word table"):
        F.load_features(write("short.npz", activations=acts[:, :3]))
    with pytest.raises(DataError, match="flat.npz.*shape"):
        F.load_features(write("flat.npz", activations=acts[0]))
    with pytest.raises(DataError, match="layers.npz.*n_layers = 2"):
        F.load_features(write("layers.npz", activations=np.ones((4, 4, 5), np.float32)))
    nan = acts.copy()
    nan[1, 2, 3] = np.nan
    with pytest.raises(DataError, match="nan.npz.*layer 1, word 2"):
        F.load_features(write("nan.npz", activations=nan))
    with pytest.raises(DataError, match="ints.npz.*dtype"):
        F.load_features(write("ints.npz", activations=np.ones((3, 4, 5), np.int64)))
    with pytest.raises(DataError, match="list.npz.*mapping"):
        F.load_features(write("list.npz", meta_json=np.array("[1, 2]")))
    with pytest.raises(DataError, match="cols.npz"):
        F.load_features(write("cols.npz", word__word=np.array(list("abc"))))
    with pytest.raises(ValueError, match="do not match"):
        F.save_features(tmp_path / "x.npz", acts[:, :3], words, meta)


def test_read_positions_pads_with_last_read():
    qpos, qvalid = F.read_positions([np.array([3, 5, 9]), np.array([2])])
    np.testing.assert_array_equal(qpos, [[3, 5, 9], [2, 2, 2]])
    np.testing.assert_array_equal(qvalid, [[True, True, True], [True, False, False]])
