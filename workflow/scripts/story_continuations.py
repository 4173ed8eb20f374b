"""Rule story_continuations: activations of the model's own continuation after every word."""
from brainpred.config import with_runtime
from brainpred.jobs import limit_threads, setup_logging
from brainpred.stages.analyses import make_story_continuations

setup_logging(snakemake.log[0])
model_cfg = with_runtime(snakemake.params.model, snakemake.config, "model")
limit_threads(snakemake.threads)
make_story_continuations(snakemake.input.words, snakemake.input.text, model_cfg,
                         snakemake.params.controls, int(snakemake.params.layer),
                         int(snakemake.params.horizon), snakemake.output[0])
