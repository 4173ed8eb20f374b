"""Rule dataset_description: results/ as a BIDS-derivatives dataset."""
from brainpred.jobs import setup_logging
from brainpred.stages.dataset import make_dataset_description

setup_logging(snakemake.log[0])
make_dataset_description(snakemake.params.config, snakemake.params.version,
                         snakemake.output[0])
