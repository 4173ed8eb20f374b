"""``results/`` as a BIDS-derivatives dataset: file names, ``dataset_description.json`` and
the JSON sidecar of every surface map.

File names are ``<entity>-<label>_..._<suffix><extension>`` with the entities in
:data:`ENTITIES` order: the BIDS entities first, as the specification orders them (``hemi``
before ``space``, as fMRIPrep's ``sub-01_task-x_hemi-L_space-fsaverage5_bold.func.gii``), then
brainpred's own entities (:data:`CUSTOM_ENTITIES`: ``story``, ``alpha``, ``step``, ``model``,
``layer``, ``fit``) before ``desc``, which BIDS puts last. Labels are letters and digits.
Group-level files, which have no subject, start with the word ``group`` in place of
``sub-<label>`` (BIDS defines no group level). Caches that are not BIDS data (``.npz``,
``.npy``) follow the same order and may end with ``desc-<label>`` and no suffix.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePath

__all__ = ["BIDS_ENTITIES", "CUSTOM_ENTITIES", "ENTITIES", "MAP_DESCRIPTIONS", "parse_name",
           "check_name", "config_hash", "dataset_description", "map_sidecar",
           "hemisphere_structure"]

#: BIDS entities in the order of the specification's entity table (BIDS 1.9)
BIDS_ENTITIES = ("sub", "ses", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc",
                 "stain", "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt", "part",
                 "proc", "hemi", "space", "split", "recording", "chunk", "seg", "res", "den",
                 "label")
#: brainpred's entities: a story, a fine-tuned checkpoint (alpha, step), the model and layer
#: analysed, a fit group; placed after the BIDS entities, before desc
CUSTOM_ENTITIES = ("story", "alpha", "step", "model", "layer", "fit")
#: every entity, in the order a file name must list them
ENTITIES = (*BIDS_ENTITIES, *CUSTOM_ENTITIES, "desc")

_PAIR = re.compile(r"([a-z]+)-([A-Za-z0-9.]+)")
_SUFFIX = re.compile(r"[A-Za-z0-9]+")

#: desc label of a map -> (what each value is, units)
MAP_DESCRIPTIONS = {
    "brainscore": ("Brain score R(X): Pearson r between the BOLD and its cross-validated ridge "
                   "prediction from the language model's activations X", "Pearson r"),
    "brainscorefdr": ("Mean brain score across subjects where its Wilcoxon test passes "
                      "BH-FDR (stats.fdr_q, mean > 0); NaN elsewhere", "Pearson r"),
    "forecastscore": ("Forecast score F(d) = R(X + W_d) - R(X): the brain score gained by "
                      "adding the forecast window W_d of the words d ahead; one data array per "
                      "distance d (words)", "Pearson r difference"),
    "forecastscorefdr": ("Mean forecast score F(d) across subjects where its Wilcoxon test "
                         "passes BH-FDR across vertices (stats.fdr_q, mean > 0); NaN "
                         "elsewhere; one data array per distance d (words)",
                         "Pearson r difference"),
    "dstar": ("Forecast distance d* maximising the mean F(d), shown where stats.dstar_mask "
              "holds", "words"),
    "gain": ("Forecast gain F(d*)/R(X) at the group's d*", "percent"),
    "gainmaxd": ("Maximum over d of the forecast gain F(d)/R(X) (biased upward)", "percent"),
    "kstar": ("Forecast depth k*: the layer whose forecast window F_k(d) is best, where "
              "reliable", "layer index"),
    "bestwidth": ("Window width (words) with the best forecast score, where reliable",
                  "words"),
    "dstarsyntactic": ("Best distance d* of the syntactic forecast windows, where reliable",
                       "words"),
    "dstarsemantic": ("Best distance d* of the semantic forecast windows, where reliable",
                      "words"),
    "finetunegain": ("Brain-score gain of the fine-tuned model over the alpha = 0 control, one "
                     "data array per alpha", "Pearson r difference"),
    "noiseceiling": ("Noise ceiling: Pearson r between the BOLD and its ridge prediction from "
                     "the mean BOLD of the other listeners of the same audio", "Pearson r"),
    "pctceiling": ("Brain score as a percentage of the noise ceiling (where the ceiling "
                   "exceeds noise_ceiling.min_ceiling)", "percent"),
}


def parse_name(name):
    """The entities, suffix and extension of a file name.

    Parameters
    ----------
    name : str or path
        A file name (its folder is ignored).

    Returns
    -------
    entities : list of (str, str)
        ``(key, label)`` in the order of the name (``("group", "")`` for the group prefix).
    suffix : str
        ``""`` when the name ends with an entity.
    extension : str
        From the first dot of the last part (``.func.gii``).

    Raises
    ------
    ValueError
        A part that is neither ``key-label`` nor a final suffix.
    """
    base = PurePath(str(name)).name
    parts = base.split("_")
    last, dot, ext = parts[-1].partition(".")
    parts[-1] = last
    extension = dot + ext
    entities, suffix = [], ""
    for i, part in enumerate(parts):
        m = _PAIR.fullmatch(part)
        if m:
            entities.append((m.group(1), m.group(2)))
        elif i == 0 and part == "group":
            entities.append(("group", ""))
        elif i == len(parts) - 1 and _SUFFIX.fullmatch(part):
            suffix = part
        else:
            raise ValueError(f"{base}: {part!r} is not an entity-label pair or a final suffix")
    return entities, suffix, extension


def check_name(name):
    """Raise ``ValueError`` unless ``name`` lists known entities in :data:`ENTITIES` order,
    each once, with BIDS labels (letters and digits), and a suffix when it is BIDS data
    (GIfTI, TSV, JSON).

    Parameters
    ----------
    name : str or path
    """
    entities, suffix, extension = parse_name(name)
    base = PurePath(str(name)).name
    keys = [k for k, _ in entities if k != "group"]
    unknown = [k for k in keys if k not in ENTITIES]
    if unknown:
        raise ValueError(f"{base}: unknown entities {unknown} (brainpred.derivatives.ENTITIES)")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{base}: an entity is repeated")
    order = [ENTITIES.index(k) for k in keys]
    if order != sorted(order):
        raise ValueError(f"{base}: entities {keys} are not in the BIDS order "
                         f"{[k for k in ENTITIES if k in keys]}")
    for key, label in entities:
        # a label is letters and digits; alpha (a fine-tuning weight such as 0.5) may hold a dot
        if key != "group" and not re.fullmatch(r"[A-Za-z0-9]+" if key != "alpha" else
                                               r"[0-9.]+", label):
            raise ValueError(f"{base}: {key}-{label}: a label is letters and digits only")
    if extension in (".func.gii", ".label.gii", ".tsv", ".json") and not suffix:
        raise ValueError(f"{base}: BIDS data needs a suffix after its entities")


def config_hash(config):
    """sha256 (first 16 hex digits) of a config, keys sorted: the run's settings in one word."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_description(version, config, source_name=None, source_url=None):
    """``dataset_description.json`` of ``results/`` (a BIDS-derivatives dataset).

    Parameters
    ----------
    version : str
        The brainpred version.
    config : dict
        The settings that change results (runtime keys left out): its :func:`config_hash` is
        recorded.
    source_name, source_url : str, optional
        The dataset analysed (``SourceDatasets``).
    """
    source = {"URL": source_url} if source_url else {}
    if source_name:
        source["Name"] = source_name
    return {
        "Name": "brainpred: brain scores and forecast scores of a language model",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "brainpred",
            "Version": str(version),
            "Description": "GPT-2 activations -> cross-validated ridge -> per-vertex brain "
                           "scores and forecast scores F(d) (Caucheteux, Gramfort & King "
                           "2023)",
            "ConfigHash": config_hash(config),
        }],
        "SourceDatasets": [source] if source else [],
        "HowToAcknowledge": "Caucheteux, Gramfort & King (2023), Nature Human Behaviour 7, "
                            "430-441.",
    }


