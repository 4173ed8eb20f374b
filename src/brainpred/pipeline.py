"""Stage entry points called by the workflow rules.

Each function reads the inputs of one rule, calls the pure functions of the stage modules
(:mod:`~brainpred.narratives`, :mod:`~brainpred.features`, :mod:`~brainpred.design`,
:mod:`~brainpred.mapping`, :mod:`~brainpred.stats`, :mod:`~brainpred.figures`,
:mod:`~brainpred.report`) and writes the rule's outputs atomically. No science lives here beyond
the wiring; the ``.smk`` files only call these functions (through ``workflow/scripts``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import design, io
from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

WHOLE_CORTEX = "whole cortex"


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------

def make_synthetic_dataset(root, config):
    """Rule ``synthetic_dataset``: write the offline demo dataset under ``root``."""
    from . import synthetic

    synthetic.generate(root, config)


def make_run_table(root, config, out_tsv):
    """Rule ``run_table``: the subject x story table (kept and excluded runs) as TSV.

    Only the runs of the configured subjects and tasks are kept; the other rows stay in the
    table with their reason, so the table explains what the analysis used.
    """
    from . import narratives
    from .workflow import run_basename, run_plan

    ds = config["dataset"]
    table = narratives.build_run_table(root, tasks=ds.get("tasks", "all"),
                                       subjects=ds.get("subjects", "all"), space=ds["space"],
                                       keep_scrambled=ds.get("keep_scrambled", False),
                                       keep_schema=ds.get("keep_schema", False))
    # one row per (run, story): slumlordreach is one run holding two stories
    table = narratives.split_story_rows(table)
    plan = run_plan(config)
    table["run"] = table["run"].fillna("").astype(str)
    table["basename"] = [run_basename(s, t, r) for s, t, r in
                         zip(table["subject"], table["task"], table["run"])]
    # crop the runs of a task to their common length (runs of a task differ by a few TRs),
    # over every subject's kept runs, so that the subject selection changes no run's crop
    crop = narratives.task_crop_lengths(root, tasks=set(table.loc[table["kept"], "task"]),
                                        space=ds["space"],
                                        keep_scrambled=ds.get("keep_scrambled", False),
                                        keep_schema=ds.get("keep_schema", False))
    table["n_trs_file"] = table["n_trs"]
    kept_known = table["kept"] & (table["n_trs"] > 0)
    table.loc[kept_known, "n_trs"] = table.loc[kept_known, "task"].map(crop).astype(int)
    kept = table[table["kept"]]
    got = set(zip(kept["subject"], kept["task"], kept["story"], kept["run"]))
    want = set(zip(plan["subject"], plan["task"], plan["story"], plan["run"]))
    if got != want:
        raise DataError(
            f"{root}: the runs found on disk differ from the workflow's plan "
            f"(missing on disk: {sorted(want - got)[:5]}, not planned: {sorted(got - want)[:5]}). "
            "The dataset changed since the workflow started: run snakemake again.")
    narratives.check_runs_cover_their_stories(root, kept)
    io.write_tsv(out_tsv, table)
    log.info("run table: %d kept runs of %d subjects, %d excluded rows",
             len(kept), kept["subject"].nunique(), int((~table["kept"]).sum()))


def make_story_words(root, story, out_tsv, out_txt):
    """Rule ``story_words``: the word table (file time) and the text the model reads."""
    from . import narratives

    words, text = narratives.story_words(root, story)
    io.write_tsv(out_tsv, words)
    with io.atomic_write(out_txt) as f:
        f.write(text)


def make_story_features(words_tsv, text_txt, model_cfg, out_npz, story=None):
    """Rule ``story_features``: activations of every layer for every word of a story.

    The cache records its provenance (:func:`brainpred.provenance.features_record`): the
    story (``story``, by default read from the ``story-<s>_`` file name of ``words_tsv``), the
    sha256 of ``words_tsv`` and ``text_txt``, the model, its revision and the result-changing
    ``model.*`` settings.
    """
    from . import features
    from . import provenance as prov

    words = io.read_tsv(words_tsv)
    text = Path(text_txt).read_text(encoding="utf-8")
    model, tokenizer = features.load_model(model_cfg["name"], seed=model_cfg.get("seed", 0),
                                           device=model_cfg.get("device", "auto"),
                                           dtype=model_cfg.get("dtype", "float32"))
    acts = features.story_features(words, text, model, tokenizer,
                                   context_tokens=model_cfg.get("context_tokens", 1024),
                                   batch_size=model_cfg.get("batch_size", 8),
                                   mode=model_cfg.get("mode", "exact"),
                                   min_context=model_cfg.get("min_context", 512),
                                   progress=True)
    meta = {k: model_cfg.get(k) for k in ("name", "seed", "context_tokens", "mode",
                                          "min_context", "dtype")}
    rec = prov.features_record(
        story if story is not None else story_of(words_tsv), words_tsv, text_txt, model_cfg,
        prov.model_revision(model_cfg["name"], model, seed=model_cfg.get("seed", 0)))
    features.save_features(out_npz, acts, words, meta, provenance=rec)


def story_of(path):
    """The story of a ``story-<s>_...`` file name (words table, text, feature cache)."""
    name = Path(path).name
    if not name.startswith("story-") or "_" not in name:
        raise DataError(f"{path}: not a story-<name>_... file; pass the story explicitly.")
    return name[len("story-"):].split("_", 1)[0]


def make_bold_cache(gii_left, gii_right, run_table_tsv, basename, out_npy, space=None,
                    out_json=None):
    """Rule ``bold_cache``: one run's BOLD as float32 ``.npy`` (n_trs, n_vertices), L then R.

    The run is cropped to the table's ``n_trs`` (the common length of its task); the vertex
    count is checked against ``space`` and the GIfTI's TR against the sidecar's. A JSON
    sidecar ``out_json`` (default: ``out_npy`` with ``.json``) records the subject, basename,
    both GIfTIs (path, size, mtime), n_trs, TR, space and the brainpred version
    (:func:`brainpred.provenance.save_bold`); :func:`load_run_bold` checks it.
    """
    from . import narratives
    from . import provenance as prov

    table = io.read_tsv(run_table_tsv, dtype={"run": str})
    rows = table[table["kept"] & (table["basename"] == basename)]
    if rows.empty:
        raise DataError(f"{run_table_tsv}: no kept run {basename}; re-run snakemake.")
    n = int(rows["n_trs"].iloc[0])
    bold = narratives.load_bold(gii_left, gii_right, n_trs=n if n > 0 else None, space=space,
                                tr=float(rows["tr"].iloc[0]))
    subject = str(rows["subject"].iloc[0]) if "subject" in rows else basename.split("_")[0]
    prov.save_bold(out_npy, bold, subject, basename, tr=float(rows["tr"].iloc[0]), space=space,
                   sources=(gii_left, gii_right), sidecar=out_json)
    log.info("%s: %d TRs x %d vertices", basename, *bold.shape)


# --------------------------------------------------------------------------------------------
# Scores of one subject
# --------------------------------------------------------------------------------------------

def alphas_from_config(mapping_cfg):
    """Ridge alphas: ``logspace(start, stop, num)`` from ``mapping.alphas``."""
    a = mapping_cfg.get("alphas", {}) or {}
    return np.logspace(a.get("start", -1), a.get("stop", 8), int(a.get("num", 10)))


def subject_design(runs, story_features, layer, distances, width=7, tr_offset=1,
                   tr_method="sum"):
    """Design matrices of one subject: X and the forecast windows, on the TR grid of its runs.

    Parameters
    ----------
    runs : DataFrame
        The subject's kept rows of the run table, in analysis order, with ``basename``,
        ``story``, ``audio_onset``, ``tr``, ``n_trs``. A run holding several stories has one row
        per story; their words are placed on the same TR grid.
    story_features : dict
        ``story -> (activations (n_layers + 1, n_words, D), words DataFrame)``.
    layer : int
        Layer of X and of the windows.
    distances : sequence of int
        Forecast distances d.
    width : int
        Words per forecast window.
    tr_offset : int
        TR index convention (see :func:`brainpred.design.tr_indices`).
    tr_method : {"sum", "mean", "lanczos"}

    Returns
    -------
    X : ndarray, shape (n_trs_total, D)
    windows : dict
        ``d -> ndarray (n_trs_total, D * width)``.
    segment_lengths : list of int
        TRs of each run, in order.
    groups : ndarray of int, shape (n_trs_total,)
        Run index of each TR (for folds grouped by story).
    """
    from .analyses import Block, WordSources, block_design

    n_layers = next(iter(story_features.values()))[0].shape[0] if story_features else 0
    if layer >= n_layers:
        raise ConfigError(f"features.layer = {layer}: the model has only {n_layers - 1} "
                          f"layers (0..{n_layers - 1}).")
    sources = WordSources({s: w for s, (_, w) in story_features.items()},
                          {s: a for s, (a, _) in story_features.items()})
    blocks = [Block("acts", layer)] + [Block("acts", layer, int(d), width) for d in distances]
    arrays, lengths, groups = block_design(runs, sources, blocks, tr_offset=tr_offset,
                                           tr_method=tr_method)
    return arrays[0], dict(zip(distances, arrays[1:])), lengths, groups


def zscore_columns(Y):
    """Z-score each column over time; constant or NaN columns become NaN.

    Parameters
    ----------
    Y : ndarray, shape (n_trs, n_vertices)

    Returns
    -------
    Z : ndarray, shape (n_trs, n_vertices), float32
    """
    Y = np.asarray(Y, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = Y.mean(0)
        std = Y.std(0)
        Z = (Y - mean) / std
    Z[:, ~(std > 1e-8 * (np.abs(mean) + 1))] = np.nan
    return Z.astype(np.float32)


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
    from . import provenance as prov

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


def fit_groups(plan, max_subjects):
    """Subjects who heard the same stimulus sequence, in fits of at most ``max_subjects``.

    Parameters
    ----------
    plan : DataFrame
        The run plan (``subject``, ``task``, ``story``, ``basename``), in analysis order.
    max_subjects : int
        Largest number of subjects fitted in one call (``mapping.shared_subjects``; 1 = one
        subject per fit).

    Returns
    -------
    dict
        ``"fit-001" -> [subject, ...]``, subjects sorted, fits ordered by their first subject.
        Subjects share a fit only when their ordered (task, story) sequences are equal; the fit
        job checks that their designs are identical.
    """
    keys = {}
    for subject, g in plan.groupby("subject", sort=True):
        keys.setdefault(tuple(zip(g["task"], g["story"])), []).append(subject)
    chunks = []
    for subjects in keys.values():
        for i in range(0, len(subjects), max(1, int(max_subjects))):
            chunks.append(subjects[i:i + max(1, int(max_subjects))])
    chunks.sort(key=lambda c: c[0])
    return {f"fit-{i + 1:03d}": c for i, c in enumerate(chunks)}


def _mapping_kwargs(config, groups):
    from . import mapping

    mc = config["mapping"]
    return dict(
        n_components=int(mc.get("n_components", 20)), delays=list(mc.get("delays", range(6))),
        alphas=alphas_from_config(mc), n_folds=int(mc.get("n_folds", 5)),
        groups=groups if mc.get("group_folds_by_story", False) else None,
        inner_cv=mc.get("inner_cv", "contiguous"), n_inner_folds=int(mc.get("n_inner_folds", 5)),
        backend=mapping.resolve_backend(mc.get("backend", "auto")),
        target_batch=int(mc.get("target_batch", 20000)), gap_trs=mc.get("gap_trs", 0))


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
    from . import features
    from . import provenance as prov

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


def scores_provenance(kind, subjects, stories, records, config, **extra):
    """The provenance record of a score file (:func:`brainpred.provenance.scores_record`):
    the model from the feature caches' ``records``, the layer, distances and mapping
    settings from ``config``."""
    from . import provenance as prov

    first = next(iter(records.values()), {}) if records else {}
    feat, fc = config.get("features", {}) or {}, config.get("forecast", {}) or {}
    return prov.scores_record(
        kind, subjects, stories, model=first.get("model"),
        model_revision=first.get("model_revision"), model_settings=first.get("model_settings"),
        layer=feat.get("layer"), distances=sorted(int(d) for d in fc.get("distances", [])),
        mapping=config.get("mapping"),
        design={"tr_offset": int(feat.get("tr_offset", 1)),
                "tr_method": feat.get("tr_method", "sum"), "width": int(fc.get("width", 7))},
        words_sha256={s: r.get("words_sha256") for s, r in sorted(records.items())}, **extra)


def make_fit_scores(subjects, run_table_tsv, feature_paths, bold_paths, config, out_npz,
                    words_paths=None):
    """Rule ``fit_scores``: brain and forecast scores of subjects who share a stimulus.

    The design (X and the forecast windows) is built once; subjects whose design is identical
    are fitted in one call of :func:`brainpred.mapping.forecast_scores_shared` (their vertices
    stacked as targets, so the fold decompositions and PCAs are computed once); a subject whose
    design differs (e.g. another audio onset) is fitted on its own.

    Parameters
    ----------
    subjects : list of str
    run_table_tsv : path
    feature_paths : dict
        ``story -> features .npz``.
    bold_paths : dict
        ``basename -> BOLD .npy`` for the runs of every subject.
    config : dict
        ``features``, ``forecast``, ``mapping`` and, when present, ``model`` (the feature
        caches' recorded model settings are then checked against it).
    out_npz : path
        Written with ``distances`` and, per subject, ``<subject>__brain_score`` (V,) and
        ``<subject>__forecast_brain_score`` (n_d, V), and ``provenance``
        (:func:`scores_provenance`).
    words_paths : dict, optional
        ``story -> words table``: the feature caches' recorded words sha256 are checked
        against them (without: only the recorded story, kind and model consistency).
    """
    from . import mapping
    from . import provenance as prov

    table = io.read_tsv(run_table_tsv, dtype={"run": str})
    fc, mc, feat = config["forecast"], config["mapping"], config["features"]
    distances = sorted(int(d) for d in fc["distances"])
    kept = table[table["kept"] & table["subject"].isin(list(subjects))]
    story_feats, records = load_story_features(feature_paths, list(pd.unique(kept["story"])),
                                               words_paths=words_paths,
                                               model_cfg=config.get("model"))
    designs = []     # [(X, windows, lengths, groups, [subjects])]
    for subject in subjects:
        runs = table[table["kept"] & (table["subject"] == subject)]
        if runs.empty:
            raise DataError(f"{run_table_tsv}: no kept run for {subject}.")
        X, windows, lengths, groups = subject_design(
            runs, story_feats, int(feat["layer"]), distances, width=int(fc.get("width", 7)),
            tr_offset=int(feat.get("tr_offset", 1)), tr_method=feat.get("tr_method", "sum"))
        for d in designs:
            if d[2] == lengths and np.array_equal(d[0], X) and all(
                    np.array_equal(d[1][k], windows[k]) for k in distances):
                d[4].append(subject)
                break
        else:
            designs.append((X, windows, lengths, groups, [subject]))
    out = {"distances": np.array(distances), "subjects": np.array(list(subjects)),
           prov.KEY: prov.to_array(scores_provenance("fit_scores", subjects, list(records),
                                                     records, config,
                                                     file=Path(out_npz).name))}
    for X, windows, lengths, groups, members in designs:
        Y_list = []
        for subject in members:
            runs = table[table["kept"] & (table["subject"] == subject)]
            Y = subject_bold(runs, bold_paths, zscore=mc.get("zscore_runs", True))
            if Y.shape[0] != X.shape[0]:
                raise DataError(f"{subject}: BOLD has {Y.shape[0]} TRs, the design "
                                f"{X.shape[0]}.")
            Y_list.append(Y)
        log.info("%s: %d TRs, %d vertices each, %d distances, fitted together",
                 ", ".join(members), X.shape[0], Y_list[0].shape[1], len(distances))
        results = mapping.forecast_scores_shared(X, windows, Y_list, lengths,
                                                 **_mapping_kwargs(config, groups))
        for subject, (R_X, R_XW) in zip(members, results):
            out[f"{subject}__brain_score"] = np.asarray(R_X, np.float32)
            out[f"{subject}__forecast_brain_score"] = np.asarray(R_XW, np.float32)
        del Y_list
    io.save_npz(out_npz, **out)


def make_subject_scores(subject, fit_npz, outputs, labels_paths=None):
    """Rule ``subject_scores``: one subject's score maps (npz, GIfTI) and region table.

    Parameters
    ----------
    subject : str
    fit_npz : path
        Output of :func:`make_fit_scores` holding this subject.
    outputs : dict
        ``npz``, ``brain_L``, ``brain_R``, ``forecast_L``, ``forecast_R``, ``regions`` paths.
    labels_paths : (path, path) or None
        Region labels of the left and right hemispheres.
    """
    from . import provenance as prov

    fit = io.load_npz(fit_npz)
    rec = prov.read(fit_npz, fit)
    prov.check(fit_npz, rec, {"kind": "fit_scores"}, what="fit score file")
    prov.check_file_name(fit_npz, rec, what="fit score file")
    if subject not in rec.get("subjects", []):
        raise DataError(f"{fit_npz}: this fit score file was made for subjects "
                        f"{rec.get('subjects')}, not {subject}: {prov.FIX}.")
    key = f"{subject}__brain_score"
    if key not in fit:
        raise DataError(f"{fit_npz}: holds no scores of {subject}; re-run snakemake.")
    distances = [int(d) for d in fit["distances"]]
    if distances != rec.get("distances"):
        raise DataError(f"{fit_npz}: distances {distances}, its provenance records "
                        f"{rec.get('distances')}: {prov.FIX}.")
    R_X, R_XW = fit[key], fit[f"{subject}__forecast_brain_score"]
    F = (R_XW - R_X[None]).astype(np.float32)
    mine = {**rec, "kind": "subject_scores", "subject": subject, "fit": Path(fit_npz).name,
            "file": Path(outputs["npz"]).name, "brainpred_version": prov.brainpred_version()}
    io.save_npz(outputs["npz"], subject=np.array(subject), distances=np.array(distances),
                brain_score=R_X, forecast_brain_score=R_XW, forecast_score=F,
                **{prov.KEY: prov.to_array(mine)})
    write_surface_maps(outputs["brain_L"], outputs["brain_R"], R_X[None], ["brain score"])
    write_surface_maps(outputs["forecast_L"], outputs["forecast_R"], F,
                       [f"forecast score d={d}" for d in distances])
    regions = region_table(R_X, F, distances, labels_paths)
    regions.insert(0, "subject", subject)
    io.write_tsv(outputs["regions"], regions)


def write_surface_maps(path_L, path_R, maps, names):
    """Write maps (n_maps, n_vertices) as two GIfTI func files (L, R), one data array per map."""
    import nibabel as nib

    maps = np.atleast_2d(np.asarray(maps, dtype=np.float32))
    half = maps.shape[1] // 2
    for path, sl in ((path_L, slice(0, half)), (path_R, slice(half, None))):
        darrays = []
        for m, name in zip(maps, names):
            da = nib.gifti.GiftiDataArray(np.ascontiguousarray(m[sl]),
                                          intent="NIFTI_INTENT_ESTIMATE",
                                          datatype="NIFTI_TYPE_FLOAT32")
            da.meta = nib.gifti.GiftiMetaData({"Name": name})
            darrays.append(da)
        with io.atomic_path(path) as tmp:
            nib.save(nib.gifti.GiftiImage(darrays=darrays), str(tmp))


def _labels(labels_paths, n_vertices):
    from . import regions

    if not labels_paths:
        return None, {}
    labels, names = regions.load_labels(*labels_paths)
    if len(labels) != n_vertices:
        raise DataError(f"{labels_paths[0]}: {len(labels)} labelled vertices, the score maps "
                        f"have {n_vertices}. Use labels of the same surface (dataset.space).")
    return labels, names


def region_table(R_X, F, distances, labels_paths):
    """Tidy table of region means: ``region, measure, distance, value``.

    ``measure`` is ``brainscore`` (distance NaN) or ``forecastscore``; the region
    ``whole cortex`` averages every vertex with a score.
    """
    from . import regions

    labels, names = _labels(labels_paths, len(R_X))
    rows = []

    def add(region, values_bs, values_f):
        rows.append((region, "brainscore", np.nan, float(values_bs)))
        for d, v in zip(distances, values_f):
            rows.append((region, "forecastscore", float(d), float(v)))

    with np.errstate(invalid="ignore"), _quiet_nanmean():
        add(WHOLE_CORTEX, np.nanmean(R_X), np.nanmean(F, axis=1))
    if labels is not None:
        for lab, nam in ((labels, names), regions.bilateral_labels(labels, names)):
            bs = regions.region_means(R_X, lab, nam)
            fs = regions.region_means(F, lab, nam, dims=["distance"],
                                      coords={"distance": list(distances)})
            for region in bs["region"]:
                vf = fs[fs["region"] == region].sort_values("distance")["value"].to_numpy()
                add(region, bs.loc[bs["region"] == region, "value"].iloc[0], vf)
    return pd.DataFrame(rows, columns=["region", "measure", "distance", "value"])


class _quiet_nanmean:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


# --------------------------------------------------------------------------------------------
# Group
# --------------------------------------------------------------------------------------------

def group_maps(subject_npzs, config, ceiling_npzs=()):
    """Group statistics of the subjects' score maps (method.md section 7).

    Parameters
    ----------
    subject_npzs : list of path
        ``*_desc-scores.npz`` of every subject (``brain_score`` (V,), ``forecast_score``
        (n_d, V), ``distances``).
    config : dict
        Workflow configuration (``stats``, ``noise_ceiling``).
    ceiling_npzs : list of path, optional
        ``*_desc-noiseceiling.npz`` of the same subjects, in the same order.

    Returns
    -------
    dict of ndarray
        ``brain_score`` (V,) mean across subjects, ``brain_low``/``brain_high`` its CI,
        ``brain_p``/``brain_q`` two-sided Wilcoxon p and BH-adjusted p (across vertices),
        ``brain_reject`` (q <= stats.fdr_q and mean > 0), ``brain_score_fdr`` the mean where
        ``brain_reject`` (NaN elsewhere);
        ``forecast_score`` (n_d, V) mean F(d), ``forecast_low``/``forecast_high`` CI,
        ``forecast_p``/``forecast_q`` Wilcoxon and BH (across vertices, per distance);
        ``diff_p``/``diff_q`` for F(d1) - F(d0) (``stats.dstar_reference``), ``dstar_mask``
        (V,) bool (``stats.dstar_mask``), ``dstar`` (V,) argmax_d of the mean F(d) where the
        mask holds (NaN elsewhere), ``dstar_all`` unmasked, ``dstar_subjects`` (S, V) each
        subject's argmax; ``gain_dstar`` the group's d* (``stats.gain_distance``: the best
        distance of the subjects' F(d) averaged over ``gain_mask`` (V,), the vertices with a
        reliable brain score, or a fixed distance), ``gain_subjects`` (S,) each subject's
        ``100 * F_s(d*) / R_s`` over that mask (with ``gain_R_subjects`` (S,),
        ``gain_F_subjects`` (S, n_d)), ``gain_mean`` and ``gain_ci`` (2,) across subjects;
        ``gain`` (V,) ``100 * mean F(d*) / mean R(X)`` per vertex and ``gain_maxd`` (V,)
        ``100 * max_d mean F(d) / mean R(X)`` (biased upward: each vertex's best distance),
        NaN where the mean brain score is <= 0; ``distances``; ``subjects``; with ceilings also
        ``noise_ceiling`` (V,) mean, ``ceiling_low``/``ceiling_high``, ``ceiling_p``/``ceiling_q``
        and ``percent_ceiling`` (V,) ``100 * mean R(X) / mean ceiling`` where the mean ceiling is
        above ``noise_ceiling.min_ceiling``.
    """
    from . import stats
    from .noise_ceiling import percent_of_ceiling

    data = [io.load_npz(p) for p in subject_npzs]
    check_subject_scores(subject_npzs, data)
    distances = data[0]["distances"]
    for p, d in zip(subject_npzs, data):
        if not np.array_equal(d["distances"], distances):
            raise DataError(f"{p}: computed with other forecast distances; re-run snakemake.")
    R = np.stack([d["brain_score"] for d in data])            # (S, V)
    F = np.stack([d["forecast_score"] for d in data])         # (S, n_d, V)
    subjects = np.array([str(d["subject"]) for d in data])
    sc = config.get("stats", {}) or {}
    level, q = float(sc.get("ci", 0.95)), float(sc.get("fdr_q", 0.01))
    with _quiet_nanmean():
        bs_mean, bs_low, bs_high = stats.mean_ci(R, level=level)
        f_mean, f_low, f_high = stats.mean_ci(F, level=level)
        _, bs_p = stats.wilcoxon_test(R)
        bs_reject, bs_q = stats.fdr_bh(bs_p, q=q)
        bs_reject = bs_reject & (np.nan_to_num(bs_mean) > 0)
        _, f_p = stats.wilcoxon_test(F)
        f_q = np.stack([stats.fdr_bh(row, q=q)[1] for row in f_p])
        d0, d1 = (int(x) for x in sc["dstar_reference"])
        for d in (d0, d1):
            if d not in set(distances.tolist()):
                raise ConfigError(f"stats.dstar_reference = {[d0, d1]}: {d} is not in "
                                  f"forecast.distances {distances.tolist()}.")
        i0 = int(np.flatnonzero(distances == d0)[0])
        i1 = int(np.flatnonzero(distances == d1)[0])
        diff = F[:, i1] - F[:, i0]
        _, diff_p = stats.wilcoxon_test(diff)
        diff_reject, diff_q = stats.fdr_bh(diff_p, q=q)
        diff_mean, diff_low, _ = stats.mean_ci(diff, level=level)
        mode = sc["dstar_mask"]
        if mode == "fdr":
            mask = np.asarray(diff_reject, bool) & (diff_mean > 0)
        elif mode == "ci":
            mask = np.nan_to_num(diff_low, nan=-np.inf) > 0
        elif mode == "ci_best":
            # language-responsive vertices (brain-score CI above 0) where the best window
            # improves the prediction (CI of F(d*) above 0); uncorrected, for small samples
            best_idx = np.nanargmax(np.where(np.isnan(f_mean), -np.inf, f_mean), axis=0)
            best_low = np.take_along_axis(f_low, best_idx[None], axis=0)[0]
            mask = (np.nan_to_num(best_low, nan=-np.inf) > 0) & \
                (np.nan_to_num(bs_low, nan=-np.inf) > 0)
        else:
            mask = np.isfinite(diff_mean)
        dstar_all = stats.best_distance(f_mean, distances)
        dstar = np.where(mask, dstar_all, np.nan)
        dstar_subjects = np.stack([stats.best_distance(f, distances) for f in F])
        # per-vertex max over d of the group-mean F: each vertex's luckiest distance, biased
        # upward; kept only as the "gainmaxd" map, never reported as the gain
        best = np.nanmax(np.where(np.isnan(f_mean), -np.inf, f_mean), axis=0)
        best[~np.isfinite(best)] = np.nan
        gain_maxd = stats.relative_gain(best, bs_mean)
        # the paper's gain: one d* for the group, F_s(d*) / R_s per subject over the vertices
        # with a reliable brain score (same criterion family as stats.dstar_mask)
        responsive = _responsive_vertices(mode, bs_reject, bs_low, bs_mean)
        fg = stats.forecast_gain(R, F, distances, responsive, distance=sc["gain_distance"],
                                 level=level)
        if np.isfinite(fg["dstar"]):
            i_star = int(np.flatnonzero(distances == fg["dstar"])[0])
            gain = stats.relative_gain(f_mean[i_star], bs_mean)
        else:
            gain = np.full_like(bs_mean, np.nan)
    out = {"brain_score": bs_mean, "brain_low": bs_low, "brain_high": bs_high,
           "brain_p": bs_p, "brain_q": bs_q, "brain_reject": bs_reject,
           "brain_score_fdr": np.where(bs_reject, bs_mean, np.nan),
           "forecast_score": f_mean, "forecast_low": f_low, "forecast_high": f_high,
           "forecast_p": f_p, "forecast_q": f_q,
           "dstar": dstar, "dstar_all": dstar_all, "dstar_mask": mask,
           "dstar_subjects": dstar_subjects, "gain": gain, "gain_maxd": gain_maxd,
           "gain_dstar": np.float64(fg["dstar"]), "gain_mask": responsive,
           "gain_subjects": fg["gain_subjects"], "gain_R_subjects": fg["R_subjects"],
           "gain_F_subjects": fg["F_subjects"], "gain_mean": np.float64(fg["mean"]),
           "gain_ci": np.array([fg["ci_low"], fg["ci_high"]]),
           "diff_p": diff_p, "diff_q": diff_q,
           "distances": distances, "subjects": subjects}
    if ceiling_npzs:
        NC = _load_ceilings(ceiling_npzs, subjects)
        min_c = float((config.get("noise_ceiling", {}) or {}).get("min_ceiling", 0.05))
        with _quiet_nanmean():
            c_mean, c_low, c_high = stats.mean_ci(NC, level=level)
            _, c_p = stats.wilcoxon_test(NC)
            _, c_q = stats.fdr_bh(c_p, q=q)
        out.update(noise_ceiling=c_mean, ceiling_low=c_low, ceiling_high=c_high,
                   ceiling_p=c_p, ceiling_q=c_q,
                   percent_ceiling=percent_of_ceiling(bs_mean, c_mean, min_c))
    return out


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
    from . import provenance as prov

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


def _responsive_vertices(mode, reject, low, mean):
    """Vertices whose group brain score is reliable, by the ``stats.dstar_mask`` family:
    ``fdr``: FDR-significant and positive; ``ci``/``ci_best``: CI above 0; ``none``: all."""
    if mode == "fdr":
        return np.asarray(reject, bool)
    if mode in ("ci", "ci_best"):
        return np.nan_to_num(low, nan=-np.inf) > 0
    return np.isfinite(mean)


def _load_ceilings(ceiling_npzs, subjects):
    NC = []
    for p, sub in zip(ceiling_npzs, subjects):
        z = io.load_npz(p)
        if str(z["subject"]) != sub:
            raise DataError(f"{p}: noise ceiling of {z['subject']}, expected {sub}.")
        NC.append(z["noise_ceiling"])
    if len(NC) != len(subjects):
        raise DataError(f"{len(NC)} noise ceilings for {len(subjects)} subjects; re-run snakemake.")
    return np.stack(NC).astype(np.float64)


def atlas_from_config(labels_paths, surface_paths, config):
    """Region levels (:func:`brainpred.regions.atlas_levels`) of the configured atlas, or None."""
    from . import regions

    if not labels_paths:
        return None
    labels, names = regions.load_labels(*labels_paths)
    rc = config.get("regions", {}) or {}
    max_size = int(rc.get("split_max_size", 500) or 0)
    coords = None
    n_per = len(labels) // 2
    if max_size > 0 or any(not isinstance(m, str)
                           for g in regions.DESTRIEUX_KEY_REGIONS.values() for m in g):
        if surface_paths:
            coords = regions.load_coords(surface_paths, n_per_hemi=n_per)
        elif n_per == 10242:
            coords = regions.load_coords(None, n_per_hemi=n_per)
    return regions.atlas_levels(labels, names, coords, max_size=max_size)


def group_region_tables(R, F, distances, subjects, levels, NC=None, config=None):
    """Region tables of every score: one row per subject (tidy) and group statistics.

    Parameters
    ----------
    R : ndarray (S, V)
        Brain scores. F : ndarray (S, n_d, V) forecast scores. NC : ndarray (S, V) or None
        noise ceilings.
    distances : array (n_d,)
    subjects : array (S,)
    levels : dict or None
        ``level -> (labels, names)`` (:func:`atlas_from_config`); None = whole cortex only.
    config : dict
        ``stats`` (ci, fdr_q) and ``noise_ceiling.min_ceiling``.

    Returns
    -------
    scores : DataFrame
        ``subject, level, region, measure, distance, value``; ``level`` is ``whole``,
        ``parcel`` (split atlas, per hemisphere), ``bilateral`` or ``key``; ``measure`` is
        ``brainscore``, ``forecastscore`` (one row per distance), ``noiseceiling`` and
        ``brainscore_pct_ceiling`` (100 x region-mean brain score / region-mean ceiling, NaN
        where the ceiling is <= noise_ceiling.min_ceiling); distance is NaN but for F(d).
    group : DataFrame
        ``level, region, measure, distance, n, mean, ci_low, ci_high, p, q``: mean across
        subjects, CI, two-sided Wilcoxon p, BH q across the regions of a level (per measure
        and distance).
    """
    from . import regions
    from .noise_ceiling import percent_of_ceiling

    config = config or {}
    min_c = float((config.get("noise_ceiling", {}) or {}).get("min_ceiling", 0.05))
    distances = np.asarray(distances)
    frames = []
    for s, sub in enumerate(subjects):
        maps = [R[s][None], F[s]] + ([NC[s][None]] if NC is not None else [])
        M = np.concatenate(maps)                              # (n_maps, V)
        measure = (["brainscore"] + ["forecastscore"] * len(distances)
                   + (["noiseceiling"] if NC is not None else []))
        dist = ([np.nan] + [float(d) for d in distances]
                + ([np.nan] if NC is not None else []))
        parts = []
        with _quiet_nanmean():
            whole = np.nanmean(M, axis=1)
        parts.append(pd.DataFrame({"level": "whole", "region": WHOLE_CORTEX,
                                   "map": np.arange(len(M)), "value": whole}))
        for level, (lab, nam) in (levels or {}).items():
            t = regions.region_means(M, lab, nam, dims=["map"], value_name="value")
            t.insert(0, "level", level)
            parts.append(t[["level", "region", "map", "value"]])
        t = pd.concat(parts, ignore_index=True)
        t["measure"] = np.asarray(measure, dtype=object)[t["map"]]
        t["distance"] = np.asarray(dist)[t["map"]]
        if NC is not None:
            bs = t[t["measure"] == "brainscore"].set_index(["level", "region"])["value"]
            nc = t[t["measure"] == "noiseceiling"].set_index(["level", "region"])["value"]
            pct = pd.DataFrame({"level": [i[0] for i in bs.index],
                                "region": [i[1] for i in bs.index],
                                "measure": "brainscore_pct_ceiling", "distance": np.nan,
                                "value": percent_of_ceiling(bs.to_numpy(),
                                                            nc.reindex(bs.index).to_numpy(),
                                                            min_c)})
            t = pd.concat([t, pct], ignore_index=True)
        t.insert(0, "subject", sub)
        frames.append(t[["subject", "level", "region", "measure", "distance", "value"]])
    scores = pd.concat(frames, ignore_index=True)
    group = tidy_group_stats(scores, ["level", "region", "measure", "distance"], "distance",
                             list(pd.unique(scores["subject"])), config)
    return scores, group


def tidy_group_stats(scores, keys, x, subjects, config):
    """Group statistics of a tidy per-subject table: one row per ``keys`` combination.

    Parameters
    ----------
    scores : DataFrame
        ``subject``, the ``keys`` columns and ``value``.
    keys : list of str
        Columns identifying a measured quantity; must include ``level``, ``region`` and ``x``.
    x : str
        The key column that may be NaN (distance, layer...).
    subjects : list of str
        Column order of the subjects.
    config : dict
        ``stats`` (``ci``, ``fdr_q``).

    Returns
    -------
    DataFrame
        ``keys, n, mean, ci_low, ci_high, p, q``: mean across subjects, Student-t CI,
        two-sided Wilcoxon p, and BH q across the regions of a level (per combination of the
        other keys).
    """
    from . import stats

    sc = (config or {}).get("stats", {}) or {}
    ci, q = float(sc.get("ci", 0.95)), float(sc.get("fdr_q", 0.01))
    nan_x = -1e9                                              # NaN as a sortable key
    tmp = scores.assign(**{x: scores[x].fillna(nan_x)})
    wide = tmp.groupby(keys + ["subject"], sort=False)["value"].first().unstack("subject")
    wide = wide.reindex(columns=list(subjects))
    vals = wide.to_numpy(dtype=float).T                       # (S, rows)
    with _quiet_nanmean():
        mean, low, high = stats.mean_ci(vals, level=ci)
        _, p = stats.wilcoxon_test(vals)
    group = wide.index.to_frame(index=False)
    group[x] = group[x].where(group[x] != nan_x, np.nan)
    group["n"] = np.isfinite(vals).sum(0)
    group["mean"], group["ci_low"], group["ci_high"], group["p"] = mean, low, high, p
    group["q"] = np.nan
    fdr_keys = [k for k in keys if k != "region"]
    for _, idx in group.groupby(fdr_keys, dropna=False).groups.items():
        group.loc[idx, "q"] = stats.fdr_bh(group.loc[idx, "p"].to_numpy(), q=q)[1]
    return group


def make_group(subject_npzs, config, outputs, ceiling_npzs=(), labels_paths=None,
               surface_paths=None):
    """Rule ``group``: group maps (npz + GIfTI) and region tables of every score.

    Parameters
    ----------
    subject_npzs : list of path
    config : dict
    outputs : dict
        ``npz``, ``regions`` (tidy per-subject region table), ``regions_stats`` (group
        statistics per region) and GIfTI pairs ``<name>_L``/``<name>_R`` for ``brain``,
        ``brain_fdr``, ``dstar``, ``gain`` and, with noise ceilings, ``ceiling`` and
        ``pct_ceiling`` (any pair missing from ``outputs`` is not written).
    ceiling_npzs : list of path
        Noise ceilings of the same subjects (empty: no ceiling).
    labels_paths, surface_paths : (path, path) or None
        Atlas and surfaces (:func:`atlas_from_config`).
    """
    g = group_maps(subject_npzs, config, ceiling_npzs=list(ceiling_npzs or ()))
    io.save_npz(outputs["npz"], **g)
    maps = {"brain": (g["brain_score"], "mean brain score"),
            "brain_fdr": (g["brain_score_fdr"], "mean brain score, FDR-significant vertices"),
            "dstar": (g["dstar"], "forecast distance d*"),
            "gain": (g["gain"], f"forecast gain at d* = {g['gain_dstar']:g} (%)"),
            "gain_maxd": (g["gain_maxd"], "max over d of the forecast gain (%), biased upward")}
    if "noise_ceiling" in g:
        maps["ceiling"] = (g["noise_ceiling"], "mean noise ceiling")
        maps["pct_ceiling"] = (g["percent_ceiling"], "brain score (% of noise ceiling)")
    for key, (values, name) in maps.items():
        if f"{key}_L" in outputs:
            write_surface_maps(outputs[f"{key}_L"], outputs[f"{key}_R"], values[None], [name])
    data = [io.load_npz(p) for p in subject_npzs]
    R = np.stack([d["brain_score"] for d in data]).astype(np.float64)
    F = np.stack([d["forecast_score"] for d in data]).astype(np.float64)
    NC = _load_ceilings(ceiling_npzs, g["subjects"]) if ceiling_npzs else None
    levels = atlas_from_config(labels_paths, surface_paths, config)
    if levels is not None and len(levels["parcel"][0]) != R.shape[1]:
        raise DataError(f"{labels_paths[0]}: {len(levels['parcel'][0])} labelled vertices, the "
                        f"score maps have {R.shape[1]}. Use labels of the same surface "
                        "(dataset.space).")
    scores, group = group_region_tables(R, F, g["distances"], g["subjects"], levels, NC, config)
    io.write_tsv(outputs["regions"], scores)
    if "regions_stats" in outputs:
        io.write_tsv(outputs["regions_stats"], group)
    n_mask = int(np.sum(g["dstar_mask"]))
    log.info("group: %d subjects; peak mean brain score %.3f; %d FDR-significant vertices; "
             "d* shown on %d vertices", len(g["subjects"]), float(np.nanmax(g["brain_score"])),
             int(np.sum(g["brain_reject"])), n_mask)
    if "noise_ceiling" in g:
        log.info("group: peak mean noise ceiling %.3f", float(np.nanmax(g["noise_ceiling"])))


# --------------------------------------------------------------------------------------------
# Figures and report
# --------------------------------------------------------------------------------------------

def _truth(config):
    if config["dataset"]["source"] != "synthetic":
        return None
    from .synthetic import TRUTH_DIR

    path = Path(config["dataset"]["root"]) / TRUTH_DIR / "ground_truth.json"
    return io.read_json(path) if path.exists() else None


def make_figures(group_npz, regions_tsv, config, outputs):
    """Rule ``figures``: the report's PNG figures."""
    from . import figures
    from .analyses import curve_regions, one_level

    synthetic = config["dataset"]["source"] == "synthetic"
    g = io.load_npz(group_npz)
    truth = _truth(config)
    n = len(g["subjects"])
    figures.plot_surface(g["brain_score"], outputs["brain"],
                         title=f"Brain score R(X), mean of {n} subjects (Pearson r)",
                         synthetic=synthetic, cmap="hot", vmin=0)
    if "ceiling" in outputs:
        if "noise_ceiling" not in g:
            raise DataError(f"{group_npz}: no noise ceiling; re-run snakemake with "
                            "noise_ceiling.enabled true.")
        figures.plot_surface(g["noise_ceiling"], outputs["ceiling"],
                             title=f"Noise ceiling (Pearson r), mean of {n} subjects",
                             synthetic=synthetic, cmap="hot", vmin=0, cbar_label="r")
    figures.plot_surface(g["dstar"], outputs["dstar"],
                         title="Forecast distance d* (words), mask: stats.dstar_mask = "
                               f"{config['stats']['dstar_mask']}",
                         synthetic=synthetic, cmap="viridis",
                         vmin=float(np.min(g["distances"])), vmax=float(np.max(g["distances"])))
    figures.plot_surface(g["gain"], outputs["gain"],
                         title=f"Forecast gain F(d*) / R(X) at the group's d* = "
                               f"{float(g['gain_dstar']):g} (%)", synthetic=synthetic,
                         cmap="cold_hot", symmetric=True)
    table = io.read_tsv(regions_tsv)
    curves = table[table["measure"] == "forecastscore"].rename(columns={"value": "F"})
    curves = one_level(curves, ["distance"])
    regions = curve_regions(curves, config)
    figures.plot_forecast_curves(curves, outputs["curves"], synthetic=synthetic,
                                 regions=regions,
                                 true_distance=truth["window_distances"] if truth else None)
    dstar = _region_dstar(curves, regions)
    peak = curves.groupby(["region", "distance"])["F"].mean().groupby("region").max()
    focus = max(regions, key=lambda r: peak.get(r, -np.inf))
    figures.plot_distribution(dstar[focus], outputs["distribution"],
                              title=f"Per-subject d* (argmax of F(d)) in {focus}",
                              synthetic=synthetic,
                              true_value=truth["distances"].get(focus) if truth else None)


def _region_dstar(curves, regions):
    """Per-subject d* of each region from the tidy F(d) table."""
    out = {}
    for region in regions:
        sub = curves[curves["region"] == region].dropna(subset=["F"])
        best = sub.loc[sub.groupby("subject")["F"].idxmax()]
        out[region] = best["distance"].to_numpy()
    return out


def make_report(figure_paths, captions, config, out_html, tables=(), config_file=None,
                summary=None):
    """Rule ``report``: a self-contained HTML report of the figures.

    Parameters
    ----------
    figure_paths, captions : list
    config : dict
        ``dataset`` and ``report`` sections at least.
    out_html : path
    tables : list of (tsv_path, caption)
    config_file : path, optional
        The effective config (rule ``effective_config``), shown in full in the report.
    summary : (tsv_path, caption), optional
        The paper comparison table, the report's first section.
    """
    from . import report

    synthetic = config["dataset"]["source"] == "synthetic"
    shown, name = config, "Configuration"
    if config_file is not None:
        shown = io.read_yaml(config_file)
        name = f"Effective configuration ({Path(config_file).name})"
    report.write_report(out_html, list(zip(figure_paths, captions)), shown,
                        synthetic=synthetic, title=config["report"]["title"],
                        tables=list(tables), summary=summary, config_name=name)


def make_paper_comparison(group_npz, scores_tsv, stats_tsv, analysis_tsvs, config, out_tsv):
    """Rule ``paper_comparison``: the paper's summary table from the group outputs.

    Parameters
    ----------
    group_npz, scores_tsv, stats_tsv : path
        Group maps, per-subject region scores and region statistics of the main analysis.
    analysis_tsvs : dict
        ``analysis -> per-subject region table`` of the analyses that ran.
    config : dict
        The effective config.
    out_tsv : path
        ``results/tables/desc-paper_comparison.tsv`` (:data:`brainpred.comparison.COLUMNS`).
    """
    from . import comparison

    table = comparison.paper_comparison(
        io.load_npz(group_npz), io.read_tsv(scores_tsv), io.read_tsv(stats_tsv), config,
        analyses={a: io.read_tsv(p) for a, p in analysis_tsvs.items()})
    io.write_tsv(out_tsv, table)
    for row in table.itertuples():
        log.info("paper comparison: %s = %s (paper: %s) %s", row.quantity,
                 f"{row.value:.4g} [{row.ci_low:.4g}, {row.ci_high:.4g}]"
                 if row.status == "computed" else "-", row.paper,
                 "" if row.status == "computed" else row.status)
    return table


PAPER_COMPARISON_CAPTION = (
    "The paper's summary figures (Caucheteux, Gramfort & King 2023; method.md section 8) beside "
    "this run's, each computed from the run's group outputs with its uncertainty across "
    "subjects, the number of subjects, the regions (report.paper_regions) and the settings "
    "used; a row whose analysis is off says so. Definitions: brainpred.comparison.")


FIGURE_CAPTIONS = {
    "brain": "Brain score R(X): Pearson r between measured BOLD and the cross-validated ridge "
             "prediction from the model's activations (configured layer, 20 PCA components, "
             "6 FIR delays), mean across subjects; lateral and medial views, both hemispheres. "
             "The map restricted to FDR-significant vertices (two-sided Wilcoxon across "
             "subjects, Benjamini-Hochberg at stats.fdr_q) is the desc-brainscorefdr GIfTI.",
    "ceiling": "Noise ceiling: per subject, the mean BOLD of the other subjects who heard the "
               "same audio (all its conditions pooled, e.g. both prettymouth contexts; the "
               "milkyway versions are different audio), at the same vertex with the same FIR "
               "delays, predicts the subject's BOLD (ridge, contiguous folds, Pearson r, as the "
               "brain score); mean across subjects. The brain score as % of the ceiling is the "
               "desc-pctceiling GIfTI and the brainscore_pct_ceiling rows of the region tables.",
    "curves": "Forecast score F(d) = R(X + W_d) - R(X) per region as a function of the forecast "
              "distance d (words): mean across subjects with the 95% CI across subjects. The "
              "dashed line marks the planted distance when the data are synthetic.",
    "dstar": "Forecast distance d*: the d maximising the group mean F(d) per vertex, shown where "
             "the configured test passes (stats.dstar_mask: fdr or ci = F(d1) - F(d0) with "
             "stats.dstar_reference; ci_best = brain score and F(d*) both reliably above 0).",
    "gain": "Forecast gain F(d*) / R(X) in percent, per vertex, at the group's forecast "
            "distance d* (stats.gain_distance: the best d of the subjects' F(d) averaged over "
            "the vertices with a reliable brain score, or a set distance; paper: d* = 8). The "
            "reported gain (paper comparison table) is each subject's F_s(d*) / R_s over those "
            "vertices, mean and 95% CI across subjects. The per-vertex maximum over d, biased "
            "upward, is only the desc-gainmaxd GIfTI.",
    "distribution": "Per-subject forecast distance d* (argmax of the subject's region-mean F(d)) "
                    "in the key region with the largest forecast score.",
}


# --------------------------------------------------------------------------------------------
# Noise ceiling
# --------------------------------------------------------------------------------------------

def make_listener_sums(task, run_table_tsv, bold_paths, config, out_npz, out_tsv=None):
    """Rule ``listener_sums``: the sum of every listener's BOLD of one task, per audio file.

    The listeners of one audio are pooled whatever their condition (the prettymouth, merlin,
    sherlock, notthefallintact and shapes conditions play the same audio; the milkyway versions
    are different audio files): :func:`brainpred.noise_ceiling.listener_sums`. Each run is read
    once; the per-subject noise ceilings then subtract their own run from the sum instead of
    re-reading every other listener (a cost quadratic in the listeners of an audio).

    Parameters
    ----------
    task : str
    run_table_tsv : path
    bold_paths : dict
        ``basename -> BOLD .npy`` of every kept run of the task.
    config : dict
        ``mapping.zscore_runs``.
    out_npz : path
    out_tsv : path, optional
        :func:`brainpred.noise_ceiling.listener_table` of the task: one row per (task, audio,
        condition) with ``n_condition``, ``n_listeners`` (pooled over the audio's conditions),
        ``n_trs``, ``audio_onset``, ``tr``.
    """
    from . import noise_ceiling as nc

    table = io.read_tsv(run_table_tsv, dtype={"run": str})
    runs = nc.runs_frame(table)
    runs = runs[runs["task"] == task]
    if runs.empty:
        raise DataError(f"{run_table_tsv}: no kept run of task {task}.")
    listeners = nc.listener_table(runs)      # checks the TR grid before any BOLD is read
    zscore = config["mapping"].get("zscore_runs", True)
    sums = nc.listener_sums(runs, lambda b, n: load_run_bold(bold_paths[b], n, zscore,
                                                             basename=b))
    for key, (_, _, members) in sums.items():
        conds = sorted(set(members["condition"]) - {""})
        log.info("%s (task %s): summed %d listeners%s", key[1], key[0], len(members),
                 f" of conditions {', '.join(conds)}" if conds else "")
    nc.save_listener_sums(out_npz, sums)
    if out_tsv is not None:
        io.write_tsv(out_tsv, listeners)


def make_noise_ceiling(subject, run_table_tsv, bold_paths, config, outputs, sums_paths=None):
    """Rule ``noise_ceiling``: how well the mean BOLD of the other listeners of the same audio
    predicts this subject.

    Parameters
    ----------
    subject : str
    run_table_tsv : path
    bold_paths : dict
        ``basename -> BOLD .npy``: the subject's runs (with ``sums_paths``), or its runs and
        every other kept run of the same audio files (without).
    config : dict
        ``mapping`` (delays, alphas, folds, z-scoring) and ``noise_ceiling`` (``batch``).
    outputs : dict
        ``npz`` (``subject``, ``noise_ceiling`` (V,) and, per run used, ``basenames``,
        ``audio``, ``n_listeners`` (listeners of the run's audio, all its conditions, the
        subject included) and ``n_others`` (= ``n_listeners - 1``, averaged)), ``ceiling_L``,
        ``ceiling_R`` (GIfTI).
    sums_paths : list of path, optional
        :func:`make_listener_sums` files of the subject's tasks: the others' mean is the sum
        minus the subject's run.

    Notes
    -----
    See :mod:`brainpred.noise_ceiling`: per vertex, the others' mean at that vertex (with the
    encoding model's FIR delays) predicts the subject's BOLD by ridge, alpha by inner CV, on the
    same contiguous outer folds; the score is the mean test Pearson r. The others are every other
    listener of the run's audio file, whatever their condition. Runs whose audio nobody else
    heard are left out; a subject sharing no audio with anyone gets an all-NaN ceiling.
    """
    from . import noise_ceiling as nc

    table = io.read_tsv(run_table_tsv, dtype={"run": str})
    runs = nc.runs_frame(table)
    mine = runs[runs["subject"] == subject]
    if mine.empty:
        raise DataError(f"{run_table_tsv}: no kept run for {subject}.")
    runs = runs[runs["task"].isin(set(mine["task"]))]
    mc = config["mapping"]
    zscore = mc.get("zscore_runs", True)

    def load(basename, n):
        return load_run_bold(bold_paths[basename], n, zscore, basename=basename)

    sums = nc.load_listener_sums(sums_paths) if sums_paths else None
    Y, P, lengths, n_others, used = nc.other_subjects_mean(subject, runs, load, sums=sums,
                                                            return_runs=True)
    if Y is None:
        first = mine.iloc[0]
        n_vertices = load(first["basename"], int(first["n_trs"])).shape[1]
        r = np.full(n_vertices, np.nan, dtype=np.float32)
        log.warning("%s: no other subject heard the same audio; noise ceiling is NaN", subject)
    else:
        groups = np.repeat(np.arange(len(lengths)), lengths)
        r = nc.ceiling_scores(
            P, Y, lengths, delays=list(mc.get("delays", range(6))),
            alphas=alphas_from_config(mc), n_folds=int(mc.get("n_folds", 5)),
            groups=groups if mc.get("group_folds_by_story", False) else None,
            n_inner_folds=int(mc.get("n_inner_folds", 5)),
            batch=int((config.get("noise_ceiling", {}) or {}).get("batch", 4096)),
            gap_trs=int(mc["gap_trs"]))
        log.info("%s: noise ceiling from %s other listeners of %s, %d TRs; peak r %.3f",
                 subject, n_others, list(used["audio"]), Y.shape[0],
                 float(np.nanmax(r)) if np.isfinite(r).any() else np.nan)
    io.save_npz(outputs["npz"], subject=np.array(subject), noise_ceiling=r,
                n_others=np.array(n_others, dtype=np.int64),
                n_listeners=used["n_listeners"].to_numpy(dtype=np.int64),
                audio=used["audio"].to_numpy(dtype=str),
                basenames=used["basename"].to_numpy(dtype=str))
    write_surface_maps(outputs["ceiling_L"], outputs["ceiling_R"], r[None], ["noise ceiling"])
