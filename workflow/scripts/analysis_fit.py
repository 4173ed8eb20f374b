"""Rule analysis_fit: scores of every condition of one analysis for a group of subjects."""
from brainpred.config import with_runtime_config
from brainpred.jobs import limit_threads, setup_logging
from brainpred.stages.analyses import make_analysis_fit

setup_logging(snakemake.log[0])
config = with_runtime_config(snakemake.params.config, snakemake.config)
limit_threads(snakemake.threads)
stories = list(snakemake.params.stories)
inputs = snakemake.input
sources = {"acts": dict(zip(stories, inputs.features))}
sources["words"] = dict(zip(stories, inputs.words))
for key in ("generated", "syntactic"):
    if key in inputs.keys():
        sources[key] = dict(zip(stories, inputs[key]))
models = {k[len("model_"):]: dict(zip(stories, inputs[k])) for k in inputs.keys()
          if k.startswith("model_")}
if models:
    sources["models"] = models
make_analysis_fit(
    snakemake.wildcards.analysis,
    list(snakemake.params.subjects),
    inputs.table,
    sources,
    dict(zip(snakemake.params.basenames, inputs.bold)),
    config,
    snakemake.output[0],
    group_npz=inputs.group if "group" in inputs.keys() else None,
)
