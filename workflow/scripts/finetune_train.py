"""Rule finetune_train: fine-tune the model at one loss mix (resumable)."""
from brainpred.config import with_runtime, with_runtime_config
from brainpred.jobs import limit_threads, setup_logging
from brainpred.stages.analyses import make_finetune_train

setup_logging(snakemake.log[0])
model_cfg = with_runtime(snakemake.params.model, snakemake.config, "model")
config = with_runtime_config(snakemake.params.config, snakemake.config)
limit_threads(snakemake.threads)
make_finetune_train(snakemake.params.corpus, model_cfg, config,
                    float(snakemake.wildcards.alpha), snakemake.params.work_dir,
                    snakemake.output.loss, snakemake.output.manifest)
