"""Rule subject_scores: brain and forecast scores of one subject."""
from brainpred.pipeline import make_subject_scores
from brainpred.workflow import limit_threads, setup_logging

setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
make_subject_scores(
    snakemake.wildcards.subject,
    snakemake.input.table,
    dict(zip(snakemake.params.stories, snakemake.input.features)),
    dict(zip(snakemake.params.basenames, snakemake.input.bold)),
    snakemake.params.config,
    dict(snakemake.output.items()),
    labels_paths=tuple(snakemake.input.labels) or None,
)
