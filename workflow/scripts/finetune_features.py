"""Rule finetune_features: activations of every story under one fine-tuned checkpoint."""
from brainpred.analyses import make_finetune_features
from brainpred.workflow import limit_threads, setup_logging

setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
make_finetune_features(snakemake.input.manifest, int(snakemake.wildcards.step),
                       list(snakemake.input.words), list(snakemake.input.text),
                       snakemake.params.model, list(snakemake.output))
