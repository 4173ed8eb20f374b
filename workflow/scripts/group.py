"""Rule group: group maps and region table."""
from brainpred.pipeline import make_group
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
make_group(snakemake.input.npz, snakemake.input.regions, snakemake.params.config,
           dict(snakemake.output.items()))
