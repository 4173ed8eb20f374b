"""Rule bold_cache: one run's GIfTI pair to .npy."""
from brainpred.jobs import setup_logging
from brainpred.stages.bold import make_bold_cache

setup_logging(snakemake.log[0])
make_bold_cache(snakemake.input.left, snakemake.input.right, snakemake.input.table,
                snakemake.wildcards.basename, snakemake.output.bold, space=snakemake.params.space,
                out_json=snakemake.output.sidecar)
