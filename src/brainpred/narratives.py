"""Narratives dataset layout: run table, word timing, transcripts and BOLD.

The dataset is read in the layout of the public release (OpenNeuro ds002345 / DataLad
``///labs/hasson/narratives``)::

    participants.tsv                       task/condition/... as comma-separated parallel lists
    code/scan_exclude.json                 {task: {subject: [basename prefixes]}}
    sub-XXX/func/sub-XXX_task-T[_run-N]_events.tsv   onset of the first row = audio onset
    sub-XXX/func/sub-XXX_task-T[_run-N]_bold.json    RepetitionTime
    stimuli/gentle/<story>/align.csv       Gentle alignment, no header
    stimuli/gentle/<story>/transcript.txt  punctuated transcript (optional)
    derivatives/afni-nosmooth/sub-XXX/func/
        sub-XXX_task-T[_run-N]_space-<space>_hemi-{L,R}_desc-clean.func.gii

Selection rules (``docs/method.md`` section 2) are applied by :func:`build_run_table`, which
keeps one row per run (kept and excluded, with the reason) so the selection can be audited.

Stories
-------
A run's story is the stem of the ``stim_file`` of its events (``milkywayvodka_audio.wav`` ->
``milkywayvodka``), which picks the milkyway version per run; without a usable ``stim_file``
the task name is used (``milkyway`` + condition for milkyway). ``schema`` runs hold several
stories: their story is the comma-joined list (they are dropped by default).

``slumlordreach`` is one audio file and one fMRI run holding two stories (``slumlord`` then
``reach``; the split is at :data:`SLUMLORDREACH_SPLIT` = 950 s file time). The run table keeps
**one row per run** with story ``"slumlordreach"`` (the contract is one row per run, and the
BOLD run is one time series). :func:`story_words` accepts ``"slumlordreach"`` (both stories,
one text) and also ``"slumlord"`` / ``"reach"`` (each part alone, with its own text, so that a
language model does not carry the context of one story into the other); the times of both
parts stay in the file time of the ``slumlordreach`` audio, so the run's ``audio_onset``
applies unchanged. :func:`story_parts` gives the parts of a story.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .io import read_json

log = logging.getLogger("brainpred")

__all__ = [
    "SCRAMBLED_TASKS",
    "SCHEMA_TASK",
    "SLUMLORDREACH_SPLIT",
    "MAX_TAIL_S",
    "FIRST_WORD_FIXES",
    "RUN_TABLE_COLUMNS",
    "read_participants",
    "read_scan_exclude",
    "build_run_table",
    "crop_lengths",
    "task_crop_lengths",
    "story_parts",
    "story_folder",
    "audio_path",
    "audio_span",
    "check_audio_files",
    "bold_rel",
    "split_story_rows",
    "read_alignment",
    "fix_first_words",
    "read_transcript",
    "story_words",
    "gifti_n_trs",
    "gifti_time_step",
    "check_runs_cover_their_stories",
    "check_words_in_run",
    "check_task_trs",
    "VERTICES_PER_HEMI",
    "load_bold",
]

#: Tasks whose audio is scrambled (dropped unless ``keep_scrambled``).
SCRAMBLED_TASKS = ("notthefalllongscram", "notthefallshortscram")
#: Task holding several stories interleaved with movies (dropped unless ``keep_schema``).
SCHEMA_TASK = "schema"
#: File time (s) splitting the ``slumlordreach`` audio into ``slumlord`` and ``reach``.
SLUMLORDREACH_SPLIT = 950.0
_STORY_PARTS = {"slumlordreach": ("slumlord", "reach")}
_PART_PARENT = {"slumlord": ("slumlordreach", 0), "reach": ("slumlordreach", 1)}

#: Known misplaced first words of the Gentle alignments:
#: ``story -> [(row index, written word, true start in s file time), ...]``.
#: The original files put them in the intro music (merlin rows 0-1 at 0.34 s / 3.75 s,
#: prettymouth row 0 at 1.34 s, notthefallintact row 0 at 3.59 s, milkywaysynonyms row 0 at
#: 5.56 s); the next aligned words start at 29.39, 21.15, 25.91 and 21.70 s.
FIRST_WORD_FIXES = {
    "merlin": [(0, "Okay", 29.0), (1, "um", 29.15)],
    "prettymouth": [(0, "When", 21.0)],
    "notthefallintact": [(0, "So", 25.8)],
    "milkywaysynonyms": [(0, "Martin", 21.5)],
}

#: Columns of :func:`build_run_table`, in order.
RUN_TABLE_COLUMNS = ["subject", "task", "story", "run", "condition", "audio_onset", "tr",
                     "n_trs", "bold_L", "bold_R", "kept", "reason", "stim_file"]

#: Vertices per hemisphere of the surfaces the BOLD files may be on.
VERTICES_PER_HEMI = {"fsaverage5": 10242, "fsaverage6": 40962}

_NA = {"n/a", "na", "nan", ""}
_FUNC_RE = re.compile(
    r"^(?P<subject>sub-[A-Za-z0-9]+)_task-(?P<task>[A-Za-z0-9]+)"
    r"(?:_[a-z]+-[A-Za-z0-9]+)*?(?:_run-(?P<run>\d+))?(?:_[a-z]+-[A-Za-z0-9]+)*"
    r"_(?P<suffix>events\.tsv|bold\.json)$")


# --------------------------------------------------------------------------------------------
# participants / scan_exclude
# --------------------------------------------------------------------------------------------

def _na(value):
    return str(value).strip().lower() in _NA


def read_participants(root) -> pd.DataFrame:
    """Read ``participants.tsv`` into one row per (subject, task).

    The columns ``task``, ``condition``, ``comprehension``, ``age`` and ``sex`` of the release
    are comma-separated lists parallel to ``task`` (one entry per task of the subject); a
    single value is broadcast to every task.

    Parameters
    ----------
    root : str or Path
        Dataset root.

    Returns
    -------
    DataFrame, shape (n_subject_task_pairs, 6)
        Columns ``subject`` (``"sub-001"``), ``task``, ``condition`` (``""`` for ``n/a``),
        ``comprehension`` (float, NaN for ``n/a``), ``age`` (float), ``sex`` (str), in file
        order.

    Raises
    ------
    DataError
        When the file is missing, lacks ``participant_id``/``task`` or a list has a length
        different from the task list (the message names the file and line).
    """
    path = Path(root) / "participants.tsv"
    if not path.exists():
        raise DataError(f"{path}: file not found. Point the dataset root at a Narratives "
                        "copy (it holds participants.tsv) or regenerate the synthetic dataset.")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for col in ("participant_id", "task"):
        if col not in df.columns:
            raise DataError(f"{path}: column {col!r} missing (columns: {list(df.columns)}). "
                            "Use the participants.tsv of the Narratives release.")
    rows = []
    for i, rec in enumerate(df.to_dict("records")):
        line = i + 2
        tasks = [t.strip() for t in rec["task"].split(",")] if not _na(rec["task"]) else []
        lists = {}
        for col in ("condition", "comprehension", "age", "sex"):
            vals = [v.strip() for v in str(rec.get(col, "n/a")).split(",")]
            if len(vals) == 1:
                vals = vals * len(tasks)
            if len(vals) != len(tasks):
                raise DataError(
                    f"{path}, line {line}: column {col!r} has {len(vals)} entries but 'task' "
                    f"has {len(tasks)}; the lists must be parallel. Fix that line.")
            lists[col] = vals
        for j, task in enumerate(tasks):
            rows.append({
                "subject": rec["participant_id"].strip(),
                "task": task,
                "condition": "" if _na(lists["condition"][j]) else lists["condition"][j],
                "comprehension": _to_float(lists["comprehension"][j]),
                "age": _to_float(lists["age"][j]),
                "sex": "" if _na(lists["sex"][j]) else lists["sex"][j],
            })
    return pd.DataFrame(rows, columns=["subject", "task", "condition", "comprehension", "age",
                                       "sex"])


def _to_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_scan_exclude(root) -> dict:
    """Read ``code/scan_exclude.json``.

    Parameters
    ----------
    root : str or Path
        Dataset root.

    Returns
    -------
    dict
        ``{task: {subject: [basename prefix, ...]}}``. A run is excluded when one of its
        task's prefixes for its subject is a substring of its file name.

    Raises
    ------
    DataError
        Missing file, invalid JSON or not the nested ``{task: {subject: [str]}}`` shape.
    """
    path = Path(root) / "code" / "scan_exclude.json"
    if not path.exists():
        raise DataError(f"{path}: file not found. Get code/scan_exclude.json from the "
                        "Narratives release, or pass scan_exclude={} to build_run_table to "
                        "exclude no run.")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc}). Restore the file from the "
                        "Narratives release.") from exc
    _check_exclude(data, path)
    return data


def _check_exclude(data, where):
    ok = isinstance(data, dict) and all(
        isinstance(subs, dict) and all(isinstance(p, list) and all(isinstance(x, str) for x in p)
                                       for p in subs.values())
        for subs in data.values())
    if not ok:
        raise DataError(f"{where}: expected {{task: {{subject: [basename prefix, ...]}}}}. "
                        "Restore the file from the Narratives release.")


def _excluded(exclude, task, subject, name):
    return any(prefix in name for prefix in exclude.get(task, {}).get(subject, []))


# --------------------------------------------------------------------------------------------
# run table
# --------------------------------------------------------------------------------------------

def _as_set(value, key):
    if value is None or (isinstance(value, str) and value == "all"):
        return None
    if isinstance(value, str):
        return {value}
    try:
        return set(value)
    except TypeError as exc:
        raise ConfigError(f"{key}: expected 'all' or a list of names, got {value!r}.") from exc


def stim_story(stims):
    stems = []
    for s in stims:
        if _na(s):
            continue
        stem = Path(str(s).strip()).name
        stem = re.sub(r"\.[A-Za-z0-9]+$", "", stem)
        stem = re.sub(r"_audio$", "", stem)
        if stem and stem not in stems:
            stems.append(stem)
    return stems


def _check_content(path):
    """DataError for a DataLad/git-annex file whose content was not fetched (dangling link)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path}: the file's content is not here (an annexed file that was not "
                        "fetched). Run `python -m brainpred.download metadata --configfile "
                        f"<your config>` or `datalad get {path}`.")


