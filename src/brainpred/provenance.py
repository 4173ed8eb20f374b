"""What every cache and result was made from, recorded in the file and checked on reading.

A file that Snakemake considers up to date may still not belong where it lies: another story's
features copied over a story's cache, another run's BOLD, a score file of another model. Each
writer therefore records a *provenance* entry, and each reader compares it with what the job
expects before using the file:

- ``.npz`` files (feature caches, continuations, score files) hold it as a JSON string under the
  key :data:`KEY` (:func:`to_array`, :func:`read`);
- a BOLD cache ``<name>.npy`` has a JSON sidecar ``<name>.json`` (:func:`save_bold`,
  :func:`check_bold`).

A file without provenance (made by an older brainpred, or by hand) is refused like a mismatch:
what it was made from cannot be told. Every refusal is a :class:`~brainpred.errors.DataError`
that names the file, what it was made from, what was expected and the fix (delete the file and
re-run snakemake).

The records are plain dicts; the common fields are ``kind`` (which writer), ``story``,
``words_sha256`` / ``text_sha256`` (sha256 of the words table and model text the features were
computed from), ``model`` (``model.name``), ``model_revision`` (:func:`model_revision`),
``model_settings`` (:func:`model_settings`) and ``brainpred_version``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from . import __version__, io
from .config import RUNTIME_KEYS, defaults, filled
from .errors import DataError
from .lm import TINY_GPT2, TINY_MODELS

__all__ = [
    "KEY",
    "FIX",
    "MODEL_SETTINGS",
    "MAPPING_SETTINGS",
    "brainpred_version",
    "sha256_file",
    "model_settings",
    "mapping_settings",
    "model_revision",
    "record",
    "features_record",
    "scores_record",
    "to_array",
    "read",
    "check",
    "check_features",
    "check_file_name",
    "check_consistent",
    "bold_sidecar_path",
    "save_bold",
    "check_bold",
]

#: Key of the provenance entry in an ``.npz`` file.
KEY = "provenance"

#: ``model.*`` settings that change the activations: every key of the schema's ``model``
#: section but the runtime keys (``batch_size``, ``device``: :data:`brainpred.config.RUNTIME_KEYS`).
MODEL_SETTINGS = tuple(k for k in defaults("model") if k not in RUNTIME_KEYS["model"])

#: ``mapping.*`` keys that change only speed and memory, never a score, besides the runtime keys:
#: ``shared_subjects`` groups subjects who heard the same stimuli into one job.
_MAPPING_SPEED_ONLY = ("shared_subjects",)

#: ``mapping.*`` settings that change the scores: every key of the schema's ``mapping`` section
#: but ``backend``, ``target_batch`` (runtime keys) and ``shared_subjects``.
MAPPING_SETTINGS = tuple(k for k in defaults("mapping")
                         if k not in RUNTIME_KEYS["mapping"] + _MAPPING_SPEED_ONLY)

FIX = "delete it and re-run snakemake"


def brainpred_version() -> str:
    """The installed brainpred version (``importlib.metadata``; the package's
    ``__version__`` when it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version("brainpred")
    except metadata.PackageNotFoundError:
        return __version__


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes; a missing file raises :class:`DataError`."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read to check what a cache was made from "
                        f"({exc.strerror or exc}); re-run snakemake.") from exc
    return h.hexdigest()


