"""Rule story_features: language-model activations of one story."""
from brainpred.pipeline import make_story_features
from brainpred.workflow import limit_threads, setup_logging

setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
make_story_features(snakemake.input.words, snakemake.input.text, snakemake.params.model,
                    snakemake.output[0])
