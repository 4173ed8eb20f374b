"""What the stage entry points share: reading checked inputs and the config's settings.

Every reader checks what it loads against its provenance record (:mod:`brainpred.provenance`)
and raises :class:`~brainpred.errors.DataError` naming the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from .. import features, io, lm, mapping, regions, synthetic
from .. import provenance as prov
from ..conditions import Block, Condition
from ..errors import DataError
from ..stats import zscore_columns

__all__ = ["story_of", "load_run_bold", "subject_bold", "load_story_features", "load_story_audio",
           "nuisance_audio",
           "scores_provenance", "SCORES_SHARED", "check_subject_scores", "read_subject_scores",
           "load_ceilings",
           "load_atlas_labels", "atlas_levels", "ground_truth", "ridge_alphas",
           "mapping_kwargs", "ANALYSIS_SHARED", "read_fits", "load_language_model"]


def load_language_model(model_cfg, name=None):
    """The model and tokenizer of ``model`` (or of checkpoint folder ``name``), on its device.

    Parameters
    ----------
    model_cfg : dict
        ``config["model"]`` (``name``, ``seed``, ``device``, ``dtype``).
    name : str, optional
        Load this model (a fine-tuned checkpoint) instead of ``model.name``.

    Returns
    -------
    model, tokenizer
    """
    return lm.load_model(name or model_cfg["name"], seed=model_cfg["seed"],
                               device=model_cfg["device"], dtype=model_cfg["dtype"])


def story_of(path):
    """The story of a ``story-<s>_...`` file name (words table, text, feature cache)."""
    name = Path(path).name
    if not name.startswith("story-") or "_" not in name:
        raise DataError(f"{path}: not a story-<name>_... file; pass the story explicitly.")
    return name[len("story-"):].split("_", 1)[0]


def load_run_bold(path, n_trs, zscore=True, basename=None):
    """One run's cached BOLD (``.npy``), cropped to ``n_trs`` and optionally z-scored over
    all its TRs (see :func:`subject_bold`).

    Parameters
    ----------
    path : path
        The ``.npy`` written by :func:`make_bold_cache`; its JSON sidecar must be beside it.
    n_trs : int
        The run table's length of the run: the sidecar must record the same.
    zscore : bool
    basename : str, optional
        The run the caller loads (default: the file name up to ``_space-`` or the suffix);
        the sidecar must name it.

    Returns
    -------
    Y : ndarray, shape (n_trs, n_vertices), float32

    Raises
    ------
    DataError
        Unreadable cache, missing sidecar, or a sidecar naming another run or length
        (:func:`brainpred.provenance.check_bold`).
    """
    if basename is None:
        basename = Path(path).name.split("_space-")[0].removesuffix(".npy")
    try:
        y = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the BOLD cache ({exc}). Delete it and re-run "
                        "snakemake.") from exc
    prov.check_bold(path, basename, n_trs, shape=y.shape)
    if y.shape[0] < n_trs:
        raise DataError(f"{path}: {y.shape[0]} TRs, the run table expects {n_trs}.")
    y = np.asarray(y[:n_trs], dtype=np.float32)
    return zscore_columns(y) if zscore else y


def subject_bold(runs, bold_paths, zscore=True):
    """Concatenate a subject's cached runs (cropped to the table's n_trs), z-scored per run.

    Parameters
    ----------
    runs : DataFrame
        Kept rows of the subject (``basename``, ``n_trs``).
    bold_paths : dict
        ``basename -> .npy path``.
    zscore : bool
        ``mapping.zscore_runs``: z-score each vertex of each run over **all** its TRs (the
        paper), before and independently of the cross-validation folds, so the test TRs take
        part in their run's mean and scale (measured in ``docs/validation_choices.md``). False:
        raw BOLD (the mapping centres the targets on each fold's training rows).

    Returns
    -------
    Y : ndarray, shape (n_trs_total, n_vertices), float32
    """
    parts = [load_run_bold(bold_paths[basename], int(g["n_trs"].iloc[0]), zscore,
                           basename=basename)
             for basename, g in runs.groupby("basename", sort=False)]
    return np.concatenate(parts)


def load_story_features(feature_paths, stories, words_paths=None, model_cfg=None,
                        kind="features"):
    """Feature caches of the stories of a design, checked against what they were made from.

    Parameters
    ----------
    feature_paths : dict
        ``story -> features .npz``.
    stories : iterable of str
    words_paths : dict, optional
        ``story -> current words table``: each cache's recorded words sha256 must match.
    model_cfg : dict, optional
        ``model`` config: the recorded result-changing settings must match.
    kind : str
        The cache kind recorded by its writer.

    Returns
    -------
    feats : dict
        ``story -> (activations, words)``.
    records : dict
        ``story -> provenance record``.

    Raises
    ------
    DataError
        A cache of another story or words table, made with other settings, without
        provenance, or made with another model than the other stories' caches.
    """
    feats, records = {}, {}
    for story in stories:
        path = feature_paths[story]
        acts, words, meta = features.load_features(path)
        rec = meta.get("provenance")
        prov.check_features(path, rec, story,
                            words_tsv=(words_paths or {}).get(story), model_cfg=model_cfg,
                            kind=kind)
        feats[story], records[story] = (acts, words), rec
    prov.check_consistent([(feature_paths[s], r) for s, r in records.items()],
                          ["model", "model_revision", "model_settings"],
                          what=f"{kind.replace('_', ' ')} cache")
    return feats, records


def load_story_audio(audio_paths):
    """The stories' audio files (:func:`scipy.io.wavfile.read`; a file shared by several
    stories, e.g. slumlordreach, is read once).

    Parameters
    ----------
    audio_paths : dict
        ``story -> .wav path``.

    Returns
    -------
    dict
        ``story -> (waveform ndarray (n_samples,) or (n_samples, n_channels), sample rate)``.

    Raises
    ------
    DataError
        A missing or unreadable file, naming it and the fix.
    """
    by_path, out = {}, {}
    for story, path in audio_paths.items():
        key = str(path)
        if key not in by_path:
            try:
                rate, data = wavfile.read(key, mmap=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot read the audio of story {story} ({exc}); "
                                "restore the file (Narratives stimuli/*_audio.wav) or drop "
                                "audio_envelope from nuisance.") from exc
            by_path[key] = (data, int(rate))
        out[story] = by_path[key]
    return out


def nuisance_audio(config, stories, audio_paths=None):
    """The audio a fit's nuisance blocks need: none unless ``nuisance`` lists
    ``audio_envelope``.

    Parameters
    ----------
    config : dict
        The job's config: ``nuisance`` and, when the rule passes the WAVs that way, ``audio``
        (``story -> .wav path``, put in the fit rules' params by ``paths.smk``).
    stories : iterable of str
    audio_paths : dict, optional
        ``story -> .wav path`` (default: ``config["audio"]``).

    Returns
    -------
    dict
        :func:`load_story_audio` of the stories, or ``{}``.
    """
    if "audio_envelope" not in (config["nuisance"] or []):
        return {}
    paths = audio_paths if audio_paths is not None else config.get("audio") or {}
    missing = sorted(set(stories) - set(paths))
    if missing:
        raise DataError(f"nuisance lists audio_envelope but no audio file was given for "
                        f"stories {missing}; run the fits through the workflow (it passes "
                        "stimuli/<story>_audio.wav) or pass audio_paths.")
    return load_story_audio({s: paths[s] for s in stories})


def scores_provenance(kind, subjects, stories, records, config, **extra):
    """The provenance record of a score file (:func:`brainpred.provenance.scores_record`):
    the model from the feature caches' ``records``, the layer, distances and mapping
    settings from ``config``; the nuisance regressors in ``design`` when there are some."""
    first = next(iter(records.values()), {}) if records else {}
    feat, fc = config["features"], config["forecast"]
    design = {"tr_offset": int(feat["tr_offset"]), "tr_method": feat["tr_method"],
              "width": int(fc["width"])}
    if config.get("nuisance"):      # recorded when set (the paper's files stay as they were)
        design["nuisance"] = list(config["nuisance"])
    return prov.scores_record(
        kind, subjects, stories, model=first.get("model"),
        model_revision=first.get("model_revision"), model_settings=first.get("model_settings"),
        layer=feat["layer"], distances=sorted(int(d) for d in fc["distances"]),
        mapping=config["mapping"], design=design,
        words_sha256={s: r.get("words_sha256") for s, r in sorted(records.items())}, **extra)


#: Provenance fields that must agree between the score files combined by a group step.
SCORES_SHARED = ("model", "model_revision", "model_settings", "layer", "distances", "mapping",
                 "design")


def check_subject_scores(subject_npzs, data):
    """Refuse subject score files without provenance, of another subject than they hold, or
    made from another model, layer, distances or mapping settings than the first file.

    Parameters
    ----------
    subject_npzs : list of path
    data : list of dict
        Their loaded arrays.

    Returns
    -------
    list of dict
        Their provenance records.
    """
    items, seen = [], {}
    for p, d in zip(subject_npzs, data):
        rec = prov.read(p, d)
        subject = str(d["subject"])
        prov.check(p, rec, {"kind": "subject_scores", "subject": subject},
                   what="subject score file")
        prov.check_file_name(p, rec, what="subject score file")
        stem = Path(p).name.split("_")[0]
        if stem.startswith("sub-") and stem != subject:
            raise DataError(f"{p}: this subject score file holds the scores of {subject} (from "
                            f"{rec.get('fit')}), not of {stem}: it was copied from another "
                            f"subject's file; {prov.FIX}.")
        if subject in seen:
            raise DataError(f"{p} and {seen[subject]} both hold the scores of {subject}: one "
                            f"was copied from the other; {prov.FIX}.")
        seen[subject] = p
        items.append((p, rec))
    prov.check_consistent(items, SCORES_SHARED, what="subject score file")
    return [r for _, r in items]


def read_subject_scores(subject_npzs):
    """The subjects' score maps, checked (:func:`check_subject_scores`, same distances).

    Parameters
    ----------
    subject_npzs : list of path
        ``*_desc-scores.npz`` of every subject.

    Returns
    -------
    R : ndarray, shape (S, V), float64
        Brain scores.
    F : ndarray, shape (S, n_d, V), float64
        Forecast scores.
    distances : ndarray of int, shape (n_d,)
    subjects : ndarray of str, shape (S,)
    """
    data = [io.load_npz(p) for p in subject_npzs]
    check_subject_scores(subject_npzs, data)
    distances = data[0]["distances"]
    for p, d in zip(subject_npzs, data):
        if not np.array_equal(d["distances"], distances):
            raise DataError(f"{p}: computed with other forecast distances; re-run snakemake.")
    R = np.stack([d["brain_score"] for d in data]).astype(np.float64)
    F = np.stack([d["forecast_score"] for d in data]).astype(np.float64)
    return R, F, distances, np.array([str(d["subject"]) for d in data])


def load_ceilings(ceiling_npzs, subjects):
    NC = []
    for p, sub in zip(ceiling_npzs, subjects):
        z = io.load_npz(p)
        if str(z["subject"]) != sub:
            raise DataError(f"{p}: noise ceiling of {z['subject']}, expected {sub}.")
        NC.append(z["noise_ceiling"])
    if len(NC) != len(subjects):
        raise DataError(f"{len(NC)} noise ceilings for {len(subjects)} subjects; re-run snakemake.")
    return np.stack(NC).astype(np.float64)


def load_atlas_labels(labels_paths, n_vertices):
    """Atlas labels (V,) and names of both hemispheres, checked against the maps' vertices;
    ``(None, {})`` without an atlas."""
    if not labels_paths:
        return None, {}
    labels, names = regions.load_labels(*labels_paths)
    if len(labels) != n_vertices:
        raise DataError(f"{labels_paths[0]}: {len(labels)} labelled vertices, the score maps "
                        f"have {n_vertices}. Use labels of the same surface (dataset.space).")
    return labels, names


def atlas_levels(labels_paths, surface_paths, config):
    """Region levels (:func:`brainpred.regions.atlas_levels`) of the configured atlas, or None."""
    if not labels_paths:
        return None
    labels, names = regions.load_labels(*labels_paths)
    max_size = int(config["regions"]["split_max_size"] or 0)
    coords = None
    n_per = len(labels) // 2
    if max_size > 0 or any(not isinstance(m, str)
                           for g in regions.DESTRIEUX_KEY_REGIONS.values() for m in g):
        if surface_paths:
            coords = regions.load_coords(surface_paths, n_per_hemi=n_per)
        elif n_per == 10242:
            coords = regions.load_coords(None, n_per_hemi=n_per)
    return regions.atlas_levels(labels, names, coords, max_size=max_size)


def ground_truth(config):
    """The synthetic dataset's planted truth (:mod:`brainpred.synthetic`), or None (real data,
    or a synthetic dataset written without it)."""
    if config["dataset"]["source"] != "synthetic":
        return None
    path = Path(config["dataset"]["root"]) / synthetic.TRUTH_DIR / "ground_truth.json"
    return io.read_json(path) if path.exists() else None


def ridge_alphas(mapping_cfg):
    """Ridge alphas: ``logspace(start, stop, num)`` from ``mapping.alphas``."""
    a = mapping_cfg["alphas"]
    return np.logspace(a["start"], a["stop"], int(a["num"]))


def mapping_kwargs(config, groups):
    """Keyword arguments of :func:`brainpred.mapping.design_scores` from ``mapping``.

    Parameters
    ----------
    config : dict
        The schema-filled config.
    groups : ndarray of int, shape (n_trs,)
        Run index of each TR (used when ``mapping.group_folds_by_story``).
    """
    mc = config["mapping"]
    return dict(
        n_components=int(mc["n_components"]), delays=list(mc["delays"]),
        alphas=ridge_alphas(mc), n_folds=int(mc["n_folds"]),
        groups=groups if mc["group_folds_by_story"] else None,
        inner_cv=mc["inner_cv"], n_inner_folds=int(mc["n_inner_folds"]),
        backend=mapping.resolve_backend(mc["backend"]),
        target_batch=int(mc["target_batch"]), gap_trs=mc["gap_trs"],
        penalty=mc["penalty"], banded_candidates=int(mc["banded_candidates"]),
        banded_seed=int(mc["banded_seed"]))


#: Provenance fields that must agree between the fit files of one analysis.
ANALYSIS_SHARED = ("model", "model_revision", "model_settings", "layer", "distances",
                   "mapping", "design", "settings", "width_distance")


def read_fits(fit_npzs, analysis=None):
    """Per-subject condition scores from the fit files of one analysis.

    Returns
    -------
    conds : list of Condition
    subjects : list of str
        Sorted.
    scores : ndarray, shape (S, n_conditions, V)
    extra : dict
        ``width_distance`` when present.
    """
    conds, per_subject, extra, items, seen = None, {}, {}, [], {}
    for path in fit_npzs:
        z = io.load_npz(path)
        if analysis is not None and str(z["analysis"]) != analysis:
            raise DataError(f"{path}: scores of analysis {z['analysis']}, expected {analysis}.")
        rec = prov.read(path, z)
        prov.check(path, rec, {"kind": "analysis_fit", "analysis": str(z["analysis"]),
                               "subjects": [str(s) for s in z["subjects"]]},
                   what="analysis fit file")
        prov.check_file_name(path, rec, what="analysis fit file")
        items.append((path, rec))
        prov.check_consistent(items, ANALYSIS_SHARED, what="analysis fit file")
        cs = [Condition(**{**c, "blocks": tuple(
            Block(**{**b, "layer": tuple(b["layer"]) if isinstance(b["layer"], list)
                     else b["layer"]}) for b in c["blocks"])})
            for c in json.loads(str(z["conditions_json"]))]
        if conds is None:
            conds = cs
        elif [c.name for c in cs] != [c.name for c in conds]:
            raise DataError(f"{path}: computed with other conditions than {fit_npzs[0]}; "
                            "re-run snakemake.")
        if "width_distance" in z:
            extra["width_distance"] = int(z["width_distance"])
        for s in z["subjects"]:
            if str(s) in per_subject:
                raise DataError(f"{path} and {seen[str(s)]} both hold the scores of {s}: one "
                                f"was copied from the other; {prov.FIX}.")
            per_subject[str(s)], seen[str(s)] = z[f"{s}__scores"], path
    if conds is None:
        raise DataError("no fit file given.")
    subjects = sorted(per_subject)
    return conds, subjects, np.stack([per_subject[s] for s in subjects]).astype(np.float64), extra
