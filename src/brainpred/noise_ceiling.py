"""Noise ceiling: how well the other subjects who heard the same audio predict a subject.

Method (Caucheteux, Gramfort & King 2023, method.md §1.7): per subject, the mean BOLD of the
*other* subjects who heard the same audio predicts this subject's BOLD with the same
cross-validated ridge, folds and Pearson r as the brain score. The brain score read as a
percentage of this ceiling says how much of the predictable (stimulus-driven, shared across
subjects) signal the model captures.

Listeners are pooled by the **audio file** they heard (:func:`audio_of`), not by the
participants.tsv condition: ``prettymouth`` (affair / paranoia), ``merlin`` and ``sherlock``
(movie / naive), ``notthefallintact`` (intact / intact-longscram / intact-shortscram) and the
``shapes*`` tasks (six orders) play one audio file under several instructions or contexts, so
all their listeners are pooled; the ``milkyway`` versions (``milkywayoriginal``,
``milkywaysynonyms``, ``milkywayvodka``) are different audio files and stay apart. Listeners of
one audio are averaged TR by TR, so they must share one TR grid: the same ``n_trs`` (the run table
crops a task to a common length), the same audio onset and the same TR. This is checked (and
holds on the Narratives release: within a task every kept run of an audio has the same events
and TR, whatever its condition); listeners on different grids are refused, not realigned. An
audio heard in several tasks (not the case in Narratives) is refused too (the per-task crop can
differ between tasks).

Choice made here (documented, see :func:`ceiling_scores`): the predictor of vertex ``v`` is the
others' mean **at vertex v only**, with the same FIR delays as the encoding model (a univariate
predictor with ``len(delays)`` columns). Using the whole others' mean map as a multivariate
predictor (``mapping.encoding_scores([other_mean], Y, ...)``) would, after the 20-component PCA,
mostly measure how well the shared low-dimensional signal predicts each vertex, and it can
borrow signal from neighbouring vertices; the per-vertex design is the usual inter-subject
correlation ceiling, made comparable to the brain score (same delays, ridge, folds and r).

The ridge is the mapping's (:func:`brainpred.mapping.per_target_scores`, solver
:func:`brainpred.mapping.ridge_cv_per_target`), vectorised over vertices: every (vertex, fold)
needs only the ``k x k`` Gram matrix of its delayed predictor (``k = len(delays)``). As in
:func:`brainpred.mapping.encoding_scores`: the delayed design is standardised on the training
rows of each outer fold, alpha is chosen per vertex among the configured alphas
(``mapping.DEFAULT_ALPHAS`` by default) by contiguous inner folds of the training rows (squared
error on the held-out inner blocks, the inner training block centred on its own means; the
blocks weighted by their sizes, see :func:`brainpred.mapping.ridge_cv_per_target`), and the
score is the mean over outer folds of the test-fold Pearson r.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .errors import DataError
from .io import load_npz, save_npz
from .mapping import DEFAULT_ALPHAS, per_target_scores
from .narratives import stim_story, story_folder

__all__ = ["audio_of", "listener_sums", "listener_table", "other_subjects_mean",
           "ceiling_scores", "percent_of_ceiling", "runs_frame", "save_listener_sums",
           "load_listener_sums"]


def _text(value):
    """``""`` for None / NaN, else the value as a stripped string."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def audio_of(row):
    """The audio file a run's subject heard: the key on which the ceiling pools listeners.

    Parameters
    ----------
    row : mapping or namedtuple
        A run table row: ``task`` and, when present, ``audio``, ``story`` and ``stim_file``.

    Returns
    -------
    str
        ``audio`` when the row has it; else the audio file holding the run's ``story``
        (:func:`brainpred.narratives.story_folder`: the ``slumlord`` / ``reach`` rows of one
        ``slumlordreach`` run give ``slumlordreach``); the story is the stem of the events'
        ``stim_file`` (``milkywayvodka_audio.wav`` -> ``milkywayvodka``, see
        :func:`brainpred.narratives.build_run_table`), so the conditions of one audio share it
        and the milkyway versions do not. Without a story, the ``stim_file`` stem; without
        either (an empty ``stim_file``), the task.
    """
    get = row.get if isinstance(row, dict) else (lambda k, d=None: getattr(row, k, d))
    audio = _text(get("audio"))
    if audio:
        return audio
    story = _text(get("story"))
    if story:
        return story_folder(story)
    stems = stim_story([_text(get("stim_file"))] if _text(get("stim_file")) else [])
    return stems[0] if stems else _text(get("task"))


def _keys(runs):
    """``(task, audio)`` of every row."""
    return [(str(r["task"]), audio_of(r)) for r in runs.to_dict("records")]


