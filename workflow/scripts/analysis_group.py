"""Rule analysis_group_<analysis>: group maps and region tables of one analysis."""
from brainpred.analyses import make_analysis_group
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
make_analysis_group(list(snakemake.input.fits), snakemake.params.analysis,
                    snakemake.params.config, dict(snakemake.output.items()),
                    labels_paths=tuple(snakemake.input.labels) or None,
                    surface_paths=tuple(snakemake.input.surface) or None)
