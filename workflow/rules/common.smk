# Shared definitions: the run plan, output paths and input functions.

import os
import shutil
from pathlib import Path

from brainpred.narratives import story_folder
from brainpred.pipeline import fit_groups
from brainpred.workflow import model_tag, run_plan

ROOT = config["dataset"]["root"].rstrip("/")
SPACE = config["dataset"]["space"]
MODEL = model_tag(config["model"]["name"])
LAYER = config["features"]["layer"]
PLAN = run_plan(config)
SUBJECTS = sorted(PLAN["subject"].unique())
STORIES = sorted(PLAN["story"].unique())
RUNS = PLAN.drop_duplicates("basename")
# subjects who heard the same stimulus sequence are fitted together (mapping.shared_subjects)
FITS = fit_groups(PLAN, config["mapping"].get("shared_subjects", 1))
FIT_OF = {s: fit for fit, subjects in FITS.items() for s in subjects}
RESULTS = "results"
SCORES = f"{RESULTS}/scores/model-{MODEL}_layer-{LAYER}"
GROUP = f"{RESULTS}/group/model-{MODEL}_layer-{LAYER}"
FIGURES = f"{RESULTS}/figures/model-{MODEL}_layer-{LAYER}"

wildcard_constraints:
    subject=r"sub-[0-9]+",
    story=r"[A-Za-z0-9]+",
    basename=r"sub-[0-9]+_task-[A-Za-z0-9]+(_run-[0-9]+)?",
    fit=r"fit-[0-9]+",


def gifti(subject, basename, hemi):
    return (f"{ROOT}/derivatives/afni-nosmooth/{subject}/func/"
            f"{basename}_space-{SPACE}_hemi-{hemi}_desc-clean.func.gii")


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
    outs = [f"{RESULTS}/report.html", f"{GROUP}/group_desc-scores.npz",
            f"{GROUP}/group_desc-regions_stats.tsv"]
    for s in SUBJECTS:
        outs += list(subject_outputs(s).values())
        if (config.get("noise_ceiling", {}) or {}).get("enabled", False):
            outs += [f"{RESULTS}/noiseceiling/{s}/{s}_desc-noiseceiling.npz"]
    return outs


def fit_runs(fit):
    return PLAN[PLAN["subject"].isin(FITS[fit])]


def fit_scores_input(w):
    runs = fit_runs(w.fit)
    return {
        "table": f"{RESULTS}/tables/desc-runs_table.tsv",
        "features": [f"{RESULTS}/features/model-{MODEL}/story-{s}_desc-activations.npz"
                     for s in sorted(runs["story"].unique())],
        "bold": [f"{RESULTS}/bold/{r.subject}/{r.basename}_space-{SPACE}_desc-clean_bold.npy"
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