def _listeners(runs, key):
    """The runs summed for an audio: one per subject (its last), as the ceiling averages them."""
    g = runs[[k == key for k in runs["listen_key"]]]
    return g.drop_duplicates("subject", keep="last").drop_duplicates("basename")


def _where(key):
    return f"audio {key[1]} (task {key[0]})"


def _check_grid(members, key):
    """The listeners of one audio must share one TR grid: n_trs, audio onset and TR."""
    conds = sorted(set(members["condition"])) if "condition" in members else []
    lengths = set(int(n) for n in members["n_trs"])
    if len(lengths) > 1:
        raise DataError(f"noise ceiling: the runs of {_where(key)} have different lengths "
                        f"{sorted(lengths)}; the run table crops a task to a common length, "
                        "re-run snakemake.")
    for col, unit, what in (("audio_onset", "s", "audio onsets"), ("tr", "s", "TRs")):
        if col not in members:
            continue
        vals = pd.to_numeric(members[col], errors="coerce").to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size and np.ptp(vals) > 1e-3:
            by = (members.assign(_v=pd.to_numeric(members[col], errors="coerce"))
                  .groupby("condition" if conds else "task")["_v"].unique())
            raise DataError(
                f"noise ceiling: the listeners of {_where(key)} have different {what} "
                f"({', '.join(f'{c or key[0]}: {sorted(set(v))} {unit}' for c, v in by.items())})"
                ": their TRs are not on one grid, and the ceiling does not realign them. Drop "
                "the odd runs (dataset.subjects or code/scan_exclude.json).")
    return lengths.pop()


def _with_keys(runs):
    runs = runs.copy()
    if "condition" not in runs:
        runs["condition"] = ""
    runs["condition"] = [_text(c) for c in runs["condition"]]
    runs["listen_key"] = _keys(runs)
    return runs


def listener_sums(runs, load):
    """Sum and count of all listeners' BOLD per audio, read one run at a time.

    Parameters
    ----------
    runs : DataFrame
        Kept rows of the run table (``subject``, ``task``, ``basename``, ``n_trs``, optionally
        ``condition``, ``story``, ``stim_file``, ``audio``, ``audio_onset``, ``tr``), e.g. every
        run of one task. The listeners of an audio (:func:`audio_of`) are pooled whatever their
        condition.
    load : callable
        ``load(basename, n_trs) -> (n_trs, n_vertices)``.

    Returns
    -------
    dict
        ``(task, audio) -> (total, count, members)``: ``total`` (n_trs, n_vertices) float64
        sum of the listeners' finite values, ``count`` (n_trs, n_vertices) int32 how many were
        finite, ``members`` DataFrame (``subject``, ``basename``, ``condition``) of the summed
        runs (one per subject, its last); ``len(members)`` is the number of listeners pooled.
        The leave-one-out mean of a subject is then ``(total - own) / (count - own_finite)``
        (:func:`other_subjects_mean` with ``sums``): every run is read once per audio instead
        of once per other listener.

    Raises
    ------
    DataError
        When the listeners of an audio are not on one TR grid (different ``n_trs``, audio
        onsets or TRs).
    """
    runs = _with_keys(runs)
    out = {}
    for key in pd.unique(runs["listen_key"]):
        members = _listeners(runs, key)
        n = _check_grid(members, key)
        total = count = None
        for b in members["basename"]:
            y = np.asarray(load(b, n), dtype=np.float64)
            ok = np.isfinite(y)
            total = np.where(ok, y, 0.0) if total is None else total + np.where(ok, y, 0.0)
            count = ok.astype(np.int32) if count is None else count + ok
        out[key] = (total, count,
                    members[["subject", "basename", "condition"]].reset_index(drop=True))
    return out


def listener_table(runs):
    """How many listeners the ceiling pools per audio, by condition (no BOLD is read).

    Parameters
    ----------
    runs : DataFrame
        As :func:`listener_sums`.

    Returns
    -------
    DataFrame
        One row per (task, audio, condition): ``task``, ``audio``, ``condition`` (``""`` when
        none), ``n_condition`` (listeners of that condition), ``n_listeners`` (all listeners of
        the audio, pooled over its conditions; a subject's ceiling averages
        ``n_listeners - 1`` of them), ``n_trs``, ``audio_onset``, ``tr`` (the shared grid; NaN
        when unknown).
    """
    runs = _with_keys(runs)
    rows = []
    for key in pd.unique(runs["listen_key"]):
        members = _listeners(runs, key)
        n = _check_grid(members, key)
        grid = {c: (float(pd.to_numeric(members[c], errors="coerce").iloc[0])
                    if c in members else np.nan) for c in ("audio_onset", "tr")}
        for cond, g in members.groupby("condition", sort=True):
            rows.append({"task": key[0], "audio": key[1], "condition": cond,
                         "n_condition": len(g), "n_listeners": len(members), "n_trs": n,
                         **grid})
    cols = ["task", "audio", "condition", "n_condition", "n_listeners", "n_trs",
            "audio_onset", "tr"]
    return pd.DataFrame(rows, columns=cols).sort_values(["task", "audio", "condition"],
                                                          ignore_index=True)


