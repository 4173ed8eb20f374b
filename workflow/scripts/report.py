"""Rule report: the self-contained HTML report."""
from brainpred.conditions import FIGURE_CAPTIONS
from brainpred.config import with_runtime_config
from brainpred.jobs import setup_logging
from brainpred.stages.report import PAPER_COMPARISON_CAPTION, make_report

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
captions = FIGURE_CAPTIONS
keys = [k for k in captions if k in snakemake.input.keys()]
tables = [(snakemake.input.table, "Subject x story table (kept and excluded runs)"),
          (snakemake.input.regions,
           "Region statistics: mean across subjects, 95% CI, two-sided Wilcoxon p and "
           "BH-adjusted q across the regions of a level (whole cortex, split parcels, "
           "bilateral regions, key regions) for every score")]
for path in snakemake.input.analysis_regions:
    analysis = path.rsplit("group_desc-", 1)[1].split("regions_stats")[0]
    tables.append((path, f"Region statistics of the {analysis} analysis (measure, series, x: "
                         "layer, distance or width; mean across subjects, 95% CI, Wilcoxon p, "
                         "BH q)"))
if "models_comparison" in snakemake.input.keys():
    tables.append((snakemake.input.models_comparison,
                   "Language models compared: brain score, F(d) and F(d*) per model, layer "
                   "(relative depth k / n_layers) and region, mean across subjects and 95% CI"))
make_report([snakemake.input[k] for k in keys], [captions[k] for k in keys],
            config, snakemake.output[0], tables=tables,
            config_file=snakemake.input.config,
            summary=(snakemake.input.comparison, PAPER_COMPARISON_CAPTION),
            group_npz=snakemake.input.npz)
