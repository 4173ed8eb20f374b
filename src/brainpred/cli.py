"""The ``brainpred`` command: run the workflow, fetch the metadata, summarise a run, check data.

::

    brainpred demo [SNAKEMAKE ARGS]                  the offline demo (config/config.yaml)
    brainpred run --configfile FILE [SNAKEMAKE ARGS] the workflow on a configuration
    brainpred fetch --configfile FILE [--data]       DataLad: clone + metadata (before run)
    brainpred summary [RESULTS]                      a run's key numbers, the paper table
    brainpred check-data ROOT                        what a local Narratives copy lacks

``run`` and ``demo`` call Snakemake's command line on this checkout's ``Snakefile`` and pass
every argument they do not know to it unchanged (``-n``, ``--config``, ``--profile``,
targets, ...); without ``--cores``/``--jobs``/``--profile`` they add ``--cores all``.
``check-data`` only reads files: it runs nothing and touches no network.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import download
from .config import SCHEMA_PATH
from .errors import BrainpredError, ConfigError, DataError
from .narratives import (VERTICES_PER_HEMI, build_run_table, gifti_n_trs, load_bold,
                         read_alignment, read_participants, read_scan_exclude, story_folder,
                         story_parts)

__all__ = ["WORKFLOW_DIR", "SNAKEFILE", "Problem", "snakemake_command", "check_data",
           "format_problems", "summarize", "build_parser", "main"]

#: The checkout the package runs from (``Snakefile``, ``config/``, ``workflow/``).
WORKFLOW_DIR = SCHEMA_PATH.parents[2]
#: The workflow's Snakefile.
SNAKEFILE = WORKFLOW_DIR / "Snakefile"

_SCHEDULING = ("--cores", "-c", "--jobs", "-j", "--profile", "--executor", "-e")


def snakemake_command(args, snakefile=None, python=None):
    """The Snakemake command line ``brainpred run`` executes.

    Parameters
    ----------
    args : list of str
        Arguments for Snakemake, unchanged (``--configfile``, ``-n``, targets, ...).
    snakefile : str or Path, optional
        Default: :data:`SNAKEFILE`.
    python : str, optional
        The interpreter (default: the running one, so the same environment runs the jobs).

    Returns
    -------
    list of str
        ``python -m snakemake --snakefile SNAKEFILE [--cores all] ARGS``; ``--cores all`` is
        added when ``args`` has no ``--cores``/``-c``/``--jobs``/``-j``/``--profile``/
        ``--executor``.

    Raises
    ------
    ConfigError
        The Snakefile is missing (brainpred installed without its repository).
    """
    snakefile = Path(snakefile or SNAKEFILE)
    if not snakefile.is_file():
        raise ConfigError(f"{snakefile}: the workflow's Snakefile is missing; install brainpred "
                          "from a clone of its repository (pip install -e .), or pass "
                          "--snakefile.")
    cmd = [python or sys.executable, "-m", "snakemake", "--snakefile", str(snakefile)]
    given = any(a.split("=")[0] in _SCHEDULING
                or (re.match(r"-[cje]\d", a) is not None) for a in args)
    return cmd + ([] if given else ["--cores", "all"]) + list(args)


# --------------------------------------------------------------------------------------------
# check-data
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One thing a Narratives copy lacks or has wrong.

    Attributes
    ----------
    kind : str
        What is wrong (``"missing GIfTI"``, ``"malformed events.tsv"``, ...): problems are
        grouped by it.
    path : str
        The file, relative to the dataset root.
    fix : str
        What to do about it.
    detail : str
        The reader's message, when there is one.
    """

    kind: str
    path: str
    fix: str
    detail: str = ""


_GET = "get it from the release (`datalad get <path>` at the root of a DataLad clone, or copy it)"
_GET_BOLD = ("`brainpred fetch --data --configfile <config>` (dataset.source: datalad), or "
             "`datalad get <path>` at the root of the DataLad clone, or copy it")


def _func_name(row, suffix):
    run = f"_run-{row.run}" if row.run else ""
    return f"{row.subject}/func/{row.subject}_task-{row.task}{run}_{suffix}"


def _detect_space(root):
    for space in ("fsaverage6", "fsaverage5"):
        if next(root.glob(f"derivatives/afni-nosmooth/sub-*/func/*_space-{space}_*.func.gii"),
                None):
            return space
    return "fsaverage6"


