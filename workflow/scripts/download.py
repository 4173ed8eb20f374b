"""Rules download_*: datalad get the job's outputs (and its optional extras) into dataset.root."""
from brainpred.download import fetch_outputs
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
fetch_outputs(snakemake.params.root, list(snakemake.output), extra=snakemake.params.extra,
              jobs=snakemake.params.jobs)
