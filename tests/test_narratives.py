"""Tests of brainpred.narratives: on the real Narratives metadata in ../shared/narratives (known
answers from the files) and on tiny datasets written to tmp_path by the _make_* factories."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainpred import narratives as nar
from brainpred.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "narratives"
needs_shared = pytest.mark.skipif(
    not (SHARED / "participants.tsv").exists(),
    reason=f"real Narratives metadata not found at {SHARED} (clone shared/ beside the repo)")


# --------------------------------------------------------------------------------------------
# factories
# --------------------------------------------------------------------------------------------

def _write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _make_gifti(path, data, n_arrays_attr=True):
    """Write a func GIfTI with one data array per row of ``data`` (n_t, n_vertices)."""
    img = nib.gifti.GiftiImage(darrays=[
        nib.gifti.GiftiDataArray(np.asarray(row, dtype=np.float32),
                                 intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32")
        for row in data])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    if not n_arrays_attr:
        raw = path.read_bytes()
        raw2 = re.sub(rb'\s*NumberOfDataArrays="\d+"', b"", raw)
        assert raw2 != raw
        path.write_bytes(raw2)
    return path


def _make_run(root, subject, task, run="", onset=0.0, stim=None, tr=1.5, events=True,
              sidecar=True, n_trs=None, n_vertices=3):
    run_part = f"_run-{run}" if run else ""
    base = Path(root) / subject / "func" / f"{subject}_task-{task}{run_part}"
    stim = stim if stim is not None else f"{task}_audio.wav"
    if events:
        _write(f"{base}_events.tsv", "onset\tduration\ttrial_type\tstim_file\n"
               f"{onset}\t10.0\tmusic\t{stim}\n{onset + 12}\t100.0\tstory\t{stim}\n")
    if sidecar:
        _write(f"{base}_bold.json", json.dumps({"RepetitionTime": tr, "EchoTime": 0.028}))
    if n_trs is not None:
        for hemi in "LR":
            rel = nar.bold_rel(subject, task, run, "fsaverage6", hemi)
            _make_gifti(Path(root) / rel, np.zeros((n_trs, n_vertices)))


def _make_dataset(tmp_path, participants, runs, exclude=None):
    """Tiny Narratives layout.

    participants: {subject: [(task, condition), ...]}; runs: list of kwargs of _make_run;
    exclude: scan_exclude dict (None: no file).
    """
    root = Path(tmp_path) / "ds"
    lines = ["participant_id\tage\tsex\ttask\tcondition\tcomprehension"]
    for sub, pairs in participants.items():
        tasks = ",".join(t for t, _ in pairs)
        conds = ",".join(c or "n/a" for _, c in pairs)
        lines.append(f"{sub}\t{','.join(['20'] * len(pairs))}\tF\t{tasks}\t{conds}\t"
                     f"{','.join(['n/a'] * len(pairs))}")
    _write(root / "participants.tsv", "\n".join(lines) + "\n")
    if exclude is not None:
        _write(root / "code" / "scan_exclude.json", json.dumps(exclude))
    for kw in runs:
        _make_run(root, **kw)
    return root


def _make_story(root, story, rows, transcript=None):
    """rows: list of (word, dict_word, start, end) with None for missing times."""
    folder = Path(root) / "stimuli" / "gentle" / story
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "align.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        for word, dword, s, e in rows:
            w.writerow([word, dword, "" if s is None else s, "" if e is None else e])
    if transcript is not None:
        _write(folder / "transcript.txt", transcript)
    return folder


def _spans(words, text):
    return [text[s:e] for s, e in zip(words.char_start, words.char_end)]


# --------------------------------------------------------------------------------------------
# real files: participants, scan_exclude, run table
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_table():
    if not (SHARED / "participants.tsv").exists():
        pytest.skip(f"real Narratives metadata not found at {SHARED}")
    return nar.build_run_table(SHARED)


@needs_shared
@pytest.mark.shared
def test_real_participants_parallel_lists():
    p = nar.read_participants(SHARED)
    assert p.subject.nunique() == 345
    assert len(p) == 769  # sum of the task list lengths
    assert list(p[p.subject == "sub-001"].task) == ["pieman", "tunnel"]
    s16 = p[p.subject == "sub-016"].reset_index(drop=True)
    assert np.isnan(s16.comprehension[0]) and s16.comprehension[1] == pytest.approx(0.569)
    mw = p[p.task == "milkyway"].condition.value_counts()
    assert mw.to_dict() == {"vodka": 18, "original": 18, "synonyms": 17}
    assert (p[p.task == "pieman"].condition == "").all()


@needs_shared
@pytest.mark.shared
def test_real_scan_exclude_lists_27_runs():
    ex = nar.read_scan_exclude(SHARED)
    assert sum(len(v) for subs in ex.values() for v in subs.values()) == 27
    assert ex["pieman"]["sub-001"] == ["sub-001_task-pieman_run-1", "sub-001_task-pieman_run-2"]


@needs_shared
@pytest.mark.shared
def test_real_run_table_counts(real_table):
    t = real_table
    assert list(t.columns) == nar.RUN_TABLE_COLUMNS
    assert len(t) == 876  # 873 func runs + 3 participants.tsv entries without files
    assert t.reason.value_counts().to_dict() == {
        "": 667, "schema": 124, "scrambled": 44, "scan_exclude": 27, "duplicate_run": 11,
        "no_files": 3}
    assert (t.kept == (t.reason == "")).all()
    kept = t[t.kept]
    # paper: 304 subjects, 622 subject-story pairs (see the module report for the difference)
    assert kept.subject.nunique() == 321
    assert len(kept[["subject", "story"]].drop_duplicates()) == 667
    assert kept.story.nunique() == 18  # the paper's 18 audio tasks
    assert not kept.duplicated(["subject", "task"]).any()
    assert (t.n_trs == -1).all()  # no GIfTI in shared
    assert (nar.crop_lengths(t) == -1).all()


@needs_shared
@pytest.mark.shared
def test_real_pieman_runs(real_table):
    t = real_table
    pie = t[t.task == "pieman"]
    assert len(pie) == 96 and pie.kept.sum() == 75
    s1 = pie[pie.subject == "sub-001"]  # both runs listed in scan_exclude.json
    assert list(s1.run) == ["1", "2"] and list(s1.reason) == ["scan_exclude"] * 2
    s2 = pie[pie.subject == "sub-002"].set_index("run")
    assert s2.loc["2", "kept"] and s2.loc["1", "reason"] == "duplicate_run"
    assert s2.loc["2", "bold_L"] == ("derivatives/afni-nosmooth/sub-002/func/sub-002_task-pieman"
                                     "_run-2_space-fsaverage6_hemi-L_desc-clean.func.gii")
    s13 = pie[pie.subject == "sub-013"].set_index("run")  # run-2 excluded -> run-1 kept
    assert s13.loc["1", "kept"] and s13.loc["2", "reason"] == "scan_exclude"
    first = nar.build_run_table(SHARED, tasks=["pieman"], subjects=["sub-002"],
                                pieman_run="first")
    assert list(first.kept) == [True, False] and list(first.run) == ["1", "2"]
    both = nar.build_run_table(SHARED, tasks=["pieman"], pieman_run="all")
    assert both.kept.sum() == 86


@needs_shared
@pytest.mark.shared
def test_real_excluded_runs_match_scan_exclude(real_table):
    t = real_table
    ex = t[t.reason == "scan_exclude"]
    assert len(ex) == 27
    assert {"sub-053", "sub-065"} == set(ex[ex.task == "lucy"].subject)
    assert t[(t.subject == "sub-139") & (t.task == "slumlordreach")].reason.item() == \
        "scan_exclude"


@needs_shared
@pytest.mark.shared
def test_real_stories_onsets_and_tr(real_table):
    t = real_table
    mw = t[t.task == "milkyway"].set_index("subject")
    assert mw.loc["sub-105", "story"] == "milkywayoriginal"
    assert mw.loc["sub-123", "story"] == "milkywaysynonyms"
    assert mw.loc["sub-123", "tr"] == 1.52 and mw.loc["sub-105", "tr"] == 1.5
    assert mw.loc["sub-038", "story"] == "milkywayvodka" and mw.loc["sub-038", "reason"] == \
        "scan_exclude"
    assert t[t.kept & (t.task == "milkyway")].story.value_counts().to_dict() == {
        "milkywayoriginal": 17, "milkywayvodka": 17, "milkywaysynonyms": 16}
    syn = t[t.story == "milkywaysynonyms"]
    assert (syn.tr == 1.52).all() and (t[t.story != "milkywaysynonyms"].tr.dropna() == 1.5).all()
    onsets = t.dropna(subset=["audio_onset"]).groupby("task").audio_onset.unique()
    assert {k: list(v) for k, v in onsets.items() if k in
            ("pieman", "tunnel", "lucy", "merlin", "bronx", "schema")} == {
        "pieman": [0.0], "tunnel": [3.0], "lucy": [3.0], "merlin": [4.5], "bronx": [12.0],
        "schema": [5.0]}
    # story names are the gentle folders
    gentle = {p.name for p in (SHARED / "stimuli" / "gentle").iterdir()}
    assert set(t[t.kept].story) <= gentle
    sch = t[t.task == "schema"]
    assert (sch.reason == "schema").all() and "friends,bigbang" in set(sch.story)
    scr = t[t.task.isin(nar.SCRAMBLED_TASKS)]
    assert len(scr) == 47 and (scr.reason == "scrambled").sum() == 44
    kept_scr = nar.build_run_table(SHARED, keep_scrambled=True)
    assert kept_scr.kept.sum() == 667 + 44


@needs_shared
@pytest.mark.shared
def test_real_no_files_rows(real_table):
    nf = real_table[real_table.reason == "no_files"]
    assert sorted(zip(nf.subject, nf.task)) == [("sub-278", "black"), ("sub-278", "forgot"),
                                               ("sub-280", "piemanpni")]
    assert (nf.n_trs == -1).all() and nf.audio_onset.isna().all() and not nf.kept.any()


@needs_shared
@pytest.mark.shared
def test_real_filters():
    t = nar.build_run_table(SHARED, tasks=["milkywayvodka"])
    assert len(t) == 18 and set(t.story) == {"milkywayvodka"}
    t = nar.build_run_table(SHARED, subjects=["sub-001"])
    assert list(zip(t.task, t.run, t.kept)) == [("pieman", "1", False), ("pieman", "2", False),
                                                ("tunnel", "", True)]
    t = nar.build_run_table(SHARED, tasks="tunnel", space="fsaverage5")
    assert t.bold_R.str.endswith("_task-tunnel_space-fsaverage5_hemi-R_desc-clean.func.gii").all()
    with pytest.raises(ConfigError, match="tasks"):
        nar.build_run_table(SHARED, tasks=["nosuchtask"])
    with pytest.raises(ConfigError, match="subjects"):
        nar.build_run_table(SHARED, subjects=["sub-999"])


# --------------------------------------------------------------------------------------------
# real files: alignments and word tables
# --------------------------------------------------------------------------------------------

@needs_shared
@pytest.mark.shared
def test_real_alignment_interpolation_merlin():
    path = SHARED / "stimuli" / "gentle" / "merlin" / "align.csv"
    a = nar.read_alignment(path)
    assert len(a) == 2245 and a.interpolated.sum() == 111
    assert not a[["start", "end"]].isna().any().any()
    assert list(a.columns) == ["word", "dict_word", "start", "end", "interpolated"]
    # rows 19-20 ("see", "this") missing between "you" (end 37.250001) and "kid" (37.92)
    assert list(a.word[19:21]) == ["see", "this"] and a.interpolated[19:21].all()
    np.testing.assert_allclose(a.start[19:21], [37.250001, 37.5850005], atol=1e-6)
    np.testing.assert_allclose(a.end[19:21], [37.5850005, 37.92], atol=1e-6)
    # row 265 "in" between overlapping "magic" (126.17-126.89) and "the" (126.609999)
    assert a.word[265] == "in" and a.interpolated[265]
    assert a.start[265] == pytest.approx((126.17 + 126.609999) / 2)
    assert a.start[264] <= a.start[265] <= a.start[266]
    # without a story, the misplaced first words are untouched
    assert list(a.start[:2]) == [0.34, 3.75]


@needs_shared
@pytest.mark.shared
def test_real_all_alignments_clean():
    for folder in sorted((SHARED / "stimuli" / "gentle").iterdir()):
        a = nar.read_alignment(folder / "align.csv", story=folder.name)
        n_empty = sum(1 for row in csv.reader(open(folder / "align.csv", encoding="utf-8"))
                      if row[2] == "")
        assert a.interpolated.sum() == n_empty, folder.name
        assert np.all(np.diff(a.start) >= 0), folder.name
        assert np.all(a.end >= a.start) and a.start.min() >= 0, folder.name
    # sherlock ends with unaligned words: extrapolated after the last aligned word
    s = nar.read_alignment(SHARED / "stimuli" / "gentle" / "sherlock" / "align.csv")
    assert s.interpolated.iloc[-1] and s.start.iloc[-1] >= s.end[~s.interpolated].iloc[-1]


@needs_shared
@pytest.mark.shared
@pytest.mark.parametrize("story,starts,ends,next_start", [
    ("merlin", [29.0, 29.15], [29.15, 29.39], 29.39),
    ("prettymouth", [21.0], [21.15], 21.15),
    ("notthefallintact", [25.8], [25.82], 25.91),
    ("milkywaysynonyms", [21.5], [21.7], 21.7),
])
def test_real_first_word_fixes(story, starts, ends, next_start):
    w, _ = nar.story_words(SHARED, story)
    k = len(starts)
    np.testing.assert_allclose(w.start[:k], starts, atol=1e-6)
    np.testing.assert_allclose(w.end[:k], ends, atol=1e-6)
    assert w.start[k] == pytest.approx(next_start, abs=1e-5)
    assert [r[1] for r in nar.FIRST_WORD_FIXES[story]] == list(w.word[:k])
    raw = nar.read_alignment(SHARED / "stimuli" / "gentle" / story / "align.csv")
    assert (raw.start[:k] < np.array(starts) - 15).all()  # the original was in the intro music
    # idempotent: fixing an already fixed table changes nothing
    again = nar.fix_first_words(w, story)
    np.testing.assert_array_equal(again.start, w.start)


@needs_shared
@pytest.mark.shared
def test_real_story_words_without_transcript():
    w, text = nar.story_words(SHARED, "notthefallintact")
    assert list(w.columns) == ["word", "start", "end", "interpolated", "char_start", "char_end"]
    assert text.startswith("So I’m um five thousand feet")
    assert _spans(w, text) == list(w.word)  # contraction with a curly apostrophe kept
    w, text = nar.story_words(SHARED, "forgot")
    assert w.word[965] == "1930s" and text[w.char_start[965]:w.char_end[965]] == "1930s"
    assert text == " ".join(w.word)


@needs_shared
@pytest.mark.shared
def test_real_transcript_restores_punctuation(tmp_path):
    """Real notthefallintact alignment + a punctuated transcript (straight apostrophe, case,
    hyphen, a number with a sign) written here; the alignment stays the real file."""
    root = tmp_path / "ds"
    folder = root / "stimuli" / "gentle" / "notthefallintact"
    folder.mkdir(parents=True)
    shutil.copy(SHARED / "stimuli" / "gentle" / "notthefallintact" / "align.csv", folder)
    words = nar.read_alignment(folder / "align.csv").word.tolist()
    assert words[:8] == ["So", "I’m", "um", "five", "thousand", "feet", "above", "Albany"]
    head = "SO, I'm... um -- five-thousand feet above Albany!"
    _write(folder / "transcript.txt", head + " " + " ".join(words[8:]) + "\n")
    w, text = nar.story_words(root, "notthefallintact")
    assert _spans(w, text)[:8] == ["SO,", "I'm...", "um", "five", "thousand", "feet", "above",
                                   "Albany!"]
    assert w.start[0] == pytest.approx(25.8)  # fix applied in story_words
    assert w.char_end.iloc[-1] == len(text.rstrip("\n"))


@needs_shared
@pytest.mark.shared
def test_real_slumlordreach_split():
    full, text = nar.story_words(SHARED, "slumlordreach")
    a, ta = nar.story_words(SHARED, "slumlord")
    b, tb = nar.story_words(SHARED, "reach")
    assert nar.story_parts("slumlordreach") == ("slumlord", "reach")
    assert len(full) == 5344 and len(a) == 2715 and len(b) == 2629
    assert a.start.max() < nar.SLUMLORDREACH_SPLIT <= b.start.min()
    assert (a.word.iloc[-1], b.word.iloc[0]) == ("life", "Well")
    assert b.start.iloc[0] == pytest.approx(965.78)  # file time of the slumlordreach audio
    assert ta.endswith("saved my life") and tb.startswith("Well when I was about thirteen")
    assert _spans(b, tb) == list(b.word) and _spans(a, ta) == list(a.word)


# --------------------------------------------------------------------------------------------
# tiny datasets: run table
# --------------------------------------------------------------------------------------------

def _tiny(tmp_path, with_exclude=True):
    participants = {
        "sub-001": [("pieman", ""), ("milkyway", "vodka"), ("tunnel", "")],
        "sub-002": [("pieman", ""), ("notthefalllongscram", "intact-longscram"),
                    ("schema", ""), ("black", "")],
        "sub-003": [("milkyway", "synonyms"), ("pieman", "")],
    }
    runs = [
        dict(subject="sub-001", task="pieman", run="1", n_trs=5),
        dict(subject="sub-001", task="pieman", run="2", n_trs=4),
        dict(subject="sub-001", task="milkyway", stim="milkywayvodka_audio.wav", onset=0.0),
        dict(subject="sub-001", task="tunnel", onset=3.0, sidecar=False),
        dict(subject="sub-002", task="pieman", run="1"),
        dict(subject="sub-002", task="pieman", run="2"),
        dict(subject="sub-002", task="notthefalllongscram", onset=4.5),
        dict(subject="sub-002", task="schema", onset=5.0, stim="friends_audio.wav"),
        dict(subject="sub-003", task="milkyway", stim="n/a", tr=1.52, n_trs=7),
        dict(subject="sub-003", task="pieman", events=False),
    ]
    exclude = {"pieman": {"sub-002": ["sub-002_task-pieman_run-2"]}, "tunnel": {}}
    return _make_dataset(tmp_path, participants, runs, exclude if with_exclude else None)


def test_run_table_rules(tmp_path):
    root = _tiny(tmp_path)
    t = nar.build_run_table(root)
    assert list(t.columns) == nar.RUN_TABLE_COLUMNS
    got = {(r.subject, r.task, r.run): (r.story, r.kept, r.reason) for r in t.itertuples()}
    assert got == {
        ("sub-001", "pieman", "1"): ("pieman", False, "duplicate_run"),
        ("sub-001", "pieman", "2"): ("pieman", True, ""),
        ("sub-001", "milkyway", ""): ("milkywayvodka", True, ""),
        ("sub-001", "tunnel", ""): ("tunnel", False, "no_sidecar"),
        ("sub-002", "pieman", "1"): ("pieman", True, ""),  # run-2 excluded -> run-1 kept
        ("sub-002", "pieman", "2"): ("pieman", False, "scan_exclude"),
        ("sub-002", "notthefalllongscram", ""): ("notthefalllongscram", False, "scrambled"),
        ("sub-002", "schema", ""): ("friends", False, "schema"),
        ("sub-002", "black", ""): ("black", False, "no_files"),
        ("sub-003", "milkyway", ""): ("milkywaysynonyms", True, ""),  # from the condition
        ("sub-003", "pieman", ""): ("pieman", False, "no_events"),
    }
    r = t.set_index(["subject", "task", "run"])
    assert r.loc[("sub-001", "pieman", "1"), "n_trs"] == 5
    assert r.loc[("sub-001", "pieman", "2"), "n_trs"] == 4
    assert r.loc[("sub-003", "milkyway", ""), "n_trs"] == 7
    assert r.loc[("sub-003", "milkyway", ""), "tr"] == 1.52
    assert r.loc[("sub-002", "pieman", "1"), "n_trs"] == -1
    assert r.loc[("sub-002", "notthefalllongscram", ""), "audio_onset"] == 4.5
    assert r.loc[("sub-001", "milkyway", ""), "condition"] == "vodka"
    assert r.loc[("sub-001", "milkyway", ""), "stim_file"] == "milkywayvodka_audio.wav"
    assert r.loc[("sub-002", "black", ""), "bold_L"] == ""
    assert t.n_trs.dtype.kind == "i" and t.kept.dtype == bool
    for (sub, task, run), row in r.iterrows():
        if row.reason != "no_files":
            assert (root / row.bold_L).name == (
                f"{sub}_task-{task}{'_run-' + run if run else ''}_space-fsaverage6_hemi-L"
                "_desc-clean.func.gii")
    assert nar.crop_lengths(t).to_dict() == {"milkyway": 7, "pieman": 4}  # -1 ignored


def test_run_table_options(tmp_path):
    root = _tiny(tmp_path)
    t = nar.build_run_table(root, keep_scrambled=True, keep_schema=True, pieman_run="first")
    r = t.set_index(["subject", "task", "run"])
    assert r.loc[("sub-002", "notthefalllongscram", ""), "kept"]
    assert r.loc[("sub-002", "schema", ""), "kept"]
    assert r.loc[("sub-001", "pieman", "1"), "kept"]
    assert r.loc[("sub-001", "pieman", "2"), "reason"] == "duplicate_run"
    t = nar.build_run_table(root, pieman_run="all")
    assert t[(t.subject == "sub-001") & (t.task == "pieman")].kept.tolist() == [True, True]
    assert nar.crop_lengths(t)["pieman"] == 4
    t = nar.build_run_table(root, scan_exclude={})  # nothing excluded -> run-2 kept
    r = t.set_index(["subject", "task", "run"])
    assert r.loc[("sub-002", "pieman", "1"), "reason"] == "duplicate_run"
    with pytest.raises(ConfigError, match="pieman_run"):
        nar.build_run_table(root, pieman_run="middle")
    t = nar.build_run_table(root, tasks=["milkywaysynonyms", "tunnel"], subjects="all")
    assert sorted(zip(t.subject, t.story)) == [("sub-001", "tunnel"),
                                               ("sub-003", "milkywaysynonyms")]


def test_run_table_without_scan_exclude_warns(tmp_path):
    root = _tiny(tmp_path, with_exclude=False)
    with pytest.warns(UserWarning, match="scan_exclude"):
        t = nar.build_run_table(root)
    assert "scan_exclude" not in set(t.reason)
    with pytest.raises(DataError, match="scan_exclude.json: file not found"):
        nar.read_scan_exclude(root)


def test_scan_exclude_errors(tmp_path):
    root = _tiny(tmp_path)
    _write(root / "code" / "scan_exclude.json", "{not json")
    with pytest.raises(DataError, match=r"scan_exclude\.json: invalid JSON"):
        nar.read_scan_exclude(root)
    _write(root / "code" / "scan_exclude.json", json.dumps({"pieman": ["sub-001"]}))
    with pytest.raises(DataError, match=r"scan_exclude\.json: expected"):
        nar.build_run_table(root)


def test_participants_errors_and_lists(tmp_path):
    root = _tiny(tmp_path)
    p = nar.read_participants(root)
    assert len(p) == 9 and list(p.columns) == ["subject", "task", "condition",
                                               "comprehension", "age", "sex"]
    assert p.set_index(["subject", "task"]).loc[("sub-003", "milkyway"), "condition"] == \
        "synonyms"
    text = (root / "participants.tsv").read_text().splitlines()
    text[2] = text[2].replace("n/a,n/a,n/a,n/a", "n/a,n/a")  # comprehension: 2 for 4 tasks
    _write(root / "participants.tsv", "\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"participants\.tsv, line 3: column 'comprehension'"):
        nar.read_participants(root)
    (root / "participants.tsv").unlink()
    with pytest.raises(DataError, match="participants.tsv: file not found"):
        nar.read_participants(root)


def test_bad_sidecar_and_events(tmp_path):
    root = _make_dataset(tmp_path, {"sub-001": [("pieman", "")]},
                         [dict(subject="sub-001", task="pieman")], exclude={})
    _write(root / "sub-001" / "func" / "sub-001_task-pieman_bold.json", "{}")
    with pytest.raises(DataError, match="sub-001_task-pieman_bold.json: 'RepetitionTime'"):
        nar.build_run_table(root)
    _write(root / "sub-001" / "func" / "sub-001_task-pieman_bold.json", '{"RepetitionTime": 2}')
    _write(root / "sub-001" / "func" / "sub-001_task-pieman_events.tsv", "duration\n3\n")
    with pytest.raises(DataError, match="sub-001_task-pieman_events.tsv: needs a column 'onset'"):
        nar.build_run_table(root)


# --------------------------------------------------------------------------------------------
# crop to a common length per task: independent of the subject selection (issue 15, item 6a)
# --------------------------------------------------------------------------------------------

def _stub_gifti(path, n_trs):
    """A GIfTI header only: build_run_table reads NumberOfDataArrays, never the data."""
    _write(path, f'<?xml version="1.0" encoding="UTF-8"?>\n<GIFTI Version="1.0" '
                 f'NumberOfDataArrays="{n_trs}">\n</GIFTI>\n')


def _cropped_n_trs(root, tmp_path, subjects, tasks="all", space="fsaverage6"):
    """n_trs of every kept run in the run table the workflow writes for this selection."""
    from brainpred.stages.dataset import make_run_table

    cfg = {"dataset": {"source": "local", "root": str(root), "subjects": subjects,
                       "tasks": tasks, "space": space, "keep_scrambled": False,
                       "keep_schema": False}}
    out = Path(tmp_path) / f"run_table_{len(list(tmp_path.glob('run_table_*')))}.tsv"
    make_run_table(root, cfg, out)
    t = pd.read_csv(out, sep="\t", dtype={"run": str}, keep_default_na=False)
    t = t[t["kept"].astype(str) == "True"]
    return {(r.subject, r.task, r.run): int(r.n_trs) for r in t.itertuples()}


def _crop_dataset(tmp_path):
    """pieman of 4 subjects with lengths 10, 8, 12 (sub-C has a shorter run-1 that
    scan_exclude excludes) and 11 (sub-D has a shorter run-1 dropped as duplicate_run)."""
    participants = {s: [("pieman", None)] for s in ("sub-A", "sub-B", "sub-C", "sub-D")}
    runs = [dict(subject="sub-A", task="pieman", n_trs=10),
            dict(subject="sub-B", task="pieman", n_trs=8),
            dict(subject="sub-C", task="pieman", run="1", n_trs=5),
            dict(subject="sub-C", task="pieman", run="2", n_trs=12),
            dict(subject="sub-D", task="pieman", run="1", n_trs=6),
            dict(subject="sub-D", task="pieman", run="2", n_trs=11)]
    return _make_dataset(tmp_path, participants, runs,
                         {"pieman": {"sub-C": ["sub-C_task-pieman_run-1"]}})


def test_crop_does_not_depend_on_the_subject_selection(tmp_path):
    root = _crop_dataset(tmp_path)
    # the file lengths stay in build_run_table's n_trs; only the crop is dataset-wide
    t = nar.build_run_table(root, subjects=["sub-A"])
    assert t.set_index("subject").loc["sub-A", "n_trs"] == 10
    assert nar.crop_lengths(t).to_dict() == {"pieman": 10}   # over the table given
    assert nar.task_crop_lengths(root).to_dict() == {"pieman": 8}  # excluded/duplicate skipped
    assert nar.task_crop_lengths(root, pieman_run="first").to_dict() == {"pieman": 6}
    assert nar.task_crop_lengths(root, tasks=["tunnel"]).empty
    a = ("sub-A", "pieman", "")
    got = [_cropped_n_trs(root, tmp_path, sel) for sel in
           (["sub-A"], ["sub-A", "sub-C"], ["sub-A", "sub-B"], "all")]
    assert [g[a] for g in got] == [8, 8, 8, 8]
    assert got[3][("sub-C", "pieman", "2")] == 8
    assert got[3][("sub-D", "pieman", "2")] == 8


def test_crop_with_other_subjects_not_fetched(tmp_path):
    """A partial DataLad clone: another subject's events, sidecar and BOLD are dangling
    links. The selected run table reads nothing of theirs; the crop skips their unknown
    length with a warning that says so."""
    root = _crop_dataset(tmp_path)
    for f in (root / "sub-B" / "func").iterdir():
        f.unlink()
        f.symlink_to(root / "annex" / f.name)   # dangling
    for hemi in "LR":
        p = root / nar.bold_rel("sub-B", "pieman", "", "fsaverage6", hemi)
        p.unlink()
        p.symlink_to(root / "annex" / p.name)
    t = nar.build_run_table(root, subjects=["sub-A"])
    assert t.kept.all()
    with pytest.warns(UserWarning, match=r"pieman \(3 of 4 kept runs known\)"):
        assert nar.task_crop_lengths(root).to_dict() == {"pieman": 10}
    with pytest.raises(DataError, match="not fetched"):
        nar.build_run_table(root, subjects=["sub-B"])


@needs_shared
@pytest.mark.shared
def test_real_crop_is_the_same_for_any_subject_selection(tmp_path):
    """The real metadata (participants, scan_exclude, every subject's events and sidecars)
    with stub GIfTI headers: each pieman and tunnel run gets its own length, the excluded and
    duplicate runs the shortest. A run's crop is the same whether the selection is one
    subject, two or all of them."""
    root = tmp_path / "narratives"
    root.mkdir()
    for item in SHARED.iterdir():
        if item.name.startswith("sub-") or item.name in ("participants.tsv", "code"):
            (root / item.name).symlink_to(item)
    full = nar.build_run_table(SHARED, tasks=["pieman", "tunnel"])
    lengths = {}
    for i, r in enumerate(full[full.reason != "no_files"].itertuples()):
        base = {"pieman": 300, "tunnel": 1040}[r.task]
        n = base + 1 + (i * 7) % 23 if r.kept else base - 50
        lengths[(r.subject, r.task, r.run)] = n
        for hemi in "LR":
            _stub_gifti(root / nar.bold_rel(r.subject, r.task, r.run, "fsaverage6", hemi), n)
    kept = full[full.kept]
    want = {t: min(lengths[(r.subject, r.task, r.run)] for r in g.itertuples())
            for t, g in kept.groupby("task")}
    assert nar.task_crop_lengths(root, tasks=["pieman", "tunnel"]).to_dict() == want
    # the subject with the longest kept pieman run, alone, then with another
    pie = kept[kept.task == "pieman"]
    a = max(pie.itertuples(), key=lambda r: lengths[(r.subject, r.task, r.run)])
    b = pie[pie.subject != a.subject].iloc[-1].subject
    key = (a.subject, "pieman", a.run)
    alone = _cropped_n_trs(root, tmp_path, [a.subject], tasks=["pieman"])
    pair = _cropped_n_trs(root, tmp_path, [a.subject, b], tasks=["pieman"])
    every = _cropped_n_trs(root, tmp_path, "all", tasks=["pieman", "tunnel"])
    assert alone[key] == pair[key] == every[key] == want["pieman"] < lengths[key]
    assert {n for (s, t, r), n in every.items() if t == "tunnel"} == {want["tunnel"]}
    # before the fix the crop was the minimum over the selected subjects' runs
    sel = nar.build_run_table(root, subjects=[a.subject], tasks=["pieman"])
    assert nar.crop_lengths(sel)["pieman"] == lengths[key] != want["pieman"]


def test_synthetic_crop_is_the_same_for_any_subject_selection(tmp_path):
    """The synthetic plan gives every run of a story one length, and the generated dataset
    goes through the same run table code: the crop of sub-001 does not move with the
    selection either."""
    from brainpred import synthetic

    cfg = {"synthetic": {"n_subjects": 3, "n_stories": 2, "stories_per_subject": 1,
                         "speech_duration": 40.0, "seed": 3},
           "model": {"name": "tiny-gpt2", "seed": 0}, "features": {"tr_offset": 1},
           "mapping": {"delays": [0, 1, 2, 3, 4, 5]}}
    from brainpred.config import apply_defaults, load_schema

    apply_defaults(cfg, load_schema())             # every other key at its schema default
    plan = synthetic.plan(cfg)
    assert (plan.groupby("task")["n_trs"].nunique() == 1).all()
    root = tmp_path / "synthetic"
    synthetic.generate(root, cfg, progress=False)
    from brainpred.stages.dataset import make_run_table

    got = []
    for sel in (["sub-001"], ["sub-001", "sub-002"], "all"):
        cfg["dataset"].update({"source": "synthetic", "root": str(root), "subjects": sel,
                               "tasks": "all", "space": "fsaverage5"})
        out = tmp_path / f"rt_{len(got)}.tsv"
        make_run_table(root, cfg, out)
        t = pd.read_csv(out, sep="\t", dtype={"run": str}, keep_default_na=False)
        got.append(t.set_index("subject").loc["sub-001", "n_trs"])
    want = plan.set_index("subject").loc["sub-001", "n_trs"]
    assert got == [want] * 3


# --------------------------------------------------------------------------------------------
# tiny files: alignments, transcripts
# --------------------------------------------------------------------------------------------

def test_alignment_interpolation_rules(tmp_path):
    folder = _make_story(tmp_path, "s", [
        ("Hi", "", None, None), ("there", "", None, None),         # leading: median dur 0.2
        ("a", "a", 1.0, 1.2), ("b", "", None, None), ("c", "", None, None),
        ("d", "d", 2.0, 2.2),                                      # gap 1.2-2.0 in 2 slots
        ("e", "e", 2.4, 2.8), ("f", "", None, None), ("g", "g", 2.6, 2.8),  # overlap
        ("h", "<unk>", 3.0, 3.2), ("z", "", None, None),           # trailing
    ])
    a = nar.read_alignment(folder / "align.csv")
    np.testing.assert_allclose(a.start, [0.6, 0.8, 1.0, 1.2, 1.6, 2.0, 2.4, 2.5, 2.6, 3.0, 3.2])
    np.testing.assert_allclose(a.end, [0.8, 1.0, 1.2, 1.6, 2.0, 2.2, 2.8, 2.6, 2.8, 3.2, 3.4])
    assert a.interpolated.tolist() == [True, True, False, True, True, False, False, True,
                                       False, False, True]
    assert a.dict_word.tolist()[9] == "<unk>"
    # leading words clipped at 0
    folder = _make_story(tmp_path, "t", [("x", "", None, None), ("y", "", None, None),
                                         ("w", "w", 0.1, 0.5)])
    np.testing.assert_allclose(nar.read_alignment(folder / "align.csv").start, [0, 0.05, 0.1])


@pytest.mark.parametrize("line,match", [
    ("only,three,1.0", r"line 2: expected 4 comma-separated columns"),
    ("word,dict,start,end", r"line 2: start/end 'start', 'end' are not numbers"),
    ("w,w,1.0,", r"line 2: only one of start/end"),
    ("w,w,2.0,1.0", r"line 2: end 1.0 before start 2.0"),
])
def test_alignment_malformed(tmp_path, line, match):
    path = _write(tmp_path / "align.csv", f"a,a,0.1,0.2\n{line}\n")
    with pytest.raises(DataError, match=match) as err:
        nar.read_alignment(path)
    assert str(path) in str(err.value)


def test_alignment_missing_or_untimed(tmp_path):
    with pytest.raises(DataError, match="align.csv: file not found"):
        nar.read_alignment(tmp_path / "align.csv")
    path = _write(tmp_path / "align.csv", "a,,,\nb,,,\n")
    with pytest.raises(DataError, match="no word has a time"):
        nar.read_alignment(path)


def test_first_word_fix_tiny(tmp_path):
    rows = [("Okay", "okay", 0.34, 0.49), ("um", "um", 3.75, 4.04), ("so", "so", 29.39, 29.42)]
    folder = _make_story(tmp_path, "merlin", rows)
    a = nar.read_alignment(folder / "align.csv", story="merlin")
    np.testing.assert_allclose(a.start, [29.0, 29.15, 29.39])
    np.testing.assert_allclose(a.end, [29.15, 29.39, 29.42])
    b = nar.read_alignment(folder / "align.csv", story="pieman")  # not a fixed story
    np.testing.assert_allclose(b.start, [0.34, 3.75, 29.39])
    folder = _make_story(tmp_path / "x", "merlin", [("Hello", "hello", 0.3, 0.5)] + rows[1:])
    with pytest.warns(UserWarning, match="row 0 is not 'Okay'"):
        a = nar.read_alignment(folder / "align.csv", story="merlin")
    assert a.start[0] == 0.3 and a.start[1] == 29.15


def test_story_words_transcript_spans(tmp_path):
    root = tmp_path / "ds"
    rows = [("The", "the", 1.0, 1.1), ("hard", "hard", 1.1, 1.3), ("boiled", "boiled", 1.3, 1.6),
            ("detective", "detective", 1.6, 2.0), ("don’t", "don't", 2.1, 2.3),
            ("pay", "pay", 2.3, 2.5), ("50", "<unk>", None, None), ("dollars", "dollars", 2.9, 3.2),
            ("Café", "<unk>", 3.3, 3.6)]
    transcript = ('"The hard-boiled detective," he said -- "don\'t pay $50 dollars!"\n'
                  "Cafe.\n")
    _make_story(root, "tiny", rows, transcript)
    w, text = nar.story_words(root, "tiny")
    assert text == transcript
    assert _spans(w, text) == ["The", "hard", "boiled", "detective,\"", "don't", "pay", "50",
                               "dollars!\"", "Cafe."]
    assert w.interpolated.tolist() == [False] * 6 + [True] + [False] * 2
    assert w.start[6] == pytest.approx(2.5) and w.end[6] == pytest.approx(2.9)
    assert (np.diff(w.char_start) > 0).all()


def test_story_words_without_transcript(tmp_path):
    root = tmp_path / "ds"
    _make_story(root, "tiny", [("Hello", "hello", 0.5, 0.8), ("it’s", "it's", 0.8, 1.0),
                               ("me", "me", 1.0, 1.2)])
    w, text = nar.story_words(root, "tiny")
    assert text == "Hello it’s me"
    assert w.char_start.tolist() == [0, 6, 11] and w.char_end.tolist() == [5, 10, 13]
    with pytest.raises(DataError, match="story 'nope'"):
        nar.story_words(root, "nope")


def test_story_words_misaligned_transcript(tmp_path):
    root = tmp_path / "ds"
    folder = _make_story(root, "tiny", [("one", "one", 0.1, 0.2), ("two", "two", 0.2, 0.3),
                                        ("three", "three", 0.3, 0.4), ("four", "four", 0.4, 0.5)],
                         "One, two, banana, four.")
    with pytest.raises(DataError, match="misaligned transcript: word 2 \\('three'\\)") as err:
        nar.story_words(root, "tiny")
    assert str(folder / "align.csv") in str(err.value)
    assert str(folder / "transcript.txt") in str(err.value)
    assert nar.read_transcript(folder / "missing.txt") is None


def test_story_words_tolerates_stray_text(tmp_path):
    root = tmp_path / "ds"
    _make_story(root, "tiny", [("one", "one", 0.1, 0.2), ("two", "two", 0.2, 0.3)],
                "[Music] One, (laughs) two.\r\n")
    w, text = nar.story_words(root, "tiny")
    assert text == "[Music] One, (laughs) two.\n"
    assert _spans(w, text) == ["One,", "two."]


def test_slumlordreach_split_tiny(tmp_path):
    root = tmp_path / "ds"
    _make_story(root, "slumlordreach", [
        ("The", "the", 25.0, 25.2), ("end", "end", 940.0, 940.5), ("x", "", None, None),
        ("Well", "well", 965.0, 965.3), ("bye", "bye", 966.0, 966.2)],
        "The end.  x\n\nWell, bye.")
    a, ta = nar.story_words(root, "slumlord")
    b, tb = nar.story_words(root, "reach")
    assert ta == "The end.  x" and tb == "Well, bye."
    assert a.word.tolist() == ["The", "end", "x"] and b.word.tolist() == ["Well", "bye"]
    assert _spans(b, tb) == ["Well,", "bye."]
    assert b.start.tolist() == [965.0, 966.0]
    assert nar.story_parts("pieman") == ("pieman",)


# --------------------------------------------------------------------------------------------
# tiny files: BOLD
# --------------------------------------------------------------------------------------------

def test_load_bold(tmp_path):
    left = np.arange(12, dtype=np.float32).reshape(4, 3)
    left[:, 1] = np.nan  # medial wall
    right = -np.arange(8, dtype=np.float32).reshape(4, 2)
    pl, pr = _make_gifti(tmp_path / "L.func.gii", left), _make_gifti(tmp_path / "R.func.gii", right)
    y = nar.load_bold(pl, pr)
    assert y.dtype == np.float32 and y.shape == (4, 5)
    np.testing.assert_array_equal(y, np.concatenate([left, right], axis=1))
    assert np.isnan(y[:, 1]).all()
    np.testing.assert_array_equal(nar.load_bold(str(pl), str(pr), n_trs=3), y[:3])
    assert nar.gifti_n_trs(pl) == 4
    with pytest.raises(DataError, match="L.func.gii: has 4 TRs, fewer than the 5 requested"):
        nar.load_bold(pl, pr, n_trs=5)


def test_gifti_n_trs_without_header_count(tmp_path):
    p = _make_gifti(tmp_path / "x.func.gii", np.zeros((6, 2)), n_arrays_attr=False)
    assert nar.gifti_n_trs(p) == 6
    assert nar.load_bold(p, p).shape == (6, 4)


def test_load_bold_errors(tmp_path):
    pl = _make_gifti(tmp_path / "L.func.gii", np.zeros((4, 3)))
    short = _make_gifti(tmp_path / "R.func.gii", np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"L\.func\.gii has 4 TRs but .*R\.func\.gii has 3"):
        nar.load_bold(pl, short)
    with pytest.raises(DataError, match=r"nope\.func\.gii: BOLD file not found"):
        nar.load_bold(pl, tmp_path / "nope.func.gii")
    corrupt = tmp_path / "bad.func.gii"
    corrupt.write_bytes(pl.read_bytes()[:300])  # truncated XML
    with pytest.raises(DataError, match=r"bad\.func\.gii: cannot be read as a GIfTI"):
        nar.load_bold(pl, corrupt)
    junk = _write(tmp_path / "junk.func.gii", "hello")
    with pytest.raises(DataError, match=r"junk\.func\.gii: not a GIfTI"):
        nar.gifti_n_trs(junk)
    with pytest.raises(DataError, match=r"junk\.func\.gii: cannot be read"):
        nar.load_bold(junk, pl)


# --------------------------------------------------------------------------------------------
# bad input (issue 3, item 8)
# --------------------------------------------------------------------------------------------

def _gifti_with_time_step(path, data, step):
    img = nib.gifti.GiftiImage(
        meta=nib.gifti.GiftiMetaData({"TimeStep": str(step)}),
        darrays=[nib.gifti.GiftiDataArray(np.asarray(row, dtype=np.float32),
                                          intent="NIFTI_INTENT_TIME_SERIES",
                                          datatype="NIFTI_TYPE_FLOAT32") for row in data])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return Path(path)


def test_unknown_subject_or_task(tmp_path):
    root = _tiny(tmp_path)
    with pytest.raises(ConfigError, match=r"subjects: unknown subject\(s\) \['sub-999'\]"):
        nar.build_run_table(root, subjects=["sub-001", "sub-999"])
    with pytest.raises(ConfigError, match=r"tasks: unknown task\(s\) \['nosuchtask'\]"):
        nar.build_run_table(root, tasks=["pieman", "nosuchtask"])
    # a task that exists, but not for the selected subject, is reported as such
    with pytest.raises(ConfigError, match="of the selected subjects"):
        nar.build_run_table(root, tasks=["tunnel"], subjects=["sub-002"])


def test_subject_filter_reads_only_selected_subjects(tmp_path):
    """A partial DataLad clone lacks the other subjects' events: they must not be read."""
    root = _tiny(tmp_path)
    broken = root / "sub-003" / "func" / "sub-003_task-milkyway_events.tsv"
    broken.unlink()
    broken.symlink_to(root / ".git" / "annex" / "objects" / "XX" / "missing")  # dangling
    t = nar.build_run_table(root, subjects=["sub-001", "sub-002"])
    assert set(t.subject) == {"sub-001", "sub-002"}
    full = nar.build_run_table(_tiny(tmp_path / "b"))
    assert t.equals(full[full.subject.isin(["sub-001", "sub-002"])].reset_index(drop=True))
    with pytest.raises(DataError, match=r"sub-003_task-milkyway_events\.tsv: the file's "
                                        r"content is not here.*datalad get"):
        nar.build_run_table(root)


def test_missing_events_is_reported_not_crashed(tmp_path):
    root = _tiny(tmp_path)
    t = nar.build_run_table(root, subjects=["sub-003"])
    row = t[(t.task == "pieman")].iloc[0]
    assert not row.kept and row.reason == "no_events" and np.isnan(row.audio_onset)


def test_dangling_gifti_and_alignment(tmp_path):
    dangling = tmp_path / "L.func.gii"
    dangling.symlink_to(tmp_path / "nowhere")
    ok = _make_gifti(tmp_path / "R.func.gii", np.zeros((2, 3)))
    with pytest.raises(DataError, match=r"L\.func\.gii: the file's content is not here"):
        nar.load_bold(dangling, ok)
    align = tmp_path / "stimuli" / "gentle" / "s" / "align.csv"
    align.parent.mkdir(parents=True)
    align.symlink_to(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"align\.csv: the file's content is not here"):
        nar.story_words(tmp_path, "s")


def test_truncated_gifti(tmp_path):
    full = _make_gifti(tmp_path / "full.func.gii", np.ones((3, 4)))
    raw = full.read_bytes()
    cut = _write(tmp_path / "cut.func.gii", "")
    cut.write_bytes(raw[: len(raw) * 2 // 3])  # download interrupted mid-file
    with pytest.raises(DataError, match=r"cut\.func\.gii: cannot be read as a GIfTI.*download "
                                        "it again"):
        nar.load_bold(cut, full)


def test_wrong_vertex_count(tmp_path):
    pl = _make_gifti(tmp_path / "L.func.gii", np.zeros((2, 3)))
    pr = _make_gifti(tmp_path / "R.func.gii", np.zeros((2, 3)))
    assert nar.load_bold(pl, pr).shape == (2, 6)  # no space: not checked
    with pytest.raises(DataError, match=r"L\.func\.gii: 3 vertices per TR, but fsaverage6 has "
                                        r"40962 per hemisphere.*dataset\.space"):
        nar.load_bold(pl, pr, space="fsaverage6")
    n5 = nar.VERTICES_PER_HEMI["fsaverage5"]
    assert n5 == 10242 and nar.VERTICES_PER_HEMI["fsaverage6"] == 40962
    gl = _make_gifti(tmp_path / "L5.func.gii", np.zeros((2, n5)))
    gr = _make_gifti(tmp_path / "R5.func.gii", np.zeros((2, n5)))
    assert nar.load_bold(gl, gr, space="fsaverage5").shape == (2, 2 * n5)
    with pytest.raises(DataError, match=r"L5\.func\.gii: 10242 vertices per TR, but fsaverage6"):
        nar.load_bold(gl, gr, space="fsaverage6")
    with pytest.raises(ConfigError, match="dataset.space"):
        nar.load_bold(gl, gr, space="fsaverage7")


def test_tr_disagreeing_with_sidecar(tmp_path):
    """The sidecar's RepetitionTime is the TR; a GIfTI TimeStep that disagrees is an error
    (in the run table when the GIfTI is present, and in load_bold when given tr)."""
    p_ms = _gifti_with_time_step(tmp_path / "ms.func.gii", np.zeros((2, 3)), 1500)
    p_s = _gifti_with_time_step(tmp_path / "s.func.gii", np.zeros((2, 3)), 1.52)
    plain = _make_gifti(tmp_path / "plain.func.gii", np.zeros((2, 3)))
    assert nar.gifti_time_step(p_ms) == pytest.approx(1.5)
    assert nar.gifti_time_step(p_s) == pytest.approx(1.52)
    assert nar.gifti_time_step(plain) is None
    assert nar.load_bold(p_ms, p_ms, tr=1.5).shape == (2, 6)
    assert nar.load_bold(plain, plain, tr=1.5).shape == (2, 6)  # no TimeStep: not checked
    with pytest.raises(DataError, match=r"s\.func\.gii: TimeStep 1\.52 s disagrees with "
                                        "RepetitionTime 1.5 s"):
        nar.load_bold(p_ms, p_s, tr=1.5)

    root = _make_dataset(tmp_path / "ds", {"sub-001": [("pieman", "")]},
                         [dict(subject="sub-001", task="pieman", tr=1.5)], exclude={})
    for hemi in "LR":
        _gifti_with_time_step(root / nar.bold_rel("sub-001", "pieman", "", "fsaverage6", hemi),
                              np.zeros((4, 3)), 2000)
    with pytest.raises(DataError, match=r"hemi-L_desc-clean\.func\.gii: TimeStep 2 s disagrees "
                                        r"with RepetitionTime 1\.5 s of .*_bold\.json"):
        nar.build_run_table(root)
    for hemi in "LR":
        _gifti_with_time_step(root / nar.bold_rel("sub-001", "pieman", "", "fsaverage6", hemi),
                              np.zeros((4, 3)), 1500)
    assert nar.build_run_table(root).n_trs.tolist() == [4]


def test_alignment_longer_than_run():
    words = pd.DataFrame({"word": list("abcdefghij"),
                          "start": np.arange(10, dtype=float) * 10.0})  # 0..90 s file time
    # run of 100 TRs x 1.5 s = 150 s, onset 12 s: every word inside
    assert nar.check_words_in_run(words, 12.0, 1.5, 100, where="r") == 0
    assert nar.check_words_in_run(words, 12.0, 1.5, -1) == 0  # unknown length: not checked
    # 62 TRs = 93 s: the last word (90 + 12 = 102 s) is after the end -> warning, dropped
    with pytest.warns(UserWarning, match=r"r: 1 of 10 words start after the end of the run "
                                         r"\(62 TRs x 1\.5 s = 93 s"):
        assert nar.check_words_in_run(words, 12.0, 1.5, 62, where="r", max_dropped=0.1) == 1
    # 40 TRs = 60 s: half the story is after the end -> DataError naming the run and the fix
    with pytest.raises(DataError, match=r"sub-001_task-pieman: 5 of 10 words .*alignment is "
                                        r"longer than the run.*stim_file"):
        nar.check_words_in_run(words, 12.0, 1.5, 40, where="sub-001_task-pieman")


@needs_shared
@pytest.mark.shared
def test_real_alignments_fit_their_runs(real_table):
    """Real pieman: with the sidecar TR and the events onset, the words fit a ~300-TR run."""
    words, _ = nar.story_words(SHARED, "pieman")
    row = real_table[(real_table.task == "pieman") & real_table.kept].iloc[0]
    end = words.start.max() + row.audio_onset
    n_trs = int(np.ceil(end / row.tr)) + 5
    assert nar.check_words_in_run(words, row.audio_onset, row.tr, n_trs) == 0
    with pytest.raises(DataError, match="longer than the run"):
        nar.check_words_in_run(words, row.audio_onset, row.tr, n_trs // 2)


def test_split_story_rows_gives_one_row_per_story_part():
    table = pd.DataFrame({"subject": ["sub-001", "sub-002"], "task": ["slumlordreach", "pieman"],
                          "story": ["slumlordreach", "pieman"], "kept": [True, True]})
    out = nar.split_story_rows(table)
    assert out["story"].tolist() == ["slumlord", "reach", "pieman"]
    assert out["subject"].tolist() == ["sub-001", "sub-001", "sub-002"]
    assert nar.story_folder("reach") == "slumlordreach"
    assert nar.story_folder("pieman") == "pieman"
