"""Rule subject_scores: one subject's score maps and region table."""
from brainpred.pipeline import make_subject_scores
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
make_subject_scores(
    snakemake.wildcards.subject,
    snakemake.input.fit,
    dict(snakemake.output.items()),
    labels_paths=tuple(snakemake.input.labels) or None,
)
