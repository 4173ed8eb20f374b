"""Stage entry points of ``workflow/rules/analyses.smk``: the further analyses (forecast depth,
control windows, syntax / semantics, fine-tuning, several models), their feature caches, fits, group maps and
figures. Their fits go through the main analysis' loop (:func:`brainpred.stages.mapping.
fit_conditions`), their group step through :func:`brainpred.group.analysis_group`."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from .. import continuations, design, features, figures, finetune, group, io, syntax, tables
from ..tables import RESPONSIVE_LEVEL, RESPONSIVE_REGION
from .. import provenance as prov
from ..conditions import (ARGMAX_MAPS, ARGMAX_TITLES, CONTROL_KINDS, conditions,
                          entry_model_config, finetune_alphas, finetune_steps,
                          finetune_train_config, methods, model_entries)
from ..errors import ConfigError, DataError
from .common import (atlas_levels, ground_truth, load_language_model, load_story_features,
                     nuisance_audio, read_fits, scores_provenance, story_of)
from .mapping import fit_conditions

__all__ = ["best_distance_from_group", "make_analysis_fit", "make_analysis_group",
           "make_analysis_figures", "make_finetune_train", "make_finetune_features",
           "syntax_settings", "syntax_word_classes", "make_story_syntax",
           "make_story_continuations"]

log = logging.getLogger(__name__)


def best_distance_from_group(group_npz, config):
    """Distance of the width analysis: ``controls.width_distance`` or, if "best", the d that
    maximises the main analysis' group F(d) averaged over the vertices whose brain-score CI is
    above 0 (every vertex if none)."""
    value = config["controls"]["width_distance"]
    if value != "best":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"controls.width_distance: {value!r} is neither 'best' nor an "
                              "integer.") from None
    if group_npz is None:
        raise ConfigError("controls.width_distance: 'best' reads the main analysis' group maps "
                          "(results/group/.../group_desc-scores.npz); pass them, or set an "
                          "integer distance.")
    g = io.load_npz(group_npz)
    return group.best_group_distance(g["brain_low"], g["brain_score"], g["forecast_score"],
                                     g["distances"])


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
        ``"models"``: ``key -> {story -> features .npz}`` (fine-tuned checkpoints; for the
        ``models`` analysis the listed models by label, :func:`brainpred.conditions.
        model_entries`, each cache checked against that model's settings);
        ``"words"`` (optional): ``story -> words table``, against which every cache's
        recorded words sha256 is checked (without it: the recorded story, kind and model);
        ``"audio"`` (optional): ``story -> .wav``, read when ``nuisance`` lists
        ``audio_envelope`` (default: ``config["audio"]``, where the workflow's params put
        them).
    bold_paths : dict
        ``basename -> BOLD .npy``.
    config : dict
    out_npz : path
        Written with ``conditions`` (names), ``conditions_json`` (their definitions),
        ``subjects``, ``provenance`` (:func:`brainpred.stages.common.scores_provenance`) and, per
        subject, ``<subject>__scores`` (n_conditions, V) and ``<subject>__alpha``
        (n_conditions, n_folds, V: the ridge penalty chosen by the inner CV in each outer
        fold, NaN where a vertex is not fitted); the ``models`` analysis adds ``models_json``
        (label, name, revision and ``n_layers`` of each listed model).
    group_npz : path, optional
        The main analysis' group maps (the width analysis' "best" distance).
    """
    table = io.read_tsv(run_table_tsv, dtype={"run": str})
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
    models, model_info = {}, {}
    entries = {m["label"]: m for m in model_entries(config)} if analysis == "models" else {}
    for key, paths in (sources_paths.get("models") or {}).items():
        if analysis == "models":
            # the listed models' plain feature caches, each checked against its own settings
            if key not in entries:
                raise DataError(f"{next(iter(paths.values()))}: activations of model-{key}, "
                                "which the models list does not name; re-run snakemake.")
            loaded, recs = load_story_features(
                paths, list(paths), words_paths=words_paths,
                model_cfg=entry_model_config(model_cfg, entries[key]) if model_cfg else None)
            rec = next(iter(recs.values()))
            model_info[key] = {"label": key, "name": entries[key]["name"],
                               "model_revision": rec.get("model_revision"),
                               "n_layers": int(next(iter(loaded.values()))[0].shape[0] - 1)}
        else:
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
    if analysis == "controls" and config["controls"]["widths"]:
        width_d = best_distance_from_group(group_npz, config)
    missing = sorted(set(entries) - set(model_info))
    if missing:
        raise DataError(f"models analysis: no activations of model-{missing[0]} given; re-run "
                        "snakemake.")
    conds = conditions(analysis, config, n_layers, width_distance=width_d,
                       model_depths={k: v["n_layers"] for k, v in model_info.items()})
    # the seed of the random and shuffled windows (a job sees only its analysis' section)
    seed = int(config["controls"]["seed"]) if analysis in ("controls", "variants") else 0
    sources = design.WordSources(words, acts, syn, gen, seed=seed, models=models,
                                 audio=nuisance_audio(config, words, sources_paths.get("audio")))
    scores, alphas = fit_conditions(conds, subjects, table, sources, bold_paths, config,
                                    where=run_table_tsv, what=f"{analysis} analysis",
                                    return_alphas=True)
    out = {"conditions": np.array([c.name for c in conds]),
           "conditions_json": np.array(json.dumps([asdict(c) for c in conds])),
           "subjects": np.array(list(subjects)), "analysis": np.array(analysis),
           prov.KEY: prov.to_array(scores_provenance(
               "analysis_fit", subjects, list(records), records, config, analysis=analysis,
               settings=config.get(analysis), width_distance=width_d,
               file=Path(out_npz).name,
               **({"models": list(model_info.values())} if model_info else {})))}
    if model_info:
        # the listed models (label, name, revision, depth): the comparison's relative depths
        out["models_json"] = np.array(json.dumps([model_info[k] for k in entries]))
    if width_d is not None:
        out["width_distance"] = np.array(width_d)
    for subject in subjects:
        out[f"{subject}__scores"] = scores[subject]
        out[f"{subject}__alpha"] = alphas[subject]
    io.save_npz(out_npz, **out)
    log.info("%s analysis: wrote %s (%s)", analysis, out_npz, ", ".join(subjects))