def other_subjects_mean(subject, runs, load, sums=None, return_runs=False):
    """The mean BOLD of the other subjects who heard the audio of each of ``subject``'s runs.

    Parameters
    ----------
    subject : str
    runs : DataFrame
        Kept rows of the run table (all subjects) with ``subject``, ``task``, ``basename``,
        ``n_trs`` and optionally ``condition``, ``story``, ``stim_file``, ``audio``,
        ``audio_onset``, ``tr``. Runs of the same task and audio (:func:`audio_of`) are pooled
        whatever their condition; they must share one TR grid (checked).
    load : callable
        ``load(basename, n_trs) -> (n_trs, n_vertices)`` the run's BOLD as the encoding model
        sees it (z-scored per run).
    sums : dict, optional
        :func:`listener_sums` of the subject's audio files: the others' mean is the sum minus
        the subject's own run (no other run is read). Without it, the other runs are read here.
    return_runs : bool
        Also return the kept runs (see below).

    Returns
    -------
    Y : ndarray, shape (n_rows, n_vertices), float32
        The subject's BOLD, its runs concatenated in table order, keeping only runs whose audio
        at least one other subject heard.
    P : ndarray, shape (n_rows, n_vertices), float32
        Mean of the other subjects' BOLD over the same TRs (NaN where all others are NaN).
    lengths : list of int
        TRs of each kept run.
    n_others : list of int
        Number of other subjects averaged for each kept run.
    kept : DataFrame, only with ``return_runs``
        One row per kept run: ``basename``, ``task``, ``audio``, ``n_listeners`` (all
        listeners of the audio, the subject included), ``n_others``.
    """
    runs = _with_keys(runs)
    mine = runs[runs["subject"] == subject].drop_duplicates("basename")
    if mine.empty:
        raise DataError(f"noise ceiling: no kept run for {subject}.")
    Ys, Ps, lengths, n_others, kept = [], [], [], [], []
    for row in mine.itertuples():
        n = int(row.n_trs)
        key = row.listen_key
        if sums is None:
            others = _listeners(runs[runs["subject"] != subject], key)
            if others.empty:
                continue
            _check_grid(pd.concat([others, runs.loc[[row.Index]]]), key)
            total, count = None, None
            for b in others["basename"]:
                y = np.asarray(load(b, n), dtype=np.float64)
                ok = np.isfinite(y)
                total = np.where(ok, y, 0.0) if total is None else total + np.where(ok, y, 0.0)
                count = ok.astype(np.int64) if count is None else count + ok
            n_other = len(others)
            n_listeners = n_other + 1
        else:
            if key not in sums:
                raise DataError(f"noise ceiling: no listener sum of {_where(key)} for "
                                f"{subject}; re-run snakemake.")
            total, count, members = sums[key]
            if total.shape[0] != n:
                raise DataError(f"noise ceiling: the listener sum of {_where(key)} has "
                                f"{total.shape[0]} TRs, {row.basename} {n}; re-run snakemake.")
            total = np.asarray(total, dtype=np.float64)
            count = np.asarray(count, dtype=np.int64)
            own = members[members["subject"] == subject]
            if len(own):
                y = np.asarray(load(own["basename"].iloc[0], n), dtype=np.float64)
                ok = np.isfinite(y)
                total = total - np.where(ok, y, 0.0)
                count = count - ok
            n_other = len(members) - len(own)
            n_listeners = n_other + 1
            if n_other == 0:
                continue
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        Ys.append(np.asarray(load(row.basename, n), dtype=np.float32))
        Ps.append(mean.astype(np.float32))
        lengths.append(n)
        n_others.append(n_other)
        kept.append({"basename": row.basename, "task": key[0], "audio": key[1],
                     "n_listeners": n_listeners, "n_others": n_other})
    kept = pd.DataFrame(kept, columns=["basename", "task", "audio", "n_listeners", "n_others"])
    if not Ys:
        out = (None, None, [], [])
    else:
        out = (np.concatenate(Ys), np.concatenate(Ps), lengths, n_others)
    return out + (kept,) if return_runs else out


