"""Figures: cortical maps, forecast curves F(d) and per-subject distributions.

Every function writes one PNG atomically (temporary sibling, then :func:`os.replace`) with the
non-interactive Agg backend. When ``synthetic=True`` the figure title starts with
"SYNTHETIC DATA" so a demo result can never be mistaken for a real one.

Cortical maps are drawn offline on nilearn's bundled fsaverage5 inflated mesh with the sulcal
depth as background. fsaverage5 is a prefix of fsaverage6 (its 10,242 vertices per hemisphere are
the first 10,242 of each fsaverage6 hemisphere), so fsaverage6 maps are cut before drawing.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_path  # noqa: E402
from .stats import mean_ci  # noqa: E402

__all__ = ["plot_surface", "plot_forecast_curves", "plot_region_curves", "plot_distribution",
           "plot_model_comparison",
           "fsaverage5_mesh", "split_hemis", "colormap", "SYNTHETIC_MARK",
           "N_FSAVERAGE5", "N_FSAVERAGE6"]

SYNTHETIC_MARK = "SYNTHETIC DATA"
N_FSAVERAGE5 = 10242
N_FSAVERAGE6 = 40962


def _title(title, synthetic):
    title = title or ""
    if synthetic:
        return f"{SYNTHETIC_MARK} — {title}" if title else SYNTHETIC_MARK
    return title


def _save(fig, out_png):
    out_png = Path(out_png)
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi, facecolor="white")
    finally:
        plt.close(fig)
    return out_png


@functools.lru_cache(maxsize=1)
def fsaverage5_mesh():
    """nilearn's bundled fsaverage5 inflated mesh (offline), the mesh every map is drawn on.

    Returns
    -------
    dict
        ``{"left" | "right": (coords, faces, sulc)}``: coords (10242, 3) float, faces
        (20480, 3) int (vertex indices), sulc (10242,) float sulcal depth (positive in sulci).
    """
    from nilearn import datasets, surface

    out = {}
    try:
        mesh = datasets.load_fsaverage("fsaverage5")["inflated"]
        sulc = datasets.load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated",
                                            data_type="sulcal")
        for hemi in ("left", "right"):
            part = mesh.parts[hemi]
            out[hemi] = (np.asarray(part.coordinates), np.asarray(part.faces),
                         np.asarray(sulc.data.parts[hemi], dtype=float).ravel())
    except (AttributeError, TypeError, KeyError):  # older nilearn
        fs = datasets.fetch_surf_fsaverage("fsaverage5")
        for hemi in ("left", "right"):
            coords, faces = surface.load_surf_mesh(fs[f"infl_{hemi}"])[:2]
            sulc = np.asarray(surface.load_surf_data(fs[f"sulc_{hemi}"]), dtype=float)
            out[hemi] = (np.asarray(coords), np.asarray(faces), sulc)
    return out


def split_hemis(values):
    """A map's left and right fsaverage5 halves.

    Parameters
    ----------
    values : array_like, shape (n_vertices,)
        fsaverage5 (2 x 10,242) or fsaverage6 (2 x 40,962) values, left then right.

    Returns
    -------
    left, right : ndarray, shape (10242,) float64
        fsaverage6 maps are cut to their first 10,242 vertices per hemisphere.

    Raises
    ------
    ValueError
        When the size is neither.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    n = values.shape[0]
    if n == 2 * N_FSAVERAGE5:
        per = N_FSAVERAGE5
    elif n == 2 * N_FSAVERAGE6:
        per = N_FSAVERAGE6
    else:
        raise ValueError(
            f"plot_surface: got {n} values; expected {2 * N_FSAVERAGE5} (fsaverage5) or "
            f"{2 * N_FSAVERAGE6} (fsaverage6), left hemisphere then right")
    return values[:N_FSAVERAGE5], values[per:per + N_FSAVERAGE5]


