"""Scale-out checks: the paper-scale DAG (dry run, real release metadata) and the profiles.

The paper-scale dry run lays out every job of ``config/paper.yaml`` (all kept subjects and
stories, 41 distances) from the metadata in ``../shared/narratives`` without any fMRI: it must
take seconds, have one job per subject / story / run, and no job but the group-level ones may
read the BOLD of more than one subject (group, figures and report read none).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
METADATA = Path(__file__).resolve().parents[2] / "shared" / "narratives"
GROUP_RULES = {"group", "figures", "report", "all"}
BOLD_NPY = re.compile(r"results/bold/(sub-[0-9]+)/[^,\s]+_bold\.npy")
TASK = re.compile(r"results/bold/sub-[0-9]+/sub-[0-9]+_task-([A-Za-z0-9]+)[^,\s]*_bold\.npy")
BOLD_GII = re.compile(r"afni-nosmooth/(sub-[0-9]+)/func/[^,\s]+\.func\.gii")


def _snakemake(*args, cwd):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
    t = time.time()
    # a dry run loads no model: without HF_HUB_OFFLINE, an uncached 'gpt2' is left to the
    # features job instead of stopping the workflow at start
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr, time.time() - t


def _jobs(text):
    """(rule, {field: value}) of every job a dry run prints."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        m = re.match(r"(?:local)?rule (\w+):\n", block)
        if not m:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.M))
        jobs.append((m.group(1), fields))
    return jobs


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory):
    if not (METADATA / "participants.tsv").exists():
        pytest.skip(f"no Narratives metadata at {METADATA} (the paper-scale DAG is laid out "
                    "from the release's participants.tsv, events and alignments)")
    work = tmp_path_factory.mktemp("paper")
    text, seconds = _snakemake(
        "-n", "--configfile", str(REPO / "config" / "paper.yaml"),
        "--config", f"dataset={{source: datalad, root: {METADATA}}}",
        "--directory", str(work), cwd=work)
    sys.path.insert(0, str(REPO / "src"))
    from brainpred.plan import run_plan

    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    cfg["dataset"].update(source="local", root=str(METADATA))
    return text, seconds, run_plan(cfg), cfg


def test_paper_dry_run_is_fast(paper_dry_run):
    _, seconds, _, _ = paper_dry_run
    assert seconds < 60, f"paper-scale dry run took {seconds:.0f} s"


