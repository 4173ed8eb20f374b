"""What each analysis fits and shows: its conditions, its argmax maps and its figures.

Every analysis is a list of *conditions*: a condition is a design, i.e. feature blocks
concatenated after their own standardisation + PCA (method.md section 6), and how its score is
read:

- ``brainscore``: its brain score R;
- any other measure: its score minus the score of a ``baseline`` condition, e.g. the forecast
  score F = R(X ⊕ W) − R(X).

A block is a word-level feature array put on the TR grid exactly like X (method.md section 4):
the word vectors of one model layer (``source="acts"``), a forecast window of them
(``distance`` = d, ``width`` words, method.md section 5), or one of the control sources
(``random``, ``shuffled``, ``generated``) or the syntactic / semantic parts of the activations
(``syntactic``, ``semantic``). One ridge fit per subject group computes every condition of an
analysis (:func:`brainpred.mapping.design_scores`), sharing each block's PCA between the
conditions that use it.

Analyses (config sections of the same name, each with ``enabled``, but ``main``):

``main``
    The forecast curve (method.md section 1.2): R(X) and F(d) = R(X ⊕ W_d) − R(X) for every
    d of ``forecast.distances``, X and the windows from ``features.layer``; the group map d*.

``layers``
    Forecast depth (method.md section 1.4): for each layer k, R(X_k) and
    F_k(d) = R(X_k ⊕ W_d(X_k)) − R(X_k) with X and W from the same layer, d = ``layers.distance``;
    the group map k* = argmax_k F_k(d).
``controls``
    F(d) of control windows, with X from ``features.layer``: ``true`` (the real future
    words), ``random`` (random zero-mean vectors with the variance of each unit of X, one per
    word: same dimension and variance, no content), ``shuffled`` (the story's word vectors in a
    random order: same distribution, wrong words), ``generated`` (the model's own continuation of
    the past, :mod:`brainpred.continuations`); and the window-width analysis: F at one
    distance for widths ``controls.widths``.
``syntax``
    F_syn(d) and F_sem(d): windows of the syntactic part X_syn (mean activation over
    alternative futures with the same syntax, :mod:`brainpred.syntax`) and of the semantic part
    X_sem = X − X_syn, with the full X as base; d* maps of each.
``variants``
    The paper's method beside this run's (on by itself when ``mapping.penalty`` is ``banded``
    or ``nuisance`` lists regressors): for each method of :func:`methods` (``paper``: one
    shared penalty, no nuisance; ``banded``; ``nuisance``; ``banded-nuisance``) R(X) and F(d)
    for every d of ``forecast.distances``, and F of the random and shuffled control windows
    (``controls.random``/``shuffled``) at ``controls.distances``: a window that carries
    nothing should give F = 0, which the shared penalty does not guarantee.
``partition``
    Variance partitioning (``partition``; after Lescroart et al. 2015, de Heer et al. 2017):
    with A = X ⊕ nuisance and B = W_d, from banded fits of A, B and A ⊕ B, the variance
    explained (signed R² = r·|r| of the cross-validated r) uniquely by the window,
    R²(A ⊕ B) − R²(A), and shared by both, R²(A) + R²(B) − R²(A ⊕ B), per d of
    ``partition.distances``.
``models``
    Several language models in one run (config list ``models``, on when not empty): for each
    model m and layer k of its ``layers``, R(X_k^m) and F_k^m(d) = R(X_k^m ⊕ W_d(X_k^m)) −
    R(X_k^m) for its ``distances`` (null = ``[layers.distance]``), X and W from that model's
    activations (blocks ``model:<label>``, :func:`model_label`).
``finetune``
    Brain scores of models fine-tuned with the forecast objective (:mod:`brainpred.finetune`),
    one per loss mix alpha and checkpoint, with the layers ``finetune.eval_layers``
    concatenated; gain = R(alpha) − R(alpha = 0) of the same checkpoint, per vertex and region.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .errors import ConfigError
from .lm import TINY_MODELS
from .plan import model_tag

__all__ = ["MAIN", "ANALYSES", "CONTROL_KINDS", "NUISANCE", "PENALTIES", "Block", "Condition", "enabled",
           "job_sections",
           "methods", "nuisance_blocks", "layer_list", "partition_distances",
           "control_distances", "syntax_distances", "control_kinds", "conditions",
           "finetune_alphas", "finetune_steps", "finetune_eval_layers", "finetune_key",
           "finetune_train_config", "model_label", "model_entries", "entry_model_config",
           "model_layers", "model_distances", "blocks_and_designs", "measures", "ARGMAX_MAPS",
           "STACK_MAPS", "ARGMAX_TITLES", "FIGURES", "FIGURE_CAPTIONS", "figure_keys"]


#: The main forecast curve F(d): fitted for every run (its settings: ``forecast``, ``stats``).
MAIN = "main"
#: The further analyses, each switched on by its config section's ``enabled``.
ANALYSES = ("layers", "controls", "syntax", "finetune", "models", "variants", "partition")
#: The ridge penalties of ``mapping.penalty`` (:func:`brainpred.mapping.design_scores`).
PENALTIES = ("shared", "banded")


CONTROL_KINDS = ("true", "random", "shuffled", "generated")

#: The nuisance regressors (:mod:`brainpred.nuisance`), in the order their blocks are appended
#: to every condition (defined here, not there, so that planning a run does not import
#: ``scipy.signal``).
NUISANCE = ("word_rate", "word_length", "word_frequency", "audio_envelope")

#: Config sections the jobs of each step of an analysis read besides the analysis' own section
#: (the rules pass a job only these, :func:`job_sections`), and the further ones some analyses
#: read.
_STEP_SECTIONS = {"fit": ("model", "features", "forecast", "mapping", "nuisance"),
                  "group": ("stats", "regions"), "figures": ("dataset", "stats", "regions")}
_EXTRA_SECTIONS = {"variants": ("controls", "mapping", "nuisance"), "models": ("layers",)}


def job_sections(analysis, step):
    """The config sections a job of one step of an analysis reads (its ``params.config``).

    Parameters
    ----------
    analysis : str
        One of :data:`ANALYSES`.
    step : {"fit", "group", "figures"}
        Rules ``analysis_fit``, ``analysis_group_<analysis>``, ``analysis_figures_<analysis>``.

    Returns
    -------
    tuple of str
    """
    return tuple(dict.fromkeys(_STEP_SECTIONS[step] + (analysis,)
                               + _EXTRA_SECTIONS.get(analysis, ())))


@dataclass(frozen=True)
class Block:
    """A feature block: word vectors of one source and layer, or a forecast window of them.

    ``source`` is ``acts`` (the model's activations), ``random``, ``shuffled``, ``generated``,
    ``syntactic``, ``semantic``, ``model:<key>`` (the activations of another model, e.g. a
    fine-tuned checkpoint) or ``nuisance:<name>`` (:mod:`brainpred.nuisance`, layer 0);
    ``layer`` is one layer or a tuple of layers whose vectors are
    concatenated; ``distance`` None = the word's own vector, an int = the forecast window W_d of
    ``width`` words.
    """

    source: str
    layer: int | tuple
    distance: int | None = None
    width: int = 7


@dataclass(frozen=True)
class Condition:
    """A design (blocks concatenated) and how its score is read (measure, series, x)."""

    name: str
    blocks: tuple
    measure: str = ""          # "" = only a baseline for other conditions
    series: str = ""
    x: float = float("nan")
    baseline: str = ""         # condition subtracted from this one ("" = none)
    raw_series: str = ""       # also record the raw score as ("brainscore", raw_series, x)
    penalty: str = ""          # ridge penalty of its fit ("" = mapping.penalty)
    plus: str = ""             # condition added to this one (variance partitioning)
    transform: str = ""        # "r2": scores enter as signed R^2 = r |r| ("" = r)


def enabled(config, name):
    """Whether analysis ``name`` is switched on in the config: its section's ``enabled``, or,
    for a list-valued section (``models``), whether the list is not empty; ``variants``:
    whenever the run's method differs from the paper's (:func:`methods`)."""
    if name == MAIN:
        return True
    if name == "variants":
        return len(methods(config)) > 1
    section = config[name]
    return bool(section) if isinstance(section, list) else bool(section["enabled"])


def methods(config):
    """The fitting methods the ``variants`` analysis shows side by side.

    Returns
    -------
    list of (label, penalty, with_nuisance)
        ``("paper", "shared", False)`` first, then ``banded`` (``mapping.penalty`` banded),
        ``nuisance`` (``nuisance`` not empty) and ``banded-nuisance`` (both).
    """
    banded = config["mapping"]["penalty"] == "banded"
    nuisance = bool(config["nuisance"])
    out = [("paper", "shared", False)]
    if banded:
        out.append(("banded", "banded", False))
    if nuisance:
        out.append(("nuisance", "shared", True))
    if banded and nuisance:
        out.append(("banded-nuisance", "banded", True))
    return out


def _int_list(value, key):
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a list of integers, got {value!r}.") from None
    if not out:
        raise ConfigError(f"{key}: the list is empty.")
    return out


def layer_list(config, n_layers):
    """Layers of the sweep: ``layers.layers`` ("all" = 0..n_layers) checked against the model."""
    value = config["layers"]["layers"]
    layers = list(range(n_layers + 1)) if value == "all" else _int_list(value, "layers.layers")
    bad = [k for k in layers if not 0 <= k <= n_layers]
    if bad:
        raise ConfigError(f"layers.layers: {bad} outside the model's layers 0..{n_layers}.")
    return sorted(set(layers))


def control_distances(config):
    """``controls.distances`` (null = ``forecast.distances``)."""
    value = config["controls"]["distances"]
    return _int_list(value if value is not None else config["forecast"]["distances"],
                     "controls.distances")


def syntax_distances(config):
    """``syntax.distances`` (null = ``forecast.distances``)."""
    value = config["syntax"]["distances"]
    return _int_list(value if value is not None else config["forecast"]["distances"],
                     "syntax.distances")


def control_kinds(config):
    """Control window kinds switched on (``true`` always, as the reference)."""
    c = config["controls"]
    kinds = ["true"]
    if c["random"]:
        kinds.append("random")
    if c["shuffled"]:
        kinds.append("shuffled")
    if c["generated"]["enabled"]:
        kinds.append("generated")
    return kinds


def nuisance_blocks(config):
    """The blocks of the configured nuisance regressors (top-level ``nuisance``), in the order
    of :data:`brainpred.nuisance.NUISANCE`: ``Block("nuisance:<name>", 0)`` (no window).

    Returns
    -------
    tuple of Block
        Empty when ``nuisance`` is empty (the paper's method).
    """
    asked = list(config["nuisance"] or [])
    bad = [n for n in asked if n not in NUISANCE]
    if bad:
        raise ConfigError(f"nuisance: {bad} unknown; choose among {list(NUISANCE)}.")
    return tuple(Block(f"nuisance:{n}", 0) for n in NUISANCE if n in asked)


def partition_distances(config):
    """``partition.distances`` (null = ``forecast.distances``)."""
    value = config["partition"]["distances"]
    return _int_list(value if value is not None else config["forecast"]["distances"],
                     "partition.distances")


def model_label(entry):
    """The ``model-<label>`` of a ``models`` entry: :func:`brainpred.plan.model_tag` of its
    name, with ``seed<k>`` added for an offline test model of seed k > 0 (``tinygptneox``,
    ``tinyllamaseed3``)."""
    tag = model_tag(entry["name"])
    seed = int(entry.get("seed") or 0)
    return f"{tag}seed{seed}" if entry["name"] in TINY_MODELS and seed else tag


def model_entries(config):
    """The ``models`` entries with their labels, checked to be distinct.

    Returns
    -------
    list of dict
        Each entry (``name``, ``layers``, ``seed``, ``distances``) with ``label`` and ``main``
        added, in the config's order; ``main``: the entry is ``model.name`` itself (same label,
        name and, for a test model, seed), whose feature caches it reuses.

    Raises
    ------
    ConfigError
        Two entries with the same label (e.g. a hub id and a folder of the same name), or an
        entry with the label of ``model.name`` that is another model.
    """
    main_cfg = config["model"]
    main_label = model_tag(main_cfg["name"])
    out, seen = [], {}
    for i, m in enumerate(config["models"]):
        label = model_label(m)
        if label in seen:
            raise ConfigError(f"models[{i}] = {m['name']!r} and models[{seen[label]}] = "
                              f"{config['models'][seen[label]]['name']!r} have the same file "
                              f"label model-{label}. Rename one (a local folder's label is "
                              "its folder name).")
        seen[label] = i
        same = m["name"] == main_cfg["name"] and (
            m["name"] not in TINY_MODELS or int(m["seed"]) == int(main_cfg["seed"]))
        if label == main_label and not same:
            raise ConfigError(f"models[{i}] = {m['name']!r} (seed {m['seed']}) has the file "
                              f"label model-{label} of model.name = {main_cfg['name']!r} (seed "
                              f"{main_cfg['seed']}) but is another model: give it the seed of "
                              "model.seed, or rename its folder.")
        out.append({**m, "label": label, "main": label == main_label})
    return out


def entry_model_config(model_cfg, entry):
    """The ``model`` settings of a ``models`` entry: ``model_cfg`` (context, mode, batch size,
    device, dtype) with the entry's ``name`` and ``seed``."""
    return {**model_cfg, "name": entry["name"], "seed": int(entry["seed"])}


def model_layers(entry, n_layers):
    """Layers of a ``models`` entry ("all" = 0..n_layers), checked against its model."""
    value = entry["layers"]
    key = f"models ({entry['name']}).layers"
    layers = list(range(n_layers + 1)) if value == "all" else _int_list(value, key)
    bad = [k for k in layers if not 0 <= k <= n_layers]
    if bad:
        raise ConfigError(f"{key}: {bad} outside the model's layers 0..{n_layers}.")
    return sorted(set(layers))


def model_distances(entry, config):
    """Distances of a ``models`` entry (null = ``[layers.distance]``), sorted."""
    value = entry["distances"]
    return sorted(_int_list(value if value is not None else [config["layers"]["distance"]],
                            f"models ({entry['name']}).distances"))


def conditions(analysis, config, n_layers, width_distance=None, model_depths=None):
    """The conditions of one analysis.

    Parameters
    ----------
    analysis : {"main", "layers", "controls", "syntax", "finetune", "models", "variants",
                "partition"}
    config : dict
        Workflow configuration.
    n_layers : int
        Transformer blocks of the model (activations have ``n_layers + 1`` layers).
    width_distance : int, optional
        Distance of the width analysis (``controls`` only; required when widths are set).
    model_depths : dict, optional
        ``models`` only: ``label -> n_layers`` of each listed model (:func:`model_entries`).

    Returns
    -------
    list of Condition
    """
    width = int(config["forecast"]["width"])
    layer = int(config["features"]["layer"])
    if not 0 <= layer <= n_layers:
        raise ConfigError(f"features.layer = {layer}: the model has layers 0..{n_layers}.")
    X = Block("acts", layer)
    out = []
    if analysis == "main":
        out.append(Condition("base", (X,), "brainscore", "base"))
        for d in sorted(int(d) for d in config["forecast"]["distances"]):
            out.append(Condition(f"d-{d}", (X, Block("acts", layer, d, width)),
                                 "forecastscore", "true", d, "base"))
    elif analysis == "layers":
        d = int(config["layers"]["distance"])
        for k in layer_list(config, n_layers):
            base = f"layer-{k}"
            out.append(Condition(base, (Block("acts", k),), "brainscore", "layer", k))
            out.append(Condition(f"layer-{k}_d-{d}", (Block("acts", k), Block("acts", k, d, width)),
                                 "forecastscore", "layer", k, base))
    elif analysis == "controls":
        out.append(Condition("base", (X,), "brainscore", "base"))
        source = {"true": "acts"}
        for kind in control_kinds(config):
            for d in control_distances(config):
                out.append(Condition(f"{kind}_d-{d}",
                                     (X, Block(source.get(kind, kind), layer, d, width)),
                                     "forecastscore", kind, d, "base"))
        widths = config["controls"]["widths"] or []
        if widths:
            if width_distance is None:
                raise ValueError("conditions: the width analysis needs width_distance.")
            for w in _int_list(widths, "controls.widths"):
                if w < 1:
                    raise ConfigError(f"controls.widths: {w} is not a positive width.")
                out.append(Condition(f"width-{w}", (X, Block("acts", layer,
                                                              int(width_distance), w)),
                                     "widthscore", "true", w, "base"))
    elif analysis == "syntax":
        out.append(Condition("base", (X,), "brainscore", "base"))
        for part in ("syntactic", "semantic"):
            for d in syntax_distances(config):
                out.append(Condition(f"{part}_d-{d}", (X, Block(part, layer, d, width)),
                                     "forecastscore", part, d, "base"))
    elif analysis == "finetune":
        layers = finetune_eval_layers(config, n_layers)
        out.append(Condition("pretrained", (Block("acts", layers),), "brainscore", "pretrained"))
        for step in finetune_steps(config):
            base = f"alpha-0_step-{step}"
            out.append(Condition(base, (Block(f"model:{finetune_key(0.0, step)}", layers),),
                                 "brainscore", f"step-{step}", 0.0))
            for a in finetune_alphas(config):
                if a == 0:
                    continue
                out.append(Condition(f"alpha-{a:g}_step-{step}",
                                     (Block(f"model:{finetune_key(a, step)}", layers),),
                                     "gain", f"step-{step}", a, base,
                                     raw_series=f"step-{step}"))
    elif analysis == "variants":
        # each method places its own nuisance blocks (after the window, as every analysis)
        nb = nuisance_blocks(config)
        kinds = [k for k in ("random", "shuffled") if config["controls"][k]]
        for label, penalty, with_nuisance in methods(config):
            extra = nb if with_nuisance else ()
            base = f"{label}_base"
            out.append(Condition(base, (X, *extra), "brainscore", label, penalty=penalty))
            for d in sorted(int(d) for d in config["forecast"]["distances"]):
                out.append(Condition(f"{label}_d-{d}", (X, Block("acts", layer, d, width),
                                                        *extra),
                                     "forecastscore", label, d, base, penalty=penalty))
            for kind in kinds:
                for d in control_distances(config):
                    out.append(Condition(f"{label}_{kind}_d-{d}",
                                         (X, Block(kind, layer, d, width), *extra),
                                         "forecastscore", f"{label}-{kind}", d, base,
                                         penalty=penalty))
        return out
    elif analysis == "partition":
        # A = X + nuisance, B = W_d, both and A + B; banded fits (one alpha per block)
        nb = nuisance_blocks(config)
        out.append(Condition("base", (X, *nb), "brainscore", "base", penalty="banded"))
        for d in partition_distances(config):
            W = Block("acts", layer, d, width)
            out.append(Condition(f"d-{d}", (X, W, *nb), "unique", "window", d, "base",
                                 penalty="banded", transform="r2"))
            out.append(Condition(f"window_d-{d}", (W,), "shared", "window", d, f"d-{d}",
                                 raw_series="window", penalty="banded", plus="base",
                                 transform="r2"))
        return out
    elif analysis == "models":
        # brain score: series <label>, x = layer; forecast score: series <label>_layer-<k>,
        # x = distance (d* of a model and layer is the argmax over x)
        for m in model_entries(config):
            t = m["label"]
            if model_depths is None or t not in model_depths:
                raise ValueError(f"conditions: the models analysis needs the depth of {t}.")
            for k in model_layers(m, int(model_depths[t])):
                base, X_m = f"{t}_layer-{k}", Block(f"model:{t}", k)
                out.append(Condition(base, (X_m,), "brainscore", t, k))
                for d in model_distances(m, config):
                    out.append(Condition(f"{base}_d-{d}", (X_m, Block(f"model:{t}", k, d, width)),
                                         "forecastscore", base, d, base))
    else:
        raise ConfigError(f"unknown analysis {analysis!r}; expected {MAIN!r} or one of "
                          f"{ANALYSES}.")
    # the nuisance regressors (config nuisance) are in every model: both models of F, R(X)
    extra = nuisance_blocks(config)
    if extra:
        out = [replace(c, blocks=c.blocks + extra) for c in out]
    return out


def finetune_alphas(config):
    """``finetune.alphas`` (loss mixes), sorted; 0 (the next-word-only control) is required."""
    alphas = sorted({float(a) for a in config["finetune"]["alphas"]})
    if 0.0 not in alphas:
        raise ConfigError(f"finetune.alphas = {alphas}: add 0, the next-word-only control the "
                          "gain is measured against.")
    bad = [a for a in alphas if not 0 <= a < 1]
    if bad:
        raise ConfigError(f"finetune.alphas: {bad} outside [0, 1).")
    return alphas


def finetune_steps(config):
    """Checkpoint steps that are evaluated: ``finetune.checkpoints`` and the last step."""
    ft = config["finetune"]
    steps = int(ft["steps"])
    ckpts = sorted({int(s) for s in (ft["checkpoints"] or [])} | {steps})
    bad = [s for s in ckpts if not 1 <= s <= steps]
    if bad:
        raise ConfigError(f"finetune.checkpoints: {bad} outside 1..finetune.steps ({steps}).")
    return ckpts


def finetune_eval_layers(config, n_layers):
    """``finetune.eval_layers`` (paper: 0, 4, 8, 12) as a tuple, checked against the model."""
    layers = tuple(_int_list(config["finetune"]["eval_layers"],
                             "finetune.eval_layers"))
    bad = [k for k in layers if not 0 <= k <= n_layers]
    if bad:
        raise ConfigError(f"finetune.eval_layers: {bad} outside the model's layers "
                          f"0..{n_layers}.")
    return layers


def finetune_key(alpha, step):
    """File-name key of a fine-tuned checkpoint: ``alpha-0.5_step-000100``."""
    return f"alpha-{float(alpha):g}_step-{int(step):06d}"


def finetune_train_config(config, alpha):
    """The :func:`brainpred.finetune.train` settings of one loss mix."""
    ft = dict(config["finetune"])
    for key in ("enabled", "alphas", "corpus", "eval_layers"):
        ft.pop(key, None)
    ft["alpha"] = float(alpha)
    ft["checkpoints"] = finetune_steps(config)
    return ft


def blocks_and_designs(conds):
    """The distinct blocks of ``conds`` and, per condition, the indices of its blocks.

    Parameters
    ----------
    conds : list of Condition

    Returns
    -------
    blocks : list of Block
        In order of first use.
    designs : list of tuple of int
        One per condition (the input of :func:`brainpred.mapping.design_scores`).
    """
    blocks, index, designs = [], {}, []
    for c in conds:
        d = []
        for b in c.blocks:
            if b not in index:
                index[b] = len(blocks)
                blocks.append(b)
            d.append(index[b])
        designs.append(tuple(d))
    return blocks, designs


def measures(conds, scores):
    """Per-subject maps of every measured condition.

    Parameters
    ----------
    conds : list of Condition
    scores : ndarray, shape (S, n_conditions, V)

    Returns
    -------
    dict
        ``(measure, series) -> (x values (n_x,), maps (S, n_x, V))`` with x sorted; a
        condition's map is its score minus its baseline's score (when it has one) plus its
        ``plus`` condition's score (when it has one), every term a signed R² = r·|r| when its
        ``transform`` is ``"r2"``; a ``raw_series`` records the condition's raw r.
    """
    index = {c.name: i for i, c in enumerate(conds)}
    out = {}
    for i, c in enumerate(conds):
        if not c.measure:
            continue

        def value(j, c=c):
            s = scores[:, j]
            return s * np.abs(s) if c.transform == "r2" else s

        if c.raw_series:
            out.setdefault(("brainscore", c.raw_series), []).append((c.x, scores[:, i]))
        m = value(i)
        if c.baseline:
            m = m - value(index[c.baseline])
        if c.plus:
            m = m + value(index[c.plus])
        out.setdefault((c.measure, c.series), []).append((c.x, m))
    result = {}
    for key, items in out.items():
        items.sort(key=lambda t: (np.isnan(t[0]), t[0]))
        result[key] = (np.array([t[0] for t in items], float),
                       np.stack([t[1] for t in items], axis=1))
    return result


# (measure, series) of each analysis whose argmax over x is mapped: name -> (measure, series)
ARGMAX_MAPS = {
    "layers": {"kstar": ("forecastscore", "layer")},
    "controls": {"bestwidth": ("widthscore", "true")},
    "syntax": {"dstarsyntactic": ("forecastscore", "syntactic"),
               "dstarsemantic": ("forecastscore", "semantic")},
}


# GIfTI maps of an analysis besides its argmax maps
STACK_MAPS = {"finetune": ["finetunegain"], "partition": ["unique", "shared"]}


ARGMAX_TITLES = {"kstar": "forecast depth k* (layer)", "bestwidth": "best window width (words)",
                 "dstarsyntactic": "syntactic forecast distance d* (words)",
                 "dstarsemantic": "semantic forecast distance d* (words)"}


#: The figures of each analysis: figure key -> kind (``map`` or ``plot``, the file suffix).
FIGURES = {
    "main": {"brain": "map", "ceiling": "map", "curves": "plot", "dstar": "map", "gain": "map",
             "distribution": "plot"},
    "layers": {"layerbrain": "plot", "layerforecast": "plot", "kstar": "map"},
    "controls": {"controlcurves": "plot", "widthcurves": "plot"},
    "syntax": {"syntaxcurves": "plot", "dstarsyntactic": "map", "dstarsemantic": "map"},
    "finetune": {"finetunegain": "plot", "finetunegainmap": "map", "finetuneloss": "plot"},
    "variants": {"variantcurves": "plot", "variantcontrols": "plot"},
    "partition": {"uniquecurves": "plot", "sharedcurves": "plot", "uniquemap": "map"},
    "models": {"modelcomparison": "plot"},
}


#: Caption of every figure of the report, the main analysis' and the further analyses'.
FIGURE_CAPTIONS = {
    "brain": "Brain score R(X): Pearson r between measured BOLD and the cross-validated ridge "
             "prediction from the model's activations (configured layer, 20 PCA components, "
             "6 FIR delays), mean across subjects; lateral and medial views, both hemispheres. "
             "The map restricted to FDR-significant vertices (two-sided Wilcoxon across "
             "subjects, Benjamini-Hochberg at stats.fdr_q) is the desc-brainscorefdr GIfTI.",
    "ceiling": "Noise ceiling: per subject, the mean BOLD of the other subjects who heard the "
               "same audio (all its conditions pooled, e.g. both prettymouth contexts; the "
               "milkyway versions are different audio), at the same vertex with the same FIR "
               "delays, predicts the subject's BOLD (ridge, contiguous folds, Pearson r, as the "
               "brain score); mean across subjects. The brain score as % of the ceiling is the "
               "desc-pctceiling GIfTI and the brainscore_pct_ceiling rows of the region tables.",
    "curves": "Forecast score F(d) = R(X + W_d) - R(X) per region as a function of the forecast "
              "distance d (words): mean across subjects with the 95% CI across subjects. The "
              "dashed line marks the planted distance when the data are synthetic.",
    "dstar": "Forecast distance d*: the d maximising the group mean F(d) per vertex, shown where "
             "the configured test passes (stats.dstar_mask: fdr or ci = F(d1) - F(d0) with "
             "stats.dstar_reference; ci_best = brain score and F(d*) both reliably above 0).",
    "gain": "Forecast gain F(d*) / R(X) in percent, per vertex, at the group's forecast "
            "distance d* (stats.gain_distance: the best d of the subjects' F(d) averaged over "
            "the vertices with a reliable brain score, or a set distance; paper: d* = 8). The "
            "reported gain (paper comparison table) is each subject's F_s(d*) / R_s over those "
            "vertices, mean and 95% CI across subjects. The per-vertex maximum over d, biased "
            "upward, is only the desc-gainmaxd GIfTI.",
    "distribution": "Per-subject forecast distance d* (argmax of the subject's region-mean F(d)) "
                    "in the key region with the largest forecast score.",
    "layerbrain": "Brain score R(X_k) of each layer k (layers.layers): region means, mean across "
                  "subjects with the 95% CI.",
    "layerforecast": "Forecast score per layer, F_k(d) = R(X_k + W_d(X_k)) - R(X_k), X and the "
                     "window from the same layer k, d = layers.distance: region means, mean "
                     "across subjects with the 95% CI; dashed line: the best layer.",
    "kstar": "Forecast depth k*: the layer maximising the group mean F_k(d) per vertex, shown "
             "where the brain score is reliably above 0 and F at k* passes stats.dstar_mask.",
    "controlcurves": "Control windows: F(d) with the true future words, random vectors matched "
                     "in dimension and variance, the story's words shuffled, and the model's own "
                     "generated continuation (controls.*); mean across subjects with the 95% CI. "
                     "Random and shuffled windows should stay near 0.",
    "widthcurves": "Window width: F at one distance (controls.width_distance; 'best' = the main "
                   "analysis' best distance) as a function of the number of words in the window.",
    "syntaxcurves": "Syntax vs semantics: F_syn(d) and F_sem(d), windows of the syntactic part "
                    "(mean activation over syntax.n_futures alternative futures with the same "
                    "part-of-speech and dependency tags) and of the semantic part (activation "
                    "minus syntactic part), with the full X as base.",
    "dstarsyntactic": "Syntactic forecast distance: argmax_d of the group mean F_syn(d), shown "
                      "where reliable (as the d* map).",
    "dstarsemantic": "Semantic forecast distance: argmax_d of the group mean F_sem(d), shown "
                     "where reliable (as the d* map).",
    "finetunegain": "Fine-tuning: brain-score gain of GPT-2 fine-tuned with next-word + "
                    "contrastive forecast loss (share alpha of the contrastive term) over the "
                    "same training with alpha = 0, layers finetune.eval_layers concatenated; "
                    "region means, mean across subjects with the 95% CI, one curve per "
                    "evaluated checkpoint.",
    "finetunegainmap": "Fine-tuning gain map: R(alpha) - R(alpha = 0) per vertex at the last "
                       "checkpoint, for the alpha closest to 0.5 (the paper's mix), mean across "
                       "subjects (all alphas: the desc-finetunegain GIfTI).",
    "modelcomparison": "Several language models (config models): brain score R(X_k) (top) "
                       "and forecast score F_k(d*) = R(X_k + W_d*(X_k)) - R(X_k) (bottom) "
                       "of each model's layers k against the relative depth k / n_layers, one "
                       "line per model; d* is the distance (among the model's distances) "
                       "with the largest group-mean F of that model, layer and region. "
                       "Region means, mean across subjects with the 95% CI; every number is "
                       "in the desc-models_comparison table.",
    "finetuneloss": "Fine-tuning loss curves: next-token cross-entropy and contrastive InfoNCE "
                    "loss per training step for each alpha (the InfoNCE of alpha = 0 is "
                    "computed but not trained).",
    "variantcurves": "The paper's method beside this run's: F(d) = R(X + W_d) - R(X) with one "
                     "shared ridge penalty and no nuisance regressor (paper), with one penalty "
                     "per block chosen by the same inner CV (banded, mapping.penalty), and with "
                     "the nuisance regressors in both models (nuisance); region means, mean "
                     "across subjects with the 95% CI.",
    "variantcontrols": "Control windows under each method: F of random vectors and of the "
                       "story's words shuffled (controls.random / shuffled) at "
                       "controls.distances. A window that carries nothing should give F = 0: "
                       "the shared penalty makes it cost prediction (F < 0), the banded "
                       "penalty can switch it off.",
    "uniquecurves": "Variance partitioning: variance explained uniquely by the forecast window, "
                    "R2(X + N + W_d) - R2(X + N), with X the present features and N the "
                    "nuisance regressors (signed R2 = r|r| of the cross-validated r, banded "
                    "fits); region means, mean across subjects with the 95% CI.",
    "sharedcurves": "Variance partitioning: variance shared by the window W_d and X + N, "
                    "R2(X + N) + R2(W_d) - R2(X + N + W_d) (signed R2, banded fits): what the "
                    "window explains that the present features explain as well.",
    "uniquemap": "Variance uniquely explained by the forecast window, group mean per vertex, "
                 "at the distance with the largest mean over the vertices with a reliable "
                 "brain score (all distances: the desc-unique GIfTI; shared variance: "
                 "desc-shared).",
}


def figure_keys(analysis, config):
    """Figures an analysis draws with this config."""
    keys = list(FIGURES[analysis])
    if analysis == MAIN and not config["noise_ceiling"]["enabled"]:
        keys.remove("ceiling")
    if analysis == "controls" and not config["controls"]["widths"]:
        keys.remove("widthcurves")
    if analysis == "variants" and not (config["controls"]["random"]
                                       or config["controls"]["shuffled"]):
        keys.remove("variantcontrols")
    return keys
