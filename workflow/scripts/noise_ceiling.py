"""Rule noise_ceiling: how well the other subjects' mean BOLD predicts one subject."""
from brainpred.config import with_runtime_config
from brainpred.jobs import limit_threads, setup_logging
from brainpred.stages.noiseceiling import make_noise_ceiling

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
limit_threads(snakemake.threads)
make_noise_ceiling(
    snakemake.wildcards.subject,
    list(snakemake.input.table),
    dict(zip(snakemake.params.basenames, snakemake.input.bold)),
    config,
    dict(snakemake.output.items()),
    sums_paths=list(snakemake.input.sums),
)
