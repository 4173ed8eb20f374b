"""Reading a workflow run's results back: tidy tables and per-vertex maps with named dims.

::

    from brainpred import results

    res = results.load("results")                    # every model-<m>_layer-<k> run in it
    res.runs                                         # one row per run
    res.scores.query("region == 'whole cortex'")     # per-subject region values (tidy)
    F = res.maps("forecast_score", level="group")    # Map: dims (distance, vertex)
    F.sel(distance=10).values                        # group F(10) of every vertex

What is read, and how it is found: the score files are found by their content, not by their
names (which may change): every ``.npz`` under the results folder is opened lazily and
classified by its keys (subject score files, fit files, group maps, an analysis' fit and group
files, noise ceilings); every ``.tsv`` by its columns (region tables of the subjects, their group
statistics, the paper comparison). The run (model and layer) of a file is read from its
provenance record (:func:`brainpred.provenance.read`, or a ``.json`` sidecar of the same stem)
when it has one, else from the BIDS-style ``key-value`` entities of its path
(:func:`parse_entities`, in any order: ``model-<m>``, ``layer-<k>``); files of one run folder
share its run.

Tables (pandas, one row per value; columns in this order):

* :attr:`Results.scores` -- per subject: ``run, model, layer, analysis, subject, level,
  region, hemisphere, measure, condition, x_name, x, distance, value``;
* :attr:`Results.stats` -- the group statistics of the same rows (no ``subject``; ``n, mean,
  ci_low, ci_high, p, q`` instead of ``value``);
* :attr:`Results.paper` -- the paper comparison table(s), with ``run, model, layer`` where known.

``analysis`` is ``"main"`` (R(X) and F(d)) or a further analysis (``layers``, ``controls``,
``syntax``, ``finetune``); ``condition`` is the analysis' series (main: ``base`` for the brain
score, ``true`` for the forecast score; ``random``, ``syntactic``, ``layer``, ``step-12``...);
``x`` is the value the series runs over and ``x_name`` what it is (:data:`X_NAMES`: distance,
layer, width, alpha, or ``""`` for a single value); ``distance`` repeats ``x`` where it is a
forecast distance (else NaN); ``hemisphere`` is ``L`` / ``R`` for the parcels (regions named
``"L ..."`` / ``"R ..."``) and ``both`` otherwise.

Maps (:meth:`Results.maps`) are :class:`Map` objects: an array with named dimensions and one
coordinate array per dimension (``subject``, ``distance``, ``condition``, ``fold``, ``x``,
``vertex``; ``run`` first when several runs are read at once), with ``sel``, ``isel``, ``mean``
and ``to_frame``. Vertices are the left then the right hemisphere (``Map.hemisphere``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import io
from . import provenance as prov
from .conditions import ANALYSES, MAIN
from .errors import DataError

__all__ = ["Map", "Results", "load", "parse_entities", "hemisphere_of", "X_NAMES"]

#: What the ``x`` of a table row is, by analysis (then by measure); ``""``: no x.
X_NAMES = {"layers": "layer", "finetune": "alpha",
           "measure": {"forecastscore": "distance", "widthscore": "width"}}

_FILE_SUFFIXES = (".npz", ".tsv", ".json", ".gii", ".func", ".label", ".nii", ".gz", ".png",
                  ".html", ".yaml", ".npy")
_ID = ["run", "model", "layer", "analysis", "level", "region", "hemisphere", "measure",
       "condition", "x_name", "x", "distance"]
_STATS = ["n", "mean", "ci_low", "ci_high", "p", "q"]


# --------------------------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------------------------
def _stem(name):
    """A file name without its known extensions (``a_desc-b.func.gii`` -> ``a_desc-b``); a dot
    elsewhere (``alpha-0.5``) is kept."""
    while True:
        for suffix in _FILE_SUFFIXES:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[:-len(suffix)]
                break
        else:
            return name


def parse_entities(name):
    """The BIDS-style ``key-value`` entities of a file or folder name.

    Parameters
    ----------
    name : str or path
        E.g. ``"sub-001_space-fsaverage5_hemi-L_desc-forecastscore.func.gii"`` or
        ``"model-tiny-gpt2_layer-8"``; known extensions are dropped first.

    Returns
    -------
    dict
        ``key -> value`` in the order of the name (``{"sub": "001", "space": "fsaverage5",
        "hemi": "L", "desc": "forecastscore"}``); the value runs from the first ``-`` to the
        next ``_`` (``model-tiny-gpt2`` -> ``tiny-gpt2``); parts without ``-`` (``group``, a
        suffix such as ``scores``) are left out.
    """
    out = {}
    for part in _stem(Path(str(name)).name).split("_"):
        key, sep, value = part.partition("-")
        if sep and key and value:
            out[key] = value
    return out


def hemisphere_of(n_vertices):
    """``"L"`` / ``"R"`` of each vertex of a map of both hemispheres (left first).

    Returns
    -------
    ndarray of str, shape (n_vertices,)
    """
    n = int(n_vertices)
    return np.where(np.arange(n) < n // 2, "L", "R")


def _region_hemisphere(region):
    region = str(region)
    return region[0] if region[:2] in ("L ", "R ") else "both"


def _x_name(analysis, measure):
    if analysis in X_NAMES and analysis != "measure":
        return X_NAMES[analysis]
    return X_NAMES["measure"].get(measure, "")


def _as_layer(value):
    """A layer as an int where it is one (``"8"``, ``8.0``), else as given."""
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        return value
    return int(as_float) if np.isfinite(as_float) and as_float.is_integer() else value


# --------------------------------------------------------------------------------------------
# maps with named dimensions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Map:
    """A per-vertex array with named dimensions (a small stand-in for ``xarray.DataArray``).

    Parameters
    ----------
    values : ndarray
        E.g. shape (n_subjects, n_distances, n_vertices).
    dims : tuple of str
        One name per axis of ``values``, e.g. ``("subject", "distance", "vertex")``.
    coords : dict
        ``dim -> 1-D array`` of the axis' labels (subject names, distances, vertex indices...),
        one per dim, of the axis' length.
    attrs : dict
        What the map is: ``name``, ``level``, ``analysis``, ``run``, ``model``, ``layer``,
        ``files``...
    """

    values: np.ndarray
    dims: tuple
    coords: dict
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        values = np.asarray(self.values)
        if len(self.dims) != values.ndim:
            raise ValueError(f"Map: {len(self.dims)} dims {self.dims} for an array of shape "
                             f"{values.shape}.")
        coords = {}
        for axis, dim in enumerate(self.dims):
            c = np.asarray(self.coords[dim]) if dim in self.coords else np.arange(
                values.shape[axis])
            if c.shape != (values.shape[axis],):
                raise ValueError(f"Map: coordinate {dim!r} has shape {c.shape}, the axis "
                                 f"{values.shape[axis]}.")
            coords[dim] = c
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "dims", tuple(self.dims))
        object.__setattr__(self, "coords", coords)

    @property
    def shape(self):
        return self.values.shape

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    def __repr__(self):
        dims = ", ".join(f"{d}: {n}" for d, n in zip(self.dims, self.shape))
        return f"Map({self.attrs.get('name', '')!r}, {dims})"

    def _positions(self, dim, wanted):
        c = self.coords[dim]
        out = []
        for w in np.atleast_1d(np.asarray(wanted, dtype=object)):
            if np.issubdtype(c.dtype, np.number) and isinstance(w, (int, float, np.number)):
                hit = np.flatnonzero(np.isclose(c.astype(float), float(w)))
            else:
                hit = np.flatnonzero(c.astype(str) == str(w))
            if hit.size == 0:
                raise KeyError(f"{dim} = {w!r} is not in this map; it has {c.tolist()[:20]}.")
            out.append(int(hit[0]))
        return out

    def _take(self, dim, positions, drop):
        if dim not in self.dims:
            raise KeyError(f"this map has no dimension {dim!r}; its dims are {self.dims}.")
        axis = self.dims.index(dim)
        values = np.take(self.values, positions, axis=axis)
        coords = dict(self.coords)
        if drop:
            values = np.take(values, 0, axis=axis)
            dims = self.dims[:axis] + self.dims[axis + 1:]
            coords.pop(dim)
            attrs = {**self.attrs, dim: self.coords[dim][positions[0]].item()}
        else:
            dims, attrs = self.dims, self.attrs
            coords[dim] = self.coords[dim][positions]
        return Map(values, dims, coords, attrs)

    def sel(self, **selection):
        """The part of the map at these coordinate values.

        ``m.sel(distance=10)`` drops the dimension (its value goes to ``attrs``);
        ``m.sel(subject=["sub-001", "sub-002"])`` keeps it. Numbers match to ``np.isclose``.
        KeyError for a dimension or value the map does not have.
        """
        out = self
        for dim, wanted in selection.items():
            drop = np.ndim(wanted) == 0
            if dim not in out.dims:
                raise KeyError(f"this map has no dimension {dim!r}; its dims are {out.dims}.")
            out = out._take(dim, out._positions(dim, wanted), drop)
        return out

    def isel(self, **selection):
        """As :meth:`sel`, by position along each dimension."""
        out = self
        for dim, pos in selection.items():
            drop = np.ndim(pos) == 0
            out = out._take(dim, [int(p) for p in np.atleast_1d(pos)], drop)
        return out

    def hemisphere(self, hemi):
        """The vertices of one hemisphere (``"L"`` or ``"R"``), vertex coordinates kept."""
        if "vertex" not in self.dims:
            raise KeyError("this map has no vertex dimension.")
        n = self.shape[self.dims.index("vertex")]
        return self.isel(vertex=np.flatnonzero(hemisphere_of(n) == str(hemi)))

    def mean(self, dim):
        """Mean over one dimension, ignoring NaN (NaN where every value is NaN)."""
        axis = self.dims.index(dim)
        with np.errstate(invalid="ignore"), _quiet_nanmean():
            values = np.nanmean(self.values.astype(np.float64), axis=axis)
        coords = {d: c for d, c in self.coords.items() if d != dim}
        return Map(values, self.dims[:axis] + self.dims[axis + 1:], coords,
                   {**self.attrs, "mean_over": dim})

    def to_frame(self, name="value", dropna=False):
        """The map as a long table: one column per dimension (its coordinates) and ``name``.

        Returns
        -------
        DataFrame
            ``values.size`` rows (fewer with ``dropna``), in C order.
        """
        grids = np.meshgrid(*[self.coords[d] for d in self.dims], indexing="ij")
        table = pd.DataFrame({d: g.reshape(-1) for d, g in zip(self.dims, grids)})
        table[name] = self.values.reshape(-1)
        return table.dropna(subset=[name]).reset_index(drop=True) if dropna else table


class _quiet_nanmean:
    """Silence numpy's 'Mean of empty slice' warning (all-NaN vertices stay NaN)."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


