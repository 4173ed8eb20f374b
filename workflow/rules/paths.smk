# Shared (2 of 3, after plan.smk): WHERE the files are.
#
# Owns the dataset root and space (ROOT, SPACE), the results folders (RESULTS, SCORES, GROUP,
# FIGURES, CEILING, ANALYSIS_DIR, FT_DIR), the wildcard constraints, every path builder and
# input function whose files more than one rule names (dataset files, caches, fits, group,
# analysis and figure outputs, ATLAS_INPUTS) and the targets of rule all (all_outputs,
# GROUP_OUTPUTS). Uses the names of plan.smk only; sizes no job (resources.smk).

import os
from pathlib import Path

from brainpred.narratives import audio_path, story_folder
from brainpred.provenance import brainpred_version
from brainpred.regions import hemi_paths as _hemi_paths

ROOT = config["dataset"]["root"].rstrip("/")
SPACE = config["dataset"]["space"]
RESULTS = "results"
SCORES = f"{RESULTS}/scores/model-{MODEL}_layer-{LAYER}"
GROUP = f"{RESULTS}/group/model-{MODEL}_layer-{LAYER}"
FIGURES = f"{RESULTS}/figures/model-{MODEL}_layer-{LAYER}"
CEILING = f"{RESULTS}/noiseceiling"
ANALYSIS_DIR = f"{RESULTS}/analyses/model-{MODEL}_layer-{LAYER}"
FT_DIR = f"{RESULTS}/finetune/model-{MODEL}"
# the subject x story table of every selected subject's runs, kept and excluded (rule
# run_table): shown in the report; the jobs of a fit read their fit's own table (fit_table)
RUN_TABLE = f"{RESULTS}/tables/desc-runs_table.tsv"
# the run's configuration as used (rule effective_config), next to the results
EFFECTIVE_CONFIG = f"{RESULTS}/config/desc-effective_config.yaml"
# the paper's summary table computed from this run (rule paper_comparison), per model and layer
PAPER_COMPARISON = f"{RESULTS}/tables/model-{MODEL}_layer-{LAYER}_desc-paper_comparison.tsv"
# the HTML report of this model and layer: runs of several models or layers live side by side
REPORT = f"{RESULTS}/model-{MODEL}_layer-{LAYER}_report.html"
# results/ is a BIDS-derivatives dataset (rule dataset_description; brainpred.derivatives)
DATASET_DESCRIPTION = f"{RESULTS}/dataset_description.json"

wildcard_constraints:
    subject=r"sub-[0-9]+",
    story=r"[A-Za-z0-9]+",
    basename=r"sub-[0-9]+_task-[A-Za-z0-9]+(_run-[0-9]+)?",
    fit=r"fit-s[0-9]+to[0-9]+seq[0-9a-f]+",
    task=r"[A-Za-z0-9]+",
    analysis="|".join(ALL_ANALYSES),
    alpha=r"[0-9.]+",
    step=r"[0-9]+",


# ---------------------------------------------------------------------------------------------
# Dataset files (under ROOT)
# ---------------------------------------------------------------------------------------------


def gifti(subject, basename, hemi):
    return (f"{ROOT}/derivatives/afni-nosmooth/{subject}/func/"
            f"{basename}_space-{SPACE}_hemi-{hemi}_desc-clean.func.gii")


def run_metadata(subject, basename):
    """A run's events.tsv and BOLD sidecar (audio onset, TR): inputs of the run table."""
    return [f"{ROOT}/{subject}/func/{basename}_events.tsv",
            f"{ROOT}/{subject}/func/{basename}_bold.json"]


def align_file(story):
    """A story's word timing (Gentle alignment)."""
    return f"{ROOT}/stimuli/gentle/{story_folder(story)}/align.csv"


def transcript_input(story):
    """The story's punctuated transcript when the dataset has one (the synthetic dataset
    writes it; a real copy may lack it): an input of story_words, so editing it reruns it."""
    path = f"{ROOT}/stimuli/gentle/{story_folder(story)}/transcript.txt"
    return [path] if config["dataset"]["source"] == "synthetic" or os.path.exists(path) else []


