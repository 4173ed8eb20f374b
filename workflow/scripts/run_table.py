"""Rule run_table: the subject x story table."""
from brainpred.config import with_runtime_config
from brainpred.jobs import setup_logging
from brainpred.stages.dataset import make_run_table

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
make_run_table(snakemake.params.root, config, snakemake.output[0])
