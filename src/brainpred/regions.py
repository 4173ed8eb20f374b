"""Cortical parcellations: reading label files, region means and anterior-posterior splitting.

Label convention used across brainpred
--------------------------------------
* ``labels`` is an int array over both hemispheres (left vertices then right, as everywhere in
  brainpred). ``-1`` means unlabelled.
* Left-hemisphere regions keep the id of the label file (1, 2, ...). Right-hemisphere ids are
  offset by :func:`hemi_offset` (1000 for atlases whose ids are below 1000, e.g. Destrieux
  ``aparc.a2009s``), so the same region has id ``k`` on the left and ``k + 1000`` on the right.
* ``names`` maps every id present to a name prefixed with the hemisphere: ``"L S_temporal_sup"``,
  ``"R S_temporal_sup"``.
* In a label file, id 0 and regions named ``Unknown``, ``???`` or ``Medial_wall``
  (case-insensitive) are unlabelled (they become ``-1``).

The paper splits Destrieux regions larger than 500 vertices (fsaverage6) into slabs along the
anterior-posterior axis, giving 142 regions per hemisphere; see :func:`split_regions`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .io import write_label_gifti  # noqa: F401  (re-exported: an I/O helper)

__all__ = ["load_labels", "read_hemi_labels", "region_means", "write_label_gifti",
           "split_regions", "hemi_offset", "UNLABELLED_NAMES", "hemi_paths", "load_coords",
           "key_region_labels", "bilateral_labels", "atlas_levels", "DESTRIEUX_KEY_REGIONS"]

#: The paper's key regions as groups of Destrieux (``aparc.a2009s``) labels, both hemispheres.
#: A plain name takes the whole label; ``(name, "anterior" | "posterior")`` takes the anterior or
#: posterior half (equal vertex counts, cut along y per hemisphere) of that label: Destrieux has a
#: single superior temporal sulcus (``S_temporal_sup``), which the paper's aSTS / pSTS split.
#: Use these names in ``regions.key`` (config); they are computed when the atlas has the labels.
DESTRIEUX_KEY_REGIONS = {
    "Heschl": ["G_temp_sup-G_T_transv"],
    "aSTS": [("S_temporal_sup", "anterior")],
    "pSTS": [("S_temporal_sup", "posterior")],
    "IFG": ["G_front_inf-Opercular_part", "G_front_inf-Triangul_part",
            "G_front_inf-Orbital_part"],
    "angular": ["G_pariet_inf-Angular"],
    "supramarginal": ["G_pariet_inf-Supramar"],
}

_FS_HEMI = {"L": "lh", "R": "rh"}

UNLABELLED_NAMES = frozenset({"unknown", "???", "medial_wall", "medial wall", ""})


def hemi_offset(max_id):
    """Offset added to right-hemisphere ids: the smallest power of ten >= 1000 above ``max_id``."""
    off = 1000
    while off <= max_id:
        off *= 10
    return off


def read_hemi_labels(path):
    """Read one hemisphere's label file.

    Parameters
    ----------
    path : str or Path
        A GIfTI label file (``*.label.gii``, first data array + LabelTable) or a FreeSurfer
        annotation (``*.annot``).

    Returns
    -------
    labels : ndarray int64, shape (n_per_hemi,)
        Region id per vertex, ``-1`` for unlabelled (id 0, ``Unknown``, ``???``,
        ``Medial_wall``, or an id of the annotation's ``-1``).
    names : dict[int, str]
        Name of every labelled id (without hemisphere prefix).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found. Point the atlas setting to a "
                        "`.label.gii` or `.annot` file of the same surface as the BOLD data.")
    try:
        if path.name.endswith(".annot"):
            import nibabel.freesurfer as fs

            idx, _ctab, raw_names = fs.read_annot(str(path))
            idx = np.asarray(idx, dtype=np.int64)
            table = {i: (n.decode() if isinstance(n, bytes) else str(n))
                     for i, n in enumerate(raw_names)}
        else:
            import nibabel as nib

            img = nib.load(str(path))
            if not getattr(img, "darrays", None):
                raise ValueError("no data array")
            idx = np.asarray(img.darrays[0].data).astype(np.int64).ravel()
            table = {int(k): (v if v is not None else "")
                     for k, v in img.labeltable.get_labels_as_dict().items()}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as a GIfTI label file or FreeSurfer .annot "
                        f"({type(exc).__name__}: {exc}). Check the file, or download the "
                        "atlas again.") from exc
    labels = idx.copy()
    unl = [k for k, n in table.items() if k == 0 or n.strip().lower() in UNLABELLED_NAMES]
    labels[(labels <= 0) | np.isin(labels, unl)] = -1
    present = np.unique(labels[labels > 0])
    names = {int(k): table.get(int(k), f"label-{int(k)}") for k in present}
    return labels, names