def _read_events(path):
    _check_content(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [r for r in csv.reader(f, delimiter="\t") if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as a TSV ({exc}). Restore it from the "
                        "Narratives release.") from exc
    header = [c.strip() for c in rows[0]] if rows else []
    if "onset" not in header or len(rows) < 2:
        raise DataError(f"{path}: needs a column 'onset' and at least one row (the audio "
                        "starts at the onset of the first row). Restore it from the release.")
    col = header.index("onset")
    first = rows[1][col] if col < len(rows[1]) else ""
    try:
        onset = float(first)
    except ValueError:
        raise DataError(f"{path}, line 2: onset {first!r} is not a number. Restore the file "
                        "from the release.") from None
    stims = []
    if "stim_file" in header:
        k = header.index("stim_file")
        stims = [r[k] for r in rows[1:] if k < len(r)]
    return onset, stims


def _read_tr(path):
    _check_content(path)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc}). Restore it from the release.") from exc
    tr = meta.get("RepetitionTime")
    try:
        tr = float(tr)
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'RepetitionTime' missing or not a number ({tr!r}). "
                        "Restore the sidecar from the release.") from None
    if not tr > 0:
        raise DataError(f"{path}: RepetitionTime must be > 0, got {tr}.")
    return tr


def bold_rel(subject, task, run, space, hemi) -> str:
    """Path of a run's cleaned BOLD GIfTI (one hemisphere, ``L``/``R``) below the dataset root
    (``derivatives/afni-nosmooth/...``; ``run`` "" or None for a single-run task)."""
    run_part = f"_run-{run}" if run else ""
    return (f"derivatives/afni-nosmooth/{subject}/func/{subject}_task-{task}{run_part}"
            f"_space-{space}_hemi-{hemi}_desc-clean.func.gii")


