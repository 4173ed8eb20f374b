"""Rule analysis_figures_<analysis>: the figures of one analysis."""
from brainpred.config import with_runtime_config
from brainpred.jobs import setup_logging
from brainpred.stages.analyses import make_analysis_figures

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
make_analysis_figures(snakemake.params.analysis, snakemake.input.npz, snakemake.input.regions,
                      config, dict(snakemake.output.items()),
                      loss_tsvs=list(snakemake.input.loss))
