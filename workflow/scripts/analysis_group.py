"""Rule analysis_group_<analysis>: group maps and region tables of one analysis."""
from brainpred.config import with_runtime_config
from brainpred.jobs import setup_logging
from brainpred.stages.analyses import make_analysis_group

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
make_analysis_group(list(snakemake.input.fits), snakemake.params.analysis,
                    config, dict(snakemake.output.items()),
                    labels_paths=tuple(snakemake.input.labels) or None,
                    surface_paths=tuple(snakemake.input.surface) or None)
