"""Atomic file writing and small readers/writers shared by every stage.

Every output of the workflow is written to a temporary sibling file and moved into place with
:func:`os.replace`, so an interrupted run never leaves a half-written file behind and Snakemake
resumes from the last complete output.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import derivatives
from .errors import DataError

__all__ = ["atomic_path", "atomic_write", "save_npz", "load_npz", "write_tsv", "read_tsv",
           "read_json", "write_json", "read_yaml", "write_label_gifti", "write_func_gifti",
           "write_surface_maps"]


_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT,
                 errno.EFBIG}


def _umask_mode():
    """The mode a new file gets under the process umask (``0o666 & ~umask``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_error(path, exc):
    return DataError(
        f"{path}: cannot be written ({exc.strerror or exc}). Free disk space or check that the "
        "folder is writable (results/ and its subfolders), then run snakemake again: what was "
        "already computed is kept.")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    Temporary files left by an earlier write of the same path that was killed (SIGKILL, power
    loss) are removed first. The final file gets the mode the umask allows (``mkstemp`` alone
    would make it 0600, unreadable by collaborators on a shared filesystem). A write that fails
    for lack of space or permission raises :class:`DataError` naming ``path``.

    Parameters
    ----------
    path : str or Path
        Final destination. Its parent directory is created.

    Yields
    ------
    tmp : Path
        Where the caller writes. It keeps the suffix of ``path`` (some writers, e.g. numpy or
        nibabel, choose the format from it). It is removed if the block raises.
    """
    path = Path(path)
    suffix = ".tmp" + "".join(path.suffixes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*{glob.escape(suffix)}"):
            with contextlib.suppress(OSError):
                stale.unlink()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, DataError) \
                and exc.errno in _WRITE_ERRNOS:
            raise _write_error(path, exc) from exc
        raise


@contextlib.contextmanager
def atomic_write(path, mode="w", **kwargs):
    """Open a temporary sibling of ``path`` for writing and move it into place on success.

    Parameters
    ----------
    path : str or Path
        Final destination.
    mode : str
        ``"w"`` (text) or ``"wb"`` (binary).
    **kwargs
        Passed to :func:`open` (e.g. ``encoding``).
    """
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def save_npz(path, **arrays):
    """Write arrays to a compressed ``.npz`` file atomically."""
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_npz(path):
    """Read an ``.npz`` file into a dict of arrays, with an error that names the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found. Re-run the workflow step that produces it.")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError
        raise DataError(f"{path}: cannot be read as .npz ({exc}). Delete it and re-run "
                        "the workflow step that produces it.") from exc


def write_tsv(path, df: pd.DataFrame):
    """Write a table as tab-separated values atomically (no index, NaN as ``n/a``)."""
    with atomic_write(path) as f:
        df.to_csv(f, sep="\t", index=False, na_rep="n/a")


def read_tsv(path, **kwargs) -> pd.DataFrame:
    """Read a BIDS-style TSV (``n/a`` is missing), with an error that names the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False, **kwargs)


def _read_structured(path, load, errors, kind):
    """``load(file)`` of a text file, with errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    try:
        with open(path, encoding="utf-8") as f:
            return load(f)
    except errors as exc:
        raise DataError(f"{path}: invalid {kind} ({exc}).") from exc


def read_json(path):
    """Read a JSON file, with an error that names the file."""
    return _read_structured(path, json.load, json.JSONDecodeError, "JSON")


def write_json(path, obj, indent=2):
    """Write a JSON file atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent, sort_keys=False)
        f.write("\n")


def read_yaml(path):
    """Read a YAML file, with an error that names the file."""
    import yaml

    return _read_structured(path, yaml.safe_load, yaml.YAMLError, "YAML")


def write_label_gifti(path, labels_hemi, names, colors=None):
    """Write one hemisphere's parcellation as a GIfTI label file, atomically.

    Parameters
    ----------
    path : str or Path
        Destination, e.g. ``...hemi-L_desc-destrieux.label.gii``.
    labels_hemi : array_like int, shape (n_per_hemi,)
        Region ids; ``<= 0`` = unlabelled (written as key 0, named ``???``).
    names : dict[int, str]
        Name of each id (> 0), without hemisphere prefix.
    colors : dict[int, tuple], optional
        RGBA in [0, 1] per id (default: a fixed qualitative palette).
    """
    import nibabel as nib

    lab = np.asarray(labels_hemi).astype(np.int32).ravel()
    lab = np.where(lab > 0, lab, 0).astype(np.int32)
    table = nib.gifti.GiftiLabelTable()
    cmap = _palette()
    entries = [(0, "???", (1.0, 1.0, 1.0, 0.0))]
    for i, k in enumerate(sorted(int(k) for k in names if int(k) > 0)):
        rgba = (colors or {}).get(k, cmap[i % len(cmap)])
        entries.append((k, str(names[k]), tuple(rgba)))
    for k, name, rgba in entries:
        gl = nib.gifti.GiftiLabel(key=k, red=rgba[0], green=rgba[1], blue=rgba[2],
                                  alpha=rgba[3] if len(rgba) > 3 else 1.0)
        gl.label = name
        table.labels.append(gl)
    darray = nib.gifti.GiftiDataArray(lab, intent="NIFTI_INTENT_LABEL", datatype="int32")
    img = nib.gifti.GiftiImage(labeltable=table, darrays=[darray])
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def _palette():
    import matplotlib

    cm = matplotlib.colormaps["tab20"]
    return [tuple(float(c) for c in cm(i)) for i in range(20)]


def write_func_gifti(path, data):
    """Write one hemisphere's time series as a GIfTI func file, atomically.

    Parameters
    ----------
    path : str or Path
        Destination, e.g. ``...hemi-L_desc-clean.func.gii``.
    data : array_like, shape (n_trs, n_per_hemi)
        One data array (float32, gzip-compressed base64) per volume.
    """
    import nibabel as nib

    darrays = [nib.gifti.GiftiDataArray(np.asarray(row, dtype=np.float32),
                                        intent="NIFTI_INTENT_TIME_SERIES",
                                        datatype="NIFTI_TYPE_FLOAT32",
                                        encoding="GIFTI_ENCODING_B64GZ")
               for row in np.asarray(data)]
    img = nib.gifti.GiftiImage(darrays=darrays)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def write_surface_maps(path_L, path_R, maps, names, distances=None):
    """Write score maps as two GIfTI func files (L, R), one named data array per map, atomically,
    each with its JSON sidecar.

    The image and every data array carry ``AnatomicalStructurePrimary`` (``CortexLeft`` /
    ``CortexRight``, from the file name's ``hemi`` entity, else from its position), which
    Connectome Workbench needs to place a map; the sidecar (same name, ``.json``) says what the
    values are (:func:`brainpred.derivatives.map_sidecar`).

    Parameters
    ----------
    path_L, path_R : path
    maps : array_like, shape (n_maps, n_vertices)
        Left hemisphere then right hemisphere along the vertices.
    names : sequence of str, length n_maps
        The ``Name`` metadata of each data array.
    distances : sequence of int, optional
        The forecast distance of each map (default: read from names ending in ``d=<int>``).
    """
    import re

    import nibabel as nib

    maps = np.atleast_2d(np.asarray(maps, dtype=np.float32))
    names = [str(n) for n in names]
    if distances is None:
        found = [re.search(r"d=(-?[0-9]+)$", n) for n in names]
        distances = [int(m.group(1)) for m in found] if found and all(found) else None
    half = maps.shape[1] // 2
    for path, sl, side in ((path_L, slice(0, half), "CortexLeft"),
                           (path_R, slice(half, None), "CortexRight")):
        structure = derivatives.hemisphere_structure(path) or side
        darrays = []
        for m, name in zip(maps, names):
            da = nib.gifti.GiftiDataArray(np.ascontiguousarray(m[sl]),
                                          intent="NIFTI_INTENT_ESTIMATE",
                                          datatype="NIFTI_TYPE_FLOAT32")
            da.meta = nib.gifti.GiftiMetaData({"Name": name,
                                               "AnatomicalStructurePrimary": structure})
            darrays.append(da)
        img = nib.gifti.GiftiImage(
            darrays=darrays,
            meta=nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": structure}))
        with atomic_path(path) as tmp:
            nib.save(img, str(tmp))
        sidecar = derivatives.map_sidecar(path, names, distances=distances)
        sidecar["AnatomicalStructurePrimary"] = structure
        write_json(_sidecar_path(path), sidecar)


def _sidecar_path(path):
    """``x.func.gii`` -> ``x.json`` (the BIDS sidecar of a data file)."""
    path = Path(path)
    return path.with_name(path.name.split(".", 1)[0] + ".json")
