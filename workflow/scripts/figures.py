"""Rule figures: the report's figures."""
from brainpred.pipeline import make_figures
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
make_figures(snakemake.input.npz, snakemake.input.regions, snakemake.params.config,
             dict(snakemake.output.items()))
