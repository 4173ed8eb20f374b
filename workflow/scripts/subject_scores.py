"""Rule subject_scores: one subject's score maps and region table."""
from brainpred.jobs import setup_logging
from brainpred.stages.mapping import make_subject_scores

setup_logging(snakemake.log[0])
make_subject_scores(
    snakemake.wildcards.subject,
    snakemake.input.fit,
    dict(snakemake.output.items()),
    labels_paths=tuple(snakemake.input.labels) or None,
)
