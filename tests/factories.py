"""Small data factories shared by the tests (nilearn-style): configs, stories, run tables.

Every factory builds its object from explicit arguments with numpy's seeded generator; none
calls the code under test.
"""

import copy

import numpy as np
import pandas as pd

from brainpred.config import apply_defaults, load_schema


def config(**sections):
    """A workflow config as the workflow sees it: ``sections`` merged over the schema defaults.

    Each keyword is a config section (``mapping={"n_folds": 3}``); a dict value is merged key by
    key into the section's defaults (one level deep, then :func:`apply_defaults` fills the rest).
    """
    cfg = copy.deepcopy(sections)
    apply_defaults(cfg, load_schema())
    return cfg


def story(n_words=60, n_layers=4, dim=5, seed=0, duration=80.0):
    """Random activations (n_layers + 1, n_words, dim) and a words table with sorted onsets."""
    rng = np.random.default_rng(seed)
    acts = rng.standard_normal((n_layers + 1, n_words, dim)).astype(np.float32)
    starts = np.sort(rng.uniform(1.0, duration, n_words))
    words = pd.DataFrame({"word": [f"w{i}" for i in range(n_words)], "start": starts,
                          "end": starts + 0.2})
    return acts, words


def runs(story="a", n_trs=60, onset=0.0, basename="sub-001_task-a", tr=1.5):
    """One run of one story as rows of the run table (``basename, story, audio_onset, tr,
    n_trs``)."""
    return pd.DataFrame({"basename": [basename], "story": [story], "audio_onset": [onset],
                         "tr": [tr], "n_trs": [n_trs]})
