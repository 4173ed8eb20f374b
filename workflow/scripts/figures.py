"""Rule figures: the report's figures."""
from brainpred.config import with_runtime_config
from brainpred.pipeline import make_figures
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
make_figures(snakemake.input.npz, snakemake.input.regions, config,
             dict(snakemake.output.items()))
