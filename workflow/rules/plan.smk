# Shared (1 of 3, included first): WHAT this run analyses.
#
# Owns the run plan and the analysis switches, read from the validated config:
#   - the model and layer analysed (MODEL, LAYER) and the model settings that change a result
#     (MODEL_SETTINGS);
#   - the kept runs (PLAN, RUNS, SUBJECTS, STORIES, TASK_RUNS, subject_runs);
#   - the subject groups fitted together (FITS, FIT_OF, fit_runs, fit_table_config);
#   - which analyses are on (ANALYSES out of ALL_ANALYSES, NOISE_CEILING, GENERATED,
#     MODEL_ENTRIES: the models of the models analysis, entry_model_config) and the
#     settings their rules pass as params (config_for, SYNTAX_FEATURE_SETTINGS).
# Uses no name of another .smk file. prepare_config (Snakefile) has filled every default of
# workflow/schemas/config.schema.yaml, so keys are read as config["section"]["key"] here and in
# every .smk file, never with a default of their own.

from brainpred.conditions import ANALYSES as _ALL_ANALYSES, enabled as _enabled
from brainpred.conditions import entry_model_config, model_entries
from brainpred.config import result_settings
from brainpred.plan import fit_groups, model_tag, run_plan

MODEL = model_tag(config["model"]["name"])
LAYER = config["features"]["layer"]
PLAN = run_plan(config)
SUBJECTS = sorted(PLAN["subject"].unique())
STORIES = sorted(PLAN["story"].unique())
RUNS = PLAN.drop_duplicates("basename")
# each task's runs (one row per run): the listeners the noise ceiling pools
TASK_RUNS = {t: g.drop_duplicates("basename") for t, g in PLAN.groupby("task", sort=True)}
# subjects who heard the same stimulus sequence are fitted together (mapping.shared_subjects)
FITS = fit_groups(PLAN, config["mapping"]["shared_subjects"])
FIT_OF = {s: fit for fit, subjects in FITS.items() for s in subjects}


def subject_runs(subject):
    return PLAN[PLAN["subject"] == subject]


def fit_runs(fit):
    return PLAN[PLAN["subject"].isin(FITS[fit])]


def task_table_config(task):
    """params.config of a task's run table: the dataset settings with the task and its listeners
    as the selection (and no runtime key)."""
    dataset = {**result_settings(config["dataset"], "dataset"), "tasks": [task],
               "subjects": sorted(TASK_RUNS[task]["subject"].unique())}
    return config_for("synthetic", dataset=dataset)


def fit_table_config(fit):
    """params.config of a fit's run table: the dataset settings with the fit's subjects as the
    selection (and no runtime key), so that selecting another subject changes no other fit's
    table and reruns none of its jobs."""
    dataset = {**result_settings(config["dataset"], "dataset"), "subjects": list(FITS[fit])}
    return config_for("synthetic", dataset=dataset)


# ---------------------------------------------------------------------------------------------
# Switches: the noise ceiling and the analyses beyond the forecast curve (analyses.smk)
# ---------------------------------------------------------------------------------------------

NOISE_CEILING = bool(config["noise_ceiling"]["enabled"])
# every analysis brainpred knows (the {analysis} wildcard), and those this config switches on
ALL_ANALYSES = tuple(_ALL_ANALYSES)
ANALYSES = [a for a in _ALL_ANALYSES if _enabled(config, a)]
# the models analysis: each entry of `models` with its file label (model-<label>); an entry
# that is model.name itself ("main") reuses the main feature caches, the others get their own
# rule model_features_<label> (features.smk)
MODEL_ENTRIES = model_entries(config)
# the controls analysis with model-generated continuations (rule story_continuations)
GENERATED = "controls" in ANALYSES and bool(config["controls"]["generated"]["enabled"])


# ---------------------------------------------------------------------------------------------
# Settings the rules pass as params
# ---------------------------------------------------------------------------------------------


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
# the syntax settings X_syn depends on (not enabled or distances): params of the rules that
# compute it, so that switching the analysis or its distances does not recompute it
SYNTAX_FEATURE_SETTINGS = {
    k: v
    for k, v in config["syntax"].items()
    if k in ("spacy_model", "n_futures", "corpus", "seed", "max_span", "min_similarity",
             "max_tries", "context")
}
