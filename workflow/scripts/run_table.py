"""Rule run_table: the subject x story table."""
from brainpred.config import with_runtime_config
from brainpred.pipeline import make_run_table
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
make_run_table(snakemake.params.root, config, snakemake.output[0])
