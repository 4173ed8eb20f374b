"""Rules download_*: datalad get the job's outputs (and its optional extras) into dataset.root."""
from brainpred.download import fetch_outputs
from brainpred.jobs import setup_logging

setup_logging(snakemake.log[0])
# dataset.download_jobs only changes how fast: read from the config, not a param (a param
# change would re-run the download and everything downstream)
fetch_outputs(snakemake.params.root, list(snakemake.output), extra=snakemake.params.extra,
              jobs=snakemake.config["dataset"]["download_jobs"])
