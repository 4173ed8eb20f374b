"""brainpred: brain scores and forecast scores of language models on Narratives fMRI.

Reproduces Caucheteux, Gramfort & King (2023, Nature Human Behaviour) as a Snakemake workflow.
One module per stage: :mod:`brainpred.narratives` (data), :mod:`brainpred.synthetic` (offline
demo dataset), :mod:`brainpred.features` (language-model activations), :mod:`brainpred.design`
(words to TRs, FIR delays, forecast windows), :mod:`brainpred.mapping` (cross-validated ridge),
:mod:`brainpred.stats`, :mod:`brainpred.regions`, :mod:`brainpred.figures` and
:mod:`brainpred.report`.
"""

__version__ = "0.1.0"
