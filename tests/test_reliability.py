"""What a user meets when things go wrong: errors where they look, files a team can share.

Each case states the situation, what brainpred must do, and checks it.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainpred.errors import DataError
from brainpred.io import atomic_write, save_npz


def test_outputs_get_the_mode_the_umask_allows(tmp_path):
    """mkstemp makes 0600 files: collaborators on a shared filesystem could not read them."""
    old = os.umask(0o022)
    try:
        save_npz(tmp_path / "a.npz", x=np.zeros(3))
        assert os.stat(tmp_path / "a.npz").st_mode & 0o777 == 0o644
        os.umask(0o002)
        with atomic_write(tmp_path / "b.tsv") as f:
            f.write("x\n")
        assert os.stat(tmp_path / "b.tsv").st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def test_a_killed_write_leaves_no_temporary_file_behind_after_the_next_run(tmp_path):
    stale = tmp_path / ".scores.npz.k1ll3d.tmp.npz"               # what SIGKILL left behind
    stale.write_bytes(b"half")
    other = tmp_path / ".other.npz.k1ll3d.tmp.npz"                # another output's: kept
    other.write_bytes(b"half")
    save_npz(tmp_path / "scores.npz", x=np.ones(2))
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npz.k1ll3d.tmp.npz",
                                                          "scores.npz"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_disk_full_or_read_only_is_a_data_error_naming_the_file(tmp_path, monkeypatch, code):
    target = tmp_path / "res" / "table.tsv"
    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(DataError, match=rf"{target}: cannot be written .*run snakemake again"):
        with atomic_write(target) as f:
            f.write("x")
    monkeypatch.setattr(os, "replace", real_replace)
    assert list((tmp_path / "res").iterdir()) == []               # no temporary file left


def test_other_errors_inside_a_write_are_not_disguised(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "x.tsv"):
            open(tmp_path / "missing-input.tsv")


def _script(tmp_path, body):
    log = tmp_path / "rule.log"
    code = ("from brainpred.jobs import setup_logging\n"
            "from brainpred.errors import DataError\n"
            f"setup_logging({str(log)!r})\n" + body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    return proc, log.read_text()


def test_a_rule_scripts_error_is_in_its_log_message_first(tmp_path):
    proc, log = _script(tmp_path, "raise DataError('sub-001.func.gii: truncated (3 of 300 "
                                  "TRs). Delete it and re-run snakemake.')\n")
    assert proc.returncode == 1
    first = log.splitlines()[0]
    assert "ERROR" in first and "sub-001.func.gii: truncated" in first
    assert "Traceback" in log                                     # for a bug report
    assert "Traceback" not in proc.stderr                         # the console: the message
    assert "sub-001.func.gii: truncated" in proc.stderr


def test_an_unexpected_error_keeps_its_traceback_everywhere(tmp_path):
    proc, log = _script(tmp_path, "1 / 0\n")
    assert proc.returncode == 1
    assert "unexpected error" in log.splitlines()[0] and "ZeroDivisionError" in log
    assert "Traceback" in proc.stderr


def test_model_load_errors_say_what_to_do(tmp_path, monkeypatch):
    import json

    from brainpred.errors import ConfigError
    from brainpred.lm import load_model

    folder = tmp_path / "my_model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(ConfigError, match=r"exists but holds no loadable model.*weights"):
        load_model(str(folder), device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match=r"`hf download no-such-org/no-model`") as err:
        load_model("no-such-org/no-model", device="cpu")
    assert "huggingface-cli" not in str(err.value)


def test_a_run_whose_sidecar_says_another_tr_is_refused_at_start():
    import pandas as pd

    from brainpred.narratives import check_task_trs

    rows = [("sub-001", "pieman", "pieman", "1", 1.5), ("sub-002", "pieman", "pieman", "", 1.5),
            ("sub-003", "pieman", "pieman", "", 2.0),           # the edited sidecar
            ("sub-004", "milkyway", "milkywayoriginal", "", 1.5),
            ("sub-005", "milkyway", "milkywaysynonyms", "", 1.52)]   # another audio: fine
    table = pd.DataFrame(rows, columns=["subject", "task", "story", "run", "tr"])
    table["kept"] = True
    with pytest.raises(DataError, match=r"sub-003/func/sub-003_task-pieman_bold.json.*"
                                        r"RepetitionTime 2 s, but the other 2 runs of pieman "
                                        r"\(pieman\) say 1.5 s.*scan_exclude"):
        check_task_trs(table)
    table.loc[2, "kept"] = False                                 # excluded: no complaint
    check_task_trs(table)


@pytest.mark.parametrize("mapping, match", [
    ({"n_folds": 1000}, r"mapping.n_folds = 1000 .*sub-\d+ has \d+ TRs"),
    ({"n_components": 500}, r"mapping.n_components = 500"),
])
def test_folds_and_components_are_checked_against_the_data_at_start(mapping, match):
    import yaml

    from brainpred.config import prepare_config
    from brainpred.errors import ConfigError
    from brainpred.plan import run_plan

    with open(__import__("pathlib").Path(__file__).parents[1] / "config" / "config.yaml") as f:
        cfg = prepare_config(yaml.safe_load(f), check_model=False)
    run_plan(cfg)                                                # the demo: fine
    cfg["mapping"].update(mapping)
    with pytest.raises(ConfigError, match=match):
        run_plan(cfg)


def test_a_gain_distance_that_is_not_fitted_is_refused_at_start():
    import yaml

    from brainpred.config import prepare_config
    from brainpred.errors import ConfigError

    with open(__import__("pathlib").Path(__file__).parents[1] / "config" / "config.yaml") as f:
        cfg = yaml.safe_load(f)
    cfg["stats"]["gain_distance"] = 9
    with pytest.raises(ConfigError, match=r"stats.gain_distance = 9: not in forecast.distances"):
        prepare_config(cfg)


# --------------------------------------------------------------------------------------------
# On a tiny demo, through Snakemake: stale inputs rerun what depends on them, bad inputs stop
# the run with a message naming the file or key
# --------------------------------------------------------------------------------------------

def _tiny_demo_config():
    import pathlib

    import yaml

    cfg = yaml.safe_load((pathlib.Path(__file__).parents[1] / "config" / "config.yaml")
                         .read_text())
    # sub-004 is in the dataset but not selected: the incremental tests add it
    cfg["synthetic"].update(n_subjects=4, n_stories=2, stories_per_subject=1,
                            speech_duration=90.0, plant_syntax=False, coverage="patches")
    cfg["dataset"]["subjects"] = ["sub-001", "sub-002", "sub-003"]
    cfg["forecast"]["distances"] = [0, 15]
    for section in ("layers", "controls", "syntax", "finetune"):
        cfg[section]["enabled"] = False
    cfg["noise_ceiling"]["enabled"] = True      # the incremental tests follow its jobs too
    return cfg


def _workflow(workdir, *args, check=True, offline=True, configfile="config.yaml"):
    import pathlib

    repo = pathlib.Path(__file__).parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "BRAINPRED_CACHE": str(workdir / "cache")}
    if not offline:
        env = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                           str(repo / "Snakefile"), "--directory", str(workdir),
                           "--configfile", str(workdir / configfile), "--cores", "2", *args],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    import yaml

    workdir = tmp_path_factory.mktemp("tiny-demo")
    (workdir / "config.yaml").write_text(yaml.safe_dump(_tiny_demo_config()))
    _workflow(workdir)
    return workdir


def _planned(proc):
    """Rules a dry run plans (the job-stats table)."""
    import re

    return {r for r, _ in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M)} - {"total"}


def _scores(workdir, subject):
    (path,) = (workdir / "results" / "scores").rglob(f"{subject}_desc-scores.npz")
    with np.load(path) as z:
        return z["brain_score"].copy()


def _planned_jobs(proc):
    """``rule -> set of wildcard strings`` of the jobs a dry run plans."""
    import re

    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if m:
            w = re.search(r"^\s*wildcards: (.*)$", block, flags=re.M)
            jobs.setdefault(m.group(1), set()).add(w.group(1) if w else "")
    return jobs


def _variant(workdir, name, **sections):
    """The tiny demo's config with ``sections`` updated, as ``name`` in ``workdir``."""
    import yaml

    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    for section, values in sections.items():
        cfg[section].update(values)
    (workdir / name).write_text(yaml.safe_dump(cfg))
    return name