def _plain(value):
    """JSON-comparable form of a config value (tuples as lists, numpy scalars as Python)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, range)):
        return str(obj) if isinstance(obj, Path) else list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def model_settings(model_cfg) -> dict:
    """The result-changing ``model.*`` settings (:data:`MODEL_SETTINGS`), schema defaults
    filled in.

    Parameters
    ----------
    model_cfg : dict
        The ``model`` section of the config (keys left out or None: the schema's default).

    Returns
    -------
    dict
        ``name, seed, context_tokens, mode, min_context, dtype``; ``batch_size`` and
        ``device`` are left out, so changing them leaves the recorded settings equal.
    """
    cfg = filled({k: v for k, v in (model_cfg or {}).items() if v is not None}, "model")
    return _plain({k: cfg[k] for k in MODEL_SETTINGS})


def mapping_settings(mapping_cfg) -> dict:
    """The result-changing ``mapping.*`` settings (:data:`MAPPING_SETTINGS`), schema defaults
    filled in."""
    cfg = filled(mapping_cfg, "mapping")
    return _plain({k: cfg[k] for k in MAPPING_SETTINGS})


def model_revision(name, model=None, seed=0) -> str:
    """Which weights ``name`` stood for when a cache was made.

    Parameters
    ----------
    name : str
        ``model.name``.
    model : transformers.PreTrainedModel, optional
        The loaded model: its ``config._commit_hash`` (the HuggingFace commit of a hub model).
    seed : int
        Seed of the offline test model.

    Returns
    -------
    str
        ``"<name> seed <seed>"`` for an offline test model (``lm.TINY_MODELS``); ``"config.json sha256 <hex>"`` for a
        local folder; the HF commit hash when the loaded model knows it; ``"unknown"``
        otherwise.
    """
    if name in TINY_MODELS:
        return f"{name} seed {int(seed or 0)}"
    path = Path(str(name)).expanduser()
    if path.is_dir():
        cfg = path / "config.json"
        return f"config.json sha256 {sha256_file(cfg)}" if cfg.is_file() else \
            "local folder without config.json"
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return str(commit) if commit else "unknown"


def record(kind, **fields) -> dict:
    """A provenance record: ``kind``, the fields (made JSON-plain) and ``brainpred_version``."""
    out = {"kind": str(kind)}
    out.update(_plain(fields))
    out["brainpred_version"] = brainpred_version()
    return out


def features_record(story, words_tsv, text_txt, model_cfg, revision, kind="features",
                    **extra) -> dict:
    """Provenance of a story's feature cache (activations, syntactic activations,
    continuations, fine-tuned features).

    Parameters
    ----------
    story : str
    words_tsv, text_txt : path
        The words table and the model text the cache is computed from (their sha256 are
        recorded).
    model_cfg : dict
        ``model.*`` settings used (:func:`model_settings` keeps those that change results).
    revision : str
        :func:`model_revision`.
    kind : str
        Which cache: ``features``, ``syntactic_activations``, ``continuations``,
        ``finetune_features``.
    **extra
        Other result-changing settings of the writer (e.g. ``syntax``, ``layer``).
    """
    settings = model_settings(model_cfg)
    return record(kind, story=str(story), words_sha256=sha256_file(words_tsv),
                  text_sha256=sha256_file(text_txt), model=settings["name"],
                  model_revision=str(revision), model_settings=settings, **extra)


def scores_record(kind, subjects, stories=(), model=None, model_revision=None,
                  model_settings=None, layer=None, distances=(), mapping=None, **extra) -> dict:
    """Provenance of a score file (``fit_scores``, ``subject_scores``, ``analysis_fit``).

    Parameters
    ----------
    kind : str
    subjects : list of str
        Subjects fitted together.
    stories : list of str
    model, model_revision, model_settings
        From the feature caches the design was built from.
    layer : int
        ``features.layer``.
    distances : list of int
        Forecast distances.
    mapping : dict
        The ``mapping`` config section (:func:`mapping_settings` keeps what changes scores).
    **extra
        E.g. ``design`` (``features.tr_offset``, ``tr_method``, ``forecast.width``),
        ``subject``, ``analysis``.
    """
    return record(kind, subjects=[str(s) for s in subjects],
                  stories=sorted(str(s) for s in stories), model=model,
                  model_revision=model_revision, model_settings=model_settings,
                  layer=None if layer is None else int(layer),
                  distances=[int(d) for d in distances], mapping=mapping_settings(mapping),
                  **extra)


def to_array(rec) -> np.ndarray:
    """A record as the 0-d JSON string array stored under :data:`KEY` in an ``.npz``."""
    return np.array(json.dumps(rec, sort_keys=True, default=_json_default))


def read(path, arrays):
    """The provenance record of a loaded ``.npz`` (``arrays``: dict of its arrays), or None
    when it has none (a legacy file)."""
    if KEY not in arrays:
        return None
    try:
        rec = json.loads(str(arrays[KEY]))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: its provenance entry is not valid JSON ({exc}); {FIX}.") \
            from exc
    if not isinstance(rec, dict):
        raise DataError(f"{path}: its provenance entry is a {type(rec).__name__}, not a "
                        f"record; {FIX}.")
    return rec


def _short(value):
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef"
                                                          for c in value):
        return value[:16]
    return repr(value) if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _describe(rec, keys, other=None):
    """``key value, ...`` of ``rec``; a mapping value shows only the entries that differ
    from ``other``'s."""
    parts = []
    for k in keys:
        v = _plain(rec.get(k, "<missing>"))
        w = _plain((other or {}).get(k))
        if isinstance(v, dict) and isinstance(w, dict):
            v = {sk: v.get(sk, "<missing>") for sk in sorted(set(v) | set(w))
                 if v.get(sk) != w.get(sk)}
        parts.append(f"{k} {_short(v)}")
    return ", ".join(parts)


def check(path, rec, expected, what="file"):
    """Refuse a file whose provenance differs from what the job expects.

    Parameters
    ----------
    path : path
        The file (named in the message).
    rec : dict or None
        Its record (:func:`read`); None (no provenance: an older brainpred) is refused.
    expected : dict
        Fields the record must hold with these values (compared as JSON).
    what : str
        What the file is, for the message (e.g. ``"features cache"``).

    Raises
    ------
    DataError
        Naming the file, what it was made from, what was expected, and the fix.
    """
    expected = _plain(expected)
    if rec is None:
        raise DataError(
            f"{path}: this {what} records no provenance (made by an older brainpred or by "
            f"hand), so it cannot be checked against what this job expects "
            f"({_describe(expected, list(expected))}). It may belong to another story or run: "
            f"{FIX}.")
    bad = [k for k, v in expected.items() if _plain(rec.get(k)) != v]
    if bad:
        raise DataError(
            f"{path}: this {what} was made from {_describe(rec, bad, expected)}, but this job "
            f"expects {_describe(expected, bad, rec)}. The file does not belong here (copied "
            f"from another story or run, or made with other inputs or settings): {FIX}.")


def check_file_name(path, rec, what="file"):
    """Refuse a score file that was written under another name (``rec["file"]``, when
    recorded): e.g. ``fit-001``'s scores copied over ``fit-002``."""
    made = (rec or {}).get("file")
    if made is not None and made != Path(path).name:
        raise DataError(f"{path}: this {what} was written as {made!r}, not {Path(path).name!r}: "
                        f"it was copied from another file; {FIX}.")


def check_features(path, rec, story, words_tsv=None, model_cfg=None, kind="features"):
    """Check a story's feature cache against the story it is loaded for.

    Parameters
    ----------
    path : path
    rec : dict or None
        The cache's record.
    story : str
        The story the job loads it for.
    words_tsv : path, optional
        The story's current words table: its sha256 must equal the recorded one.
    model_cfg : dict, optional
        The ``model`` config the job got: its :func:`model_settings` must equal the recorded
        ones.
    kind : str
        The cache kind (``features``, ``syntactic_activations``, ``continuations``,
        ``finetune_features``).
    """
    expected = {"kind": kind, "story": str(story)}
    if words_tsv is not None:
        expected["words_sha256"] = sha256_file(words_tsv)
    if model_cfg is not None:
        expected["model_settings"] = model_settings(model_cfg)
    check(path, rec, expected, what=f"{kind.replace('_', ' ')} cache")


