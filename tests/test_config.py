"""Configuration: one config per run, defaults only from the schema, checks at start.

The shipped configs are run through a real Snakemake from the root of a copy of the repository
(exactly as a user runs them, ``snakemake --cores 1 [--configfile config/X.yaml]``), and the
effective config the workflow writes must equal what the file states, every other key at its
schema default: nothing leaks from the demo file.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainpred.config import (apply_defaults, check_config, load_schema, prepare_config,
                              schema_defaults)
from brainpred.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
METADATA = REPO.parent / "shared" / "narratives"
EFFECTIVE = "results/config/desc-effective_config.yaml"
SHIPPED = ["config.yaml", "paper.yaml", "pieman.yaml"]


def _load(name):
    with open(REPO / "config" / name) as f:
        return yaml.safe_load(f)


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _get(d, path):
    for k in path:
        d = d[k]
    return d


def _repo_copy(tmp_path, with_metadata=False):
    """The workflow files of the repository in a fresh folder (its root is the cwd of the run)."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "Snakefile", root)
    for sub in ("config", "workflow", "profiles"):
        shutil.copytree(REPO / sub, root / sub)
    if with_metadata:
        if not (METADATA / "participants.tsv").exists():
            pytest.skip(f"no Narratives metadata at {METADATA}: the real-data configs plan "
                        "their runs from the release's participants.tsv and events")
        (root / "resources").mkdir()
        (root / "resources" / "narratives").symlink_to(METADATA)
    return root


def _snakemake(root, *args, check=True, timeout=300):
    # no job here loads a model: without HF_HUB_OFFLINE an uncached 'gpt2' (real-data configs)
    # is left to the features job instead of stopping the workflow at start
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# --------------------------------------------------------------------------------------------
# Unit tests
# --------------------------------------------------------------------------------------------

def test_apply_defaults_fills_missing_sections_and_keeps_stated_values():
    schema = load_schema()
    cfg = {"dataset": {"source": "synthetic", "root": "x"}, "mapping": {"n_folds": 3},
           "layers": {"enabled": True}}
    apply_defaults(cfg, schema)
    assert cfg["mapping"]["n_folds"] == 3                      # stated: kept
    assert cfg["mapping"]["n_components"] == 20                # missing key: schema default
    assert cfg["mapping"]["alphas"] == {"start": -1, "stop": 8, "num": 10}   # nested object
    assert cfg["layers"] == {"enabled": True, "layers": "all", "distance": 8}
    assert cfg["finetune"]["enabled"] is False                 # missing section: off
    assert cfg["controls"]["generated"]["enabled"] is False
    assert cfg["forecast"]["distances"] == list(range(-10, 31))  # the paper's, not the demo's
    # a missing section equals the schema defaults exactly
    assert cfg["syntax"] == schema_defaults(schema)["syntax"]


def test_schema_defaults_are_the_papers():
    d = schema_defaults(load_schema())
    assert d["model"]["name"] == "gpt2" and d["features"]["layer"] == 8
    assert d["forecast"] == {"distances": list(range(-10, 31)), "width": 7}
    assert d["mapping"]["n_components"] == 20 and d["mapping"]["delays"] == list(range(6))
    assert d["stats"]["fdr_q"] == 0.01 and d["stats"]["dstar_mask"] == "fdr"
    assert d["stats"]["dstar_reference"] == [0, 8] and d["stats"]["gain_distance"] == 8
    assert d["syntax"]["n_futures"] == 10
    assert d["finetune"]["corpus"]["hf_dataset"] == "wikitext"   # Wikipedia, never the stimuli
    for analysis in ("layers", "controls", "syntax", "finetune", "noise_ceiling"):
        assert d[analysis]["enabled"] is False


def _demo():
    cfg = _load("config.yaml")
    return prepare_config(cfg)


@pytest.mark.parametrize("ref, match", [([0, 9], r"stats.dstar_reference = \[0, 9\]: \[9\] "
                                                 r"not in forecast.distances"),
                                        ([15, 15], r"must differ")])
def test_bad_dstar_reference_is_rejected_at_start(ref, match):
    cfg = _load("config.yaml")
    cfg["stats"]["dstar_reference"] = ref
    with pytest.raises(ConfigError, match=match):
        prepare_config(cfg)


