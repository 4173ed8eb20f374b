# brainpred: brain scores and forecast scores of language models on Narratives fMRI
# (Caucheteux, Gramfort & King 2023). Configuration: config/config.yaml (see config/README.md).

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config/config.yaml"


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
