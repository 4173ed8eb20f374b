#!/usr/bin/env bash
# The GPU code path in one call, on a machine with a CUDA GPU (sized for < 5 minutes on one
# H200; every step has its own time limit: 290 s in all, plus ~10 s of start-up).
#
# Usage, from the repository root:
#
#     bash benchmarks/gpu_check.sh            # tests + comparisons + benchmarks
#     bash benchmarks/gpu_check.sh --no-bench # tests + comparisons only (< 2 minutes)
#
# Environment: PYTHON (default python), GPU_CHECK_OUT (logs and JSON results; default $OUT if
# set, else /tmp/gpu_check), BRAINPRED_CACHE (tokenizer cache; default under GPU_CHECK_OUT).
# HF_HUB_OFFLINE=1 is set: nothing is downloaded from the HuggingFace hub (tiny-gpt2 and
# random GPT-2-sized models only).
#
# Steps:
#   0. environment: installs the package (pip install "torch==2.13.0" -e ".[test]") if
#      `import brainpred` fails; prints torch.__version__, torch.version.cuda and the GPU;
#      exits 2 with "no CUDA GPU" when torch.cuda.is_available() is false. PyPI's Linux
#      x86_64 torch wheels are CUDA builds; a "+cpu" build needs a CUDA wheel instead
#      (pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128 or the
#      CUDA version of the machine).
#   1. tests: tests/test_gpu_path.py (CPU tests and the `cuda`-marked ones) and the CUDA tests
#      of tests/test_features.py.
#   2. comparison CUDA vs CPU: activations (tiny-gpt2 and a random 12 x 768 GPT-2, float32 /
#      bfloat16 / float16) and ridge scores (numpy vs torch_cuda), max |diff| printed.
#   3. benchmarks: bench_features on CPU and CUDA (same small model: GPU/CPU words/s ratios),
#      bench_features --full on CUDA (float32, bfloat16), bench_mapping --backends
#      numpy,torch_cuda (times and GPU/CPU ratio).
# Exit status: 0 if every step passed, 1 if a step failed or timed out, 2 without a CUDA GPU,
# 3 if the package cannot be installed.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 3
ROOT=$PWD
PY=${PYTHON:-python}
BENCH=1
for arg in "$@"; do
    case $arg in
        --no-bench) BENCH=0 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $arg (use --no-bench or --help)" >&2; exit 3 ;;
    esac
