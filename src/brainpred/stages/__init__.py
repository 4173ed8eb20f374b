"""Stage entry points: one module per rules file of ``workflow/rules/``.

Each ``make_*`` function reads the inputs of one rule, calls the pure science modules
(:mod:`~brainpred.design`, :mod:`~brainpred.mapping`, :mod:`~brainpred.group`,
:mod:`~brainpred.tables`, :mod:`~brainpred.figures`, ...) on arrays and tables, and writes the
rule's outputs atomically. :mod:`.common` holds the checked readers they share. The rules call
these functions through the thin ``workflow/scripts``; nothing in the package imports a stage.
"""

__all__ = ["analyses", "bold", "common", "dataset", "features", "mapping", "noiseceiling",
           "report", "stats"]