def gifti_n_trs(path) -> int:
    """Number of data arrays (TRs) of a GIfTI file, read from its header when possible.

    Parameters
    ----------
    path : str or Path
        ``.func.gii`` file (XML).

    Returns
    -------
    int
        The ``NumberOfDataArrays`` attribute of the ``<GIFTI>`` element; when absent, the count
        of ``<DataArray`` elements (streamed, no decoding).

    Raises
    ------
    DataError
        Missing file or not a GIfTI (no ``<GIFTI`` element in its first 64 kB).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    with open(path, "rb") as f:
        head = f.read(65536)
        m = re.search(rb"<GIFTI\b[^>]*?NumberOfDataArrays\s*=\s*[\"'](\d+)[\"']", head)
        if m:
            return int(m.group(1))
        if b"<GIFTI" not in head:
            raise DataError(f"{path}: not a GIfTI file (no <GIFTI> element). Download it "
                            "again from the Narratives derivatives.")
        count, tail, chunk = head.count(b"<DataArray"), head[-16:], f.read(1 << 24)
        while chunk:
            buf = tail + chunk
            count += buf.count(b"<DataArray") - tail.count(b"<DataArray")
            tail, chunk = buf[-16:], f.read(1 << 24)
        return count


_TIME_STEP_RE = re.compile(
    rb"<Name>\s*(?:<!\[CDATA\[)?\s*TimeStep\s*(?:\]\]>)?\s*</Name>\s*<Value>\s*"
    rb"(?:<!\[CDATA\[)?\s*([^<\]]*?)\s*(?:\]\]>)?\s*</Value>")


def gifti_time_step(path):
    """Time between data arrays declared in a GIfTI's metadata, when it declares one.

    Parameters
    ----------
    path : str or Path
        ``.func.gii`` file.

    Returns
    -------
    float or None
        Seconds: the first ``TimeStep`` metadata entry in the first 64 kB of the file (file
        or first data array metadata). The GIfTI standard gives it in milliseconds; values
        below 50 are taken as seconds (some writers use seconds). None when absent or not a
        number (the release's afni-nosmooth files may not carry it: the sidecar
        ``RepetitionTime`` is then the only source of the TR).
    """
    with open(path, "rb") as f:
        head = f.read(65536)
    m = _TIME_STEP_RE.search(head)
    if not m:
        return None
    try:
        value = float(m.group(1))
    except ValueError:
        return None
    if not value > 0:
        return None
    return value / 1000.0 if value >= 50 else value


def _check_time_step(gii, tr, sidecar):
    step = gifti_time_step(gii)
    if step is not None and abs(step - tr) > 0.005 * tr:
        raise DataError(f"{gii}: TimeStep {step:g} s disagrees with RepetitionTime {tr:g} s of "
                        f"{sidecar}. One of them is wrong: re-download both from the release "
                        "(the sidecar's RepetitionTime is the one the analysis uses).")


def build_run_table(root, tasks="all", subjects="all", space="fsaverage6",
                    keep_scrambled=False, keep_schema=False, pieman_run="last",
                    scan_exclude=None) -> pd.DataFrame:
    """Table of every fMRI run of the dataset with the paper's selection applied.

    Runs are found from ``sub-*/func/*_events.tsv`` and ``*_bold.json``; the subject x task
    pairs of ``participants.tsv`` without any such file get one row with reason
    ``"no_files"``. Exclusion reasons, first match wins: ``"no_files"``, ``"no_events"``,
    ``"no_sidecar"``, ``"scan_exclude"`` (a prefix listed in ``code/scan_exclude.json`` for the
    run's task and subject is a substring of its file name), ``"scrambled"``
    (:data:`SCRAMBLED_TASKS`), ``"schema"``, ``"duplicate_run"`` (a subject with several
    remaining runs of a task, i.e. pieman: only one is kept, see ``pieman_run``).

    Parameters
    ----------
    root : str or Path
        Dataset root.
    tasks, subjects : "all" or list of str
        Restrict the table to these tasks (a task or story name, e.g. ``"milkywayvodka"``)
        and subjects (``"sub-001"``). Unknown names raise :class:`ConfigError`.
    space : str
        Surface space in the BOLD file names (``"fsaverage6"``, ``"fsaverage5"``).
    keep_scrambled, keep_schema : bool
        Keep the scrambled ``notthefall*scram`` / the ``schema`` runs.
    pieman_run : {"last", "first", "all"}
        Which of several non-excluded runs of a task a subject keeps.
    scan_exclude : None, dict or path
        ``None``: read ``code/scan_exclude.json`` (with a warning and no exclusion when the
        file is absent); a dict ``{task: {subject: [prefix]}}``; or the path of such a JSON.

    Returns
    -------
    DataFrame, shape (n_runs, 13)
        Columns :data:`RUN_TABLE_COLUMNS`: ``subject``, ``task``, ``story``, ``run``
        (``""`` or ``"1"``), ``condition`` (``""`` if none), ``audio_onset`` (s, onset of the
        first row of events.tsv; NaN without events), ``tr`` (s, sidecar ``RepetitionTime``;
        NaN without sidecar), ``n_trs`` (int: data arrays of the L GIfTI, the minimum of L and
        R when both exist; -1 when none exists), ``bold_L``, ``bold_R`` (paths relative to
        ``root``; ``""`` for ``no_files`` rows), ``kept`` (bool), ``reason`` (``""`` when
        kept), ``stim_file`` (first non-``n/a`` stim_file of the events, ``""`` if none).
        Sorted by subject, task, run.
    """
    root = Path(root)
    if pieman_run not in ("last", "first", "all"):
        raise ConfigError(f"pieman_run: expected 'last', 'first' or 'all', got {pieman_run!r}.")
    exclude = _load_exclude(root, scan_exclude)

    if (root / "participants.tsv").exists():
        parts = read_participants(root)
    else:
        warnings.warn(f"{root / 'participants.tsv'} not found: conditions are empty and "
                      "subjects without files are not listed.", stacklevel=2)
        parts = pd.DataFrame(columns=["subject", "task", "condition"])
    condition = {(s, t): c for s, t, c in zip(parts.subject, parts.task, parts.condition)}

    # Subjects are filtered before any file is read (a subject's runs never affect another's),
    # so a partial DataLad clone need not hold the other subjects' events and sidecars. (The
    # crop to a common length per task is computed over every subject: task_crop_lengths.)
    sel_t, sel_s = _as_set(tasks, "tasks"), _as_set(subjects, "subjects")
    found, all_subjects = _find_runs(root, sel_s)
    all_subjects |= set(parts.subject)

    rows = []
    for (subject, task, run), files in found.items():
        onset, stims, tr = math.nan, [], math.nan
        if "events.tsv" in files:
            onset, stims = _read_events(files["events.tsv"])
        if "bold.json" in files:
            tr = _read_tr(files["bold.json"])
        cond = condition.get((subject, task), "")
        stems = stim_story(stims)
        if task == SCHEMA_TASK:
            story = ",".join(stems) if stems else task
        elif len(stems) == 1:
            story = stems[0]
        elif task == "milkyway" and cond:
            story = f"milkyway{cond}"
        else:
            story = task
        bold_l = bold_rel(subject, task, run, space, "L")
        bold_r = bold_rel(subject, task, run, space, "R")
        present = [root / p for p in (bold_l, bold_r) if (root / p).exists()]
        counts = [gifti_n_trs(p) for p in present]
        if present and "bold.json" in files:
            _check_time_step(present[0], tr, files["bold.json"])
        n_trs = min(counts) if counts else -1
        reason = _reason(files, exclude, subject, task, keep_scrambled, keep_schema)
        rows.append(dict(subject=subject, task=task, story=story, run=run, condition=cond,
                         audio_onset=onset, tr=tr, n_trs=n_trs, bold_L=bold_l, bold_R=bold_r,
                         kept=reason == "", reason=reason,
                         stim_file=next((str(s) for s in stims if not _na(s)), "")))
    have = {(r["subject"], r["task"]) for r in rows}
    for subject, task, cond in zip(parts.subject, parts.task, parts.condition):
        if sel_s is not None and subject not in sel_s:
            continue
        if (subject, task) not in have:
            have.add((subject, task))
            story = f"milkyway{cond}" if task == "milkyway" and cond else task
            rows.append(dict(subject=subject, task=task, story=story, run="", condition=cond,
                             audio_onset=math.nan, tr=math.nan, n_trs=-1, bold_L="",
                             bold_R="", kept=False, reason="no_files", stim_file=""))
    table = _keep_one_run(pd.DataFrame(rows, columns=RUN_TABLE_COLUMNS), pieman_run)

    if sel_s is not None:
        unknown = sel_s - all_subjects
        if unknown:
            raise ConfigError(f"subjects: unknown subject(s) {sorted(unknown)} in {root} "
                              "(not in participants.tsv nor sub-*/func). Check the list.")
        table = table[table.subject.isin(sel_s)]
    if sel_t is not None:
        known = set(table.task) | set(table.story)
        unknown = sel_t - known
        if unknown:
            among = " of the selected subjects" if sel_s is not None else ""
            raise ConfigError(f"tasks: unknown task(s) {sorted(unknown)} in {root}{among}; "
                              f"known: {sorted(set(table.task))}. Check the task names.")
        table = table[table.task.isin(sel_t) | table.story.isin(sel_t)]
    table = table.reset_index(drop=True)
    table["n_trs"] = table["n_trs"].astype(int)
    table["kept"] = table["kept"].astype(bool)
    table["audio_onset"] = table["audio_onset"].astype(float)
    table["tr"] = table["tr"].astype(float)
    check_task_trs(table, root)
    return table


