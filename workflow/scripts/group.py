"""Rule group: group maps, noise ceiling and region tables."""
from brainpred.config import with_runtime_config
from brainpred.jobs import setup_logging
from brainpred.stages.stats import make_group

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
make_group(snakemake.input.npz, config, dict(snakemake.output.items()),
           ceiling_npzs=list(snakemake.input.ceiling),
           labels_paths=tuple(snakemake.input.labels) or None,
           surface_paths=tuple(snakemake.input.surface) or None)