def plot_surface(values, out_png, title, synthetic, cmap="cold_hot", vmin=None, vmax=None,
                 threshold=None, symmetric=False, cbar_label=None):
    """Draw a cortical map: left lateral, left medial, right lateral, right medial.

    Parameters
    ----------
    values : array_like, shape (n_vertices,)
        fsaverage5 (2 x 10,242) or fsaverage6 (2 x 40,962) values, left then right. fsaverage6
        maps are cut to their first 10,242 vertices per hemisphere. NaN is drawn as background.
    out_png : str or Path
        PNG written atomically.
    title : str
        Figure title ("SYNTHETIC DATA — " is prepended when ``synthetic``).
    synthetic : bool
        Whether the values come from the synthetic demo dataset.
    cmap : str
        Matplotlib or nilearn colormap name (``"cold_hot"`` for signed scores, e.g.
        ``"viridis"`` for distances or layers).
    vmin, vmax : float, optional
        Colour range; default the finite range of ``values`` (``[-m, m]`` with ``m = max|v|``
        when ``symmetric``).
    threshold : float, optional
        Values with ``|v| < threshold`` are drawn as background.
    symmetric : bool
        Symmetric colour range around 0.
    cbar_label : str, optional
        Label of the colour bar.

    Returns
    -------
    Path of the written PNG.
    """
    from matplotlib import colors as mcolors
    from nilearn import plotting

    left, right = split_hemis(values)
    finite = np.concatenate([left, right])
    finite = finite[np.isfinite(finite)]
    if symmetric:
        m = np.max(np.abs(finite)) if finite.size else 1.0
        if vmax is not None:
            m = abs(vmax)
        elif vmin is not None:
            m = abs(vmin)
        vmin, vmax = -m, m
    else:
        if vmin is None:
            vmin = float(finite.min()) if finite.size else 0.0
        if vmax is None:
            vmax = float(finite.max()) if finite.size else 1.0
    if not vmax > vmin:
        vmax = vmin + 1e-6 if vmin == vmax else vmax
    cmap_obj = colormap(cmap)

    meshes = fsaverage5_mesh()
    fig = plt.figure(figsize=(11, 7.6), dpi=100)
    panels = [("left", "lateral", left), ("left", "medial", left),
              ("right", "lateral", right), ("right", "medial", right)]
    pos = [(0.0, 0.46), (0.45, 0.46), (0.0, 0.0), (0.45, 0.0)]
    for (hemi, view, data), (x0, y0) in zip(panels, pos):
        ax = fig.add_axes([x0, y0, 0.45, 0.44], projection="3d")
        coords, faces, sulc = meshes[hemi]
        plot_data = data.copy()
        if not np.any(np.isfinite(plot_data)):
            plot_data[:] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plotting.plot_surf_stat_map(
                (coords, faces), plot_data, bg_map=sulc, hemi=hemi, view=view, axes=ax,
                figure=fig, colorbar=False, cmap=cmap_obj, vmin=vmin, vmax=vmax,
                threshold=threshold, symmetric_cbar=False, bg_on_data=True)
        try:
            ax.set_box_aspect(None, zoom=1.35)
        except TypeError:  # matplotlib < 3.6
            pass
        fig.text(x0 + 0.225, y0 + 0.39, f"{'Left' if hemi == 'left' else 'Right'} {view}",
                 ha="center", fontsize=12)
    cax = fig.add_axes([0.9, 0.2, 0.02, 0.6])
    sm = plt.cm.ScalarMappable(norm=mcolors.Normalize(vmin=vmin, vmax=vmax), cmap=cmap_obj)
    sm.set_array([])
    cb = fig.colorbar(sm, cax=cax)
    if cbar_label:
        cb.set_label(cbar_label, fontsize=12)
    if threshold is not None:
        fig.text(0.91, 0.15, f"|v| < {threshold:g}\nnot shown", ha="center", fontsize=9)
    fig.suptitle(_title(title, synthetic), fontsize=16, fontweight="bold",
                 color="darkred" if synthetic else "black", y=0.97)
    return _save(fig, out_png)


