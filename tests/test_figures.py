import base64
import re

import numpy as np
import pandas as pd
import pytest
from factories import config

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


def test_every_workflow_figure_is_drawn_and_in_the_report(tmp_path):
    """make_figures draws every figure (noise ceiling included); make_report inlines each."""
    from brainpred import conditions
    from brainpred.io import save_npz
    from brainpred.stages import report as stage_report

    rng = np.random.default_rng(1)
    V = 2 * figures.N_FSAVERAGE5
    distances = np.array([0, 4, 8])
    bs = rng.normal(0.05, 0.02, V)
    save_npz(tmp_path / "group.npz", brain_score=bs, dstar=rng.choice(distances, V) * 1.0,
             gain=rng.normal(10, 5, V), gain_dstar=np.float64(8), distances=distances,
             subjects=np.array(["sub-001", "sub-002", "sub-003"]),
             noise_ceiling=np.abs(rng.normal(0.3, 0.1, V)), percent_ceiling=np.full(V, 20.0))
    rows = [(f"sub-00{s}", level, region, "forecastscore", d, rng.normal(0.01 * d, 0.01))
            for s in range(1, 4) for level, region in [("whole", "whole cortex"),
                                                        ("key", "IFG"), ("bilateral", "IFG"),
                                                        ("parcel", "L IFG")]
            for d in distances]
    write_tsv(tmp_path / "regions.tsv", pd.DataFrame(
        rows, columns=["subject", "level", "region", "measure", "distance", "value"]))
    cfg = config(dataset={"source": "synthetic", "root": str(tmp_path / "none")},
                 regions={"key": ["IFG", "absent"]}, stats={"dstar_mask": "ci"},
                 noise_ceiling={"enabled": True})
    keys = ["brain", "ceiling", "curves", "dstar", "gain", "distribution"]
    outputs = {k: tmp_path / f"{k}.png" for k in keys}
    stage_report.make_figures(tmp_path / "group.npz", tmp_path / "regions.tsv", cfg, outputs)
    for k in keys:
        assert _is_png(outputs[k], min_bytes=10_000), k
    assert conditions.figure_keys("main", cfg) == keys
    assert set(keys) <= set(conditions.FIGURE_CAPTIONS)
    html = tmp_path / "report.html"
    stage_report.make_report([outputs[k] for k in keys],
                             [conditions.FIGURE_CAPTIONS[k] for k in keys], cfg, html)
    text = html.read_text(encoding="utf-8")
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert [base64.b64decode(u) for u in uris] == [outputs[k].read_bytes() for k in keys]
    assert SYNTHETIC_BANNER in text
    assert "Noise ceiling" in text


def test_snakemake_report_captions_exist_and_flag_synthetic_data():
    """One caption per workflow figure, rendered by jinja with a synthetic-data banner."""
    from pathlib import Path

    import jinja2

    from brainpred import conditions

    root = Path(__file__).resolve().parents[1] / "workflow" / "report"

    class _Smk:
        config = {"dataset": {"source": "synthetic", "space": "fsaverage5"},
                  "model": {"name": "tiny-gpt2"}, "features": {"layer": 8},
                  "stats": {"dstar_reference": [0, 8], "dstar_mask": "ci"}}

    for key in list(conditions.FIGURE_CAPTIONS) + ["workflow", "report_html"]:
        text = (root / f"{key}.rst").read_text(encoding="utf-8")
        out = jinja2.Template(text).render(snakemake=_Smk)
        assert "SYNTHETIC DATA" in out, key
        _Smk.config["dataset"]["source"] = "local"
        assert "SYNTHETIC DATA" not in jinja2.Template(text).render(snakemake=_Smk), key
        _Smk.config["dataset"]["source"] = "synthetic"