def check_task_trs(table, root=None, tol=1e-3):
    """Every kept run of one audio (task and story) must have the same TR.

    A run whose sidecar says another ``RepetitionTime`` than the other runs of its audio (a
    copy or edit error: the real release has 1.5 s everywhere but 1.52 s in the milkyway
    "synonyms" version, which is its own story) would be binned on a wrong grid and silently
    lose its scores; it is refused when the workflow starts, naming its sidecar.

    Parameters
    ----------
    table : DataFrame
        :func:`build_run_table` rows (``subject, task, story, run, kept, tr``).
    root : path, optional
        The dataset root (for the sidecar paths in the message).
    tol : float
        Seconds two TRs may differ by.

    Raises
    ------
    DataError
        Naming the odd runs' sidecars, their TR and the TR of the audio's other runs.
    """
    kept = table[table["kept"] & np.isfinite(table["tr"].astype(float))]
    for (task, story), rows in kept.groupby(["task", "story"]):
        trs = rows["tr"].astype(float).round(6)
        if trs.max() - trs.min() <= tol:
            continue
        common = float(trs.mode().iloc[0])
        odd = rows[(trs - common).abs() > tol]
        names = [f"{r.subject}/func/{r.subject}_task-{r.task}"
                 f"{'_run-' + str(r.run) if str(r.run) not in ('', 'nan') else ''}_bold.json"
                 for r in odd.itertuples()]
        where = f" under {root}" if root is not None else ""
        raise DataError(
            f"{names[0]}{where}: RepetitionTime {float(odd['tr'].iloc[0]):g} s, but the other "
            f"{len(rows) - len(odd)} runs of {story} ({task}) say {common:g} s"
            + (f" (also {', '.join(names[1:4])}{' ...' if len(names) > 4 else ''})"
               if len(names) > 1 else "")
            + ". Fix the sidecar (RepetitionTime, seconds) or exclude the run "
            "(code/scan_exclude.json).")


def _load_exclude(root, scan_exclude, warn=True):
    """The ``{task: {subject: [prefix]}}`` exclusion dict of ``build_run_table``'s argument."""
    if scan_exclude is None:
        path = root / "code" / "scan_exclude.json"
        if path.exists():
            return read_scan_exclude(root)
        if warn:
            warnings.warn(f"{path} not found: no run is excluded by scan_exclude.",
                          stacklevel=3)
        return {}
    if isinstance(scan_exclude, dict):
        _check_exclude(scan_exclude, "scan_exclude")
        return scan_exclude
    exclude = read_json(scan_exclude)
    _check_exclude(exclude, scan_exclude)
    return exclude


def _find_runs(root, sel_s=None, tasks=None):
    """``{(subject, task, run): {"events.tsv": path, "bold.json": path}}`` of the func files
    (names only: a dangling DataLad link counts), and the set of every subject seen."""
    found, all_subjects = {}, set()
    for f in sorted(root.glob("sub-*/func/sub-*_task-*")):
        m = _FUNC_RE.match(f.name)
        if not m or m["subject"] != f.parent.parent.name:
            continue
        all_subjects.add(m["subject"])
        if sel_s is not None and m["subject"] not in sel_s:
            continue
        if tasks is not None and m["task"] not in tasks:
            continue
        key = (m["subject"], m["task"], m["run"] or "")
        found.setdefault(key, {})[m["suffix"]] = f
    return found, all_subjects


def _reason(files, exclude, subject, task, keep_scrambled, keep_schema):
    """Exclusion reason of a run from its file names and task alone (``""``: kept)."""
    name = next(iter(files.values())).name
    if "events.tsv" not in files:
        return "no_events"
    if "bold.json" not in files:
        return "no_sidecar"
    if _excluded(exclude, task, subject, name):
        return "scan_exclude"
    if task in SCRAMBLED_TASKS and not keep_scrambled:
        return "scrambled"
    if task == SCHEMA_TASK and not keep_schema:
        return "schema"
    return ""


def _keep_one_run(table, pieman_run):
    """Sort by subject, task, run; keep one run per subject and task among the kept runs."""
    if not len(table):
        return table
    table["_runnum"] = pd.to_numeric(table["run"], errors="coerce").fillna(0)
    table = table.sort_values(["subject", "task", "_runnum"]).drop(columns="_runnum")
    table = table.reset_index(drop=True)
    if pieman_run != "all":
        kept = table[table.kept]
        for _, idx in kept.groupby(["subject", "task"]).groups.items():
            if len(idx) > 1:
                keep = idx[-1] if pieman_run == "last" else idx[0]
                drop = [i for i in idx if i != keep]
                table.loc[drop, "kept"] = False
                table.loc[drop, "reason"] = "duplicate_run"
    return table


