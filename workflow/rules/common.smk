# Shared definitions: the run plan, output paths and input functions.

import os
import shutil
from pathlib import Path

from brainpred.config import result_settings
from brainpred.narratives import story_folder
from brainpred.plan import fit_groups, model_tag, run_plan

ROOT = config["dataset"]["root"].rstrip("/")
SPACE = config["dataset"]["space"]
MODEL = model_tag(config["model"]["name"])
LAYER = config["features"]["layer"]
PLAN = run_plan(config)
SUBJECTS = sorted(PLAN["subject"].unique())
STORIES = sorted(PLAN["story"].unique())
RUNS = PLAN.drop_duplicates("basename")
# subjects who heard the same stimulus sequence are fitted together (mapping.shared_subjects)
FITS = fit_groups(PLAN, config["mapping"]["shared_subjects"])
FIT_OF = {s: fit for fit, subjects in FITS.items() for s in subjects}
RESULTS = "results"
SCORES = f"{RESULTS}/scores/model-{MODEL}_layer-{LAYER}"
GROUP = f"{RESULTS}/group/model-{MODEL}_layer-{LAYER}"
FIGURES = f"{RESULTS}/figures/model-{MODEL}_layer-{LAYER}"
# the run's configuration as used (rule effective_config), next to the results
EFFECTIVE_CONFIG = f"{RESULTS}/config/desc-effective_config.yaml"
# the paper's summary table computed from this run (rule paper_comparison)
PAPER_COMPARISON = f"{RESULTS}/tables/desc-paper_comparison.tsv"

wildcard_constraints:
    subject=r"sub-[0-9]+",
    story=r"[A-Za-z0-9]+",
    basename=r"sub-[0-9]+_task-[A-Za-z0-9]+(_run-[0-9]+)?",
    fit=r"fit-[0-9]+",
    task=r"[A-Za-z0-9]+",


def config_for(*sections, **extra):
    """The config sections a rule's jobs read, as its ``params.config``: Snakemake re-runs a job
    when its params change, so a job must see only what it uses (editing the report title
    must not refit the ridge), and no key that changes only how it runs (batch sizes, device,
    backend: ``brainpred.config.RUNTIME_KEYS``; the scripts add them back from the config)."""
    out = {k: result_settings(config[k], k) if isinstance(config[k], dict) else config[k]
           for k in sections if k in config}
    out.update(extra)
    return out


# the model settings that change a result (params of the feature rules; no batch size, device)
MODEL_SETTINGS = result_settings(config["model"], "model")


def gifti(subject, basename, hemi):
    return (f"{ROOT}/derivatives/afni-nosmooth/{subject}/func/"
            f"{basename}_space-{SPACE}_hemi-{hemi}_desc-clean.func.gii")


def run_metadata(subject, basename):
    """A run's events.tsv and BOLD sidecar (audio onset, TR): inputs of the run table."""
    return [f"{ROOT}/{subject}/func/{basename}_events.tsv",
            f"{ROOT}/{subject}/func/{basename}_bold.json"]


def transcript_input(story):
    """The story's punctuated transcript when the dataset has one (the synthetic dataset
    writes it; a real copy may lack it): an input of story_words, so editing it reruns it."""
    path = f"{ROOT}/stimuli/gentle/{story_folder(story)}/transcript.txt"
    return [path] if config["dataset"]["source"] == "synthetic" or os.path.exists(path) else []


def model_input():
    """A local model folder (model.name a path) as an input of the feature rules."""
    name = config["model"]["name"]
    return [name] if os.path.isdir(name) else []


def dataset_root(path, depth):
    """The dataset root ``depth`` folders above a dataset file (no hard-coded prefix)."""
    return str(Path(path).parents[depth])


def label_files():
    pattern = (config.get("regions", {}) or {}).get("labels", "")
    if not pattern:
        return []
    fs = {"L": "lh", "R": "rh"}
    return [f"{ROOT}/{pattern.format(hemi=h, fs_hemi=fs[h])}" for h in ("L", "R")]