def colormap(cmap):
    """A matplotlib colormap from a matplotlib or nilearn name (e.g. ``"cold_hot"``); a colormap
    object is returned as is.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if not isinstance(cmap, str):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        from nilearn.plotting import cm as nl_cm

        if hasattr(nl_cm, cmap):
            return getattr(nl_cm, cmap)
        raise ValueError(f"unknown colormap {cmap!r}") from None


def _panel_grid(n):
    """A figure with ``n`` region panels, at most 3 per row."""
    ncol = min(n, 3)
    nrow = int(np.ceil(n / ncol))
    return plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow + 0.8), squeeze=False,
                        dpi=100)


def _finish_panels(fig, axes, n, title, synthetic, out_png):
    """Hide the unused panels, add the (synthetic-flagged) title and save the PNG."""
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(_title(title, synthetic), fontsize=14, fontweight="bold",
                 color="darkred" if synthetic else "black")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, out_png)


def _table_regions(table, need, regions, caller):
    """Check a tidy region table's columns; the requested regions present in it, in order.

    Raises
    ------
    ValueError
        When ``table`` lacks a column of ``need`` (names the caller and the columns).
    """
    missing = set(need) - set(table.columns)
    if missing:
        raise ValueError(f"{caller}: table lacks columns {sorted(missing)}")
    present = set(table["region"])
    if regions is None:
        regions = list(pd.unique(table["region"]))
    return [r for r in regions if r in present]


def plot_forecast_curves(table, out_png, synthetic, regions=None, true_distance=None,
                         title="Forecast score F(d)", level=0.95):
    """Per region, the mean forecast score F(d) across subjects with its confidence band.

    Parameters
    ----------
    table : DataFrame
        Columns ``subject, region, distance, F`` (one row per subject, region and distance;
        duplicates are averaged).
    out_png : str or Path
        PNG written atomically.
    synthetic : bool
        Whether the values come from the synthetic demo dataset.
    regions : list of str, optional
        Regions to draw, in this order (default: all, in order of appearance).
    true_distance : float or dict[str, float], optional
        Planted distance (synthetic data): dotted vertical line, per region when a dict.
    title : str
    level : float
        Confidence level of the band (Student t across subjects, :func:`brainpred.stats.mean_ci`).

    Returns
    -------
    Path of the written PNG. Each panel shows a dashed line at the peak d* of the mean curve.
    """
    regions = _table_regions(table, {"subject", "region", "distance", "F"}, regions,
                             "plot_forecast_curves")
    if not regions:
        raise ValueError("plot_forecast_curves: no region to draw")
    n = len(regions)
    fig, axes = _panel_grid(n)
    for ax, region in zip(axes.ravel(), regions):
        sub = table[table["region"] == region]
        wide = sub.pivot_table(index="subject", columns="distance", values="F", aggfunc="mean")
        wide = wide.reindex(sorted(wide.columns), axis=1)
        d = wide.columns.to_numpy(dtype=float)
        mean, low, high = mean_ci(wide.to_numpy(dtype=float), level=level)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.fill_between(d, low, high, color="C0", alpha=0.25, lw=0,
                        label=f"{int(round(level * 100))}% CI (n={wide.shape[0]})")
        ax.plot(d, mean, color="C0", lw=2, label="mean F(d)")
        if np.any(np.isfinite(mean)):
            d_star = d[int(np.nanargmax(mean))]
            ax.axvline(d_star, color="C3", ls="--", lw=1.2, label=f"d* = {d_star:g}")
        td = true_distance.get(region) if isinstance(true_distance, dict) else true_distance
        if td is not None:
            ax.axvline(td, color="k", ls=":", lw=1.5, label=f"true d = {td:g}")
        ax.set_title(str(region), fontsize=11)
        ax.set_xlabel("distance d (words)")
        ax.set_ylabel("F(d) (Δr)")
        ax.legend(fontsize=7, loc="best")
    return _finish_panels(fig, axes, n, title, synthetic, out_png)


def plot_distribution(values, out_png, title, synthetic, xlabel="d* (words)", true_value=None):
    """Histogram and strip plot of one value per subject (e.g. each subject's d*).

    Parameters
    ----------
    values : array_like or Series, shape (n_subjects,)
        NaN entries are dropped (their count is given in the legend).
    out_png : str or Path
        PNG written atomically.
    title : str
    synthetic : bool
    xlabel : str
    true_value : float, optional
        Planted value (synthetic data), drawn as a dotted line.

    Returns
    -------
    Path of the written PNG.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n_nan = int(np.sum(~np.isfinite(v)))
    v = v[np.isfinite(v)]
    fig, (ax_h, ax_s) = plt.subplots(2, 1, figsize=(7, 5.2), sharex=True, dpi=100,
                                     gridspec_kw={"height_ratios": [3, 1]})
    if v.size:
        uniq = np.unique(v)
        if uniq.size <= 60 and np.allclose(uniq, np.round(uniq)):
            bins = np.arange(uniq.min() - 0.5, uniq.max() + 1.5)
        else:
            bins = "auto"
        ax_h.hist(v, bins=bins, color="C0", alpha=0.75, edgecolor="white")
        med = float(np.median(v))
        ax_h.axvline(med, color="C3", ls="--", label=f"median = {med:g}")
        rng = np.random.default_rng(0)
        ax_s.scatter(v, rng.uniform(-0.3, 0.3, v.size), s=14, color="C0", alpha=0.7)
    if true_value is not None:
        ax_h.axvline(true_value, color="k", ls=":", lw=1.5, label=f"true = {true_value:g}")
    label = f"n = {v.size} subjects" + (f" ({n_nan} NaN dropped)" if n_nan else "")
    ax_h.plot([], [], " ", label=label)
    ax_h.legend(fontsize=9)
    ax_h.set_ylabel("subjects")
    ax_h.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax_s.set_yticks([])
    ax_s.set_ylim(-0.5, 0.5)
    ax_s.set_xlabel(xlabel)
    fig.suptitle(_title(title, synthetic), fontsize=13, fontweight="bold",
                 color="darkred" if synthetic else "black")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, out_png)



