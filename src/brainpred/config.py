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
import functools
import json
import os
import re
from pathlib import Path

import yaml

from .errors import ConfigError
from .lm import TINY_MODELS, tiny_dims

__all__ = ["SCHEMA_PATH", "load_schema", "schema_defaults", "apply_defaults", "defaults",
           "filled", "check_config", "model_dims", "check_model_config", "check_models_config",
           "check_plan_sizes",
           "coerce_config", "prepare_config", "dump_config", "RUNTIME_KEYS", "result_settings",
           "with_runtime", "with_runtime_config"]

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
        elif isinstance(config.get(key), list) and (sub.get("items") or {}).get("properties"):
            # a list of objects (``models``): each item gets its keys' defaults
            for item in config[key]:
                if isinstance(item, dict):
                    apply_defaults(item, sub["items"])
    return config


@functools.lru_cache(maxsize=1)
def _schema():
    """:data:`SCHEMA_PATH`, read once per process (never modified: callers get copies)."""
    return load_schema()


def defaults(section=None):
    """The schema's defaults, a fresh copy: of the config section ``section``, or of all.

    Parameters
    ----------
    section : str, optional
        A top-level key (``"mapping"``, ``"finetune"``, ...); None: the nested dict of every
        section.

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        ``section`` is not a section of the schema that declares defaults.
    """
    out = schema_defaults(_schema())
    if section is None:
        return out
    if section not in out:
        raise ConfigError(f"{section!r}: not a config section with schema defaults; expected "
                          f"one of {sorted(out)}.")
    return out[section]


def filled(config=None, section=None):
    """A copy of ``config`` with every key it leaves out at its schema default.

    What library code and tests pass where the workflow passes its effective config
    (:func:`prepare_config`): no validation and no cross-key checks, only the defaults.

    Parameters
    ----------
    config : dict, optional
        A (partial) workflow config; or, with ``section``, a (partial) config section.
    section : str, optional
        ``config`` is this section (``filled({"n_folds": 3}, "mapping")``).

    Returns
    -------
    dict
        A new dict; ``config`` is not changed.
    """
    config = copy.deepcopy(config or {})
    if section is None:
        return apply_defaults(config, _schema())
    try:
        sub = _schema()["properties"][section]
    except KeyError:
        raise ConfigError(f"{section!r}: not a config section of the schema.") from None
    return apply_defaults(config, sub)


def _distances(config):
    return [int(d) for d in config["forecast"]["distances"]]


def _distance_bounds():
    """The range the schema allows a forecast distance (``forecast.distances`` items)."""
    items = _schema()["properties"]["forecast"]["properties"]["distances"]["items"]
    return int(items["minimum"]), int(items["maximum"])


def _check_distance_list(key, values, fix):
    lo, hi = _distance_bounds()
    values = [int(d) for d in values]
    bad = [d for d in values if not lo <= d <= hi]
    if bad:
        raise ConfigError(f"{key} = {values}: {bad} outside the distances {lo}..{hi} a forecast "
                          f"window may have (forecast.distances). {fix}")
    dup = sorted({d for d in values if values.count(d) > 1})
    if dup:
        raise ConfigError(f"{key} = {values}: {dup} given more than once, so the same "
                          f"condition would be fitted twice. {fix}")