def _relative(root, message):
    return str(message).replace(f"{root}/", "")


def _run_table(root, problems, **selection):
    """The run table, or one table per subject when a file stops the whole one (each
    subject's bad file is then a problem of its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return build_run_table(root, **selection)
        except DataError as whole:
            subjects = selection.pop("subjects")
            if subjects == "all":
                subjects = sorted(p.name for p in root.glob("sub-*") if p.is_dir())
            tables = []
            for subject in subjects:
                try:
                    tables.append(build_run_table(root, subjects=[subject], **selection))
                except DataError as exc:
                    text = _relative(root, exc)
                    path = text.split(":")[0].split(",")[0]
                    kind = ("unreadable GIfTI" if path.endswith(".gii") else
                            f"malformed {path.rsplit('_', 1)[-1]}" if "/func/" in path else
                            "malformed file")
                    problems.append(Problem(kind, path, "restore it from the release",
                                            text))
            if len(tables) == len(subjects):     # every subject alone reads: a cross-run check
                problems.append(Problem("inconsistent runs", ".", "see the message",
                                        _relative(root, whole)))
            return pd.concat(tables, ignore_index=True) if tables else None


def check_data(root, space="auto", tasks="all", subjects="all", keep_scrambled=False,
               keep_schema=False, deep=False):
    """What a local Narratives copy lacks or has malformed, for the runs an analysis keeps.

    Reads the metadata (``participants.tsv``, ``code/scan_exclude.json``, every run's
    ``events.tsv`` and ``bold.json``), builds the run table with the paper's selection
    (:func:`brainpred.narratives.build_run_table`), then checks the kept runs' two GIfTIs
    (present, a GIfTI header, the same TR count in both hemispheres; with ``deep``, every TR
    decoded with the analysis space's vertex count) and the kept stories' Gentle alignments.
    Runs nothing and touches no network.

    Parameters
    ----------
    root : str or Path
        Dataset root (the DataLad layout: ``participants.tsv``, ``sub-*/func``, ``code``,
        ``stimuli/gentle``, ``derivatives/afni-nosmooth``).
    space : {"auto", "fsaverage5", "fsaverage6"}
        Surface space of the GIfTIs; ``"auto"``: the one the derivatives hold (fsaverage6
        when none).
    tasks, subjects : "all" or list of str
        Selection, as ``dataset.tasks`` / ``dataset.subjects``.
    keep_scrambled, keep_schema : bool
        As ``dataset.keep_scrambled`` / ``dataset.keep_schema``.
    deep : bool
        Also decode every kept GIfTI (slow on the real data: about 1 GB per run).

    Returns
    -------
    table : DataFrame or None
        The run table (:data:`brainpred.narratives.RUN_TABLE_COLUMNS`); None when no run
        could be read.
    problems : list of Problem
        Empty when the copy has everything the selection needs.

    Raises
    ------
    DataError
        ``root`` is not a folder.
    ConfigError
        An unknown task or subject in the selection.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder. Give the root of a Narratives copy (it holds "
                        "participants.tsv and sub-*/func).")
    space = _detect_space(root) if space == "auto" else space
    problems = []
    if not (root / "participants.tsv").exists():
        problems.append(Problem("missing participants.tsv", "participants.tsv",
                                _GET))
    else:
        try:
            read_participants(root)
        except DataError as exc:
            problems.append(Problem("malformed participants.tsv", "participants.tsv",
                                    "restore it from the release", _relative(root, exc)))
    exclude = "code/scan_exclude.json"
    if not (root / exclude).exists():
        problems.append(Problem("missing scan_exclude.json", exclude,
                                _GET + "; without it no run is excluded"))
    else:
        try:
            read_scan_exclude(root)
        except DataError as exc:
            problems.append(Problem("malformed scan_exclude.json", exclude,
                                    "restore it from the release", _relative(root, exc)))
    if not any(root.glob("sub-*/func")):
        problems.append(Problem("no runs", "sub-*/func", "the copy has no sub-*/func folder "
                                "with events.tsv and bold.json; check the root"))
        return None, problems
    table = _run_table(root, problems, tasks=tasks, subjects=subjects, space=space,
                       keep_scrambled=keep_scrambled, keep_schema=keep_schema)
    if table is None:
        return None, problems
    for row in table.itertuples():
        if row.reason == "no_events":
            path = _func_name(row, "events.tsv")
            problems.append(Problem("missing events.tsv", path, _GET))
        elif row.reason == "no_sidecar":
            path = _func_name(row, "bold.json")
            problems.append(Problem("missing bold.json sidecar", path, _GET))
    for row in table[table.kept].itertuples():
        counts = {}
        for rel in (row.bold_L, row.bold_R):
            path = root / rel
            if not path.exists():
                what = "not fetched (a DataLad link without content)" if path.is_symlink() \
                    else "absent"
                problems.append(Problem("missing GIfTI", rel, _GET_BOLD, what))
                continue
            try:
                counts[rel] = gifti_n_trs(path)
            except DataError as exc:
                problems.append(Problem("unreadable GIfTI", rel, "download it again",
                                        _relative(root, exc)))
        if len(counts) == 2 and len(set(counts.values())) > 1:
            problems.append(Problem("unreadable GIfTI", row.bold_L, "download both again",
                                    f"{counts[row.bold_L]} TRs left, {counts[row.bold_R]} "
                                    "right"))
        elif deep and len(counts) == 2:
            try:
                load_bold(root / row.bold_L, root / row.bold_R, space=space, tr=row.tr)
            except DataError as exc:
                problems.append(Problem("unreadable GIfTI", row.bold_L, "download it again",
                                        _relative(root, exc)))
    stories = sorted({part for story in table[table.kept].story
                      for part in story_parts(story)})
    for folder in sorted({story_folder(s) for s in stories}):
        rel = f"stimuli/gentle/{folder}/align.csv"
        if not (root / rel).exists():
            problems.append(Problem("missing alignment", rel, _GET))
            continue
        try:
            read_alignment(root / rel, folder)
        except DataError as exc:
            problems.append(Problem("malformed alignment", rel, "restore it from the release",
                                    _relative(root, exc)))
    return table, problems


def format_problems(problems, limit=5):
    """The problems as text, grouped by kind, ``limit`` paths per kind (None: all)."""
    lines = []
    kinds = {}
    for p in problems:
        kinds.setdefault(p.kind, []).append(p)
    for kind, group in kinds.items():
        lines.append(f"{kind} ({len(group)}):")
        shown = group if limit is None else group[:limit]
        for p in shown:
            lines.append(f"  {p.path}" + (f"  [{p.detail}]" if p.detail else ""))
        if len(shown) < len(group):
            lines.append(f"  ... and {len(group) - len(shown)} more (--all lists them)")
        fixes = sorted({p.fix for p in group})
        lines.append(f"  fix: {fixes[0]}" if len(fixes) == 1 else
                     "  fix: " + "; ".join(fixes))
    return "\n".join(lines)


def _check_data(args):
    table, problems = check_data(args.root, space=args.space, tasks=args.tasks or "all",
                                 subjects=args.subjects or "all",
                                 keep_scrambled=args.keep_scrambled,
                                 keep_schema=args.keep_schema, deep=args.deep)
    print(f"Narratives copy: {Path(args.root).resolve()}")
    if table is not None:
        kept = table[table.kept]
        reasons = table.loc[~table.kept, "reason"].value_counts()
        print(f"  runs: {len(kept)} kept of {len(table)}, {kept.subject.nunique()} subjects, "
              f"{kept.story.nunique()} stories"
              + (" (excluded: " + ", ".join(f"{r} {n}" for r, n in reasons.items()) + ")"
                 if len(reasons) else ""))
    if not problems:
        print("  everything the selection needs is present and readable")
        return 0
    print(f"  {len(problems)} problem(s):")
    print(format_problems(problems, None if args.all else 5))
    return 1


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------

def _label(path, results):
    m = re.search(r"model-([^/_]+)_layer-(\d+)", str(path.relative_to(results)))
    return f"model {m[1]}, layer {m[2]}" if m else str(path.relative_to(results))


def _group_summary(path, results):
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    lines = [f"{_label(path, results)}  ({path.relative_to(results)})"]
    if "subjects" in data:
        lines.append(f"  subjects: {len(data['subjects'])}")
    if "brain_score" in data:
        r = data["brain_score"]
        n = int(np.isfinite(r).sum())
        peak = np.nanmax(r) if n else float("nan")
        sig = f", {int(data['brain_reject'].sum())} FDR-significant" \
            if "brain_reject" in data else ""
        lines.append(f"  brain score R(X): group-mean r up to {peak:.3f} over {n} vertices{sig}")
    if "forecast_score" in data and "distances" in data:
        f = data["forecast_score"]
        means = [np.nanmean(row) if np.isfinite(row).any() else np.nan for row in f]
        best = int(np.nanargmax(means)) if np.isfinite(means).any() else None
        if best is not None:
            lines.append(f"  forecast score F(d): largest mean at d = "
                         f"{int(data['distances'][best])} ({means[best]:.4f}); distances "
                         f"{int(data['distances'].min())}..{int(data['distances'].max())} "
                         f"({len(data['distances'])})")
    if "dstar" in data:
        d = data["dstar"]
        mask = data["dstar_mask"] if "dstar_mask" in data else np.isfinite(d)
        vals = d[mask & np.isfinite(d)]
        if vals.size:
            lines.append(f"  d*: median {np.median(vals):g} words over {vals.size} vertices")
    if "gain_mean" in data:
        ci = data.get("gain_ci", np.array([np.nan, np.nan]))
        at = f" at d* = {float(data['gain_dstar']):g}" if "gain_dstar" in data else ""
        lines.append(f"  forecast gain F(d*)/R(X){at}: {float(data['gain_mean']):.1f}% "
                     f"(95% CI {float(ci[0]):.1f} to {float(ci[1]):.1f})")
    return lines


def _number(value):
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return str(value)


def _comparison_lines(path, results):
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    lines = [f"paper comparison ({path.relative_to(results)}):"]
    width = max([len(q) for q in table.get("quantity", [])] + [8])
    for row in table.to_dict("records"):
        value = _number(row.get("value", ""))
        if row.get("ci_low", "n/a") not in ("", "n/a"):
            value += f" [{_number(row['ci_low'])}, {_number(row.get('ci_high', ''))}]"
        status = row.get("status", "")
        note = "" if status == "computed" else f"  ({status})"
        lines.append(f"  {row.get('quantity', ''):<{width}}  paper: {row.get('paper', '')}"
                     f"  |  this run: {value}{note}")
    return lines


def summarize(results):
    """A run's key numbers as text: its run table, each group map, the paper comparison.

    Tolerant of the layout: it globs ``results`` for the run table
    (``*desc-runs_table.tsv``), the main analysis' group maps (``*desc-scores.npz`` whose
    name or folder says ``group``) and the paper table (``*desc-paper_comparison.tsv``), and
    prints what it finds.

    Parameters
    ----------
    results : str or Path
        The run's results folder (``results/``).

    Returns
    -------
    str

    Raises
    ------
    DataError
        ``results`` is not a folder, or holds none of these files.
    """
    results = Path(results)
    if not results.is_dir():
        raise DataError(f"{results}: no such folder. Give a run's results folder "
                        "(brainpred summary results).")
    lines = [f"brainpred run: {results.resolve()}"]
    found = False
    for path in sorted(results.rglob("*desc-runs_table.tsv")):
        runs = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        kept = runs[runs["kept"].str.lower() == "true"] if "kept" in runs else runs
        lines.append(f"runs: {len(kept)} kept of {len(runs)}, {kept['subject'].nunique()} "
                     f"subjects, {kept['story'].nunique()} stories "
                     f"({path.relative_to(results)})")
        found = True
    groups = [p for p in sorted(results.rglob("*desc-scores.npz"))
              if "group" in p.name or "group" in p.relative_to(results).parts[:-1]]
    for path in groups:
        lines.extend(_group_summary(path, results))
        found = True
    for path in sorted(results.rglob("*desc-paper_comparison.tsv")):
        lines.extend(_comparison_lines(path, results))
        found = True
    if not found:
        raise DataError(f"{results}: no run table, group map or paper comparison table "
                        "found; has the run finished (brainpred run ...)?")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------

def build_parser():
    """The ``brainpred`` argument parser (one sub-command per task)."""
    parser = argparse.ArgumentParser(
        prog="brainpred", description="Brain scores and forecast scores of language models on "
        "the Narratives fMRI dataset (Caucheteux, Gramfort & King 2023).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    passthrough = ("Every other argument goes to snakemake unchanged (-n, --config K=V, "
                   "--profile DIR, --directory DIR, targets; `snakemake --help` lists them); "
                   "--cores all is added without --cores/--jobs/--profile.")
    demo = sub.add_parser("demo", allow_abbrev=False, help="run the offline demo",
                          description="Run the offline demo (config/config.yaml: a synthetic "
                          "Narratives, tiny-gpt2; about 4 min on 2 cores) in the current "
                          "directory (results/, resources/). " + passthrough)
    demo.add_argument("--snakefile", help=argparse.SUPPRESS)
    run = sub.add_parser("run", allow_abbrev=False, help="run the workflow",
                         description="Run the workflow: `brainpred run --configfile "
                         "config/paper.yaml`. Without --configfile it is the demo. "
                         + passthrough)
    run.add_argument("--snakefile", help=f"the workflow (default: {SNAKEFILE})")
    fetch = sub.add_parser("fetch", help="DataLad: clone the release and get its metadata",
                           description="Clone the Narratives release into dataset.root (or "
                           "reuse the clone) and get the metadata the run plan needs; run it "
                           "before `brainpred run` (the run's download rules then get the "
                           "GIfTIs and alignments). Needs git-annex and the datalad extra "
                           "(pip install \"brainpred[datalad]\").")
    fetch.add_argument("--configfile", nargs="+", required=True, metavar="FILE",
                       help="workflow config file(s), merged in order (like snakemake)")
    fetch.add_argument("--data", action="store_true",
                       help="also get every GIfTI, alignment and FreeSurfer file now")
    fetch.add_argument("--root", help="override dataset.root")
    fetch.add_argument("--jobs", "-J", type=int, help="parallel transfers")
    summary = sub.add_parser("summary", help="print a run's key numbers",
                             description="Print a finished run's key numbers (runs, peak "
                             "brain score, forecast scores, d*, forecast gain) and the paper "
                             "comparison table when the run wrote it.")
    summary.add_argument("results", nargs="?", default="results",
                         help="the run's results folder (default: results)")
    check = sub.add_parser("check-data", help="check a local Narratives copy",
                           description="List what a local Narratives copy (the DataLad "
                           "layout) lacks or has malformed for an analysis: participants.tsv, "
                           "scan_exclude.json, events.tsv and bold.json sidecars, GIfTIs, "
                           "alignments; each with its path and the fix. Runs nothing. Exit "
                           "status 1 when something is missing.")
    check.add_argument("root", help="dataset root (holds participants.tsv, sub-*/func)")
    check.add_argument("--space", default="auto",
                       choices=["auto", *sorted(VERTICES_PER_HEMI)],
                       help="surface space of the GIfTIs (auto: what derivatives/ holds)")
    check.add_argument("--tasks", nargs="+", help="only these tasks (dataset.tasks)")
    check.add_argument("--subjects", nargs="+", help="only these subjects (dataset.subjects)")
    check.add_argument("--keep-scrambled", action="store_true",
                       help="keep the scrambled notthefall runs (dataset.keep_scrambled)")
    check.add_argument("--keep-schema", action="store_true",
                       help="keep the schema runs (dataset.keep_schema)")
    check.add_argument("--deep", action="store_true",
                       help="also decode every kept GIfTI (slow on real data)")
    check.add_argument("--all", action="store_true", help="list every problem path")
    return parser


def main(argv=None):
    """Entry point of the ``brainpred`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("run", "demo"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command in ("run", "demo"):
            if args.command == "demo" and any(a.split("=")[0] == "--configfile"
                                              for a in extra):
                parser.error("demo runs config/config.yaml; use `brainpred run --configfile "
                             "FILE` for another configuration")
            return subprocess.call(snakemake_command(extra, args.snakefile))
        if args.command == "fetch":
            argv = ["data" if args.data else "metadata", "--configfile", *args.configfile]
            argv += ["--root", args.root] if args.root else []
            argv += ["--jobs", str(args.jobs)] if args.jobs else []
            return download.main(argv)
        if args.command == "summary":
            print(summarize(args.results))
            return 0
        return _check_data(args)
    except BrainpredError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