# --------------------------------------------------------------------------------------------
# finding the files
# --------------------------------------------------------------------------------------------
def _record(path, z):
    """The provenance record of an opened npz, or of its ``.json`` sidecar, or None."""
    if prov.KEY in z.files:
        return prov.read(path, {prov.KEY: z[prov.KEY]})
    sidecar = path.with_name(_stem(path.name) + ".json")
    if sidecar.is_file():
        try:
            rec = io.read_json(sidecar)
        except DataError:
            return None
        return rec if isinstance(rec, dict) else None
    return None


def _npz_kind(keys):
    keys = set(keys)
    if "subject" in keys and ("brain_score" in keys or "noise_ceiling" in keys):
        return "subject"
    if "conditions_json" in keys:
        return "analysis_fit"
    if "subjects" in keys and any(k.endswith("__brain_score") for k in keys):
        return "fit"
    if "subjects" in keys and "analysis" in keys:
        return "analysis_group"
    if "subjects" in keys and "brain_score" in keys:
        return "group"
    return None


def _tsv_kind(columns):
    cols = set(columns)
    if {"region", "measure", "value", "subject"} <= cols:
        return "region_scores"
    if {"region", "measure", "mean", "ci_low"} <= cols:
        return "region_stats"
    if {"quantity", "paper"} <= cols:
        return "paper"
    return None


