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


def fit_config(**mapping):
    """The schema-filled config of a small fit (distances 0 and 4, width 2, layer 1, 3 PCA
    components, 3 folds), without a ``model`` section: the feature caches written by
    :func:`fit_inputs` record a test model that no model config would match."""
    cfg = config(forecast={"distances": [0, 4], "width": 2},
                 features={"layer": 1, "tr_offset": 1, "tr_method": "sum"},
                 mapping={"n_components": 3, "delays": [0, 1], "n_folds": 3,
                          "n_inner_folds": 3, "backend": "numpy",
                          "alphas": {"start": -1, "stop": 3, "num": 5}, **mapping})
    del cfg["model"]
    return cfg


def fit_inputs(folder, subjects=("sub-001", "sub-002"), n_words=40, onsets=None, n_vertices=8,
               seed=3):
    """What a fit job reads, written as the workflow writes it: story ``a``'s features cache
    (3 layers, 6 dims, one word every 1.2 s), each subject's BOLD cache (n_words TRs of 1.5 s,
    random) and the run table.

    Returns
    -------
    dict
        ``table`` (path), ``features`` (``{"a": path}``), ``bold`` (``basename -> path``),
        ``dir`` (``folder``).
    """
    from brainpred import io
    from brainpred import provenance as prov
    from brainpred.features import save_features

    rng = np.random.default_rng(seed)
    acts = rng.standard_normal((3, n_words, 6)).astype(np.float32)
    words = pd.DataFrame({"word": [f"w{i}" for i in range(n_words)],
                          "start": 1.0 + 1.2 * np.arange(n_words)})
    save_features(folder / "a.npz", acts, words, {"name": "test"},
                  provenance=prov.record("features", story="a", model="test",
                                         model_revision="r1", model_settings={"name": "test"}))
    rows, bold = [], {}
    for i, sub in enumerate(subjects):
        base = f"{sub}_task-a"
        rows.append({"subject": sub, "task": "a", "story": "a", "run": "", "basename": base,
                     "audio_onset": 0.0 if onsets is None else onsets[i], "tr": 1.5,
                     "n_trs": n_words, "kept": True})
        bold[base] = folder / f"{base}.npy"
        prov.save_bold(bold[base], rng.standard_normal((n_words, n_vertices)), sub, base,
                       tr=1.5)
    table = folder / "runs.tsv"
    io.write_tsv(table, pd.DataFrame(rows))
    return {"table": table, "features": {"a": folder / "a.npz"}, "bold": bold, "dir": folder}
