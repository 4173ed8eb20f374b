"""Tests of brainpred.continuations: the model's own continuations and their forecast windows.

Runs offline (HF_HUB_OFFLINE=1) with the random ``tiny-gpt2`` (12 x 64, real GPT-2 tokenizer).
References are computed the slow, obvious way: full HuggingFace forward passes without cache,
one word at a time.
"""

import logging
import os
import re

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from brainpred import continuations as C  # noqa: E402
from brainpred import features as F  # noqa: E402
from brainpred import lm  # noqa: E402
from brainpred.design import forecast_windows, generated_windows  # noqa: E402
from brainpred.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_SENTENCES = [
    "Jonah whispered she couldn't know why.",
    "His golden sailor stopped never.",
    "Ruth smiled toward every hollow house.",
    '"1921 houses opened our empty key, while a stranger shivered today," she whispered.',
    "Elena laughed inside that warm door across his well-known boat.",
    "Her child shivered near our coat.",
    "An empty road smiled today.",
    "Abel whispered I didn't know why.",
    "Her fire noticed every quiet clock.",
    "That tired sailor returned under the morning, so every distant stranger waited.",
]


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def tiny(cache_dir):
    return lm.load_model("tiny-gpt2", seed=0, device="cpu")


def _story(n_sentences=4, newline_every=0):
    """A few sentences and their word table (whitespace chunks, punctuation included, as
    brainpred.narratives.story_words builds it)."""
    sents = [_SENTENCES[i % len(_SENTENCES)] for i in range(n_sentences)]
    text = ""
    for i, s in enumerate(sents):
        sep = "" if i == 0 else ("\n" if newline_every and i % newline_every == 0 else " ")
        text += sep + s
    spans = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    words = pd.DataFrame({"word": [w.strip('".,') for _, _, w in spans],
                          "char_start": [s for s, _, _ in spans],
                          "char_end": [e for _, e, _ in spans]})
    return words, text


def _split_words(texts, horizon, eos):
    """Independent restatement of the word rule: (word ends, number of tokens used)."""
    ends, started, content = [], 0, False
    for k, (txt, is_eos) in enumerate(zip(texts, eos)):
        if is_eos:
            if started and content:
                ends.append(k - 1)
            return ends, k + 1
        if txt[:1] in (" ", "\n", "\t", "\r") and (started == 0 or content):
            if started:
                ends.append(k - 1)
                if len(ends) == horizon:
                    return ends, k + 1
            started, content = started + 1, txt.strip() != ""
        else:
            content = content or txt.strip() != ""
    return ends, len(texts)


def _reference(model, tok, ids, t, horizon, context_tokens, max_new):
    """One word, no batching, no cache: greedy tokens by full forward passes, then the
    activations of the generated words by extract_word_activations on past + continuation."""
    ctx = list(ids[max(0, t + 1 - (context_tokens - max_new)): t + 1])
    gen = []
    with torch.inference_mode():
        for _ in range(max_new):
            logits = model(torch.tensor([ctx + gen])).logits[0, -1]
            gen.append(int(logits.argmax()))
    texts = [tok.decode([g]) for g in gen]
    ends, used = _split_words(texts, horizon, [g == tok.eos_token_id for g in gen])
    full = np.array(ctx + gen[:used])
    acts = np.zeros((lm.n_layers(model) + 1, horizon, model.config.n_embd), np.float32)
    if ends:
        acts[:, :len(ends)] = F.extract_word_activations(
            model, full, len(ctx) + np.array(ends), context_tokens=len(full), backend="hf")
    return gen[:used], ends, acts


# ---------------------------------------------------------------------------- greedy = naive

@pytest.mark.parametrize("context_tokens", [1024, 36])
def test_greedy_equals_one_word_at_a_time_reference(tiny, context_tokens):
    """Batched greedy (shared story prefix for the first window; batched truncated windows
    beyond it) = one word at a time with full forward passes: same token ids, same
    activations (1e-4), at every layer."""
    model, tok = tiny
    words, text = _story(4)
    horizon, max_new = 3, C.default_max_new_tokens(3)
    acts, info = C.generate_continuations(words, text, model, tok, horizon, batch_size=4,
                                          context_tokens=context_tokens, return_info=True)
    assert acts.shape == (13, len(words), horizon, 64) and acts.dtype == np.float32
    ids, last = F.word_token_index(text, words.char_start, words.char_end, tok)
    if context_tokens < 1024:  # both regimes are exercised
        assert (last + 1 > context_tokens - max_new).sum() >= 5
        assert (last + 1 <= context_tokens - max_new).sum() >= 5
    checked = 0
    for n in list(range(0, len(words), 4)) + [len(words) - 1]:
        gen, ends, ref = _reference(model, tok, ids, int(last[n]), horizon, context_tokens,
                                    max_new)
        assert info["tokens"][n].tolist() == gen
        assert info["word_end"][n].tolist() == ends + [-1] * (horizon - len(ends))
        np.testing.assert_allclose(acts[:, n], ref, atol=1e-4, rtol=1e-4)
        checked += len(ends)
    assert checked >= 5  # real generated words were compared, not only zeros