def audio_files(stories):
    """The stories' WAVs when nuisance lists audio_envelope (inputs of the fit rules), else []."""
    if "audio_envelope" not in config["nuisance"]:
        return []
    return [str(audio_path(ROOT, s)) for s in stories]


def fit_config(w, *sections):
    """params.config of a fit: config_for(sections), the nuisance list and, with
    audio_envelope, the fit's WAVs (``audio``: story -> path, read by the fit stage)."""
    stories = sorted(fit_runs(w.fit)["story"].unique())
    audio = dict(zip(stories, audio_files(stories)))
    return config_for(*sections, "nuisance", **({"audio": audio} if audio else {}))


def model_input():
    """A local model folder (model.name a path) as an input of the feature rules."""
    name = config["model"]["name"]
    return [name] if os.path.isdir(name) else []


def dataset_root(path, depth):
    """The dataset root ``depth`` folders above a dataset file (no hard-coded prefix)."""
    return str(Path(path).parents[depth])


def label_files():
    pattern = config["regions"]["labels"]
    if not pattern:
        return []
    fs = {"L": "lh", "R": "rh"}
    return [f"{ROOT}/{pattern.format(hemi=h, fs_hemi=fs[h])}" for h in ("L", "R")]


# the parcellation (and the surfaces of its anterior-posterior split) of the region tables,
# inputs of rule group and of every analysis_group rule
_LABELS = _hemi_paths(ROOT, config["regions"]["labels"])
# surfaces for the anterior-posterior split ("" = nilearn fsaverage5, or the dataset's
# FreeSurfer fsaverage6 pial surfaces)
_SURFACE = config["regions"]["surface"] or (
    "derivatives/freesurfer/fsaverage6/surf/{fs_hemi}.pial"
    if _LABELS and config["regions"]["split_max_size"] > 0 and SPACE == "fsaverage6"
    else ""
)
ATLAS_INPUTS = {
    "labels": _LABELS,
    "surface": _hemi_paths(ROOT, _SURFACE) if _LABELS else [],
}


# ---------------------------------------------------------------------------------------------
# Per-story and per-run caches (under RESULTS)
# ---------------------------------------------------------------------------------------------


def words_file(story):
    """A story's word table (rule story_words); "{story}" gives its pattern."""
    return f"{RESULTS}/words/story-{story}_desc-words_table.tsv"


def text_file(story):
    """A story's text, as the model reads it (rule story_words)."""
    return f"{RESULTS}/words/story-{story}_desc-text.txt"


def features_file(story):
    """A story's activations, every layer (rule story_features)."""
    return f"{RESULTS}/features/model-{MODEL}/story-{story}_desc-activations.npz"


def model_features_file(label, story):
    """A story's activations under the model of label ``label`` of the ``models`` list (rule
    model_features_<label>; the main model's own cache for the entry that is model.name)."""
    return f"{RESULTS}/features/model-{label}/story-{story}_desc-activations.npz"


def model_folder_input(name):
    """A local model folder as an input of the feature jobs of that model (a hub id: none)."""
    return [name] if os.path.isdir(name) else []


def continuations_file(story):
    return (f"{RESULTS}/features/model-{MODEL}/"
            f"story-{story}_layer-{LAYER}_desc-continuations.npz")


def syntax_file(story):
    return f"{RESULTS}/features/model-{MODEL}/story-{story}_desc-syntactic_activations.npz"


def fit_table(fit):
    """The run table of a fit's subjects, made by rule fit_run_table; what its BOLD caches and
    fits read, so that a change of the subject selection reruns no other fit."""
    return f"{RESULTS}/tables/{fit}_desc-runs_table.tsv"


def task_table(task):
    """The run table of a task's listeners, made by rule task_run_table; what its listener sums
    and noise ceilings read, so that a change of the subject selection reruns only the ceilings
    of the tasks the added or removed subject heard."""
    return f"{RESULTS}/tables/task-{task}_desc-runs_table.tsv"


def bold_file(subject, basename):
    """A run's BOLD cache (rule bold_cache); wildcards "{subject}", "{basename}" give its pattern."""
    return f"{RESULTS}/bold/{subject}/{basename}_space-{SPACE}_desc-clean_bold.npy"


# ---------------------------------------------------------------------------------------------
# Fits, subject maps, the noise ceiling and the group
# ---------------------------------------------------------------------------------------------


