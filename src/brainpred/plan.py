"""The run plan: which runs, stories and subject fits a configuration analyses.

The DAG is computed up front (so ``snakemake -n`` lists every job): for a real Narratives copy
the run plan is read from the dataset's metadata with :func:`brainpred.narratives.build_run_table`;
for the synthetic dataset, which does not exist before its rule runs, it comes from
:func:`brainpred.synthetic.plan`, the very function the generator lays its files out with. The
jobs themselves read the run table the ``run_table`` rule writes from the files on disk.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd

from . import synthetic
from .config import check_plan_sizes
from .errors import ConfigError
from .narratives import (build_run_table, check_audio_files, check_runs_cover_their_stories,
                         split_story_rows)

__all__ = ["run_basename", "model_tag", "run_plan", "fit_groups", "fit_label"]


def run_basename(subject, task, run=""):
    """BIDS basename of a run: ``sub-001_task-pieman_run-2`` (no run entity when empty)."""
    run = "" if run is None or (isinstance(run, float) and run != run) else str(run)
    return f"{subject}_task-{task}" + (f"_run-{run}" if run else "")


def model_tag(name):
    """File-name-safe tag of a model name or path: a BIDS label (letters and digits only), the
    ``model-<label>`` entity of the result files.

    ``tiny-gpt2`` -> ``tinygpt2``; ``openai-community/gpt2`` -> ``openaicommunitygpt2``; a
    local folder ``/models/my_gpt/`` -> ``mygpt``.
    """
    text = str(name).rstrip("/")
    if Path(text).is_dir():
        text = Path(text).name
    tag = re.sub(r"[^A-Za-z0-9]+", "", text)
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
        runs = synthetic.plan(config)
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
        runs = build_run_table(root, tasks=ds["tasks"], subjects=ds["subjects"],
                               space=ds["space"], keep_scrambled=ds["keep_scrambled"],
                               keep_schema=ds["keep_schema"])
        runs = split_story_rows(runs[runs["kept"]])
    else:
        raise ConfigError(f"dataset.source = {ds['source']!r}: use synthetic, local or "
                          "datalad.")
    runs["run"] = runs["run"].fillna("").astype(str)
    runs["subject"] = _pick(runs, "subject", ds["subjects"], "dataset.subjects")
    runs = runs[runs["subject"].notna()]
    runs = runs[runs["task"].isin(_selected(sorted(runs["task"].unique()),
                                            ds["tasks"], "dataset.tasks"))]
    if runs.empty:
        raise ConfigError("dataset.subjects / dataset.tasks select no run. Check both lists.")
    runs["basename"] = [run_basename(s, t, r) for s, t, r in
                        zip(runs["subject"], runs["task"], runs["run"])]
    if ds["source"] != "synthetic":
        # each run's length (n_trs x TR, as its GIfTI header says) against its story's words,
        # when the workflow starts (again in the run table, after the per-task crop)
        check_runs_cover_their_stories(Path(ds["root"]), runs)
        if "audio_envelope" in (config.get("nuisance") or []):   # the stories' WAVs
            check_audio_files(Path(ds["root"]), runs["story"].unique())
    if "n_trs" in runs and "mapping" in config:
        check_plan_sizes(runs, config)     # folds and PCA sizes against the shortest subject
    return runs.sort_values(["subject", "basename", "story"]).reset_index(drop=True)[
        ["subject", "task", "story", "run", "basename"]]


def _pick(runs, col, selection, key):
    keep = _selected(sorted(runs[col].unique()), selection, key)
    return runs[col].where(runs[col].isin(keep))


def fit_groups(plan, max_subjects):
    """Subjects who heard the same stimulus sequence, in fits of at most ``max_subjects``.

    Parameters
    ----------
    plan : DataFrame
        The run plan (``subject``, ``task``, ``story``, ``basename``), in analysis order.
    max_subjects : int
        Largest number of subjects fitted in one call (``mapping.shared_subjects``; 1 = one
        subject per fit).

    Returns
    -------
    dict
        ``fit label -> [subject, ...]``, subjects sorted, fits ordered by their first subject.
        Subjects share a fit only when their ordered (task, story) sequences are equal (the fit
        job checks that their designs are identical) and their subject numbers fall in the
        same range of ``max_subjects`` numbers (1-8, 9-16, ... for 8). The label
        (:func:`fit_label`) names that sequence and range, so it does not depend on the other
        subjects selected: adding or removing a subject changes only its own fit.
    """
    width = max(1, int(max_subjects))
    chunks = {}
    for subject, g in plan.groupby("subject", sort=True):
        sequence = tuple(zip(g["task"], g["story"]))
        lo = (_subject_number(subject) - 1) // width * width + 1
        chunks.setdefault(fit_label(sequence, lo, lo + width - 1), []).append(subject)
    return dict(sorted(chunks.items(), key=lambda kv: kv[1][0]))


def fit_label(sequence, first, last):
    """The fit of the subjects numbered ``first``..``last`` who heard ``sequence``.

    ``fit-s001to008seq<6 hex digits of the sequence's sha1>``: a BIDS label (letters and
    digits) that depends only on the stimulus sequence and the subject-number range.

    Parameters
    ----------
    sequence : sequence of (task, story)
    first, last : int
        Subject numbers of the range.
    """
    text = "|".join(f"{task}:{story}" for task, story in sequence)
    digest = hashlib.sha1(text.encode()).hexdigest()[:6]
    return f"fit-s{first:03d}to{last:03d}seq{digest}"


def _subject_number(subject):
    match = re.fullmatch(r"sub-0*([0-9]+)", str(subject))
    if not match:
        raise ConfigError(f"subject {subject!r}: brainpred expects numbered subjects "
                          "(sub-<digits>, as Narratives).")
    return int(match.group(1))