def plot_region_curves(table, out_png, synthetic, regions=None, series=None, xlabel="x",
                       ylabel="score", title="", true_x=None, mark_best=True, level=0.95,
                       labels=None):
    """Per region, one curve per series: mean across subjects with its confidence band.

    Parameters
    ----------
    table : DataFrame
        Columns ``subject, region, series, x, value`` (duplicates are averaged).
    out_png : str or Path
        PNG written atomically.
    synthetic : bool
        Whether the values come from the synthetic demo dataset (title banner).
    regions : list of str, optional
        Panels, in this order (default: all regions, in order of appearance).
    series : list of str, optional
        Curves drawn in each panel, in this order (default: all).
    xlabel, ylabel, title : str
    true_x : float or dict, optional
        Planted value (synthetic data): a dotted vertical line; a dict maps region -> value.
    mark_best : bool
        Dashed line at the argmax of each series' mean curve (when it has more than one x).
    level : float
        Confidence level of the bands (Student t across subjects).
    labels : dict, optional
        Legend label of each series.

    Returns
    -------
    Path of the written PNG.
    """
    regions = _table_regions(table, {"subject", "region", "series", "x", "value"}, regions,
                             "plot_region_curves")
    if series is None:
        series = list(pd.unique(table["series"]))
    series = [s for s in series if s in set(table["series"])]
    if not regions or not series:
        raise ValueError("plot_region_curves: nothing to draw")
    labels = labels or {}
    n = len(regions)
    fig, axes = _panel_grid(n)
    for ax, region in zip(axes.ravel(), regions):
        ax.axhline(0, color="0.6", lw=0.8)
        for i, s in enumerate(series):
            sub = table[(table["region"] == region) & (table["series"] == s)]
            if sub.empty:
                continue
            wide = sub.pivot_table(index="subject", columns="x", values="value", aggfunc="mean")
            wide = wide.reindex(sorted(wide.columns), axis=1)
            x = wide.columns.to_numpy(dtype=float)
            mean, low, high = mean_ci(wide.to_numpy(dtype=float), level=level)
            color = f"C{i}"
            ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)
            ax.plot(x, mean, color=color, lw=2, marker="o", ms=3,
                    label=f"{labels.get(s, s)} (n={wide.shape[0]})")
            if mark_best and len(x) > 1 and np.any(np.isfinite(mean)):
                best = x[int(np.nanargmax(mean))]
                ax.axvline(best, color=color, ls="--", lw=1.2,
                           label=f"best {labels.get(s, s)} = {best:g}")
        tx = true_x.get(region) if isinstance(true_x, dict) else true_x
        if tx is not None:
            ax.axvline(tx, color="k", ls=":", lw=1.5, label=f"true = {tx:g}")
        ax.set_title(str(region), fontsize=11)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="best")
    return _finish_panels(fig, axes, n, title, synthetic, out_png)


