"""Tests of brainpred.download: the file list (pure), tool checks, the configs, and a real
DataLad round trip against a small Narratives-shaped dataset built in tmp_path (subdatasets
``derivatives/afni-nosmooth`` and ``derivatives/freesurfer`` as in the release)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from brainpred.config import filled
from brainpred import download as dlmod
from brainpred import narratives as nar
from brainpred.errors import BrainpredError, ConfigError, DataError
from brainpred.plan import run_plan

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
HAS_ANNEX = shutil.which("git-annex") is not None and shutil.which("git") is not None
try:
    import datalad.api  # noqa: F401
    HAS_DATALAD = True
except ImportError:  # pragma: no cover
    HAS_DATALAD = False
needs_datalad = pytest.mark.skipif(
    not (HAS_ANNEX and HAS_DATALAD),
    reason="DataLad round trip needs git-annex (apt-get install git-annex) and datalad "
           "(pip install datalad)")


# --------------------------------------------------------------------------------------------
# needed_files (pure)
# --------------------------------------------------------------------------------------------

def _table():
    return pd.DataFrame({
        "subject": ["sub-001", "sub-001", "sub-002", "sub-003"],
        "task": ["pieman", "slumlordreach", "pieman", "tunnel"],
        "run": ["2", "", "1", ""],
        "story": ["pieman", "slumlordreach", "pieman", "tunnel"],
        "kept": [True, True, True, False],
    })


def test_needed_files():
    files = dlmod.needed_files(_table(), "fsaverage6")
    afni = "derivatives/afni-nosmooth"
    expected = {
        "participants.tsv", "code/scan_exclude.json",
        "sub-001/func/sub-001_task-pieman_run-2_events.tsv",
        "sub-001/func/sub-001_task-pieman_run-2_bold.json",
        "sub-001/func/sub-001_task-slumlordreach_events.tsv",
        "sub-001/func/sub-001_task-slumlordreach_bold.json",
        "sub-002/func/sub-002_task-pieman_run-1_events.tsv",
        "sub-002/func/sub-002_task-pieman_run-1_bold.json",
        "stimuli/gentle/pieman/align.csv", "stimuli/gentle/pieman/transcript.txt",
        "stimuli/gentle/slumlordreach/align.csv", "stimuli/gentle/slumlordreach/transcript.txt",
    }
    for sub, base in (("sub-001", "sub-001_task-pieman_run-2"),
                      ("sub-001", "sub-001_task-slumlordreach"),
                      ("sub-002", "sub-002_task-pieman_run-1")):
        for h in "LR":
            expected.add(f"{afni}/{sub}/func/{base}_space-fsaverage6_hemi-{h}_desc-clean.func.gii")
    for h in ("lh", "rh"):
        expected.add(f"derivatives/freesurfer/fsaverage6/label/{h}.aparc.a2009s.annot")
        for s in ("inflated", "pial", "white", "sphere", "sulc", "curv"):
            expected.add(f"derivatives/freesurfer/fsaverage6/surf/{h}.{s}")
    assert files == sorted(expected)
    assert not any("sub-003" in f or "tunnel" in f for f in files)  # not kept
    small = dlmod.needed_files(_table(), "fsaverage5", stories=["slumlord", "reach"],
                               transcripts=False, freesurfer=False, metadata=False)
    assert small == sorted(
        [f.replace("fsaverage6", "fsaverage5") for f in expected if f.endswith(".func.gii")]
        + ["stimuli/gentle/slumlordreach/align.csv"])  # slumlord/reach -> one folder
    assert not any(f.endswith(("transcript.txt", ".json", ".tsv")) for f in small)
    assert all("space-fsaverage5" in f for f in small if f.endswith(".gii"))


def test_is_optional():
    assert dlmod.is_optional("stimuli/gentle/pieman/transcript.txt")
    assert dlmod.is_optional("derivatives/freesurfer/fsaverage6/surf/lh.pial")
    assert not dlmod.is_optional("stimuli/gentle/pieman/align.csv")
    assert not dlmod.is_optional("derivatives/afni-nosmooth/sub-001/func/x.func.gii")


def test_needed_files_real_pieman():
    shared = REPO.parent / "shared" / "narratives"
    if not (shared / "participants.tsv").exists():
        pytest.skip(f"real Narratives metadata not found at {shared}")
    table = nar.build_run_table(shared, tasks=["pieman"])
    files = dlmod.needed_files(table, "fsaverage6")
    n_kept = int(table.kept.sum())
    assert sum(f.endswith(".func.gii") for f in files) == 2 * n_kept
    assert [f for f in files if f.startswith("stimuli/")] == [
        "stimuli/gentle/pieman/align.csv", "stimuli/gentle/pieman/transcript.txt"]


# --------------------------------------------------------------------------------------------
# tools, configs, local source
# --------------------------------------------------------------------------------------------

def test_missing_git_annex_says_how_to_install(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k:
                        None if name == "git-annex" else real(name, *a, **k))
    with pytest.raises(BrainpredError, match=r"git-annex, not found.*apt-get install "
                                             r"git-annex.*pip install datalad"):
        dlmod.check_tools()
    with pytest.raises(BrainpredError, match="apt-get install git-annex"):
        dlmod.fetch("/nonexistent", ["participants.tsv"])


def test_missing_datalad_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datalad.api", None)  # import fails
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/" + name)
    with pytest.raises(BrainpredError, match=r"datalad \(Python package\).*pip install datalad"):
        dlmod.check_tools()


@pytest.mark.parametrize("name", ["paper.yaml", "pieman.yaml"])
def test_configs_validate(name):
    from snakemake.utils import validate

    with open(REPO / "config" / name) as f:
        cfg = yaml.safe_load(f)
    validate(cfg, str(SCHEMA))
    ds = cfg["dataset"]
    assert ds["source"] == "datalad" and ds["space"] == "fsaverage6"
    assert ds["url"] == dlmod.DEFAULT_URL
    if name == "paper.yaml":
        # every audio task but piemanpni (see config/README.md), all subjects
        assert "piemanpni" not in ds["tasks"] and len(ds["tasks"]) == 15
        assert {"pieman", "milkyway", "slumlordreach"} <= set(ds["tasks"])
        assert ds["subjects"] == "all"
        assert not ds["keep_scrambled"] and not ds["keep_schema"]
        assert cfg["forecast"]["distances"] == list(range(-10, 31))  # 41 distances
        assert cfg["model"]["name"] == "gpt2" and cfg["features"]["layer"] == 8
        assert cfg["forecast"]["width"] == 7 and cfg["mapping"]["n_components"] == 20
    else:
        assert ds["tasks"] == ["pieman"] and len(ds["subjects"]) <= 10
    assert set(cfg["stats"]["dstar_reference"]) <= set(cfg["forecast"]["distances"])


def test_run_plan_datalad_without_metadata(tmp_path):
    with open(REPO / "config" / "pieman.yaml") as f:
        cfg = yaml.safe_load(f)
    cfg["dataset"]["root"] = str(tmp_path / "nothing")
    with pytest.raises(ConfigError, match=r"dataset.source = datalad: no metadata.*python -m "
                                          r"brainpred.download metadata"):
        run_plan(cfg)


def test_local_source_never_imports_datalad(tmp_path):
    """The local path (plan, run table, words, BOLD) must not import DataLad."""
    root = tmp_path / "ds"
    (root / "sub-001" / "func").mkdir(parents=True)
    (root / "participants.tsv").write_text("participant_id\ttask\tcondition\n"
                                           "sub-001\tpieman\tn/a\n")
    (root / "sub-001" / "func" / "sub-001_task-pieman_events.tsv").write_text(
        "onset\tduration\ttrial_type\tstim_file\n0\t10\tstory\tpieman_audio.wav\n")
    (root / "sub-001" / "func" / "sub-001_task-pieman_bold.json").write_text(
        json.dumps({"RepetitionTime": 1.5}))
    (root / "code").mkdir()
    (root / "code" / "scan_exclude.json").write_text("{}")
    align = root / "stimuli" / "gentle" / "pieman" / "align.csv"
    align.parent.mkdir(parents=True)
    align.write_text("Hello,hello,0.5,0.9\nworld,world,1.0,1.4\n")
    code = f"""