def task_crop_lengths(root, tasks=None, space="fsaverage6", keep_scrambled=False,
                      keep_schema=False, pieman_run="last", scan_exclude=None) -> pd.Series:
    """Common length (TRs) of each task over **every** subject's kept runs of the dataset.

    The crop of a run must not depend on which subjects an analysis selects (adding a subject
    must not change another subject's scores), so it is not computed over the selected
    subjects' run table (:func:`crop_lengths`) but over all the runs of the dataset that the
    selection rules of :func:`build_run_table` keep (same ``space``, ``keep_*``,
    ``pieman_run`` and ``scan_exclude``; the ``tasks`` / ``subjects`` selection plays no
    part). Only file names and GIfTI headers are read: the other subjects' events and sidecars
    need not be here, and a run whose BOLD files are absent (not fetched) or unreadable has an
    unknown length and does not count; a warning names the tasks where that happened, since
    fetching those runs could shorten the crop.

    Parameters
    ----------
    root : str or Path
        Dataset root.
    tasks : None or collection of str
        Task names (not stories) to compute; None = every task of the dataset.
    space, keep_scrambled, keep_schema, pieman_run, scan_exclude
        As :func:`build_run_table`.

    Returns
    -------
    Series of int, indexed by task (sorted), name ``"n_trs"``
        As :func:`crop_lengths`: the minimum ``n_trs`` over the kept runs of the task whose
        length is known; -1 when none is known; tasks without a kept run are absent.
    """
    root = Path(root)
    if pieman_run not in ("last", "first", "all"):
        raise ConfigError(f"pieman_run: expected 'last', 'first' or 'all', got {pieman_run!r}.")
    exclude = _load_exclude(root, scan_exclude, warn=False)
    found, _ = _find_runs(root, None, None if tasks is None else set(tasks))
    rows = []
    for (subject, task, run), files in found.items():
        reason = _reason(files, exclude, subject, task, keep_scrambled, keep_schema)
        counts = []
        if reason == "":
            for hemi in "LR":
                path = root / bold_rel(subject, task, run, space, hemi)
                if path.exists():
                    try:
                        counts.append(gifti_n_trs(path))
                    except DataError:  # another subject's broken file: length unknown
                        counts = []
                        break
        rows.append(dict(subject=subject, task=task, run=run,
                         n_trs=min(counts) if counts else -1, kept=reason == "",
                         reason=reason))
    table = _keep_one_run(pd.DataFrame(rows, columns=["subject", "task", "run", "n_trs",
                                                      "kept", "reason"]), pieman_run)
    kept = table[table["kept"].astype(bool)] if len(table) else table
    unknown = kept[kept["n_trs"].astype(int) < 0].groupby("task").size() if len(kept) else {}
    if len(unknown):
        total = kept.groupby("task").size()
        warnings.warn(
            "common length per task computed without the runs whose BOLD is not here: "
            + ", ".join(f"{t} ({total[t] - n} of {total[t]} kept runs known)"
                        for t, n in unknown.items())
            + ". Fetching the other runs' BOLD may shorten a task's crop (and change every "
            "score of that task).", stacklevel=2)
    return crop_lengths(table)


def crop_lengths(run_table) -> pd.Series:
    """Common length (TRs) per task: the minimum ``n_trs`` over the kept runs of the table.

    Over the rows given: on a table restricted to some subjects the answer depends on that
    selection. The analysis crops with :func:`task_crop_lengths` (every subject's kept runs).

    Parameters
    ----------
    run_table : DataFrame
        Output of :func:`build_run_table` (columns ``task``, ``n_trs``, ``kept``).

    Returns
    -------
    Series of int, indexed by task (sorted), name ``"n_trs"``
        -1 for a task whose kept runs have no known length (``n_trs == -1``). Tasks without a
        kept run are absent.
    """
    kept = run_table[run_table["kept"].astype(bool)]
    out = {}
    for task, grp in kept.groupby("task"):
        n = grp["n_trs"].astype(int)
        n = n[n >= 0]
        out[task] = int(n.min()) if len(n) else -1
    return pd.Series(out, name="n_trs", dtype=int).sort_index()


def story_folder(story) -> str:
    """Folder of ``stimuli/gentle`` holding a story's alignment (``slumlordreach`` for its parts)."""
    return _PART_PARENT.get(story, (story, 0))[0]


def split_story_rows(run_table) -> pd.DataFrame:
    """One row per (run, story): runs whose audio holds several stories get a row per part.

    The parts share the run's BOLD and audio onset; the analysis places each part's words on
    the run's TR grid with its own language-model context (see :func:`story_words`).

    Parameters
    ----------
    run_table : DataFrame
        Output of :func:`build_run_table`.

    Returns
    -------
    DataFrame
        The same columns; ``story`` replaced by the parts for multi-story runs.
    """
    rows = []
    for row in run_table.to_dict("records"):
        for part in story_parts(row["story"]):
            rows.append({**row, "story": part})
    return pd.DataFrame(rows, columns=run_table.columns)


def story_parts(story) -> tuple:
    """Stories held by one audio file: ``("slumlord", "reach")`` for slumlordreach.

    Parameters
    ----------
    story : str

    Returns
    -------
    tuple of str
        The parts, or ``(story,)`` for a single-story audio.
    """
    return _STORY_PARTS.get(story, (story,))


def audio_path(root, story) -> Path:
    """The audio file of a story: ``stimuli/<audio>_audio.wav``.

    The audio's name is the story's (the run table's story is the ``stim_file`` stem without
    ``_audio``, :func:`stim_story`), but for the stories that share one file: ``slumlord`` and
    ``reach`` are ``slumlordreach_audio.wav`` (:func:`story_folder`).

    Parameters
    ----------
    root : str or Path
        Dataset root.
    story : str

    Returns
    -------
    Path
    """
    return Path(root) / "stimuli" / f"{story_folder(story)}_audio.wav"


def audio_span(story) -> tuple:
    """File-time interval (s) of a story in its audio file: ``(0, inf)``, but ``slumlord``
    ``(0, SLUMLORDREACH_SPLIT)`` and ``reach`` ``(SLUMLORDREACH_SPLIT, inf)`` (one file)."""
    if story in _PART_PARENT:
        part = _PART_PARENT[story][1]
        return (0.0, SLUMLORDREACH_SPLIT) if part == 0 else (SLUMLORDREACH_SPLIT, math.inf)
    return (0.0, math.inf)