def test_finetuning_on_the_stimuli_of_real_data_is_refused():
    cfg = _demo()
    cfg["dataset"].update(source="local", root="/data/narratives")
    cfg["finetune"].update(enabled=True, corpus="stories")
    with pytest.raises(ConfigError, match=r"finetune.corpus = stories.*memorisation.*"
                                          r"finetune.allow_stimulus_corpus: true"):
        check_config(cfg)
    cfg["finetune"]["allow_stimulus_corpus"] = True            # deliberately: allowed
    check_config(cfg)
    cfg["finetune"].update(allow_stimulus_corpus=False, corpus=["wiki/*.txt"])
    check_config(cfg)
    synthetic = _demo()                                        # the demo may (machinery only)
    assert synthetic["finetune"]["corpus"] == "stories"
    check_config(synthetic)


def test_schema_errors_name_the_key_first():
    cfg = _load("config.yaml")
    cfg["features"]["layr"] = 3
    with pytest.raises(ConfigError) as err:
        prepare_config(cfg)
    first = str(err.value).splitlines()[0]
    assert "features" in first and "layr" in first and "config/README.md" in first
    cfg = _load("config.yaml")
    cfg["modle"] = {"name": "gpt2"}                             # unknown top-level key
    with pytest.raises(ConfigError, match=r"^config \(top level\): .*'modle' was unexpected"):
        prepare_config(cfg)


