# Shared (3 of 3, after plan.smk and paths.smk): HOW MUCH each job asks for.
#
# Owns the threads, mem_mb (MB), runtime (minutes) and gpu of the rules whose sizes depend on
# the config, the data, the model or the machine: the model's dimensions from its own config
# (MODEL_LAYERS, MODEL_WIDTH), the vertices of the space (N_VERTICES), the language-model jobs
# (lm_threads, lm_resources, LM_GPU), the mapping jobs (mapping_*, analysis_*, MAPPING_THREADS,
# MAPPING_GPU), the BOLD caches, listener sums and group jobs. Rules with fixed small sizes
# state them inline. Uses the names of plan.smk and paths.smk only. How the sizes were
# measured: docs/scaling.md; override one with --set-resources (profiles/README.md).

import os
import shutil

from brainpred.config import model_dims

HAS_GPU = bool(shutil.which("nvidia-smi"))
# vertices of both hemispheres (a BOLD cache is n_trs x N_VERTICES float32)
N_VERTICES = 81924 if SPACE == "fsaverage6" else 20484
# designs fit_scores fits: X, and X + W_d for each distance d
N_DESIGNS = len(config["forecast"]["distances"]) + 1

# The analysed model's transformer blocks and hidden width, from its config.json (no weights):
# tiny-gpt2 (12 blocks x 64), a local folder, or a hub id in the local HuggingFace cache.
# model_dims returns None for a hub id that is not cached yet (the features job downloads it;
# with HF_HUB_OFFLINE set, prepare_config has already stopped the run): the sizes then fall
# back to GPT-2 small (12 blocks x 768 units, the paper's model, the one docs/scaling.md
# measured), so that a dry run needs no network.
_DIMS = model_dims(config["model"]["name"]) or (12, 768)
# activations are (MODEL_LAYERS, n_words, MODEL_WIDTH): the token embedding and every block
MODEL_LAYERS = _DIMS[0] + 1
MODEL_WIDTH = _DIMS[1]


def uses_gpu(device_setting, gpu_value):
    """1 when a job runs on the GPU: the setting names it, or is auto and there is one."""
    return int(device_setting == gpu_value or (device_setting == "auto" and HAS_GPU))


# ---------------------------------------------------------------------------------------------
# Language-model jobs: story_features, story_continuations, story_syntax, finetune_*
# ---------------------------------------------------------------------------------------------

# GPU: model.device cuda, or auto where this machine has one (nvidia-smi on the PATH; on a
# cluster set device: cuda, or let profiles/slurm ask for it)
LM_GPU = uses_gpu(config["model"]["device"], "cuda")
# (threads, mem_mb, runtime in minutes) with the offline test model tiny-gpt2 (measured) and
# with any other model (GPT-2 small's sizes, with margin: docs/scaling.md)
_LM_JOBS = {
    "story_features": ((1, 2000, 15), (4, 12000, 60)),
    "story_continuations": ((1, 2000, 20), (4, 12000, 240)),
    "story_syntax": ((1, 3000, 30), (4, 12000, 480)),
    "finetune_train": ((2, 4000, 30), (4, 24000, 24 * 60)),
    # one job per checkpoint, every story: the runtime is per 2 stories
    "finetune_features": ((1, 2000, 15), (4, 12000, 60)),
}
_LM_SIZE = 0 if MODEL == "tinygpt2" else 1   # model_tag("tiny-gpt2")


def _n_params(dims):
    """Parameters of a transformer of (blocks, width) with GPT-2's vocabulary: ~12 L H^2 + V H."""
    return 12 * dims[0] * dims[1] ** 2 + 50257 * dims[1]


# GPT-2 small (12 x 768), the model the non-tiny sizes of _LM_JOBS were measured with
_GPT2_SMALL_PARAMS = _n_params((12, 768))


def _model_scale(name):
    """A listed model's size relative to GPT-2 small (at least 1), from its config alone;
    None for an offline test model."""
    from brainpred.lm import TINY_MODELS

    if name in TINY_MODELS:
        return None
    dims = model_dims(name) or (12, 768)
    return max(1.0, _n_params(dims) / _GPT2_SMALL_PARAMS)


def model_lm_threads(name):
    """Threads of a models-analysis feature job (story_features' sizes)."""
    return _LM_JOBS["story_features"][0 if _model_scale(name) is None else 1][0]


def model_lm_resources(name):
    """``mem_mb`` and ``runtime`` of a models-analysis feature job: story_features' sizes of
    the tiny model or of GPT-2 small, the latter scaled by the parameter count."""
    scale = _model_scale(name)
    if scale is None:
        _, mem_mb, runtime = _LM_JOBS["story_features"][0]
        return {"mem_mb": mem_mb, "runtime": runtime}
    _, mem_mb, runtime = _LM_JOBS["story_features"][1]
    return {"mem_mb": int(mem_mb * scale), "runtime": int(runtime * scale)}


def lm_threads(name):
    return _LM_JOBS[name][_LM_SIZE][0]


