"""Benchmark of the mapping engine (``brainpred.mapping``) against two reference engines.

One run prints times, peak memory and ratios for realistic shapes:

* the machine's float32 matrix-multiply rate (a large sgemm, numpy/OpenBLAS, same run);
* brainpred ``forecast_scores_shared``: S subjects sharing one story, X (768 dims) and
  forecast windows (7 x 768 = 5,376 dims), 5 outer x 5 inner contiguous folds, 10 alphas,
  20 + 20 PCA components, 6 delays; also with leave-one-out inner CV;
* (a) the paper's engine: scikit-learn StandardScaler + PCA(20) per block, FIR delays,
  StandardScaler, ``RidgeCV(alphas, alpha_per_target=True)`` (leave-one-out), per subject and
  distance;
* (b) plain himalaya ``RidgeCV`` on the same inner folds (numpy backend, local alpha), per
  subject and distance, on the design built as in (a).

The references run on a subset of (subjects x distances) and everything is
compared per (subject, distance) unit: one ``[X, W_d]`` encoding model of one subject, five
outer folds. brainpred's unit time is its total time (X-alone model included) divided by
subjects x distances; with 41 distances (the paper), it is the measured time of the ``[X, W_d]``
designs per unit plus the measured once-per-fold work (X-alone design, gathering the targets)
spread over 41 units. brainpred is compared to (a) with ``inner_cv="loo"`` and to (b) with the
contiguous inner folds, i.e. at equal scores. Every measurement runs in its own subprocess, whose
peak resident memory (``ru_maxrss``) is reported.

The full-resolution subject (81,924 vertices x 2,000 TRs, 41 distances) is measured on one
outer fold and one distance while the 41 windows are held in memory; its time is extrapolated to
5 folds x 42 models.

Banded ridge (``mapping.penalty: banded``), same run: one ``[X, W_d]`` model of one subject
(300 TRs; 20,484 vertices, ``--quick`` 5,000), timed with the shared penalty, with the banded
penalty in brainpred's engine (20 candidates, :func:`brainpred.mapping.banded_weights`) and with
himalaya's ``BandedRidgeCV`` (random search on the same candidates, alphas and contiguous inner
folds, on the design built with scikit-learn's exact PCA), with the ratios and the max |r|
difference between the two banded solvers.

Usage::

    python benchmarks/bench_mapping.py --quick     # < 3 minutes on 2 cores
    python benchmarks/bench_mapping.py             # < 15 minutes on 2 cores
    python benchmarks/bench_mapping.py --banded-only [--quick]   # the banded section alone
    python benchmarks/bench_mapping.py --backends numpy,torch_cuda [--json out.json]
        # brainpred's engine only, once per backend (no references): times, ratios to the
        # first backend and max |score difference| (300 TRs x 20,484 vertices, 2 subjects,
        # 2 distances by default; --n-trs / --n-vertices to change)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ALPHAS = np.logspace(-1, 8, 10)
DIM_X, WIDTH = 768, 7
KW = dict(n_components=20, delays=range(6), alphas=ALPHAS, n_folds=5, n_inner_folds=5,
          target_batch=20000)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def make_data(n_trs, n_vertices, n_subjects, n_distances, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_trs, DIM_X), dtype=np.float32)
    windows = {d: rng.standard_normal((n_trs, DIM_X * WIDTH), dtype=np.float32)
               for d in range(n_distances)}
    w = rng.standard_normal((8, n_vertices), dtype=np.float32)
    Ys = []
    for _ in range(n_subjects):
        Y = rng.standard_normal((n_trs, n_vertices), dtype=np.float32) * 3
        Y += X[:, :8] @ w
        Y[:, :50] = 0.0                                       # medial wall: NaN scores
        Ys.append(Y)
    segments = [n_trs // 2, n_trs - n_trs // 2]
    return X, windows, Ys, segments


# --------------------------------------------------------------------------------------------
# engines (each run in a subprocess)
# --------------------------------------------------------------------------------------------
def run_brainpred(cfg):
    import himalaya.backend  # noqa: F401  (imports outside the timed region, as for (a), (b))

    from brainpred import mapping

    X, windows, Ys, segments = make_data(cfg["n_trs"], cfg["n_vertices"], cfg["n_subjects"],
                                         cfg["n_held_windows"] or cfg["n_distances"])
    used = {d: windows[d] for d in range(cfg["n_distances"])}
    if cfg.get("one_fold"):
        orig = mapping._segments_and_folds
        mapping._segments_and_folds = lambda *a: (orig(*a)[0], orig(*a)[1][:1])
    sgemm = run_sgemm(None)["gflops_per_s"]       # the machine's rate now (shared machine)
    mapping.STATS.update(solver_seconds=0.0, solver_flops=0.0, design_seconds={})
    t = time.perf_counter()
    out = mapping.forecast_scores_shared(X, used, Ys, segments, inner_cv=cfg["inner_cv"],
                                         backend=cfg["backend"], **KW)
    seconds = time.perf_counter() - t
    if cfg.get("save"):
        np.save(cfg["save"], np.vstack([np.asarray(out[0][0])[None], np.asarray(out[0][1])]))
    return dict(seconds=seconds, solver_seconds=mapping.STATS["solver_seconds"],
                solver_gflops=mapping.STATS["solver_flops"] / 1e9,
                x_seconds=mapping.STATS["design_seconds"][0],
                xw_seconds=sum(v for k, v in mapping.STATS["design_seconds"].items() if k),
                sgemm_gflops_per_s=sgemm, mean_score=float(np.nanmean(out[0][1][0])))


def _sk_design(blocks, train, pca_solver):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return [make_pipeline(StandardScaler(), PCA(20, svd_solver=pca_solver, random_state=0))
            .fit(B[train]).transform(B) for B in blocks]


def _reference_unit(X, W, Y, segments, engine, pca_solver="auto"):
    """One (subject, distance) unit of a reference engine: mean test r per vertex (NaN if
    constant)."""
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from brainpred.design import fir_delays
    from brainpred.mapping import contiguous_folds, pearson_r

    n = X.shape[0]
    cols = np.flatnonzero(np.isfinite(Y).all(0) & (np.ptp(Y, 0) > 0))
    fold_r = []
    for train, test in contiguous_folds(n, 5):
        Z = np.concatenate(_sk_design([X, W], train, pca_solver), 1)
        D = fir_delays(Z, range(6), segments)
        D = StandardScaler().fit(D[train]).transform(D).astype(np.float32)
        Ytr, Yte = Y[np.ix_(train, cols)], Y[np.ix_(test, cols)]
        if engine == "sklearn":
            model = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(D[train], Ytr)
        else:
            set_backend("numpy")
            model = HimalayaRidgeCV(alphas=ALPHAS, cv=contiguous_folds(len(train), 5),
                                    fit_intercept=True,
                                    solver_params=dict(n_targets_batch=20000, warn=False))
            model.fit(D[train], Ytr)
        fold_r.append(pearson_r(Yte, model.predict(D[test])))
    out = np.full(Y.shape[1], np.nan)
    out[cols] = np.mean(fold_r, 0)
    return out


def run_reference(cfg):
    """(a) scikit-learn RidgeCV leave-one-out or (b) himalaya RidgeCV, per subject x distance."""
    import himalaya.ridge  # noqa: F401  (imports outside the timed region)
    import sklearn.linear_model  # noqa: F401

    X, windows, Ys, segments = make_data(cfg["n_trs"], cfg["n_vertices"], cfg["n_subjects"],
                                         cfg["n_distances"])
    t = time.perf_counter()
    scores = [_reference_unit(X, windows[d], Y, segments, cfg["engine"])
              for Y in Ys for d in range(cfg["n_distances"])]
    seconds = time.perf_counter() - t
    return dict(seconds=seconds, mean_score=float(np.nanmean(scores[0])))


def run_equality(cfg):
    """Scores of brainpred and of both references on one small unit, the references with an
    exact PCA (``svd_solver="full"``); the timed runs use scikit-learn's default PCA, randomized
    on the 5,376-dim windows, whose components (hence scores) differ a little."""
    from brainpred import mapping

    X, windows, Ys, segments = make_data(cfg["n_trs"], cfg["n_vertices"], 1, 1)
    out = {}
    for engine, inner in (("sklearn", "loo"), ("himalaya", "contiguous")):
        ours = mapping.forecast_scores_shared(X, {0: windows[0]}, Ys, segments, inner_cv=inner,
                                              backend=cfg["backend"], **KW)[0][1][0]
        ref = _reference_unit(X, windows[0], Ys[0], segments, engine, pca_solver="full")
        both = np.isfinite(ours) & np.isfinite(ref)
        out[engine] = dict(max_abs_diff=float(np.abs(ours - ref)[both].max()),
                           same_nan=bool((np.isnan(ours) == np.isnan(ref)).all()),
                           mean_r=float(ref[both].mean()))
    return out


def run_banded(cfg):
    """One ``[X, W]`` unit: ``engine`` "shared" or "banded" (brainpred), or "himalaya"
    (``BandedRidgeCV`` random search on the same candidates, alphas and inner folds)."""
    import himalaya.ridge  # noqa: F401  (imports outside the timed region)

    from brainpred import mapping

    X, windows, Ys, segments = make_data(cfg["n_trs"], cfg["n_vertices"], 1, 1)
    Y = Ys[0]
    t = time.perf_counter()
    if cfg["engine"] == "himalaya":
        r = _himalaya_banded_unit(X, windows[0], Y, segments, cfg["n_candidates"])
    else:
        r = mapping.design_scores([X, windows[0]], [(0, 1)], [Y], segments,
                                  penalty=cfg["engine"], banded_candidates=cfg["n_candidates"],
                                  backend=cfg["backend"], **KW)[0][0]
    seconds = time.perf_counter() - t
    if cfg.get("save"):
        np.save(cfg["save"], np.asarray(r))
    return dict(seconds=seconds, mean_score=float(np.nanmean(r)))


def _himalaya_banded_unit(X, W, Y, segments, n_candidates):
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV
    from sklearn.preprocessing import StandardScaler

    from brainpred.design import fir_delays
    from brainpred.mapping import banded_weights, contiguous_folds, pearson_r

    set_backend("numpy")
    # himalaya scales each band by sqrt(gamma) and back: its exact zeros become 1e-12
    gammas = np.maximum(banded_weights(2, n_candidates), 1e-12).astype(np.float32)
    n = X.shape[0]
    cols = np.flatnonzero(np.isfinite(Y).all(0) & (np.ptp(Y, 0) > 0))
    fold_r = []
    for train, test in contiguous_folds(n, 5):
        Z = _sk_design([X, W], train, "full")
        D = fir_delays(np.concatenate(Z, 1), range(6), segments)
        D = StandardScaler().fit(D[train]).transform(D).astype(np.float32)
        band = np.tile(np.repeat([0, 1], [Z[0].shape[1], Z[1].shape[1]]), 6)
        Xs = [D[:, band == b] for b in (0, 1)]
        model = BandedRidgeCV(groups="input", fit_intercept=True,
                              cv=contiguous_folds(len(train), 5),
                              solver_params=dict(n_iter=gammas, alphas=ALPHAS,
                                                 n_targets_batch=20000, progress_bar=False,
                                                 warn=False))
        model.fit([x[train] for x in Xs], Y[np.ix_(train, cols)])
        fold_r.append(pearson_r(Y[np.ix_(test, cols)], model.predict([x[test] for x in Xs])))
    out = np.full(Y.shape[1], np.nan, np.float32)
    out[cols] = np.mean(fold_r, 0)
    return out


def banded_section(quick, backend):
    """Shared penalty, banded in brainpred's engine and himalaya's banded solver, same unit."""
    import tempfile

    shape = dict(n_trs=300, n_vertices=5000 if quick else 20484, n_candidates=20)
    print(f"\n## banded ridge: one [X, W_d] model, {shape['n_trs']} TRs, "
          f"{shape['n_vertices']} vertices, {shape['n_candidates']} candidate band weights x "
          f"{len(ALPHAS)} alphas, 5 outer x 5 inner contiguous folds", flush=True)
    res, scores = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("shared", "banded", "himalaya"):
            path = os.path.join(tmp, f"{engine}.npy")
            res[engine] = measure("banded", **shape, engine=engine, backend=backend, save=path)
            scores[engine] = np.load(path)
    both = np.isfinite(scores["banded"]) & np.isfinite(scores["himalaya"])
    diff = np.abs(scores["banded"] - scores["himalaya"])[both]
    sh, bd, hm = (res[k]["seconds"] for k in ("shared", "banded", "himalaya"))
    print(f"shared penalty (brainpred):  {sh:7.2f} s, mean r {res['shared']['mean_score']:.4f};"
          f" peak RSS {res['shared']['peak_rss_gib']:.2f} GiB", flush=True)
    print(f"banded (brainpred engine):   {bd:7.2f} s = {bd / sh:.1f}x shared, mean r "
          f"{res['banded']['mean_score']:.4f}; peak RSS {res['banded']['peak_rss_gib']:.2f} GiB",
          flush=True)
    print(f"banded (himalaya BandedRidgeCV): {hm:7.2f} s = {hm / sh:.1f}x shared, mean r "
          f"{res['himalaya']['mean_score']:.4f}; peak RSS "
          f"{res['himalaya']['peak_rss_gib']:.2f} GiB", flush=True)
    print(f"-> brainpred's banded is {hm / bd:.1f}x faster than himalaya's; |r - r_himalaya| "
          f"< 1e-3 for {np.mean(diff < 1e-3):.1%} of vertices (median {np.median(diff):.1e}, "
          f"max {diff.max():.1e}: near-tied candidates picked differently, float32), same NaN "
          f"{bool(np.array_equal(np.isnan(scores['banded']), np.isnan(scores['himalaya'])))}",
          flush=True)
    return res


def run_sgemm(_cfg):
    n = 4096
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return dict(seconds=best, gflops_per_s=2 * n ** 3 / best / 1e9)


def child(kind, cfg):
    fn = dict(brainpred=run_brainpred, reference=run_reference, sgemm=run_sgemm,
              equality=run_equality, banded=run_banded)[kind]
    res = fn(cfg)
    res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print("RESULT " + json.dumps(res))


def measure(kind, **cfg):
    """Run one measurement in a fresh process; its dict of results."""
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(cfg)],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{kind} {cfg} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def compare_backends(args):
    """brainpred's engine once per backend (each in its own process), same data: times, the
    ratio of each to the first backend, and the max |score difference| to the first."""
    import tempfile

    from brainpred.mapping import resolve_backend

    backends = [resolve_backend(b.strip()) for b in args.backends.split(",") if b.strip()]
    shape = dict(n_trs=args.n_trs, n_vertices=args.n_vertices, n_subjects=2, n_distances=2,
                 n_held_windows=0, inner_cv=args.inner_cv)
    print(f"# bench_mapping --backends {','.join(backends)}: {args.n_trs} TRs, "
          f"{args.n_vertices} vertices, 2 subjects sharing the story, X + 2 distances, "
          f"inner CV {args.inner_cv}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    results, scores = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for b in backends:
            path = os.path.join(tmp, f"{b}.npy")
            r = measure("brainpred", **shape, backend=b, save=path)
            scores[b] = np.load(path)
            results[b] = r
    first = backends[0]
    for b in backends:
        r = results[b]
        both = np.isfinite(scores[b]) & np.isfinite(scores[first])
        r["max_abs_diff_to_" + first] = float(np.abs(scores[b] - scores[first])[both].max())
        r["same_nan_as_" + first] = bool(np.array_equal(np.isnan(scores[b]),
                                                        np.isnan(scores[first])))
        r["speedup_vs_" + first] = results[first]["seconds"] / r["seconds"]
        print(f"{b:10s}: {r['seconds']:7.2f} s (solver {r['solver_seconds']:.2f} s), "
              f"{r['speedup_vs_' + first]:6.2f}x {first}; max |r - r_{first}| = "
              f"{r['max_abs_diff_to_' + first]:.1e}, same NaN {r['same_nan_as_' + first]}; "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(shape=shape, results=results), f, indent=1)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small subset (< 3 minutes)")
    p.add_argument("--backend", default=None, help="brainpred backend (default: auto)")
    p.add_argument("--backends", default=None,
                   help="comma-separated backends (e.g. numpy,torch_cuda): only brainpred's "
                        "engine, once per backend, with times, ratios and score differences")
    p.add_argument("--n-trs", type=int, default=300, help="with --backends (default 300)")
    p.add_argument("--n-vertices", type=int, default=20484,
                   help="with --backends (default 20484)")
    p.add_argument("--inner-cv", default="contiguous", help="with --backends")
    p.add_argument("--json", default=None, metavar="PATH", help="with --backends: results")
    p.add_argument("--banded-only", action="store_true",
                   help="only the banded-ridge section (shared / banded / himalaya banded)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child[0], json.loads(args.child[1]))
    if args.backends:
        return compare_backends(args)

    from brainpred.mapping import resolve_backend
    backend = resolve_backend(args.backend or "auto")
    if args.banded_only:
        print(f"# bench_mapping --banded-only{' --quick' if args.quick else ''}, backend "
              f"{backend}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
              flush=True)
        banded_section(args.quick, backend)
        return
    print(f"# bench_mapping ({'quick' if args.quick else 'full'}), backend {backend}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    sg = measure("sgemm")
    print(f"float32 matmul (4096^3, numpy): {sg['gflops_per_s']:.1f} GFLOP/s", flush=True)
    eq = measure("equality", n_trs=1000, n_vertices=2000, backend=backend)
    print("equal scores (1,000 TRs x 2,000 vertices, references with an exact PCA): "
          + "; ".join(f"{'(a)' if k == 'sklearn' else '(b)'} {k} max |r - r_ref| = "
                      f"{v['max_abs_diff']:.1e}, same NaN vertices {v['same_nan']}"
                      for k, v in eq.items() if isinstance(v, dict)), flush=True)

    if args.quick:
        scenarios = [dict(n_trs=300, n_vertices=20484, n_subjects=2, n_distances=2,
                          refs=dict(sklearn=(1, 1), himalaya=(1, 1)), loo=True)]
        fullres = None
    else:
        scenarios = [dict(n_trs=300, n_vertices=20484, n_subjects=10, n_distances=2,
                          refs=dict(sklearn=(2, 1), himalaya=(1, 1)), loo=True),
                     dict(n_trs=2000, n_vertices=20484, n_subjects=2, n_distances=2,
                          refs=dict(sklearn=(1, 1), himalaya=(1, 1)), loo=True)]
        fullres = dict(n_trs=2000, n_vertices=81924, n_subjects=1, n_distances=1,
                       n_held_windows=41, one_fold=True)

    rows = []
    for sc in scenarios:
        base = dict(n_trs=sc["n_trs"], n_vertices=sc["n_vertices"])
        units = sc["n_subjects"] * sc["n_distances"]
        print(f"\n## {sc['n_trs']} TRs, {sc['n_vertices']} vertices, {sc['n_subjects']} "
              f"subjects sharing the story, {sc['n_distances']} distances", flush=True)
        ours = {}
        for inner in ["contiguous"] + (["loo"] if sc["loo"] else []):
            r = measure("brainpred", **base, n_subjects=sc["n_subjects"],
                        n_distances=sc["n_distances"], n_held_windows=0, inner_cv=inner,
                        backend=backend)
            ours[inner] = r
            rate = r["solver_gflops"] / r["solver_seconds"]
            # 41 distances: the measured time of the [X, W_d] designs per unit, plus the
            # once-per-fold work (X-alone design, targets; measured) spread over 41 units
            once = r["seconds"] - r["xw_seconds"]
            r["unit41"] = r["xw_seconds"] / units + once / (41 * sc["n_subjects"])
            print(f"brainpred {inner:10s}: {r['seconds']:7.1f} s total (X alone "
                  f"{r['x_seconds']:.1f} s, [X, W_d] {r['xw_seconds']:.1f} s), "
                  f"{r['seconds'] / units:6.2f} s per (subject, distance) measured, "
                  f"{r['unit41']:.2f} s with 41 distances; "
                  f"solver {r['solver_seconds']:.1f} s at {rate:.1f} GFLOP/s = "
                  f"{rate / r['sgemm_gflops_per_s']:.0%} of matmul measured just before "
                  f"({r['sgemm_gflops_per_s']:.0f}); peak RSS {r['peak_rss_gib']:.2f} GiB",
                  flush=True)
            rows.append((sc, inner, r, rate))
        for engine, (ns, nd) in sc["refs"].items():
            inner = "loo" if engine == "sklearn" else "contiguous"
            if inner not in ours:
                inner = "contiguous"
            r = measure("reference", **base, n_subjects=ns, n_distances=nd, engine=engine)
            unit = r["seconds"] / (ns * nd)
            mine = ours[inner]["seconds"] / units
            print(f"({'a' if engine == 'sklearn' else 'b'}) {engine:8s} ({ns} x {nd} units): "
                  f"{unit:7.2f} s per (subject, distance); peak RSS {r['peak_rss_gib']:.2f} GiB"
                  f" -> brainpred ({inner}) is {unit / mine:.1f}x faster as measured, "
                  f"{unit / ours[inner]['unit41']:.1f}x with 41 distances; mean r of the first "
                  f"unit {r['mean_score']:.4f}, brainpred {ours[inner]['mean_score']:.4f}",
                  flush=True)

    if fullres:
        print("\n## full-resolution subject: 81924 vertices x 2000 TRs, 41 windows held "
              "(measured: 1 outer fold, X + 1 distance)", flush=True)
        r = measure("brainpred", **fullres, inner_cv="contiguous", backend=backend)
        per_model = r["seconds"] / 2
        est = per_model * 5 * 42
        rate = r["solver_gflops"] / r["solver_seconds"]
        print(f"measured {r['seconds']:.1f} s (solver {rate:.1f} GFLOP/s = "
              f"{rate / r['sgemm_gflops_per_s']:.0%} of matmul); peak RSS {r['peak_rss_gib']:.2f} GiB"
              f" (41 windows = {41 * 2000 * DIM_X * WIDTH * 4 / 2 ** 30:.2f} GiB of it); "
              f"estimated full subject (5 folds x 42 models): {est / 60:.0f} min", flush=True)

    banded_section(args.quick, backend)


if __name__ == "__main__":
    main()
