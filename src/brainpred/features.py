"""Language-model activations of every word of a story (method section 3).

Pipeline for one story::

    model, tokenizer = lm.load_model("gpt2")            # or "tiny-gpt2" (offline, random)
    input_ids, last_token = word_token_index(text, words.char_start, words.char_end, tokenizer)
    acts = extract_word_activations(model, input_ids, last_token)   # (n_layers + 1, n_words, dim)
    save_features("features.npz", acts, words, meta)

Conventions
-----------
- The story is tokenised **once** (fast tokenizer, ``return_offsets_mapping=True``); a word's
  token is the **last** token whose character span overlaps the word's own characters: its
  span ``[char_start, char_end)`` without the trailing characters that are neither letters nor
  digits (the punctuation a punctuated transcript restores: ``"said,"`` is read at ``" said"``,
  not at ``","``; the punctuation stays in the text, so the next word's context holds it).
  Words are never re-tokenised one by one.
- A word's vector is the hidden state at its last token, computed with **past-only** context:
  at most ``context_tokens`` tokens ending at (and including) that token, never a future token.
- Layer 0 is the token embedding **without** the position embedding
  (``model.get_input_embeddings()`` of the token). Layers ``1..L`` are HuggingFace's
  ``output_hidden_states[1:]``: by HF convention the last one (layer ``L``) is taken *after* the
  model's final layer norm (``ln_f`` for GPT-2), the others are the raw residual stream after
  each block.
- ``mode="exact"`` (the reference) gives every word its full ``context_tokens`` window;
  ``mode="strided"`` (fast) reads words from overlapping windows where they have at least
  ``min_context`` past tokens. See :func:`extract_word_activations`.
- Plain GPT-2 models run through :class:`brainpred.lm.FastGPT2` (the same function as HF's
  forward to float rounding; the last block is computed only at the read positions); other
  causal LMs through their HuggingFace forward (:func:`brainpred.lm.hf_states`). Model loading
  lives in :mod:`brainpred.lm`. Speed, exactness and the exact-vs-strided difference are measured
  in ``docs/features.md`` (``benchmarks/bench_features.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import provenance as prov
from .errors import ConfigError, DataError
from .io import atomic_write, load_npz
from .lm import max_positions, n_layers, place_model, states_forward

__all__ = [
    "word_token_index",
    "check_last_token",
    "read_positions",
    "extract_word_activations",
    "story_features",
    "save_features",
    "load_features",
]

# --------------------------------------------------------------------------------------------
# Words to tokens
# --------------------------------------------------------------------------------------------

def word_token_index(text, char_start, char_end, tokenizer):
    """Tokenise a story once and find the last token of every word.

    Parameters
    ----------
    text : str
        The text the model reads.
    char_start, char_end : array-like of int, shape (n_words,)
        Span ``[char_start, char_end)`` of each word in ``text``.
    tokenizer : transformers.PreTrainedTokenizerFast
        Must provide offsets (``return_offsets_mapping=True``).

    Returns
    -------
    input_ids : ndarray of int64, shape (n_tokens,)
    last_token : ndarray of int64, shape (n_words,)
        Index into ``input_ids`` of the last token whose character span overlaps the word's
        own characters: the span up to its last letter or digit (``str.isalnum``), so that
        trailing punctuation in the span (``"said,"``, ``"end.”"``, ``"goin'"``) is not where
        the word is read; a span without any letter or digit (``"—"``) is read at the last
        token overlapping the whole span. GPT-2 tokens carry the preceding space
        (``" hello"`` spans ``(5, 11)`` or ``(6, 11)`` depending on ``trim_offsets``); a span
        overlaps the word if ``tok_start < end`` and ``tok_end > char_start``, so both
        conventions give the same answer. Zero-width tokens (special tokens) are never chosen.
        Several words may share a token (a token holding letters of two words).

    Raises
    ------
    DataError
        A span lies outside ``text`` or is empty, or a word overlaps no token.
    ConfigError
        The tokenizer is not a fast tokenizer.
    """
    cs = np.asarray(char_start, dtype=np.int64).reshape(-1)
    ce = np.asarray(char_end, dtype=np.int64).reshape(-1)
    if cs.shape != ce.shape:
        raise DataError(f"word spans: char_start has {cs.size} values but char_end {ce.size}.")
    bad = np.flatnonzero((cs < 0) | (ce > len(text)) | (ce <= cs))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"word {i}: span [{cs[i]}, {ce[i]}) is empty or outside the text "
                        f"({len(text)} characters); {bad.size} bad span(s). Rebuild the word "
                        "table (char_start/char_end) from this text.")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("model.name: the tokenizer is not a fast tokenizer, so it has no "
                          "character offsets; load it with use_fast=True.")
    end = _letters_end(text, cs, ce)   # the word's own characters, not its punctuation
    enc = tokenizer(text, return_offsets_mapping=True, verbose=False)
    input_ids = np.asarray(enc["input_ids"], dtype=np.int64).reshape(-1)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    if input_ids.size == 0 and cs.size:
        raise DataError("the story text produced no token; check the transcript file.")
    tok_idx = np.flatnonzero(offsets[:, 1] > offsets[:, 0])  # drop zero-width (special) tokens
    ts, te = offsets[tok_idx, 0], offsets[tok_idx, 1]
    if np.all(np.diff(ts) >= 0):
        # last valid token starting before the word's end ...
        k = np.searchsorted(ts, end, side="left") - 1
        ok = k >= 0
        # ... overlaps the word iff it ends after the word's start
        ok[ok] = te[k[ok]] > cs[ok]
        last = np.where(ok, tok_idx[np.clip(k, 0, None)] if tok_idx.size else -1, -1)
    else:  # pragma: no cover - no known fast tokenizer yields unsorted offsets
        last = np.full(cs.size, -1, dtype=np.int64)
        for w in range(cs.size):
            hit = np.flatnonzero((ts < end[w]) & (te > cs[w]))
            if hit.size:
                last[w] = tok_idx[hit[-1]]
    missing = np.flatnonzero(last < 0)
    if missing.size:
        i = int(missing[0])
        raise DataError(f"word {i} ({text[cs[i]:ce[i]]!r}, span [{cs[i]}, {ce[i]})) overlaps no "
                        f"token; {missing.size} word(s) without a token. Check the word spans.")
    return input_ids, last.astype(np.int64)


def _letters_end(text, cs, ce):
    """End of each span ``[cs, ce)`` after its last letter or digit (``ce`` when it has none)."""
    if cs.size == 0:
        return ce
    alnum = np.fromiter((c.isalnum() for c in text), dtype=bool, count=len(text))
    last = np.where(alnum, np.arange(len(text)), -1)
    np.maximum.accumulate(last, out=last)        # last[i]: last letter/digit at or before i
    end = last[ce - 1] + 1
    return np.where(end > cs, end, ce).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------

def _plan(uniq, n_tok, C, mode, min_context):
    """Windows to run: list of (start, end (excl.), read token positions, indices into uniq)."""
    head = uniq < C
    jobs = []
    if head.any():  # one pass over the first window serves every word inside it
        jobs.append((0, min(C, n_tok), uniq[head], np.flatnonzero(head)))
    tail = np.flatnonzero(~head)
    if mode == "exact":
        jobs += [(int(uniq[j]) - C + 1, int(uniq[j]) + 1, uniq[j:j + 1], np.array([j]))
                 for j in tail]
    else:
        stride = C - int(min_context)
        # first window k whose start k * stride > t - C (so t is inside), hence has
        # t - k * stride >= min_context past tokens
        k = (uniq[tail] - C) // stride + 1
        for kk in np.unique(k):
            sel = tail[k == kk]
            s = int(kk) * stride
            jobs.append((s, min(s + C, n_tok), uniq[sel], sel))
    return jobs


def _batches(jobs, batch_size):
    """The first-window job alone, the others by decreasing length (equal lengths together:
    no padding between full windows), ``batch_size`` windows per batch."""
    first = [[jobs[0]]] if jobs and jobs[0][0] == 0 else []
    rest = jobs[len(first):]
    rest = sorted(rest, key=lambda j: -(j[1] - j[0]))  # stable: story order within a length
    return first + [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)]


def check_last_token(last, n_tok):
    """Check word token indices against the story's length.

    Parameters
    ----------
    last : int ndarray, shape (n_words,)
        Token index of each word (:func:`word_token_index`).
    n_tok : int
        Number of tokens of the story.

    Raises
    ------
    DataError
        An index outside ``[0, n_tok)``.
    """
    if last.size and (last.min() < 0 or last.max() >= n_tok):
        raise DataError(f"last_token: indices must lie in [0, {n_tok}); got range "
                        f"[{last.min()}, {last.max()}]. Recompute them with word_token_index.")


def extract_word_activations(model, input_ids, last_token, context_tokens=1024, batch_size=8,
                             mode="exact", min_context=512, device=None, progress=False,
                             backend="auto"):
    """Hidden states of every word at its last token, with past-only context.

    Parameters
    ----------
    model : transformers causal LM (e.g. ``GPT2LMHeadModel``)
        Put in eval mode. Its LM head is not run.
    input_ids : array-like of int, shape (n_tokens,)
        The whole story, tokenised once (:func:`word_token_index`).
    last_token : array-like of int, shape (n_words,)
        Token index of each word (non-decreasing is not required). Words sharing a token are
        computed once.
    context_tokens : int
        Maximum number of tokens a word sees, its own last token included (1024 for GPT-2).
        Must not exceed the model's number of positions.
    batch_size : int
        Number of windows per forward pass (on CPU 1-8 are equally fast; on GPU larger is
        faster until memory runs out).
    mode : {"exact", "strided"}
        ``"exact"`` (reference): a causal model's states for a prefix do not depend on what
        follows, so every word whose token ``t < context_tokens`` is read from ONE pass over the
        first ``context_tokens`` tokens (it sees all of its past); each later word gets its own
        window ``tokens[t - context_tokens + 1 .. t]`` (batched, one window per distinct token).
        This equals running the model on each word's context one at a time.
        ``"strided"`` (fast): windows of ``context_tokens`` tokens starting every
        ``stride = context_tokens - min_context`` tokens (the last one truncated at the end of
        the story); a word is read from the first window (starting at token 0) if it lies in it,
        otherwise from the first window where it has at least ``min_context`` past tokens
        (hence between ``min_context + 1`` and ``context_tokens`` tokens of context, its own
        included). Words of the first window are identical to exact mode. Cost ~
        ``n_tokens / stride`` windows instead of one per word.
    min_context : int
        Strided mode only: ``0 <= min_context < context_tokens``.
    device : str or None
        Where to run; ``None`` = where the model is (the model is moved otherwise).
    progress : bool
        Show a tqdm progress bar (unit: windows).
    backend : {"auto", "hf"}
        ``"auto"``: plain GPT-2 models use :class:`brainpred.lm.FastGPT2` (same function,
        computes only the read positions in the last block, fused attention and GELU); other
        models, or ``"hf"``, use the model's HuggingFace forward with
        ``output_hidden_states`` (:func:`brainpred.lm.states_forward`).

    Returns
    -------
    activations : ndarray of float32, shape (n_layers + 1, n_words, dim)
        Layer 0 = token embedding without position embedding; layers 1..L = HF
        ``hidden_states[1:]`` (the last one after the final layer norm).
    """
    import torch

    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    last = np.asarray(last_token, dtype=np.int64).reshape(-1)
    n_tok = ids.size
    C = int(context_tokens)
    if C < 1:
        raise ConfigError(f"features.context_tokens: must be >= 1, got {context_tokens}.")
    max_pos = max_positions(model)
    if max_pos is not None and C > max_pos:
        raise ConfigError(f"features.context_tokens: {C} exceeds the model's {max_pos} "
                          f"positions; set it to at most {max_pos}.")
    if int(batch_size) < 1:
        raise ConfigError(f"features.batch_size: must be >= 1, got {batch_size}.")
    if mode not in ("exact", "strided"):
        raise ConfigError(f"features.mode: {mode!r} is not 'exact' or 'strided'.")
    if mode == "strided" and not 0 <= int(min_context) < C:
        raise ConfigError(f"features.min_context: must satisfy 0 <= min_context < "
                          f"context_tokens ({C}), got {min_context}.")
    if backend not in ("auto", "hf"):
        raise ConfigError(f"backend: {backend!r} is not 'auto' or 'hf'.")
    check_last_token(last, n_tok)
    dev = place_model(model, device)
    dim = int(model.get_input_embeddings().embedding_dim)
    L = n_layers(model)
    if last.size == 0:
        return np.empty((L + 1, 0, dim), dtype=np.float32)

    # distinct tokens to read, and the words that read each
    uniq, inverse = np.unique(last, return_inverse=True)
    batches = _batches(_plan(uniq, n_tok, C, mode, min_context), int(batch_size))
    forward = states_forward(model, backend)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=sum(len(b) for b in batches), desc=f"activations ({mode})",
                   unit="window")
    with torch.inference_mode():
        ids_dev = torch.as_tensor(ids, device=dev)
        states = torch.empty((L + 1, uniq.size, dim), dtype=torch.float32, device=dev)
        for batch in batches:
            lengths = [e - s for s, e, _, _ in batch]
            T = max(lengths)
            if min(lengths) == T:  # windows of equal length: strided views, no copy loop
                starts = torch.as_tensor([s for s, _, _, _ in batch], device=dev)
                win = ids_dev[starts[:, None] + torch.arange(T, device=dev)]
            else:
                # right padding with token 0 (any id works: padded keys are masked out and
                # padded positions never read)
                win = torch.zeros((len(batch), T), dtype=torch.long, device=dev)
                for i, (s, e, _, _) in enumerate(batch):
                    win[i, :e - s] = ids_dev[s:e]
            qpos, qvalid = read_positions([pos - s for s, _, pos, _ in batch])
            vals = forward(win, lengths, qpos, qvalid)
            dest = torch.as_tensor(np.concatenate([j for _, _, _, j in batch]), device=dev)
            states[:, dest] = vals.float()
            if bar is not None:
                bar.update(len(batch))
        result = states.cpu().numpy()
    if bar is not None:
        bar.close()
    return result[:, inverse]


def read_positions(reads):
    """Padded read positions of a batch of sequences, as the forward passes take them.

    Parameters
    ----------
    reads : list of int arrays
        Positions to read in each sequence (non-empty).

    Returns
    -------
    qpos : int64 array of shape (n_sequences, max_reads)
        Each row padded with its last position (a valid index, never used).
    qvalid : bool array of shape (n_sequences, max_reads)
        True where ``qpos`` is a real read.
    """
    Q = max(len(r) for r in reads)
    qpos = np.zeros((len(reads), Q), dtype=np.int64)
    qvalid = np.zeros((len(reads), Q), dtype=bool)
    for i, r in enumerate(reads):
        qpos[i] = r[-1]
        qpos[i, :len(r)] = r
        qvalid[i, :len(r)] = True
    return qpos, qvalid


def story_features(words, text, model, tokenizer, **kw):
    """Activations of the words of one story: :func:`word_token_index` then
    :func:`extract_word_activations`.

    Parameters
    ----------
    words : DataFrame
        Word table with columns ``char_start`` and ``char_end`` (spans in ``text``).
    text : str
    model, tokenizer
        From :func:`brainpred.lm.load_model`.
    **kw
        Passed to :func:`extract_word_activations`.

    Returns
    -------
    activations : ndarray of float32, shape (n_layers + 1, n_words, dim)
    """
    for col in ("char_start", "char_end"):
        if col not in words.columns:
            raise DataError(f"word table: column {col!r} is missing; build it with "
                            "brainpred.narratives.story_words.")
    input_ids, last = word_token_index(text, words["char_start"].to_numpy(),
                                       words["char_end"].to_numpy(), tokenizer)
    return extract_word_activations(model, input_ids, last, **kw)


# --------------------------------------------------------------------------------------------
# Cache files
# --------------------------------------------------------------------------------------------

_COL = "word__"


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_features(path, activations, words, meta=None, provenance=None):
    """Write activations, their word table and metadata to one ``.npz`` file, atomically.

    Parameters
    ----------
    path : str or Path
    activations : ndarray, shape (n_layers + 1, n_words, dim)
        Stored as float32.
    words : DataFrame, n_words rows
        Each column is stored as an array (strings as unicode, no pickle).
    meta : dict
        JSON-serialisable metadata (model name, context, mode...).
    provenance : dict, optional
        What the activations were made from (:func:`brainpred.provenance.features_record`),
        stored as a JSON string under ``provenance``; readers refuse a cache without it.
    """
    acts = np.asarray(activations, dtype=np.float32)
    if acts.ndim != 3 or acts.shape[1] != len(words):
        raise ValueError(f"activations of shape {acts.shape} do not match {len(words)} words "
                         "(expected (n_layers + 1, n_words, dim)).")
    arrays = {"activations": acts,
              "meta_json": np.array(json.dumps(meta or {}, default=_json_default)),
              "word_columns": np.array([str(c) for c in words.columns], dtype=str)}
    if provenance is not None:
        arrays[prov.KEY] = prov.to_array(provenance)
    for col in words.columns:
        values = words[col].to_numpy()
        if values.dtype.kind in "biuf":
            arrays[_COL + str(col)] = values
        else:
            arrays[_COL + str(col)] = np.asarray([str(v) for v in values], dtype=str)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def load_features(path, expect=None):
    """Read a file written by :func:`save_features`, checking that it is consistent.

    Parameters
    ----------
    path : str or Path
    expect : dict, optional
        Metadata the file must carry (e.g. ``{"name": "gpt2", "context_tokens": 1024,
        "mode": "exact"}``); a missing key or another value raises :class:`DataError`.

    Returns
    -------
    activations : ndarray of float32, shape (n_layers + 1, n_words, dim)
    words : DataFrame, n_words rows
    meta : dict
        The file's metadata; its provenance record (:mod:`brainpred.provenance`), when it has
        one, under ``meta["provenance"]``.

    Raises
    ------
    DataError
        Missing, unreadable or malformed file, activations whose shape does not match the word
        table (or the ``n_layers`` / ``dim`` / ``n_words`` recorded in the metadata, when
        present), non-finite activations, or metadata differing from ``expect``. The message
        names the file.
    """
    path = Path(path)
    z = load_npz(path)
    fix = "Delete it and re-run the workflow step that extracts features."
    try:
        acts = z["activations"]
        columns = [str(c) for c in z["word_columns"]]
        meta = json.loads(str(z["meta_json"]))
        words = pd.DataFrame({c: z[_COL + c] for c in columns})
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a brainpred features file (missing or invalid {exc}). "
                        f"{fix}") from exc
    if not isinstance(meta, dict):
        raise DataError(f"{path}: its metadata is a {type(meta).__name__}, not a mapping. {fix}")
    if acts.ndim != 3 or acts.shape[1] != len(words):
        raise DataError(f"{path}: activations of shape {acts.shape} do not match the "
                        f"{len(words)}-word table (expected (n_layers + 1, n_words, dim)). "
                        f"{fix}")
    for key, axis, offset in (("n_layers", 0, 1), ("n_words", 1, 0), ("dim", 2, 0)):
        if isinstance(meta.get(key), int) and acts.shape[axis] != meta[key] + offset:
            raise DataError(f"{path}: activations of shape {acts.shape} do not match its "
                            f"metadata {key} = {meta[key]}. {fix}")
    if acts.dtype.kind != "f":
        raise DataError(f"{path}: activations have dtype {acts.dtype}, not floating point. "
                        f"{fix}")
    acts = acts.astype(np.float32, copy=False)
    if not np.isfinite(acts).all():
        bad = np.argwhere(~np.isfinite(acts))[0]
        raise DataError(f"{path}: non-finite activation at layer {bad[0]}, word {bad[1]}. "
                        f"{fix}")
    for key, value in (expect or {}).items():
        if key not in meta or meta[key] != value:
            raise DataError(f"{path}: metadata {key} = {meta.get(key, '<missing>')!r}, expected "
                            f"{value!r}: the file was made with other settings. {fix}")
    rec = prov.read(path, z)
    if rec is not None:
        meta = {**meta, "provenance": rec}
    return acts, words, meta