def hemisphere_structure(name):
    """GIfTI ``AnatomicalStructurePrimary`` of a file name's ``hemi`` entity (``CortexLeft``,
    ``CortexRight``), or None without one (or for a name that is not BIDS)."""
    hemi = _entities(name).get("hemi")
    return {"L": "CortexLeft", "R": "CortexRight"}.get(hemi)


def map_sidecar(name, array_names, distances=None):
    """The JSON sidecar of one hemisphere's map file: what its values are.

    Parameters
    ----------
    name : str or path
        The GIfTI file name (its ``desc`` and ``hemi`` entities are read).
    array_names : sequence of str
        The ``Name`` of each data array, in order.
    distances : sequence of int, optional
        The forecast distance d (words) of each data array.
    """
    entities = _entities(name)
    desc = entities.get("desc", "")
    description, units = MAP_DESCRIPTIONS.get(desc, (None, None))
    if description is None:
        description = f"{desc} map (one value per vertex); see the data arrays' names"
    out = {"Description": description, "Units": units or "",
           "Space": entities.get("space", ""),
           "Hemisphere": entities.get("hemi", ""),
           "AnatomicalStructurePrimary": hemisphere_structure(name) or "",
           "DataArrays": list(array_names),
           "MissingValues": "NaN: medial wall, zero-variance or masked vertices"}
    if distances is not None:
        out["Distances"] = [int(d) for d in distances]
        out["DistanceUnits"] = "words"
    return out


def _entities(name):
    """``key -> label`` of a file name; empty for a name that is not BIDS (tests, library
    users writing their own files)."""
    try:
        return dict(parse_name(name)[0])
    except ValueError:
        return {}