def test_readme_defaults_are_the_schema_defaults():
    """config/README.md's default column states the schema's default of every key."""
    doc = (REPO / "config" / "README.md").read_text()
    defaults = schema_defaults(load_schema())
    checked = 0
    section = None
    for line in doc.splitlines():
        m = re.match(r"^#+ `(\w+)`", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^\| `(\w+)` \| `([^`]*)` \|", line)
        if m and section in defaults and m.group(1) in defaults[section]:
            value = defaults[section][m.group(1)]
            if isinstance(value, (dict, list)) and len(str(value)) > 40:
                continue                                       # long values: shown shortened
            assert yaml.safe_load(m.group(2)) == value, (section, m.group(1), m.group(2), value)
            checked += 1
    assert checked > 60


# --------------------------------------------------------------------------------------------
# The shipped configs through a real Snakemake, from the repository root
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_effective_config_is_what_the_file_states(tmp_path, name):
    root = _repo_copy(tmp_path, with_metadata=name != "config.yaml")
    args = [] if name == "config.yaml" else ["--configfile", f"config/{name}"]
    _snakemake(root, "--cores", "1", EFFECTIVE, *args)
    effective = yaml.safe_load((root / EFFECTIVE).read_text())
    stated = _load(name)
    for path, value in _leaves(stated):
        assert _get(effective, path) == value, (name, path)
    expected = apply_defaults(copy.deepcopy(stated), load_schema())
    assert effective == expected, name
    if name != "config.yaml":
        demo = _load("config.yaml")
        # nothing of the demo's analysis settings leaks into a real-data run
        for path, value in _leaves(demo):
            if path[0] in ("finetune", "layers", "controls", "syntax", "synthetic") \
                    and path[0] not in stated:
                assert _get(effective, path[:1]) == _get(expected, path[:1])
        for section in ("layers", "controls", "syntax", "finetune", "noise_ceiling"):
            assert section in stated and "enabled" in stated[section], (name, section)


@pytest.mark.slow
def test_paper_dag_plans_the_papers_analyses(tmp_path):
    root = _repo_copy(tmp_path, with_metadata=True)
    proc = _snakemake(root, "-n", "--configfile", "config/paper.yaml")
    text = proc.stdout + proc.stderr
    counts = {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", text, flags=re.M)}
    assert counts["finetune_train"] == 2                        # alphas 0 and 0.5
    # fine-tuning reads no stimulus transcript (the corpus is Wikipedia)
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        if block.startswith("rule finetune_train:"):
            assert "desc-text.txt" not in block
    _snakemake(root, "--cores", "1", EFFECTIVE, "--configfile", "config/paper.yaml")
    cfg = yaml.safe_load((root / EFFECTIVE).read_text())
    assert cfg["finetune"]["corpus"]["hf_dataset"] == "wikitext"
    assert cfg["finetune"]["steps"] >= 1000 and 0.5 in cfg["finetune"]["alphas"]
    assert cfg["layers"]["layers"] == "all"
    assert cfg["controls"]["distances"] is None and cfg["syntax"]["distances"] is None
    assert len(cfg["forecast"]["distances"]) == 41
    assert cfg["controls"]["widths"] == list(range(1, 11))
    assert cfg["syntax"]["n_futures"] == 10


@pytest.mark.slow
def test_stimulus_finetuning_on_real_data_stops_the_workflow_at_start(tmp_path):
    root = _repo_copy(tmp_path, with_metadata=True)
    proc = _snakemake(root, "-n", "--configfile", "config/paper.yaml", "--config",
                      "finetune={corpus: stories}", check=False)
    assert proc.returncode != 0
    assert "finetune.allow_stimulus_corpus: true" in proc.stdout + proc.stderr


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["features"].update(layer=99), r"features.layer = \[99\]: \[99\] outside the "
                                               r"layers 0..12 of model.name = 'tiny-gpt2'"),
    (lambda c: c["layers"].update(layers=[0, 99]), r"layers.layers = \[0, 99\]: \[99\]"),
    (lambda c: c["mapping"].update(n_components=500), r"mapping.n_components = 500: more than "
                                                      r"the 64 units"),
    (lambda c: c["model"].update(name="/no/such/model"), r"model.name = '/no/such/model': no "
                                                         r"such folder"),
])
def test_model_dependent_keys_are_checked_at_start(edit, match):
    cfg = _load("config.yaml")
    edit(cfg)
    with pytest.raises(ConfigError, match=match):
        prepare_config(cfg)


def test_model_dims_from_a_local_folder_and_the_offline_cache(tmp_path, monkeypatch):
    import json

    from brainpred.config import model_dims

    folder = tmp_path / "my_model"
    folder.mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        model_dims(str(folder))
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 6, "hidden_size": 32}))
    assert model_dims(str(folder)) == (6, 32)
    cfg = _load("config.yaml")
    cfg["model"]["name"] = str(folder)
    with pytest.raises(ConfigError, match=r"features.layer = \[8\]: \[8\] outside the layers "
                                          r"0..6"):
        prepare_config(cfg)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match=r"not in the local HuggingFace cache.*hf download "
                                          r"no-such-org/model"):
        model_dims("no-such-org/model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert model_dims("no-such-org/model") is None              # left to the features job


# --------------------------------------------------------------------------------------------
# Cross-key checks at start (check_config) and the schema-filled helpers
# --------------------------------------------------------------------------------------------

def _filled_demo(**sections):
    """The demo config, schema-filled, with ``sections`` updated (no model needed)."""
    cfg = _load("config.yaml")
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return prepare_config(cfg, check_model=False)


@pytest.mark.parametrize("sections, match", [
    # dstar_reference both in forecast.distances (was only caught at the group step)
    ({"stats": {"dstar_reference": [0, 99]}},
     r"stats.dstar_reference = \[0, 99\]: \[99\] not in forecast.distances.*add them"),
    ({"stats": {"gain_distance": 99}},
     r"stats.gain_distance = 99: not in forecast.distances.*'best'"),
    ({"controls": {"enabled": True, "distances": [0, 8, 8]}},
     r"controls.distances = \[0, 8, 8\]: \[8\] given more than once.*null for "
     r"forecast.distances"),
    ({"controls": {"enabled": True, "distances": [0, 500]}},
     r"controls.distances = \[0, 500\]: \[500\] outside the distances -100..100"),
    ({"syntax": {"enabled": True, "distances": [-200]}},
     r"syntax.distances = \[-200\]: \[-200\] outside the distances -100..100.*null"),
    ({"layers": {"enabled": True, "distance": 101}},
     r"layers.distance = \[101\]: \[101\] outside the distances -100..100.*paper: 8"),
    ({"controls": {"enabled": True, "widths": [3, 7], "width_distance": 150}},
     r"controls.width_distance = \[150\]: \[150\] outside.*'best'"),
    ({"controls": {"enabled": True, "widths": [3, 3]}},
     r"controls.widths = \[3, 3\]: \[3\] given more than once.*distinct widths"),
    ({"finetune": {"enabled": True, "alphas": [0.25, 0.5]}},
     r"finetune.alphas = \[0.25, 0.5\]: 0 is missing.*Add 0"),
    ({"finetune": {"enabled": True, "steps": 10, "checkpoints": [5, 20]}},
     r"finetune.checkpoints = \[5, 20\]: \[20\] outside 1..finetune.steps \(10\)"),
    ({"finetune": {"enabled": True, "context": 8, "target_distance": 8}},
     r"finetune.target_distance = 8: not smaller than finetune.context = 8"),
    ({"finetune": {"enabled": True, "train_layers": [12, 8]}},
     r"finetune.train_layers = \[12, 8\]: first > last"),
])
def test_cross_key_checks_stop_the_workflow_at_start(sections, match):
    with pytest.raises(ConfigError, match=match):
        _filled_demo(**sections)


def test_checks_the_schema_also_makes_hold_for_direct_callers():
    """check_config on a schema-filled config that skipped validation (library use)."""
    cfg = _filled_demo()
    cfg["finetune"].update(enabled=True, alphas=[0.0, 1.0])
    with pytest.raises(ConfigError, match=r"finetune.alphas = \[0.0, 1.0\]: \[1.0\] outside "
                                          r"\[0, 1\)"):
        check_config(cfg)
    cfg = _filled_demo()
    cfg["controls"].update(enabled=True, widths=[0, 7])
    with pytest.raises(ConfigError, match=r"controls.widths = \[0, 7\]: \[0\] not a positive"):
        check_config(cfg)


def test_valid_distances_and_disabled_analyses_pass():
    cfg = _filled_demo(controls={"enabled": True, "distances": [-3, 0, 8], "widths": [1, 7],
                                 "width_distance": 8},
                       syntax={"enabled": True, "distances": None},
                       layers={"enabled": True, "distance": -5},
                       finetune={"enabled": True, "alphas": [0.5, 0.0], "steps": 10,
                                 "checkpoints": [5], "eval_layers": [0, 12]})
    check_config(cfg)
    # a disabled analysis is not checked (its keys are not read)
    _filled_demo(controls={"enabled": False, "widths": [3, 3]},
                 finetune={"enabled": False, "alphas": [0.5]})


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["finetune"].update(enabled=True, eval_layers=[0, 13]),
     r"finetune.eval_layers = \[0, 13\]: \[13\] outside the layers 0..12 .*Use layers 0..12"),
    (lambda c: c["finetune"].update(enabled=True, target_layer=13),
     r"finetune.target_layer = \[13\]: \[13\] outside"),
    (lambda c: c["layers"].update(enabled=True, layers=[0, 13]),
     r"layers.layers = \[0, 13\]: \[13\] outside the layers 0..12"),
    (lambda c: c["features"].update(layer=13), r"features.layer = \[13\]: \[13\] outside"),
])
def test_layer_keys_are_checked_against_the_model_at_start(edit, match):
    from brainpred.config import check_model_config

    cfg = _filled_demo()
    edit(cfg)
    with pytest.raises(ConfigError, match=match):
        check_model_config(cfg, (12, 64))
    check_model_config(_filled_demo(), (12, 64))


def test_defaults_and_filled_are_the_schema():
    from brainpred.config import defaults, filled

    schema = load_schema()
    assert defaults() == schema_defaults(schema)
    assert defaults("mapping") == schema_defaults(schema)["mapping"]
    d = defaults("finetune")
    d["alphas"].append(0.9)                                   # a copy: the next call is intact
    assert defaults("finetune")["alphas"] == [0.0, 0.5]
    with pytest.raises(ConfigError, match="not a config section"):
        defaults("mappings")
    part = {"mapping": {"n_folds": 3}}
    full = filled(part)
    assert part == {"mapping": {"n_folds": 3}}                # not changed in place
    assert full["mapping"]["n_folds"] == 3 and full["mapping"]["n_components"] == 20
    assert full == apply_defaults(copy.deepcopy(part), schema)
    assert filled({"n_folds": 3}, "mapping") == full["mapping"]
    assert filled(section="model") == defaults("model")
    assert defaults("dataset")["url"] == "///labs/hasson/narratives"