def test_generated_activations_equal_story_features_on_continued_text(tiny):
    """Known answer: the activations of generated words are those story_features computes on
    the text 'true past + generated continuation' (sampled, so that continuations vary)."""
    model, tok = tiny
    words, text = _story(3)
    acts, info = C.generate_continuations(words, text, model, tok, 4, method="sample", seed=3,
                                          top_k=50, return_info=True)
    ids, last = F.word_token_index(text, words.char_start, words.char_end, tok)
    tested = 0
    for n in range(len(words)):
        ends = [e for e in info["word_end"][n] if e >= 0]
        if not ends:
            continue
        gen = info["tokens"][n][:ends[-1] + 1].tolist()
        text2 = tok.decode(ids[:last[n] + 1].tolist() + gen)
        enc = tok(text2, return_offsets_mapping=True)
        if enc["input_ids"] != ids[:last[n] + 1].tolist() + gen:
            continue  # the continued text re-tokenises differently: not a clean known answer
        offsets = np.array(enc["offset_mapping"])[last[n] + 1:]
        gen_words = pd.DataFrame({"char_start": offsets[ends, 0], "char_end": offsets[ends, 1]})
        words2 = pd.concat([words.iloc[:n + 1][["char_start", "char_end"]], gen_words],
                           ignore_index=True)
        ref = F.story_features(words2, text2, model, tok)
        np.testing.assert_allclose(acts[:, n, :len(ends)], ref[:, n + 1:], atol=1e-4,
                                   rtol=1e-4)
        tested += 1
        if tested == 4:
            break
    assert tested >= 3


# ------------------------------------------------------------------------ batch independence

@pytest.mark.parametrize("method", ["greedy", "sample"])
def test_continuations_do_not_depend_on_batch_size(tiny, method):
    model, tok = tiny
    words, text = _story(4, newline_every=2)
    kw = dict(method=method, seed=7, context_tokens=40, return_info=True)
    a1, i1 = C.generate_continuations(words, text, model, tok, 3, batch_size=1, **kw)
    for bs in (3, 8):
        a, i = C.generate_continuations(words, text, model, tok, 3, batch_size=bs, **kw)
        for n in range(len(words)):
            assert i["tokens"][n].tolist() == i1["tokens"][n].tolist()
        np.testing.assert_array_equal(i["word_end"], i1["word_end"])
        np.testing.assert_allclose(a, a1, atol=1e-5, rtol=1e-5)
    assert (i1["word_end"] >= 0).sum() >= 10


def test_hf_backend_equals_fast_decoder(tiny):
    """The generic HuggingFace path (DynamicCache, left padding, position ids) gives the same
    continuations and activations as the GPT-2 decoder with a shared prefix."""
    model, tok = tiny
    words, text = _story(3)
    kw = dict(method="sample", seed=1, context_tokens=30, batch_size=5, return_info=True,
              layers=[0, 5, 12])
    a, i = C.generate_continuations(words, text, model, tok, 3, **kw)
    b, j = C.generate_continuations(words, text, model, tok, 3, backend="hf", **kw)
    assert [t.tolist() for t in i["tokens"]] == [t.tolist() for t in j["tokens"]]
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    assert (i["word_end"] >= 0).sum() >= 10


def test_layer_selection_keeps_order(tiny):
    model, tok = tiny
    words, text = _story(2)
    full = C.generate_continuations(words, text, model, tok, 2)
    sel = C.generate_continuations(words, text, model, tok, 2, layers=[12, 0, 4])
    np.testing.assert_allclose(sel, full[[12, 0, 4]], atol=1e-6)
    assert (np.abs(full[0]).sum(axis=-1) > 0).sum() >= 5


# -------------------------------------------------------------------------------- sampling

def test_sampling_is_seeded(tiny):
    model, tok = tiny
    words, text = _story(2)
    kw = dict(method="sample", return_info=True, top_k=20, temperature=0.8)
    a, i = C.generate_continuations(words, text, model, tok, 3, seed=11, **kw)
    b, j = C.generate_continuations(words, text, model, tok, 3, seed=11, **kw)
    c, k = C.generate_continuations(words, text, model, tok, 3, seed=12, **kw)
    np.testing.assert_array_equal(a, b)
    assert all(x.tolist() == y.tolist() for x, y in zip(i["tokens"], j["tokens"]))
    differ = sum(x.tolist() != y.tolist() for x, y in zip(i["tokens"], k["tokens"]))
    assert differ >= len(words) // 2
    assert not np.array_equal(a, c)
    # greedy continuations of this random model are far more repetitive than sampled ones
    g, gi = C.generate_continuations(words, text, model, tok, 3, return_info=True)
    assert [t.tolist() for t in gi["tokens"]] != [t.tolist() for t in i["tokens"]]