def fit_scores_input(w):
    runs = fit_runs(w.fit)
    return {
        "table": fit_table(w.fit),
        "features": [features_file(s) for s in sorted(runs["story"].unique())],
        # the words tables the caches were made from: the fit checks their hash (provenance)
        "words": [words_file(s) for s in sorted(runs["story"].unique())],
        "bold": [bold_file(r.subject, r.basename)
                 for r in runs.drop_duplicates("basename").itertuples()],
        "audio": audio_files(sorted(runs["story"].unique())),
    }


def fit_output(fit):
    return f"{SCORES}/fits/{fit}_desc-fitscores.npz"


def surface_map(prefix, hemi, desc):
    """One hemisphere's map: ``<prefix>_hemi-<L|R>_space-<SPACE>_desc-<desc>_statmap.func.gii``
    (BIDS order, hemi before space; a JSON sidecar of the same name says what the values are,
    io.write_surface_maps)."""
    return f"{prefix}_hemi-{hemi}_space-{SPACE}_desc-{desc}_statmap.func.gii"


def subject_outputs(subject):
    prefix = f"{SCORES}/{subject}/{subject}"
    return {
        "npz": f"{prefix}_desc-scores.npz",
        "brain_L": surface_map(prefix, "L", "brainscore"),
        "brain_R": surface_map(prefix, "R", "brainscore"),
        "forecast_L": surface_map(prefix, "L", "forecastscore"),
        "forecast_R": surface_map(prefix, "R", "forecastscore"),
        "regions": f"{prefix}_desc-regions_scores.tsv",
    }


def listener_sum_file(task):
    """The sum of a task's listeners' BOLD (rule listener_sums, noise ceiling)."""
    return f"{CEILING}/tasks/task-{task}_space-{SPACE}_desc-listenersum_bold.npz"


def listener_table_file(task):
    """How many listeners the ceiling pools per audio of a task (rule listener_sums)."""
    return f"{CEILING}/tasks/task-{task}_desc-listeners_table.tsv"


# a subject's noise ceiling (rule noise_ceiling), as patterns of {subject}
CEILING_OUTPUTS = {
    "npz": f"{CEILING}/{{subject}}/{{subject}}_desc-noiseceiling.npz",
    "ceiling_L": surface_map(f"{CEILING}/{{subject}}/{{subject}}", "L", "noiseceiling"),
    "ceiling_R": surface_map(f"{CEILING}/{{subject}}/{{subject}}", "R", "noiseceiling"),
}

# key -> desc; forecast and forecast_fdr hold one data array per distance
_GROUP_MAPS = {"brain": "brainscore", "brain_fdr": "brainscorefdr",
               "forecast": "forecastscore", "forecast_fdr": "forecastscorefdr",
               "dstar": "dstar", "gain": "gain", "gain_maxd": "gainmaxd"}
if NOISE_CEILING:
    _GROUP_MAPS.update(ceiling="noiseceiling", pct_ceiling="pctceiling")
# the group statistics (rule group)
GROUP_OUTPUTS = {
    "npz": f"{GROUP}/group_desc-scores.npz",
    "regions": f"{GROUP}/group_desc-regions_scores.tsv",
    "regions_stats": f"{GROUP}/group_desc-regions_stats.tsv",
    **{
        f"{key}_{h}": surface_map(f"{GROUP}/group", h, desc)
        for key, desc in _GROUP_MAPS.items()
        for h in "LR"
    },
}

# the figures of the main analysis (rule figures)
FIGURE_FILES = {
    "brain": f"{FIGURES}/desc-brainscore_map.png",
    **({"ceiling": f"{FIGURES}/desc-noiseceiling_map.png"} if NOISE_CEILING else {}),
    "curves": f"{FIGURES}/desc-forecastcurves_plot.png",
    "dstar": f"{FIGURES}/desc-dstar_map.png",
    "gain": f"{FIGURES}/desc-gain_map.png",
    "distribution": f"{FIGURES}/desc-dstarsubjects_plot.png",
}


# ---------------------------------------------------------------------------------------------
# Analyses (analyses.smk): fine-tuning, fits, group maps, figures
# ---------------------------------------------------------------------------------------------


