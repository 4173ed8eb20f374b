# brainpred: brain scores and forecast scores of language models on Narratives fMRI
# (Caucheteux, Gramfort & King 2023). Configuration: config/config.yaml (see config/README.md).

import yaml
from snakemake.utils import min_version, validate

from brainpred.workflow import coerce_config

min_version("8.0")


configfile: "config/config.yaml"


# --config section='{key: value}' gives nested values as strings: give them their schema types
with open(f"{workflow.basedir}/workflow/schemas/config.schema.yaml") as _f:
    coerce_config(config, yaml.safe_load(_f))
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
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
    default_target: True
