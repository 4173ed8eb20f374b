"""Rule figures: the report's figures."""
from brainpred.config import with_runtime_config
from brainpred.jobs import setup_logging
from brainpred.stages.report import make_figures

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
make_figures(snakemake.input.npz, snakemake.input.regions, config,
             dict(snakemake.output.items()))
