"""Per-job costs of the workflow, measured, and their extrapolation to the paper-scale run.

Three parts (docs/scaling.md explains the scaling laws and assumptions):

1. ``--run``: run the workflow on a small configuration in its own working directory, one job
   at a time (``--cores 1``: no job slows another), so that every rule's ``benchmark:`` file
   (``benchmarks/out/**.tsv``: wall seconds, CPU seconds, peak RSS) is a clean per-job cost.
   Without ``--run`` the files already under ``--workdir`` are summarised.
2. ``--probe``: time the ridge mapping engine alone (``brainpred.mapping.forecast_scores``,
   one thread, random data) at a few sizes, each in its own process (peak RSS), and fit
   ``CPU seconds = a + b x TRs x vertices x models`` (models = 1 + #distances).
3. The extrapolation table: CPU-hours, GPU-hours, disk and peak memory per stage for the
   paper-scale run, from the run plan of ``config/paper.yaml`` on the release metadata
   (``--metadata``, default ``../shared/narratives``) and the measured constants.

Usage::

    python benchmarks/measure_jobs.py                         # summarise + extrapolate
    python benchmarks/measure_jobs.py --run --probe           # measure first (~8 min, 1 core)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
METADATA = REPO.parent / "shared" / "narratives"
V_SPACE = {"fsaverage5": 20484, "fsaverage6": 81924}
GPT2 = dict(layers=12, dim=768, params_nonemb=85e6, context=1024)
# Defaults when --probe was not run: the fit measured on this machine (docs/scaling.md).
MAPPING_FIT = dict(a=3.3, b=0.36e-6)
# docs/features.md: real-size GPT-2 (12 x 768, context 1024), fast exact forward, 1 CPU thread.
CPU_S_PER_WINDOW = 2.16
# Not measured (no GPU lent): sustained float32 rate of one data-centre GPU on these shapes.
GPU_FLOPS = 20e12
TOKENS_PER_WORD = 1.1   # 47,123 tokens / 42,989 words over the 26 stories (docs/features.md)
TAIL_TRS = 9            # TRs after the story ends (pieman: 10 + 281 + 9 = 300 TRs)


# ---------------------------------------------------------------------------------------------
# 1. benchmark files
# ---------------------------------------------------------------------------------------------
def run_workflow(workdir, cores, extra):
    if "--configfile" not in extra:   # the Snakefile's configfile is relative to the workdir
        extra = ["--configfile", str(REPO / "config" / "config.yaml"), *extra]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--cores", str(cores), "--forceall", *extra]
    print("$", " ".join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True)
    print(f"workflow: {time.time() - t:.0f} s wall", flush=True)


def read_benchmarks(bench_dir):
    """One row per job: rule, job, s, cpu_time, max_rss (MB) from ``benchmark:`` TSVs."""
    rows = []
    for f in sorted(Path(bench_dir).rglob("*.tsv")):
        rel = f.relative_to(bench_dir)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        t = pd.read_csv(f, sep="\t")
        for r in t.itertuples():
            rows.append(dict(rule=rule, job=str(rel), s=float(r.s),
                             cpu_time=float(getattr(r, "cpu_time", math.nan)),
                             max_rss=pd.to_numeric(r.max_rss, errors="coerce")))
    return pd.DataFrame(rows)


def summarise(jobs):
    g = jobs.groupby("rule")
    return pd.DataFrame({"jobs": g.size(), "median_s": g["s"].median(), "max_s": g["s"].max(),
                         "median_cpu_s": g["cpu_time"].median(),
                         "max_rss_mb": g["max_rss"].max()}).round(1)


# ---------------------------------------------------------------------------------------------
# 2. mapping probe
# ---------------------------------------------------------------------------------------------
_PROBE = r"""
import sys, time, resource, numpy as np
from brainpred import mapping
from brainpred.jobs import limit_threads
n, V, nd = map(int, sys.argv[1:4]); limit_threads(1)
rng = np.random.default_rng(0)
X = rng.standard_normal((n, 768), dtype=np.float32)
W = {d: rng.standard_normal((n, 768 * 7), dtype=np.float32) for d in range(nd)}
Y = rng.standard_normal((n, V), dtype=np.float32)
t = time.process_time()
mapping.forecast_scores(X, W, Y, [n], n_components=20, delays=range(6),
                        alphas=np.logspace(-1, 8, 10), n_folds=5, n_inner_folds=5,
                        backend=mapping.resolve_backend("auto"), target_batch=20000)
