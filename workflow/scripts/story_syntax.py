"""Rule story_syntax: syntactic part of the activations of one story."""
from brainpred.config import with_runtime
from brainpred.jobs import limit_threads, setup_logging
from brainpred.stages.analyses import make_story_syntax

setup_logging(snakemake.log[0])
model_cfg = with_runtime(snakemake.params.model, snakemake.config, "model")
limit_threads(snakemake.threads)
make_story_syntax(snakemake.input.words, snakemake.input.text, model_cfg,
                  snakemake.params.syntax, list(snakemake.input.corpus_words),
                  list(snakemake.input.corpus_text), snakemake.output[0])