def _path_entities(root, path):
    """Entities of every folder from ``root`` down to the file, the nearest winning."""
    out = {}
    for part in path.relative_to(root).parts:
        out.update(parse_entities(part))
    return out


def _tsv_analysis(root, path, columns):
    if "analysis" in columns:
        return None                      # one per row: read from the table
    parts = path.relative_to(root).parts
    for part in parts[:-1]:
        if part in ANALYSES:
            return part
    desc = parse_entities(parts[-1]).get("desc", "")
    for name in ANALYSES:
        if desc.startswith(name):
            return name
    return MAIN


def _index(root):
    """One row per result file: path, kind, run label, model, layer, analysis, subject."""
    rows = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in (".npz", ".tsv"):
            continue
        ent = _path_entities(root, path)
        row = {"path": path, "model": ent.get("model"), "layer": _as_layer(ent.get("layer")),
               "analysis": MAIN, "subject": None, "keys": (), "record": None,
               "label": (f"model-{ent['model']}_layer-{ent['layer']}"
                         if "model" in ent and "layer" in ent else None)}
        if path.suffix == ".npz":
            try:
                with np.load(path, allow_pickle=False) as z:
                    keys = tuple(z.files)
                    kind = _npz_kind(keys)
                    if kind is None:
                        continue
                    rec = _record(path, z)
                    if "subject" in keys:
                        row["subject"] = str(z["subject"])
                    if "analysis" in keys:
                        row["analysis"] = str(z["analysis"])
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot be read as .npz ({exc}); delete it and re-run "
                                "snakemake.") from exc
            row.update(kind=kind, keys=keys, record=rec)
            if rec:
                if rec.get("model") is not None:
                    row["model"] = rec["model"]
                if rec.get("layer") is not None:
                    row["layer"] = _as_layer(rec["layer"])
                if row["label"] is None and _known(row["model"]) and _known(row["layer"]):
                    row["label"] = f"model-{row['model']}_layer-{row['layer']}"
        else:
            with open(path, encoding="utf-8") as f:
                columns = f.readline().rstrip("\n").split("\t")
            kind = _tsv_kind(columns)
            if kind is None:
                continue
            row.update(kind=kind, analysis=_tsv_analysis(root, path, columns))
        rows.append(row)
    index = pd.DataFrame(rows, columns=["path", "kind", "label", "model", "layer", "analysis",
                                        "subject", "keys", "record"])
    if index.empty:
        return index.assign(run=pd.Series(dtype=object))
    # the run of each file: its folder's label (else its provenance's); the model and layer
    # of a run: those its files' provenance records, else its folder's entities
    index["run"] = index["label"].fillna("run")
    resolved = {}
    for run, g in index.groupby("run"):
        has = g[g["record"].notna()]
        src = has if len(has) else g
        resolved[run] = (next((m for m in src["model"] if _known(m)), None),
                         _as_layer(next((k for k in src["layer"] if _known(k)), None)))
    index["model"] = pd.Series([resolved[r][0] for r in index["run"]], index=index.index,
                               dtype=object)
    index["layer"] = pd.Series([resolved[r][1] for r in index["run"]], index=index.index,
                               dtype=object)
    return index.drop(columns="label")