def lm_resources(name):
    """``mem_mb`` and ``runtime`` of a language-model job (:data:`_LM_JOBS`)."""
    _, mem_mb, runtime = _LM_JOBS[name][_LM_SIZE]
    if name == "finetune_features":
        runtime *= max(1, len(STORIES) // 2)
    return {"mem_mb": mem_mb, "runtime": runtime}


# ---------------------------------------------------------------------------------------------
# BOLD caches and the noise ceiling's listener sums
# ---------------------------------------------------------------------------------------------


def bold_cache_mem_mb(wildcards, input):
    """MB: peak ~ 3x the run's float32 array (GIfTI decode + stack + crop); the GIfTIs are
    about as large as that array (base64, little compression)."""
    return int(1000 + 3 * input.size_mb)


def bold_cache_runtime(wildcards, input):
    """Minutes: 5 + 1 per 100 MB of GIfTI."""
    return int(5 + input.size_mb / 100)


def listener_sums_mem_mb(wildcards, input):
    """MB: one run at a time plus the float64 sum and count: ~4 x a run's float32 size."""
    return 1000 + 5 * max(os.path.getsize(p) for p in input.bold) // 2**20


def listener_sums_runtime(wildcards):
    """Minutes: 10 + 1 per 10 listeners of the task."""
    return 10 + len(TASK_RUNS[wildcards.task]) // 10


# ---------------------------------------------------------------------------------------------
# Mapping jobs: fit_scores and analysis_fit
# ---------------------------------------------------------------------------------------------
#
# From the fit's BOLD caches (input.bold: n_trs x N_VERTICES float32 each, so their size gives
# the TRs of all its runs and subjects) and the model:
#   n_trs     = BOLD bytes / (4 B x N_VERTICES)
#   design    = n_trs x MODEL_WIDTH x columns x 4 B   (float32 TR-level blocks: X has MODEL_WIDTH
#               columns, a window of forecast.width words one block of MODEL_WIDTH x width)
#               columns = 1 + width x #distances for fit_scores (X + one window per distance),
#                         width x #conditions for analysis_fit (one block per condition)
#   mem_mb    = 2000 (imports) + 4 x BOLD MB (~4 copies of the targets) + 2 x design MB (the
#               design on the TR grid, then its PCA input)
#   runtime   = 10 + 2 (margin) x 0.4 us of one core per TR x vertex x design, in minutes
# (MB = 2**20 B.) GPT-2 small (768 units) and 1,000 TRs x 41 distances x width 7: ~4.9 GB.

# GPU: mapping.backend torch_cuda, or auto where this machine has one
MAPPING_GPU = uses_gpu(config["mapping"]["backend"], "torch_cuda")
MAPPING_THREADS = 1 if SPACE == "fsaverage5" else 4


def _bold_bytes(input):
    return sum(os.path.getsize(p) for p in input.bold)


def _mapping_mem_mb(input, columns):
    n_trs = _bold_bytes(input) / (4 * N_VERTICES)
    design = n_trs * MODEL_WIDTH * columns * 4
    return int(2000 + 4 * _bold_bytes(input) / 2**20 + 2 * design / 2**20)


def _mapping_runtime(input, designs):
    return int(10 + 2 * 0.4e-6 / 60 * _bold_bytes(input) / 4 * designs)


def mapping_mem_mb(wildcards, input):
    """MB of fit_scores: X and one window block per distance."""
    return _mapping_mem_mb(input, 1 + config["forecast"]["width"] * (N_DESIGNS - 1))


def mapping_runtime(wildcards, input):
    """Minutes of fit_scores: N_DESIGNS designs."""
    return _mapping_runtime(input, N_DESIGNS)


def n_analysis_conditions(analysis):
    """Designs an analysis fits (its cost relative to fit_scores' N_DESIGNS)."""
    from brainpred.conditions import control_distances, control_kinds, syntax_distances

    if analysis == "layers":
        layers = config["layers"]["layers"]
        # each layer alone and with its window ("all": every layer of the model)
        return 2 * (MODEL_LAYERS if layers == "all" else len(layers))
    if analysis == "controls":
        return (1 + len(control_kinds(config)) * len(control_distances(config))
                + len(config["controls"]["widths"]))
    if analysis == "finetune":
        from brainpred.conditions import finetune_alphas, finetune_steps

        return 1 + len(finetune_alphas(config)) * len(finetune_steps(config))
    if analysis == "models":
        from brainpred.conditions import model_distances

        # each listed layer alone and with each of its windows ("all": every layer)
        return sum((((model_dims(m["name"]) or (12, 768))[0] + 1) if m["layers"] == "all"
                    else len(m["layers"])) * (1 + len(model_distances(m, config)))
                   for m in MODEL_ENTRIES)
    return 1 + 2 * len(syntax_distances(config))


def analysis_mem_mb(wildcards, input):
    """MB of analysis_fit: one window block per condition (the models analysis: of the widest
    listed model, in units of MODEL_WIDTH)."""
    columns = config["forecast"]["width"] * n_analysis_conditions(wildcards.analysis)
    if wildcards.analysis == "models":
        widest = max((model_dims(m["name"]) or (12, 768))[1] for m in MODEL_ENTRIES)
        columns = int(columns * max(1.0, widest / MODEL_WIDTH))
    return _mapping_mem_mb(input, columns)


def analysis_runtime(wildcards, input):
    """Minutes of analysis_fit: as fit_scores, per condition."""
    return _mapping_runtime(input, n_analysis_conditions(wildcards.analysis))


# ---------------------------------------------------------------------------------------------
# Group jobs: group and analysis_group_*
# ---------------------------------------------------------------------------------------------

# group: every subject's maps in memory, subjects x (#distances + 2) x vertices float32, x4 (MB)
GROUP_MEM_MB = (2000 + 4 * len(SUBJECTS) * (len(config["forecast"]["distances"]) + 2)
                * N_VERTICES * 4 // 10**6)
# analysis_group: every subject's condition maps (up to ~40) in memory, float64, x3 (MB)
ANALYSIS_GROUP_MEM_MB = 2000 + 3 * 8 * len(SUBJECTS) * 40 * N_VERTICES // 10**6
GROUP_RUNTIME = 10 + len(SUBJECTS) // 10
