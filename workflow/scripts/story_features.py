"""Rule story_features: language-model activations of one story."""
from brainpred.config import with_runtime
from brainpred.jobs import limit_threads, setup_logging
from brainpred.stages.features import make_story_features

setup_logging(snakemake.log[0])
model_cfg = with_runtime(snakemake.params.model, snakemake.config, "model")
limit_threads(snakemake.threads)
make_story_features(snakemake.input.words, snakemake.input.text, model_cfg,
                    snakemake.output[0])
