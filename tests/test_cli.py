"""The ``brainpred`` console script: every sub-command's help, check-data, summary, run -n.

The commands are run as a user runs them: the installed console script when it resolves to
this checkout's code (CI reinstalls the package), else ``python -m brainpred.cli``.
"""

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

from brainpred import cli

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "narratives"
COMMANDS = ("demo", "run", "fetch", "summary", "check-data")


def _script():
    """``[brainpred]`` when the console script imports this checkout's brainpred.cli."""
    script = shutil.which("brainpred")
    if script is None:
        return None
    with open(script, "rb") as f:
        shebang = f.readline().decode(errors="replace")
    if not shebang.startswith("#!"):
        return None
    python = shebang[2:].strip().split()[0]
    probe = subprocess.run([python, "-c", "import brainpred.cli as c; print(c.__file__)"],
                           capture_output=True, text=True)
    here = (REPO / "src" / "brainpred" / "cli.py").resolve()
    ok = probe.returncode == 0 and Path(probe.stdout.strip()).resolve() == here
    return [script] if ok else None


COMMAND = _script() or [sys.executable, "-m", "brainpred.cli"]


def brainpred(*args, cwd=None, timeout=120):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([*COMMAND, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_the_entry_point_is_this_module():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"brainpred": "brainpred.cli:main"}
    assert callable(cli.main) and cli.SNAKEFILE == REPO / "Snakefile"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_subcommand_has_help(command):
    out = brainpred(*([command] if command else []), "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: brainpred{' ' + command if command else ''}")
    if command is None:
        assert all(c in out.stdout for c in COMMANDS)


def test_snakemake_command_adds_cores_only_when_not_given():
    base = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    assert cli.snakemake_command(["-n"]) == base + ["--cores", "all", "-n"]
    for given in (["--cores", "2"], ["-c2"], ["-j", "4"], ["--profile", "profiles/slurm"],
                  ["--cores=3"]):
        assert cli.snakemake_command(given) == base + given
    with pytest.raises(cli.ConfigError, match="Snakefile is missing"):
        cli.snakemake_command([], snakefile=REPO / "no-such-Snakefile")


def test_run_dry_run_on_the_demo_config(tmp_path):
    out = brainpred("run", "-n", "--configfile", REPO / "config" / "config.yaml",
                    "--directory", tmp_path, "--config", "layers={enabled: false}",
                    cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "subject_scores" in text and "analysis_fit" in text   # controls etc. still on
    assert "dry-run" in text
    assert not (tmp_path / "results").exists()


def test_demo_refuses_another_config(tmp_path):
    out = brainpred("demo", "-n", "--configfile", "x.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "brainpred run --configfile" in out.stderr


def test_fetch_passes_its_arguments_to_the_download_step(monkeypatch):
    seen = []
    monkeypatch.setattr(cli.download, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["fetch", "--configfile", "a.yaml", "b.yaml", "--root", "/d"]) == 0
    assert cli.main(["fetch", "--configfile", "a.yaml", "--data", "-J", "3"]) == 0
    assert seen == [["metadata", "--configfile", "a.yaml", "b.yaml", "--root", "/d"],
                    ["data", "--configfile", "a.yaml", "--jobs", "3"]]


def test_fetch_of_the_synthetic_demo_says_it_needs_datalad(tmp_path):
    out = brainpred("fetch", "--configfile", REPO / "config" / "config.yaml", cwd=tmp_path)
    assert out.returncode == 1 and "dataset.source: datalad" in out.stderr


# --------------------------------------------------------------------------------------------
# check-data
# --------------------------------------------------------------------------------------------

def _gifti(path, n_trs, n_vertices=10242):
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [nib.gifti.GiftiDataArray(np.zeros(n_vertices, np.float32),
                                       intent="NIFTI_INTENT_TIME_SERIES",
                                       datatype="NIFTI_TYPE_FLOAT32") for _ in range(n_trs)]
    nib.save(nib.gifti.GiftiImage(darrays=arrays), str(path))


def _layout(root, subjects=("sub-001", "sub-002"), story="harbor", n_trs=4):
    """A complete two-subject, one-story Narratives copy (fsaverage5, 4 TRs)."""
    rows = ["participant_id\ttask\tcondition"] + [f"{s}\t{story}\tn/a" for s in subjects]
    root.mkdir(parents=True, exist_ok=True)
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    (root / "code").mkdir()
    (root / "code" / "scan_exclude.json").write_text(json.dumps({}))
    for s in subjects:
        func = root / s / "func"
        func.mkdir(parents=True)
        (func / f"{s}_task-{story}_events.tsv").write_text(
            f"onset\tduration\ttrial_type\tstim_file\n0.0\t5.0\tstory\t{story}_audio.wav\n")
        (func / f"{s}_task-{story}_bold.json").write_text(json.dumps({"RepetitionTime": 1.5}))
        for hemi in "LR":
            _gifti(root / "derivatives" / "afni-nosmooth" / s / "func"
                   / f"{s}_task-{story}_space-fsaverage5_hemi-{hemi}_desc-clean.func.gii",
                   n_trs)
    align = root / "stimuli" / "gentle" / story / "align.csv"
    align.parent.mkdir(parents=True)
    align.write_text("The,the,0.1,0.3\nold,old,0.4,0.6\nsailor,sailor,0.7,1.2\n")
    return root


def test_check_data_on_a_complete_copy(tmp_path):
    root = _layout(tmp_path / "narratives")
    out = brainpred("check-data", root, "--deep")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "runs: 2 kept of 2, 2 subjects, 1 stories" in out.stdout
    assert "everything the selection needs is present and readable" in out.stdout


def test_check_data_lists_what_is_missing_or_malformed(tmp_path):
    root = _layout(tmp_path / "narratives", subjects=("sub-001", "sub-002", "sub-003"))
    gii = "derivatives/afni-nosmooth/{s}/func/{s}_task-harbor_space-fsaverage5_hemi-{h}" \
          "_desc-clean.func.gii"
    (root / gii.format(s="sub-001", h="R")).unlink()                      # missing GIfTI
    (root / gii.format(s="sub-003", h="L")).write_text("not a gifti")     # unreadable
    (root / "sub-002/func/sub-002_task-harbor_bold.json").unlink()        # missing sidecar
    (root / "stimuli/gentle/harbor/align.csv").write_text("The,the,zero,0.3\n")  # malformed
    (root / "code/scan_exclude.json").unlink()
    out = brainpred("check-data", root)
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout
    for kind, path in [("missing GIfTI", gii.format(s="sub-001", h="R")),
                       ("unreadable GIfTI", gii.format(s="sub-003", h="L")),
                       ("missing bold.json sidecar", "sub-002/func/sub-002_task-harbor_bold.json"),
                       ("malformed alignment", "stimuli/gentle/harbor/align.csv"),
                       ("missing scan_exclude.json", "code/scan_exclude.json")]:
        assert f"{kind} (1):" in text and path in text, (kind, text)
    assert "fix: " in text and "datalad get <path>" in text
    assert "not a GIfTI file" in text            # the reader's own message


def test_check_data_without_participants_and_deep_vertex_count(tmp_path):
    root = _layout(tmp_path / "narratives", subjects=("sub-001",))
    (root / "participants.tsv").unlink()
    _gifti(root / "derivatives/afni-nosmooth/sub-001/func/"
           "sub-001_task-harbor_space-fsaverage5_hemi-L_desc-clean.func.gii", 4, n_vertices=7)
    table, problems = cli.check_data(root, deep=True)
    kinds = {p.kind for p in problems}
    assert kinds == {"missing participants.tsv", "unreadable GIfTI"}, problems
    assert len(table) == 1 and table.kept.all()


def test_check_data_on_a_missing_root(tmp_path):
    out = brainpred("check-data", tmp_path / "nowhere")
    assert out.returncode == 2 and "no such folder" in out.stderr


@pytest.mark.shared
def test_check_data_on_the_real_metadata():
    if not (SHARED / "participants.tsv").exists():
        pytest.skip(f"no Narratives metadata at {SHARED}")
    out = brainpred("check-data", SHARED, "--tasks", "pieman", "lucy")
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout
    # the metadata and alignments are all there and readable; the GIfTIs are not shipped
    assert "missing GIfTI (" in text and "space-fsaverage6" in text
    assert "malformed" not in text and "missing events" not in text
    assert "missing alignment" not in text and "missing participants" not in text
    table, problems = cli.check_data(SHARED, tasks=["pieman", "lucy"])
    kept = table[table.kept]
    assert {p.kind for p in problems} == {"missing GIfTI"}
    assert len(problems) == 2 * len(kept) and len(kept) > 50


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------

def _results(root):
    group = root / "group" / "model-gpt2_layer-8"
    group.mkdir(parents=True)
    r = np.array([0.1, 0.25, np.nan, 0.05])
    np.savez(group / "group_desc-scores.npz", brain_score=r,
             brain_reject=np.array([True, True, False, False]),
             forecast_score=np.array([[0.0, 0.01, np.nan, 0.0], [0.02, 0.03, np.nan, 0.01]]),
             distances=np.array([0, 8]), dstar=np.array([8.0, 8.0, np.nan, 0.0]),
             dstar_mask=np.array([True, True, False, False]), gain_mean=np.array(23.5),
             gain_ci=np.array([20.0, 27.0]), gain_dstar=np.array(8.0),
             subjects=np.array(["sub-001", "sub-002", "sub-003"]))
    # a subject's map is not a group map
    (root / "scores" / "sub-001").mkdir(parents=True)
    np.savez(root / "scores" / "sub-001" / "sub-001_desc-scores.npz", brain_score=r * 9)
    (root / "tables").mkdir()
    pd.DataFrame({"quantity": ["peak brain score", "forecast distance d*"],
                  "paper": ["r = 0.23", "8 words"], "value": [0.2512, "n/a"],
                  "ci_low": [0.2, "n/a"], "ci_high": [0.3, "n/a"],
                  "status": ["computed", "not computed: no significant vertex"]}).to_csv(
        root / "tables" / "desc-paper_comparison.tsv", sep="\t", index=False)
    pd.DataFrame({"subject": ["sub-001", "sub-002", "sub-002"], "story": ["a", "a", "b"],
                  "kept": [True, True, False]}).to_csv(
        root / "tables" / "desc-runs_table.tsv", sep="\t", index=False)
    return root


def test_summary_prints_the_key_numbers_and_the_paper_table(tmp_path):
    out = brainpred("summary", _results(tmp_path / "results"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "runs: 2 kept of 3, 2 subjects, 1 stories" in text
    assert "model gpt2, layer 8" in text and "subjects: 3" in text
    assert "r up to 0.250 over 3 vertices, 2 FDR-significant" in text
    assert "largest mean at d = 8" in text and "median 8 words over 2 vertices" in text
    assert "23.5% (95% CI 20.0 to 27.0)" in text and "at d* = 8" in text
    assert "peak brain score" in text and "paper: r = 0.23" in text and "0.251 [0.2, 0.3]" in text
    assert "(not computed: no significant vertex)" in text
    assert "2.25" not in text                     # the subject map was not read


def test_summary_without_results(tmp_path):
    out = brainpred("summary", tmp_path)
    assert out.returncode == 2 and "has the run finished" in out.stderr
    out = brainpred("summary", tmp_path / "nowhere")
    assert out.returncode == 2 and "no such folder" in out.stderr