def test_paper_dry_run_job_counts(paper_dry_run):
    text, _, plan, cfg = paper_dry_run
    counts = {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", text, flags=re.M)}
    subjects = plan["subject"].nunique()
    stories = set(plan["story"])
    runs = plan["basename"].nunique()
    assert {"slumlord", "reach"} <= stories
    assert counts["subject_scores"] == subjects
    assert counts["story_features"] == len(stories)
    assert counts["story_words"] == len(stories)
    assert counts["bold_cache"] == runs
    assert counts["download_bold"] == runs
    assert counts["group"] == counts["figures"] == counts["report"] == counts["run_table"] == 1
    assert len(cfg["forecast"]["distances"]) == 41
    # the paper's selection (config/paper.yaml, without piemanpni): 18 audio stories
    assert (subjects, runs, len(stories)) == (321, 621, 18)


def test_no_job_holds_two_subjects_bold(paper_dry_run):
    text, _, plan, _ = paper_dry_run
    jobs = _jobs(text)
    assert len(jobs) > 1000
    seen = {}
    for rule, fields in jobs:
        npy = set(BOLD_NPY.findall(fields.get("input", "")))
        if rule in GROUP_RULES:
            assert not npy, f"{rule} reads BOLD: {sorted(npy)[:3]}"
            continue
        if rule == "noise_ceiling":
            # its own runs and the listener sums of its tasks: no other subject's BOLD
            subject = fields["wildcards"].split("=")[1]
            assert npy == {subject}, (subject, sorted(npy)[:3])
            assert "desc-listenersum" in fields["input"]
            continue
        if rule == "listener_sums":
            # every listener of one task, added up one run at a time
            task = fields["wildcards"].split("=")[1]
            assert set(TASK.findall(fields["input"])) == {task}
            continue
        assert len(npy) <= 1, f"{rule} reads the BOLD of {sorted(npy)}"
        if rule == "subject_scores":
            assert not npy      # it reads its fit's scores, never BOLD
        if rule == "fit_scores":
            # config/paper.yaml: mapping.shared_subjects = 1, one subject per fit
            assert len(npy) == 1, npy
            seen[next(iter(npy))] = True
        # the run tables (whole selection, one task's listeners) read GIfTI headers (TR counts)
        if rule not in {"run_table", "task_run_table"}:
            gii = set(BOLD_GII.findall(fields.get("input", "")))
            assert len(gii) <= 1, f"{rule} reads the GIfTIs of {sorted(gii)[:3]}"
    assert len(seen) == plan["subject"].nunique()


def test_paper_resources_declared(paper_dry_run):
    text, _, _, _ = paper_dry_run
    for rule, fields in _jobs(text):
        if rule == "all":
            continue
        res = fields.get("resources", "")
        assert "mem_mb=" in res and "runtime=" in res, (rule, res)
        if rule in {"story_features", "fit_scores"}:
            assert "gpu=" in res, (rule, res)


def test_default_profile_dry_run(tmp_path):
    text, _ = _snakemake("--profile", str(REPO / "profiles" / "default"), "-n",
                         "--configfile", str(REPO / "config" / "config.yaml"),
                         "--directory", str(tmp_path), cwd=tmp_path)
    assert "subject_scores" in text


def test_slurm_profile_keys(tmp_path):
    """Every key of the SLURM profile but ``executor`` is accepted by this Snakemake (the
    plugin is not installed here), and the GPU rules go to a GPU partition with a GPU."""
    prof = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert prof.pop("executor") == "slurm"
    for rule in ("story_features", "fit_scores"):
        assert prof["set-resources"][rule]["gpu"] == 1
        assert prof["set-resources"][rule]["slurm_partition"]
        assert "gres" not in prof["set-resources"][rule]  # the plugin rejects gpu + gres:gpu
    for key in ("slurm_partition", "runtime", "mem_mb"):
        assert key in prof["default-resources"]
    (tmp_path / "prof").mkdir()
    (tmp_path / "prof" / "config.yaml").write_text(yaml.safe_dump(prof))
    text, _ = _snakemake("--profile", str(tmp_path / "prof"), "-n",
                         "--configfile", str(REPO / "config" / "config.yaml"),
                         "--directory", str(tmp_path), cwd=tmp_path)
    # demo: 16 bold_cache jobs -> 1 group of 16 (components 20); run_table + 3 story_words -> 1
    assert text.count("Group job bold") == 1 and text.count("Group job prep") == 1


def test_paper_dry_run_through_the_slurm_profile(tmp_path):
    """The SLURM profile as shipped (`pip install -e ".[slurm]"` brings the plugin; the test
    extra does too) lays out the paper DAG: the executor is accepted, the GPU rules get a GPU
    partition and the short jobs are grouped."""
    pytest.importorskip("snakemake_executor_plugin_slurm",
                        reason="snakemake-executor-plugin-slurm not installed "
                               "(pip install -e \".[slurm]\")")
    if not (METADATA / "participants.tsv").exists():
        pytest.skip(f"no Narratives metadata at {METADATA}")
    text, seconds = _snakemake(
        "--profile", str(REPO / "profiles" / "slurm"), "-n",
        "--configfile", str(REPO / "config" / "paper.yaml"),
        "--config", f"dataset={{source: datalad, root: {METADATA}}}",
        "--directory", str(tmp_path), cwd=tmp_path)
    assert "invalid choice" not in text
    counts = {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", text, flags=re.M)}
    assert counts["fit_scores"] == 321 and counts["bold_cache"] == 621
    jobs = _jobs(text)
    fits = [f for rule, f in jobs if rule == "fit_scores"]
    # string resources (the partition) are filled in at submission: <TBD> in a dry run
    assert fits and all("slurm_partition=" in f["resources"] and "gpu=1" in f["resources"]
                        for f in fits)
    assert text.count("Group job bold") == -(-621 // 20)    # 20 bold_cache runs per submission
    assert text.count("Group job prep") == 1