def _check_distances(config):
    """The distances other sections name, against what the analyses fit."""
    distances = _distances(config)
    st = config["stats"]
    ref = [int(d) for d in st["dstar_reference"]]
    missing = [d for d in ref if d not in distances]
    if missing:
        raise ConfigError(
            f"stats.dstar_reference = {ref}: {missing} not in forecast.distances {distances}. "
            "Use two of the fitted distances (paper: [0, 8]) or add them to forecast.distances.")
    if ref[0] == ref[1]:
        raise ConfigError(
            f"stats.dstar_reference = {ref}: the two distances must differ (the d* map is shown "
            "where F(d1) - F(d0) is reliably above 0; paper: [0, 8]).")
    gd = st["gain_distance"]
    if gd != "best" and int(gd) not in distances:
        raise ConfigError(
            f"stats.gain_distance = {gd}: not in forecast.distances {distances}. Use one of "
            "them (paper: 8) or 'best' (the group's best distance).")
    # the analyses fit their own windows (analyses.conditions): null = forecast.distances
    for section in ("controls", "syntax"):
        sc = config[section]
        if sc["enabled"] and sc["distances"] is not None:
            _check_distance_list(f"{section}.distances", sc["distances"],
                                 "Give distinct distances in that range, or null for "
                                 "forecast.distances.")
    if config["layers"]["enabled"]:
        _check_distance_list("layers.distance", [config["layers"]["distance"]],
                             "Give one distance in that range (paper: 8).")
    ctl = config["controls"]
    if ctl["enabled"] and ctl["widths"]:
        wd = ctl["width_distance"]
        if wd != "best":
            _check_distance_list("controls.width_distance", [wd],
                                 "Give one distance in that range, or 'best' (the main "
                                 "analysis' best distance).")
        widths = [int(w) for w in ctl["widths"]]
        bad = [w for w in widths if w < 1]
        if bad:
            raise ConfigError(f"controls.widths = {widths}: {bad} not a positive number of "
                              "words. Use widths >= 1 (paper: 7).")
        dup = sorted({w for w in widths if widths.count(w) > 1})
        if dup:
            raise ConfigError(f"controls.widths = {widths}: {dup} given more than once, so the "
                              "same condition would be fitted twice. Give distinct widths.")


def _check_finetune(config):
    ft = config["finetune"]
    if not ft["enabled"]:
        return
    alphas = [float(a) for a in ft["alphas"]]
    bad = [a for a in alphas if not 0.0 <= a < 1.0]
    if bad:
        raise ConfigError(f"finetune.alphas = {alphas}: {bad} outside [0, 1) (the share of the "
                          "contrastive loss; 0 = next-word only). Use values in [0, 1) "
                          "(paper: [0, 0.5]).")
    if 0.0 not in alphas:
        raise ConfigError(f"finetune.alphas = {alphas}: 0 is missing, the next-word-only "
                          "control every gain is measured against. Add 0 (paper: [0, 0.5]).")
    steps = int(ft["steps"])
    bad = [int(s) for s in ft["checkpoints"] if not 1 <= int(s) <= steps]
    if bad:
        raise ConfigError(f"finetune.checkpoints = {list(ft['checkpoints'])}: {bad} outside "
                          f"1..finetune.steps ({steps}). Use steps of the run, or raise "
                          "finetune.steps.")
    if int(ft["target_distance"]) >= int(ft["context"]):
        raise ConfigError(f"finetune.target_distance = {ft['target_distance']}: not smaller "
                          f"than finetune.context = {ft['context']}, so no token of a training "
                          "sequence has a target. Use a longer context or a shorter distance "
                          "(paper: 8).")
    a, b = (int(v) for v in ft["train_layers"])
    if a > b:
        raise ConfigError(f"finetune.train_layers = {[a, b]}: first > last. Give [first, last] "
                          "(inclusive, paper: [8, 12]).")


#: A HuggingFace hub id: ``name`` or ``org/name`` (letters, digits, ``.``, ``_``, ``-``).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def _check_model_name(key, name):
    """A built-in test model, an existing local folder or a plausible hub id."""
    if name in TINY_MODELS:
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{key}.name = {name!r}: the folder has no config.json, so it is "
                              "not a saved HuggingFace model (model.save_pretrained(folder) "
                              "and tokenizer.save_pretrained(folder)).")
        return
    if name.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(name):
        raise ConfigError(f"{key}.name = {name!r}: neither an existing model folder, a "
                          "HuggingFace hub id ('gpt2', 'EleutherAI/pythia-160m') nor a "
                          f"built-in test model ({', '.join(TINY_MODELS)}).")


