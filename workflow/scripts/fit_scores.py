"""Rule fit_scores: brain and forecast scores of subjects who share a stimulus."""
from brainpred.config import with_runtime_config
from brainpred.jobs import limit_threads, setup_logging
from brainpred.stages.mapping import make_fit_scores

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
limit_threads(snakemake.threads)
make_fit_scores(
    list(snakemake.params.subjects),
    snakemake.input.table,
    dict(zip(snakemake.params.stories, snakemake.input.features)),
    dict(zip(snakemake.params.basenames, snakemake.input.bold)),
    config,
    snakemake.output[0],
    words_paths=dict(zip(snakemake.params.stories, snakemake.input.words)),
)
