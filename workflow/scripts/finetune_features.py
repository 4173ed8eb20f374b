"""Rule finetune_features: activations of every story under one fine-tuned checkpoint."""
from brainpred.config import with_runtime
from brainpred.jobs import limit_threads, setup_logging
from brainpred.stages.analyses import make_finetune_features

setup_logging(snakemake.log[0])
model_cfg = with_runtime(snakemake.params.model, snakemake.config, "model")
limit_threads(snakemake.threads)
make_finetune_features(snakemake.input.manifest, int(snakemake.wildcards.step),
                       list(snakemake.input.words), list(snakemake.input.text),
                       model_cfg, list(snakemake.output))
