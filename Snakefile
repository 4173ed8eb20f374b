# brainpred: brain scores and forecast scores of language models on Narratives fMRI
# (Caucheteux, Gramfort & King 2023). Configuration: config/README.md.
#
# A run reads ONE configuration: `config/config.yaml` (the offline demo) when no --configfile
# is given, otherwise only the --configfile file(s); --config overrides either. Every key they
# leave out takes its default from workflow/schemas/config.schema.yaml (the only place defaults
# live), never from the demo file. The effective config is written to
# results/config/desc-effective_config.yaml and shown in the report.

import os

from snakemake.utils import min_version

from brainpred.config import prepare_config

min_version("8.12")

# This file's folder, not the working directory nor the main Snakefile's folder: the workflow
# also runs as a module of another project (`module brainpred: snakefile: ".../Snakefile"`) or
# with `--snakefile` from elsewhere. include:, script:, conda: and report paths are already
# relative to the file that names them.
BRAINPRED_DIR = os.path.abspath(str(workflow.current_basedir))


if not workflow.overwrite_configfiles:

    configfile: os.path.join(BRAINPRED_DIR, "config", "config.yaml")


# types of --config strings, schema validation, schema defaults, cross-key checks
prepare_config(config)


# shared definitions first (each file says what it owns); the rule files use only their names
include: "workflow/rules/plan.smk"
include: "workflow/rules/paths.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/bold.smk"
include: "workflow/rules/mapping.smk"
include: "workflow/rules/noiseceiling.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/analyses.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs(),
        GROUP_OUTPUTS.values(),
    default_target: True
