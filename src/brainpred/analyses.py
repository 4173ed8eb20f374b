"""Analyses beyond the main forecast curve: forecast depth, control windows, syntax/semantics.

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

Analyses (config sections of the same name, each with ``enabled``):

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
``finetune``
    Brain scores of models fine-tuned with the forecast objective (:mod:`brainpred.finetune`),
    one per loss mix alpha and checkpoint, with the layers ``finetune.eval_layers``
    concatenated; gain = R(alpha) − R(alpha = 0) of the same checkpoint, per vertex and region.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from . import design, io
from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

ANALYSES = ("layers", "controls", "syntax", "finetune")
CONTROL_KINDS = ("true", "random", "shuffled", "generated")


@dataclass(frozen=True)
class Block:
    """A feature block: word vectors of one source and layer, or a forecast window of them.

    ``source`` is ``acts`` (the model's activations), ``random``, ``shuffled``, ``generated``,
    ``syntactic``, ``semantic`` or ``model:<key>`` (the activations of another model, e.g. a
    fine-tuned checkpoint); ``layer`` is one layer or a tuple of layers whose vectors are
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


def _section(config, name):
    return config.get(name, {}) or {}


def enabled(config, name):
    """Whether analysis ``name`` is switched on in the config."""
    return bool(_section(config, name).get("enabled", False))


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
    value = _section(config, "layers").get("layers", "all")
    layers = list(range(n_layers + 1)) if value == "all" else _int_list(value, "layers.layers")
    bad = [k for k in layers if not 0 <= k <= n_layers]
    if bad:
        raise ConfigError(f"layers.layers: {bad} outside the model's layers 0..{n_layers}.")
    return sorted(set(layers))


def control_distances(config):
    """``controls.distances`` (null = ``forecast.distances``)."""
    value = _section(config, "controls").get("distances")
    return _int_list(value if value is not None else config["forecast"]["distances"],
                     "controls.distances")


def syntax_distances(config):
    """``syntax.distances`` (null = ``forecast.distances``)."""
    value = _section(config, "syntax").get("distances")
    return _int_list(value if value is not None else config["forecast"]["distances"],
                     "syntax.distances")


def control_kinds(config):
    """Control window kinds switched on (``true`` always, as the reference)."""
    c = _section(config, "controls")
    kinds = ["true"]
    if c.get("random", True):
        kinds.append("random")
    if c.get("shuffled", True):
        kinds.append("shuffled")
    if (c.get("generated", {}) or {}).get("enabled", False):
        kinds.append("generated")
    return kinds


def conditions(analysis, config, n_layers, width_distance=None):
    """The conditions of one analysis.

    Parameters
    ----------
    analysis : {"layers", "controls", "syntax"}
    config : dict
        Workflow configuration.
    n_layers : int
        Transformer blocks of the model (activations have ``n_layers + 1`` layers).
    width_distance : int, optional
        Distance of the width analysis (``controls`` only; required when widths are set).

    Returns
    -------
    list of Condition
    """
    width = int(config["forecast"].get("width", 7))
    layer = int(config["features"]["layer"])
    if not 0 <= layer <= n_layers:
        raise ConfigError(f"features.layer = {layer}: the model has layers 0..{n_layers}.")
    X = Block("acts", layer)
    out = []
    if analysis == "layers":
        d = int(_section(config, "layers").get("distance", 8))
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
        widths = _section(config, "controls").get("widths") or []
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
    else:
        raise ConfigError(f"unknown analysis {analysis!r}; expected one of {ANALYSES}.")
    return out


def finetune_alphas(config):
    """``finetune.alphas`` (loss mixes), sorted; 0 (the next-word-only control) is required."""
    alphas = sorted({float(a) for a in _section(config, "finetune").get("alphas", [0.0, 0.5])})
    if 0.0 not in alphas:
        raise ConfigError(f"finetune.alphas = {alphas}: add 0, the next-word-only control the "
                          "gain is measured against.")
    bad = [a for a in alphas if not 0 <= a < 1]
    if bad:
        raise ConfigError(f"finetune.alphas: {bad} outside [0, 1).")
    return alphas


def finetune_steps(config):
    """Checkpoint steps that are evaluated: ``finetune.checkpoints`` and the last step."""
    ft = _section(config, "finetune")
    steps = int(ft.get("steps", 1000))
    ckpts = sorted({int(s) for s in (ft.get("checkpoints") or [])} | {steps})
    bad = [s for s in ckpts if not 1 <= s <= steps]
    if bad:
        raise ConfigError(f"finetune.checkpoints: {bad} outside 1..finetune.steps ({steps}).")
    return ckpts


def finetune_eval_layers(config, n_layers):
    """``finetune.eval_layers`` (paper: 0, 4, 8, 12) as a tuple, checked against the model."""
    layers = tuple(_int_list(_section(config, "finetune").get("eval_layers", [0, 4, 8, 12]),
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
    ft = dict(_section(config, "finetune"))
    for key in ("enabled", "alphas", "corpus", "eval_layers"):
        ft.pop(key, None)
    ft["alpha"] = float(alpha)
    ft["checkpoints"] = finetune_steps(config)
    return ft


# --------------------------------------------------------------------------------------------
# Word-level blocks and their TR design
# --------------------------------------------------------------------------------------------

def _story_seed(seed, story, layer):
    return [int(seed), zlib.crc32(str(story).encode()), int(layer)]


def random_vectors(values, seed):
    """Random word vectors matched in dimension and variance to ``values``, with zero mean.

    Parameters
    ----------
    values : ndarray, shape (n_words, D)
    seed : int or sequence of int

    Returns
    -------
    ndarray, shape (n_words, D), float32
        Independent Gaussian vectors with each unit's standard deviation over words. The
        mean is 0, not the activations' mean: a TR sum of vectors with a common mean would
        count the words of each TR, i.e. carry the speech rate, which is real information.
    """
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(values.shape)
    return (z * values.std(0)).astype(np.float32)


def shuffled_vectors(values, seed):
    """The word vectors of a story in a random order (seeded permutation of the rows).

    Parameters
    ----------
    values : ndarray, shape (n_words, D)

    Returns
    -------
    ndarray, shape (n_words, D), float32
    """
    perm = np.random.default_rng(seed).permutation(len(values))
    return np.asarray(values, dtype=np.float32)[perm]


class WordSources:
    """Word-level arrays of the stories of one fit, and the blocks built from them.

    Parameters
    ----------
    words : dict
        ``story -> words DataFrame`` (``start`` column, seconds from the audio onset).
    acts : dict
        ``story -> ndarray (n_layers + 1, n_words, D)``, the model's activations.
    syntactic : dict, optional
        ``story -> ndarray (n_layers + 1, n_words, D)``, X_syn (:mod:`brainpred.syntax`).
    generated : dict, optional
        ``story -> (layer, ndarray (n_words, horizon, D))``, activations of the model's own
        continuation (:mod:`brainpred.continuations`).
    seed : int
        Seed of the random and shuffled controls (``controls.seed``).
    """

    def __init__(self, words, acts, syntactic=None, generated=None, seed=0, models=None):
        self.words, self.acts = words, acts
        self.syntactic, self.generated = syntactic or {}, generated or {}
        self.models = models or {}
        self.seed = int(seed)
        self._cache = {}

    def vectors(self, story, source, layer):
        """Word vectors (n_words, D) of ``source`` at ``layer`` (a tuple: concatenated)."""
        if isinstance(layer, (tuple, list)):
            return np.concatenate([self.vectors(story, source, k) for k in layer], axis=1)
        if source.startswith("model:"):
            key = source.split(":", 1)[1]
            if key not in self.models or story not in self.models[key]:
                raise DataError(f"no activations of model {key} for story {story}; re-run "
                                "snakemake.")
            acts = self.models[key][story]
            if not 0 <= layer < acts.shape[0]:
                raise ConfigError(f"layer {layer}: model {key} has only layers "
                                  f"0..{acts.shape[0] - 1}.")
            return np.asarray(acts[layer], dtype=np.float32)
        acts = self.acts[story]
        if not 0 <= layer < acts.shape[0]:
            raise ConfigError(f"layer {layer}: the model has only layers 0..{acts.shape[0] - 1}.")
        x = np.asarray(acts[layer], dtype=np.float32)
        if source == "acts":
            return x
        if source == "random":
            return random_vectors(x, _story_seed(self.seed, story, layer))
        if source == "shuffled":
            return shuffled_vectors(x, _story_seed(self.seed + 1, story, layer))
        if source in ("syntactic", "semantic"):
            if story not in self.syntactic:
                raise DataError(f"no syntactic activations for story {story}; re-run snakemake.")
            x_syn = np.asarray(self.syntactic[story][layer], dtype=np.float32)
            if x_syn.shape != x.shape:
                raise DataError(f"story {story}: syntactic activations {x_syn.shape} do not "
                                f"match the activations {x.shape}; re-run snakemake.")
            return x_syn if source == "syntactic" else x - x_syn
        raise ConfigError(f"unknown feature source {source!r}.")

    def block(self, story, block):
        """Word-level array (n_words, D or width * D) of a block."""
        key = (story, block)
        if key not in self._cache:
            if block.source == "generated":
                from .continuations import generated_windows

                if block.distance is None:
                    raise ValueError("a generated block needs a distance.")
                if story not in self.generated:
                    raise DataError(f"no generated continuations for story {story}; re-run "
                                    "snakemake.")
                g_layer, gen = self.generated[story]
                if g_layer != block.layer:
                    raise DataError(f"story {story}: continuations hold layer {g_layer}, the "
                                    f"analysis needs layer {block.layer}; re-run snakemake.")
                out = generated_windows(gen, self.vectors(story, "acts", block.layer),
                                        block.distance, block.width)
            else:
                x = self.vectors(story, block.source, block.layer)
                out = x if block.distance is None else design.forecast_windows(
                    x, block.distance, block.width)
            self._cache[key] = np.asarray(out, dtype=np.float32)
        return self._cache[key]


def block_design(runs, sources, blocks, tr_offset=1, tr_method="sum"):
    """TR-level arrays of feature blocks for one subject's runs.

    Parameters
    ----------
    runs : DataFrame
        The subject's kept rows of the run table, in analysis order (``basename``, ``story``,
        ``audio_onset``, ``tr``, ``n_trs``). A run holding several stories has one row per
        story; their words are summed on the same TR grid.
    sources : WordSources
    blocks : sequence of Block
    tr_offset : int
    tr_method : {"sum", "mean", "lanczos"}

    Returns
    -------
    arrays : list of ndarray, shape (n_trs_total, D_b)
        One per block, float32.
    segment_lengths : list of int
        TRs of each run, in order.
    groups : ndarray of int, shape (n_trs_total,)
        Run index of each TR.
    """
    from . import narratives

    parts = [[] for _ in blocks]
    lengths = []
    for basename, g in runs.groupby("basename", sort=False):
        n_trs, tr = int(g["n_trs"].iloc[0]), float(g["tr"].iloc[0])
        if n_trs <= 0:
            raise DataError(f"{basename}: unknown number of TRs in the run table.")
        acc = [None] * len(blocks)
        for row in g.itertuples():
            words = sources.words[row.story]
            narratives.check_words_in_run(words, float(row.audio_onset), tr, n_trs,
                                          where=f"{basename} ({row.story})")
            onsets = words["start"].to_numpy(dtype=float) + float(row.audio_onset)
            for i, b in enumerate(blocks):
                x = design.words_to_trs(sources.block(row.story, b), onsets, tr, n_trs,
                                        tr_offset=tr_offset, method=tr_method)
                acc[i] = x if acc[i] is None else acc[i] + x
        for i in range(len(blocks)):
            parts[i].append(acc[i])
        lengths.append(n_trs)
    arrays = [np.concatenate(p).astype(np.float32) for p in parts]
    return arrays, lengths, np.repeat(np.arange(len(lengths)), lengths)


def _blocks_and_designs(conds):
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


# --------------------------------------------------------------------------------------------
# Rule: fit one analysis for a group of subjects
# --------------------------------------------------------------------------------------------

def best_distance_from_group(group_npz, config):
    """Distance of the width analysis: ``controls.width_distance`` or, if "best", the d that
    maximises the main analysis' group F(d) averaged over the vertices whose brain-score CI is
    above 0 (every vertex if none)."""
    value = _section(config, "controls").get("width_distance", "best")
    if value != "best":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"controls.width_distance: {value!r} is neither 'best' nor an "
                              "integer.") from None
    g = io.load_npz(group_npz)
    keep = np.nan_to_num(g["brain_low"], nan=-np.inf) > 0
    if not keep.any():
        keep = np.isfinite(g["brain_score"])
    with np.errstate(invalid="ignore"):
        curve = np.nanmean(g["forecast_score"][:, keep], axis=1)
    return int(g["distances"][int(np.nanargmax(curve))])


def make_analysis_fit(analysis, subjects, run_table_tsv, sources_paths, bold_paths, config,
                      out_npz, group_npz=None):
    """Rule ``analysis_fit``: scores of every condition of an analysis for subjects who share
    a stimulus sequence (one ridge fit; subjects whose design differs are fitted apart).

    Parameters
    ----------
    analysis : str
        One of :data:`ANALYSES`.
    subjects : list of str
    run_table_tsv : path
    sources_paths : dict
        ``"acts"`` (required), ``"syntactic"``, ``"generated"``: ``story -> .npz`` path;
        ``"models"``: ``key -> {story -> features .npz}`` (fine-tuned checkpoints);
        ``"words"`` (optional): ``story -> words table``, against which every cache's
        recorded words sha256 is checked (without it: the recorded story, kind and model).
    bold_paths : dict
        ``basename -> BOLD .npy``.
    config : dict
    out_npz : path
        Written with ``conditions`` (names), ``conditions_json`` (their definitions),
        ``subjects``, ``provenance`` (:func:`brainpred.pipeline.scores_provenance`) and, per
        subject, ``<subject>__scores`` (n_conditions, V).
    group_npz : path, optional
        The main analysis' group maps (the width analysis' "best" distance).
    """
    from pathlib import Path

    from . import mapping
    from . import provenance as prov
    from .pipeline import _mapping_kwargs, load_story_features, scores_provenance, subject_bold

    table = io.read_tsv(run_table_tsv, dtype={"run": str})
    feat, mc = config["features"], config["mapping"]
    words_paths = sources_paths.get("words")
    model_cfg = config.get("model")
    acts, words, syn, gen = {}, {}, {}, {}
    loaded, records = load_story_features(sources_paths["acts"], list(sources_paths["acts"]),
                                          words_paths=words_paths, model_cfg=model_cfg)
    for story, (a, w) in loaded.items():
        acts[story], words[story] = a, w
    syntactic = sources_paths.get("syntactic") or {}
    if syntactic:
        loaded, _ = load_story_features(syntactic, list(syntactic), words_paths=words_paths,
                                        model_cfg=model_cfg, kind="syntactic_activations")
        syn = {story: a for story, (a, _) in loaded.items()}
    for story, path in (sources_paths.get("generated") or {}).items():
        z = io.load_npz(path)
        prov.check_features(path, prov.read(path, z), story,
                            words_tsv=(words_paths or {}).get(story), model_cfg=model_cfg,
                            kind="continuations")
        gen[story] = (int(z["layer"]), z["generated"])
    models = {}
    for key, paths in (sources_paths.get("models") or {}).items():
        loaded, _ = load_story_features(paths, list(paths), words_paths=words_paths,
                                        kind="finetune_features")
        for story, (a, w) in loaded.items():
            path = paths[story]
            if len(w) != len(words[story]):
                raise DataError(f"{path}: {len(w)} words, the story has {len(words[story])}; "
                                "re-run snakemake.")
            models.setdefault(key, {})[story] = a
    n_layers = next(iter(acts.values())).shape[0] - 1
    width_d = None
    if analysis == "controls" and _section(config, "controls").get("widths"):
        width_d = best_distance_from_group(group_npz, config) if group_npz else int(
            _section(config, "controls").get("width_distance", 8))
    conds = conditions(analysis, config, n_layers, width_distance=width_d)
    blocks, designs = _blocks_and_designs(conds)
    sources = WordSources(words, acts, syn, gen,
                          seed=int(_section(config, "controls").get("seed", 0)), models=models)
    groups_of = []   # [(arrays, lengths, groups, [subjects])]
    for subject in subjects:
        runs = table[table["kept"] & (table["subject"] == subject)]
        if runs.empty:
            raise DataError(f"{run_table_tsv}: no kept run for {subject}.")
        arrays, lengths, groups = block_design(runs, sources, blocks,
                                               tr_offset=int(feat.get("tr_offset", 1)),
                                               tr_method=feat.get("tr_method", "sum"))
        for g in groups_of:
            if g[1] == lengths and all(np.array_equal(a, b) for a, b in zip(g[0], arrays)):
                g[3].append(subject)
                break
        else:
            groups_of.append((arrays, lengths, groups, [subject]))
    out = {"conditions": np.array([c.name for c in conds]),
           "conditions_json": np.array(json.dumps([asdict(c) for c in conds])),
           "subjects": np.array(list(subjects)), "analysis": np.array(analysis),
           prov.KEY: prov.to_array(scores_provenance(
               "analysis_fit", subjects, list(records), records, config, analysis=analysis,
               settings=config.get(analysis), width_distance=width_d,
               file=Path(out_npz).name))}
    if width_d is not None:
        out["width_distance"] = np.array(width_d)
    for arrays, lengths, groups, members in groups_of:
        Y_list = []
        for subject in members:
            runs = table[table["kept"] & (table["subject"] == subject)]
            Y = subject_bold(runs, bold_paths, zscore=mc.get("zscore_runs", True))
            if Y.shape[0] != arrays[0].shape[0]:
                raise DataError(f"{subject}: BOLD has {Y.shape[0]} TRs, the design "
                                f"{arrays[0].shape[0]}.")
            Y_list.append(Y)
        log.info("%s analysis: %s, %d TRs, %d conditions (%d blocks)", analysis,
                 ", ".join(members), arrays[0].shape[0], len(conds), len(blocks))
        scores = mapping.design_scores(arrays, designs, Y_list, lengths,
                                       **_mapping_kwargs(config, groups))
        for subject, s in zip(members, scores):
            out[f"{subject}__scores"] = np.asarray(s, np.float32)
        del Y_list
    io.save_npz(out_npz, **out)


# --------------------------------------------------------------------------------------------
# Group statistics
# --------------------------------------------------------------------------------------------

#: Provenance fields that must agree between the fit files of one analysis.
ANALYSIS_SHARED = ("model", "model_revision", "model_settings", "layer", "distances",
                   "mapping", "design", "settings", "width_distance")


def read_fits(fit_npzs, analysis=None):
    """Per-subject condition scores from the fit files of one analysis.

    Returns
    -------
    conds : list of Condition
    subjects : list of str
        Sorted.
    scores : ndarray, shape (S, n_conditions, V)
    extra : dict
        ``width_distance`` when present.
    """
    from . import provenance as prov

    conds, per_subject, extra, items, seen = None, {}, {}, [], {}
    for path in fit_npzs:
        z = io.load_npz(path)
        if analysis is not None and str(z["analysis"]) != analysis:
            raise DataError(f"{path}: scores of analysis {z['analysis']}, expected {analysis}.")
        rec = prov.read(path, z)
        prov.check(path, rec, {"kind": "analysis_fit", "analysis": str(z["analysis"]),
                               "subjects": [str(s) for s in z["subjects"]]},
                   what="analysis fit file")
        prov.check_file_name(path, rec, what="analysis fit file")
        items.append((path, rec))
        prov.check_consistent(items, ANALYSIS_SHARED, what="analysis fit file")
        cs = [Condition(**{**c, "blocks": tuple(
            Block(**{**b, "layer": tuple(b["layer"]) if isinstance(b["layer"], list)
                     else b["layer"]}) for b in c["blocks"])})
            for c in json.loads(str(z["conditions_json"]))]
        if conds is None:
            conds = cs
        elif [c.name for c in cs] != [c.name for c in conds]:
            raise DataError(f"{path}: computed with other conditions than {fit_npzs[0]}; "
                            "re-run snakemake.")
        if "width_distance" in z:
            extra["width_distance"] = int(z["width_distance"])
        for s in z["subjects"]:
            if str(s) in per_subject:
                raise DataError(f"{path} and {seen[str(s)]} both hold the scores of {s}: one "
                                f"was copied from the other; {prov.FIX}.")
            per_subject[str(s)], seen[str(s)] = z[f"{s}__scores"], path
    if conds is None:
        raise DataError("no fit file given.")
    subjects = sorted(per_subject)
    return conds, subjects, np.stack([per_subject[s] for s in subjects]).astype(np.float64), extra


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
        condition's map is its score minus its baseline's score (when it has one).
    """
    index = {c.name: i for i, c in enumerate(conds)}
    out = {}
    for i, c in enumerate(conds):
        if not c.measure:
            continue
        m = scores[:, i]
        if c.raw_series:
            out.setdefault(("brainscore", c.raw_series), []).append((c.x, m))
        if c.baseline:
            m = m - scores[:, index[c.baseline]]
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
STACK_MAPS = {"finetune": ["finetunegain"]}
ARGMAX_TITLES = {"kstar": "forecast depth k* (layer)", "bestwidth": "best window width (words)",
                 "dstarsyntactic": "syntactic forecast distance d* (words)",
                 "dstarsemantic": "semantic forecast distance d* (words)"}


def argmax_map(maps, xs, mode="ci_best", level=0.95, q=0.01, responsive=None):
    """Per vertex, the x that maximises the group mean of a measure, where it is reliable.

    Parameters
    ----------
    maps : ndarray, shape (S, n_x, V)
    xs : ndarray, shape (n_x,)
    mode : {"ci_best", "ci", "fdr", "none"}
        ``ci_best`` / ``ci``: the CI across subjects of the measure at the best x is above 0;
        ``fdr``: the Wilcoxon test at the best x passes BH-FDR at ``q`` with a positive mean;
        ``none``: every vertex with a value. (``ci`` equals ``ci_best`` here.)
    responsive : ndarray of bool, shape (V,), optional
        Further restricts the map (e.g. brain-score CI above 0).

    Returns
    -------
    best : ndarray, shape (V,)
        x of the maximum of the mean, NaN where masked.
    best_all : ndarray, shape (V,)
        Unmasked.
    mask : ndarray of bool, shape (V,)
    """
    from . import stats

    mean, low, _ = stats.mean_ci(maps, level=level)
    best_all = stats.best_distance(mean, xs)
    finite = np.isfinite(best_all)
    idx = np.argmax(np.where(np.isnan(mean), -np.inf, mean), axis=0)
    if mode in ("ci_best", "ci"):
        lb = np.take_along_axis(low, idx[None], axis=0)[0]
        mask = np.nan_to_num(lb, nan=-np.inf) > 0
    elif mode == "fdr":
        at_best = np.take_along_axis(maps, np.broadcast_to(idx, (maps.shape[0], 1,
                                                                 maps.shape[2])), axis=1)[:, 0]
        _, p = stats.wilcoxon_test(at_best)
        reject, _ = stats.fdr_bh(p, q=q)
        mask = np.asarray(reject, bool) & (np.nan_to_num(
            np.take_along_axis(mean, idx[None], axis=0)[0]) > 0)
    elif mode == "none":
        mask = finite.copy()
    else:
        raise ConfigError(f"stats.dstar_mask: unknown mode {mode!r} (fdr, ci, ci_best, none).")
    mask &= finite
    if responsive is not None:
        mask &= np.asarray(responsive, bool)
    return np.where(mask, best_all, np.nan), best_all, mask


def group_analysis(fit_npzs, analysis, config):
    """Group statistics of one analysis.

    Returns
    -------
    dict of ndarray
        For every (measure, series): ``<measure>__<series>__x`` (n_x,), ``__mean``, ``__low``,
        ``__high`` (n_x, V), ``__p`` (Wilcoxon, n_x, V); for the analysis' argmax maps
        (:data:`ARGMAX_MAPS`): ``<name>`` (V,) masked, ``<name>_all``, ``<name>_mask``;
        ``subjects``; ``brain_low`` of the base condition when there is one.
    per_subject : dict
        ``(measure, series) -> (x, maps (S, n_x, V))``.
    subjects : list of str
    """
    from . import stats
    from .pipeline import _quiet_nanmean

    conds, subjects, scores, extra = read_fits(fit_npzs, analysis)
    per = measures(conds, scores)
    sc = _section(config, "stats")
    level, q = float(sc.get("ci", 0.95)), float(sc.get("fdr_q", 0.01))
    out = {"subjects": np.array(subjects), "analysis": np.array(analysis)}
    out.update({k: np.array(v) for k, v in extra.items()})
    with _quiet_nanmean():
        for (measure, series), (xs, maps) in per.items():
            key = f"{measure}__{series}"
            mean, low, high = stats.mean_ci(maps, level=level)
            _, p = stats.wilcoxon_test(maps)
            out.update({f"{key}__x": xs, f"{key}__mean": mean, f"{key}__low": low,
                        f"{key}__high": high, f"{key}__p": p})
        responsive = None
        if ("brainscore", "base") in per:
            _, bl, _ = stats.mean_ci(per[("brainscore", "base")][1][:, 0], level=level)
            responsive = np.nan_to_num(bl, nan=-np.inf) > 0
        elif ("brainscore", "layer") in per:
            # responsive at any layer
            _, bl, _ = stats.mean_ci(per[("brainscore", "layer")][1], level=level)
            responsive = np.nan_to_num(bl, nan=-np.inf).max(0) > 0
        if responsive is not None:
            out["responsive"] = responsive
        mode = sc["dstar_mask"]
        for name, key in ARGMAX_MAPS.get(analysis, {}).items():
            if key not in per:
                continue
            xs, maps = per[key]
            best, best_all, mask = argmax_map(maps, xs, mode=mode, level=level, q=q,
                                              responsive=responsive)
            out.update({name: best, f"{name}_all": best_all, f"{name}_mask": mask})
    return out, per, subjects


def region_curves(per, subjects, levels, config):
    """Region means of every measure: per subject (tidy) and group statistics.

    Parameters
    ----------
    per : dict
        From :func:`measures`.
    subjects : list of str
    levels : dict or None
        ``level -> (labels, names)`` (:func:`brainpred.pipeline.atlas_from_config`).

    Returns
    -------
    scores : DataFrame
        ``subject, level, region, measure, series, x, value``.
    group : DataFrame
        ``level, region, measure, series, x, n, mean, ci_low, ci_high, p, q`` (q: BH across
        the regions of a level, per measure, series and x).
    """
    from . import regions
    from .pipeline import WHOLE_CORTEX, _quiet_nanmean, tidy_group_stats

    frames = []
    for (measure, series), (xs, maps) in per.items():
        for s, sub in enumerate(subjects):
            with _quiet_nanmean():
                whole = np.nanmean(maps[s], axis=1)
            parts = [pd.DataFrame({"level": "whole", "region": WHOLE_CORTEX, "x": xs,
                                   "value": whole})]
            for level, (lab, nam) in (levels or {}).items():
                t = regions.region_means(maps[s], lab, nam, dims=["x"], coords={"x": xs})
                t.insert(0, "level", level)
                parts.append(t[["level", "region", "x", "value"]])
            t = pd.concat(parts, ignore_index=True)
            t.insert(0, "subject", sub)
            t["measure"], t["series"] = measure, series
            frames.append(t[["subject", "level", "region", "measure", "series", "x", "value"]])
    scores = pd.concat(frames, ignore_index=True)
    group = tidy_group_stats(scores, ["level", "region", "measure", "series", "x"], "x",
                             list(subjects), config)
    # readable order: whole cortex, key regions, bilateral regions, then the split parcels
    rank = group["level"].map({**LEVEL_RANK, "parcel": 3}).fillna(4)
    group = (group.assign(_r=rank).sort_values(["_r", "measure", "series", "region", "x"],
                                                kind="stable")
             .drop(columns="_r").reset_index(drop=True))
    return scores, group


def make_analysis_group(fit_npzs, analysis, config, outputs, labels_paths=None,
                        surface_paths=None):
    """Rule ``analysis_group``: group maps (npz + GIfTI) and region tables of one analysis.

    Parameters
    ----------
    outputs : dict
        ``npz``, ``regions`` (per subject), ``regions_stats`` (group), and GIfTI pairs
        ``<name>_L``/``<name>_R`` for the analysis' argmax maps (:data:`ARGMAX_MAPS`).
    """
    from .pipeline import atlas_from_config, write_surface_maps

    g, per, subjects = group_analysis(fit_npzs, analysis, config)
    io.save_npz(outputs["npz"], **g)
    if analysis == "finetune" and "finetunegain_L" in outputs:
        key = f"gain__step-{finetune_steps(config)[-1]}"
        write_surface_maps(outputs["finetunegain_L"], outputs["finetunegain_R"],
                           g[f"{key}__mean"],
                           [f"brain-score gain, alpha {a:g} vs 0" for a in g[f"{key}__x"]])
    for name in ARGMAX_MAPS.get(analysis, {}):
        if f"{name}_L" in outputs:
            if name not in g:
                raise DataError(f"{analysis}: no {name} map (its conditions are switched off); "
                                "re-run snakemake.")
            write_surface_maps(outputs[f"{name}_L"], outputs[f"{name}_R"], g[name][None],
                               [ARGMAX_TITLES[name]])
    levels = dict(atlas_from_config(labels_paths, surface_paths, config) or {})
    if "responsive" in g:
        # the vertices with a reliable brain score (CI above 0) as one more "region": the
        # paper comparison reads the syntactic / semantic d* of their mean curves
        levels[RESPONSIVE_LEVEL] = (g["responsive"].astype(int), {1: RESPONSIVE_REGION})
    scores, group = region_curves(per, subjects, levels, config)
    io.write_tsv(outputs["regions"], scores)
    io.write_tsv(outputs["regions_stats"], group)
    for name in ARGMAX_MAPS.get(analysis, {}):
        if name in g:
            log.info("%s: %s shown on %d vertices", analysis, name, int(np.sum(g[f"{name}_mask"])))


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

LEVEL_RANK = {"whole": 0, "key": 1, "bilateral": 2}
#: Region level / name of the vertices with a reliable brain score in the analysis tables.
RESPONSIVE_LEVEL, RESPONSIVE_REGION = "responsive", "reliable brain score"


def one_level(table, keys):
    """Rows of the levels drawn in curves (whole cortex, key regions, then bilateral
    regions), one row per region name and ``keys`` (the first level wins)."""
    if "level" not in table:
        return table
    t = table[table["level"].isin(list(LEVEL_RANK))]
    return (t.assign(_r=t["level"].map(LEVEL_RANK)).sort_values("_r", kind="stable")
            .drop_duplicates(["subject", "region", *keys]).drop(columns="_r"))


def curve_regions(table, config):
    """Whole cortex and the configured key regions (``regions.key``) present in ``table``."""
    from .pipeline import WHOLE_CORTEX

    key = list((config.get("regions", {}) or {}).get("key", []) or [])
    present = set(table["region"])
    return [WHOLE_CORTEX] + [r for r in key if r in present]


# figure key -> (kind, file suffix)
FIGURES = {
    "layers": {"layerbrain": "plot", "layerforecast": "plot", "kstar": "map"},
    "controls": {"controlcurves": "plot", "widthcurves": "plot"},
    "syntax": {"syntaxcurves": "plot", "dstarsyntactic": "map", "dstarsemantic": "map"},
    "finetune": {"finetunegain": "plot", "finetunegainmap": "map", "finetuneloss": "plot"},
}

FIGURE_CAPTIONS = {
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
    "finetuneloss": "Fine-tuning loss curves: next-token cross-entropy and contrastive InfoNCE "
                    "loss per training step for each alpha (the InfoNCE of alpha = 0 is "
                    "computed but not trained).",
}


def figure_keys(analysis, config):
    """Figures an analysis draws with this config."""
    keys = list(FIGURES[analysis])
    if analysis == "controls" and not _section(config, "controls").get("widths"):
        keys.remove("widthcurves")
    return keys


def make_analysis_figures(analysis, group_npz, regions_tsv, config, outputs, loss_tsvs=()):
    """Rule ``analysis_figures``: the PNG figures of one analysis (:data:`FIGURES`).

    ``loss_tsvs``: the fine-tuning loss tables (``finetune`` only), in the order of
    :func:`finetune_alphas`.
    """
    from . import figures
    from .pipeline import _truth

    synthetic = config["dataset"]["source"] == "synthetic"
    truth = _truth(config)
    g = io.load_npz(group_npz)
    n = len(g["subjects"])
    table = io.read_tsv(regions_tsv)
    table = one_level(table, ["measure", "series", "x"])
    regions = curve_regions(table, config)

    def curves(key, measure, series, xlabel, ylabel, title, true_x=None, labels=None):
        t = table[table["measure"] == measure]
        figures.plot_region_curves(t, outputs[key], synthetic, regions=regions, series=series,
                                   xlabel=xlabel, ylabel=ylabel, title=title, true_x=true_x,
                                   labels=labels)

    def surface(key, title, vmin, vmax):
        figures.plot_surface(g[key], outputs[key], title=title, synthetic=synthetic,
                             cmap="viridis", vmin=vmin, vmax=vmax)

    if analysis == "layers":
        d = int(_section(config, "layers").get("distance", 8))
        planted = dict(truth["layers"]) if truth and "layers" in truth else None
        curves("layerbrain", "brainscore", ["layer"], "layer k", "R(X_k) (r)",
               f"Brain score per layer, mean of {n} subjects", labels={"layer": "R(X_k)"})
        curves("layerforecast", "forecastscore", ["layer"], "layer k", f"F_k({d}) (Δr)",
               f"Forecast score per layer at d = {d}", true_x=planted,
               labels={"layer": f"F_k({d})"})
        xs = g["forecastscore__layer__x"]
        surface("kstar", f"Forecast depth k* (layer), d = {d}", float(xs.min()), float(xs.max()))
    elif analysis == "controls":
        d_true = truth["window_distances"] if truth else None
        curves("controlcurves", "forecastscore", list(CONTROL_KINDS), "distance d (words)",
               "F(d) (Δr)", "Forecast score of control windows", true_x=d_true,
               labels={"true": "true future", "random": "random vectors",
                       "shuffled": "shuffled words", "generated": "generated future"})
        if "widthcurves" in outputs:
            wd = int(g["width_distance"]) if "width_distance" in g else None
            w_true = {r: truth["width"] for r in truth["window_distances"]} if truth else None
            curves("widthcurves", "widthscore", ["true"], "window width (words)", "F (Δr)",
                   f"Forecast score by window width at d = {wd}", true_x=w_true,
                   labels={"true": "F(width)"})
    elif analysis == "syntax":
        planted = None
        if truth and "syntax" in truth:
            planted = {"syntactic": truth["syntax"]["d_syntactic"],
                       "semantic": truth["syntax"]["d_semantic"]}
        curves("syntaxcurves", "forecastscore", ["syntactic", "semantic"], "distance d (words)",
               "F(d) (Δr)", "Syntactic and semantic forecast scores", true_x=planted,
               labels={"syntactic": "F_syn(d)", "semantic": "F_sem(d)"})
        xs = g["forecastscore__syntactic__x"]
        for key in ("dstarsyntactic", "dstarsemantic"):
            surface(key, ARGMAX_TITLES[key].capitalize(), float(xs.min()), float(xs.max()))
    elif analysis == "finetune":
        steps = finetune_steps(config)
        curves("finetunegain", "gain", [f"step-{s}" for s in reversed(steps)],
               "loss mix alpha (contrastive share)", "R(alpha) - R(0) (Δr)",
               f"Fine-tuning gain over alpha = 0, mean of {n} subjects")
        key = f"gain__step-{steps[-1]}"
        xs = g[f"{key}__x"]
        i = int(np.argmin(np.abs(xs - 0.5)))
        figures.plot_surface(g[f"{key}__mean"][i], outputs["finetunegainmap"],
                             title=f"Fine-tuning gain, alpha {xs[i]:g} vs 0, step {steps[-1]}",
                             synthetic=synthetic, cmap="cold_hot", symmetric=True)
        frames = []
        for a, path in zip(finetune_alphas(config), loss_tsvs):
            t = io.read_tsv(path)
            for loss in ("ce", "nce"):
                frames.append(pd.DataFrame({"subject": "run", "region": loss.upper(),
                                            "series": f"alpha {a:g}", "x": t["step"],
                                            "value": t[loss]}))
        figures.plot_region_curves(pd.concat(frames, ignore_index=True),
                                   outputs["finetuneloss"], synthetic,
                                   regions=["CE", "NCE"], xlabel="training step",
                                   ylabel="loss", title="Fine-tuning losses", mark_best=False)


# --------------------------------------------------------------------------------------------
# Fine-tuning rules
# --------------------------------------------------------------------------------------------

def make_finetune_train(corpus, model_cfg, config, alpha, work_dir, out_loss, out_manifest):
    """Rule ``finetune_train``: fine-tune the model at one loss mix; resumable.

    Checkpoints go to ``work_dir`` (not a Snakemake output, so an interrupted job resumes from
    its last checkpoint instead of starting over); once training ends, the loss table is copied
    to ``out_loss`` and ``out_manifest`` (JSON) lists the evaluated checkpoints.

    Parameters
    ----------
    corpus : list of path or dict
        Text files, or a HuggingFace datasets spec (:func:`brainpred.finetune.load_corpus`).
    model_cfg : dict
        ``config["model"]`` (the model to start from).
    config : dict
    alpha : float
    """
    import shutil

    from . import features, finetune

    ft = finetune_train_config(config, alpha)
    settings = finetune.validate_config(ft)
    _, tokenizer = features.load_model(model_cfg["name"], seed=model_cfg.get("seed", 0),
                                       device="cpu")
    seqs = finetune.load_corpus(corpus, tokenizer, settings["context"],
                                seed=settings["seed"])
    log.info("fine-tuning %s, alpha %g: %d sequences of %d tokens, %d steps", model_cfg["name"],
             alpha, len(seqs), settings["context"], settings["steps"])
    dirs = finetune.train(model_cfg["name"], seqs, work_dir, ft,
                          model_seed=int(model_cfg.get("seed", 0)),
                          device=model_cfg.get("device", "auto"), progress=True)
    with io.atomic_path(out_loss) as tmp:
        shutil.copyfile(f"{work_dir}/loss.tsv", tmp)
    ckpts = finetune.list_checkpoints(work_dir)
    missing = [s for s in finetune_steps(config) if s not in ckpts]
    if missing:
        raise DataError(f"{work_dir}: no checkpoint of steps {missing} after training.")
    io.write_json(out_manifest, {"alpha": float(alpha), "model": model_cfg["name"],
                                 "checkpoints": {str(s): str(ckpts[s])
                                                 for s in finetune_steps(config)},
                                 "written": [str(d) for d in dirs]})


def make_finetune_features(manifest, step, words_tsvs, text_txts, model_cfg, out_npzs):
    """Rule ``finetune_features``: activations of the stories under a fine-tuned checkpoint
    (the model is loaded once; one ``.npz`` per story, as :func:`brainpred.pipeline.
    make_story_features` writes them, with the provenance kind ``finetune_features``: the
    checkpoint folder as the model, its config.json hash as the revision)."""
    from pathlib import Path

    from . import features
    from . import provenance as prov
    from .pipeline import story_of

    m = io.read_json(manifest)
    path = m["checkpoints"].get(str(int(step)))
    if path is None or not Path(path).is_dir():
        raise DataError(f"{manifest}: checkpoint of step {step} missing ({path}); delete the "
                        "manifest and re-run snakemake to train again.")
    model, tokenizer = features.load_model(path, device=model_cfg.get("device", "auto"),
                                           dtype=model_cfg.get("dtype", "float32"))
    meta = {"name": path, "base_model": model_cfg["name"], "alpha": m["alpha"],
            "step": int(step), **{k: model_cfg.get(k) for k in ("context_tokens", "mode",
                                                               "min_context", "dtype")}}
    for words_tsv, text_txt, out in zip(words_tsvs, text_txts, out_npzs):
        words = io.read_tsv(words_tsv)
        text = Path(text_txt).read_text(encoding="utf-8")
        acts = features.story_features(words, text, model, tokenizer,
                                       context_tokens=model_cfg.get("context_tokens", 1024),
                                       batch_size=model_cfg.get("batch_size", 8),
                                       mode=model_cfg.get("mode", "exact"),
                                       min_context=model_cfg.get("min_context", 512))
        rec = prov.features_record(
            story_of(words_tsv), words_tsv, text_txt, {**model_cfg, "name": path},
            prov.model_revision(path, model), kind="finetune_features",
            base_model=model_cfg["name"], alpha=m["alpha"], step=int(step))
        features.save_features(out, acts, words, meta, provenance=rec)
        log.info("fine-tuned alpha %s step %d: %s", m["alpha"], int(step), Path(out).name)


# --------------------------------------------------------------------------------------------
# Syntax rule
# --------------------------------------------------------------------------------------------

def syntax_settings(syntax_cfg):
    """Keyword arguments of :func:`brainpred.syntax.syntactic_activations` from the config."""
    s = syntax_cfg or {}
    return dict(n_futures=int(s.get("n_futures", 10)), seed=int(s.get("seed", 0)),
                max_span=int(s.get("max_span", 20)),
                min_similarity=float(s.get("min_similarity", 0.8)),
                max_tries=int(s.get("max_tries", 20)), context=s["context"])


def syntax_word_classes(syntax_cfg, corpus_words, corpus_text, nlp):
    """Word classes of ``syntax.corpus``: the stories (``(words, text)`` files) or text files."""
    from pathlib import Path

    from . import syntax

    corpus = (syntax_cfg or {}).get("corpus", "stories")
    if corpus == "stories":
        stories = [(io.read_tsv(w), Path(t).read_text(encoding="utf-8"))
                   for w, t in zip(corpus_words, corpus_text)]
        return syntax.story_classes(stories, nlp)
    missing = [p for p in corpus_text if not Path(p).is_file()]
    if missing:
        raise DataError(f"syntax.corpus: {missing[0]} does not exist; list existing text files "
                        "or use 'stories'.")
    return syntax.corpus_classes(list(corpus_text), nlp)


def make_story_syntax(words_tsv, text_txt, model_cfg, syntax_cfg, corpus_words, corpus_text,
                      out_npz):
    """Rule ``story_syntax``: X_syn of one story, every layer (:mod:`brainpred.syntax`).

    The cache records its provenance (kind ``syntactic_activations``: story, words and text
    sha256, model, revision, settings and the syntax settings)."""
    from pathlib import Path

    from . import features, syntax
    from . import provenance as prov
    from .pipeline import story_of

    words = io.read_tsv(words_tsv)
    text = Path(text_txt).read_text(encoding="utf-8")
    nlp = syntax.load_spacy((syntax_cfg or {}).get("spacy_model", "en_core_web_sm"))
    classes = syntax_word_classes(syntax_cfg, corpus_words, corpus_text, nlp)
    model, tokenizer = features.load_model(model_cfg["name"], seed=model_cfg.get("seed", 0),
                                           device=model_cfg.get("device", "auto"),
                                           dtype=model_cfg.get("dtype", "float32"))
    settings = syntax_settings(syntax_cfg)
    acts, spans = syntax.syntactic_activations(
        words, text, model, tokenizer, nlp, classes,
        context_tokens=int(model_cfg.get("context_tokens", 1024)),
        batch_size=int(model_cfg.get("batch_size", 8)), progress=True, return_futures=True,
        mode=model_cfg.get("mode", "exact"), min_context=int(model_cfg.get("min_context", 512)),
        **settings)
    summary = syntax.futures_summary(spans)
    log.info("syntax: %s", summary)
    meta = {"model": model_cfg["name"], "seed": model_cfg.get("seed", 0),
            "syntax": dict(syntax_cfg or {}, context=settings["context"]), "futures": summary}
    rec = prov.features_record(
        story_of(words_tsv), words_tsv, text_txt, model_cfg,
        prov.model_revision(model_cfg["name"], model, seed=model_cfg.get("seed", 0)),
        kind="syntactic_activations", syntax=settings,
        spacy_model=(syntax_cfg or {}).get("spacy_model", "en_core_web_sm"),
        corpus=(syntax_cfg or {}).get("corpus", "stories"))
    features.save_features(out_npz, acts, words, meta, provenance=rec)


# --------------------------------------------------------------------------------------------
# Generated-futures rule
# --------------------------------------------------------------------------------------------

def make_story_continuations(words_tsv, text_txt, model_cfg, controls_cfg, layer, horizon,
                             out_npz):
    """Rule ``story_continuations``: activations of the model's own continuation after every
    word of a story (:func:`brainpred.continuations.generate_continuations`), at ``layer``.

    Written: ``layer``, ``generated`` (n_words, horizon, D), ``n_missing`` (words the token
    budget did not complete, zeros), ``continuations`` (the generated text of each word) and
    ``provenance`` (kind ``continuations``: story, words and text sha256, model, revision,
    settings, layer, horizon and the generation settings).
    """
    from pathlib import Path

    from . import continuations, features
    from . import provenance as prov
    from .pipeline import story_of

    g = (controls_cfg or {}).get("generated", {}) or {}
    words = io.read_tsv(words_tsv)
    text = Path(text_txt).read_text(encoding="utf-8")
    model, tokenizer = features.load_model(model_cfg["name"], seed=model_cfg.get("seed", 0),
                                           device=model_cfg.get("device", "auto"),
                                           dtype=model_cfg.get("dtype", "float32"))
    gen, info = continuations.generate_continuations(
        words, text, model, tokenizer, int(horizon), method=g.get("method", "greedy"),
        seed=int(g.get("seed", 0)), temperature=float(g.get("temperature", 1.0)),
        top_k=int(g.get("top_k", 0)), context_tokens=int(model_cfg.get("context_tokens", 1024)),
        batch_size=int(model_cfg.get("batch_size", 8)), layers=[int(layer)], progress=True,
        return_info=True)
    texts = info.get("text")
    rec = prov.features_record(
        story_of(words_tsv), words_tsv, text_txt, model_cfg,
        prov.model_revision(model_cfg["name"], model, seed=model_cfg.get("seed", 0)),
        kind="continuations", layer=int(layer), horizon=int(horizon), generated=dict(g))
    io.save_npz(out_npz, layer=np.array(int(layer)), generated=np.asarray(gen[0], np.float32),
                n_missing=np.array(int(np.sum(info.get("n_missing", 0)))),
                continuations=np.array([str(t) for t in texts] if texts is not None else []),
                **{prov.KEY: prov.to_array(rec)})
