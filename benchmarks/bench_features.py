"""Benchmark of word-activation extraction: exact vs strided vs naive.

naive   = one HuggingFace forward pass per word, unbatched, on the word's full past-only window
          (``tokens[t - context + 1 .. t]``), i.e. what the paper's definition literally says.
          To keep the run short it is timed on every ``--naive-every``-th word (a systematic
          sample, so first-window and later words keep their proportions); words/s is
          extrapolated from that sample and its output is checked against exact mode;
exact   = :func:`brainpred.features.extract_word_activations` ``mode="exact"`` (one pass for
          the first window, then batched per-word windows, GPT-2 fast forward) -- must equal
          naive to float tolerance. Two decompositions are also timed: ``exact-hf`` (same
          batching, HF forward) and ``exact-b1`` (fast forward, one window per pass);
strided = ``mode="strided"`` (overlapping windows, each word read with >= min_context past
          tokens) -- approximate; its per-layer correlation and relative error to exact are
          reported.

Default: a random 4-layer x 128-unit GPT-2 (n_positions = context = 256, min_context 128) on
CPU, on a generated story of ~8 context windows, so most words see a full window. ``--full``:
a random GPT-2 of the real size (12 x 768, context 1024, min_context 512), on the GPU if there
is one (``--dtype float16|bfloat16`` there). Random weights: speed and memory are
representative; the strided-vs-exact differences are only indicative (a random model is
dominated by its random position embeddings, hence the second line with them shrunk x0.1) --
measure them on real GPT-2 weights for the paper.

Peak memory: CUDA -> ``torch.cuda.max_memory_allocated`` above the start; CPU -> peak resident
set size above the level before the run, sampled every 2 ms by a thread (psutil).

Usage::

    python benchmarks/bench_features.py                  # CPU, < 3 minutes on 2 idle cores
    python benchmarks/bench_features.py --decompose      # + where exact's gain comes from
    python benchmarks/bench_features.py --threads 1      # steadier on a busy machine
    python benchmarks/bench_features.py --full           # GPU, 12 x 768, context 1024
    python benchmarks/bench_features.py --full --dtype bfloat16
    python benchmarks/bench_features.py --device cuda --json gpu.json   # results as JSON too
"""

from __future__ import annotations

import argparse
import json
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
from brainpred import lm  # noqa: E402

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
    """One unbatched HF pass per word over its full past-only window."""
    backbone = model.base_model
    emb = model.get_input_embeddings()
    out = np.empty((lm.n_layers(model) + 1, last.size, emb.embedding_dim), np.float32)
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


def relative_error(ref, approx):
    """||approx - ref|| / ||ref - mean(ref)|| (0 = identical, 1 = as far as the spread)."""
    return float(np.linalg.norm(approx - ref) / np.linalg.norm(ref - ref.mean(0)))


