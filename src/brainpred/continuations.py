"""Forecast windows built from the language model's OWN predicted futures (issue 7, control b).

The forecast window ``W_d`` of word ``n`` (:func:`brainpred.design.forecast_windows`)
concatenates the activations of the TRUE words ``n+d-width+1 .. n+d``. This control replaces
the true future words (``n+1, n+2, ...``) by a continuation the model generates itself from the
true past::

    model, tokenizer = lm.load_model("gpt2")
    gen = generate_continuations(words, text, model, tokenizer, horizon=30, layers=[8])
    X = features.story_features(words, text, model, tokenizer)[8]         # true activations
    W = design.generated_windows(gen[0], X, distance=5)                     # (n_words, 7 * D)

Definition
----------
For every word ``n`` of a story (last BPE token ``t_n``, see
:func:`brainpred.features.word_token_index`):

1. **Context**: the story's tokens up to and including ``t_n``, truncated to the last
   ``context_tokens - max_new_tokens`` tokens (positions restart at 0 at the window start, as
   in :func:`brainpred.features.extract_word_activations`), so that context + generated tokens
   never exceed ``context_tokens``.
2. **Generation**: greedy (argmax, first index on ties) or sampled (softmax of
   ``logits / temperature``, optionally restricted to the ``top_k`` largest logits, drawn by
   inverse CDF with one uniform number per step from ``numpy.random.default_rng([seed, n])``:
   word ``n``'s continuation depends neither on the batch it runs in nor on the other words),
   one token at a time, at most ``max_new_tokens`` (default ``ceil(2 * horizon) + 4``) tokens.
3. **Words**: a generated word starts at a token whose text begins with whitespace (GPT-2:
   ``" the"``, ``"\\n"``) once the word before it has a non-whitespace character (leading
   whitespace-only tokens are merged into the word they precede). Tokens generated before the
   first such token (``"."``, ``"'s"``) continue the true word ``n`` and are context only. Word
   ``j`` (``1..horizon``) is complete when word ``j + 1`` starts (or an end-of-text token
   comes); generation stops as soon as word ``horizon`` is complete. Words not complete
   within ``max_new_tokens`` tokens (or after an end-of-text token) are **missing**: their
   activations are zeros, and their number is logged (warning) and returned in ``info``.
4. **Activations**: generated word ``j``'s vector is the hidden state at its **last** token,
   with the true past + the generated tokens before it as context, at each selected layer
   (layer 0 = token embedding without position embedding; layers ``1..L`` = HF
   ``hidden_states[1:]``, the last one after the final layer norm: exactly as in
   :mod:`brainpred.features`).

:func:`brainpred.design.generated_windows` then builds ``W_d`` with the TRUE activations at window positions
``j <= 0`` (relative to word ``n``) and the generated ones at ``j >= 1``, in the column layout
of :func:`brainpred.design.forecast_windows` (so that a model predicting the true future
exactly gives the true windows).

Implementation
--------------
Plain GPT-2 models use the incremental decoding of :class:`brainpred.lm.FastGPT2` (the
model's own modules and weights, a key/value cache; same function as HF's forward to float
rounding): the keys and values of a
story's first ``context_tokens - max_new_tokens`` tokens are computed ONCE and shared by every
word whose context fits in them (a causal model's states for a prefix do not depend on what
follows); later words (truncated windows, all of the same length) get one batched prefix pass
each. Other causal LMs (or ``backend="hf"``) use their HuggingFace forward with a
``DynamicCache``, left padding, an attention mask and explicit position ids.
"""

from __future__ import annotations

import logging
import math
from numbers import Integral, Real

import numpy as np

from .errors import ConfigError, DataError
from .features import check_last_token, word_token_index
from .lm import FastGPT2, backbone, max_positions, n_layers, place_model

__all__ = [
    "METHODS",
    "default_max_new_tokens",
    "generate_continuations",
    "generate_from_tokens",
]

log = logging.getLogger(__name__)

#: Generation methods (config key ``controls.generated.method``).
METHODS = ("greedy", "sample")


def default_max_new_tokens(horizon):
    """Token budget of a continuation of ``horizon`` words: ``ceil(2 * horizon) + 4``."""
    return int(math.ceil(2 * horizon)) + 4


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

def _is_int(x):
    return isinstance(x, Integral) and not isinstance(x, bool)


