"""Rule report: the self-contained HTML report."""
from brainpred.pipeline import FIGURE_CAPTIONS, make_report
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
keys = [k for k in FIGURE_CAPTIONS if k in snakemake.input.keys()]
make_report([snakemake.input[k] for k in keys], [FIGURE_CAPTIONS[k] for k in keys],
            snakemake.params.config, snakemake.output[0],
            tables=[(snakemake.input.table, "Subject x story table (kept and excluded runs)"),
                    (snakemake.input.regions,
                     "Region statistics: mean across subjects, 95% CI, two-sided Wilcoxon p and "
                     "BH-adjusted q across the regions of a level (whole cortex, split parcels, "
                     "bilateral regions, key regions) for every score")])