import sys, yaml
from brainpred.plan import run_plan
from brainpred import narratives
cfg = yaml.safe_load(open({str(REPO / 'config' / 'config.yaml')!r}))
cfg['dataset'].update(source='local', root={str(root)!r}, space='fsaverage6')
plan = run_plan(cfg)
assert list(plan.basename) == ['sub-001_task-pieman'], plan
narratives.story_words({str(root)!r}, 'pieman')
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('datalad', 'brainpred.download'))
assert not bad and 'brainpred.download' not in sys.modules, bad
print('ok')
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


# --------------------------------------------------------------------------------------------
# real DataLad round trip
# --------------------------------------------------------------------------------------------

def _gifti(path, n_trs, n_vertices=4, seed=0):
    img = nib.gifti.GiftiImage(darrays=[
        nib.gifti.GiftiDataArray(np.full(n_vertices, t + 100 * seed, dtype=np.float32),
                                 intent="NIFTI_INTENT_TIME_SERIES",
                                 datatype="NIFTI_TYPE_FLOAT32") for t in range(n_trs)])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _put(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def git_identity(monkeypatch, tmp_path):
    """A fresh CI machine has no git identity: give one through the environment."""
    for var, val in (("GIT_AUTHOR_NAME", "brainpred test"),
                     ("GIT_AUTHOR_EMAIL", "test@example.org"),
                     ("GIT_COMMITTER_NAME", "brainpred test"),
                     ("GIT_COMMITTER_EMAIL", "test@example.org")):
        monkeypatch.setenv(var, val)


@pytest.fixture
def release(tmp_path, git_identity):
    """A small Narratives-shaped DataLad superdataset, every file annexed; every file has
    its own content (git-annex stores identical contents once: a shared key would arrive too).

    sub-001: pieman run-1 and run-2 (last kept), tunnel; sub-002: pieman; sub-003: pieman.
    Subdatasets derivatives/afni-nosmooth (GIfTIs of every run) and derivatives/freesurfer
    (fsaverage6 annotations only: the surfaces are absent, i.e. optional files missing).
    """
    import datalad.api as dl

    kw = dict(result_renderer="disabled", return_type="list")
    src = tmp_path / "release"
    dl.create(path=str(src), **kw)
    for sub in ("derivatives/afni-nosmooth", "derivatives/freesurfer"):
        dl.create(dataset=str(src), path=str(src / sub), **kw)
    runs = {"sub-001": [("pieman", "1"), ("pieman", "2"), ("tunnel", "")],
            "sub-002": [("pieman", "")], "sub-003": [("pieman", "")]}
    lines = ["participant_id\ttask\tcondition\tcomprehension"]
    seed = 0
    for subject, rr in runs.items():
        tasks = sorted({t for t, _ in rr})
        lines.append(f"{subject}\t{','.join(tasks)}\t{','.join(['n/a'] * len(tasks))}\t"
                     f"{','.join(['n/a'] * len(tasks))}")
        for task, run in rr:
            base = f"{subject}_task-{task}" + (f"_run-{run}" if run else "")
            _put(src / subject / "func" / f"{base}_events.tsv",
                 "onset\tduration\ttrial_type\tstim_file\n"
                 f"0.0\t12.0\tmusic\t{task}_audio.wav\n12.0\t60.0\tstory\t{task}_audio.wav\n"
                 f"# {base}\n")
            _put(src / subject / "func" / f"{base}_bold.json",
                 f'{{"RepetitionTime": 1.5, "TaskName": "{base}"}}\n')
            for h in "LR":
                seed += 1
                _gifti(src / nar.bold_rel(subject, task, run, "fsaverage6", h), 6, seed=seed)
    _put(src / "participants.tsv", "\n".join(lines) + "\n")
    _put(src / "code" / "scan_exclude.json", "{}\n")
    _put(src / "code" / "task_meta.json", "{}\n")
    for story in ("pieman", "tunnel"):
        _put(src / "stimuli" / "gentle" / story / "align.csv",
             f"I,i,1.0,1.2\nsaw,saw,1.3,1.6\n{story},{story},1.7,1.9\n")
    _put(src / "stimuli" / "gentle" / "pieman" / "transcript.txt", "I saw pieman.\n")
    for h in ("lh", "rh"):
        _put(src / "derivatives/freesurfer/fsaverage6/label" / f"{h}.aparc.a2009s.annot",
             f"annot {h}\n")
    dl.save(dataset=str(src), recursive=True, message="narratives-shaped test release", **kw)
    return src


def _config(src, root, subjects):
    with open(REPO / "config" / "pieman.yaml") as f:
        cfg = yaml.safe_load(f)
    cfg["dataset"].update(url=str(src), root=str(root), subjects=subjects)
    return filled(cfg)                 # the library reads a schema-filled config, as the CLI


def _content(root, rel):
    p = Path(root) / rel
    return os.path.exists(p)


def _only_link(root, rel):
    p = Path(root) / rel
    return os.path.lexists(p) and not os.path.exists(p)


@needs_datalad
def test_datalad_round_trip(release, tmp_path, caplog):
    caplog.set_level("INFO", logger="brainpred")
    root = tmp_path / "clone"
    cfg = _config(release, root, ["sub-001", "sub-002"])

    # step 1: clone by path, metadata of the selected subjects only, subdatasets installed
    files = dlmod.fetch_metadata(cfg)
    for rel in ("participants.tsv", "code/scan_exclude.json", "code/task_meta.json",
                "sub-001/func/sub-001_task-pieman_run-2_events.tsv",
                "sub-002/func/sub-002_task-pieman_bold.json"):
        assert _content(root, rel), rel
    assert _only_link(root, "sub-003/func/sub-003_task-pieman_events.tsv")  # not selected
    for sub in ("derivatives/afni-nosmooth", "derivatives/freesurfer"):
        assert (root / sub / ".git").exists(), f"{sub} not installed"
    assert "file(s) to fetch" in caplog.text
    plan = run_plan(cfg)  # the workflow can lay out its DAG now
    assert list(plan.basename) == ["sub-001_task-pieman_run-2", "sub-002_task-pieman"]
    gii = [f for f in files if f.endswith(".func.gii")]
    assert len(gii) == 4 and all(_only_link(root, f) for f in gii)  # nothing fetched yet

    # step 2: the data
    caplog.clear()
    out = dlmod.download(cfg)
    assert sorted(out["fetched"]) == sorted(
        f for f in files if not f.startswith("derivatives/freesurfer/fsaverage6/surf")
        and f not in out["present"])
    for rel in gii + ["stimuli/gentle/pieman/align.csv", "stimuli/gentle/pieman/transcript.txt",
                      "derivatives/freesurfer/fsaverage6/label/lh.aparc.a2009s.annot"]:
        assert _content(root, rel), rel
    assert f"{len(out['fetched'])} file(s) to fetch" in caplog.text  # announced first
    assert f"[{len(out['fetched'])}/{len(out['fetched'])}," in caplog.text  # progress
    assert any("surf/lh.pial" in s for s in out["skipped"])  # optional, absent: warned
    # unneeded annexed files did not arrive
    for rel in ("derivatives/afni-nosmooth/sub-003/func/"
                "sub-003_task-pieman_space-fsaverage6_hemi-L_desc-clean.func.gii",
                "derivatives/afni-nosmooth/sub-001/func/"
                "sub-001_task-pieman_run-1_space-fsaverage6_hemi-L_desc-clean.func.gii",
                "derivatives/afni-nosmooth/sub-001/func/"
                "sub-001_task-tunnel_space-fsaverage6_hemi-R_desc-clean.func.gii",
                "stimuli/gentle/tunnel/align.csv"):
        assert _only_link(root, rel), rel
    y = nar.load_bold(root / gii[0], root / gii[1])
    assert y.shape == (6, 8)
    table = nar.build_run_table(root, tasks=["pieman"], subjects=["sub-001", "sub-002"])
    assert table[table.kept].n_trs.tolist() == [6, 6]

    # a second call is a no-op
    again = dlmod.download(cfg)
    assert again["fetched"] == [] and again["bytes"] == 0

    # Snakemake deletes a rerun job's existing outputs: they are restored, not lost
    os.remove(root / gii[0])
    res = dlmod.fetch_outputs(root, [root / gii[0], root / gii[1]])
    assert _content(root, gii[0]) and res["fetched"] == []

    # a required file the release lacks is an error naming it
    with pytest.raises(DataError, match=r"not in the dataset.*sub-009"):
        dlmod.fetch(root, ["derivatives/afni-nosmooth/sub-009/func/x.func.gii"])


@needs_datalad
def test_clone_refuses_non_dataset_folder(tmp_path, git_identity):
    root = tmp_path / "occupied"
    root.mkdir()
    (root / "file.txt").write_text("x")
    with pytest.raises(DataError, match="exists and is not a DataLad dataset"):
        dlmod.clone(str(tmp_path / "nowhere"), root)
    with pytest.raises(DataError, match="cloning dataset.url"):
        dlmod.clone(str(tmp_path / "nowhere"), tmp_path / "new")
    assert not (tmp_path / "new" / ".git").exists()


def test_cli_metadata_error_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": {"source": "local", "root": str(tmp_path)}}))
    assert dlmod.main(["metadata", "--configfile", str(cfg)]) == 1
    assert "downloading needs dataset.source: datalad" in capsys.readouterr().err