def finetune_outputs(alpha):
    return {"loss": f"{FT_DIR}/alpha-{alpha}/desc-finetune_loss.tsv",
            "manifest": f"{FT_DIR}/alpha-{alpha}/desc-finetune_checkpoints.json"}


def finetune_features_file(key, story):
    return f"{FT_DIR}/features/{key}/story-{story}_desc-activations.npz"


def finetune_models(stories):
    """key -> features files of the stories, for every (alpha, step) evaluated."""
    from brainpred.conditions import finetune_alphas, finetune_key, finetune_steps

    return {finetune_key(a, s): [finetune_features_file(finetune_key(a, s), st)
                                 for st in stories]
            for a in finetune_alphas(config) for s in finetune_steps(config)}


def finetune_corpus_files():
    corpus = config["finetune"]["corpus"]
    if corpus == "stories":
        return [text_file(s) for s in STORIES]
    if isinstance(corpus, list):
        return list(corpus)
    return []   # a HuggingFace datasets spec: nothing to track


def finetune_loss_files():
    from brainpred.conditions import finetune_alphas

    return [finetune_outputs(f"{a:g}")["loss"] for a in finetune_alphas(config)]


def analysis_fit_input(w):
    inputs = fit_scores_input(w)
    stories = sorted(fit_runs(w.fit)["story"].unique())
    if w.analysis == "controls":
        if GENERATED:
            inputs["generated"] = [continuations_file(s) for s in stories]
        if config["controls"]["widths"] and config["controls"]["width_distance"] == "best":
            inputs["group"] = GROUP_OUTPUTS["npz"]
    if w.analysis == "syntax":
        inputs["syntactic"] = [syntax_file(s) for s in stories]
    if w.analysis == "finetune":
        for key, files in finetune_models(stories).items():
            inputs[f"model_{key}"] = files
    if w.analysis == "models":
        for m in MODEL_ENTRIES:
            inputs[f"model_{m['label']}"] = [model_features_file(m["label"], s) for s in stories]
    return inputs


def analysis_fit_output(analysis, fit):
    return f"{ANALYSIS_DIR}/{analysis}/fits/{fit}_desc-{analysis}_scores.npz"


def analysis_group_outputs(analysis):
    from brainpred.conditions import ARGMAX_MAPS, STACK_MAPS

    prefix = f"{ANALYSIS_DIR}/{analysis}/group"
    out = {"npz": f"{prefix}_desc-{analysis}_scores.npz",
           "regions": f"{prefix}_desc-{analysis}regions_scores.tsv",
           "regions_stats": f"{prefix}_desc-{analysis}regions_stats.tsv"}
    if analysis == "models":
        # the tidy comparison table of the models (model, layer, relative depth, region, ...)
        out["comparison"] = (f"{RESULTS}/tables/model-{MODEL}_layer-{LAYER}"
                             "_desc-models_comparison.tsv")
    for name in [*ARGMAX_MAPS.get(analysis, {}), *STACK_MAPS.get(analysis, [])]:
        if analysis == "controls" and not config["controls"]["widths"]:
            continue
        for h in "LR":
            out[f"{name}_{h}"] = surface_map(prefix, h, name)
    return out


def analysis_figure_files(analysis):
    from brainpred.conditions import FIGURES as _FIGS, figure_keys

    return {k: f"{FIGURES}/desc-{k}_{_FIGS[analysis][k]}.png"
            for k in figure_keys(analysis, config)}


# ---------------------------------------------------------------------------------------------
# Targets of rule all (with GROUP_OUTPUTS)
# ---------------------------------------------------------------------------------------------


def all_outputs():
    outs = [REPORT, EFFECTIVE_CONFIG, PAPER_COMPARISON, DATASET_DESCRIPTION,
            GROUP_OUTPUTS["npz"], GROUP_OUTPUTS["regions_stats"]]
    for analysis in ANALYSES:
        outs += list(analysis_group_outputs(analysis).values())
    for s in SUBJECTS:
        outs += list(subject_outputs(s).values())
        if NOISE_CEILING:
            outs += [CEILING_OUTPUTS["npz"].format(subject=s)]
    if NOISE_CEILING:
        outs += [listener_table_file(t) for t in sorted(PLAN["task"].unique())]
    return outs
