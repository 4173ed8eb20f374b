"""Helpers the Snakefile uses to lay out the DAG: the run plan, output names and logging.

The DAG is computed up front (so ``snakemake -n`` lists every job): for a real Narratives copy
the run plan is read from the dataset's metadata with :func:`brainpred.narratives.build_run_table`;
for the synthetic dataset, which does not exist before its rule runs, it comes from
:func:`brainpred.synthetic.plan`, the very function the generator lays its files out with. The
jobs themselves read the run table the ``run_table`` rule writes from the files on disk.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pandas as pd

from .config import check_plan_sizes, coerce_config  # noqa: F401 (coerce_config: re-export)
from .errors import ConfigError
from .narratives import build_run_table, check_runs_cover_their_stories, split_story_rows

log = logging.getLogger("brainpred")


def run_basename(subject, task, run=""):
    """BIDS basename of a run: ``sub-001_task-pieman_run-2`` (no run entity when empty)."""
    run = "" if run is None or (isinstance(run, float) and run != run) else str(run)
    return f"{subject}_task-{task}" + (f"_run-{run}" if run else "")


def model_tag(name):
    """File-name-safe tag of a model name or path.

    ``tiny-gpt2`` -> ``tiny-gpt2``; ``openai-community/gpt2`` -> ``openai-community-gpt2``; a
    local folder ``/models/my_gpt/`` -> ``my-gpt``.
    """
    text = str(name).rstrip("/")
    if Path(text).is_dir():
        text = Path(text).name
    tag = re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.")
    if not tag:
        raise ConfigError(f"model.name = {name!r}: cannot make a file name from it.")
    return tag


def _selected(values, selection, key):
    if selection in (None, "all"):
        return values
    missing = sorted(set(selection) - set(values))
    if missing:
        raise ConfigError(f"{key} lists {missing}, which the dataset does not have. "
                          f"Available: {sorted(set(values))[:20]}{' ...' if len(set(values)) > 20 else ''}.")
    return [v for v in values if v in set(selection)]


def run_plan(config) -> pd.DataFrame:
    """Kept runs of the configured analysis, one row per (run, story).

    Parameters
    ----------
    config : dict
        The validated workflow configuration.

    Returns
    -------
    plan : DataFrame
        Columns ``subject``, ``task``, ``story``, ``run``, ``basename``, sorted by subject.
    """
    ds = config["dataset"]
    if ds["source"] == "synthetic":
        from .synthetic import plan

        runs = plan(config)
        runs = runs[~runs["excluded"]].copy()
    elif ds["source"] in ("local", "datalad"):
        root = Path(ds["root"])
        # datalad: the plan comes from the metadata that `python -m brainpred.download
        # metadata` fetched (no network access while Snakemake parses; see config/README.md)
        if ds["source"] == "datalad" and not (root / "participants.tsv").exists():
            raise ConfigError(
                f"dataset.source = datalad: no metadata under dataset.root = {root} yet. "
                "Fetch it first (clone + small text files, no fMRI): `python -m "
                "brainpred.download metadata --configfile <your config file(s)>`, then run "
                "snakemake again.")
        if not (root / "participants.tsv").exists():
            raise ConfigError(f"dataset.root = {root}: no participants.tsv there. Point "
                              "dataset.root at a Narratives copy (the DataLad layout).")
        runs = build_run_table(root, tasks=ds.get("tasks", "all"),
                               subjects=ds.get("subjects", "all"), space=ds["space"],
                               keep_scrambled=ds.get("keep_scrambled", False),
                               keep_schema=ds.get("keep_schema", False))
        runs = split_story_rows(runs[runs["kept"]])
    else:
        raise ConfigError(f"dataset.source = {ds['source']!r}: use synthetic, local or "
                          "datalad.")
    runs["run"] = runs["run"].fillna("").astype(str)
    runs["subject"] = _pick(runs, "subject", ds.get("subjects", "all"), "dataset.subjects")
    runs = runs[runs["subject"].notna()]
    runs = runs[runs["task"].isin(_selected(sorted(runs["task"].unique()),
                                            ds.get("tasks", "all"), "dataset.tasks"))]
    if runs.empty:
        raise ConfigError("dataset.subjects / dataset.tasks select no run. Check both lists.")
    runs["basename"] = [run_basename(s, t, r) for s, t, r in
                        zip(runs["subject"], runs["task"], runs["run"])]
    if ds["source"] != "synthetic":
        # each run's length (n_trs x TR, as its GIfTI header says) against its story's words,
        # when the workflow starts (again in the run table, after the per-task crop)
        check_runs_cover_their_stories(Path(ds["root"]), runs)
    if "n_trs" in runs and "mapping" in config:
        check_plan_sizes(runs, config)     # folds and PCA sizes against the shortest subject
    return runs.sort_values(["subject", "basename", "story"]).reset_index(drop=True)[
        ["subject", "task", "story", "run", "basename"]]


def _pick(runs, col, selection, key):
    keep = _selected(sorted(runs[col].unique()), selection, key)
    return runs[col].where(runs[col].isin(keep))


def setup_logging(log_path=None, level=logging.INFO):
    """Log brainpred messages to the rule's log file and to stderr."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.captureWarnings(True)
    sys.excepthook = _log_exception
    return log


def _log_exception(exc_type, exc, tb):
    """A rule script's uncaught exception, where the user looks: the brainpred message first,
    in the rule's log and on the console; the traceback only for unexpected errors (and in the
    log file for every error)."""
    import traceback

    from .errors import BrainpredError

    text = "".join(traceback.format_exception(exc_type, exc, tb))
    if issubclass(exc_type, BrainpredError):
        log.error("%s", exc)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.stream.write(f"\n(traceback, for a bug report)\n{text}\n")
                handler.flush()
    else:
        log.error("unexpected error (a bug: please report it with this log): %s: %s\n%s",
                  exc_type.__name__, exc, text)


def limit_threads(n):
    """Cap BLAS and torch threads at the rule's ``threads``."""
    import os

    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass
