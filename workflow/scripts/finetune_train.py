"""Rule finetune_train: fine-tune the model at one loss mix (resumable)."""
from brainpred.analyses import make_finetune_train
from brainpred.workflow import limit_threads, setup_logging

setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
make_finetune_train(snakemake.params.corpus, snakemake.params.model, snakemake.params.config,
                    float(snakemake.wildcards.alpha), snakemake.params.work_dir,
                    snakemake.output.loss, snakemake.output.manifest)
