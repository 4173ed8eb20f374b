"""Rule model_features_<label>: activations of one story under one model of `models`."""
from brainpred.config import with_runtime
from brainpred.jobs import limit_threads, setup_logging
from brainpred.stages.features import make_model_features

setup_logging(snakemake.log[0])
model_cfg = with_runtime(snakemake.params.model, snakemake.config, "model")
limit_threads(snakemake.threads)
make_model_features(snakemake.input.words, snakemake.input.text, model_cfg,
                    snakemake.params.entry, snakemake.output[0])
