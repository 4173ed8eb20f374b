"""Workflow helpers: run plan, model tags, config schema."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainpred.errors import ConfigError
from brainpred.plan import model_tag, run_basename, run_plan

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _default_config():
    with open(REPO / "config" / "config.yaml") as f:
        return yaml.safe_load(f)


def test_run_basename():
    assert run_basename("sub-001", "pieman", "2") == "sub-001_task-pieman_run-2"
    assert run_basename("sub-001", "tunnel", "") == "sub-001_task-tunnel"
    assert run_basename("sub-001", "tunnel", float("nan")) == "sub-001_task-tunnel"


def test_model_tag(tmp_path):
    # BIDS labels: letters and digits only (the model-<label> entity)
    assert model_tag("tiny-gpt2") == "tinygpt2"
    assert model_tag("openai-community/gpt2") == "openaicommunitygpt2"
    local = tmp_path / "my_model"
    local.mkdir()
    assert model_tag(str(local) + "/") == "mymodel"
    with pytest.raises(ConfigError, match="model.name"):
        model_tag("--/")


def test_run_plan_synthetic_default():
    plan = run_plan(_default_config())
    cfg = _default_config()["synthetic"]
    assert plan["subject"].nunique() == cfg["n_subjects"]
    # not every subject hears the same stories
    heard = plan.groupby("subject")["story"].apply(frozenset)
    assert heard.nunique() > 1
    # the excluded repeat run is not planned
    assert not plan["basename"].str.endswith("_run-2").any()
    assert plan["basename"].is_unique


def test_run_plan_selection_and_errors():
    cfg = _default_config()
    cfg["dataset"]["subjects"] = ["sub-001", "sub-003"]
    plan = run_plan(cfg)
    assert sorted(plan["subject"].unique()) == ["sub-001", "sub-003"]
    cfg["dataset"]["subjects"] = ["sub-999"]
    with pytest.raises(ConfigError, match="dataset.subjects"):
        run_plan(cfg)
    cfg["dataset"]["subjects"] = "all"
    cfg["dataset"]["source"] = "local"
    cfg["dataset"]["root"] = "/nonexistent/narratives"
    with pytest.raises(ConfigError, match="dataset.root"):
        run_plan(cfg)


def test_schema_accepts_default_and_rejects_bad_values():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    cfg = _default_config()
    validate(cfg, str(SCHEMA))
    bad = _default_config()
    bad["mapping"]["inner_cv"] = "shuffle"
    with pytest.raises(WorkflowError, match="inner_cv"):
        validate(bad, str(SCHEMA))
    bad = _default_config()
    bad["features"]["layr"] = 3
    with pytest.raises(WorkflowError):
        validate(bad, str(SCHEMA))


def test_every_config_key_is_documented():
    doc = (REPO / "config" / "README.md").read_text()
    cfg = _default_config()
    for section, values in cfg.items():
        assert f"## `{section}`" in doc, section
        for key in values:
            assert f"| `{key}` |" in doc, f"{section}.{key} is not in config/README.md"
    schema = yaml.safe_load(SCHEMA.read_text())
    for section, values in cfg.items():
        assert section in schema["properties"], section
        if isinstance(values, dict):                 # list-valued: models, nuisance
            assert set(values) <= set(schema["properties"][section]["properties"]), section


def test_cli_overrides_get_their_schema_types():
    """snakemake --config section='{key: value}' gives strings; coerce_config types them."""
    from brainpred.config import coerce_config

    schema = yaml.safe_load(SCHEMA.read_text())
    cfg = _default_config()
    cfg["layers"].update(enabled="false", layers=["0", "8"], distance="8")
    cfg["features"]["layer"] = "6"
    cfg["mapping"]["alphas"] = {"start": "-1", "stop": "8", "num": "10"}
    cfg["controls"].update(distances="null", width_distance="best")
    cfg["finetune"].update(lr="5e-5", alphas=["0", "0.5"])
    cfg["dataset"]["tasks"] = ["pieman"]
    coerce_config(cfg, schema)
    assert cfg["layers"] == {"enabled": False, "layers": [0, 8], "distance": 8}
    assert cfg["features"]["layer"] == 6
    assert cfg["mapping"]["alphas"] == {"start": -1, "stop": 8, "num": 10}
    assert cfg["controls"]["distances"] is None and cfg["controls"]["width_distance"] == "best"
    assert cfg["finetune"]["lr"] == 5e-5 and cfg["finetune"]["alphas"] == [0.0, 0.5]
    assert cfg["dataset"]["tasks"] == ["pieman"]
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(cfg, schema)


def test_snakemake_lint_is_clean():
    """The workflow follows Snakemake's conventions (log, conda, no functions beside rules...)."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--snakefile",
                           str(REPO / "Snakefile")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in out, out[-3000:]


# ---------------------------------------------------------------------------------------------
# The rule files: shared definitions, no schema defaults restated, resources from the model
# ---------------------------------------------------------------------------------------------

RULES = REPO / "workflow" / "rules"
# included first by the Snakefile: the only files whose names other .smk files may use
SHARED = ("plan.smk", "paths.smk", "resources.smk")


def _top_level_names(text):
    """Names a .smk file binds at its top level (assignments, defs, imports)."""
    import re

    names = set(re.findall(r"^([A-Za-z_]\w*)\s*=(?!=)", text, flags=re.M))
    names |= set(re.findall(r"^\s*def (\w+)\(", text, flags=re.M))
    names |= set(re.findall(r"\bimport\s.*?\bas\s+(\w+)", text))
    return names


