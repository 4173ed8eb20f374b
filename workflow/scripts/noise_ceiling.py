"""Rule noise_ceiling: how well the other subjects' mean BOLD predicts one subject."""
from brainpred.pipeline import make_noise_ceiling
from brainpred.workflow import limit_threads, setup_logging

setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
make_noise_ceiling(
    snakemake.wildcards.subject,
    snakemake.input.table,
    dict(zip(snakemake.params.basenames, snakemake.input.bold)),
    snakemake.params.config,
    dict(snakemake.output.items()),
    sums_paths=list(snakemake.input.sums),
)