def _check_models(config):
    """``models``: distinct entries, plausible names, distances in range (the layers:
    :func:`check_models_config`)."""
    seen = set()
    for i, m in enumerate(config["models"]):
        key = f"models[{i}]"
        ident = (m["name"], int(m["seed"]) if m["name"] in TINY_MODELS else 0)
        if ident in seen:
            raise ConfigError(f"{key}: {m['name']!r} (seed {ident[1]}) is listed twice, so the "
                              "same model would be fitted twice. Give each model once (one "
                              "entry may list several layers).")
        seen.add(ident)
        _check_model_name(key, m["name"])
        if int(m["seed"]) != 0 and m["name"] not in TINY_MODELS:
            raise ConfigError(f"{key}.seed = {m['seed']}: only the offline test models "
                              f"({', '.join(TINY_MODELS)}) are initialised from a seed; "
                              f"{m['name']!r} is pretrained. Remove the seed.")
        if m["distances"] is not None:
            _check_distance_list(f"{key}.distances", m["distances"],
                                 "Give distinct distances in that range, or null for "
                                 "[layers.distance].")
        else:
            _check_distance_list(f"{key}.distances (null = [layers.distance])",
                                 [config["layers"]["distance"]],
                                 "Give layers.distance in that range, or list the distances.")


def check_config(config):
    """Cross-key checks that the schema cannot express; raise :class:`ConfigError`.

    Parameters
    ----------
    config : dict
        A validated config with its defaults filled (:func:`apply_defaults`).

    Raises
    ------
    ConfigError
        Naming the key, the bad value and the fix, for:

        - ``stats.dstar_reference`` not two different distances of ``forecast.distances``;
          a fixed ``stats.gain_distance`` not one of them;
        - with the analysis on: ``controls.distances`` / ``syntax.distances`` (null =
          ``forecast.distances``), ``layers.distance`` and a fixed ``controls.width_distance``
          (when ``controls.widths`` is set) outside the range of ``forecast.distances`` or
          repeated (each analysis fits its own windows at these distances,
          :func:`brainpred.conditions.conditions`); ``controls.widths`` not positive or repeated;
        - with fine-tuning on: ``finetune.alphas`` outside [0, 1) or without 0 (the control);
          ``finetune.checkpoints`` outside 1..``finetune.steps``; ``finetune.target_distance``
          not below ``finetune.context``; ``finetune.train_layers`` first > last;
        - fine-tuning on the stimulus transcripts (``finetune.corpus: stories``) of real data
          without ``finetune.allow_stimulus_corpus``;
        - ``models``: the same model (name and seed) twice, a seed for a pretrained model,
          distances (null = ``[layers.distance]``) outside the range or repeated.

        The layer keys against the model are :func:`check_model_config`'s.
    """
    _check_distances(config)
    _check_finetune(config)
    _check_models(config)
    ft = config["finetune"]
    if (ft["enabled"] and ft["corpus"] == "stories"
            and config["dataset"]["source"] != "synthetic"
            and not ft["allow_stimulus_corpus"]):
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
    return any(os.environ.get(v, "") not in ("", "0", "false", "False")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def model_dims(name):
    """``(n_layers, hidden_size)`` of a model from its config alone (no weights loaded).

    ``tiny-gpt2`` (and the other offline test models, :data:`brainpred.lm.TINY_MODELS`): its
    fixed config; a local folder: its ``config.json``; a hub id: the
    ``config.json`` in the local HuggingFace cache. ``None`` when a hub id is not cached and the
    hub may be reached (the download happens in the features job).

    Raises
    ------
    ConfigError
        ``model.name`` is a local path that does not exist or has no ``config.json``, or a hub id
        that is not cached while HF_HUB_OFFLINE is set.
    """
    if name in TINY_MODELS:
        return tiny_dims(name)
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
                              f"model.name = {name!r} (0 = token embedding). Use layers "
                              f"0..{n_layers}, or another model.")
    n_comp = int(config["mapping"]["n_components"])
    if n_comp > hidden:
        raise ConfigError(f"mapping.n_components = {n_comp}: more than the {hidden} units of "
                          f"{name!r}'s activations; PCA would silently keep {hidden}. Use at "
                          f"most {hidden} (paper: 20).")
    return config


