"""Rule report: the self-contained HTML report."""
from brainpred.pipeline import FIGURE_CAPTIONS, make_report
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
keys = list(FIGURE_CAPTIONS)
make_report([snakemake.input[k] for k in keys], [FIGURE_CAPTIONS[k] for k in keys],
            snakemake.params.config, snakemake.output[0],
            tables=[(snakemake.input.table, "Subject x story table (kept and excluded runs)"),
                    (snakemake.input.regions, "Region scores of every subject (tidy)")])