def test_plot_region_curves_draws_every_series_and_checks_columns(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"sub-{s}", region, series, x, rng.normal(0.01 * x * (series == "a"), 0.01))
            for s in range(4) for region in ("whole cortex", "IFG")
            for series in ("a", "b") for x in (0, 4, 8)]
    table = pd.DataFrame(rows, columns=["subject", "region", "series", "x", "value"])
    out = figures.plot_region_curves(table, tmp_path / "c.png", synthetic=True,
                                     regions=["IFG", "absent", "whole cortex"],
                                     series=["a", "b", "absent"], xlabel="x", ylabel="y",
                                     title="t", true_x={"IFG": 8}, labels={"a": "A"})
    assert _is_png(out, min_bytes=10_000)
    with pytest.raises(ValueError, match="lacks columns"):
        figures.plot_region_curves(table.drop(columns="series"), tmp_path / "d.png", True)
    with pytest.raises(ValueError, match="nothing to draw"):
        figures.plot_region_curves(table, tmp_path / "e.png", True, regions=["absent"])


def test_analysis_figures_are_drawn(tmp_path):
    """make_analysis_figures draws the figures of each analysis from its group outputs."""
    import json
    from dataclasses import asdict

    from brainpred import conditions
    from brainpred import provenance as prov
    from brainpred.io import save_npz
    from brainpred.stages import analyses as stage_analyses

    rng = np.random.default_rng(2)
    V = 2 * figures.N_FSAVERAGE5
    cfg = config(dataset={"source": "synthetic", "root": str(tmp_path / "none")},
                 forecast={"distances": [0, 8], "width": 3}, features={"layer": 2},
                 layers={"enabled": True, "layers": [0, 2, 4], "distance": 8},
                 controls={"enabled": True, "distances": [0, 8], "widths": [1, 3]},
                 syntax={"enabled": True, "distances": [0, 8]},
                 stats={"ci": 0.95, "fdr_q": 0.05, "dstar_mask": "none",
                        "dstar_reference": [0, 8]},
                 regions={"key": [], "split_max_size": 0})
    for analysis in ("layers", "controls", "syntax"):
        conds = conditions.conditions(analysis, cfg, n_layers=4, width_distance=8)
        fits = []
        for s in range(3):
            path = tmp_path / f"{analysis}-fit-{s}.npz"
            save_npz(path, conditions=np.array([c.name for c in conds]),
                     conditions_json=np.array(json.dumps([asdict(c) for c in conds])),
                     subjects=np.array([f"sub-00{s}"]), analysis=np.array(analysis),
                     width_distance=np.array(8),
                     provenance=prov.to_array(prov.scores_record(
                         "analysis_fit", [f"sub-00{s}"], analysis=analysis, model="test")),
                     **{f"sub-00{s}__scores": rng.normal(0.05, 0.02, (len(conds), V))})
            fits.append(path)
        outputs = {"npz": tmp_path / f"{analysis}.npz",
                   "regions": tmp_path / f"{analysis}_regions.tsv",
                   "regions_stats": tmp_path / f"{analysis}_stats.tsv"}
        stage_analyses.make_analysis_group(fits, analysis, cfg, outputs)
        keys = conditions.figure_keys(analysis, cfg)
        pngs = {k: tmp_path / f"{k}.png" for k in keys}
        stage_analyses.make_analysis_figures(analysis, outputs["npz"], outputs["regions"], cfg,
                                             pngs)
        for k in keys:
            assert _is_png(pngs[k], min_bytes=10_000), (analysis, k)


def test_table_regions_checks_columns_and_keeps_order():
    _table_regions = figures._table_regions
    table = pd.DataFrame({"region": ["b", "a", "b"], "F": [1.0, 2.0, 3.0]})
    assert _table_regions(table, {"region", "F"}, None, "f") == ["b", "a"]
    assert _table_regions(table, {"region", "F"}, ["a", "zz", "b"], "f") == ["a", "b"]
    with pytest.raises(ValueError, match=r"plot_x: table lacks columns \['distance'\]"):
        _table_regions(table, {"region", "distance"}, None, "plot_x")