def make_analysis_group(fit_npzs, analysis, config, outputs, labels_paths=None,
                        surface_paths=None):
    """Rule ``analysis_group``: group maps (npz + GIfTI) and region tables of one analysis.

    Parameters
    ----------
    outputs : dict
        ``npz``, ``regions`` (per subject), ``regions_stats`` (group), and GIfTI pairs
        ``<name>_L``/``<name>_R`` for the analysis' argmax maps (:data:`ARGMAX_MAPS`); the
        ``models`` analysis: ``comparison`` (:func:`brainpred.tables.model_comparison`, every
        region level).
    """
    conds, subjects, scores, extra = read_fits(fit_npzs, analysis)
    sc = config["stats"]
    g, per = group.analysis_group(conds, scores, analysis, sc,
                                  reference=tuple(int(d) for d in sc["dstar_reference"]))
    g.update({"subjects": np.array(subjects), "analysis": np.array(analysis)})
    g.update({k: np.array(v) for k, v in extra.items()})
    if analysis == "models":
        g["models_json"] = np.array(str(io.load_npz(fit_npzs[0])["models_json"]))
    io.save_npz(outputs["npz"], **g)
    if analysis == "finetune" and "finetunegain_L" in outputs:
        key = f"gain__step-{finetune_steps(config)[-1]}"
        io.write_surface_maps(outputs["finetunegain_L"], outputs["finetunegain_R"],
                           g[f"{key}__mean"],
                           [f"brain-score gain, alpha {a:g} vs 0" for a in g[f"{key}__x"]])
    if analysis == "partition":
        for name, what in (("unique", "uniquely explained by W_d"),
                           ("shared", "shared by W_d and X + nuisance")):
            if f"{name}_L" in outputs:
                key = f"{name}__window"
                io.write_surface_maps(outputs[f"{name}_L"], outputs[f"{name}_R"],
                                      g[f"{key}__mean"],
                                      [f"variance {what} (signed R2), d={d:g}"
                                       for d in g[f"{key}__x"]])
    for name in ARGMAX_MAPS.get(analysis, {}):
        if f"{name}_L" in outputs:
            if name not in g:
                raise DataError(f"{analysis}: no {name} map (its conditions are switched off); "
                                "re-run snakemake.")
            io.write_surface_maps(outputs[f"{name}_L"], outputs[f"{name}_R"], g[name][None],
                               [ARGMAX_TITLES[name]])
    levels = dict(atlas_levels(labels_paths, surface_paths, config) or {})
    if "responsive" in g:
        # the vertices with a reliable brain score (CI above 0) as one more "region": the
        # paper comparison reads the syntactic / semantic d* of their mean curves
        levels[RESPONSIVE_LEVEL] = (g["responsive"].astype(int), {1: RESPONSIVE_REGION})
    scores_table, stats_table = tables.region_curves(per, subjects, levels, sc)
    io.write_tsv(outputs["regions"], scores_table)
    io.write_tsv(outputs["regions_stats"], stats_table)
    if analysis == "models" and "comparison" in outputs:
        comp = tables.model_comparison(scores_table, json.loads(str(g["models_json"])),
                                       level=float(sc["ci"]))
        io.write_tsv(outputs["comparison"], comp)
        log.info("models: comparison table of %d models, %d rows", comp["label"].nunique(),
                 len(comp))
    for name in ARGMAX_MAPS.get(analysis, {}):
        if name in g:
            log.info("%s: %s shown on %d vertices", analysis, name, int(np.sum(g[f"{name}_mask"])))


