"""Rule bold_cache: one run's GIfTI pair to .npy."""
from brainpred.pipeline import make_bold_cache
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
make_bold_cache(snakemake.input.left, snakemake.input.right, snakemake.input.table,
                snakemake.wildcards.basename, snakemake.output.bold, space=snakemake.params.space,
                out_json=snakemake.output.sidecar)