def _known(value):
    return value is not None and value == value


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def _infer_level(region):
    region = str(region)
    if region == "whole cortex":
        return "whole"
    return "parcel" if region[:2] in ("L ", "R ") else "bilateral"


def _tidy(table, row, kind):
    """A region table (``region_scores`` or ``region_stats``) in the tidy columns."""
    t = table.copy()
    if "analysis" not in t:
        t["analysis"] = row["analysis"]
    if "series" not in t:                             # the main analysis' tables
        t["series"] = np.where(t["measure"] == "brainscore", "base", "true")
        t["x"] = t["distance"] if "distance" in t else np.nan
    if "level" not in t:
        t["level"] = t["region"].map(_infer_level)
    t = t.rename(columns={"series": "condition"})
    t["x"] = pd.to_numeric(t["x"], errors="coerce")
    t["run"], t["model"], t["layer"] = row["run"], row["model"], row["layer"]
    t["hemisphere"] = t["region"].map(_region_hemisphere)
    t["x_name"] = [_x_name(a, m) for a, m in zip(t["analysis"], t["measure"])]
    t["distance"] = t["x"].where(t["x_name"] == "distance")
    values = ["subject", "value"] if kind == "region_scores" else _STATS
    cols = _ID[:4] + (["subject"] if kind == "region_scores" else []) + _ID[4:]
    for c in values:
        if c not in t:
            t[c] = np.nan
    return t[cols + [c for c in values if c != "subject"]]