def test_rule_files_use_only_shared_names():
    """A rule file never uses a name another rule file defines (only plan/paths/resources)."""
    import re

    files = {p.name: p.read_text() for p in RULES.glob("*.smk")}
    assert set(SHARED) <= set(files)
    assert "common.smk" not in files
    snakefile = (REPO / "Snakefile").read_text()
    includes = re.findall(r'^include: "workflow/rules/(\w+\.smk)"', snakefile, flags=re.M)
    assert tuple(includes[:3]) == SHARED and set(includes) == set(files)
    for name, text in files.items():
        if name in SHARED:
            continue
        own = _top_level_names(text)
        for other, other_text in {**files, "Snakefile": snakefile}.items():
            if other in (name, *SHARED):
                continue
            used = sorted(n for n in own if re.search(rf"\b{n}\b", other_text))
            assert not used, f"{other} uses {used}, defined in {name}"
        # no functions beside rules (snakemake --lint): shared files hold them
        assert not re.search(r"^\s*def ", text, flags=re.M), name


def test_rule_files_restate_no_schema_default():
    """The config is filled from the schema at start: no `.get(key, default)` on it in rules."""
    import re

    for path in [REPO / "Snakefile", *RULES.glob("*.smk")]:
        text = path.read_text()
        assert not re.search(r"config(\[[^\]]+\])*\.get\(", text), path.name
        assert not re.search(r"_?[A-Z]+\.get\(\"", text.replace("MAPS.get(", "")), path.name
    # mapping.shared_subjects: the schema's default only
    for path in RULES.glob("*.smk"):
        for line in path.read_text().splitlines():
            if "shared_subjects" in line and not line.lstrip().startswith("#"):
                assert 'config["mapping"]["shared_subjects"]' in line, (path.name, line)


def _resources(tmp_path, model, space="fsaverage6", **sections):
    """resources.smk evaluated (it is plain Python) for a demo config with ``model``."""
    from brainpred.config import prepare_config

    cfg = _default_config()
    cfg["model"]["name"] = model
    cfg["dataset"]["space"] = space
    for key, value in sections.items():
        cfg[key].update(value)
    prepare_config(cfg)
    ns = {"config": cfg, "SPACE": space, "MODEL": model_tag(model), "STORIES": ["a", "b"],
          "SUBJECTS": ["sub-001"], "TASK_RUNS": {}}
    code = compile((RULES / "resources.smk").read_text(), "resources.smk", "exec")
    exec(code, ns)
    return ns


class _Input(list):
    @property
    def bold(self):
        return list(self)


def _bold(tmp_path, n_trs, n_vertices):
    path = tmp_path / "bold.npy"
    with open(path, "wb") as f:
        f.truncate(n_trs * n_vertices * 4)   # sparse: the size is what counts
    return _Input([str(path)])


def test_mapping_memory_from_the_model_config(tmp_path):
    """fit_scores' mem_mb uses the model's width from its config: GPT-2 small (a local folder
    with its config.json) gives docs/scaling.md's 4.9 GB for 1,000 TRs x 41 distances; the
    64-unit tiny-gpt2 far less; the layer sweep counts the model's own layers."""
    import json

    gpt2 = tmp_path / "gpt2_small"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"n_layer": 12, "n_embd": 768}))
    big = tmp_path / "wide"
    big.mkdir()
    (big / "config.json").write_text(json.dumps({"n_layer": 24, "n_embd": 1024}))
    dists = {"distances": list(range(-10, 31)), "width": 7}
    inp = _bold(tmp_path, 1000, 81924)
    sweep = {"layers": "all"}
    res = {m: _resources(tmp_path, str(p), forecast=dists, layers=sweep)
           for m, p in [("gpt2", gpt2), ("wide", big)]}
    res["tiny"] = _resources(tmp_path, "tiny-gpt2", forecast=dists, layers=sweep)
    assert (res["gpt2"]["MODEL_LAYERS"], res["gpt2"]["MODEL_WIDTH"]) == (13, 768)
    assert (res["tiny"]["MODEL_LAYERS"], res["tiny"]["MODEL_WIDTH"]) == (13, 64)
    # 2000 + 4 x 312.5 MB of BOLD + 2 x 1000 x 768 x (1 + 7 x 41) x 4 B
    assert res["gpt2"]["mapping_mem_mb"](None, inp) == 4937
    assert res["tiny"]["mapping_mem_mb"](None, inp) == 3390
    assert res["wide"]["mapping_mem_mb"](None, inp) == 5500
    # the runtime does not depend on the width (the ridge sees PCA components)
    assert len({r["mapping_runtime"](None, inp) for r in res.values()}) == 1
    assert res["wide"]["n_analysis_conditions"]("layers") == 2 * 25
    assert res["gpt2"]["n_analysis_conditions"]("layers") == 2 * 13
    assert _resources(tmp_path, str(big))["n_analysis_conditions"]("layers") == 2 * 4  # [0, 4, 8, 12]


def test_uncached_hub_model_falls_back_to_gpt2_small(tmp_path, monkeypatch):
    """A hub id not in the local cache (model_dims: None) is sized as GPT-2 small."""
    import brainpred.config

    monkeypatch.setattr(brainpred.config, "model_dims", lambda name: None)
    res = _resources(tmp_path, "tiny-gpt2")
    assert (res["MODEL_LAYERS"], res["MODEL_WIDTH"]) == (13, 768)