def test_top_k_restricts_the_first_token(tiny):
    """With top_k=3, every first generated token is among the 3 most likely ones."""
    model, tok = tiny
    words, text = _story(2)
    _, info = C.generate_continuations(words, text, model, tok, 2, method="sample", top_k=3,
                                       return_info=True)
    ids, last = F.word_token_index(text, words.char_start, words.char_end, tok)
    with torch.inference_mode():
        logits = model(torch.as_tensor(ids)[None]).logits[0]
    top3 = torch.topk(logits[torch.as_tensor(last)], 3).indices.numpy()
    first = np.array([t[0] for t in info["tokens"]])
    assert np.all((top3 == first[:, None]).any(axis=1))
    assert len(set(first.tolist())) > 1 or np.all(top3[:, 0] == first)


# ------------------------------------------------------------------------------ word rule

def test_word_rule():
    w = C._Words(3)
    toks = [".", " The", " cat", "\n", "\n", "Then", " he", " x"]
    for k, t in enumerate(toks):
        if not w.done:
            w.push(k, t, False)
    # "." continues the true word; "\n\nThen" is one word (whitespace-only tokens merge)
    assert w.ends == [1, 2, 5] and w.done and w.used == 7
    w = C._Words(3)
    for k, t in enumerate([" a", "b", " c", "<eos>", " d"]):
        if not w.done:
            w.push(k, t, t == "<eos>")
    assert w.ends == [1, 2] and w.done and w.used == 4  # end of text completes " c"


def test_unreachable_horizon_gives_zeros_and_is_reported(tiny, caplog):
    model, tok = tiny
    words, text = _story(2)
    with caplog.at_level(logging.WARNING, logger="brainpred.continuations"):
        acts, info = C.generate_continuations(words, text, model, tok, 3, max_new_tokens=2,
                                              return_info=True)
    # 2 tokens complete at most 1 word (its end is known only once word 2 starts)
    assert (info["n_complete"] <= 1).all()
    missing = info["word_end"] < 0
    assert info["n_missing"] == missing.sum() >= 2 * len(words)
    assert np.all(acts[:, missing] == 0)
    assert np.all(np.abs(acts[:, ~missing]).sum(axis=-1) > 0)
    assert f"{info['n_missing']} of {3 * len(words)} words missing" in caplog.text
    assert all(len(t) <= 2 for t in info["tokens"])


# -------------------------------------------------------------------------------- windows

@pytest.mark.parametrize("d", [-3, 0, 1, 5, 8])
def test_generated_windows_equal_forecast_windows_for_a_perfect_model(d):
    rng = np.random.default_rng(0)
    n_words, horizon, dim = 20, 8, 3
    X = rng.standard_normal((n_words, dim)).astype(np.float32)
    G = np.zeros((n_words, horizon, dim), np.float32)
    for n in range(n_words):
        for j in range(1, horizon + 1):
            if n + j < n_words:
                G[n, j - 1] = X[n + j]
    np.testing.assert_array_equal(generated_windows(G, X, d), forecast_windows(X, d, 7))
    # j <= 0 blocks come from X, j >= 1 blocks from the continuation (even at the story end)
    R = rng.standard_normal(G.shape).astype(np.float32)
    W, T = generated_windows(R, X, d), forecast_windows(X, d, 7)
    for k in range(7):
        j, cols = d - 6 + k, slice(3 * k, 3 * k + 3)
        if j <= 0:
            np.testing.assert_array_equal(W[:, cols], T[:, cols])
        else:
            np.testing.assert_array_equal(W[:, cols], R[:, j - 1])


# --------------------------------------------------------------------------------- errors

def test_errors(tiny):
    model, tok = tiny
    words, text = _story(1)
    for kw, key in [(dict(method="beam"), "controls.generated.method"),
                    (dict(method="sample", temperature=0), "controls.generated.temperature"),
                    (dict(top_k=-1), "controls.generated.top_k"),
                    (dict(layers=[13]), "controls.generated.layers"),
                    (dict(context_tokens=10), "controls.generated.max_new_tokens")]:
        with pytest.raises(ConfigError, match=re.escape(key)):
            C.generate_continuations(words, text, model, tok, 3, **kw)
    with pytest.raises(ConfigError, match="controls.generated.horizon"):
        C.generate_continuations(words, text, model, tok, 0)
    with pytest.raises(ConfigError, match="controls.generated.horizon"):
        generated_windows(np.zeros((5, 8, 2)), np.zeros((5, 2)), 9)
    with pytest.raises(ValueError):
        generated_windows(np.zeros((5, 8, 2)), np.zeros((4, 2)), 1)