def check_models_config(config, dims_of=None):
    """The layers of every ``models`` entry against that model's depth, and the PCA size
    against its width; raise :class:`ConfigError` naming the entry.

    Parameters
    ----------
    config : dict
        The filled config.
    dims_of : callable, optional
        ``name -> (n_layers, hidden) or None`` (default :func:`model_dims`; None: a hub model
        not cached yet, checked when its activations are loaded).
    """
    dims_of = dims_of or model_dims
    n_comp = int(config["mapping"]["n_components"])
    for i, m in enumerate(config["models"]):
        dims = dims_of(m["name"])
        if dims is None:
            continue
        n_layers, hidden = dims
        if m["layers"] != "all":
            bad = [int(k) for k in m["layers"] if not 0 <= int(k) <= n_layers]
            if bad:
                raise ConfigError(f"models[{i}].layers = {m['layers']}: {bad} outside the layers "
                                  f"0..{n_layers} of {m['name']!r} (0 = token embedding). Use "
                                  f"layers 0..{n_layers}, or 'all'.")
        if n_comp > hidden:
            raise ConfigError(f"mapping.n_components = {n_comp}: more than the {hidden} units of "
                              f"models[{i}] = {m['name']!r}; PCA would silently keep {hidden}. "
                              f"Use at most {hidden}, or another model.")
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
        (:func:`model_dims`, :func:`check_model_config`), and those of every ``models`` entry
        (:func:`check_models_config`).

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
        check_models_config(config)
        if config["dataset"]["source"] == "synthetic":
            _check_synthetic_layers(config["synthetic"], model_dims(config["synthetic"]["model"]))
    return config


def _check_synthetic_layers(syn, dims):
    if dims is None:
        return
    for key in ("layer", "depth_layer"):
        if not 0 <= int(syn[key]) <= dims[0]:
            raise ConfigError(f"synthetic.{key} = {syn[key]}: outside the layers 0..{dims[0]} of "
                              f"synthetic.model = {syn['model']!r}. Use a layer 0..{dims[0]}.")


#: Keys that change how fast or where a job runs, never its results: they are not job params
#: (Snakemake re-runs a job whose params change), the scripts read them from the full config.
#: (``dataset.url``, where a DataLad clone comes from, is read by the download command only.)
RUNTIME_KEYS = {
    "dataset": ("download_jobs", "url"),
    "model": ("batch_size", "device"),
    "mapping": ("backend", "target_batch"),
    "noise_ceiling": ("batch",),
}


def result_settings(section_cfg, section):
    """``section_cfg`` without its :data:`RUNTIME_KEYS` (what a job's params may hold)."""
    drop = RUNTIME_KEYS.get(section, ())
    return {k: v for k, v in (section_cfg or {}).items() if k not in drop}


def with_runtime(section_cfg, full_config, section):
    """``section_cfg`` (from a job's params) with the runtime keys of ``full_config`` (the
    effective config, :func:`prepare_config`) added."""
    out = dict(section_cfg or {})
    for key in RUNTIME_KEYS.get(section, ()):
        out[key] = full_config[section][key]
    return out


def with_runtime_config(params_config, full_config):
    """A params config of several sections with each section's runtime keys added back."""
    return {k: with_runtime(v, full_config, k) if isinstance(v, dict) and k in RUNTIME_KEYS
            else v for k, v in params_config.items()}


def dump_config(config):
    """The config as YAML text, keys in the schema's order (for the effective-config file)."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