def check_audio_files(root, stories):
    """Refuse, when the workflow starts, a story whose audio file is missing.

    Parameters
    ----------
    root : str or Path
        Dataset root.
    stories : iterable of str

    Raises
    ------
    DataError
        Naming the first missing file (or one whose DataLad content was not fetched) and the
        fix: get it, or drop ``audio_envelope`` from ``nuisance``.
    """
    for story in sorted(set(stories)):
        path = audio_path(root, story)
        if path.is_symlink() and not path.exists():
            raise DataError(f"{path}: nuisance lists audio_envelope, but the content of this "
                            f"audio file (story {story}) is not here: run `datalad get {path}` "
                            "or drop audio_envelope from nuisance.")
        if not path.is_file():
            raise DataError(f"{path}: nuisance lists audio_envelope, but story {story} has no "
                            "audio file there. Copy the Narratives stimuli/*_audio.wav files "
                            "into the dataset (or `datalad get stimuli`), or drop "
                            "audio_envelope from nuisance.")


# --------------------------------------------------------------------------------------------
# alignments
# --------------------------------------------------------------------------------------------

def _read_alignment_raw(path):
    path = Path(path)
    _check_content(path)
    if not path.exists():
        raise DataError(f"{path}: file not found. Get stimuli/gentle/<story>/align.csv from "
                        "the Narratives release.")
    words, dicts, starts, ends = [], [], [], []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 4:
                    raise DataError(
                        f"{path}, line {line}: expected 4 comma-separated columns (word, "
                        f"dictionary word, start, end; no header), got {len(row)}: {row!r}. "
                        "Fix or restore the file.")
                try:
                    s = float(row[2]) if row[2].strip() else math.nan
                    e = float(row[3]) if row[3].strip() else math.nan
                except ValueError:
                    raise DataError(
                        f"{path}, line {line}: start/end {row[2]!r}, {row[3]!r} are not numbers "
                        "(the file has no header; times may be empty). Fix or restore the "
                        "file.") from None
                if math.isnan(s) != math.isnan(e):
                    raise DataError(f"{path}, line {line}: only one of start/end is given "
                                    f"({row!r}). Fix or restore the file.")
                if not math.isnan(s) and e < s:
                    raise DataError(f"{path}, line {line}: end {e} before start {s}.")
                words.append(row[0])
                dicts.append(row[1])
                starts.append(s)
                ends.append(e)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}). Restore the file.") from exc
    if not words:
        raise DataError(f"{path}: no aligned word. Restore the file from the release.")
    return pd.DataFrame({"word": words, "dict_word": dicts,
                         "start": np.array(starts, float), "end": np.array(ends, float)})


def _interpolate(df, path):
    """Fill missing start/end: a block of k missing words between two aligned words shares
    the gap [end of previous, start of next] in k equal slots (when the neighbours overlap,
    the k words split [start of previous, start of next] in k + 1 steps, so onsets stay
    ordered); at the edges the slots are the median aligned word duration, before the first
    aligned word (clipped at 0) or after the last one."""
    start, end = df["start"].to_numpy(float).copy(), df["end"].to_numpy(float).copy()
    missing = np.isnan(start)
    if missing.all():
        raise DataError(f"{path}: no word has a time; cannot interpolate. Restore the file.")
    known = np.flatnonzero(~missing)
    dur = float(np.median(end[known] - start[known]))
    i, n = 0, len(start)
    while i < n:
        if not missing[i]:
            i += 1
            continue
        j = i
        while j < n and missing[j]:
            j += 1
        k = j - i
        if i == 0:
            hi = start[j]
            lo = max(0.0, hi - k * dur)
        elif j == n:
            lo = end[i - 1]
            hi = lo + k * dur
        else:
            lo, hi = end[i - 1], start[j]
            if hi < lo:  # overlapping neighbours: share [start of previous, start of next]
                step = max(start[j] - start[i - 1], 0.0) / (k + 1)
                start[i:j] = start[i - 1] + step * np.arange(1, k + 1)
                end[i:j] = start[i:j] + step
                i = j
                continue
        slot = (hi - lo) / k
        start[i:j] = lo + slot * np.arange(k)
        end[i:j] = lo + slot * np.arange(1, k + 1)
        i = j
    out = df.copy()
    out["start"], out["end"], out["interpolated"] = start, end, missing
    return out


def fix_first_words(table, story) -> pd.DataFrame:
    """Move the known misplaced first words of a story (:data:`FIRST_WORD_FIXES`).

    A listed row is moved only when its written word is the expected one and it still starts
    before the true onset (so an already corrected file is left alone); its duration is kept
    but its end is clipped to the next word's start.

    Parameters
    ----------
    table : DataFrame, shape (n_words, >= 3)
        Alignment with columns ``word``, ``start``, ``end`` (raw or interpolated), rows in file
        order with the default RangeIndex.
    story : str
        Story name (``"merlin"``, ...); other stories are returned unchanged.

    Returns
    -------
    DataFrame
        A copy with the fixed ``start``/``end``.
    """
    table = table.copy()
    fixes = FIRST_WORD_FIXES.get(story, [])
    start = table["start"].to_numpy(float).copy()
    end = table["end"].to_numpy(float).copy()
    for row, word, onset in fixes:
        if row >= len(table) or table["word"].iloc[row] != word:
            warnings.warn(f"{story}: first-word fix skipped, row {row} is not {word!r}.",
                          stacklevel=2)
            continue
        if not (start[row] < onset):  # NaN or already right
            if np.isnan(start[row]):
                start[row] = onset
                end[row] = onset
            continue
        dur = end[row] - start[row]
        start[row], end[row] = onset, onset + dur
    for row, _word, _onset in fixes:  # clip ends once all fixed rows are placed
        if row + 1 < len(table) and not np.isnan(start[row + 1]):
            end[row] = min(end[row], max(start[row + 1], start[row]))
    table["start"], table["end"] = start, end
    return table


def read_alignment(path, story=None) -> pd.DataFrame:
    """Read a Gentle ``align.csv`` (no header) and fill the words it could not align.

    Parameters
    ----------
    path : str or Path
        ``stimuli/gentle/<story>/align.csv``: rows ``word, dictionary word or <unk>, start,
        end`` (file time, s); words not found in the audio have empty times.
    story : str, optional
        When given, :func:`fix_first_words` is applied before the interpolation.

    Returns
    -------
    DataFrame, shape (n_words, 5)
        ``word`` (as written), ``dict_word`` (``""`` for unaligned words), ``start``, ``end``
        (float, no NaN), ``interpolated`` (bool: the time was missing and filled). A block of
        k missing words between two aligned words shares the gap (end of the previous, start
        of the next) in k equal slots; at the edges the slots are the median word duration.

    Raises
    ------
    DataError
        Missing file, a row without 4 columns, non-numeric or half-empty times, no timed word;
        the message names the file and line.
    """
    df = _read_alignment_raw(path)
    if story is not None:
        df = fix_first_words(df, story)
    return _interpolate(df, path)