def plot_model_comparison(table, out_png, synthetic, regions=None, title="", labels=None):
    """Several models side by side: brain score and F(d*) against relative layer depth.

    Parameters
    ----------
    table : DataFrame
        :func:`brainpred.tables.model_comparison` rows (``label, relative_depth, region,
        measure, distance, value, ci_low, ci_high``; one level per region): the
        ``brainscore`` and ``forecastscore_dstar`` rows are drawn.
    out_png : str or Path
        PNG written atomically.
    synthetic : bool
        Whether the values come from the synthetic demo dataset (title banner).
    regions : list of str, optional
        Columns of panels, in this order (default: all regions, in order of appearance).
    title : str
    labels : dict, optional
        Legend label of each model label (default: the label).

    Returns
    -------
    Path of the written PNG: 2 rows of panels (R(X_k), F_k(d*)) x one column per region, one
    line per model (mean across subjects with its CI band), x = layer / n_layers; each point
    of the F row is annotated with its d*.
    """
    regions = _table_regions(table, {"label", "relative_depth", "region", "measure", "value",
                                     "ci_low", "ci_high", "distance"}, regions,
                             "plot_model_comparison")
    models = list(pd.unique(table["label"]))
    if not regions or not models:
        raise ValueError("plot_model_comparison: nothing to draw")
    labels = labels or {}
    n = len(regions)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 7.0), squeeze=False, dpi=100,
                             sharex=True)
    rows = (("brainscore", "brain score R(X_k) (r)"), ("forecastscore_dstar", "F_k(d*) (Δr)"))
    for col, region in enumerate(regions):
        for row, (measure, ylabel) in enumerate(rows):
            ax = axes[row, col]
            ax.axhline(0, color="0.6", lw=0.8)
            for i, label in enumerate(models):
                t = table[(table["region"] == region) & (table["measure"] == measure)
                          & (table["label"] == label)].sort_values("relative_depth")
                if t.empty:
                    continue
                x = t["relative_depth"].to_numpy(dtype=float)
                ax.fill_between(x, t["ci_low"].to_numpy(dtype=float),
                                t["ci_high"].to_numpy(dtype=float), color=f"C{i}", alpha=0.2,
                                lw=0)
                ax.plot(x, t["value"].to_numpy(dtype=float), color=f"C{i}", lw=2, marker="o",
                        ms=3, label=labels.get(label, label))
                if measure == "forecastscore_dstar":
                    for xx, yy, d in zip(x, t["value"], t["distance"]):
                        ax.annotate(f"{d:g}", (xx, yy), fontsize=6, color=f"C{i}",
                                    textcoords="offset points", xytext=(2, 3))
            ax.set_title(f"{region}" if row == 0 else f"{region}: F at d*", fontsize=11)
            ax.set_ylabel(ylabel)
            if row == 1:
                ax.set_xlabel("relative depth k / n_layers")
            ax.legend(fontsize=7, loc="best")
    return _finish_panels(fig, axes, 2 * n, title, synthetic, out_png)