def subject_runs(subject):
    return PLAN[PLAN["subject"] == subject]


def subject_outputs(subject):
    prefix = f"{SCORES}/{subject}/{subject}"
    return {
        "npz": f"{prefix}_desc-scores.npz",
        "brain_L": f"{prefix}_space-{SPACE}_hemi-L_desc-brainscore.func.gii",
        "brain_R": f"{prefix}_space-{SPACE}_hemi-R_desc-brainscore.func.gii",
        "forecast_L": f"{prefix}_space-{SPACE}_hemi-L_desc-forecastscore.func.gii",
        "forecast_R": f"{prefix}_space-{SPACE}_hemi-R_desc-forecastscore.func.gii",
        "regions": f"{prefix}_desc-regions_scores.tsv",
    }


FIGURE_FILES = {
    "brain": f"{FIGURES}/desc-brainscore_map.png",
    **(
        {"ceiling": f"{FIGURES}/desc-noiseceiling_map.png"}
        if (config.get("noise_ceiling", {}) or {}).get("enabled", False)
        else {}
    ),
    "curves": f"{FIGURES}/desc-forecastcurves_plot.png",
    "dstar": f"{FIGURES}/desc-dstar_map.png",
    "gain": f"{FIGURES}/desc-gain_map.png",
    "distribution": f"{FIGURES}/desc-dstarsubjects_plot.png",
}


def all_outputs():
    outs = [f"{RESULTS}/report.html", EFFECTIVE_CONFIG, PAPER_COMPARISON,
            f"{GROUP}/group_desc-scores.npz",
            f"{GROUP}/group_desc-regions_stats.tsv"]
    for analysis in ANALYSES:
        outs += list(analysis_group_outputs(analysis).values())
    for s in SUBJECTS:
        outs += list(subject_outputs(s).values())
        if (config.get("noise_ceiling", {}) or {}).get("enabled", False):
            outs += [f"{RESULTS}/noiseceiling/{s}/{s}_desc-noiseceiling.npz"]
    if (config.get("noise_ceiling", {}) or {}).get("enabled", False):
        outs += [listener_table_file(t) for t in sorted(PLAN["task"].unique())]
    return outs


def bold_file(subject, basename):
    """A run's BOLD cache (rule bold_cache); wildcards "{subject}", "{basename}" give its pattern."""
    return f"{RESULTS}/bold/{subject}/{basename}_space-{SPACE}_desc-clean_bold.npy"


def listener_sum_file(task):
    """The sum of a task's listeners' BOLD (rule listener_sums, noise ceiling)."""
    return f"{RESULTS}/noiseceiling/tasks/task-{task}_space-{SPACE}_desc-listenersum_bold.npz"


def listener_table_file(task):
    """How many listeners the ceiling pools per audio of a task (rule listener_sums)."""
    return f"{RESULTS}/noiseceiling/tasks/task-{task}_desc-listeners_table.tsv"


def fit_runs(fit):
    return PLAN[PLAN["subject"].isin(FITS[fit])]


def fit_scores_input(w):
    runs = fit_runs(w.fit)
    return {
        "table": f"{RESULTS}/tables/desc-runs_table.tsv",
        "features": [f"{RESULTS}/features/model-{MODEL}/story-{s}_desc-activations.npz"
                     for s in sorted(runs["story"].unique())],
        # the words tables the caches were made from: the fit checks their hash (provenance)
        "words": [f"{RESULTS}/words/story-{s}_desc-words_table.tsv"
                  for s in sorted(runs["story"].unique())],
        "bold": [bold_file(r.subject, r.basename)
                 for r in runs.drop_duplicates("basename").itertuples()],
    }


def fit_output(fit):
    return f"{SCORES}/fits/{fit}_desc-fitscores.npz"