def ceiling_scores(P, Y, segment_lengths=None, *, delays=range(6), alphas=DEFAULT_ALPHAS,
                   n_folds=5, groups=None, n_inner_folds=5, batch=4096, gap_trs=0):
    """Per-vertex cross-validated prediction of ``Y[:, v]`` from ``P[:, v]`` (with FIR delays).

    :func:`brainpred.mapping.per_target_scores`: the mapping's folds, standardisation, ridge
    (:func:`brainpred.mapping.ridge_cv_per_target`) and Pearson r, with the vertex's own
    predictor as design (see the module docstring).

    Parameters
    ----------
    P : array, shape (n_trs, V)
        Predictor: the other subjects' mean BOLD (see :func:`other_subjects_mean`).
    Y : array, shape (n_trs, V)
        The subject's BOLD.
    segment_lengths : sequence of int or None
        TRs of each run (delays never cross a run boundary).
    delays : iterable of int
        FIR delays in TRs (as the encoding model).
    alphas : array
        Ridge penalties; one is chosen per vertex and outer fold by contiguous inner CV.
    n_folds : int
        Contiguous outer folds (:func:`brainpred.mapping.contiguous_folds`, with ``groups``).
    groups : array or None
        Run of each TR, to make folds of whole runs.
    n_inner_folds : int
    batch : int
        Vertices per batch (memory: about ``n_trs * len(delays) * batch * 8`` bytes x 3).
    gap_trs : int
        TRs dropped from the training set on each side of every outer test fold, as the
        encoding model (:func:`brainpred.mapping.contiguous_folds`).

    Returns
    -------
    r : ndarray, shape (V,), float32
        Mean over outer folds of the test Pearson r; NaN where ``Y`` or ``P`` is NaN or
        constant.
    """
    return per_target_scores(P, Y, segment_lengths, delays=delays, alphas=alphas,
                             n_folds=n_folds, groups=groups, n_inner_folds=n_inner_folds,
                             batch=batch, gap_trs=gap_trs)


def percent_of_ceiling(score, ceiling, min_ceiling=0.0):
    """Score as a percentage of the noise ceiling: ``100 * score / ceiling``.

    NaN where the ceiling is ``<= min_ceiling`` (no reliable shared signal) or either is NaN.
    """
    score = np.asarray(score, dtype=np.float64)
    ceiling = np.asarray(ceiling, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ceiling > min_ceiling, 100.0 * score / ceiling, np.nan)


def runs_frame(table):
    """Kept rows of a run table with the columns :func:`other_subjects_mean` needs.

    Adds ``audio`` (:func:`audio_of`) and raises :class:`DataError` when one audio is heard in
    several tasks: listeners are pooled within a task (the per-task crop and audio onset can
    differ between tasks), which would then split the listeners of one audio.
    """
    kept = table[table["kept"]].copy()
    if "condition" not in kept:
        kept["condition"] = ""
    kept["condition"] = kept["condition"].fillna("").astype(str)
    kept["audio"] = [audio_of(r) for r in kept.to_dict("records")]
    tasks = kept.groupby("audio")["task"].unique()
    shared = tasks[tasks.map(len) > 1]
    if len(shared):
        raise DataError("noise ceiling: the audio "
                        + "; ".join(f"{a} is heard in tasks {sorted(t)}" for a, t in shared.items())
                        + ". Listeners are pooled within a task (one crop and TR grid); an audio "
                        "shared by tasks is not supported (select one of the tasks).")
    return pd.DataFrame(kept)


def save_listener_sums(path, sums):
    """Write :func:`listener_sums` to one ``.npz`` (atomically): totals as float32 (sums of
    z-scored values), counts as int32, and the members and (task, audio) keys as JSON."""
    arrays, keys = {}, []
    for i, (key, (total, count, members)) in enumerate(sums.items()):
        arrays[f"s{i}__total"] = np.asarray(total, dtype=np.float32)
        arrays[f"s{i}__count"] = np.asarray(count, dtype=np.int32)
        cond = members["condition"] if "condition" in members else [""] * len(members)
        keys.append({"task": key[0], "audio": key[1],
                     "subject": members["subject"].tolist(),
                     "basename": members["basename"].tolist(),
                     "condition": [str(c) for c in cond]})
    save_npz(path, keys_json=np.array(json.dumps(keys)), **arrays)


def load_listener_sums(paths):
    """Read and merge :func:`save_listener_sums` files: ``(task, audio) -> (total, count,
    members)``."""
    out = {}
    for path in paths:
        z = load_npz(path)
        for i, k in enumerate(json.loads(str(z["keys_json"]))):
            if "audio" not in k:
                raise DataError(f"{path}: listener sums per (task, condition), from before the "
                                "ceiling pooled the listeners of one audio; delete it and re-run "
                                "snakemake.")
            out[(k["task"], k["audio"])] = (
                z[f"s{i}__total"], z[f"s{i}__count"],
                pd.DataFrame({"subject": k["subject"], "basename": k["basename"],
                              "condition": k.get("condition", [""] * len(k["subject"]))}))
    return out
