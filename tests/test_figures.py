import base64
import re

import numpy as np
import pandas as pd
import pytest

from brainpred import figures
from brainpred.errors import DataError
from brainpred.io import write_tsv
from brainpred.report import SYNTHETIC_BANNER, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path, min_bytes=5000):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > min_bytes


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    out = tmp_path_factory.mktemp("figs")
    rng = np.random.default_rng(0)
    # fsaverage6-sized map (cut to fsaverage5 when drawn), NaN "medial wall"
    v = rng.normal(0, 0.05, 2 * figures.N_FSAVERAGE6)
    v[:2000] = np.nan
    surf = figures.plot_surface(v, out / "surf.png", "Brain score", synthetic=True,
                                symmetric=True, threshold=0.02, cbar_label="r")

    rows = []
    for s in range(6):
        for region in ["pSTS", "IFG"]:
            for d in range(-2, 12):
                peak = 5 if region == "pSTS" else 8
                rows.append((f"sub-{s:03d}", region, d,
                             np.exp(-0.5 * ((d - peak) / 2) ** 2) + rng.normal(0, 0.2)))
    table = pd.DataFrame(rows, columns=["subject", "region", "distance", "F"])
    curves = figures.plot_forecast_curves(table, out / "curves.png", synthetic=True,
                                          true_distance={"pSTS": 5, "IFG": 8})
    dist = figures.plot_distribution(np.array([8, 7, 8, 9, np.nan, 8]), out / "dist.png",
                                     "Per-subject d*", synthetic=False, true_value=8)
    return out, {"surf": surf, "curves": curves, "dist": dist}


def test_figures_are_pngs(pngs):
    out, files = pngs
    for path in files.values():
        assert _is_png(path)
    assert not list(out.glob(".*tmp*"))


def test_plot_surface_rejects_wrong_size(tmp_path):
    with pytest.raises(ValueError, match="20484"):
        figures.plot_surface(np.zeros(100), tmp_path / "x.png", "x", synthetic=False)
    assert not (tmp_path / "x.png").exists()


def test_report_inlines_figures(pngs, tmp_path):
    out, files = pngs
    tsv = tmp_path / "regions.tsv"
    write_tsv(tsv, pd.DataFrame({"region": ["L a", "R a"], "value": [0.1, np.nan]}))
    cfg = {"model": "tiny-gpt2", "distances": list(range(-2, 3)), "root": out,
           "alpha": np.float32(1.5)}
    figs = [(files["surf"], "Brain score map caption"),
            (files["curves"], "Forecast curves caption <with markup>")]
    html_path = write_report(tmp_path / "report.html", figs, cfg, synthetic=True,
                             tables=[(tsv, "Region table caption")])
    text = html_path.read_text(encoding="utf-8")
    assert SYNTHETIC_BANNER in text
    assert "Brain score map caption" in text and "Region table caption" in text
    assert "Forecast curves caption &lt;with markup&gt;" in text
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(uris) == 2
    assert base64.b64decode(uris[0]) == files["surf"].read_bytes()
    assert "model: tiny-gpt2" in text and "numpy" in text and "nilearn" in text
    assert "<img src=\"http" not in text and "<img src=\"/" not in text

    real = write_report(tmp_path / "real.html", figs[:1], cfg, synthetic=False)
    assert SYNTHETIC_BANNER not in real.read_text(encoding="utf-8")


def test_report_missing_figure(tmp_path):
    with pytest.raises(DataError, match="nope.png"):
        write_report(tmp_path / "r.html", [(tmp_path / "nope.png", "c")], {}, synthetic=True)
    assert not (tmp_path / "r.html").exists()
