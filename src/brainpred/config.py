"""The workflow configuration: schema defaults, types, cross-key checks, the effective config.

Defaults live in one place, ``workflow/schemas/config.schema.yaml``. A run's configuration is
one file (``config/config.yaml``, the demo, when no ``--configfile`` is given; otherwise only
the ``--configfile`` files) plus ``--config`` overrides; every key the files leave out takes its
schema default (:func:`apply_defaults`), never a value of another config file. The result, the
*effective config*, is written next to the results (rule ``effective_config``) and shown in the
report.

:func:`prepare_config` is what the Snakefile calls once, when the workflow starts: it types the
``--config`` strings, validates against the schema, fills the defaults and runs the cross-key
checks (:func:`check_config`) that a schema cannot express, so that a wrong value stops the run
before the first job instead of inside one.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .errors import ConfigError

__all__ = ["SCHEMA_PATH", "load_schema", "schema_defaults", "apply_defaults", "check_config",
           "model_dims", "check_model_config", "check_plan_sizes", "coerce_config",
           "prepare_config", "dump_config", "RUNTIME_KEYS", "result_settings", "with_runtime",
           "with_runtime_config"]

#: The config schema of the workflow (``workflow/schemas/config.schema.yaml``).
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(path=None):
    """The config schema as a dict (``path`` defaults to :data:`SCHEMA_PATH`)."""
    path = Path(path or SCHEMA_PATH)
    if not path.exists():
        raise ConfigError(f"{path}: the config schema is missing; reinstall brainpred from its "
                          "repository (pip install -e .).")
    with open(path) as f:
        return yaml.safe_load(f)


_TRUE, _FALSE, _NULL = ("true", "True", "yes", "on"), ("false", "False", "no", "off"), ("null", "~", "None")


def _types(schema):
    t = schema.get("type")
    types = [t] if isinstance(t, str) else list(t or [])
    for alt in schema.get("oneOf", []) + schema.get("anyOf", []):
        types += _types(alt)
    return types


def _coerce_scalar(value, types):
    if "boolean" in types and value in _TRUE + _FALSE:
        return value in _TRUE
    if "null" in types and value in _NULL:
        return None
    if "integer" in types:
        try:
            return int(value)
        except ValueError:
            pass
    if "number" in types:
        try:
            return float(value)
        except ValueError:
            pass
    return value


def coerce_config(config, schema):
    """Give ``--config`` values their schema types, in place.

    ``snakemake --config section='{key: value}'`` reads nested values with YAML's BaseLoader,
    which keeps every scalar a string (``'false'``, ``'6'``): they are converted here where the
    schema expects a boolean, an integer, a number or null, so that overrides such as
    ``--config layers='{enabled: false}'`` or ``features='{layer: 6}'`` work.

    Parameters
    ----------
    config : dict
        The merged workflow configuration.
    schema : dict
        The JSON schema (``workflow/schemas/config.schema.yaml``).

    Returns
    -------
    dict
        ``config``.
    """
    def walk(value, sch):
        if isinstance(value, dict):
            props = sch.get("properties", {})
            for key, v in value.items():
                if key in props:
                    value[key] = walk(v, props[key])
            return value
        if isinstance(value, list):
            items = sch.get("items")
            if items is None:
                for alt in sch.get("oneOf", []):
                    if alt.get("type") == "array":
                        items = alt.get("items")
            return [walk(v, items) for v in value] if items else value
        if isinstance(value, str):
            return _coerce_scalar(value, _types(sch))
        return value

    return walk(config, schema)


def _has_default(schema):
    if "default" in schema:
        return True
    return any(_has_default(s) for s in (schema.get("properties") or {}).values())


def schema_defaults(schema):
    """The nested dict of every default the schema declares (objects without any left out)."""
    out = {}
    for key, sub in (schema.get("properties") or {}).items():
        if "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        elif sub.get("type") == "object" and _has_default(sub):
            out[key] = schema_defaults(sub)
    return out


def apply_defaults(config, schema):
    """Fill every key the config leaves out with its schema default, in place.

    A missing section (``finetune``, say) becomes its defaults, so an analysis a config does
    not mention is off (``enabled: false``) rather than inherited from another file. Values the
    config states are never changed.

    Parameters
    ----------
    config : dict
    schema : dict
        The JSON schema (:func:`load_schema`).

    Returns
    -------
    dict
        ``config``.
    """
    for key, sub in (schema.get("properties") or {}).items():
        if key not in config:
            if "default" in sub:
                config[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object" and _has_default(sub):
                config[key] = {}
        if isinstance(config.get(key), dict) and sub.get("properties"):
            apply_defaults(config[key], sub)
    return config


def _distances(config):
    return [int(d) for d in config["forecast"]["distances"]]


def check_config(config):
    """Cross-key checks that the schema cannot express; raise :class:`ConfigError`.

    Parameters
    ----------
    config : dict
        A validated config with its defaults filled (:func:`apply_defaults`).

    Raises
    ------
    ConfigError
        Naming the key and the fix, for: ``stats.dstar_reference`` not two different distances
        of ``forecast.distances``; fine-tuning on the stimulus transcripts
        (``finetune.corpus: stories``) of real data without ``finetune.allow_stimulus_corpus``.
    """
    distances = _distances(config)
    ref = [int(d) for d in config["stats"]["dstar_reference"]]
    missing = [d for d in ref if d not in distances]
    if missing:
        raise ConfigError(
            f"stats.dstar_reference = {ref}: {missing} not in forecast.distances {distances}. "
            "Use two of the fitted distances (paper: [0, 8]) or add them to forecast.distances.")
    if ref[0] == ref[1]:
        raise ConfigError(
            f"stats.dstar_reference = {ref}: the two distances must differ (the d* map is shown "
            "where F(d1) - F(d0) is reliably above 0; paper: [0, 8]).")
    gd = config["stats"]["gain_distance"]
    if gd != "best" and int(gd) not in distances:
        raise ConfigError(
            f"stats.gain_distance = {gd}: not in forecast.distances {distances}. Use one of "
            "them (paper: 8) or 'best' (the group's best distance).")
    ft = config.get("finetune") or {}
    if (ft.get("enabled") and ft.get("corpus") == "stories"
            and config["dataset"]["source"] != "synthetic"
            and not ft.get("allow_stimulus_corpus")):
        raise ConfigError(
            "finetune.corpus = stories with real data: the model would be fine-tuned on the "
            "very transcripts it is then scored on, so the 'fine-tuning gain' would measure "
            "memorisation of the stimuli, not a better model of language. Use a training "
            "corpus (the paper: Wikipedia, e.g. finetune.corpus: {hf_dataset: wikitext, "
            "config: wikitext-103-raw-v1}, or a list of text files), or set "
            "finetune.allow_stimulus_corpus: true to do it deliberately.")
    return config


def check_plan_sizes(runs, config):
    """Folds and PCA sizes against the data, before any job: raise :class:`ConfigError`.

    Parameters
    ----------
    runs : DataFrame
        The run plan with ``subject`` and ``n_trs`` (runs of unknown length, ``n_trs <= 0``,
        e.g. not yet downloaded, are left out).
    config : dict
        ``mapping`` (``n_folds``, ``n_inner_folds``, ``n_components``, ``gap_trs``).
    """
    known = runs[runs["n_trs"].astype(int) > 0]
    if known.empty:
        return config
    per_subject = known.drop_duplicates(["subject", "basename"] if "basename" in known
                                        else ["subject", "task", "run"])
    totals = per_subject.groupby("subject")["n_trs"].sum()
    shortest, who = int(totals.min()), str(totals.idxmin())
    mc = config["mapping"]
    n_folds, n_inner = int(mc["n_folds"]), int(mc["n_inner_folds"])
    test = -(-shortest // n_folds)
    train = shortest - test - 2 * int(mc["gap_trs"])
    if train < 2 * n_inner or test < 2:
        raise ConfigError(
            f"mapping.n_folds = {n_folds} (n_inner_folds = {n_inner}, gap_trs = "
            f"{mc['gap_trs']}): {who} has {shortest} TRs, too few for folds of at least 2 "
            f"test TRs and {n_inner} inner folds of 2 training TRs. Use fewer folds (paper: 5).")
    if int(mc["n_components"]) > train // n_inner * (n_inner - 1):
        raise ConfigError(
            f"mapping.n_components = {mc['n_components']}: more than the "
            f"{train // n_inner * (n_inner - 1)} TRs of {who}'s smallest inner training fold, "
            "so PCA would silently keep fewer. Use fewer components (paper: 20).")
    return config


def _offline():
    import os

    return any(os.environ.get(v, "") not in ("", "0", "false", "False")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def model_dims(name):
    """``(n_layers, hidden_size)`` of a model from its config alone (no weights loaded).

    ``tiny-gpt2``: its fixed config; a local folder: its ``config.json``; a hub id: the
    ``config.json`` in the local HuggingFace cache. ``None`` when a hub id is not cached and the
    hub may be reached (the download happens in the features job).

    Raises
    ------
    ConfigError
        ``model.name`` is a local path that does not exist or has no ``config.json``, or a hub id
        that is not cached while HF_HUB_OFFLINE is set.
    """
    import json

    from .lm import TINY_GPT2, TINY_GPT2_CONFIG

    if name == TINY_GPT2:
        return int(TINY_GPT2_CONFIG["n_layer"]), int(TINY_GPT2_CONFIG["n_embd"])
    path = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or path.exists()
    cfg_file = None
    if looks_local:
        if not path.is_dir():
            raise ConfigError(f"model.name = {name!r}: no such folder. Give a local model "
                              "folder (save_pretrained layout), a HuggingFace hub id such as "
                              "'gpt2', or 'tiny-gpt2' (offline test model).")
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ConfigError(f"model.name = {name!r}: the folder has no config.json, so it is "
                              "not a saved HuggingFace model (model.save_pretrained(folder)).")
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(name, "config.json")
        except Exception:  # noqa: BLE001 - an unusual id: let the features job say why
            hit = None
        if isinstance(hit, str):
            cfg_file = Path(hit)
        elif _offline():
            raise ConfigError(
                f"model.name = {name!r}: not in the local HuggingFace cache, and HF_HUB_OFFLINE "
                f"is set. Download it on a machine with internet (`hf download {name}`, then "
                "copy the cache), point model.name to a local model folder, or unset "
                "HF_HUB_OFFLINE.")
        else:
            return None
    with open(cfg_file, encoding="utf-8") as f:
        mc = json.load(f)
    n_layers = mc.get("n_layer", mc.get("num_hidden_layers"))
    hidden = mc.get("n_embd", mc.get("hidden_size"))
    if n_layers is None or hidden is None:
        return None
    return int(n_layers), int(hidden)


def check_model_config(config, dims):
    """Layers and PCA sizes against the model's ``dims = (n_layers, hidden)``; raise
    :class:`ConfigError` naming the key (activations have layers 0..n_layers)."""
    if dims is None:
        return config
    n_layers, hidden = dims
    name = config["model"]["name"]
    checks = [("features.layer", [config["features"]["layer"]])]
    if config["layers"]["enabled"] and config["layers"]["layers"] != "all":
        checks.append(("layers.layers", config["layers"]["layers"]))
    ft = config["finetune"]
    if ft["enabled"]:
        checks += [("finetune.target_layer", [ft["target_layer"]]),
                   ("finetune.eval_layers", ft["eval_layers"]),
                   ("finetune.train_layers", ft["train_layers"])]
    for key, values in checks:
        bad = [int(v) for v in values if not 0 <= int(v) <= n_layers]
        if bad:
            raise ConfigError(f"{key} = {values}: {bad} outside the layers 0..{n_layers} of "
                              f"model.name = {name!r} (0 = token embedding).")
    n_comp = int(config["mapping"]["n_components"])
    if n_comp > hidden:
        raise ConfigError(f"mapping.n_components = {n_comp}: more than the {hidden} units of "
                          f"{name!r}'s activations; PCA would silently keep {hidden}. Use at "
                          f"most {hidden} (paper: 20).")
    return config


def prepare_config(config, schema=None, check_model=True):
    """Type, validate, complete and check the workflow config, in place (Snakefile entry).

    Parameters
    ----------
    config : dict
        The merged config files and ``--config`` overrides.
    schema : dict, optional
        The schema (default: :func:`load_schema`).
    check_model : bool
        Also check the layer keys and PCA size against the model's config
        (:func:`model_dims`, :func:`check_model_config`).

    Returns
    -------
    dict
        ``config``, now the effective config.
    """
    import jsonschema

    schema = schema or load_schema()
    coerce_config(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            key = ".".join(str(p) for p in e.absolute_path) or "(top level)"
            lines.append(f"{key}: {e.message}")
        more = f"\n  (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise ConfigError(f"config {lines[0]} (every key and value: config/README.md; "
                          "checked against workflow/schemas/config.schema.yaml)"
                          + "".join(f"\n  {line}" for line in lines[1:]) + more)
    apply_defaults(config, schema)
    check_config(config)
    if check_model:
        check_model_config(config, model_dims(config["model"]["name"]))
        if config["dataset"]["source"] == "synthetic":
            _check_synthetic_layers(config["synthetic"], model_dims(config["synthetic"]["model"]))
    return config


def _check_synthetic_layers(syn, dims):
    if dims is None:
        return
    for key in ("layer", "depth_layer"):
        if not 0 <= int(syn[key]) <= dims[0]:
            raise ConfigError(f"synthetic.{key} = {syn[key]}: outside the layers 0..{dims[0]} of "
                              f"synthetic.model = {syn['model']!r}.")


#: Keys that change how fast or where a job runs, never its results: they are not job params
#: (Snakemake re-runs a job whose params change), the scripts read them from the full config.
RUNTIME_KEYS = {
    "dataset": ("download_jobs",),
    "model": ("batch_size", "device"),
    "mapping": ("backend", "target_batch"),
    "noise_ceiling": ("batch",),
}


def result_settings(section_cfg, section):
    """``section_cfg`` without its :data:`RUNTIME_KEYS` (what a job's params may hold)."""
    drop = RUNTIME_KEYS.get(section, ())
    return {k: v for k, v in (section_cfg or {}).items() if k not in drop}


def with_runtime(section_cfg, full_config, section):
    """``section_cfg`` (from a job's params) with the runtime keys of ``full_config`` added."""
    out = dict(section_cfg or {})
    for key in RUNTIME_KEYS.get(section, ()):
        if key in (full_config.get(section) or {}):
            out[key] = full_config[section][key]
    return out


def with_runtime_config(params_config, full_config):
    """A params config of several sections with each section's runtime keys added back."""
    return {k: with_runtime(v, full_config, k) if isinstance(v, dict) and k in RUNTIME_KEYS
            else v for k, v in params_config.items()}


def dump_config(config):
    """The config as YAML text, keys in the schema's order (for the effective-config file)."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