def compare(exact, strided, first):
    corr = [centered_corr(exact[i, ~first], strided[i, ~first]) for i in range(exact.shape[0])]
    err = [relative_error(exact[i, ~first], strided[i, ~first]) for i in range(exact.shape[0])]
    return corr, err


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="GPT-2 size (12 x 768, context 1024) on GPU if available")
    parser.add_argument("--windows", type=float, default=8.0,
                        help="story length in context windows (default 8)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--naive-every", type=int, default=4,
                        help="time naive on every k-th word (default 4; 1 = all words)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", help="float16/bfloat16 on GPU only")
    parser.add_argument("--model", default=None,
                        help="load this model with brainpred.lm.load_model (e.g. 'gpt2' "
                             "from the HuggingFace cache) instead of a random GPT-2: gives the "
                             "strided-vs-exact difference for real weights")
    parser.add_argument("--context", type=int, default=None, help="context tokens")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's, i.e. the number of cores)")
    parser.add_argument("--decompose", action="store_true",
                        help="also time exact-hf (batched HF forward) and exact-b1 (fast "
                             "forward, one window per pass)")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the settings, words/s, seconds and peak MiB of each "
                             "mode to PATH (e.g. to compare a GPU run with a CPU run)")
    parser.add_argument("--no-shrunk", action="store_true",
                        help="skip the second strided-vs-exact comparison (position "
                             "embeddings x0.1)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.full:
        cfg = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024)
        context, min_context, batch_size = 1024, 512, args.batch_size or 32
    else:
        cfg = dict(n_layer=4, n_embd=128, n_head=4, n_positions=256)
        context, min_context, batch_size = 256, 128, args.batch_size or 8
    device = lm.resolve_device(args.device)
    dtype = lm.resolve_dtype(args.dtype, device)
    if args.model:
        model, tokenizer = lm.load_model(args.model, device=str(device), dtype=args.dtype)
        cfg = dict(n_layer=lm.n_layers(model), n_embd=model.get_input_embeddings().embedding_dim)
        context = args.context or min(1024, lm.max_positions(model) or 1024)
        min_context = context // 2
        label = f"{args.model}"
    else:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, **cfg)).to(device, dtype).eval()
        tokenizer = lm.gpt2_tokenizer()
        context = args.context or context
        min_context = context // 2
        label = "random GPT-2"
    text, cs, ce = make_story(int(args.windows * context), tokenizer)
    ids, last = F.word_token_index(text, cs, ce, tokenizer)
    full = last >= context - 1
    first = last < context
    print(f"model: {label} {cfg['n_layer']} layers x {cfg['n_embd']} units, {dtype}, "
          f"context {context}, min_context {min_context}, batch {batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"story: {ids.size} tokens, {last.size} words, "
          f"{full.mean():.0%} of words see a full {context}-token window")

    # warm-up (allocator, kernels)
    warm = last[(last >= context) & (last < context + 16)]
    F.extract_word_activations(model, ids, warm, context_tokens=context, batch_size=batch_size)
    naive(model, ids, warm[:2], context, device)

    kw = dict(context_tokens=context, batch_size=batch_size)
    sample = np.arange(0, last.size, max(1, args.naive_every))
    runs = {}
    runs["naive"] = timed(lambda: naive(model, ids, last[sample], context, device), device)
    runs["exact"] = timed(lambda: F.extract_word_activations(model, ids, last, **kw), device)
    if args.decompose:
        runs["exact-hf"] = timed(lambda: F.extract_word_activations(
            model, ids, last, backend="hf", **kw), device)
        runs["exact-b1"] = timed(lambda: F.extract_word_activations(
            model, ids, last, **{**kw, "batch_size": 1}), device)
    runs["strided"] = timed(lambda: F.extract_word_activations(
        model, ids, last, mode="strided", min_context=min_context, **kw), device)

    n_words = {k: (sample.size if k == "naive" else last.size) for k in runs}
    wps = {k: n_words[k] / v[1] for k, v in runs.items()}
    print(f"\n{'mode':9s} {'words':>6s} {'time s':>8s} {'words/s':>10s} {'peak MiB':>9s}"
          f" {'x naive':>8s}")
    for name, (_, dt, mib) in runs.items():
        print(f"{name:9s} {n_words[name]:6d} {dt:8.2f} {wps[name]:10.1f} {mib:9.1f}"
              f" {wps[name] / wps['naive']:8.2f}")
    print(f"\nspeed-up exact/naive   = {wps['exact'] / wps['naive']:.2f}x")
    print(f"speed-up strided/naive = {wps['strided'] / wps['naive']:.2f}x")
    print(f"speed-up strided/exact = {wps['strided'] / wps['exact']:.2f}x")

    ex, st, nv = runs["exact"][0], runs["strided"][0], runs["naive"][0]
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    scale = float(np.abs(nv).max())
    print(f"\nexact vs naive ({sample.size} words): max |diff| = "
          f"{np.abs(ex[:, sample] - nv).max():.2e} (activations up to {scale:.1f}; must be "
          f"float noise, < {tol:g} relative: "
          f"{np.abs(ex[:, sample] - nv).max() < tol * max(scale, 1.0)})")
    for name in ("exact-hf", "exact-b1"):
        if name in runs:
            print(f"{name} vs exact: max |diff| = {np.abs(runs[name][0] - ex).max():.2e}")
    print(f"strided vs exact: words of the first window identical: "
          f"{np.array_equal(ex[:, first], st[:, first])}; over the {(~first).sum()} later "
          "words, per layer:")
    corr, err = compare(ex, st, first)
    print("  centred correlation: " + " ".join(f"L{i}:{r:.3f}" for i, r in enumerate(corr)))
    print("  relative error:      " + " ".join(f"L{i}:{r:.3f}" for i, r in enumerate(err)))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            model=label, n_layer=cfg["n_layer"], n_embd=cfg["n_embd"], dtype=str(dtype),
            device=str(device), context=context, min_context=min_context,
            batch_size=batch_size, n_tokens=int(ids.size), n_words=int(last.size),
            words_per_s=wps, seconds={k: v[1] for k, v in runs.items()},
            peak_mib={k: v[2] for k, v in runs.items()},
            exact_vs_naive_max_abs_diff=float(np.abs(ex[:, sample] - nv).max())), indent=1))

    if args.model or args.no_shrunk:
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        return
    # same model with position embeddings shrunk 10x: isolates the effect of the shorter
    # context (a random model's states are otherwise dominated by its random wpe rows); exact
    # on every 4th later word (each word's exact window is independent of the others)
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(0.1)
    sub = np.flatnonzero(~first)[::4]
    ex = F.extract_word_activations(model, ids, last[sub], **kw)
    st = F.extract_word_activations(model, ids, last, mode="strided", min_context=min_context,
                                    **kw)[:, sub]
    corr, err = compare(ex, st, np.zeros(sub.size, bool))
    print(f"  position embeddings x0.1 ({sub.size} words):")
    print("  centred correlation: " + " ".join(f"L{i}:{r:.3f}" for i, r in enumerate(corr)))
    print("  relative error:      " + " ".join(f"L{i}:{r:.3f}" for i, r in enumerate(err)))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (timings are only comparable "
          "on an otherwise idle machine)")


if __name__ == "__main__":
    main()
