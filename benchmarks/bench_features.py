"""Benchmark of word-activation extraction: exact vs strided vs naive.

naive   = one forward pass per word, unbatched, on the word's full past-only window
          (``tokens[t - context + 1 .. t]``), i.e. what the paper's definition literally says;
exact   = :func:`brainpred.features.extract_word_activations` ``mode="exact"`` (one pass for the
          first window, then batched per-word windows) -- must equal naive;
strided = ``mode="strided"`` (overlapping windows, each word read with >= min_context past
          tokens) -- approximate; its per-layer correlation with exact is reported.

Default: a random 4-layer x 128-unit GPT-2 (n_positions = context = 256, min_context 128) on
CPU, on a generated story of ~8 context windows, so most words see a full window. ``--full``:
a random GPT-2 of the real size (12 x 768, context 1024, min_context 512) on GPU if available.
Random weights: speed and memory are representative; the strided-vs-exact correlations are
only a sanity check (a random model is dominated by its random position embeddings, see
tests/test_features.py::test_strided_close_to_exact) -- measure them on real GPT-2 for the paper.

Peak memory: CUDA -> ``torch.cuda.max_memory_allocated``; CPU -> peak resident set size above
the level before the run, sampled every 2 ms by a thread (psutil).

Usage::

    python benchmarks/bench_features.py            # CPU, < 3 minutes
    python benchmarks/bench_features.py --full     # GPU
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from brainpred import features as F  # noqa: E402

ALIGN = (Path(__file__).resolve().parents[2] / "shared" / "narratives" / "stimuli" / "gentle"
         / "pieman" / "align.csv")


class PeakMemory:
    """Peak memory (MiB) above the starting level during a ``with`` block."""

    def __init__(self, device):
        self.device = device
        self.peak_mib = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._proc = psutil.Process()
            self._base = self._peak = self._proc.memory_info().rss
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mib = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self.peak_mib = (self._peak - self._base) / 2**20


def make_story(n_tokens_target, tokenizer, seed=0):
    """Random words (Pie Man's vocabulary when available), with some punctuation."""
    rng = np.random.RandomState(seed)
    if ALIGN.exists():
        vocab = sorted({line.split(",")[0] for line in ALIGN.read_text().splitlines() if line})
    else:
        vocab = ["the", "man", "don't", "91st", "said", "quickly", "Los", "Angeles", "it's",
                 "really", "a", "story", "of", "pie", "and", "then", "journalism", "Bronx"]
    words, n_tok = [], 0
    while n_tok < n_tokens_target:
        chunk = [vocab[i] + (rng.choice([".", ",", "", "", "", ""]))
                 for i in rng.randint(0, len(vocab), 200)]
        words += chunk
        n_tok = len(tokenizer(" ".join(words), verbose=False)["input_ids"])
    text = " ".join(words)
    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
    ends = starts + np.array([len(w) for w in words])
    return text, starts, ends


def naive(model, ids, last, context, device):
    """One unbatched pass per word over its full past-only window."""
    backbone = model.base_model
    emb = model.get_input_embeddings()
    out = np.empty((F.n_layers(model) + 1, last.size, emb.embedding_dim), np.float32)
    with torch.inference_mode():
        for w, t in enumerate(last):
            x = torch.as_tensor(ids[max(0, t - context + 1): t + 1], device=device)[None]
            hs = backbone(input_ids=x, output_hidden_states=True, use_cache=False).hidden_states
            out[:, w] = torch.stack([emb(x[0, -1])] + [h[0, -1] for h in hs[1:]]).float().cpu()
    return out


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    return result, dt, mem.peak_mib


def centered_corr(a, b):
    a = a - a.mean(0)
    b = b - b.mean(0)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="GPT-2 size (12 x 768, context 1024) on GPU if available")
    parser.add_argument("--windows", type=float, default=8.0,
                        help="story length in context windows (default 8)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    if args.full:
        cfg = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024)
        context, min_context, batch_size = 1024, 512, args.batch_size or 8
    else:
        cfg = dict(n_layer=4, n_embd=128, n_head=4, n_positions=256)
        context, min_context, batch_size = 256, 128, args.batch_size or 8
    device = F._resolve_device(args.device)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, **cfg)).to(device).eval()
    tokenizer = F.gpt2_tokenizer()
    text, cs, ce = make_story(int(args.windows * context), tokenizer)
    ids, last = F.word_token_index(text, cs, ce, tokenizer)
    full = last >= context - 1
    print(f"model: random GPT-2 {cfg['n_layer']} layers x {cfg['n_embd']} units, "
          f"context {context}, min_context {min_context}, batch {batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"story: {ids.size} tokens, {last.size} words, "
          f"{full.mean():.0%} of words see a full {context}-token window")

    # warm-up (allocator, kernels)
    F.extract_word_activations(model, ids[:context + 8], last[last < context + 8][-4:],
                               context_tokens=context, batch_size=batch_size)

    runs = {}
    runs["naive"] = timed(lambda: naive(model, ids, last, context, device), device)
    runs["exact"] = timed(lambda: F.extract_word_activations(
        model, ids, last, context_tokens=context, batch_size=batch_size, mode="exact"), device)
    runs["strided"] = timed(lambda: F.extract_word_activations(
        model, ids, last, context_tokens=context, batch_size=batch_size, mode="strided",
        min_context=min_context), device)

    print(f"\n{'mode':8s} {'time s':>8s} {'words/s':>10s} {'peak MiB':>9s}")
    for name, (_, dt, mib) in runs.items():
        print(f"{name:8s} {dt:8.2f} {last.size / dt:10.1f} {mib:9.1f}")
    t = {k: v[1] for k, v in runs.items()}
    print(f"\nspeed-up exact/naive   = {t['naive'] / t['exact']:.2f}x")
    print(f"speed-up strided/naive = {t['naive'] / t['strided']:.2f}x")
    print(f"speed-up strided/exact = {t['exact'] / t['strided']:.2f}x")

    ex, st, nv = runs["exact"][0], runs["strided"][0], runs["naive"][0]
    print(f"\nexact vs naive: max |diff| = {np.abs(ex - nv).max():.2e} (must be float noise)")
    first = last < context
    print(f"strided vs exact: words of the first window identical: "
          f"{np.array_equal(ex[:, first], st[:, first])}; per-layer centred correlation over "
          f"the {(~first).sum()} later words:")
    corr = [centered_corr(ex[i, ~first], st[i, ~first]) for i in range(ex.shape[0])]
    print("  " + " ".join(f"L{i}:{r:.3f}" for i, r in enumerate(corr)))

    # same model with position embeddings shrunk 10x: isolates the effect of the shorter
    # context (a random model's states are otherwise dominated by its random wpe rows)
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(0.1)
    kw = dict(context_tokens=context, batch_size=batch_size, min_context=min_context)
    ex = F.extract_word_activations(model, ids, last, mode="exact", **kw)
    st = F.extract_word_activations(model, ids, last, mode="strided", **kw)
    corr = [centered_corr(ex[i, ~first], st[i, ~first]) for i in range(ex.shape[0])]
    print("  same, position embeddings x0.1: "
          + " ".join(f"L{i}:{r:.3f}" for i, r in enumerate(corr)))


if __name__ == "__main__":
    main()