def load_labels(path_L, path_R):
    """Read a two-hemisphere parcellation.

    Parameters
    ----------
    path_L, path_R : str or Path
        Left and right hemisphere label files (``.label.gii`` or ``.annot``).

    Returns
    -------
    labels : ndarray int64, shape (n_vertices,)
        Left then right; right ids offset by :func:`hemi_offset` of the largest left/right id;
        ``-1`` unlabelled.
    names : dict[int, str]
        ``{id: "L name"}`` / ``{id + offset: "R name"}``.

    Raises
    ------
    DataError
        Naming the file, when a file is missing or unreadable.
    """
    lab_l, names_l = read_hemi_labels(path_L)
    lab_r, names_r = read_hemi_labels(path_R)
    max_id = max([0, *names_l.keys(), *names_r.keys()])
    off = hemi_offset(max_id)
    lab_r = np.where(lab_r > 0, lab_r + off, -1)
    names = {k: f"L {v}" for k, v in names_l.items()}
    names.update({k + off: f"R {v}" for k, v in names_r.items()})
    return np.concatenate([lab_l, lab_r]).astype(np.int64), names


def region_means(values, labels, names, dims=None, coords=None, value_name="value"):
    """Mean of vertex values per region (NaN ignored), as a tidy table.

    Parameters
    ----------
    values : array_like, shape (..., n_vertices)
        E.g. (V,) a score map, (n_d, V) forecast scores, (n_subjects, n_d, V).
    labels : array_like int, shape (n_vertices,)
        Region ids (``<= 0`` = unlabelled, left out).
    names : dict[int, str]
        Region names; ids without a name are called ``"label-<id>"``.
    dims : list of str, optional
        Column names of the leading axes of ``values`` (default ``dim0``, ``dim1``, ...).
    coords : dict[str, array_like], optional
        Values of each leading axis (default ``0..n-1``).
    value_name : str
        Name of the value column.

    Returns
    -------
    DataFrame
        Columns ``*dims, region, label, hemi, n_vertices, <value_name>`` with one row per
        combination of leading indices and region (regions in increasing id). ``hemi`` is
        ``"L"``/``"R"`` from the name prefix ("" otherwise); ``n_vertices`` counts the region's
        vertices (NaN included); the value is NaN when all its vertices are NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if values.shape[-1] != labels.shape[0]:
        raise ValueError(f"region_means: values have {values.shape[-1]} vertices but labels "
                         f"{labels.shape[0]}")
    lead = values.shape[:-1]
    if dims is None:
        dims = [f"dim{i}" for i in range(len(lead))]
    dims = list(dims)
    if len(dims) != len(lead):
        raise ValueError(f"region_means: {len(dims)} dims given for {len(lead)} leading axes")
    coords = dict(coords or {})
    flat = values.reshape(-1, values.shape[-1])
    ids = np.unique(labels[labels > 0])
    means = np.empty((flat.shape[0], ids.size))
    sizes = np.empty(ids.size, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for j, k in enumerate(ids):
            mask = labels == k
            sizes[j] = mask.sum()
            means[:, j] = np.nanmean(flat[:, mask], axis=1)
    region_names = [names.get(int(k), f"label-{int(k)}") for k in ids]
    hemis = [n[0] if n[:2] in ("L ", "R ") else "" for n in region_names]
    grids = np.meshgrid(*[np.asarray(coords.get(d, np.arange(n)))
                          for d, n in zip(dims, lead)], indexing="ij") if lead else []
    out = {}
    for d, g in zip(dims, grids):
        out[d] = np.repeat(g.ravel(), ids.size)
    n_rows = flat.shape[0]
    out["region"] = np.tile(np.asarray(region_names, dtype=object), n_rows)
    out["label"] = np.tile(ids.astype(np.int64), n_rows)
    out["hemi"] = np.tile(np.asarray(hemis, dtype=object), n_rows)
    out["n_vertices"] = np.tile(sizes, n_rows)
    out[value_name] = means.ravel()
    return pd.DataFrame(out)


def split_regions(labels, coords, names=None, max_size=500):
    """Split regions larger than ``max_size`` vertices into equal-count anterior-posterior slabs.

    Parameters
    ----------
    labels : array_like int, shape (n_vertices,)
        Region ids, ``<= 0`` unlabelled.
    coords : array_like, shape (n_vertices, 3)
        Vertex coordinates (RAS: axis 1 = y = posterior to anterior), e.g. fsaverage6
        white/pial surfaces of both hemispheres concatenated.
    names : dict[int, str], optional
        Region names (default ``"label-<id>"``).
    max_size : int
        A region with ``n > max_size`` vertices becomes ``ceil(n / max_size)`` slabs of
        (nearly) equal vertex counts, cut along y (ties in y broken by vertex index).

    Returns
    -------
    new_labels : ndarray int64, shape (n_vertices,)
        Ids renumbered 1..N in order of (old id, slab), slabs posterior to anterior; ``-1``
        unlabelled.
    new_names : dict[int, str]
        Old name for regions left whole, ``"<name> [i/k]"`` (i = 1 most posterior) for slabs.
    """
    labels = np.asarray(labels).ravel()
    coords = np.asarray(coords, dtype=np.float64)
    if coords.shape != (labels.shape[0], 3):
        raise ValueError(f"split_regions: coords must be ({labels.shape[0]}, 3), got "
                         f"{coords.shape}")
    if max_size < 1:
        raise ValueError("split_regions: max_size must be >= 1")
    names = names or {}
    new = np.full(labels.shape, -1, dtype=np.int64)
    new_names = {}
    nxt = 1
    for k in np.unique(labels[labels > 0]):
        idx = np.flatnonzero(labels == k)
        name = names.get(int(k), f"label-{int(k)}")
        n_parts = int(np.ceil(idx.size / max_size))
        if n_parts <= 1:
            new[idx] = nxt
            new_names[nxt] = name
            nxt += 1
            continue
        order = idx[np.argsort(coords[idx, 1], kind="stable")]
        for i, part in enumerate(np.array_split(order, n_parts)):
            new[part] = nxt
            new_names[nxt] = f"{name} [{i + 1}/{n_parts}]"
            nxt += 1
    return new, new_names


def hemi_paths(root, pattern):
    """The left and right files of a per-hemisphere path pattern.

    Parameters
    ----------
    root : str or Path
        Folder the pattern is relative to (absolute patterns are kept).
    pattern : str
        Path with ``{hemi}`` (``L``/``R``, BIDS) or ``{fs_hemi}`` (``lh``/``rh``, FreeSurfer),
        e.g. ``derivatives/freesurfer/fsaverage6/label/{fs_hemi}.aparc.a2009s.annot``.

    Returns
    -------
    list of str
        ``[left, right]``; empty when ``pattern`` is empty.
    """
    if not pattern:
        return []
    out = []
    for h in ("L", "R"):
        try:
            rel = pattern.format(hemi=h, fs_hemi=_FS_HEMI[h])
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{pattern!r}: only {{hemi}} (L/R) and {{fs_hemi}} (lh/rh) may "
                              f"appear in a per-hemisphere path ({exc}).") from exc
        out.append(rel if Path(rel).is_absolute() else f"{str(root).rstrip('/')}/{rel}")
    return out


def load_coords(paths=None, n_per_hemi=None):
    """Vertex coordinates of both hemispheres (left then right), for anterior-posterior splits.

    Parameters
    ----------
    paths : (path_L, path_R) or None
        FreeSurfer surfaces (``lh.pial``) or GIfTI surfaces (``*.surf.gii``). ``None``: nilearn's
        bundled fsaverage5 pial mesh (offline), which needs ``n_per_hemi`` = 10,242.
    n_per_hemi : int, optional
        Expected vertices per hemisphere (checked).

    Returns
    -------
    coords : ndarray, shape (2 * n_per_hemi, 3)
    """
    parts = []
    if paths:
        import nibabel as nib

        for p in paths:
            p = Path(p)
            if not p.is_file():
                raise DataError(f"{p}: surface file not found (needed to split large regions "
                                "along the anterior-posterior axis). Point regions.surface to "
                                "the pial surfaces of the analysis space, or set "
                                "regions.split_max_size to 0.")
            try:
                if p.name.endswith(".gii"):
                    c = nib.load(str(p)).agg_data("NIFTI_INTENT_POINTSET")
                else:
                    c = nib.freesurfer.read_geometry(str(p))[0]
            except Exception as exc:
                raise DataError(f"{p}: cannot be read as a surface ({type(exc).__name__}: "
                                f"{exc}).") from exc
            parts.append(np.asarray(c, dtype=np.float64))
    else:
        from nilearn import datasets

        mesh = datasets.load_fsaverage("fsaverage5")["pial"]
        parts = [np.asarray(mesh.parts[h].coordinates, dtype=np.float64)
                 for h in ("left", "right")]
    if n_per_hemi is not None and any(len(c) != n_per_hemi for c in parts):
        raise DataError(f"surface has {[len(c) for c in parts]} vertices per hemisphere, the "
                        f"labels {n_per_hemi}: use the surface of the analysis space "
                        "(regions.surface).")
    return np.concatenate(parts)


def _base(name):
    return name[2:] if name[:2] in ("L ", "R ") else name


def bilateral_labels(labels, names):
    """Merge each ``L x`` / ``R x`` pair into one region ``x`` (both hemispheres).

    Returns
    -------
    labels : ndarray int64, shape (n_vertices,)
    names : dict[int, str]
    """
    labels = np.asarray(labels)
    base = {int(k): _base(v) for k, v in names.items()}
    uniq = sorted(set(base.values()))
    new_id = {n: i + 1 for i, n in enumerate(uniq)}
    lut = {k: new_id[b] for k, b in base.items()}
    out = np.array([lut.get(int(k), -1) for k in labels.tolist()], dtype=np.int64)
    return out, {i: n for n, i in new_id.items()}


def key_region_labels(labels, names, coords, groups=None):
    """The paper's key regions (both hemispheres) from an atlas, as one label array.

    Parameters
    ----------
    labels : array_like int, shape (n_vertices,)
        Atlas ids (unsplit), both hemispheres (see :func:`load_labels`).
    names : dict[int, str]
        Hemisphere-prefixed names (``"L S_temporal_sup"``).
    coords : array_like, shape (n_vertices, 3) or None
        Vertex coordinates (y = posterior to anterior); needed for anterior/posterior halves.
    groups : dict, optional
        ``{key name: [label name | (label name, "anterior" | "posterior"), ...]}``; default
        :data:`DESTRIEUX_KEY_REGIONS`.

    Returns
    -------
    key_labels : ndarray int64, shape (n_vertices,)
        1..K for the key regions found (``-1`` elsewhere); a key region whose labels are all
        absent from the atlas is left out.
    key_names : dict[int, str]
    """
    groups = DESTRIEUX_KEY_REGIONS if groups is None else groups
    labels = np.asarray(labels)
    by_base = {}
    for k, v in names.items():
        by_base.setdefault(_base(v), []).append(int(k))
    out = np.full(labels.shape, -1, dtype=np.int64)
    out_names = {}
    nxt = 1
    for key, members in groups.items():
        mask = np.zeros(labels.shape, bool)
        for m in members:
            name, part = (m, None) if isinstance(m, str) else (m[0], m[1])
            for lab in by_base.get(name, []):
                idx = np.flatnonzero(labels == lab)
                if part is not None and idx.size:
                    if coords is None:
                        raise ValueError(f"key_region_labels: {key} needs vertex coordinates")
                    y = np.asarray(coords)[idx, 1]
                    order = idx[np.argsort(y, kind="stable")]
                    half = order.size // 2
                    idx = order[half:] if part == "anterior" else order[:half]
                mask[idx] = True
        if mask.any():
            out[mask & (out < 0)] = nxt
            out_names[nxt] = key
            nxt += 1
    return out, out_names


def atlas_levels(labels, names, coords=None, max_size=500, key_groups=None):
    """The parcellations region tables are computed on.

    Parameters
    ----------
    labels, names : atlas of :func:`load_labels` (both hemispheres, prefixed names).
    coords : array_like (n_vertices, 3) or None
        Vertex coordinates; needed to split (``max_size > 0``) and for half-label key regions.
    max_size : int
        Regions over ``max_size`` vertices are split into anterior-posterior slabs
        (:func:`split_regions`); ``0`` = no split.
    key_groups : dict, optional
        Key region groups (default :data:`DESTRIEUX_KEY_REGIONS`).

    Returns
    -------
    dict ``level -> (labels, names)``
        ``parcel``: per-hemisphere regions, split when large (the paper's 142 per hemisphere
        for Destrieux on fsaverage6); ``bilateral``: unsplit regions merged across
        hemispheres; ``key``: the key regions found in the atlas (absent when none).
    """
    levels = {}
    if max_size and max_size > 0 and coords is not None:
        levels["parcel"] = split_regions(labels, coords, names, max_size=max_size)
    else:
        levels["parcel"] = (np.asarray(labels), dict(names))
    levels["bilateral"] = bilateral_labels(labels, names)
    key = key_region_labels(labels, names, coords, key_groups)
    if key[1]:
        levels["key"] = key
    return levels