def make_analysis_figures(analysis, group_npz, regions_tsv, config, outputs, loss_tsvs=()):
    """Rule ``analysis_figures``: the PNG figures of one analysis (:data:`FIGURES`).

    ``loss_tsvs``: the fine-tuning loss tables (``finetune`` only), in the order of
    :func:`finetune_alphas`.
    """
    synthetic = config["dataset"]["source"] == "synthetic"
    truth = ground_truth(config)
    g = io.load_npz(group_npz)
    n = len(g["subjects"])
    table = io.read_tsv(regions_tsv)
    table = tables.one_level(table, ["measure", "series", "x"])
    regions = tables.curve_regions(table, config["regions"]["key"])

    def curves(key, measure, series, xlabel, ylabel, title, true_x=None, labels=None):
        t = table[table["measure"] == measure]
        figures.plot_region_curves(t, outputs[key], synthetic, regions=regions, series=series,
                                   xlabel=xlabel, ylabel=ylabel, title=title, true_x=true_x,
                                   labels=labels)

    def surface(key, title, vmin, vmax):
        figures.plot_surface(g[key], outputs[key], title=title, synthetic=synthetic,
                             cmap="viridis", vmin=vmin, vmax=vmax)

    if analysis == "layers":
        d = int(config["layers"]["distance"])
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
    elif analysis == "variants":
        labels = {"paper": "paper (shared penalty)", "banded": "banded penalty",
                  "nuisance": "with nuisance", "banded-nuisance": "banded + nuisance"}
        names = [m for m, _, _ in methods(config)]
        d_true = truth["window_distances"] if truth else None
        curves("variantcurves", "forecastscore", names, "distance d (words)", "F(d) (Δr)",
               "Forecast score: the paper's method and this run's", true_x=d_true,
               labels=labels)
        if "variantcontrols" in outputs:
            # x = the method (0 = the paper's), one line per control kind and distance
            kinds = [k for k in ("random", "shuffled") if config["controls"][k]]
            short = {"paper": "paper", "banded": "banded", "nuisance": "nuisance",
                     "banded-nuisance": "both"}
            frames = []
            for i, m in enumerate(names):
                for k in kinds:
                    t = table[(table["measure"] == "forecastscore")
                              & (table["series"] == f"{m}-{k}")].copy()
                    t["series"] = [f"{k} window, d = {x:g}" for x in t["x"]]
                    t["x"] = float(i)
                    frames.append(t)
            figures.plot_region_curves(
                pd.concat(frames, ignore_index=True), outputs["variantcontrols"], synthetic,
                regions=regions, xlabel=" · ".join(f"{i} {short[m]}"
                                                   for i, m in enumerate(names)),
                ylabel="F (Δr)", title="Control windows under each method (0 = no cost)",
                mark_best=False)
    elif analysis == "partition":
        curves("uniquecurves", "unique", ["window"], "distance d (words)",
               "unique R² of W_d", "Variance uniquely explained by the forecast window",
               labels={"window": "R²(X+N+W_d) − R²(X+N)"})
        curves("sharedcurves", "shared", ["window"], "distance d (words)",
               "shared R²", "Variance shared by the window and X + nuisance",
               labels={"window": "R²(X+N) + R²(W_d) − R²(X+N+W_d)"})
        if "uniquemap" in outputs:
            xs, mean = g["unique__window__x"], g["unique__window__mean"]
            keep = g["responsive"] if "responsive" in g and g["responsive"].any() else None
            i = group.best_group_index(mean, keep)
            figures.plot_surface(mean[i], outputs["uniquemap"],
                                 title=f"Variance uniquely explained by W_d, d = {xs[i]:g}",
                                 synthetic=synthetic, cmap="cold_hot", symmetric=True)
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
    elif analysis == "models":
        info = json.loads(str(g["models_json"]))
        comp = tables.model_comparison(table, info, level=float(config["stats"]["ci"]))
        figures.plot_model_comparison(
            comp, outputs["modelcomparison"], synthetic, regions=regions,
            title=f"Language models: brain and forecast scores by depth, mean of {n} subjects",
            labels={m["label"]: m["name"] for m in info})
    log.info("%s figures: %s", analysis, ", ".join(str(k) for k in outputs))


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
    ft = finetune_train_config(config, alpha)
    settings = finetune.validate_config(ft)
    _, tokenizer = load_language_model({**model_cfg, "device": "cpu"})
    seqs = finetune.load_corpus(corpus, tokenizer, settings["context"],
                                seed=settings["seed"])
    log.info("fine-tuning %s, alpha %g: %d sequences of %d tokens, %d steps", model_cfg["name"],
             alpha, len(seqs), settings["context"], settings["steps"])
    dirs = finetune.train(model_cfg["name"], seqs, work_dir, ft,
                          model_seed=int(model_cfg["seed"]), device=model_cfg["device"],
                          progress=True)
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
    (the model is loaded once; one ``.npz`` per story, as :func:`brainpred.stages.features.
    make_story_features` writes them, with the provenance kind ``finetune_features``: the
    checkpoint folder as the model, its config.json hash as the revision)."""
    m = io.read_json(manifest)
    path = m["checkpoints"].get(str(int(step)))
    if path is None or not Path(path).is_dir():
        raise DataError(f"{manifest}: checkpoint of step {step} missing ({path}); delete the "
                        "manifest and re-run snakemake to train again.")
    model, tokenizer = load_language_model(model_cfg, name=path)
    meta = {"name": path, "base_model": model_cfg["name"], "alpha": m["alpha"],
            "step": int(step), **{k: model_cfg[k] for k in ("context_tokens", "mode",
                                                           "min_context", "dtype")}}
    for words_tsv, text_txt, out in zip(words_tsvs, text_txts, out_npzs):
        words = io.read_tsv(words_tsv)
        text = Path(text_txt).read_text(encoding="utf-8")
        acts = features.story_features(words, text, model, tokenizer,
                                       context_tokens=model_cfg["context_tokens"],
                                       batch_size=model_cfg["batch_size"],
                                       mode=model_cfg["mode"],
                                       min_context=model_cfg["min_context"])
        rec = prov.features_record(
            story_of(words_tsv), words_tsv, text_txt, {**model_cfg, "name": path},
            prov.model_revision(path, model), kind="finetune_features",
            base_model=model_cfg["name"], alpha=m["alpha"], step=int(step))
        features.save_features(out, acts, words, meta, provenance=rec)
        log.info("fine-tuned alpha %s step %d: %s", m["alpha"], int(step), Path(out).name)


def syntax_settings(syntax_cfg):
    """Keyword arguments of :func:`brainpred.syntax.syntactic_activations` from the config."""
    s = syntax_cfg
    return dict(n_futures=int(s["n_futures"]), seed=int(s["seed"]), max_span=int(s["max_span"]),
                min_similarity=float(s["min_similarity"]), max_tries=int(s["max_tries"]),
                context=s["context"])


def syntax_word_classes(syntax_cfg, corpus_words, corpus_text, nlp):
    """Word classes of ``syntax.corpus``: the stories (``(words, text)`` files) or text files."""
    corpus = syntax_cfg["corpus"]
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
    words = io.read_tsv(words_tsv)
    text = Path(text_txt).read_text(encoding="utf-8")
    nlp = syntax.load_spacy(syntax_cfg["spacy_model"])
    classes = syntax_word_classes(syntax_cfg, corpus_words, corpus_text, nlp)
    model, tokenizer = load_language_model(model_cfg)
    settings = syntax_settings(syntax_cfg)
    acts, spans = syntax.syntactic_activations(
        words, text, model, tokenizer, nlp, classes,
        context_tokens=int(model_cfg["context_tokens"]), batch_size=int(model_cfg["batch_size"]),
        progress=True, return_futures=True, mode=model_cfg["mode"],
        min_context=int(model_cfg["min_context"]), **settings)
    summary = syntax.futures_summary(spans)
    log.info("syntax: %s", summary)
    meta = {"model": model_cfg["name"], "seed": model_cfg["seed"],
            "syntax": dict(syntax_cfg, context=settings["context"]), "futures": summary}
    rec = prov.features_record(
        story_of(words_tsv), words_tsv, text_txt, model_cfg,
        prov.model_revision(model_cfg["name"], model, seed=model_cfg["seed"]),
        kind="syntactic_activations", syntax=settings, spacy_model=syntax_cfg["spacy_model"],
        corpus=syntax_cfg["corpus"])
    features.save_features(out_npz, acts, words, meta, provenance=rec)


def make_story_continuations(words_tsv, text_txt, model_cfg, controls_cfg, layer, horizon,
                             out_npz):
    """Rule ``story_continuations``: activations of the model's own continuation after every
    word of a story (:func:`brainpred.continuations.generate_continuations`), at ``layer``.

    Written: ``layer``, ``generated`` (n_words, horizon, D), ``n_missing`` (words the token
    budget did not complete, zeros), ``continuations`` (the generated text of each word) and
    ``provenance`` (kind ``continuations``: story, words and text sha256, model, revision,
    settings, layer, horizon and the generation settings).
    """
    g = controls_cfg["generated"]
    words = io.read_tsv(words_tsv)
    text = Path(text_txt).read_text(encoding="utf-8")
    model, tokenizer = load_language_model(model_cfg)
    gen, info = continuations.generate_continuations(
        words, text, model, tokenizer, int(horizon), method=g["method"], seed=int(g["seed"]),
        temperature=float(g["temperature"]), top_k=int(g["top_k"]),
        context_tokens=int(model_cfg["context_tokens"]), batch_size=int(model_cfg["batch_size"]),
        layers=[int(layer)], progress=True, return_info=True)
    texts = info.get("text")
    rec = prov.features_record(
        story_of(words_tsv), words_tsv, text_txt, model_cfg,
        prov.model_revision(model_cfg["name"], model, seed=model_cfg["seed"]),
        kind="continuations", layer=int(layer), horizon=int(horizon), generated=dict(g))
    io.save_npz(out_npz, layer=np.array(int(layer)), generated=np.asarray(gen[0], np.float32),
                n_missing=np.array(int(np.sum(info.get("n_missing", 0)))),
                continuations=np.array([str(t) for t in texts] if texts is not None else []),
                **{prov.KEY: prov.to_array(rec)})
    log.info("wrote %s: %d words x %d generated words x %d dims (layer %d), %d incomplete",
             Path(out_npz).name, *np.asarray(gen[0]).shape, int(layer),
             int(np.sum(info.get("n_missing", 0))))
