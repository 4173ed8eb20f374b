"""Fine-tune GPT-2 with a long-range, high-level forecast objective (method section 1, item 6).

The paper fine-tunes GPT-2 with next-word prediction plus a contrastive loss that asks the model
to predict, from its last layer at token ``t``, the **frozen pretrained** model's layer-8 state
at token ``t + 8``; at a loss mix of 0.5 the fine-tuned model maps better onto frontoparietal
cortex. This module trains such models and writes checkpoints that
:func:`brainpred.lm.load_model` loads as local models::

    model, tok = lm.load_model("gpt2")            # only for the tokenizer here
    seqs = load_corpus(["corpus/*.txt"], tok, context=256, seed=0)
    dirs = train("gpt2", seqs, "results/finetune/alpha-0.5", config["finetune"])

Objective
---------
For a batch of ``B`` sequences of ``C`` tokens:

- ``CE``: next-token cross-entropy of the trained model, mean over the ``B * (C - 1)``
  predicted tokens.
- ``NCE``: InfoNCE (:func:`info_nce`). A linear head ``g`` (``D -> D``, with bias) reads the
  trained model's **last** layer (HF ``hidden_states[-1]``, after the final layer norm) at token
  ``t``; its target is the frozen starting model's layer ``target_layer`` (HF
  ``hidden_states[target_layer]``) at token ``t + target_distance`` of the same sequence.
  Tokens without a target (the last ``target_distance`` of each sequence) are excluded, leaving
  ``N = B * (C - target_distance)`` predictions. Logits are cosine similarities divided by
  ``temperature``; the candidates of prediction ``i`` are the ``N`` targets of the batch (its
  own = the positive, the ``N - 1`` others = negatives) plus the ``K <= queue_size`` targets in a
  FIFO queue of earlier batches (MoCo-style; the frozen model never changes, so queued targets
  never go stale). ``NCE`` is the mean cross-entropy of the positive. After each step the batch's
  (normalised) targets are pushed into the queue, dropping the oldest.
- ``total = CE + lambda * NCE``. ``lambda`` is rescaled at steps ``1, 1 + k, 1 + 2k, ...``
  (``k = rescale_every``) to ``alpha / (1 - alpha) * mean(CE) / mean(NCE)``, where the means
  run over the steps since the previous rescale, the current one included (step 1: its own
  values; later rescales: the last ``k`` steps), so that ``lambda * mean(NCE) / (mean(CE) +
  lambda * mean(NCE)) = alpha``; in between, ``lambda`` is held fixed (:class:`LossMixer`).
  ``alpha = 0`` gives ``lambda = 0``: plain next-word fine-tuning (the control); ``NCE`` is
  still computed and logged, and the head does not learn.

Trained parameters
------------------
Layer ``k >= 1`` is the output of block ``k - 1`` (``transformer.h[k-1]`` in GPT-2), layer 0
the embeddings. ``train_layers = [a, b]`` (default ``[8, 12]``) trains blocks ``a-1 .. b-1``,
plus the final layer norm when ``b`` is the last layer (HF's last hidden state is taken after
it), plus the contrastive head. Embeddings (``wte``/``wpe``, hence the tied LM head) and every
other block are frozen (``requires_grad=False``, not in the optimizer). The model runs in train
mode (HF default dropout, also in the frozen blocks); the frozen target model is a separate copy
of the starting model in eval mode, never updated.

Outputs (:func:`train`)
-----------------------
``out_dir/finetune.json`` (model name, seed and configuration; a resumed run must match),
``out_dir/loss.tsv`` (``step, ce, nce, lambda, total, lr``; one row per step, appended as it
goes, rewritten from the checkpoint on resume) and ``out_dir/step-NNNNNN/`` checkpoints
(``save_pretrained`` model + tokenizer + ``training_state.pt``), each written to a temporary
directory and renamed into place.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import logging
import math
import os
import shutil
import tempfile
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd

from .config import defaults
from .errors import ConfigError, DataError
from .io import atomic_write, read_tsv
from .lm import load_model

__all__ = [
    "TRAIN_KEYS",
    "validate_config",
    "load_corpus",
    "info_nce",
    "TargetQueue",
    "LossMixer",
    "FineTuner",
    "train",
    "list_checkpoints",
    "loss_curves",
]

log = logging.getLogger(__name__)

#: The settings of ``config["finetune"]`` that :func:`train` reads; a key left out takes the
#: schema's default (``workflow/schemas/config.schema.yaml``, :func:`brainpred.config.defaults`).
#: The section's other keys (``enabled``, ``alphas``, ``corpus``, ``eval_layers``, ...) are the
#: workflow's and are ignored here. ``alpha``, the loss mix of one run (one of
#: ``finetune.alphas``), has no default: every run states it.
TRAIN_KEYS = ("steps", "lr", "weight_decay", "warmup", "max_grad_norm", "context", "batch_size",
              "checkpoints", "seed", "queue_size", "temperature", "target_layer",
              "target_distance", "rescale_every", "train_layers")

#: Keys that may change between a run and its continuation (the others must match).
_RESUMABLE_KEYS = ("steps", "checkpoints")
_STATE_FILE = "training_state.pt"
_LOSS_FILE = "loss.tsv"
_META_FILE = "finetune.json"
_LOSS_COLUMNS = ("step", "ce", "nce", "lambda", "total", "lr")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

def _int(cfg, key, low=None, high=None):
    val = cfg[key]
    if isinstance(val, bool) or not isinstance(val, Integral):
        if isinstance(val, Real) and not isinstance(val, bool) and float(val).is_integer():
            val = int(val)
        else:
            raise ConfigError(f"finetune.{key}: must be an integer, got {val!r}.")
    val = int(val)
    if low is not None and val < low:
        raise ConfigError(f"finetune.{key}: must be >= {low}, got {val}.")
    if high is not None and val > high:
        raise ConfigError(f"finetune.{key}: must be <= {high}, got {val}.")
    return val


def _float(cfg, key, positive=False, nonneg=False):
    val = cfg[key]
    if isinstance(val, bool) or not isinstance(val, Real) or not math.isfinite(float(val)):
        raise ConfigError(f"finetune.{key}: must be a finite number, got {val!r}.")
    val = float(val)
    if positive and val <= 0:
        raise ConfigError(f"finetune.{key}: must be > 0, got {val}.")
    if nonneg and val < 0:
        raise ConfigError(f"finetune.{key}: must be >= 0, got {val}.")
    return val


def validate_config(cfg=None) -> dict:
    """Check ``config["finetune"]`` and fill in defaults.

    Parameters
    ----------
    cfg : dict or None
        ``alpha`` (required) and keys of :data:`TRAIN_KEYS`; missing ones take the schema's
        default (``config.defaults("finetune")``), other keys are ignored.

    Returns
    -------
    dict
        A new dict with ``alpha`` and every key of :data:`TRAIN_KEYS`, typed (``checkpoints``
        sorted, unique, the last step added; ``train_layers`` a list of two ints).

    Raises
    ------
    ConfigError
        A value of the wrong type or out of range; the message names ``finetune.<key>``.
        Checks that need the model (``train_layers``/``target_layer`` against its depth,
        ``context`` against its positions) are done by :class:`FineTuner`.
    """
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"finetune: must be a mapping of settings, got {type(cfg).__name__}.")
    if "alpha" not in cfg:
        raise ConfigError("finetune.alpha: missing; give the loss mix of this run, the share of "
                          "the contrastive loss in [0, 1) (one of finetune.alphas; 0 = "
                          "next-word only, paper: 0.5).")
    schema = defaults("finetune")
    c = {**{k: schema[k] for k in TRAIN_KEYS},
         **{k: v for k, v in cfg.items() if k in TRAIN_KEYS or k == "alpha"}}
    out = {}
    alpha = _float(c, "alpha")
    if not 0.0 <= alpha < 1.0:
        raise ConfigError(f"finetune.alpha: the share of the contrastive loss must lie in "
                          f"[0, 1) (0 = next-word only), got {alpha}.")
    out["alpha"] = alpha
    out["steps"] = _int(c, "steps", low=1)
    out["lr"] = _float(c, "lr", positive=True)
    out["weight_decay"] = _float(c, "weight_decay", nonneg=True)
    out["warmup"] = _int(c, "warmup", low=0)
    mgn = c["max_grad_norm"]
    out["max_grad_norm"] = 0.0 if mgn is None else _float(c, "max_grad_norm", nonneg=True)
    out["context"] = _int(c, "context", low=2)
    out["batch_size"] = _int(c, "batch_size", low=1)
    out["seed"] = _int(c, "seed", low=0)
    out["queue_size"] = _int(c, "queue_size", low=0)
    out["temperature"] = _float(c, "temperature", positive=True)
    out["target_layer"] = _int(c, "target_layer", low=0)
    out["target_distance"] = _int(c, "target_distance", low=1)
    if out["target_distance"] >= out["context"]:
        raise ConfigError(f"finetune.target_distance: must be smaller than finetune.context "
                          f"({out['context']}), got {out['target_distance']}.")
    out["rescale_every"] = _int(c, "rescale_every", low=1)

    ckpts = c["checkpoints"]
    if ckpts is None:
        ckpts = []
    if isinstance(ckpts, (str, bytes)) or not hasattr(ckpts, "__iter__"):
        raise ConfigError(f"finetune.checkpoints: must be a list of steps, got {ckpts!r}.")
    steps_set = set()
    for s in ckpts:
        if isinstance(s, bool) or not isinstance(s, Integral) or not 1 <= int(s) <= out["steps"]:
            raise ConfigError(f"finetune.checkpoints: every entry must be an integer step in "
                              f"[1, finetune.steps = {out['steps']}], got {s!r}.")
        steps_set.add(int(s))
    steps_set.add(out["steps"])
    out["checkpoints"] = sorted(steps_set)

    tl = c["train_layers"]
    if (isinstance(tl, (str, bytes)) or not hasattr(tl, "__len__") or len(tl) != 2
            or any(isinstance(v, bool) or not isinstance(v, Integral) for v in tl)):
        raise ConfigError(f"finetune.train_layers: must be [first, last] layer numbers "
                          f"(inclusive, layer k = output of block k - 1), got {tl!r}.")
    a, b = int(tl[0]), int(tl[1])
    if not 1 <= a <= b:
        raise ConfigError(f"finetune.train_layers: need 1 <= first <= last (layer 0, the "
                          f"embeddings, never trains), got [{a}, {b}].")
    out["train_layers"] = [a, b]
    return out


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------

_GLOB_CHARS = set("*?[")


def _local_documents(spec):
    """Yield (name, text) of the local files of ``spec`` (paths, directories or globs)."""
    paths = []
    for entry in spec:
        if not isinstance(entry, (str, os.PathLike)):
            raise ConfigError(f"finetune.corpus: entries must be file paths or glob patterns, "
                              f"got {entry!r}.")
        entry = os.path.expanduser(os.fspath(entry))
        if _GLOB_CHARS & set(entry):
            found = sorted(glob.glob(entry, recursive=True))
            found = [p for p in found if Path(p).is_file()]
            if not found:
                raise DataError(f"{entry}: the corpus pattern matches no file. Check the path "
                                "in finetune.corpus.")
            paths.extend(found)
        else:
            p = Path(entry)
            if p.is_dir():
                found = sorted(str(q) for q in p.rglob("*.txt") if q.is_file())
                if not found:
                    raise DataError(f"{p}: the corpus directory holds no .txt file.")
                paths.extend(found)
            elif p.is_file():
                paths.append(str(p))
            else:
                raise DataError(f"{p}: corpus file not found. Check the path in "
                                "finetune.corpus.")
    for p in paths:
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                yield p, f.read()
        except OSError as exc:
            raise DataError(f"{p}: cannot read the corpus file ({exc}).") from exc


def _hf_documents(spec):
    """Yield (name, text) of a HuggingFace dataset spec (lazy import of ``datasets``)."""
    known = {"hf_dataset", "config", "split", "text_field", "max_documents", "streaming"}
    extra = set(spec) - known - {"max_tokens"}
    if extra:
        raise ConfigError(f"finetune.corpus: unknown key(s) {sorted(extra)}; a dataset spec has "
                          f"{sorted(known | {'max_tokens'})}.")
    name = spec.get("hf_dataset")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"finetune.corpus.hf_dataset: must be a dataset name, got {name!r}.")
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError("finetune.corpus.hf_dataset: reading a HuggingFace dataset needs the "
                          "`datasets` package; install it with `pip install datasets` (the "
                          "brainpred[finetune] extra: `pip install -e \".[finetune]\"`), or "
                          "give a list of local text files instead.") from exc
    field = spec.get("text_field", "text")
    split = spec.get("split", "train")
    try:
        ds = datasets.load_dataset(name, spec.get("config"), split=split,
                                   streaming=bool(spec.get("streaming", False)))
    except Exception as exc:  # network, missing cache, bad name / split
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        hint = ("HF_HUB_OFFLINE is set, so only datasets already in the HuggingFace cache can "
                "be loaded; download it first on a machine with internet"
                if offline else "check the name, config and split, and your connection")
        raise ConfigError(f"finetune.corpus.hf_dataset: cannot load {name!r} "
                          f"(config={spec.get('config')!r}, split={split!r}; "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                          f"; {hint}.") from exc
    max_docs = spec.get("max_documents")
    for i, row in enumerate(ds):
        if max_docs is not None and i >= int(max_docs):
            break
        if field not in row:
            raise ConfigError(f"finetune.corpus.text_field: {field!r} is not a column of "
                              f"{name!r} (columns: {sorted(row)}).")
        yield f"{name}[{i}]", row[field]


def load_corpus(spec, tokenizer, context, seed=0):
    """Tokenise a text corpus once and cut it into training sequences.

    Parameters
    ----------
    spec : str, path, list or dict
        Local text: a path, a directory (its ``*.txt`` files, recursively), a glob pattern
        (``**`` allowed) or a list of those; every file is one document, read as UTF-8.
        HuggingFace dataset: ``{"hf_dataset": name, "config": None, "split": "train",
        "text_field": "text"}`` plus optional ``max_documents``, ``max_tokens`` (stop reading
        once that many tokens are collected) and ``streaming`` (bool). Needs the ``datasets``
        package (imported only here; honours ``HF_HUB_OFFLINE``).
    tokenizer : transformers tokenizer
        GPT-2's (must have an ``eos_token_id``).
    context : int
        Tokens per sequence.
    seed : int
        Seed of the shuffle of the sequences.

    Returns
    -------
    sequences : ndarray of int32, shape (n_sequences, context)
        The documents' tokens concatenated with one EOS token between consecutive documents
        (empty documents skipped), cut into consecutive blocks of ``context`` tokens (the
        incomplete last block is dropped), then shuffled with
        ``np.random.default_rng(seed).permutation``.

    Raises
    ------
    DataError
        A missing file (named), a pattern that matches nothing, or fewer than ``context``
        tokens in all.
    ConfigError
        A bad spec, or ``datasets`` missing for a dataset spec.
    """
    if isinstance(context, bool) or not isinstance(context, Integral) or context < 2:
        raise ConfigError(f"finetune.context: must be an integer >= 2, got {context!r}.")
    context = int(context)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ConfigError("model.name: the tokenizer has no EOS token to separate documents.")
    max_tokens = None
    if isinstance(spec, dict):
        max_tokens = spec.get("max_tokens")
        docs = _hf_documents(spec)
    elif isinstance(spec, (str, os.PathLike)):
        docs = _local_documents([spec])
    elif isinstance(spec, (list, tuple)) and spec:
        docs = _local_documents(list(spec))
    else:
        raise ConfigError(f"finetune.corpus: must be a list of text files / glob patterns or a "
                          f"dataset spec {{'hf_dataset': ...}}, got {spec!r}.")

    chunks, n_tok, n_docs = [], 0, 0
    sep = np.array([eos], dtype=np.int32)
    batch = []

    def flush():
        nonlocal n_tok, n_docs
        if not batch:
            return
        enc = tokenizer(batch, verbose=False)["input_ids"]
        for ids in enc:
            if not ids:
                continue
            if n_docs:
                chunks.append(sep)
                n_tok += 1
            chunks.append(np.asarray(ids, dtype=np.int32))
            n_tok += len(ids)
            n_docs += 1
        batch.clear()

    for _, text in docs:
        if text is None or not str(text).strip():
            continue
        batch.append(str(text))
        if len(batch) >= 256:
            flush()
            if max_tokens is not None and n_tok >= int(max_tokens):
                break
    flush()
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    if max_tokens is not None:
        tokens = tokens[:int(max_tokens)]
    n_seq = tokens.size // context
    if n_seq < 1:
        raise DataError(f"finetune.corpus: {tokens.size} tokens in {n_docs} document(s), fewer "
                        f"than one sequence of finetune.context = {context} tokens; give more "
                        "text.")
    seqs = tokens[:n_seq * context].reshape(n_seq, context)
    order = np.random.default_rng(int(seed)).permutation(n_seq)
    log.info("corpus: %d documents, %d tokens, %d sequences of %d tokens", n_docs, tokens.size,
             n_seq, context)
    return np.ascontiguousarray(seqs[order])


# --------------------------------------------------------------------------------------------
# Loss pieces
# --------------------------------------------------------------------------------------------

def info_nce(pred, target, queue=None, temperature=0.1):
    """InfoNCE with cosine similarity, in-batch and queued negatives.

    Parameters
    ----------
    pred : Tensor, shape (N, D)
        Predictions (the head's output).
    target : Tensor, shape (N, D)
        Their positives: ``target[i]`` is the positive of ``pred[i]``, every other row of
        ``target`` a negative.
    queue : Tensor, shape (K, D), or None
        Extra negatives (e.g. targets of earlier batches).
    temperature : float

    Returns
    -------
    loss : Tensor, scalar
        ``mean_i -log softmax(logits_i)[i]`` with ``logits_i = [cos(pred_i, target_j)]_j ++
        [cos(pred_i, queue_k)]_k`` divided by ``temperature``.
    """
    import torch
    import torch.nn.functional as F

    p = F.normalize(pred.float(), dim=-1, eps=1e-8)
    t = F.normalize(target.float(), dim=-1, eps=1e-8)
    logits = p @ t.T
    if queue is not None and queue.shape[0]:
        q = F.normalize(queue.float(), dim=-1, eps=1e-8)
        logits = torch.cat([logits, p @ q.T], dim=1)
    labels = torch.arange(p.shape[0], device=p.device)
    return F.cross_entropy(logits / float(temperature), labels)


class TargetQueue:
    """FIFO ring buffer of normalised target vectors (the negatives of earlier batches).

    Parameters
    ----------
    size : int
        Capacity ``K`` (0: the queue stays empty).
    dim : int
    device : torch.device
    """

    def __init__(self, size, dim, device="cpu"):
        import torch

        self.size = int(size)
        self.buffer = torch.zeros((self.size, int(dim)), dtype=torch.float32, device=device)
        self.ptr = 0    # next slot to write
        self.count = 0  # filled slots

    def get(self):
        """The stored vectors, shape (count, dim) (order irrelevant to the loss)."""
        return self.buffer[:self.count]

    def push(self, vectors):
        """Append ``vectors`` (n, dim), normalised, overwriting the oldest when full."""
        import torch.nn.functional as F

        if self.size == 0:
            return
        v = F.normalize(vectors.detach().float(), dim=-1, eps=1e-8)
        if v.shape[0] >= self.size:
            v = v[-self.size:]
        n = v.shape[0]
        end = self.ptr + n
        if end <= self.size:
            self.buffer[self.ptr:end] = v
        else:
            first = self.size - self.ptr
            self.buffer[self.ptr:] = v[:first]
            self.buffer[:n - first] = v[first:]
        self.ptr = end % self.size
        self.count = min(self.size, self.count + n)

    def state_dict(self):
        return {"buffer": self.buffer.detach().cpu().clone(), "ptr": self.ptr,
                "count": self.count}

    def load_state_dict(self, state):
        buf = state["buffer"]
        if tuple(buf.shape) != tuple(self.buffer.shape):
            raise DataError(f"queue: saved shape {tuple(buf.shape)} differs from "
                            f"{tuple(self.buffer.shape)} (finetune.queue_size changed?).")
        self.buffer.copy_(buf)
        self.ptr, self.count = int(state["ptr"]), int(state["count"])


class LossMixer:
    """The weight ``lambda`` of the contrastive loss, ``total = CE + lambda * NCE``.

    At steps ``1, 1 + k, 1 + 2k, ...`` (``k = rescale_every``; steps count from 1)
    ``lambda = alpha / (1 - alpha) * mean(CE) / mean(NCE)`` over the steps since the previous
    rescale, this one included (step 1: its own values), so that
    ``lambda * mean(NCE) / (mean(CE) + lambda * mean(NCE)) = alpha``. Between rescales
    ``lambda`` is held. ``alpha = 0`` gives ``lambda = 0``.
    """

    def __init__(self, alpha, rescale_every=50):
        self.alpha = float(alpha)
        self.rescale_every = int(rescale_every)
        self.lam = 0.0
        self.sum_ce = 0.0
        self.sum_nce = 0.0
        self.count = 0

    def update(self, step, ce, nce):
        """Record step ``step``'s detached losses and return the ``lambda`` to use at it."""
        self.sum_ce += float(ce)
        self.sum_nce += float(nce)
        self.count += 1
        if (int(step) - 1) % self.rescale_every == 0:
            mean_ce = self.sum_ce / self.count
            mean_nce = self.sum_nce / self.count
            if self.alpha == 0.0:
                self.lam = 0.0
            else:
                self.lam = self.alpha / (1.0 - self.alpha) * mean_ce / max(mean_nce, 1e-12)
            self.sum_ce = self.sum_nce = 0.0
            self.count = 0
        return self.lam

    def state_dict(self):
        return {"alpha": self.alpha, "rescale_every": self.rescale_every, "lam": self.lam,
                "sum_ce": self.sum_ce, "sum_nce": self.sum_nce, "count": self.count}

    def load_state_dict(self, state):
        self.lam = float(state["lam"])
        self.sum_ce = float(state["sum_ce"])
        self.sum_nce = float(state["sum_nce"])
        self.count = int(state["count"])


# --------------------------------------------------------------------------------------------
# Model surgery
# --------------------------------------------------------------------------------------------

def _blocks_and_norm(model):
    """(list of blocks, final norm or None) of a causal LM (GPT-2, GPT-NeoX, Llama-like)."""
    base = getattr(model, "base_model", model)
    for blocks_attr, norm_attr in (("h", "ln_f"), ("layers", "final_layer_norm"),
                                   ("layers", "norm"), ("blocks", "ln_f")):
        blocks = getattr(base, blocks_attr, None)
        if blocks is not None and hasattr(blocks, "__len__"):
            return list(blocks), getattr(base, norm_attr, None)
    raise ConfigError(f"model.name: cannot find the transformer blocks of "
                      f"{type(model).__name__}; fine-tuning supports GPT-2-like models.")


def _set_trainable(model, train_layers):
    """Freeze everything, then unfreeze blocks ``a-1..b-1`` (+ final norm if ``b == L``)."""
    blocks, norm = _blocks_and_norm(model)
    n = len(blocks)
    a, b = train_layers
    if not 1 <= a <= b <= n:
        raise ConfigError(f"finetune.train_layers: [{a}, {b}] is outside the model's layers "
                          f"1..{n} (layer k = output of block k - 1); e.g. [8, {n}].")
    for p in model.parameters():
        p.requires_grad_(False)
    for blk in blocks[a - 1:b]:
        for p in blk.parameters():
            p.requires_grad_(True)
    if b == n and norm is not None:
        for p in norm.parameters():
            p.requires_grad_(True)
    # tied input/output embeddings stay frozen even if a block shared them (never in GPT-2)
    for p in model.get_input_embeddings().parameters():
        p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _load_weights(model, ckpt_dir):
    """Load the ``save_pretrained`` weights of ``ckpt_dir`` into ``model`` in place."""
    from safetensors.torch import load_file

    files = sorted(Path(ckpt_dir).glob("*.safetensors"))
    if not files:
        raise DataError(f"{ckpt_dir}: no model weights (*.safetensors); delete this checkpoint "
                        "directory and run again.")
    state = {}
    for f in files:
        state.update(load_file(str(f), device="cpu"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    bad = [k for k in missing if not (tied and k.endswith("lm_head.weight"))]
    if bad or unexpected:
        raise DataError(f"{ckpt_dir}: weights do not match the model (missing {bad[:3]}, "
                        f"unexpected {list(unexpected)[:3]}); was it trained from another "
                        "model.name? Delete the output directory and run again.")


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------

class FineTuner:
    """The training state: trained model, frozen target copy, head, optimizer, queue, mixer.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The starting model (trained in place). A deep copy taken here, in eval mode and without
        gradients, is the frozen target model.
    cfg : dict
        ``config["finetune"]`` (validated with :func:`validate_config`).

    Attributes
    ----------
    model, target, head, optimizer, queue (:class:`TargetQueue`), mixer (:class:`LossMixer`),
    step (int, updates done), cfg, device.
    """

    def __init__(self, model, cfg):
        import torch

        self.cfg = cfg = validate_config(cfg)
        self.device = next(model.parameters()).device
        blocks, _ = _blocks_and_norm(model)
        n = len(blocks)
        if cfg["target_layer"] > n:
            raise ConfigError(f"finetune.target_layer: {cfg['target_layer']} exceeds the "
                              f"model's {n} layers.")
        max_pos = next((getattr(model.config, k) for k in ("n_positions",
                        "max_position_embeddings") if isinstance(getattr(model.config, k, None),
                                                                  int)), None)
        if max_pos is not None and cfg["context"] > max_pos:
            raise ConfigError(f"finetune.context: {cfg['context']} exceeds the model's "
                              f"{max_pos} positions.")
        self.target = copy.deepcopy(model).eval()
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.model = model.train()
        params = _set_trainable(model, cfg["train_layers"])
        dim = int(model.get_input_embeddings().embedding_dim)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(cfg["seed"])  # CPU only: not the CUDA RNGs
            self.head = torch.nn.Linear(dim, dim)
        self.head.to(self.device)
        self.optimizer = torch.optim.AdamW(list(self.head.parameters()) + params, lr=cfg["lr"],
                                           weight_decay=cfg["weight_decay"])
        self.queue = TargetQueue(cfg["queue_size"], dim, self.device)
        self.mixer = LossMixer(cfg["alpha"], cfg["rescale_every"])
        self.step = 0

    def lr_at(self, step):
        """Learning rate of step ``step`` (linear warm-up over ``warmup`` steps, then flat)."""
        w = self.cfg["warmup"]
        return self.cfg["lr"] * (min(1.0, step / w) if w else 1.0)

    def train_step(self, input_ids):
        """One optimizer update on a batch.

        Parameters
        ----------
        input_ids : Tensor or ndarray of int, shape (B, C)

        Returns
        -------
        row : dict
            ``step, ce, nce, lambda, total, lr`` of this step (losses before the update).
        """
        import torch
        import torch.nn.functional as F

        cfg = self.cfg
        d, layer = cfg["target_distance"], cfg["target_layer"]
        ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long, device=self.device)
        if ids.ndim != 2 or ids.shape[1] <= d:
            raise DataError(f"batch of shape {tuple(ids.shape)}: need (batch, tokens) with more "
                            f"than finetune.target_distance = {d} tokens.")
        step = self.step + 1
        lr = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.model.train()
        with torch.no_grad():
            tgt = self.target.base_model(ids, output_hidden_states=True,
                                          use_cache=False).hidden_states[layer]
            tgt = tgt[:, d:].reshape(-1, tgt.shape[-1]).float()
        last = self.model.base_model(ids, use_cache=False).last_hidden_state  # (B, C, D)
        logits = self.model.get_output_embeddings()(last[:, :-1])      # (B, C-1, V)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                             ids[:, 1:].reshape(-1))
        # alpha = 0 (the control): NCE is only logged; the head gets no gradient at all
        with torch.set_grad_enabled(cfg["alpha"] > 0):
            pred = self.head(last[:, :-d].reshape(-1, last.shape[-1]))
            nce = info_nce(pred, tgt, self.queue.get(), cfg["temperature"])
        lam = self.mixer.update(step, ce.item(), nce.item())
        total = ce + lam * nce
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg["max_grad_norm"]:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]],
                cfg["max_grad_norm"])
        self.optimizer.step()
        self.queue.push(tgt)
        self.step = step
        return {"step": step, "ce": ce.item(), "nce": nce.item(), "lambda": lam,
                "total": total.item(), "lr": lr}

    def state_dict(self):
        """Everything but the model weights (saved with ``save_pretrained``)."""
        return {"step": self.step, "head": {k: v.detach().cpu().clone()
                                            for k, v in self.head.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "queue": self.queue.state_dict(),
                "mixer": self.mixer.state_dict()}

    def load_state_dict(self, state):
        self.step = int(state["step"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.queue.load_state_dict(state["queue"])
        self.mixer.load_state_dict(state["mixer"])


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def _ckpt_name(step):
    return f"step-{int(step):06d}"


def list_checkpoints(out_dir) -> dict:
    """Complete checkpoints of a run: ``{step: Path}`` (directories with a training state)."""
    out = {}
    root = Path(out_dir)
    if not root.is_dir():
        return out
    for p in root.glob("step-*"):
        tail = p.name[len("step-"):]
        if p.is_dir() and tail.isdigit() and (p / _STATE_FILE).is_file():
            out[int(tail)] = p
    return dict(sorted(out.items()))


def _fmt(v):
    return str(int(v)) if isinstance(v, (int, np.integer)) else repr(float(v))


def _write_loss_rows(path, rows):
    with atomic_write(path) as f:
        f.write("\t".join(_LOSS_COLUMNS) + "\n")
        for r in rows:
            f.write("\t".join(_fmt(r[c]) for c in _LOSS_COLUMNS) + "\n")


def _append_loss_row(path, row):
    with open(path, "a", encoding="utf-8") as f:
        f.write("\t".join(_fmt(row[c]) for c in _LOSS_COLUMNS) + "\n")


def loss_curves(out_dir) -> pd.DataFrame:
    """The losses of a run (``out_dir/loss.tsv``).

    Returns
    -------
    DataFrame
        Columns ``step, ce, nce, lambda, total, lr`` (one row per step) plus
        ``nce_share = lambda * nce / total`` (close to ``alpha`` around rescale steps).
    """
    path = Path(out_dir) / _LOSS_FILE
    df = read_tsv(path)
    missing = [c for c in _LOSS_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; not a fine-tuning loss table.")
    df["nce_share"] = df["lambda"] * df["nce"] / df["total"]
    return df


def _check_meta(out_dir, meta):
    path = Path(out_dir) / _META_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON ({exc}); delete it.") from exc
        norm = json.loads(json.dumps(meta))
        diff = sorted(k for k in set(old) | set(norm) if k != "config" and
                      old.get(k) != norm.get(k))
        oc, nc = old.get("config", {}), norm["config"]
        diff += [f"finetune.{k}" for k in sorted(set(oc) | set(nc)) if oc.get(k) != nc.get(k)]
        if diff:
            raise ConfigError(f"{out_dir}: was trained with other settings ({', '.join(diff)}); "
                              "only finetune.steps and finetune.checkpoints may change to "
                              "continue a run. Use another output directory or delete this one.")
    else:
        with atomic_write(path) as f:
            json.dump(meta, f, indent=2)
            f.write("\n")


def _rng_state(device):
    import torch

    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state, device):
    import torch

    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextlib.contextmanager
def _quiet_hf_progress():
    """Hide transformers' per-shard progress bar while a checkpoint is written."""
    try:
        from transformers.utils import logging as hf_logging
        was = hf_logging.is_progress_bar_enabled()
    except (ImportError, AttributeError):  # pragma: no cover - older transformers
        yield
        return
    if was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _save_checkpoint(out_dir, tuner, tokenizer, rows):
    import torch

    final = Path(out_dir) / _ckpt_name(tuner.step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=out_dir))
    try:
        with _quiet_hf_progress():
            tuner.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        state = tuner.state_dict()
        state["rng"] = _rng_state(tuner.device)
        state["loss_rows"] = [[r[c] for c in _LOSS_COLUMNS] for r in rows]
        state["config"] = tuner.cfg
        torch.save(state, tmp / _STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _as_sequences(corpus_sequences, context):
    seqs = np.asarray(corpus_sequences)
    if seqs.ndim != 2 or seqs.shape[0] < 1:
        raise DataError(f"corpus sequences: need an array (n_sequences, context), got shape "
                        f"{seqs.shape}; build it with load_corpus.")
    if seqs.shape[1] != context:
        raise ConfigError(f"finetune.context: is {context} but the corpus sequences have "
                          f"{seqs.shape[1]} tokens; rebuild them with load_corpus(..., "
                          f"context={context}).")
    if not np.issubdtype(seqs.dtype, np.integer):
        raise DataError(f"corpus sequences: token ids must be integers, got {seqs.dtype}.")
    return seqs


class _Batches:
    """Batch of step ``s``: flat items ``(s-1)*B .. s*B-1`` of an endless stream that visits
    every sequence once per epoch, in an order reshuffled each epoch from ``(seed, epoch)``."""

    def __init__(self, n, batch_size, seed):
        self.n, self.b, self.seed = n, batch_size, seed
        self._perm = {}

    def _order(self, epoch):
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perm[epoch]

    def indices(self, step):
        flat = np.arange((step - 1) * self.b, step * self.b)
        return np.array([self._order(i // self.n)[i % self.n] for i in flat], dtype=np.int64)


def train(model_name, corpus_sequences, out_dir, cfg, model_seed=0, device="auto",
          progress=True):
    """Fine-tune a causal LM with next-word + contrastive forecast loss; resumable.

    Parameters
    ----------
    model_name : str
        Passed to :func:`brainpred.lm.load_model` (``"gpt2"``, a local directory, or
        ``"tiny-gpt2"`` offline).
    corpus_sequences : ndarray of int, shape (n_sequences, context)
        From :func:`load_corpus`. Step ``s`` reads sequences ``(s-1)*B .. s*B-1`` of a stream
        that visits all of them once per epoch, reshuffled every epoch with the seed.
    out_dir : str or Path
    cfg : dict
        ``config["finetune"]`` with the run's ``alpha`` (see :data:`TRAIN_KEYS` and
        :func:`validate_config`).
    model_seed : int
        Seed of ``"tiny-gpt2"`` (ignored for pretrained models).
    device : str
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda[:i]"``.
    progress : bool
        tqdm bar with the current CE, NCE and lambda; losses are also logged at checkpoints.

    Returns
    -------
    list of Path
        The checkpoint directories ``out_dir/step-NNNNNN`` of ``cfg["checkpoints"]`` and of the
        last step, in step order. Each holds the model and tokenizer (``save_pretrained``;
        :func:`brainpred.lm.load_model` loads it) and ``training_state.pt`` (head,
        optimizer, queue, mixer, RNG states, step = data position, loss rows, configuration).

    Notes
    -----
    If ``out_dir`` holds checkpoints, training continues from the latest (same model, seed and
    settings required; ``steps`` and ``checkpoints`` may grow): ``loss.tsv`` is rewritten from
    it and the run gives the same weights and losses as an uninterrupted one. A run whose last
    step is saved returns at once. Deterministic on CPU for a given seed.
    """
    import torch

    cfg = validate_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".step-*.tmp"):  # checkpoints interrupted while being written
        shutil.rmtree(stale, ignore_errors=True)
    meta = {"model_name": str(model_name), "model_seed": int(model_seed),
            "config": {k: v for k, v in cfg.items() if k not in _RESUMABLE_KEYS}}
    _check_meta(out_dir, meta)

    steps = cfg["steps"]
    existing = list_checkpoints(out_dir)
    latest = max(existing) if existing else 0
    if latest > steps:
        raise ConfigError(f"finetune.steps: {out_dir} already holds a checkpoint at step "
                          f"{latest} > {steps}; raise finetune.steps or use another directory.")
    if latest == steps:
        log.info("%s: fine-tuning already finished (step %d)", out_dir, steps)
        return _wanted(existing, cfg["checkpoints"], out_dir)

    seqs = _as_sequences(corpus_sequences, cfg["context"])
    model, tokenizer = load_model(model_name, seed=model_seed, device=device)
    vocab = int(model.get_input_embeddings().num_embeddings)
    if seqs.min() < 0 or seqs.max() >= vocab:
        raise DataError(f"corpus sequences: token ids must lie in [0, {vocab}) for "
                        f"{model_name!r}; got [{seqs.min()}, {seqs.max()}]. Tokenise the corpus "
                        "with this model's tokenizer.")
    tuner = FineTuner(model, cfg)
    dev = tuner.device
    batches = _Batches(len(seqs), cfg["batch_size"], cfg["seed"])
    loss_path = out_dir / _LOSS_FILE
    fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] \
        if dev.type == "cuda" else []

    with torch.random.fork_rng(devices=fork_devices):
        if latest:
            ckpt = existing[latest]
            log.info("%s: resuming fine-tuning from %s", out_dir, ckpt.name)
            state = torch.load(ckpt / _STATE_FILE, map_location="cpu", weights_only=True)
            _load_weights(tuner.model, ckpt)
            tuner.load_state_dict(state)
            _set_rng_state(state["rng"], dev)
            rows = [dict(zip(_LOSS_COLUMNS, r)) for r in state["loss_rows"]]
            for r in rows:
                r["step"] = int(r["step"])
        else:
            torch.manual_seed(cfg["seed"])
            rows = []
        _write_loss_rows(loss_path, rows)

        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, initial=tuner.step, desc=f"finetune {out_dir.name}",
                       unit="step")
        since = tuner.step
        try:
            while tuner.step < steps:
                idx = batches.indices(tuner.step + 1)
                row = tuner.train_step(seqs[idx])
                rows.append(row)
                _append_loss_row(loss_path, row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(ce=f"{row['ce']:.3f}", nce=f"{row['nce']:.3f}",
                                    lam=f"{row['lambda']:.3g}")
                if tuner.step in cfg["checkpoints"]:
                    path = _save_checkpoint(out_dir, tuner, tokenizer, rows)
                    recent = rows[since:]
                    log.info("%s: step %d/%d, mean ce %.4f, nce %.4f, lambda %.4g -> %s",
                             out_dir, tuner.step, steps, np.mean([r["ce"] for r in recent]),
                             np.mean([r["nce"] for r in recent]), row["lambda"], path.name)
                    since = tuner.step
        finally:
            if bar is not None:
                bar.close()
    return _wanted(list_checkpoints(out_dir), cfg["checkpoints"], out_dir)


def _wanted(existing, wanted, out_dir):
    missing = [s for s in wanted if s not in existing]
    if missing:
        log.warning("%s: no checkpoint at step(s) %s (the run was made with other "
                    "finetune.checkpoints); delete the directory to produce them.", out_dir,
                    missing)
    return [existing[s] for s in wanted if s in existing]