# what reruns after any selection edit besides the edited fit: the group step, its figures,
# the report and the files that record the configuration
_GROUP_JOBS = {"group", "figures", "paper_comparison", "report", "run_table",
               "effective_config", "dataset_description", "all"}


@pytest.mark.slow
@pytest.mark.parametrize("subjects, fit_of, changed", [
    (["sub-001", "sub-002", "sub-003", "sub-004"], "sub-002", {"sub-002", "sub-004"}),  # added
    (["sub-001", "sub-002"], "sub-001", {"sub-001"}),                                   # removed
])
def test_a_selection_edit_reruns_only_the_fit_of_that_subject(tiny_demo, subjects, fit_of,
                                                              changed):
    """sub-001 and sub-003 heard one story, sub-002 and sub-004 the other: adding sub-004 or
    removing sub-003 replans that fit's run table, BOLD caches, fit and subject maps, the
    listener sums and noise ceilings of that story's listeners, and the group step; the other
    fit, the other story's ceilings and every story's features stay as they are."""
    from brainpred.config import prepare_config
    from brainpred.plan import fit_groups, run_plan

    name = _variant(tiny_demo, "selection.yaml", dataset={"subjects": subjects})
    jobs = _planned_jobs(_workflow(tiny_demo, "-n", configfile=name))
    assert set(jobs) == _GROUP_JOBS | {"fit_run_table", "bold_cache", "fit_scores",
                                       "subject_scores", "task_run_table", "listener_sums",
                                       "noise_ceiling"}, sorted(jobs)
    cfg = prepare_config(__import__("yaml").safe_load((tiny_demo / name).read_text()),
                         check_model=False)
    fits = fit_groups(run_plan(cfg), cfg["mapping"]["shared_subjects"])
    (fit,) = [f for f, members in fits.items() if fit_of in members]
    assert jobs["fit_scores"] == jobs["fit_run_table"] == {f"fit={fit}"}
    assert {w.split(",")[0] for w in jobs["subject_scores"]} == {f"subject={s}"
                                                                  for s in changed}
    assert {w.split(",")[0] for w in jobs["bold_cache"]} == {f"subject={s}" for s in changed}
    # the noise ceilings of the other task's listeners (their others' mean is unchanged) stay
    assert jobs["noise_ceiling"] == {f"subject={s}" for s in changed}
    assert len(jobs["listener_sums"]) == len(jobs["task_run_table"]) == 1
    # the fit labels do not depend on the selection: the untouched fit keeps its name
    before = fit_groups(run_plan(prepare_config(
        __import__("yaml").safe_load((tiny_demo / "config.yaml").read_text()),
        check_model=False)), 8)
    assert {f for f in before if fit_of not in before[f]} <= set(fits)