# ---------------------------------------------------------------------------------------------
# Resources (sizes measured with the benchmark: files; see docs/scaling.md)
# ---------------------------------------------------------------------------------------------

HAS_GPU = bool(shutil.which("nvidia-smi"))
N_VERTICES = 81924 if SPACE == "fsaverage6" else 20484
N_MODELS = len(config["forecast"]["distances"]) + 1


def uses_gpu(device_setting, gpu_value):
    """1 when a job runs on the GPU: the setting names it, or is auto and there is one."""
    return int(device_setting == gpu_value or (device_setting == "auto" and HAS_GPU))


def _bold_bytes(input):
    return sum(os.path.getsize(p) for p in input.bold)


def mapping_mem_mb(wildcards, input):
    """MB: imports + ~4 copies of the targets + X and the windows, twice (TR grid + PCA).

    n_trs = BOLD bytes / (4 x vertices); windows are n_trs x 768 x width x #distances float32.
    """
    n_trs = _bold_bytes(input) / (4 * N_VERTICES)
    design = n_trs * 768 * (1 + config["forecast"].get("width", 7) * (N_MODELS - 1)) * 4
    return int(2000 + 4 * _bold_bytes(input) / 2**20 + 2 * design / 2**20)


def mapping_runtime(wildcards, input):
    """Minutes: 0.4 us of one core per TR x vertex x model (X + one per distance), x2 margin."""
    return int(10 + 2 * 0.4e-6 / 60 * _bold_bytes(input) / 4 * N_MODELS)


def n_analysis_conditions(analysis):
    """Designs an analysis fits (its cost relative to fit_scores' N_MODELS)."""
    from brainpred.conditions import control_distances, control_kinds, syntax_distances

    if analysis == "layers":
        layers = (config.get("layers", {}) or {}).get("layers", "all")
        return 2 * (13 if layers == "all" else len(layers))
    if analysis == "controls":
        c = config.get("controls", {}) or {}
        return (1 + len(control_kinds(config)) * len(control_distances(config))
                + len(c.get("widths") or []))
    if analysis == "finetune":
        from brainpred.conditions import finetune_alphas, finetune_steps

        return 1 + len(finetune_alphas(config)) * len(finetune_steps(config))
    return 1 + 2 * len(syntax_distances(config))


def analysis_mem_mb(wildcards, input):
    """MB: as mapping_mem_mb, with the analysis' blocks (about one per condition)."""
    n_trs = _bold_bytes(input) / (4 * N_VERTICES)
    blocks = n_trs * 768 * config["forecast"].get("width", 7) * \
        n_analysis_conditions(wildcards.analysis) * 4
    return int(2000 + 4 * _bold_bytes(input) / 2**20 + 2 * blocks / 2**20)


def analysis_runtime(wildcards, input):
    """Minutes: as mapping_runtime, per condition."""
    return int(10 + 2 * 0.4e-6 / 60 * _bold_bytes(input) / 4
               * n_analysis_conditions(wildcards.analysis))


# ---------------------------------------------------------------------------------------------
# Analyses (workflow/rules/analyses.smk): layers, controls, syntax, finetune
# ---------------------------------------------------------------------------------------------

from brainpred.conditions import ANALYSES as _ALL_ANALYSES, enabled as _enabled

ANALYSES = [a for a in _ALL_ANALYSES if _enabled(config, a)]
ANALYSIS_DIR = f"{RESULTS}/analyses/model-{MODEL}_layer-{LAYER}"
_CONTROLS = config.get("controls", {}) or {}
GENERATED = ("controls" in ANALYSES
             and bool((_CONTROLS.get("generated", {}) or {}).get("enabled", False)))
