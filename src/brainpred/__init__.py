"""brainpred: brain scores and forecast scores of language models on Narratives fMRI.

Reproduces Caucheteux, Gramfort & King (2023, Nature Human Behaviour) as a Snakemake workflow.
The layers, from the rules down (``docs/architecture.md``): :mod:`brainpred.stages` (one entry
point module per rules file: read inputs, call the science, write outputs); the science on
arrays and tables: :mod:`~brainpred.lm`, :mod:`~brainpred.features`, :mod:`~brainpred.syntax`,
:mod:`~brainpred.continuations` and :mod:`~brainpred.finetune` (language models),
:mod:`~brainpred.conditions` (what each analysis fits), :mod:`~brainpred.design` (words to TRs,
forecast windows, FIR delays), :mod:`~brainpred.mapping` (cross-validated ridge),
:mod:`~brainpred.noise_ceiling`, :mod:`~brainpred.stats`, :mod:`~brainpred.group`,
:mod:`~brainpred.tables`, :mod:`~brainpred.regions`, :mod:`~brainpred.figures`,
:mod:`~brainpred.report`, :mod:`~brainpred.comparison`; the data and run plan:
:mod:`~brainpred.narratives`, :mod:`~brainpred.download`, :mod:`~brainpred.synthetic`,
:mod:`~brainpred.plan`; and the base: :mod:`~brainpred.config`, :mod:`~brainpred.provenance`,
:mod:`~brainpred.io`, :mod:`~brainpred.errors`, :mod:`~brainpred.jobs`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
