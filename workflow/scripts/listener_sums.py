"""Rule listener_sums: the sum of every listener's BOLD of one task, per audio (noise ceiling)."""
from brainpred.config import with_runtime_config
from brainpred.jobs import limit_threads, setup_logging
from brainpred.stages.noiseceiling import make_listener_sums

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
limit_threads(snakemake.threads)
make_listener_sums(snakemake.wildcards.task, snakemake.input.table,
                   dict(zip(snakemake.params.basenames, snakemake.input.bold)),
                   config, snakemake.output.sums,
                   out_tsv=snakemake.output.table)