def _check_options(horizon, method, seed, temperature, top_k, max_new_tokens, batch_size):
    if not _is_int(horizon) or horizon < 1:
        raise ConfigError(f"controls.generated.horizon: must be an integer >= 1 (number of "
                          f"generated words per word), got {horizon!r}.")
    if method not in METHODS:
        raise ConfigError(f"controls.generated.method: {method!r} is not one of "
                          f"{', '.join(map(repr, METHODS))}.")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"controls.generated.seed: must be an integer >= 0, got {seed!r}.")
    if (not isinstance(temperature, Real) or isinstance(temperature, bool)
            or not math.isfinite(temperature) or temperature <= 0):
        raise ConfigError(f"controls.generated.temperature: must be a finite number > 0, got "
                          f"{temperature!r} (use method 'greedy' for the most likely "
                          "continuation).")
    if not _is_int(top_k) or top_k < 0:
        raise ConfigError(f"controls.generated.top_k: must be an integer >= 0 (0 = whole "
                          f"vocabulary), got {top_k!r}.")
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ConfigError(f"controls.generated.max_new_tokens: must be an integer >= 1, got "
                          f"{max_new_tokens!r}.")
    if not _is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"controls.generated.batch_size: must be an integer >= 1, got "
                          f"{batch_size!r}.")


def _check_layers(layers, L):
    if layers is None:
        return list(range(L + 1))
    try:
        sel = [int(x) for x in np.asarray(layers).reshape(-1)]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"controls.generated.layers: {layers!r} is not a list of layer "
                          f"indices in 0..{L}.") from exc
    bad = [x for x in sel if not 0 <= x <= L]
    if not sel or bad:
        raise ConfigError(f"controls.generated.layers: {layers!r} must be a non-empty list of "
                          f"layer indices in 0..{L} (0 = token embedding, {L} = last layer).")
    return sel


# --------------------------------------------------------------------------------------------
# Words of a continuation
# --------------------------------------------------------------------------------------------