done
OUTDIR=${GPU_CHECK_OUT:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUTDIR" || exit 3
export HF_HUB_OFFLINE=1
export BRAINPRED_CACHE=${BRAINPRED_CACHE:-$OUTDIR/cache}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's source
export PYTHONUNBUFFERED=1
FAILED=()
START=$SECONDS

step() {  # step NAME TIMEOUT_S COMMAND...: run with a time limit, log to $OUTDIR/NAME.log
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== [$((SECONDS - START)) s] $name (limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUTDIR/$name.log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "--- $name: TIMED OUT after ${limit} s"
        FAILED+=("$name (timed out)")
    elif [ "$rc" -ne 0 ]; then
        echo "--- $name: FAILED (exit $rc)"
        FAILED+=("$name (exit $rc)")
    else
        echo "--- $name: ok ($((SECONDS - START)) s so far)"
    fi
    return "$rc"
}

# ---------------------------------------------------------------------------- 0. environment
echo "=== gpu_check: $(date -u +%FT%TZ), $(hostname), $(nproc) CPUs, outputs in $OUTDIR"
if ! "$PY" -c "import brainpred.features, brainpred.mapping, himalaya, transformers, pytest" \
        >/dev/null 2>&1; then
    echo "brainpred or its dependencies are not importable: pip install \"torch==2.13.0\" -e \".[test]\""
    if ! "$PY" -m pip install "torch==2.13.0" -e ".[test]"; then
        echo "gpu_check: FAILED to install the package (no network? install it first)." >&2
        exit 3
    fi
fi
"$PY" - <<'EOF'
import sys
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"torch.version.cuda {torch.version.cuda}, cudnn "
      f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
if not torch.cuda.is_available():
    hint = ("this torch is a CPU-only build: install a CUDA wheel (e.g. pip install "
            "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128)"
            if torch.version.cuda is None else
            "torch is a CUDA build but sees no device (driver? CUDA_VISIBLE_DEVICES?)")
    print(f"gpu_check: no CUDA GPU: torch.cuda.is_available() is False; {hint}. "
          "Nothing was run.", file=sys.stderr)
    sys.exit(2)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability "
          f"{p.major}.{p.minor}, bf16 supported {torch.cuda.is_bf16_supported()}")
print(f"matmul TF32 allowed: {torch.backends.cuda.matmul.allow_tf32} (float32 tests assume "
      "False, torch's default)")
EOF
rc=$?
if [ "$rc" -ne 0 ]; then
    exit "$rc"
fi

# ---------------------------------------------------------------------------------- 1. tests
step tests 85 "$PY" -m pytest -q -p no:cacheprovider -rsx tests/test_gpu_path.py \
    "tests/test_features.py::test_cuda_matches_cpu" "tests/test_features.py::test_device_resolution"

# ---------------------------------------------------- 2. comparison of CUDA and CPU results
cat > "$OUTDIR/compare.py" <<'EOF'
"""CUDA vs CPU: activations and ridge scores (max |diff| printed; bounds as the tests)."""
import json
import re
import sys
import time

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from brainpred import features as F
from brainpred import lm
from brainpred import mapping

torch.manual_seed(0)
failures, report = [], {}


def story(tok, n_words, seed=0):
    vocab = ("the cat sat on a mat and looked at the old door while cold rain fell over town, "
             "so every quiet stranger waited near our boat. She said it's 1921").split()
    text = " ".join(np.random.default_rng(seed).choice(vocab, n_words))
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    return F.word_token_index(text, np.array([s for s, _ in spans]),
                              np.array([e for _, e in spans]), tok)


def compare(name, ref, got, rel_bound):
    rel = [float(np.linalg.norm(g - r) / np.linalg.norm(r)) for r, g in zip(ref, got)]
    corr = [float(np.corrcoef(r.ravel(), g.ravel())[0, 1]) for r, g in zip(ref, got)]
    mad = float(np.abs(got - ref).max())
    ok = bool(np.isfinite(got).all()) and (rel_bound is None or max(rel) < rel_bound)
    print(f"{name:44s} max|diff| {mad:.2e}  rel/layer max {max(rel):.2e} (bound "
          f"{rel_bound})  corr min {min(corr):.6f}  {'ok' if ok else 'FAIL'}", flush=True)
    report[name] = dict(max_abs_diff=mad, max_rel=max(rel), min_corr=min(corr), ok=ok)
    if not ok:
        failures.append(name)


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t


bounds = {"float32": 2e-4, "bfloat16": 3e-2, "float16": 5e-3}
# tiny-gpt2 (12 x 64), exact, 128-token windows
cpu, tok = lm.load_model("tiny-gpt2", seed=0, device="cpu")
ids, last = story(tok, 600)
kw = dict(context_tokens=128, batch_size=32)
ref = F.extract_word_activations(cpu, ids, last, **kw)
for dtype in bounds:
    gpu, _ = lm.load_model("tiny-gpt2", seed=0, device="cuda", dtype=dtype)
    compare(f"tiny-gpt2 exact cuda {dtype} vs cpu float32", ref,
            F.extract_word_activations(gpu, ids, last, **kw), bounds[dtype])

# a random GPT-2 of the real size (12 x 768, context 1024), strided (few windows: CPU is fast)
big = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_layer=12, n_embd=768, n_head=12,
                                 n_positions=1024)).eval()
ids, last = story(tok, 2400, seed=1)
kw = dict(context_tokens=1024, batch_size=8, mode="strided", min_context=512)
t = time.perf_counter()
ref = F.extract_word_activations(big, ids, last, **kw)
t_cpu = time.perf_counter() - t
print(f"random GPT-2 12x768: {ids.size} tokens, {last.size} words, strided; cpu float32 "
      f"{t_cpu:.2f} s", flush=True)
for dtype in bounds:
    gpu = GPT2LMHeadModel(big.config).eval()
    gpu.load_state_dict(big.state_dict())
    gpu = gpu.to("cuda", getattr(torch, dtype))
    F.extract_word_activations(gpu, ids, last[:50], **kw)   # warm-up
    got, t_gpu = timed(lambda: F.extract_word_activations(gpu, ids, last, **kw))
    # float32 must match; half precision of a random 768-unit model: reported, not bounded
    compare(f"gpt2-size strided cuda {dtype} vs cpu float32", ref, got,
            bounds["float32"] if dtype == "float32" else None)
    print(f"    cuda {dtype}: {t_gpu:.3f} s = {t_cpu / t_gpu:.1f}x cpu float32", flush=True)
    report[f"gpt2-size strided cuda {dtype} vs cpu float32"]["speedup"] = t_cpu / t_gpu
    del gpu