def _viewer_payload(text):
    import json

    data = re.search(r'<script type="application/json" id="bpv-data">(.*?)</script>', text,
                     flags=re.S).group(1)
    return json.loads(data.replace("<\\/", "</"))


def test_report_embeds_the_interactive_viewer(tmp_path):
    """make_report with the group maps: one viewer with the fsaverage5 mesh once, the brain
    score, d* and F(d) maps as data (fsaverage6 cut to fsaverage5), a distance slider, and
    nothing fetched from a network."""
    from brainpred import viewer
    from brainpred.io import save_npz
    from brainpred.stages import report as stage_report

    rng = np.random.default_rng(3)
    V6 = 2 * figures.N_FSAVERAGE6
    distances = np.array([-2, 0, 4, 8])
    maps = {"brain_score": rng.normal(0.05, 0.02, V6),
            "forecast_score": rng.normal(0, 0.02, (len(distances), V6)),
            "dstar": rng.choice(distances, V6) * 1.0}
    maps["brain_score"][:100] = np.nan
    save_npz(tmp_path / "group.npz", distances=distances, subjects=np.array(["sub-001"]),
             **maps)
    cfg = config(dataset={"source": "synthetic", "root": str(tmp_path / "none")})
    out = tmp_path / "report.html"
    stage_report.make_report([], [], cfg, out, group_npz=tmp_path / "group.npz")
    text = out.read_text(encoding="utf-8")
    assert text.count('id="bpv-data"') == 1 and "Interactive maps" in text
    assert viewer.VIEWER_CAPTION in text
    assert 'class="bpv-step" type="range"' in text and 'class="bpv-map"' in text
    payload = _viewer_payload(text)
    assert [h["n"] for h in payload["mesh"]] == [figures.N_FSAVERAGE5] * 2
    faces = np.frombuffer(base64.b64decode(payload["mesh"][0]["faces"]), "<u2")
    assert faces.size == 3 * 20480 and faces.max() == figures.N_FSAVERAGE5 - 1
    got = {m["key"]: m for m in payload["maps"]}
    assert list(got) == ["brain", "dstar", "forecast"]
    assert got["forecast"]["steps"] == [-2.0, 0.0, 4.0, 8.0] and got["brain"]["steps"] is None
    for key, name in [("brain", "brain_score"), ("dstar", "dstar"),
                      ("forecast", "forecast_score")]:
        rows = np.stack([np.frombuffer(base64.b64decode(r), "<f2") for r in got[key]["values"]])
        want = np.atleast_2d(maps[name])
        want = np.concatenate([want[:, :figures.N_FSAVERAGE5],
                               want[:, figures.N_FSAVERAGE6:][:, :figures.N_FSAVERAGE5]], 1)
        np.testing.assert_allclose(rows, want, rtol=1e-3, atol=1e-6, equal_nan=True)
    f = maps["forecast_score"]
    assert got["forecast"]["vmax"] == pytest.approx(np.abs(f).max())
    assert got["forecast"]["vmin"] == -got["forecast"]["vmax"]
    assert (got["dstar"]["vmin"], got["dstar"]["vmax"]) == (-2.0, 8.0)
    fragment = text[text.index('<div class="bpv"'):text.rindex("</script>")]
    assert not re.search(r"https?:|//cdn|<link|<script src|<img src|fetch\(|XMLHttpRequest|"
                         r"import\(", fragment)
    assert "<script src" not in text and "<link" not in text
    assert len(text) < 1_500_000
    # without the group maps: no viewer
    stage_report.make_report([], [], cfg, tmp_path / "plain.html")
    assert "bpv-data" not in (tmp_path / "plain.html").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="20484"):
        viewer.viewer_html([viewer.SurfaceMap("x", "x", np.zeros(10), "hot", 0, 1)], False)