def read_transcript(path):
    """Read a punctuated transcript.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    str or None
        The text (UTF-8, BOM removed, line endings normalised to ``\\n``), or None when the
        file does not exist.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}). Re-save it as UTF-8.") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _fold(s):
    """Lower-case alphanumeric characters of ``s`` (accents removed)."""
    out = []
    for ch in s:
        for c in unicodedata.normalize("NFKD", ch):
            if c.isalnum():
                out.append(c.lower())
    return "".join(out)


def _word_spans(words, text, text_path, align_path, max_skip=40):
    """Sequential, case-insensitive search of each word in ``text``, ignoring non-alnum.

    Returns char_start, char_end arrays (n_words,). A word must begin at the next alphanumeric
    character after the previous word, or within ``max_skip`` alphanumeric characters at the
    start of an alphanumeric run (tolerates stray text); otherwise DataError.
    """
    chars, index = [], []
    for i, ch in enumerate(text):
        for c in _fold(ch):
            chars.append(c)
            index.append(i)
    folded = "".join(chars)
    n = len(words)
    cstart = np.zeros(n, dtype=np.int64)
    cend = np.zeros(n, dtype=np.int64)
    p = 0
    for w, word in enumerate(words):
        key = _fold(word)
        if not key:  # no letter or digit: empty span at the current position
            pos = index[p] if p < len(index) else len(text)
            cstart[w] = cend[w] = pos
            continue
        found = -1
        if folded.startswith(key, p):
            found = p
        else:
            q = folded.find(key, p, p + max_skip + len(key))
            while q >= 0:
                ti = index[q]
                if ti == 0 or not text[ti - 1].isalnum():
                    found = q
                    break
                q = folded.find(key, q + 1, p + max_skip + len(key))
        if found < 0:
            ctx = text[index[p]:index[p] + 60] if p < len(index) else "<end of text>"
            raise DataError(
                f"misaligned transcript: word {w} ({word!r}) of {align_path} not found in "
                f"{text_path} near {ctx!r}. The transcript must hold the aligned words in "
                "order; fix it or remove it to use the aligned words.")
        cstart[w] = index[found]
        cend[w] = index[found + len(key) - 1] + 1
        p = found + len(key)
    # extend the last word of each whitespace chunk over the chunk's trailing punctuation
    for w in range(n):
        e = int(cend[w])
        chunk_end = e
        while chunk_end < len(text) and not text[chunk_end].isspace():
            chunk_end += 1
        if w + 1 == n or cstart[w + 1] >= chunk_end:
            cend[w] = chunk_end
    return cstart, cend


def story_words(root, story):
    """Word table of a story and the text the language model reads.

    Parameters
    ----------
    root : str or Path
        Dataset root.
    story : str
        A folder of ``stimuli/gentle`` (``"pieman"``, ``"milkywayvodka"``, ...), or
        ``"slumlord"`` / ``"reach"`` (the words of ``slumlordreach`` before / from
        :data:`SLUMLORDREACH_SPLIT` s, each with its own text; times stay in the file time of
        the slumlordreach audio).

    Returns
    -------
    words : DataFrame, shape (n_words, 6)
        ``word`` (as written in align.csv), ``start``, ``end`` (file time, s; misplaced first
        words fixed, missing times interpolated), ``interpolated`` (bool), ``char_start``,
        ``char_end`` (int: ``text[char_start:char_end]`` is the word, followed by the trailing
        punctuation of its whitespace chunk when it is the chunk's last aligned word, e.g.
        ``"hard-boiled,"`` -> ``"hard"``, ``"boiled,"``).
    text : str
        ``stimuli/gentle/<story>/transcript.txt`` when present (punctuation and case
        restored), else the words joined by single spaces.

    Raises
    ------
    DataError
        Missing/malformed align.csv, or a transcript that does not hold the aligned words in
        order ("misaligned transcript", naming both files and the word index).
    """
    root = Path(root)
    if story in _PART_PARENT:
        parent, part = _PART_PARENT[story]
        words, text = story_words(root, parent)
        second = np.flatnonzero(words["start"].to_numpy() >= SLUMLORDREACH_SPLIT)
        cut_word = int(second[0]) if len(second) else len(words)
        if part == 0:
            sub = words.iloc[:cut_word].reset_index(drop=True)
            cut = int(sub["char_end"].iloc[-1]) if len(sub) else 0
            return sub, text[:cut]
        sub = words.iloc[cut_word:].reset_index(drop=True)
        cut = int(words["char_end"].iloc[cut_word - 1]) if cut_word > 0 else 0
        while cut < len(text) and text[cut].isspace():
            cut += 1
        sub["char_start"] -= cut
        sub["char_end"] -= cut
        return sub, text[cut:]

    folder = root / "stimuli" / "gentle" / story
    align_path = folder / "align.csv"
    _check_content(align_path)
    if not align_path.exists():
        raise DataError(f"{align_path}: file not found (story {story!r}). Check the story "
                        "name or get stimuli/gentle from the Narratives release.")
    table = read_alignment(align_path, story=story)
    transcript_path = folder / "transcript.txt"
    text = read_transcript(transcript_path)
    if text is None:
        text = " ".join(table["word"])
        lengths = table["word"].str.len().to_numpy()
        cstart = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
        cend = cstart + lengths
    else:
        cstart, cend = _word_spans(list(table["word"]), text, transcript_path, align_path)
    out = table[["word", "start", "end", "interpolated"]].copy()
    out["char_start"], out["char_end"] = cstart, cend
    return out, text


def check_words_in_run(words, audio_onset, tr, n_trs, where="", max_dropped=0.05):
    """Check that a story's words fall inside its run; alignment longer than the run.

    Parameters
    ----------
    words : DataFrame
        :func:`story_words` table (``start`` in file time, s).
    audio_onset : float
        Onset of the audio in the run (s, first row of events.tsv).
    tr : float
        Repetition time (s).
    n_trs : int
        TRs of the run (after the crop to the task's common length).
    where : str
        Run name for the messages (``"sub-001_task-pieman"``).
    max_dropped : float
        Largest fraction of words allowed to start after the end of the run.

    Returns
    -------
    int
        Number of words starting at or after ``n_trs * tr`` (scan time); they are dropped by
        the TR assignment. A warning is issued when there are some.

    Raises
    ------
    DataError
        More than ``max_dropped`` of the words start after the end of the run: the alignment
        does not belong to this run (wrong story or stim_file) or the BOLD run is truncated.
    """
    if n_trs is None or int(n_trs) <= 0:
        return 0
    end = int(n_trs) * float(tr)
    scan = words["start"].to_numpy(float) + float(audio_onset)
    late = int(np.sum(scan >= end))
    if late == 0:
        return 0
    n = len(scan)
    msg = (f"{where}: {late} of {n} words start after the end of the run ({int(n_trs)} TRs x "
           f"{float(tr):g} s = {end:g} s; last word at {scan.max():.1f} s scan time)")
    if late > max_dropped * n:
        raise DataError(msg + ": the alignment is longer than the run. Check the run's "
                        "stim_file / story in the run table, or re-download a truncated BOLD "
                        "file (its GIfTI has too few TRs).")
    warnings.warn(msg + "; they are dropped.", stacklevel=2)
    return late


# --------------------------------------------------------------------------------------------
# BOLD
# --------------------------------------------------------------------------------------------

def _load_gifti(path):
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: BOLD file not found. Download the afni-nosmooth derivatives "
                        "of this run, or exclude the run.")
    try:
        img = nib.load(str(path))
        darrays = img.darrays
        if not darrays:
            raise ValueError("no data array")
        if len(darrays) == 1 and np.asarray(darrays[0].data).ndim == 2:
            data = np.asarray(darrays[0].data, dtype=np.float32).T  # (n_vertices, n_t)
        else:
            data = np.stack([np.asarray(d.data, dtype=np.float32).ravel() for d in darrays])
    except DataError:
        raise
    except Exception as exc:  # ExpatError, ValueError, OSError, zlib.error, ...
        raise DataError(f"{path}: cannot be read as a GIfTI time series ({type(exc).__name__}: "
                        f"{exc}). Delete it and download it again.") from exc
    return data


def load_bold(path_L, path_R, n_trs=None, space=None, tr=None) -> np.ndarray:
    """Load a run's BOLD surface time series, left then right hemisphere.

    Parameters
    ----------
    path_L, path_R : str or Path
        ``*_hemi-L_desc-clean.func.gii`` and ``*_hemi-R_...`` (one data array per TR).
    n_trs : int, optional
        Keep the first ``n_trs`` TRs (crop to a common length).
    space : {"fsaverage5", "fsaverage6"}, optional
        When given, each hemisphere must have :data:`VERTICES_PER_HEMI` ``[space]`` vertices.
    tr : float, optional
        Repetition time from the sidecar; when given and a file declares a ``TimeStep``
        (:func:`gifti_time_step`), both must agree within 0.5%.

    Returns
    -------
    ndarray, shape (n_trs, n_vertices_L + n_vertices_R), float32
        NaN (medial wall) kept.

    Raises
    ------
    DataError
        A file missing, not fetched (dangling DataLad link) or not a readable GIfTI, L and R
        with different numbers of TRs, fewer TRs than ``n_trs``, a vertex count other than
        the space's, or a TimeStep disagreeing with ``tr`` (the message names the file).
    """
    if space is not None and space not in VERTICES_PER_HEMI:
        raise ConfigError(f"dataset.space = {space!r}: expected one of "
                          f"{sorted(VERTICES_PER_HEMI)}.")
    for path in (path_L, path_R):
        _check_content(path)
    left, right = _load_gifti(path_L), _load_gifti(path_R)
    if space is not None:
        want = VERTICES_PER_HEMI[space]
        for path, data in ((path_L, left), (path_R, right)):
            if data.shape[1] != want:
                raise DataError(f"{path}: {data.shape[1]} vertices per TR, but {space} has "
                                f"{want} per hemisphere. The file is not on {space}: set "
                                "dataset.space to the surface of the files, or re-download "
                                "it.")
    if tr is not None:
        for path in (path_L, path_R):
            _check_time_step(path, float(tr), "the sidecar")
    if left.shape[0] != right.shape[0]:
        raise DataError(f"{path_L} has {left.shape[0]} TRs but {path_R} has {right.shape[0]}; "
                        "the hemispheres of a run must match. Download both again.")
    if n_trs is not None:
        n_trs = int(n_trs)
        if n_trs < 0:
            raise ConfigError(f"n_trs: must be >= 0, got {n_trs}.")
        if left.shape[0] < n_trs:
            raise DataError(f"{path_L}: has {left.shape[0]} TRs, fewer than the {n_trs} "
                            "requested (crop length of the task). Exclude the run or lower "
                            "the crop length.")
        left, right = left[:n_trs], right[:n_trs]
    return np.ascontiguousarray(np.concatenate([left, right], axis=1), dtype=np.float32)


#: Seconds a run may last beyond its story's last word before its TR is suspected.
MAX_TAIL_S = 120.0


def check_runs_cover_their_stories(root, kept):
    """Each kept run's length (n_trs x TR) against its story's word timing, before any fit.

    A run shorter than its words (a truncated GIfTI, a wrong stim_file or onset) is refused by
    :func:`check_words_in_run`; a run lasting more than
    :data:`MAX_TAIL_S` beyond its last word (a wrong ``RepetitionTime`` in its sidecar: the
    words would fall on the wrong TRs) is logged as a warning naming its sidecar.

    Parameters
    ----------
    root : path
        Dataset root (the stories' align.csv).
    kept : DataFrame
        Kept rows of the run table (``subject, task, run, story, audio_onset, tr, n_trs,
        basename``).
    """
    words = {}
    for row in kept.itertuples():
        if int(row.n_trs) <= 0 or not np.isfinite(float(row.tr)):
            continue
        if row.story not in words:
            align = Path(root) / "stimuli" / "gentle" / story_folder(row.story) / \
                "align.csv"
            # (a workflow run always has it: an input of the rule; the fits check again)
            words[row.story] = story_words(root, row.story)[0] if align.exists() \
                else None
        w = words[row.story]
        if w is None:
            continue
        check_words_in_run(w, float(row.audio_onset), float(row.tr), int(row.n_trs),
                                      where=f"{row.basename} ({row.story})")
        last = float(np.nanmax(w["start"].to_numpy(float))) + float(row.audio_onset)
        length = int(row.n_trs) * float(row.tr)
        if length > last + MAX_TAIL_S:
            log.warning("%s/func/%s_bold.json: %d TRs x %g s = %.0f s, but the story's last "
                        "word is at %.0f s scan time: check its RepetitionTime", row.subject,
                        row.basename, int(row.n_trs), float(row.tr), length, last)