print(time.process_time() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
PROBE_SIZES = [(400, 20000, 3), (800, 20000, 3), (400, 40000, 3), (400, 20000, 7)]


def probe_mapping():
    rows = []
    for n, V, nd in PROBE_SIZES:
        out = subprocess.run([sys.executable, "-c", _PROBE, str(n), str(V), str(nd)],
                             check=True, capture_output=True, text=True).stdout.split()
        rows.append(dict(trs=n, vertices=V, distances=nd, units=n * V * (nd + 1),
                         cpu_s=float(out[0]), peak_rss_mb=float(out[1])))
        print(f"  probe {n} TRs x {V} vertices x {nd + 1} models: {float(out[0]):.1f} CPU s, "
              f"peak {float(out[1]):.0f} MB", flush=True)
    df = pd.DataFrame(rows)
    b, a = _fit(df["units"].to_numpy(float), df["cpu_s"].to_numpy(float))
    return df, dict(a=a, b=b)


def _fit(x, y):
    import numpy as np

    b, a = np.polyfit(x, y, 1)
    return float(b), float(max(a, 0.0))


# ---------------------------------------------------------------------------------------------
# 3. extrapolation
# ---------------------------------------------------------------------------------------------
def paper_plan(metadata):
    from brainpred.plan import run_plan

    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    cfg["dataset"].update(source="local", root=str(metadata))
    plan = run_plan(cfg)
    meta = json.loads((Path(metadata) / "code" / "event_meta.json").read_text())
    # estimated run length: story onset + duration + tail (TRs), per task
    length = {task: max(v["onset"] + v["duration"] for v in stories.values()) + TAIL_TRS
              for task, stories in meta.items()}
    plan["n_trs"] = plan["task"].map(length)
    return cfg, plan


def story_windows(metadata, stories):
    """Words and full-context windows (one per word past the first context) per story."""
    from brainpred.narratives import story_folder

    out = {}
    for s in stories:
        align = Path(metadata) / "stimuli" / "gentle" / story_folder(s) / "align.csv"
        n = sum(1 for _ in open(align))
        if s in ("slumlord", "reach"):
            n //= 2
        first = int(GPT2["context"] / TOKENS_PER_WORD)
        out[s] = (n, max(0, n - first))
    return out


def extrapolate(metadata, jobs, fit):
    cfg, plan = paper_plan(metadata)
    V = V_SPACE[cfg["dataset"]["space"]]
    nd = len(cfg["forecast"]["distances"])
    width = cfg["forecast"]["width"]
    runs = plan.drop_duplicates("basename")
    subj_trs = runs.groupby("subject")["n_trs"].sum()
    S, R, T = len(subj_trs), len(runs), int(runs["n_trs"].sum())
    words = story_windows(metadata, sorted(plan["story"].unique()))
    n_words = sum(w for w, _ in words.values())
    n_windows = sum(k for _, k in words.values())
    MB, GB = 2**20, 2**30
    med = jobs.groupby("rule")["cpu_time"].median() if len(jobs) else pd.Series(dtype=float)
    rss = jobs.groupby("rule")["max_rss"].max() if len(jobs) else pd.Series(dtype=float)
    print(f"\nPaper-scale run: {S} subjects, {R} runs, {len(words)} stories, {T:,} TRs "
          f"(estimated from code/event_meta.json), {V:,} vertices, {nd} distances, GPT-2 "
          f"12 x 768; {n_words:,} words, {n_windows:,} full-context windows.")
    print(f"TRs per subject: median {subj_trs.median():.0f}, max {subj_trs.max():.0f}.")
    rows = []
    # downloads and BOLD cache: one float32 TR x vertex array per run
    raw = T * V * 4
    rows.append(("download_bold", R, 0, 0, raw * 1.0 / GB, 1.0,
                 "GIfTI ~ raw float32 size (base64 of gzip)"))
    # bold_cache: measured CPU s per MB of array in the small run
    demo_v = 20484
    demo_mb = _demo_bold_mb(jobs, demo_v)
    per_mb = (med.get("bold_cache", math.nan) / demo_mb) if demo_mb else math.nan
    bc_cpu = per_mb * raw / MB if per_mb == per_mb else math.nan
    biggest = runs["n_trs"].max() * V * 4 / MB
    rows.append(("bold_cache", R, bc_cpu / 3600, 0, raw / GB, (1000 + 3 * biggest) / 1024,
                 f"{per_mb:.3f} CPU s per MB of array (measured)"))
    # story_words
    rows.append(("story_words", len(words), len(words) * med.get("story_words", 2) / 3600, 0,
                 0.01, rss.get("story_words", 300) / 1024, "measured per job"))
    # story_features: windows x 1024 tokens x 2 x params (+ attention)
    flop_window = GPT2["context"] * 2 * GPT2["params_nonemb"] \
        + GPT2["layers"] * 2 * GPT2["context"] ** 2 * GPT2["dim"] * 2
    gpu_h = n_windows * flop_window / GPU_FLOPS / 3600
    cpu_h = n_windows * CPU_S_PER_WINDOW / 3600
    feat_disk = n_words * (GPT2["layers"] + 1) * GPT2["dim"] * 4 / GB
    rows.append(("story_features", len(words), cpu_h, gpu_h, feat_disk, 4.0,
                 f"GPU: {GPU_FLOPS / 1e12:.0f} TFLOP/s assumed; CPU column: all on CPU"))
    # subject_scores
    units = subj_trs * V * (nd + 1)
    map_cpu = (fit["a"] * S + fit["b"] * units.sum()) / 3600
    worst = subj_trs.max()
    peak = (2000 + 4 * worst * V * 4 / MB
            + 2 * worst * 768 * (1 + width * nd) * 4 / MB) / 1024
    score_disk = S * 2 * (2 * nd + 1) * V * 4 / GB
    rows.append(("subject_scores", S, map_cpu, math.nan, score_disk, peak,
                 f"{fit['b'] * 1e6:.2f} us per TR x vertex x model + {fit['a']:.1f} s"))
    # group
    grp_mem = (2000 + 4 * S * (nd + 2) * V * 4 / MB) / 1024
    rows.append(("group", 1, 0.5, 0, (2 * nd + 4) * V * 4 * 3 / GB, grp_mem,
                 "not measured at scale: memory bound from the maps it holds"))
    table = pd.DataFrame(rows, columns=["stage", "jobs", "cpu_h", "gpu_h", "disk_gb",
                                        "peak_mem_gb", "basis"])
    with pd.option_context("display.width", 200, "display.max_colwidth", 70):
        print(table.round(2).to_string(index=False))
    print(f"\nsubject_scores on one GPU: not measured here (no GPU lent); CPU total "
          f"{map_cpu:.0f} core-hours, i.e. {map_cpu / 16:.0f} h on 16 cores.")
    return table


def _demo_bold_mb(jobs, V):
    """Median BOLD array size (MB) of the small run's bold_cache jobs (from the run table)."""
    if jobs.empty or "bold_cache" not in set(jobs["rule"]):
        return None
    return _DEMO_TRS * V * 4 / 2**20 if _DEMO_TRS else None


_DEMO_TRS = None


def main(argv=None):
    global _DEMO_TRS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default=str(REPO),
                   help="working directory whose benchmarks/out to read (and --run into)")
    p.add_argument("--run", action="store_true", help="run the workflow first (--forceall)")
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--probe", action="store_true", help="time the mapping engine alone")
    p.add_argument("--metadata", default=str(METADATA), help="release metadata (paper plan)")
    p.add_argument("snakemake_args", nargs="*", help="extra snakemake arguments (after --)")
    a = p.parse_args(argv)
    work = Path(a.workdir)
    if a.run:
        work.mkdir(parents=True, exist_ok=True)
        run_workflow(work, a.cores, a.snakemake_args)
    jobs = read_benchmarks(work / "benchmarks" / "out")
    if jobs.empty:
        print(f"no benchmark files under {work}/benchmarks/out: use --run")
    else:
        print(f"Per-job costs measured under {work} (benchmark: files):")
        print(summarise(jobs).to_string())
    table = work / "results" / "tables" / "desc-runs_table.tsv"
    if table.exists():
        t = pd.read_csv(table, sep="\t")
        _DEMO_TRS = float(t.loc[t["kept"], "n_trs"].median())
    fit = MAPPING_FIT
    if a.probe:
        print("\nMapping probe (1 thread):")
        _, fit = probe_mapping()
        print(f"  fit: CPU s = {fit['a']:.1f} + {fit['b'] * 1e6:.3f} us x TRs x vertices x models")
    if Path(a.metadata, "participants.tsv").exists():
        extrapolate(a.metadata, jobs, fit)
    else:
        print(f"\n{a.metadata}: no release metadata, no extrapolation.")


if __name__ == "__main__":
    main()