def check_consistent(items, keys, what="file"):
    """Refuse files made with different values of ``keys`` (e.g. two models in one group).

    Parameters
    ----------
    items : list of (path, dict)
        Files and their records (already checked to be records).
    keys : list of str
    what : str

    Raises
    ------
    DataError
        Naming the first file and the first one that differs, with both values.
    """
    if not items:
        return
    p0, r0 = items[0]
    for p, r in items[1:]:
        bad = [k for k in keys if _plain(r.get(k)) != _plain(r0.get(k))]
        if bad:
            raise DataError(
                f"{p}: this {what} was made from {_describe(r, bad, r0)}, but {p0} from "
                f"{_describe(r0, bad, r)}; they cannot be combined. One of them is stale or "
                f"copied from another run: {FIX} (delete both if unsure).")


# --------------------------------------------------------------------------------------------
# BOLD caches: .npy + JSON sidecar
# --------------------------------------------------------------------------------------------

def bold_sidecar_path(npy_path) -> Path:
    """The JSON sidecar of a BOLD cache: the same name with ``.json`` instead of ``.npy``."""
    return Path(npy_path).with_suffix(".json")


def _source(path):
    st = os.stat(path)
    return {"path": str(path), "size": int(st.st_size), "mtime": float(st.st_mtime)}


def save_bold(npy_path, bold, subject, basename, tr, space=None, sources=(), sidecar=None):
    """Write one run's BOLD cache (``.npy``) and its JSON sidecar, atomically each.

    Parameters
    ----------
    npy_path : path
    bold : ndarray, shape (n_trs, n_vertices)
        Stored as float32.
    subject, basename : str
    tr : float
    space : str, optional
    sources : sequence of path
        The GIfTI files it was read from (their paths, sizes and mtimes are recorded).
    sidecar : path, optional
        Default :func:`bold_sidecar_path`.

    Returns
    -------
    dict
        The sidecar record.
    """
    bold = np.asarray(bold, dtype=np.float32)
    rec = record("bold_cache", subject=str(subject), basename=str(basename),
                 sources=[_source(p) for p in sources], n_trs=int(bold.shape[0]),
                 n_vertices=int(bold.shape[1]) if bold.ndim == 2 else None,
                 tr=float(tr), space=space)
    with io.atomic_path(npy_path) as tmp:
        np.save(tmp, bold)
    io.write_json(sidecar or bold_sidecar_path(npy_path), rec)
    return rec


def check_bold(npy_path, basename, n_trs, shape=None):
    """Refuse a BOLD cache whose sidecar is missing or names another run or length.

    Parameters
    ----------
    npy_path : path
    basename : str
        The run the caller loads it for.
    n_trs : int
        The run table's length of the run.
    shape : tuple, optional
        The array's shape, checked against the sidecar's ``n_trs`` / ``n_vertices``.

    Returns
    -------
    dict
        The sidecar record.
    """
    side = bold_sidecar_path(npy_path)
    expected = {"basename": str(basename), "n_trs": int(n_trs)}
    if not side.is_file():
        raise DataError(
            f"{npy_path}: this BOLD cache has no sidecar {side.name} (made by an older "
            f"brainpred or by hand), so it cannot be checked against run {basename} "
            f"({int(n_trs)} TRs). It may belong to another run: {FIX}.")
    try:
        with open(side, encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"{side}: the sidecar of {npy_path} cannot be read ({exc}); delete "
                        "both and re-run snakemake.") from exc
    if not isinstance(rec, dict):
        raise DataError(f"{side}: the sidecar of {npy_path} is not a JSON object; delete both "
                        "and re-run snakemake.")
    check(npy_path, rec, expected, what=f"BOLD cache (sidecar {side.name})")
    if shape is not None:
        made = {"n_trs": rec.get("n_trs")}
        got = {"n_trs": int(shape[0])}
        if rec.get("n_vertices") is not None and len(shape) > 1:
            made["n_vertices"], got["n_vertices"] = rec["n_vertices"], int(shape[1])
        if made != got:
            raise DataError(
                f"{npy_path}: the array has shape {tuple(shape)}, its sidecar {side.name} "
                f"records {_describe(rec, list(made))}: the .npy was replaced by another "
                f"run's. Delete both and re-run snakemake.")
    return rec
