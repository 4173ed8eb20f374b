"""Rule synthetic_dataset: write the offline demo dataset."""
from brainpred.pipeline import make_synthetic_dataset
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
make_synthetic_dataset(snakemake.params.root, snakemake.params.config)