# ridge scores: numpy vs torch_cuda (2 subjects sharing a story, X + 2 windows)
rng = np.random.default_rng(0)
n, V = 600, 5000
X = rng.standard_normal((n, 768), dtype=np.float32)
W = {d: rng.standard_normal((n, 7 * 768), dtype=np.float32) for d in (0, 4)}
Ys = []
for _ in range(2):
    Y = rng.standard_normal((n, V), dtype=np.float32) * 3 + X[:, :8] @ rng.standard_normal(
        (8, V), dtype=np.float32)
    Y[:, :20] = 0.0
    Ys.append(Y)
kw = dict(n_components=20, delays=range(6), alphas=np.logspace(-1, 8, 10), n_folds=5)
for inner in ("contiguous", "loo"):
    res = {}
    for backend in ("numpy", "torch_cuda"):
        t = time.perf_counter()
        out = mapping.forecast_scores_shared(X, W, Ys, [n // 2, n - n // 2], inner_cv=inner,
                                             backend=backend, **kw)
        res[backend] = (np.concatenate([np.concatenate([a[None], b]).ravel() for a, b in out]),
                        time.perf_counter() - t)
    a, b = res["numpy"][0], res["torch_cuda"][0]
    same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
    mad = float(np.nanmax(np.abs(a - b)))
    ok = same_nan and mad < 1e-4
    print(f"ridge scores {inner:10s} torch_cuda vs numpy: max|diff| {mad:.2e} (bound 1e-4), "
          f"same NaN {same_nan}; numpy {res['numpy'][1]:.2f} s, torch_cuda "
          f"{res['torch_cuda'][1]:.2f} s = {res['numpy'][1] / res['torch_cuda'][1]:.1f}x  "
          f"{'ok' if ok else 'FAIL'}", flush=True)
    report[f"ridge {inner}"] = dict(max_abs_diff=mad, same_nan=same_nan, ok=ok,
                                    numpy_s=res["numpy"][1], cuda_s=res["torch_cuda"][1])
    if not ok:
        failures.append(f"ridge {inner}")
json.dump(report, open(sys.argv[1], "w"), indent=1)
if failures:
    print("comparison FAILED: " + ", ".join(failures))
    sys.exit(1)
EOF
step compare 70 "$PY" "$OUTDIR/compare.py" "$OUTDIR/compare.json"

# ----------------------------------------------------------------------------- 3. benchmarks
if [ "$BENCH" -eq 1 ]; then
    # same small random GPT-2 (4 x 128, context 256) on both devices: the GPU/CPU ratios
    step bench_features_cpu 30 "$PY" benchmarks/bench_features.py --device cpu --windows 3 \
        --naive-every 8 --no-shrunk --json "$OUTDIR/features_cpu.json"
    step bench_features_cuda 20 "$PY" benchmarks/bench_features.py --device cuda --windows 3 \
        --naive-every 8 --no-shrunk --json "$OUTDIR/features_cuda.json"
    "$PY" - "$OUTDIR" <<'EOF'
import json, os, sys
d = sys.argv[1]
try:
    cpu, gpu = (json.load(open(os.path.join(d, f"features_{k}.json"))) for k in ("cpu", "cuda"))
except OSError as exc:
    print(f"GPU/CPU ratios: missing results ({exc})")
    sys.exit(0)
print("\nbench_features, GPU/CPU words/s (4 x 128 random GPT-2, context 256): " + ", ".join(
    f"{m} {gpu['words_per_s'][m]:.0f}/{cpu['words_per_s'][m]:.0f} = "
    f"{gpu['words_per_s'][m] / cpu['words_per_s'][m]:.1f}x" for m in cpu["words_per_s"]))
EOF
    # GPT-2 size (12 x 768, context 1024) on the GPU only (on CPU it takes minutes)
    for dtype in float32 bfloat16; do
        step "bench_features_full_cuda_$dtype" 20 "$PY" benchmarks/bench_features.py --full \
            --device cuda --dtype "$dtype" --windows 2 --naive-every 16 --no-shrunk \
            --json "$OUTDIR/features_full_cuda_$dtype.json"
    done
    step bench_mapping 45 "$PY" benchmarks/bench_mapping.py --backends numpy,torch_cuda \
        --n-trs 300 --n-vertices 20484 --json "$OUTDIR/mapping.json"
fi

# --------------------------------------------------------------------------------- summary
echo
echo "=== gpu_check done in $((SECONDS - START)) s; logs and JSON in $OUTDIR"
if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "gpu_check: FAILED: ${FAILED[*]}"
    exit 1
fi
echo "gpu_check: all steps passed"