class _TokenText:
    """Text of single tokens, as they read inside a text (leading spaces kept), cached.

    Decodes ``[anchor, id]`` and drops the anchor's text, so that tokenizers whose
    single-token decoding strips a leading space (SentencePiece ``"▁the"``) still show it.
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.cache = {}
        ids = tokenizer("a", add_special_tokens=False)["input_ids"]
        self.anchor = int(ids[-1]) if len(ids) else None
        self.prefix = self._decode([self.anchor]) if self.anchor is not None else ""

    def _decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=False,
                               clean_up_tokenization_spaces=False)

    def __call__(self, i):
        i = int(i)
        txt = self.cache.get(i)
        if txt is None:
            if self.anchor is None:
                txt = self._decode([i])
            else:
                full = self._decode([self.anchor, i])
                txt = full[len(self.prefix):] if full.startswith(self.prefix) else \
                    self._decode([i])
            self.cache[i] = txt
        return txt


class _Words:
    """Splits one continuation into words as its tokens come (see the module docstring)."""

    __slots__ = ("horizon", "started", "content", "ends", "done", "used")

    def __init__(self, horizon):
        self.horizon = horizon
        self.used = 0           # tokens pushed
        self.started = 0        # words started (0: still continuing the true word n)
        self.content = False    # the current word has a non-whitespace character
        self.ends = []          # index (among generated tokens) of each complete word's last token
        self.done = False

    def push(self, k, text, eos):
        """Token ``k`` (0-based among generated tokens) with text ``text``."""
        self.used = k + 1
        if eos:
            if self.started and self.content:
                self.ends.append(k - 1)
            self.done = True
            return
        if text[:1].isspace() and (self.started == 0 or self.content):
            if self.started:
                self.ends.append(k - 1)
                if len(self.ends) == self.horizon:
                    self.done = True
                    return
            self.started += 1
            self.content = bool(text.strip())
        else:
            self.content = self.content or bool(text.strip())


# --------------------------------------------------------------------------------------------
# Token choice
# --------------------------------------------------------------------------------------------

def _choose(logits, method, temperature, top_k, uniforms):
    """Next token of each row. logits (B, V); uniforms (B,) float64 tensor (sampling only)."""
    import torch

    if method == "greedy":
        return logits.argmax(dim=-1)
    z = logits.double() / float(temperature)
    V = z.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    p = torch.softmax(z, dim=-1)
    cdf = torch.cumsum(p, dim=-1)
    x = (uniforms * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, x, right=True).squeeze(1).clamp_(max=V - 1)


# --------------------------------------------------------------------------------------------
# Decoders: prefix pass, then one token per step
# --------------------------------------------------------------------------------------------

class _HFDecoder:
    """The model's own HuggingFace forward with a DynamicCache, left padding and a mask."""

    def __init__(self, model):
        import inspect

        self.model = model
        self.base = backbone(model)
        self.head = model.get_output_embeddings()
        self.emb = model.get_input_embeddings()
        params = inspect.signature(self.base.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"

    def start(self, windows, device):
        """windows: list of B 1-d int arrays (contexts) -> first logits (B, V)."""
        import torch
        from transformers import DynamicCache

        B = len(windows)
        T = max(len(w) for w in windows)
        ids = torch.zeros((B, T), dtype=torch.long, device=device)
        mask = torch.zeros((B, T), dtype=torch.long, device=device)
        for b, w in enumerate(windows):
            ids[b, T - len(w):] = torch.as_tensor(w, device=device)
            mask[b, T - len(w):] = 1
        pos = (mask.cumsum(1) - 1).clamp_(min=0)
        self.cache = DynamicCache()
        self.mask = mask
        self.plen = torch.as_tensor([len(w) for w in windows], device=device)
        out = self.base(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                        **{self.cache_kw: self.cache})
        return self.head(out.last_hidden_state[:, -1])

    def step(self, tok, s, keep, L):
        import torch

        B = tok.shape[0]
        self.mask = torch.cat([self.mask, self.mask.new_ones((B, 1))], dim=1)
        out = self.base(input_ids=tok[:, None], attention_mask=self.mask,
                        position_ids=(self.plen + s)[:, None], use_cache=True,
                        output_hidden_states=True, **{self.cache_kw: self.cache})
        hs = out.hidden_states
        states = [self.emb(tok) if i == 0 else hs[i][:, -1] for i in keep]
        return torch.stack(states), self.head(out.last_hidden_state[:, -1])


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------

def generate_from_tokens(model, tokenizer, input_ids, last_token, horizon, method="greedy",
                         seed=0, temperature=1.0, top_k=0, context_tokens=1024, batch_size=8,
                         layers=None, device=None, progress=False, max_new_tokens=None,
                         backend="auto", return_info=False):
    """Continuations generated from each word's true past, and their words' activations.

    Token-level core of :func:`generate_continuations` (same parameters and definition).

    Parameters
    ----------
    model, tokenizer
        Causal LM and its tokenizer (:func:`brainpred.lm.load_model`).
    input_ids : array-like of int, shape (n_tokens,)
        The whole story, tokenised once (:func:`brainpred.features.word_token_index`).
    last_token : array-like of int, shape (n_words,)
        Token index of each word's last token.
    horizon, method, seed, temperature, top_k, context_tokens, batch_size, layers, device,
    progress, max_new_tokens, backend, return_info
        See :func:`generate_continuations`.

    Returns
    -------
    activations : ndarray of float32, shape (n_layers_sel, n_words, horizon, dim)
    info : dict, only with ``return_info=True``
        See :func:`generate_continuations`.
    """
    import torch

    _check_options(horizon, method, seed, temperature, top_k,
                   1 if max_new_tokens is None else max_new_tokens, batch_size)
    M = default_max_new_tokens(horizon) if max_new_tokens is None else int(max_new_tokens)
    if backend not in ("auto", "hf"):
        raise ConfigError(f"backend: {backend!r} is not 'auto' or 'hf'.")
    C = context_tokens
    if not _is_int(C) or C < 1:
        raise ConfigError(f"features.context_tokens: must be an integer >= 1, got {C!r}.")
    max_pos = max_positions(model)
    if max_pos is not None and C > max_pos:
        raise ConfigError(f"features.context_tokens: {C} exceeds the model's {max_pos} "
                          f"positions; set it to at most {max_pos}.")
    P = C - M  # longest context
    if P < 1:
        raise ConfigError(f"controls.generated.max_new_tokens: {M} generated tokens leave no "
                          f"room for context in features.context_tokens = {C}; lower "
                          "controls.generated.horizon / max_new_tokens.")
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    last = np.asarray(last_token, dtype=np.int64).reshape(-1)
    n_tok, n_words = ids.size, last.size
    check_last_token(last, n_tok)
    dev = place_model(model, device)
    L = n_layers(model)
    keep = _check_layers(layers, L)
    kept = sorted(set(keep))
    back = [kept.index(x) for x in keep]  # rows of the computed states, in the asked order
    dim = int(model.get_input_embeddings().embedding_dim)
    eos = {int(x) for x in np.atleast_1d(getattr(model.config, "eos_token_id", None) or [])}
    if getattr(tokenizer, "eos_token_id", None) is not None:
        eos.add(int(tokenizer.eos_token_id))
    text_of = _TokenText(tokenizer)

    acts = np.zeros((len(keep), n_words, horizon, dim), dtype=np.float32)
    tokens = [None] * n_words
    word_end = np.full((n_words, horizon), -1, dtype=np.int64)
    start = np.maximum(last + 1 - P, 0)  # context = ids[start : last + 1]

    fast = backend == "auto" and FastGPT2.supports(model)
    head = np.flatnonzero(last + 1 <= P)   # full past fits: share the story's prefix
    tail = np.flatnonzero(last + 1 > P)    # truncated windows, all of length P
    if fast:  # head and tail words never share a batch
        groups = [head[np.argsort(last[head], kind="stable")], tail]
    else:  # left padding: batch similar lengths together
        order = np.arange(n_words)
        groups = [order[np.argsort(last - start, kind="stable")]]
    batches = [g[i:i + batch_size] for g in groups for i in range(0, g.size, batch_size)]

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_words, desc=f"continuations ({method})", unit="words")

    with torch.inference_mode():
        ids_dev = torch.as_tensor(ids, device=dev)
        if fast:
            dec = FastGPT2(model)
            if head.size:  # one pass over the story's first tokens: its cache, and the final
                # states (after ln_f) at every head word's last token
                reads = np.unique(last[head])
                T0 = int(reads[-1]) + 1
                states, story_past = dec.states(ids_dev[None, :T0], None, reads[None],
                                                np.ones((1, reads.size), dtype=bool),
                                                return_cache=True)
                story_final = states[-1]  # (reads.size, d)
        else:
            dec = _HFDecoder(model)
        for batch in batches:
            B = batch.size
            if fast:
                if last[batch[0]] + 1 <= P:  # head batch (head and tail never mix)
                    past = story_past
                    plen = torch.as_tensor(last[batch] + 1, device=dev)
                    at = torch.as_tensor(np.searchsorted(reads, last[batch]), device=dev)
                    logits = dec.logits(story_final[at])
                else:
                    win = ids_dev[torch.as_tensor(start[batch], device=dev)[:, None]
                                  + torch.arange(P, device=dev)]
                    states, past = dec.states(win, None, np.full((B, 1), P - 1),
                                              np.ones((B, 1), dtype=bool), return_cache=True)
                    plen = torch.full((B,), P, dtype=torch.long, device=dev)
                    logits = dec.logits(states[-1])
                gen = dec.new_cache(B, M, past[0][0])
            else:
                logits = dec.start([ids[start[w]:last[w] + 1] for w in batch], dev)
            u = None
            if method == "sample":
                u = torch.as_tensor(np.stack([np.random.default_rng([seed, int(w)]).random(M)
                                              for w in batch]), device=dev)
            rec = torch.zeros((len(kept), B, M, dim), dtype=torch.float32, device=dev)
            seg = [_Words(horizon) for _ in batch]
            chosen = []
            for s in range(M):
                tok = _choose(logits, method, temperature, top_k,
                              None if u is None else u[:, s])
                chosen.append(tok)
                tok_cpu = tok.tolist()
                for b in range(B):
                    if not seg[b].done:
                        seg[b].push(s, text_of(tok_cpu[b]), tok_cpu[b] in eos)
                if s == M - 1 or all(w.done for w in seg):
                    break
                if fast:
                    states, logits = dec.step(tok, plen, s, past, gen, kept)
                else:
                    states, logits = dec.step(tok, s, kept, L)
                rec[:, :, s] = states.float()
            chosen = torch.stack(chosen, dim=1).cpu().numpy()
            for b, w in enumerate(batch):
                ends = seg[b].ends
                tokens[w] = chosen[b, :seg[b].used].copy()
                if ends:
                    word_end[w, :len(ends)] = ends
                    acts[:, w, :len(ends)] = rec[:, b, ends].cpu().numpy()[back]
            if bar is not None:
                bar.update(B)
    if bar is not None:
        bar.close()

    n_missing = int((word_end < 0).sum())
    if n_missing:
        n_short = int((word_end < 0).any(axis=1).sum())
        log.warning("generated continuations: %d of %d words missing (zeros) in %d of %d "
                    "continuations: fewer than horizon = %d complete words within "
                    "max_new_tokens = %d tokens (or an end-of-text token).", n_missing,
                    n_words * horizon, n_short, n_words, horizon, M)
    if not return_info:
        return acts
    info = {
        "tokens": tokens,
        "word_end": word_end,
        "n_complete": (word_end >= 0).sum(axis=1),
        "n_missing": n_missing,
        "context_start": start,
        "max_new_tokens": M,
        "layers": keep,
        "text": [text_of.tok.decode(t.tolist(), clean_up_tokenization_spaces=False)
                 if t is not None else "" for t in tokens],
    }
    return acts, info


