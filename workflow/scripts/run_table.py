"""Rule run_table: the subject x story table."""
from brainpred.pipeline import make_run_table
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
make_run_table(snakemake.params.root, snakemake.params.config, snakemake.output[0])
