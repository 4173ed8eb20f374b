"""Rule synthetic_dataset: write the offline demo dataset."""
from brainpred.config import with_runtime_config
from brainpred.jobs import setup_logging
from brainpred.stages.dataset import make_synthetic_dataset

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
make_synthetic_dataset(snakemake.params.root, config)