@pytest.mark.slow
def test_runtime_keys_rerun_nothing(tiny_demo):
    """Download jobs, batch sizes, device, backend and thread counts change no result."""
    name = _variant(tiny_demo, "runtime.yaml", dataset={"download_jobs": 7},
                    model={"batch_size": 3, "device": "cpu"},
                    mapping={"backend": "numpy", "target_batch": 123},
                    noise_ceiling={"batch": 99})
    proc = _workflow(tiny_demo, "-n", "--set-threads", "fit_scores=2", "bold_cache=2",
                     configfile=name)
    assert "Nothing to be done" in proc.stdout, sorted(_planned_jobs(proc))


@pytest.mark.slow
def test_results_are_a_bids_derivative_with_group_forecast_maps(tiny_demo):
    import json

    import nibabel as nib
    from nilearn.surface import load_surf_data

    res = tiny_demo / "results"
    desc = json.loads((res / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "brainpred" and desc["GeneratedBy"][0]["ConfigHash"]
    (group,) = (res / "group").rglob("group_desc-scores.npz")
    with np.load(group) as z:
        F, q, distances = (z["forecast_score"].astype(np.float32), z["forecast_q"],
                           list(z["distances"]))
    half = F.shape[1] // 2
    for h, sl in (("L", slice(0, half)), ("R", slice(half, None))):
        for desc_label in ("forecastscore", "forecastscorefdr"):
            (path,) = (res / "group").rglob(
                f"group_hemi-{h}_space-fsaverage5_desc-{desc_label}_statmap.func.gii")
            img = nib.load(path)
            assert len(img.darrays) == len(distances) == 2
            side = "CortexLeft" if h == "L" else "CortexRight"
            assert img.meta["AnatomicalStructurePrimary"] == side
            data = load_surf_data(str(path)).T                   # (n_d, n_per_hemi)
            if desc_label == "forecastscore":
                np.testing.assert_array_equal(data, F[:, sl])
            else:
                keep = (q[:, sl] <= 0.01) & (np.nan_to_num(F[:, sl]) > 0)
                np.testing.assert_array_equal(np.isfinite(data), keep)
                np.testing.assert_array_equal(data[keep], F[:, sl][keep])
            sidecar = json.loads(path.with_name(path.name.replace(".func.gii", ".json"))
                                 .read_text())
            assert sidecar["Distances"] == [int(d) for d in distances]


@pytest.mark.slow
def test_an_edited_events_onset_reruns_the_run_table_and_changes_the_scores(tiny_demo):
    import pandas as pd

    assert "Nothing to be done" in _workflow(tiny_demo, "-n").stdout
    (events,) = sorted((tiny_demo / "resources").rglob("sub-001_task-*_events.tsv"))[:1]
    task = events.name.split("_task-")[1].split("_")[0]
    before = _scores(tiny_demo, "sub-001")
    # every listener of the task (the noise ceiling needs its listeners on one TR grid)
    for path in sorted((tiny_demo / "resources").rglob(f"sub-*_task-{task}_*events.tsv")):
        table = pd.read_csv(path, sep="\t")
        table.loc[0, "onset"] = float(table.loc[0, "onset"]) + 6.0  # the story starts 4 TRs later
        table.to_csv(path, sep="\t", index=False)
    planned = _planned(_workflow(tiny_demo, "-n"))
    assert {"run_table", "fit_scores", "subject_scores", "group", "report"} <= planned
    assert "story_features" not in planned and "synthetic_dataset" not in planned
    _workflow(tiny_demo)
    assert not np.allclose(before, _scores(tiny_demo, "sub-001"), equal_nan=True)


@pytest.mark.slow
def test_an_edited_transcript_reruns_its_story(tiny_demo):
    (transcript,) = sorted((tiny_demo / "resources").rglob("transcript.txt"))[:1]
    story = transcript.parent.name
    text = transcript.read_text()
    transcript.write_text(text.replace(".", "!", 1))
    planned = _planned(_workflow(tiny_demo, "-n"))
    assert "story_words" in planned and "story_features" in planned
    _workflow(tiny_demo)
    words = (tiny_demo / "results" / "words" / f"story-{story}_desc-text.txt").read_text()
    assert "!" in words


@pytest.mark.slow
def test_another_storys_features_copied_over_a_cache_are_refused(tiny_demo):
    import shutil

    caches = sorted((tiny_demo / "results" / "features").rglob("story-*_desc-activations.npz"))
    assert len(caches) == 2
    shutil.copy(caches[1], caches[0])                              # newer: the fits rerun
    proc = _workflow(tiny_demo, check=False)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (tiny_demo / "logs" / "fit_scores").rglob("*.log"))
    story0 = caches[0].name.split("_")[0].split("-")[1]
    story1 = caches[1].name.split("_")[0].split("-")[1]
    assert story0 in logs and story1 in logs and "re-run snakemake" in logs
    caches[0].unlink()                                             # the fix the message gives
    _workflow(tiny_demo)


@pytest.mark.slow
@pytest.mark.parametrize("override, match", [
    ("stats={dstar_reference: [0, 9]}", "stats.dstar_reference"),
    ("features={layer: 99}", "features.layer"),
    ("mapping={n_folds: 1000}", "mapping.n_folds"),
    ("modle={name: gpt2}", "'modle' was unexpected"),
])
def test_bad_config_values_stop_the_dry_run(tiny_demo, override, match):
    proc = _workflow(tiny_demo, "-n", "--config", override, check=False)
    assert proc.returncode != 0 and match in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_sidecar_with_another_tr_stops_the_run_table(tiny_demo):
    import json

    # sub-001 shares its story with sub-003 (a lone listener has no other run to disagree with)
    sidecars = sorted((tiny_demo / "resources").rglob("sub-001_task-*_bold.json"))
    meta = json.loads(sidecars[0].read_text())
    old = dict(meta)
    meta["RepetitionTime"] = 2.0
    sidecars[0].write_text(json.dumps(meta))
    try:
        proc = _workflow(tiny_demo, check=False)
        assert proc.returncode != 0
        # the whole selection's table or the fit's (whichever ran first stops the run)
        logs = [p.read_text() for p in [tiny_demo / "logs" / "run_table.log",
                                        *(tiny_demo / "logs" / "run_table").glob("*.log")]
                if p.exists() and sidecars[0].name in p.read_text()]
        assert logs, "no run table log names the sidecar"
        log = logs[0]
        assert sidecars[0].name in log.splitlines()[0] and "RepetitionTime 2 s" in log
    finally:
        sidecars[0].write_text(json.dumps(old))
    _workflow(tiny_demo)                                           # fixed: the run completes


@pytest.mark.slow
def test_a_typo_in_model_name_never_touches_the_generated_dataset(tiny_demo):
    # offline (as here): stopped at start, naming the key
    proc = _workflow(tiny_demo, "-n", "--config", "model={name: tiny-gpt3}", check=False)
    assert proc.returncode != 0 and "model.name = 'tiny-gpt3'" in proc.stdout + proc.stderr
    # online, where the hub may have it: the features are replanned, the dataset is not
    planned = _planned(_workflow(tiny_demo, "-n", "--config", "model={name: tiny-gpt3}",
                                 offline=False))
    assert "story_features" in planned and "synthetic_dataset" not in planned
    assert "Nothing to be done" in _workflow(tiny_demo, "-n").stdout


def test_run_lengths_are_checked_against_their_stories_before_any_fit(tmp_path, caplog):
    import logging

    import pandas as pd

    from brainpred.narratives import check_runs_cover_their_stories

    story = tmp_path / "stimuli" / "gentle" / "tale"
    story.mkdir(parents=True)
    story.joinpath("align.csv").write_text("".join(
        f"w{i},w{i},{2.0 * i:.2f},{2.0 * i + 0.5:.2f}\n" for i in range(100)))   # 0..198 s
    row = dict(subject="sub-001", task="tale", run="", story="tale", audio_onset=3.0,
               basename="sub-001_task-tale")
    short = pd.DataFrame([{**row, "tr": 1.5, "n_trs": 60}])                       # 90 s
    with pytest.raises(DataError, match=r"sub-001_task-tale \(tale\): \d+ of 100 words start "
                                        r"after the end of the run"):
        check_runs_cover_their_stories(tmp_path, short)
    fine = pd.DataFrame([{**row, "tr": 1.5, "n_trs": 140}])                       # 210 s
    with caplog.at_level(logging.WARNING, logger="brainpred"):
        check_runs_cover_their_stories(tmp_path, fine)
    assert not caplog.records
    wrong_tr = pd.DataFrame([{**row, "tr": 2.5, "n_trs": 140}])                   # 350 s
    with caplog.at_level(logging.WARNING, logger="brainpred"):
        check_runs_cover_their_stories(tmp_path, wrong_tr)
    assert "sub-001/func/sub-001_task-tale_bold.json" in caplog.text
    assert "check its RepetitionTime" in caplog.text


@pytest.mark.slow
def test_interrupted_runs_lock_others_out_then_resume_bit_identical(tiny_demo):
    """With the score files removed, a run refits; a second run meanwhile is refused by
    Snakemake's lock. The run is stopped with SIGINT (Ctrl-C) after its first fit, the next one
    SIGKILLed after the second fit; after `--unlock` a last run finishes what was left, and
    every subject's scores equal, bit for bit, those of the clean run."""
    import shutil
    import signal
    import time

    subjects = sorted((tiny_demo / "results" / "scores").rglob("sub-*_desc-scores.npz"))
    fits = sorted((tiny_demo / "results" / "scores").rglob("fit-*_desc-fitscores.npz"))
    assert len(subjects) == 3 and len(fits) == 2
    before = {p.name: {k: np.load(p)[k].copy() for k in ("brain_score", "forecast_score")}
              for p in subjects}
    shutil.rmtree(tiny_demo / "results" / "scores")
    scores = tiny_demo / "results" / "scores"

    logs = []

    def start():
        import pathlib

        repo = pathlib.Path(__file__).parents[1]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
               "BRAINPRED_CACHE": str(tiny_demo / "cache")}
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"),
               "--directory", str(tiny_demo), "--configfile", str(tiny_demo / "config.yaml"),
               "--cores", "1"]
        log = open(tiny_demo / f"interrupted-run-{len(logs)}.log", "w")
        logs.append(log.name)
        return subprocess.Popen(cmd, cwd=tiny_demo, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def stop_after(proc, sig, check_lock=False):
        """Stop the run with ``sig`` once it has written a score file (fit or subject) of its
        own."""
        t0 = time.time()
        try:
            locks = tiny_demo / ".snakemake" / "locks"
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None \
                    and not (locks.exists() and any(locks.iterdir())):
                time.sleep(0.1)
            if check_lock:
                other = _workflow(tiny_demo, check=False)
                assert other.returncode != 0 and "cannot be locked" in other.stdout + other.stderr
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None and not any(
                    p.stat().st_mtime >= t0 for p in scores.rglob("*_desc-*scores.npz")):
                time.sleep(0.05)
            assert proc.poll() is None, ("the run ended before it could be stopped:\n"
                                         + Path(logs[-1]).read_text()[-3000:])
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
            proc.wait(timeout=120)

    stop_after(start(), signal.SIGINT, check_lock=True)          # Ctrl-C: a clean stop
    # Ctrl-C lets the running job end, and the tiny demo's jobs are short: if that run got to
    # the end, the kill -9 run gets the score files to compute again (a missing intermediate
    # file alone would not be recomputed: its outputs are up to date)
    if len(list(scores.rglob("sub-*_desc-scores.npz"))) == len(subjects):
        shutil.rmtree(scores)
    stop_after(start(), signal.SIGKILL)                          # kill -9: a stale lock
    _workflow(tiny_demo, "--unlock")
    _workflow(tiny_demo)
    assert "Nothing to be done" in _workflow(tiny_demo, "-n").stdout
    after = sorted(scores.rglob("sub-*_desc-scores.npz"))
    assert [p.name for p in after] == sorted(before)
    for p in after:
        for key, values in before[p.name].items():
            np.testing.assert_array_equal(values, np.load(p)[key], err_msg=str(p))
    assert not list((tiny_demo / "results").rglob(".*.tmp*"))     # no stale temporary file