_SYNTAX = config.get("syntax", {}) or {}
# the syntax settings X_syn depends on (not enabled or distances): params of the rules that
# compute it, so that switching the analysis or its distances does not recompute it
SYNTAX_FEATURE_SETTINGS = {
    k: v
    for k, v in _SYNTAX.items()
    if k in ("spacy_model", "n_futures", "corpus", "seed", "max_span", "min_similarity",
             "max_tries", "context")
}
_FINETUNE = config.get("finetune", {}) or {}
FT_DIR = f"{RESULTS}/finetune/model-{MODEL}"


wildcard_constraints:
    analysis="|".join(_ALL_ANALYSES),
    alpha=r"[0-9.]+",
    step=r"[0-9]+",


def finetune_outputs(alpha):
    return {"loss": f"{FT_DIR}/alpha-{alpha}/desc-finetune_loss.tsv",
            "manifest": f"{FT_DIR}/alpha-{alpha}/desc-checkpoints.json"}


def finetune_features_file(key, story):
    return f"{FT_DIR}/features/{key}/story-{story}_desc-activations.npz"


def finetune_models(stories):
    """key -> features files of the stories, for every (alpha, step) evaluated."""
    from brainpred.conditions import finetune_alphas, finetune_key, finetune_steps

    return {finetune_key(a, s): [finetune_features_file(finetune_key(a, s), st)
                                 for st in stories]
            for a in finetune_alphas(config) for s in finetune_steps(config)}


def finetune_corpus_files():
    corpus = _FINETUNE.get("corpus", "stories")
    if corpus == "stories":
        return [f"{RESULTS}/words/story-{s}_desc-text.txt" for s in STORIES]
    if isinstance(corpus, list):
        return list(corpus)
    return []   # a HuggingFace datasets spec: nothing to track


def analysis_fit_output(analysis, fit):
    return f"{ANALYSIS_DIR}/{analysis}/fits/{fit}_desc-{analysis}_scores.npz"


def analysis_group_outputs(analysis):
    from brainpred.conditions import ARGMAX_MAPS, STACK_MAPS

    prefix = f"{ANALYSIS_DIR}/{analysis}/group"
    out = {"npz": f"{prefix}_desc-{analysis}_scores.npz",
           "regions": f"{prefix}_desc-{analysis}regions_scores.tsv",
           "regions_stats": f"{prefix}_desc-{analysis}regions_stats.tsv"}
    for name in [*ARGMAX_MAPS.get(analysis, {}), *STACK_MAPS.get(analysis, [])]:
        if analysis == "controls" and not _CONTROLS.get("widths"):
            continue
        for h in "LR":
            out[f"{name}_{h}"] = f"{prefix}_space-{SPACE}_hemi-{h}_desc-{name}.func.gii"
    return out


def analysis_figure_files(analysis):
    from brainpred.conditions import FIGURES as _FIGS, figure_keys

    return {k: f"{FIGURES}/desc-{k}_{_FIGS[analysis][k]}.png"
            for k in figure_keys(analysis, config)}


def finetune_loss_files():
    from brainpred.conditions import finetune_alphas

    return [finetune_outputs(f"{a:g}")["loss"] for a in finetune_alphas(config)]


def continuations_file(story):
    return (f"{RESULTS}/features/model-{MODEL}/"
            f"story-{story}_layer-{LAYER}_desc-continuations.npz")


def syntax_file(story):
    return f"{RESULTS}/features/model-{MODEL}/story-{story}_desc-syntactic_activations.npz"


def analysis_fit_input(w):
    inputs = fit_scores_input(w)
    stories = sorted(fit_runs(w.fit)["story"].unique())
    if w.analysis == "controls":
        if GENERATED:
            inputs["generated"] = [continuations_file(s) for s in stories]
        if _CONTROLS.get("widths") and _CONTROLS.get("width_distance", "best") == "best":
            inputs["group"] = f"{GROUP}/group_desc-scores.npz"
    if w.analysis == "syntax":
        inputs["syntactic"] = [syntax_file(s) for s in stories]
    if w.analysis == "finetune":
        for key, files in finetune_models(stories).items():
            inputs[f"model_{key}"] = files
    return inputs