def generate_continuations(words, text, model, tokenizer, horizon, method="greedy", seed=0,
                           temperature=1.0, top_k=0, context_tokens=1024, batch_size=8,
                           layers=None, device=None, progress=False, max_new_tokens=None,
                           backend="auto", return_info=False):
    """Activations of the words the model generates after each word of a story.

    Parameters
    ----------
    words : DataFrame
        Word table with columns ``char_start`` and ``char_end`` (spans in ``text``; see
        :func:`brainpred.narratives.story_words`).
    text : str
        The text the model reads.
    model, tokenizer
        From :func:`brainpred.lm.load_model`.
    horizon : int
        Number of generated words per word (``controls.generated.horizon``; at least the
        largest forecast distance used with :func:`brainpred.design.generated_windows`).
    method : {"greedy", "sample"}
        ``"greedy"``: argmax at every step. ``"sample"``: softmax of ``logits / temperature``
        (restricted to the ``top_k`` largest logits when ``top_k > 0``), inverse-CDF draw with
        the uniform numbers of ``numpy.random.default_rng([seed, n])`` for word ``n``: the same
        call gives the same continuations, independent of ``batch_size``.
    seed : int
        Sampling seed (>= 0; ignored by greedy).
    temperature : float
        > 0 (sampling only; checked always).
    top_k : int
        0 = whole vocabulary.
    context_tokens : int
        Maximum number of tokens the model sees (context + generated), at most the model's
        positions; the true past is truncated to its last ``context_tokens - max_new_tokens``
        tokens.
    batch_size : int
        Words decoded together (memory ~ ``batch_size`` x context x layers x dim for words
        beyond the first window). Results do not depend on it (to float rounding).
    layers : list of int or None
        Layers to return (0 = token embedding, ``L`` = last); ``None`` = all ``L + 1``.
    device : str or None
        Where to run; ``None`` = where the model is (the model is moved otherwise).
    progress : bool
        tqdm progress bar (unit: words).
    max_new_tokens : int or None
        Token budget per continuation, the token that starts word ``horizon + 1`` included;
        ``None`` = ``ceil(2 * horizon) + 4``.
    backend : {"auto", "hf"}
        ``"auto"``: plain GPT-2 uses the incremental decoder with a shared story prefix; others
        (or ``"hf"``) the HuggingFace forward with a ``DynamicCache``.
    return_info : bool
        Also return the generated tokens and word boundaries.

    Returns
    -------
    activations : ndarray of float32, shape (n_layers_sel, n_words, horizon, dim)
        ``activations[i, n, j - 1]`` = layer ``layers[i]`` at the last token of the ``j``-th word
        generated after word ``n``; zeros for missing words.
    info : dict, only with ``return_info=True``
        ``tokens``: list of n_words int arrays, the generated token ids (up to the token that
        starts word ``horizon + 1``, included); ``word_end``: int (n_words, horizon), index in
        ``tokens[n]`` of each word's last token, -1 = missing; ``n_complete``: int (n_words,);
        ``n_missing``: total missing words; ``context_start``: int (n_words,), first story
        token of each context; ``max_new_tokens``; ``layers``; ``text``: decoded
        continuations.

    Raises
    ------
    ConfigError
        Bad ``controls.generated.*`` option (method, horizon, temperature, top_k, seed,
        max_new_tokens, batch_size, layers) or ``features.context_tokens``.
    DataError
        Word table without spans, or spans that do not fit the text.
    """
    for col in ("char_start", "char_end"):
        if col not in words.columns:
            raise DataError(f"word table: column {col!r} is missing; build it with "
                            "brainpred.narratives.story_words.")
    _check_options(horizon, method, seed, temperature, top_k,
                   1 if max_new_tokens is None else max_new_tokens, batch_size)
    input_ids, last = word_token_index(text, words["char_start"].to_numpy(),
                                       words["char_end"].to_numpy(), tokenizer)
    return generate_from_tokens(model, tokenizer, input_ids, last, horizon, method=method,
                                seed=seed, temperature=temperature, top_k=top_k,
                                context_tokens=context_tokens, batch_size=batch_size,
                                layers=layers, device=device, progress=progress,
                                max_new_tokens=max_new_tokens, backend=backend,
                                return_info=return_info)


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------
