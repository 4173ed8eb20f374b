"""Rule paper_comparison: the paper's summary table computed from the group outputs."""
from brainpred.config import with_runtime_config
from brainpred.jobs import setup_logging
from brainpred.stages.report import make_paper_comparison

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
analyses = {k[len("analysis_"):]: v for k, v in snakemake.input.items()
            if k.startswith("analysis_")}
make_paper_comparison(snakemake.input.npz, snakemake.input.scores, snakemake.input.stats,
                      analyses, config, snakemake.output[0])
