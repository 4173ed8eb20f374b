"""Rule synthetic_dataset: write the offline demo dataset."""
from brainpred.config import with_runtime_config
from brainpred.pipeline import make_synthetic_dataset
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
make_synthetic_dataset(snakemake.params.root, config)
