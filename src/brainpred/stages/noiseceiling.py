"""Stage entry points of ``workflow/rules/noiseceiling.smk``: the listeners' BOLD sums of a
task and each subject's noise ceiling (:mod:`brainpred.noise_ceiling`)."""

from __future__ import annotations

import logging

from pathlib import Path

import numpy as np
import pandas as pd

from .. import io
from .. import noise_ceiling as nc
from ..errors import DataError
from .common import load_run_bold, ridge_alphas

__all__ = ["make_listener_sums", "make_noise_ceiling"]

log = logging.getLogger(__name__)


def make_listener_sums(task, run_table_tsv, bold_paths, config, out_npz, out_tsv=None):
    """Rule ``listener_sums``: the sum of every listener's BOLD of one task, per audio file.

    The listeners of one audio are pooled whatever their condition (the prettymouth, merlin,
    sherlock, notthefallintact and shapes conditions play the same audio; the milkyway versions
    are different audio files): :func:`brainpred.noise_ceiling.listener_sums`. Each run is read
    once; the per-subject noise ceilings then subtract their own run from the sum instead of
    re-reading every other listener (a cost quadratic in the listeners of an audio).

    Parameters
    ----------
    task : str
    run_table_tsv : path
    bold_paths : dict
        ``basename -> BOLD .npy`` of every kept run of the task.
    config : dict
        ``mapping.zscore_runs``.
    out_npz : path
    out_tsv : path, optional
        :func:`brainpred.noise_ceiling.listener_table` of the task: one row per (task, audio,
        condition) with ``n_condition``, ``n_listeners`` (pooled over the audio's conditions),
        ``n_trs``, ``audio_onset``, ``tr``.
    """
    table = io.read_tsv(run_table_tsv, dtype={"run": str})
    runs = nc.runs_frame(table)
    runs = runs[runs["task"] == task]
    if runs.empty:
        raise DataError(f"{run_table_tsv}: no kept run of task {task}.")
    listeners = nc.listener_table(runs)      # checks the TR grid before any BOLD is read
    zscore = config["mapping"]["zscore_runs"]
    sums = nc.listener_sums(runs, lambda b, n: load_run_bold(bold_paths[b], n, zscore,
                                                             basename=b))
    for key, (_, _, members) in sums.items():
        conds = sorted(set(members["condition"]) - {""})
        log.info("%s (task %s): summed %d listeners%s", key[1], key[0], len(members),
                 f" of conditions {', '.join(conds)}" if conds else "")
    nc.save_listener_sums(out_npz, sums)
    if out_tsv is not None:
        io.write_tsv(out_tsv, listeners)


def make_noise_ceiling(subject, run_table_tsv, bold_paths, config, outputs, sums_paths=None):
    """Rule ``noise_ceiling``: how well the mean BOLD of the other listeners of the same audio
    predicts this subject.

    Parameters
    ----------
    subject : str
    run_table_tsv : path or list of path
        The run table, or the tables of the subject's tasks (rule task_run_table): their rows
        are concatenated.
    bold_paths : dict
        ``basename -> BOLD .npy``: the subject's runs (with ``sums_paths``), or its runs and
        every other kept run of the same audio files (without).
    config : dict
        ``mapping`` (delays, alphas, folds, z-scoring) and ``noise_ceiling`` (``batch``).
    outputs : dict
        ``npz`` (``subject``, ``noise_ceiling`` (V,) and, per run used, ``basenames``,
        ``audio``, ``n_listeners`` (listeners of the run's audio, all its conditions, the
        subject included) and ``n_others`` (= ``n_listeners - 1``, averaged)), ``ceiling_L``,
        ``ceiling_R`` (GIfTI).
    sums_paths : list of path, optional
        :func:`make_listener_sums` files of the subject's tasks: the others' mean is the sum
        minus the subject's run.

    Notes
    -----
    See :mod:`brainpred.noise_ceiling`: per vertex, the others' mean at that vertex (with the
    encoding model's FIR delays) predicts the subject's BOLD by ridge, alpha by inner CV, on the
    same contiguous outer folds; the score is the mean test Pearson r. The others are every other
    listener of the run's audio file, whatever their condition. Runs whose audio nobody else
    heard are left out; a subject sharing no audio with anyone gets an all-NaN ceiling.
    """
    paths = [run_table_tsv] if isinstance(run_table_tsv, (str, Path)) else list(run_table_tsv)
    table = pd.concat([io.read_tsv(p, dtype={"run": str}) for p in paths], ignore_index=True)
    runs = nc.runs_frame(table)
    mine = runs[runs["subject"] == subject]
    if mine.empty:
        raise DataError(f"{', '.join(map(str, paths))}: no kept run for {subject}.")
    runs = runs[runs["task"].isin(set(mine["task"]))]
    mc = config["mapping"]
    zscore = mc["zscore_runs"]

    def load(basename, n):
        return load_run_bold(bold_paths[basename], n, zscore, basename=basename)

    sums = nc.load_listener_sums(sums_paths) if sums_paths else None
    Y, P, lengths, n_others, used = nc.other_subjects_mean(subject, runs, load, sums=sums,
                                                            return_runs=True)
    if Y is None:
        first = mine.iloc[0]
        n_vertices = load(first["basename"], int(first["n_trs"])).shape[1]
        r = np.full(n_vertices, np.nan, dtype=np.float32)
        log.warning("%s: no other subject heard the same audio; noise ceiling is NaN", subject)
    else:
        groups = np.repeat(np.arange(len(lengths)), lengths)
        r = nc.ceiling_scores(
            P, Y, lengths, delays=list(mc["delays"]), alphas=ridge_alphas(mc),
            n_folds=int(mc["n_folds"]), groups=groups if mc["group_folds_by_story"] else None,
            n_inner_folds=int(mc["n_inner_folds"]), batch=int(config["noise_ceiling"]["batch"]),
            gap_trs=int(mc["gap_trs"]))
        log.info("%s: noise ceiling from %s other listeners of %s, %d TRs; peak r %.3f",
                 subject, n_others, list(used["audio"]), Y.shape[0],
                 float(np.nanmax(r)) if np.isfinite(r).any() else np.nan)
    io.save_npz(outputs["npz"], subject=np.array(subject), noise_ceiling=r,
                n_others=np.array(n_others, dtype=np.int64),
                n_listeners=used["n_listeners"].to_numpy(dtype=np.int64),
                audio=used["audio"].to_numpy(dtype=str),
                basenames=used["basename"].to_numpy(dtype=str))
    io.write_surface_maps(outputs["ceiling_L"], outputs["ceiling_R"], r[None], ["noise ceiling"])
