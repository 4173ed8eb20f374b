"""The paper comparison table on hand-made group outputs with known answers."""

import numpy as np
import pandas as pd

from brainpred.comparison import PAPER, paper_comparison
from brainpred.config import load_schema, schema_defaults


def _config():
    cfg = schema_defaults(load_schema())
    cfg["report"]["paper_regions"] = {"Heschl": "A", "aSTS": "B", "pSTS": "B", "IFG": "C",
                                      "angular": "D", "supramarginal": "D"}
    return cfg


def test_rows_on_hand_made_outputs():
    subjects = ["sub-1", "sub-2", "sub-3"]
    distances = np.array([0, 4, 8])
    # per subject, region-mean F(d): IFG (C) peaks at 8, aSTS (B) at 4, for everyone
    rows = []
    for s in subjects:
        for region, curve in (("B", [0.0, 0.02, 0.01]), ("C", [0.0, 0.01, 0.03])):
            for d, f in zip(distances, curve):
                rows.append((s, "bilateral", region, "forecastscore", float(d), f))
    scores = pd.DataFrame(rows, columns=["subject", "level", "region", "measure", "distance",
                                         "value"])
    stats_t = pd.DataFrame([("bilateral", "B", "brainscore", np.nan, 3, 0.2, 0.1, 0.3),
                            ("bilateral", "C", "brainscore", np.nan, 3, 0.3, 0.25, 0.35)],
                           columns=["level", "region", "measure", "distance", "n", "mean",
                                    "ci_low", "ci_high"])
    group = {"distances": distances, "subjects": np.array(subjects), "gain_dstar": 8.0,
             "gain_subjects": np.array([10.0, 20.0, 30.0]), "gain_mask": np.ones(5, bool),
             "gain_F_subjects": np.array([[0.0, 0.01, 0.03]] * 3)}
    t = paper_comparison(group, scores, stats_t, _config()).set_index("quantity")
    assert list(t.index) == list(PAPER)
    assert t.loc["peak brain score", "value"] == 0.3 and "C" in t.loc["peak brain score",
                                                                       "regions"]
    assert t.loc["forecast gain F(d*) / R(X)", "value"] == 20.0
    assert t.loc["forecast gain F(d*) / R(X)", "ci_low"] < 20.0 < \
        t.loc["forecast gain F(d*) / R(X)", "ci_high"]
    assert t.loc["forecast distance d*", "value"] == 8.0
    assert t.loc["d'(IFG) - d'(aSTS)", "value"] == 4.0           # 8 - 4 for every subject
    assert t.loc["d'(IFG) - d'(aSTS)", "n_subjects"] == 3
    for quantity, why in (("brain score at the peak, % of noise ceiling", "noise_ceiling"),
                          ("k*(angular) - k*(Heschl)", "layers.enabled is false"),
                          ("syntactic d*", "syntax.enabled is false"),
                          ("fine-tuning gain, IFG", "finetune.enabled is false")):
        assert t.loc[quantity, "status"].startswith("not computed") and why in \
            t.loc[quantity, "status"]
        assert np.isnan(t.loc[quantity, "value"])
