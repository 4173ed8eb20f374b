"""Offline demo dataset shaped exactly like Narratives, with planted brain responses.

:func:`generate` writes a small dataset in the layout of the Narratives DataLad release
(``participants.tsv``, ``sub-*/func/*_events.tsv`` and ``*_bold.json``, ``code/scan_exclude.json``,
``stimuli/gentle/<story>/align.csv`` and ``transcript.txt``, and
``derivatives/afni-nosmooth/sub-*/func/*_space-fsaverage5_hemi-{L,R}_desc-clean.func.gii``), so
the workflow reads it through exactly the same code path as a real Narratives copy.

The stories are procedurally generated English (the generator's own grammar and vocabulary),
spoken at about 2.5 words/s with pauses, with the quirks of the real Gentle alignments: ``<unk>``
dictionary words, rows with empty times, music before speech and a different audio onset per
story. The BOLD signal holds these planted, HRF-shaped effects, in both hemispheres:

- ``auditory`` patch: the word rate (number of words per TR);
- ``temporal`` patch: a projection of the current words' language-model activations;
- ``frontal`` patch: a projection of a *forecast window* of the activations of the future words
  ``n + d_true - width + 1 .. n + d_true`` (plus a weaker current-word response);
- ``psts`` patch (posterior superior temporal sulcus): the same forecast window, read from
  another layer, ``synthetic.depth_layer`` (a planted forecast *depth*: the layer sweep finds
  it shallower than the frontal patch, driven by ``synthetic.layer``);
- ``syntactic`` and ``semantic`` patches (with ``synthetic.plant_syntax``): forecast windows at
  ``d_syntactic`` and ``d_semantic`` of the syntactic part X_syn of the activations (mean over
  alternative futures with the same syntax, :mod:`brainpred.syntax`, with the workflow's
  ``syntax`` settings) and of the semantic part X - X_syn.

The word-level features are the activations of the configured (seeded) model at
``synthetic.layer``, computed with :mod:`brainpred.features` from the files written here and read
back with :mod:`brainpred.narratives`, and put on the TR grid with :mod:`brainpred.design`: the
planted effects use the pipeline's own timing conventions, so a correct pipeline recovers them.
The ground truth (patch vertices, ``d_true``, amplitudes) is written to
``derivatives/synthetic-truth/``. Everything is seeded: the same configuration gives the same
files, byte for byte.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import design
from .errors import ConfigError
from .io import atomic_path, atomic_write, write_json, write_tsv

log = logging.getLogger(__name__)

TRUTH_DIR = "derivatives/synthetic-truth"
PATCHES = ("auditory", "temporal", "frontal", "psts", "syntactic", "semantic")
# Patch centres on the fsaverage5 pial surface of the left hemisphere (mm); the right hemisphere
# uses the mirror image (x -> -x). Roughly Heschl's gyrus, anterior STS, IFG, posterior STS,
# middle superior temporal gyrus and angular gyrus.
PATCH_CENTRES = {"auditory": (-45.0, -22.0, 8.0), "temporal": (-56.0, -8.0, -16.0),
                 "frontal": (-48.0, 26.0, 8.0), "psts": (-54.0, -44.0, 10.0),
                 "syntactic": (-62.0, -30.0, -5.0), "semantic": (-45.0, -65.0, 30.0)}
PATCH_LABELS = {"other": 0, "auditory": 1, "temporal": 2, "frontal": 3, "psts": 4,
                "syntactic": 5, "semantic": 6}
STORY_NAMES = ("lighthouse", "orchard", "harbor", "glacier", "market", "comet", "meadow", "canyon")
# audio onset (s) of the first events.tsv row, and music before speech (s), per story index.
AUDIO_ONSETS = (0.0, 3.0, 4.5, 12.0, 0.0, 3.0, 4.5, 12.0)
MUSIC_DURATIONS = (13.0, 0.0, 8.0, 6.0, 10.0, 0.0, 5.0, 7.0)
TR = 1.5

DEFAULTS = {
    "seed": 0,
    "n_subjects": 8,
    "n_stories": 3,
    "stories_per_subject": 2,
    "speech_duration": 150.0,
    "words_per_second": 2.5,
    "d_true": 8,
    "width": 7,
    "layer": 8,
    "depth_layer": 0,
    "patch_radius": 10.0,
    "noise": 1.0,
    "plant_syntax": True,
    "d_syntactic": 8,
    "d_semantic": 22,
    "amplitudes": {"auditory": 0.8, "temporal": 0.8, "frontal": 1.5, "psts": 1.5,
                   "syntactic": 1.5, "semantic": 1.5},
    "frontal_current": 0.2,
    "unk_rate": 0.03,
    "missing_time_rate": 0.01,
}

# --------------------------------------------------------------------------------------------
# Text: a small English grammar
# --------------------------------------------------------------------------------------------

_LEX = {
    "Det": ["the", "a", "that", "every", "her", "his", "our", "one"],
    "Adj": ["old", "quiet", "bright", "cold", "little", "strange", "heavy", "gentle", "broken",
            "golden", "narrow", "empty", "distant", "wooden", "silver", "tired", "careful",
            "sudden", "green", "dark", "warm", "hollow", "patient", "crooked", "half-empty",
            "well-known", "old-fashioned"],
    "N": ["keeper", "door", "boat", "window", "letter", "storm", "garden", "river", "lantern",
          "child", "stranger", "road", "bridge", "song", "island", "key", "mountain", "village",
          "painter", "sailor", "clock", "harbor", "field", "teacher", "map", "fire", "wall",
          "house", "mirror", "horse", "market", "tower", "forest", "coat", "voice", "morning"],
    "Name": ["Mara", "Tobias", "Elena", "Jonah", "Ruth", "Felix", "Ines", "Abel"],
    "Vt": ["opened", "found", "carried", "watched", "painted", "followed", "remembered",
           "repaired", "lost", "crossed", "heard", "built", "hid", "noticed", "sold", "kept"],
    "Vi": ["waited", "laughed", "slept", "listened", "returned", "disappeared", "sang",
           "wandered", "shivered", "smiled", "hesitated", "stopped"],
    "Adv": ["slowly", "quietly", "again", "suddenly", "carefully", "never", "always", "today",
            "outside", "together", "finally", "once"],
    "P": ["near", "behind", "under", "across", "beside", "toward", "inside", "past"],
    "Conj": ["and", "but", "because", "so", "while", "until"],
    "Say": ["said", "whispered", "asked", "thought", "explained"],
    "Num": ["two", "three", "seven", "12", "1921", "40", "nine", "91st"],
    "Pron": ["she", "he", "they", "I", "we"],
    "Contr": ["didn't", "couldn't", "wouldn't", "don't", "can't"],
}


def _choice(rng, key):
    words = _LEX[key]
    return words[rng.integers(len(words))]


def _noun_phrase(rng):
    r = rng.random()
    if r < 0.2:
        return [_choice(rng, "Name")]
    if r < 0.3:
        return [_choice(rng, "Num"), _choice(rng, "N") + "s"]
    np_ = [_choice(rng, "Det")]
    if rng.random() < 0.5:
        np_.append(_choice(rng, "Adj"))
    np_.append(_choice(rng, "N"))
    if np_[0] == "a" and np_[1][0] in "aeiou":
        np_[0] = "an"
    return np_


def _clause(rng):
    r = rng.random()
    if r < 0.45:
        words = _noun_phrase(rng) + [_choice(rng, "Vt")] + _noun_phrase(rng)
    elif r < 0.7:
        words = _noun_phrase(rng) + [_choice(rng, "Vi"), _choice(rng, "Adv")]
    elif r < 0.85:
        words = _noun_phrase(rng) + [_choice(rng, "Vi"), _choice(rng, "P")] + _noun_phrase(rng)
    else:
        words = [_choice(rng, "Name"), _choice(rng, "Say"), _choice(rng, "Pron"),
                 _choice(rng, "Contr"), "know", "why"]
    if rng.random() < 0.25:
        words += [_choice(rng, "P")] + _noun_phrase(rng)
    return words


def _sentence(rng):
    """One sentence as a list of chunks (words with their punctuation attached)."""
    words = _clause(rng)
    if rng.random() < 0.35:
        words = words + [","] + [_choice(rng, "Conj")] + _clause(rng)
    if rng.random() < 0.1:
        words = ['"' + words[0]] + words[1:] + [",", '"', "she", _choice(rng, "Say")]
    words[0] = words[0][0].upper() + words[0][1:] if words[0][0] != '"' else \
        '"' + words[0][1].upper() + words[0][2:]
    end = "?" if rng.random() < 0.1 else "."
    chunks = []
    for w in words:
        if w == "," and chunks:
            chunks[-1] += ","
        elif w == '"' and chunks:
            chunks[-1] += '"'
        else:
            chunks.append(w)
    chunks[-1] += end
    return chunks


def _bare(chunk):
    """Words of a chunk as Gentle writes them (punctuation stripped, hyphens split)."""
    out = []
    for part in chunk.split("-"):
        w = part.strip('",.?!;:')
        if w:
            out.append(w)
    return out


def make_story(rng, speech_duration, words_per_second, speech_start):
    """Generate a story: its punctuated transcript and its word timing (file time).

    Parameters
    ----------
    rng : numpy.random.Generator
    speech_duration : float
        Approximate duration of the speech (s).
    words_per_second : float
        Mean speech rate, pauses included.
    speech_start : float
        File time (s) of the first word (after the intro music).

    Returns
    -------
    transcript : str
        Punctuated text, one paragraph.
    words : DataFrame
        Columns ``word`` (as Gentle writes it), ``start``, ``end`` (file time, s).
    """
    chunks, rows = [], []
    t = speech_start
    # word durations and gaps calibrated so that the mean rate is words_per_second
    mean_step = 1.0 / words_per_second
    while t < speech_start + speech_duration:
        sentence = _sentence(rng)
        for chunk in sentence:
            chunks.append(chunk)
            for w in _bare(chunk):
                dur = max(0.12, rng.normal(0.62, 0.15) * mean_step + 0.02 * len(w))
                rows.append((w, t, t + dur))
                t += dur + rng.exponential(0.12 * mean_step)
        t += rng.uniform(0.3, 0.9)  # pause between sentences
    words = pd.DataFrame(rows, columns=["word", "start", "end"])
    # rescale to the requested rate
    n = len(words)
    scale = (n / words_per_second) / (words["end"].iloc[-1] - speech_start)
    words[["start", "end"]] = speech_start + (words[["start", "end"]] - speech_start) * scale
    return " ".join(chunks) + "\n", words


# --------------------------------------------------------------------------------------------
# Study design
# --------------------------------------------------------------------------------------------

def _settings(cfg):
    """Merge the ``synthetic`` section of a config with the defaults and check it."""
    syn = dict(DEFAULTS)
    syn.update((cfg or {}).get("synthetic", {}) or {})
    syn["amplitudes"] = {**DEFAULTS["amplitudes"], **(syn.get("amplitudes") or {})}
    if not 1 <= syn["n_stories"] <= len(STORY_NAMES):
        raise ConfigError(f"synthetic.n_stories = {syn['n_stories']}: must be between 1 and "
                          f"{len(STORY_NAMES)}.")
    if not 1 <= syn["stories_per_subject"] <= syn["n_stories"]:
        raise ConfigError("synthetic.stories_per_subject must be between 1 and "
                          "synthetic.n_stories.")
    if syn["n_subjects"] < 2:
        raise ConfigError("synthetic.n_subjects must be at least 2.")
    return syn


def plan(cfg) -> pd.DataFrame:
    """The runs the synthetic dataset holds, without writing anything.

    Subject ``i`` hears ``stories_per_subject`` consecutive stories starting at story
    ``i mod n_stories``, so not all subjects hear the same stories. The last subject also hears a
    repeated run of its first story that ``code/scan_exclude.json`` excludes.

    Parameters
    ----------
    cfg : dict
        The workflow configuration (its ``synthetic`` section is used).

    Returns
    -------
    runs : DataFrame
        One row per run: ``subject``, ``task``, ``story``, ``run``, ``audio_onset``, ``n_trs``,
        ``excluded`` (bool).
    """
    syn = _settings(cfg)
    stories = STORY_NAMES[: syn["n_stories"]]
    rows = []
    for i in range(syn["n_subjects"]):
        sub = f"sub-{i + 1:03d}"
        heard = [stories[(i + k) % len(stories)] for k in range(syn["stories_per_subject"])]
        for story in heard:
            rows.append((sub, story, ""))
        if i == syn["n_subjects"] - 1:
            # a second, excluded run of the first story (like the real scan_exclude.json)
            rows[-len(heard)] = (sub, heard[0], "1")
            rows.append((sub, heard[0], "2"))
    out = []
    for sub, story, run in rows:
        k = STORY_NAMES.index(story)
        excluded = run == "2"
        out.append({"subject": sub, "task": story, "story": story, "run": run,
                    "audio_onset": AUDIO_ONSETS[k], "n_trs": _n_trs(syn, k),
                    "excluded": excluded})
    return pd.DataFrame(out)


def _n_trs(syn, k):
    audio = MUSIC_DURATIONS[k] + 1.0 + syn["speech_duration"] + 2.0
    return int(math.ceil((AUDIO_ONSETS[k] + audio + 12.0) / TR))


def _basename(sub, task, run):
    return f"{sub}_task-{task}" + (f"_run-{run}" if run else "")


# --------------------------------------------------------------------------------------------
# Surface
# --------------------------------------------------------------------------------------------

def surface_layout(radius=10.0):
    """Patch and medial-wall vertices on fsaverage5 (L then R, 20,484 vertices).

    Parameters
    ----------
    radius : float
        Patch radius (mm, Euclidean on the pial surface).

    Returns
    -------
    labels : ndarray of int, shape (20484,)
        ``PATCH_LABELS`` codes (0 elsewhere).
    medial : ndarray of bool, shape (20484,)
        Approximate medial wall (set to NaN in the BOLD).
    coords : ndarray, shape (20484, 3)
        Pial coordinates (mm).
    """
    from nilearn import datasets

    mesh = datasets.load_fsaverage("fsaverage5")["pial"]
    labels, medial, coords = [], [], []
    for hemi, sign in (("left", 1.0), ("right", -1.0)):
        c = np.asarray(mesh.parts[hemi].coordinates, dtype=float)
        lab = np.zeros(len(c), dtype=np.int32)
        for name, centre in PATCH_CENTRES.items():
            ctr = np.array(centre) * np.array([sign, 1.0, 1.0])
            lab[np.linalg.norm(c - ctr, axis=1) < radius] = PATCH_LABELS[name]
        x = c[:, 0] * sign
        mw = (x > -10) & (c[:, 1] > -40) & (c[:, 1] < 25) & (c[:, 2] > -25) & (c[:, 2] < 30)
        lab[mw] = 0
        labels.append(lab)
        medial.append(mw)
        coords.append(c)
    return np.concatenate(labels), np.concatenate(medial), np.concatenate(coords)


def spm_hrf(tr, duration=32.0):
    """SPM canonical haemodynamic response sampled every ``tr`` seconds.

    Returns
    -------
    hrf : ndarray, shape (ceil(duration / tr),)
        Peak-normalised (sum of squares 1) double-gamma response.
    """
    from scipy.stats import gamma

    t = np.arange(0.0, duration, tr)
    h = gamma.pdf(t, 6.0) - gamma.pdf(t, 16.0) / 6.0
    return h / np.linalg.norm(h)


def _convolve(signal, hrf, segment_lengths):
    """Convolve each segment with the HRF separately (no spill-over between runs)."""
    out = np.zeros_like(signal)
    start = 0
    for n in segment_lengths:
        seg = signal[start:start + n]
        out[start:start + n] = np.apply_along_axis(
            lambda s: np.convolve(s, hrf)[: len(s)], 0, seg)
        start += n
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _write_gifti(path, data):
    """Write a (n_trs, n_vertices_hemi) array as a GIfTI func file, one data array per TR."""
    import nibabel as nib

    darrays = [nib.gifti.GiftiDataArray(row.astype(np.float32),
                                        intent="NIFTI_INTENT_TIME_SERIES",
                                        datatype="NIFTI_TYPE_FLOAT32",
                                        encoding="GIFTI_ENCODING_B64GZ")
               for row in data]
    img = nib.gifti.GiftiImage(darrays=darrays)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _write_alignment(path, words, rng, unk_rate, missing_rate):
    """Write a Gentle ``align.csv``: word, dictionary word or <unk>, start, end (no header)."""
    lines = []
    n = len(words)
    missing = rng.random(n) < missing_rate
    missing[0] = missing[-1] = False
    for i, (w, s, e) in enumerate(words[["word", "start", "end"]].itertuples(index=False)):
        dict_word = "<unk>" if (rng.random() < unk_rate or any(ch.isdigit() for ch in w)) \
            else w.lower()
        if missing[i]:
            lines.append(f"{w},,,")
        else:
            lines.append(f"{w},{dict_word},{s:.6f},{e:.6f}")
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")


def _write_text_files(root, syn, rng):
    """Participants, events, sidecars, exclusions, stimuli. Returns the run plan."""
    runs = plan({"synthetic": syn})
    stories = sorted(runs["story"].unique(), key=STORY_NAMES.index)
    for story in stories:
        k = STORY_NAMES.index(story)
        transcript, words = make_story(rng, syn["speech_duration"], syn["words_per_second"],
                                       MUSIC_DURATIONS[k] + 1.0)
        gentle = root / "stimuli" / "gentle" / story
        with atomic_write(gentle / "transcript.txt") as f:
            f.write(transcript)
        _write_alignment(gentle / "align.csv", words, rng, syn["unk_rate"],
                         syn["missing_time_rate"])
    # participants.tsv: comma-separated parallel lists, like the real file
    rows = []
    for sub, g in runs.groupby("subject", sort=True):
        tasks = list(dict.fromkeys(g["task"]))
        ages = int(rng.integers(18, 40))
        rows.append({"participant_id": sub, "age": ",".join([str(ages)] * len(tasks)),
                     "sex": ",".join(["F" if rng.random() < 0.5 else "M"] * len(tasks)),
                     "task": ",".join(tasks), "condition": ",".join(["n/a"] * len(tasks)),
                     "comprehension": ",".join(["n/a"] * len(tasks))})
    write_tsv(root / "participants.tsv", pd.DataFrame(rows))
    exclude = {story: {} for story in STORY_NAMES[: syn["n_stories"]]}
    for r in runs.itertuples():
        k = STORY_NAMES.index(r.story)
        base = _basename(r.subject, r.task, r.run)
        func = root / r.subject / "func"
        events = [(AUDIO_ONSETS[k], MUSIC_DURATIONS[k], "music")] if MUSIC_DURATIONS[k] else []
        speech_onset = AUDIO_ONSETS[k] + MUSIC_DURATIONS[k] + (2.0 if MUSIC_DURATIONS[k] else 0)
        events.append((speech_onset, syn["speech_duration"] + 2.0, "story"))
        ev = pd.DataFrame(events, columns=["onset", "duration", "trial_type"])
        ev["stim_file"] = f"{r.story}_audio.wav"
        write_tsv(func / f"{base}_events.tsv", ev)
        write_json(func / f"{base}_bold.json",
                   {"RepetitionTime": TR, "TaskName": r.task, "SkullStripped": False,
                    "Manufacturer": "brainpred synthetic generator"})
        if r.excluded:
            exclude[r.task].setdefault(r.subject, []).append(base)
    write_json(root / "code" / "scan_exclude.json", exclude)
    write_json(root / "dataset_description.json",
               {"Name": "brainpred synthetic Narratives-shaped demo dataset",
                "BIDSVersion": "1.2.1", "DatasetType": "raw",
                "GeneratedBy": [{"Name": "brainpred.synthetic"}],
                "License": "CC0"})
    return runs


#: Principal directions of the activations mixed into the planted read-outs.
N_READOUT_PCS = 10


def _projections(word_features, seed):
    """Word-level read-out vectors of the planted effects.

    The read-outs are random directions in the span of the top ``N_READOUT_PCS`` principal
    directions of the *word-to-word* variation of the activations (standardised), made
    orthogonal to their mean: a TR sum of read-out values then carries no word-count (speech
    envelope) component, which the past would predict, and is exactly linear in the pipeline's
    X and W_d. The forecast and current-word read-outs are orthonormal random mixes of those
    directions (seeded). Not the single top direction: on the random tiny model that direction is
    nearly the same at every layer, so a planted depth would not be identifiable.

    Parameters
    ----------
    word_features : ndarray, shape (n_words, D)
        Word activations of every story.
    seed : int

    Returns
    -------
    u_cur, u_fut : ndarray, shape (D,)
    """
    mean = word_features.mean(0)
    scale = word_features.std(0) + 1e-8
    _, _, vt = np.linalg.svd((word_features - mean) / scale, full_matrices=False)

    def readout(v):
        u = v / scale
        u = u - (u @ mean) / (mean @ mean) * mean
        return u / np.linalg.norm(u)

    k = min(N_READOUT_PCS, len(vt))
    q, _ = np.linalg.qr(np.random.default_rng(seed + 1000).standard_normal((k, 2)))
    return readout(q[:, 1] @ vt[:k]), readout(q[:, 0] @ vt[:k])


def generate(root, cfg, progress=True):
    """Write the synthetic Narratives-shaped dataset and its ground truth under ``root``.

    Parameters
    ----------
    root : str or Path
        Dataset folder (created).
    cfg : dict
        Workflow configuration: ``synthetic`` (see ``config/README.md``), ``model`` (the
        language model whose activations drive the planted effects) and ``features``
        (``tr_offset``, ``tr_method``: the pipeline's TR convention).
    progress : bool
        Log progress.
    """
    from . import features, narratives

    root = Path(root)
    syn = _settings(cfg)
    rng = np.random.default_rng(syn["seed"])
    runs = _write_text_files(root, syn, rng)
    mcfg = (cfg or {}).get("model", {}) or {}
    fcfg = (cfg or {}).get("features", {}) or {}
    tr_offset = int(fcfg.get("tr_offset", 1))
    model, tokenizer = features.load_model(mcfg.get("name", "tiny-gpt2"),
                                           seed=int(mcfg.get("seed", 0)), device="cpu")
    layers = {"layer": int(syn["layer"]), "depth_layer": int(syn["depth_layer"])}
    for key, k in layers.items():
        if not 0 <= k <= features.n_layers(model):
            raise ConfigError(f"synthetic.{key} = {k}: the model has layers 0.."
                              f"{features.n_layers(model)}.")
    acts, words, texts = {}, {}, {}
    for story in sorted(runs["story"].unique()):
        w, text = narratives.story_words(root, story)
        texts[story] = text
        a = features.story_features(w, text, model, tokenizer,
                                    context_tokens=int(mcfg.get("context_tokens", 1024)))
        acts[story] = {k: np.asarray(a[k], dtype=np.float64) for k in set(layers.values())}
        words[story] = w
        if progress:
            log.info("synthetic: story %s, %d words", story, len(w))

    def stacked(k):
        return np.concatenate([acts[st][k] for st in sorted(acts)])

    u_cur, u_fut = _projections(stacked(layers["layer"]), syn["seed"])
    _, u_deep = _projections(stacked(layers["depth_layer"]), syn["seed"])

    def window(values, d=syn["d_true"]):
        return design.forecast_windows(values[:, None], d, syn["width"]).sum(1)

    word_signals = {}
    for story, a in acts.items():
        main = a[layers["layer"]]
        word_signals[story] = np.stack([np.ones(len(main)), main @ u_cur, window(main @ u_fut),
                                        window(a[layers["depth_layer"]] @ u_deep)], axis=1)
    if syn["plant_syntax"]:
        x_syn = _syntactic_parts(cfg, model, tokenizer, words, texts, layers["layer"], progress)
        _, u_syn = _projections(np.concatenate([x_syn[st] for st in sorted(acts)]), syn["seed"])
        _, u_sem = _projections(np.concatenate([acts[st][layers["layer"]] - x_syn[st]
                                                for st in sorted(acts)]), syn["seed"])
        for story, a in acts.items():
            sem = a[layers["layer"]] - x_syn[story]
            extra = np.stack([window(x_syn[story] @ u_syn, syn["d_syntactic"]),
                              window(sem @ u_sem, syn["d_semantic"])], axis=1)
            word_signals[story] = np.concatenate([word_signals[story], extra], axis=1)

    labels, medial, coords = surface_layout(syn["patch_radius"])
    n_vert = len(labels)
    # The response is the SPM HRF cut to the span of the pipeline's FIR delays, so that the
    # encoding model can represent the planted responses exactly (a longer tail would leak
    # current-word information into the forecast windows and bias F(d) towards small d).
    delays = ((cfg or {}).get("mapping", {}) or {}).get("delays", list(range(6)))
    hrf = spm_hrf(TR, duration=(max(delays) + 1) * TR)
    # smooth spatial weight within each patch (1 at the centre vertex, 0.5 at the border)
    weights = np.zeros(n_vert)
    for name in PATCHES:
        idx = np.flatnonzero(labels == PATCH_LABELS[name])
        for hemi_idx in (idx[idx < n_vert // 2], idx[idx >= n_vert // 2]):
            if len(hemi_idx):
                c = coords[hemi_idx].mean(0)
                d = np.linalg.norm(coords[hemi_idx] - c, axis=1)
                weights[hemi_idx] = 1.0 - 0.5 * d / max(d.max(), 1e-6)
    amps = syn["amplitudes"]
    half = n_vert // 2
    for sub, g in runs.groupby("subject", sort=True):
        sub_rng = np.random.default_rng([syn["seed"], int(sub[4:])])
        gain = sub_rng.uniform(0.8, 1.2)
        for r in g.itertuples():
            n_trs = int(r.n_trs)
            onsets = words[r.story]["start"].to_numpy() + r.audio_onset
            sig = design.words_to_trs(word_signals[r.story].astype(np.float32), onsets, TR,
                                      n_trs, tr_offset=tr_offset, method="sum").astype(float)
            sig = _convolve(sig, hrf, [n_trs])
            sig = (sig - sig.mean(0)) / (sig.std(0) + 1e-8)
            rate, cur, fut, fut_deep = sig.T[:4]
            fut_syn, fut_sem = sig.T[4:] if syn["plant_syntax"] else (None, None)
            bold = sub_rng.standard_normal((n_trs, n_vert)) * syn["noise"]
            # temporally autocorrelated noise, like fMRI (AR(1), phi = 0.3)
            for t in range(1, n_trs):
                bold[t] += 0.3 * bold[t - 1]
            for name, drive in (("auditory", amps["auditory"] * rate),
                                ("temporal", amps["temporal"] * cur),
                                ("frontal", amps["frontal"] * (fut + syn["frontal_current"] * cur)),
                                ("psts", amps["psts"] * fut_deep),
                                ("syntactic", None if fut_syn is None
                                 else amps["syntactic"] * fut_syn),
                                ("semantic", None if fut_sem is None
                                 else amps["semantic"] * fut_sem)):
                if drive is None:
                    continue
                idx = np.flatnonzero(labels == PATCH_LABELS[name])
                bold[:, idx] += gain * np.outer(drive, weights[idx])
            bold += 100.0  # a baseline, as in cleaned BOLD with the mean kept
            bold[:, medial] = np.nan
            bold = bold.astype(np.float32)
            base = _basename(r.subject, r.task, r.run)
            func = root / "derivatives" / "afni-nosmooth" / r.subject / "func"
            for hemi, sl in (("L", slice(0, half)), ("R", slice(half, None))):
                _write_gifti(func / f"{base}_space-fsaverage5_hemi-{hemi}_desc-clean.func.gii",
                             bold[:, sl])
        if progress:
            log.info("synthetic: wrote BOLD of %s", sub)
    _write_truth(root, syn, labels, medial, mcfg, tr_offset)


def _syntactic_parts(cfg, model, tokenizer, words, texts, layer, progress):
    """X_syn at ``layer`` of every story, exactly as the workflow's ``story_syntax`` rule
    computes it (same ``syntax`` settings, word classes of all the stories)."""
    from . import syntax
    from .analyses import syntax_settings

    scfg = (cfg or {}).get("syntax", {}) or {}
    mcfg = (cfg or {}).get("model", {}) or {}
    nlp = syntax.load_spacy(scfg.get("spacy_model", "en_core_web_sm"))
    classes = syntax.story_classes([(words[s], texts[s]) for s in sorted(words)], nlp)
    out = {}
    for story in sorted(words):
        a = syntax.syntactic_activations(
            words[story], texts[story], model, tokenizer, nlp, classes,
            context_tokens=int(mcfg.get("context_tokens", 1024)),
            batch_size=int(mcfg.get("batch_size", 8)), **syntax_settings(scfg))
        out[story] = np.asarray(a[layer], dtype=np.float64)
        if progress:
            log.info("synthetic: syntactic part of story %s", story)
    return out


def _write_truth(root, syn, labels, medial, mcfg, tr_offset):
    from .regions import write_label_gifti

    half = len(labels) // 2
    truth = root / TRUTH_DIR
    names = {v: k for k, v in PATCH_LABELS.items()}
    for hemi, sl in (("L", slice(0, half)), ("R", slice(half, None))):
        write_label_gifti(truth / f"space-fsaverage5_hemi-{hemi}_desc-patches_dseg.label.gii",
                          labels[sl], names)
    write_json(truth / "ground_truth.json", {
        "description": "Planted effects of the brainpred synthetic dataset. Vertex indices are "
                       "0-based over the left then right fsaverage5 hemispheres (20,484).",
        "d_true": int(syn["d_true"]), "width": int(syn["width"]), "layer": int(syn["layer"]),
        "depth_layer": int(syn["depth_layer"]),
        "layers": {"frontal": int(syn["layer"]), "psts": int(syn["depth_layer"])},
        "syntax": ({"d_syntactic": int(syn["d_syntactic"]), "d_semantic": int(syn["d_semantic"])}
                   if syn["plant_syntax"] else None),
        "model": mcfg.get("name", "tiny-gpt2"), "model_seed": int(mcfg.get("seed", 0)),
        "tr": TR, "tr_offset": tr_offset, "seed": int(syn["seed"]),
        "amplitudes": syn["amplitudes"], "frontal_current": syn["frontal_current"],
        "noise": syn["noise"],
        "patches": {name: np.flatnonzero(labels == PATCH_LABELS[name]).tolist()
                    for name in PATCHES
                    if syn["plant_syntax"] or name not in ("syntactic", "semantic")},
        "medial_wall": np.flatnonzero(medial).tolist(),
    })


def output_files(cfg):
    """Paths (relative to the dataset root) of the files :func:`generate` writes.

    The workflow declares them as the outputs of the ``synthetic_dataset`` rule, so the rules
    that read them depend on it exactly as they would on a real Narratives copy.
    """
    runs = plan(cfg)
    files = ["participants.tsv", "dataset_description.json", "code/scan_exclude.json",
             f"{TRUTH_DIR}/ground_truth.json"]
    files += [f"{TRUTH_DIR}/space-fsaverage5_hemi-{h}_desc-patches_dseg.label.gii" for h in "LR"]
    for story in sorted(runs["story"].unique()):
        files += [f"stimuli/gentle/{story}/align.csv", f"stimuli/gentle/{story}/transcript.txt"]
    for r in runs.itertuples():
        base = _basename(r.subject, r.task, r.run)
        files += [f"{r.subject}/func/{base}_events.tsv", f"{r.subject}/func/{base}_bold.json"]
        files += [f"derivatives/afni-nosmooth/{r.subject}/func/"
                  f"{base}_space-fsaverage5_hemi-{h}_desc-clean.func.gii" for h in "LR"]
    return files