def _region_tables(index, kind):
    rows = index[index["kind"] == kind]
    frames = []
    for (run, analysis), g in rows.groupby(["run", "analysis"], sort=True, dropna=False):
        tables = [(r, io.read_tsv(r["path"])) for _, r in g.iterrows()]
        with_level = [(r, t) for r, t in tables if "level" in t]
        for r, t in (with_level or tables):
            frames.append(_tidy(t, r, kind))
    if not frames:
        cols = _ID[:4] + (["subject"] if kind == "region_scores" else []) + _ID[4:]
        return pd.DataFrame(columns=cols + (["value"] if kind == "region_scores" else _STATS))
    out = pd.concat(frames, ignore_index=True)
    key = [c for c in out.columns if c not in ("value", *_STATS, "hemisphere", "x_name",
                                                "distance", "model", "layer")]
    return out.drop_duplicates(subset=key, keep="first").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# the results of a run
# --------------------------------------------------------------------------------------------
class Results:
    """The results of one workflow output folder, for every run (model, layer) in it.

    Made by :func:`load`. Attributes: ``root`` (the folder), ``files`` (one row per result
    file found: ``path, kind, model, layer, analysis, subject, run``), :attr:`runs`,
    :attr:`scores`, :attr:`stats`, :attr:`paper`; methods :meth:`maps`, :meth:`map_names`,
    :meth:`compare`.
    """

    def __init__(self, root, files):
        self.root = Path(root)
        self.files = files
        self._cache = {}

    def __repr__(self):
        runs = ", ".join(self.runs["run"]) or "none"
        return f"Results({str(self.root)!r}, runs: {runs})"

    @property
    def runs(self):
        """One row per run: ``run, model, layer, analyses, n_subjects``."""
        rows = []
        results = self.files[self.files["kind"] != "paper"]   # a summary, not a run
        for run, g in results.groupby("run", sort=True):
            subjects = set(g["subject"].dropna())
            for _, r in g[g["kind"].isin(["fit", "analysis_fit", "group",
                                          "analysis_group"])].iterrows():
                if "subjects" in r["keys"]:
                    with np.load(r["path"], allow_pickle=False) as z:
                        subjects |= {str(s) for s in z["subjects"]}
            rows.append({"run": run, "model": g["model"].iloc[0], "layer": g["layer"].iloc[0],
                         "analyses": sorted(set(g["analysis"].dropna()),
                                            key=lambda a: (a != MAIN, a)),
                         "n_subjects": len(subjects)})
        return pd.DataFrame(rows, columns=["run", "model", "layer", "analyses", "n_subjects"])

    @property
    def scores(self):
        """Per-subject region values of every run and analysis (tidy; module docstring)."""
        if "scores" not in self._cache:
            self._cache["scores"] = _region_tables(self.files, "region_scores")
        return self._cache["scores"]

    @property
    def stats(self):
        """Group statistics of the region values (``n, mean, ci_low, ci_high, p, q``)."""
        if "stats" not in self._cache:
            self._cache["stats"] = _region_tables(self.files, "region_stats")
        return self._cache["stats"]

    @property
    def paper(self):
        """The paper comparison table(s), with ``run, model, layer`` first where known."""
        frames = []
        for _, r in self.files[self.files["kind"] == "paper"].iterrows():
            t = io.read_tsv(r["path"])
            known = r["run"] != "run"
            t.insert(0, "layer", r["layer"] if known else np.nan)
            t.insert(0, "model", r["model"] if known else np.nan)
            t.insert(0, "run", r["run"] if known else np.nan)
            frames.append(t)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def compare(self, value="mean", **where):
        """The runs side by side: one column per run, one row per table row.

        Parameters
        ----------
        value : str
            A column of :attr:`stats` (``mean``, ``ci_low``, ``p``...), or ``"value"``: the
            mean over subjects of :attr:`scores`.
        **where
            Keep the rows whose column equals the value (or is in the list), e.g.
            ``measure="forecastscore", region="whole cortex"``.

        Returns
        -------
        DataFrame
            Index ``analysis, level, region, hemisphere, measure, condition, x``; columns: the
            runs.
        """
        table = self.scores if value == "value" else self.stats
        for col, wanted in where.items():
            if col not in table:
                raise KeyError(f"compare: no column {col!r}; the columns are "
                               f"{list(table.columns)}.")
            wanted = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
            table = table[table[col].isin(wanted)]
        index = ["analysis", "level", "region", "hemisphere", "measure", "condition", "x"]
        t = table.assign(x=table["x"].fillna(-np.inf))  # pivot drops NaN keys
        wide = t.pivot_table(index=index, columns="run", values=value, aggfunc="mean",
                             sort=True)
        wide.columns.name = "run"
        return wide.rename(index={-np.inf: np.nan}, level="x")

    # ------------------------------------------------------------------------------ maps
    def _select_runs(self, model, layer, run):
        runs = self.runs
        sel = runs
        if run is not None:
            sel = sel[sel["run"].isin(np.atleast_1d(run))]
        if model is not None:
            sel = sel[sel["model"].astype(str).isin([str(m) for m in np.atleast_1d(model)])]
        if layer is not None:
            sel = sel[sel["layer"].astype(str).isin([str(k) for k in np.atleast_1d(layer)])]
        if sel.empty:
            raise DataError(f"{self.root}: no run with model={model!r}, layer={layer!r}, "
                            f"run={run!r}; the runs are {runs['run'].tolist()}.")
        return sel

    def _files(self, run, level, analysis):
        f = self.files[(self.files["run"] == run) & (self.files["analysis"] == analysis)]
        if level == "subject":
            kinds = ["subject", "fit"] if analysis == MAIN else ["analysis_fit"]
        elif level == "group":
            kinds = ["group"] if analysis == MAIN else ["analysis_group"]
        else:
            raise ValueError(f"level must be 'subject' or 'group', got {level!r}.")
        f = f[f["kind"].isin(kinds)]
        if level == "subject" and analysis == MAIN and (f["kind"] == "subject").any():
            f = f[f["kind"] == "subject"]     # the subject files hold what the fits hold
        return f

    def map_names(self, level="subject", analysis=MAIN, model=None, layer=None, run=None):
        """The map names :meth:`maps` can read for these runs (sorted)."""
        names = set()
        for r in self._select_runs(model, layer, run)["run"]:
            for _, row in self._files(r, level, analysis).iterrows():
                if level == "group":
                    names |= _group_names(row)
                elif row["kind"] == "subject":
                    names |= set(row["keys"]) - {prov.KEY, "subject", "distances",
                                                 "conditions"}
                else:
                    subjects = set(_subjects_of(row))
                    names |= {k.split("__", 1)[1] for k in row["keys"]
                              if "__" in k and k.split("__", 1)[0] in subjects}
        return sorted(names)

    def maps(self, name, level="subject", analysis=MAIN, model=None, layer=None, run=None,
             stat="mean"):
        """Per-vertex maps of one or several runs, with named dimensions.

        Parameters
        ----------
        name : str
            A key of the score files (:meth:`map_names`): ``level="subject"``, main analysis:
            ``brain_score`` (subject, vertex), ``forecast_score`` and ``forecast_brain_score``
            (subject, distance, vertex), ``alpha`` (subject, condition, fold, vertex: the ridge
            penalty chosen in each outer fold), ``noise_ceiling``; a further analysis:
            ``scores`` (subject, condition, vertex), ``alpha``. ``level="group"``, main:
            ``brain_score``, ``forecast_score`` (distance, vertex), ``dstar``, ``gain``,
            ``brain_q``...; a further analysis: ``<measure>__<series>`` (x, vertex) with
            ``stat``, or a full key (``kstar``, ``forecastscore__layer__low``).
        level : {"subject", "group"}
        analysis : str
            ``"main"`` or a further analysis.
        model, layer, run : optional
            Which runs (default: all); one value or a list.
        stat : str
            Group maps of a further analysis: ``mean``, ``low``, ``high`` or ``p``.

        Returns
        -------
        Map
            With a leading ``run`` dimension when several runs are read (their maps must have
            the same dimensions and coordinates).

        Raises
        ------
        DataError
            No such run, or no such map in it (the message lists the available names).
        """
        runs = self._select_runs(model, layer, run)
        out = [self._run_map(r, name, level, analysis, stat) for r in runs["run"]]
        if len(out) == 1:
            return out[0]
        first = out[0]
        for m in out[1:]:
            if m.dims != first.dims or m.shape != first.shape or any(
                    not np.array_equal(m.coords[d], first.coords[d]) for d in first.dims):
                raise DataError(f"{name}: the runs' maps differ in shape or coordinates "
                                f"({first!r}, {m!r}); select one run (model=, layer=).")
        attrs = {**{k: v for k, v in first.attrs.items() if k not in ("run", "model", "layer",
                                                                      "files")},
                 "runs": runs[["run", "model", "layer"]].to_dict("records"),
                 "files": [f for m in out for f in m.attrs["files"]]}
        return Map(np.stack([m.values for m in out]), ("run",) + first.dims,
                   {"run": runs["run"].to_numpy(), **first.coords}, attrs)

    def _run_map(self, run, name, level, analysis, stat):
        files = self._files(run, level, analysis)
        if files.empty:
            raise DataError(f"{self.root}: run {run} has no {level} files of the {analysis} "
                            "analysis; run its workflow steps, or choose another level or "
                            "analysis.")
        row0 = files.iloc[0]
        attrs = {"name": name, "level": level, "analysis": analysis, "run": run,
                 "model": row0["model"], "layer": row0["layer"]}
        if level == "group":
            values, dims, coords, used = _group_map(files.iloc[0], name, stat)
        else:
            values, dims, coords, used = _subject_map(files, name)
        if values is None:
            names = self.map_names(level, analysis, run=run)
            raise DataError(f"{self.root}: no {level} map {name!r} in run {run} ({analysis} "
                            f"analysis); its maps are {names}.")
        coords["vertex"] = np.arange(values.shape[-1])
        return Map(values, dims, coords, {**attrs, "files": [str(p) for p in used],
                                          "n_per_hemi": values.shape[-1] // 2})


def _subjects_of(row):
    with np.load(row["path"], allow_pickle=False) as z:
        return [str(s) for s in z["subjects"]]


def _dims(arr, z, subjects=None):
    """Dimension names and coordinates of one file's map (last axis: vertex)."""
    if arr.ndim == 1:
        return ("vertex",), {}
    lead = arr.shape[:-1]
    n_d = len(z["distances"]) if "distances" in z.files else None
    conds = z["conditions"] if "conditions" in z.files else None
    if len(lead) == 1:
        if n_d is not None and lead[0] == n_d:
            return ("distance", "vertex"), {"distance": np.asarray(z["distances"])}
        if conds is not None and lead[0] == len(conds):
            return ("condition", "vertex"), {"condition": np.asarray(conds).astype(str)}
        if subjects is not None and lead[0] == len(subjects):
            return ("subject", "vertex"), {"subject": np.asarray(subjects)}
        return ("dim_0", "vertex"), {}
    if len(lead) == 2 and conds is not None and lead[0] == len(conds):
        return ("condition", "fold", "vertex"), {"condition": np.asarray(conds).astype(str),
                                                 "fold": np.arange(lead[1])}
    dims = tuple(f"dim_{i}" for i in range(len(lead))) + ("vertex",)
    return dims, {}


def _subject_map(files, name):
    """Stack one map of every subject: from the subject files, else the fit files."""
    per, dims, coords, used = {}, None, {}, []
    for _, row in files.iterrows():
        with np.load(row["path"], allow_pickle=False) as z:
            if row["kind"] == "subject":
                if name not in z.files:
                    continue
                items = [(str(z["subject"]), z[name])]
            else:
                items = [(str(s), z[f"{s}__{name}"]) for s in z["subjects"]
                         if f"{s}__{name}" in z.files]
            for subject, arr in items:
                d, c = _dims(arr, z)
                if dims is None:
                    dims, coords = d, c
                elif d != dims or arr.shape != next(iter(per.values())).shape:
                    raise DataError(f"{row['path']}: {name} of {subject} has dims {d} "
                                    f"{arr.shape}, another subject's {dims}; re-run snakemake.")
                per[subject] = arr
                used.append(row["path"])
    if not per:
        return None, None, None, []
    subjects = sorted(per)
    return (np.stack([per[s] for s in subjects]), ("subject",) + dims,
            {"subject": np.array(subjects), **coords}, sorted(set(used)))


def _n_vertices(z):
    """Vertices of the maps of an opened group file (None if it names none)."""
    keys = list(z.files)
    for k in ["brain_score", "responsive"] + [k for k in keys if k.endswith("__mean")]:
        if k in keys:
            return z[k].shape[-1]
    return None


def _group_names(row):
    """The vertex maps of a group file: its keys whose last axis is the vertices, and the
    ``<measure>__<series>`` of its ``__mean`` maps."""
    with np.load(row["path"], allow_pickle=False) as z:
        n = _n_vertices(z)
        names = {k for k in z.files if k != prov.KEY and z[k].ndim >= 1
                 and z[k].shape[-1] == n and not k.endswith("__x")}
    return names | {k[:-len("__mean")] for k in names if k.endswith("__mean")}


def _group_map(row, name, stat):
    with np.load(row["path"], allow_pickle=False) as z:
        keys = set(z.files)
        key = name if name in keys else f"{name}__{stat}"
        if key not in keys or key == prov.KEY:
            return None, None, None, []
        arr = z[key]
        if arr.ndim == 0 or arr.shape[-1] != _n_vertices(z):
            return None, None, None, []           # a scalar or a per-subject summary
        prefix = key.rsplit("__", 1)[0] if "__" in key else None
        if prefix and f"{prefix}__x" in keys and arr.ndim == 2:
            return arr, ("x", "vertex"), {"x": z[f"{prefix}__x"]}, [row["path"]]
        subjects = [str(s) for s in z["subjects"]] if "subjects" in keys else None
        dims, coords = _dims(arr, z, subjects)
        return arr, dims, coords, [row["path"]]


def load(results_dir):
    """The results of a workflow run (its ``results/`` folder), every run (model, layer) in it.

    Parameters
    ----------
    results_dir : path
        The workflow's ``results`` folder (``paths.results``).

    Returns
    -------
    Results

    Raises
    ------
    DataError
        The folder does not exist or holds no score file.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such results folder; pass the workflow's results folder "
                        "(run `snakemake --cores all` to make one).")
    files = _index(root)
    if files.empty or not files["kind"].isin(["subject", "fit", "group", "analysis_fit",
                                              "analysis_group", "region_scores",
                                              "region_stats"]).any():
        raise DataError(f"{root}: holds no score file (*_desc-*.npz) or region table; run the "
                        "workflow first (`snakemake --cores all`).")
    return Results(root, files)

