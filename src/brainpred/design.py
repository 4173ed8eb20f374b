"""From word-level features to TR-level design matrices.

Pure functions on arrays and tables: word onsets to TR indices, word features summed (or
averaged, or Lanczos-resampled) per TR, forecast windows of future words (true, generated,
random or shuffled), FIR delays that are zero-padded at the start of every story (segment) and
never wrap around, and the TR-level arrays of an analysis' feature blocks
(:class:`~brainpred.conditions.Block`) for one subject's runs (:func:`block_design`),
nuisance regressors included (:mod:`brainpred.nuisance`, sources ``nuisance:<name>``).

Conventions (see ``docs/architecture.md``): time runs along axis 0, outputs are ``float32``,
the TR index of a word with onset ``t`` (scan time, seconds) is ``floor(t / tr) + tr_offset``
and words whose index falls outside ``[0, n_trs)`` are dropped.
"""

from __future__ import annotations

import zlib

import numpy as np

from .conditions import Block
from .errors import ConfigError, DataError
from .narratives import audio_span, check_words_in_run
from .nuisance import audio_envelope, word_values

__all__ = ["tr_indices", "words_to_trs", "forecast_windows", "fir_delays", "lanczos_weights",
           "generated_windows", "random_vectors", "shuffled_vectors", "WordSources",
           "block_design", "subject_design"]

_METHODS = ("sum", "mean", "lanczos")


def tr_indices(onsets, tr, n_trs, tr_offset=1):
    """TR index of each word.

    Parameters
    ----------
    onsets : array of shape (n_words,)
        Word onsets in scan time (seconds).
    tr : float
        Repetition time (seconds).
    n_trs : int
        Number of volumes of the run.
    tr_offset : int
        Added to ``floor(onset / tr)`` (the paper's convention is 1).

    Returns
    -------
    idx : int array of shape (n_words,)
        ``floor(onset / tr) + tr_offset``, or -1 where that falls outside ``[0, n_trs)`` (or the
        onset is not finite).
    """
    onsets = np.asarray(onsets, dtype=np.float64).reshape(-1)
    if tr <= 0:
        raise ConfigError(f"tr must be positive, got {tr!r}.")
    finite = np.isfinite(onsets)
    idx = np.full(onsets.shape, -1, dtype=np.int64)
    idx[finite] = np.floor(onsets[finite] / tr).astype(np.int64) + int(tr_offset)
    idx[(idx < 0) | (idx >= n_trs)] = -1
    return idx


def lanczos_weights(onsets, tr, n_trs, tr_offset=1, window=3):
    """Lanczos resampling matrix from word onsets to TRs (Huth et al. 2016).

    TR ``i`` is centred at time ``(i - tr_offset + 0.5) * tr``, the middle of the interval whose
    words the ``"sum"`` method assigns to it; the cutoff frequency is ``1 / tr`` as in Huth's
    ``lanczosinterp2D``.

    Parameters
    ----------
    onsets : array of shape (n_words,)
    tr : float
    n_trs : int
    tr_offset : int
    window : int
        Number of lobes of the Lanczos kernel.

    Returns
    -------
    weights : array of shape (n_trs, n_words), float64
    """
    onsets = np.asarray(onsets, dtype=np.float64).reshape(-1)
    centres = (np.arange(n_trs) - tr_offset + 0.5) * tr
    t = (centres[:, None] - onsets[None, :]) / tr
    with np.errstate(divide="ignore", invalid="ignore"):
        w = window * np.sin(np.pi * t) * np.sin(np.pi * t / window) / (np.pi ** 2 * t ** 2)
    w[t == 0] = 1.0
    w[np.abs(t) > window] = 0.0
    w[:, ~np.isfinite(onsets)] = 0.0
    return w


def words_to_trs(values, onsets, tr, n_trs, tr_offset=1, method="sum"):
    """Aggregate word-level features into TRs.

    Parameters
    ----------
    values : array of shape (n_words, D)
        Word features (a 1-D array is treated as ``D = 1`` and returned 2-D).
    onsets : array of shape (n_words,)
        Word onsets in scan time (seconds).
    tr : float
        Repetition time (seconds).
    n_trs : int
        Number of volumes.
    tr_offset : int
        See :func:`tr_indices`.
    method : {"sum", "mean", "lanczos"}
        ``"sum"``: sum of the words of each TR (the paper); ``"mean"``: their mean;
        ``"lanczos"``: Lanczos resampling (window 3, :func:`lanczos_weights`). TRs without a word
        are zero for ``"sum"`` and ``"mean"``.

    Returns
    -------
    out : float32 array of shape (n_trs, D)
    """
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    onsets = np.asarray(onsets).reshape(-1)
    if values.shape[0] != onsets.shape[0]:
        raise ValueError(f"values has {values.shape[0]} rows but there are {onsets.shape[0]} "
                         "onsets.")
    if method not in _METHODS:
        raise ConfigError(f"words_to_trs method must be one of {_METHODS}, got {method!r}.")
    n_trs = int(n_trs)
    if method == "lanczos":
        w = lanczos_weights(onsets, tr, n_trs, tr_offset)
        return (w @ values.astype(np.float64)).astype(np.float32)
    idx = tr_indices(onsets, tr, n_trs, tr_offset)
    keep = idx >= 0
    out = np.zeros((n_trs, values.shape[1]), dtype=np.float64)
    np.add.at(out, idx[keep], values[keep].astype(np.float64))
    if method == "mean":
        counts = np.bincount(idx[keep], minlength=n_trs)
        nz = counts > 0
        out[nz] /= counts[nz, None]
    return out.astype(np.float32)


def forecast_windows(values, distance, width=7):
    """Forecast window of each word: the features of words ``n+d-width+1 .. n+d``.

    Parameters
    ----------
    values : array of shape (n_words, D)
        Word features of one story.
    distance : int
        ``d``; the window ends ``d`` words after the current word (``d = 0``: current word and
        the ``width - 1`` previous ones; ``d < 0``: only past words).
    width : int
        Number of words per window (7 in the paper).

    Returns
    -------
    windows : float32 array of shape (n_words, D * width)
        Row ``n`` is the concatenation, oldest first, of the rows ``n+d-width+1, ..., n+d`` of
        ``values`` (block ``k`` = columns ``k*D:(k+1)*D`` holds word ``n+d-width+1+k``); words
        outside ``[0, n_words)`` are zeros.
    """
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    n_words, dim = values.shape
    width = int(width)
    if width < 1:
        raise ConfigError(f"forecast window width must be >= 1, got {width}.")
    out = np.zeros((n_words, dim * width), dtype=np.float32)
    for k in range(width):
        shift = int(distance) - width + 1 + k          # source word = n + shift
        lo, hi = max(0, -shift), min(n_words, n_words - shift)
        if hi > lo:
            out[lo:hi, k * dim:(k + 1) * dim] = values[lo + shift:hi + shift]
    return out


def _check_segments(n_samples, segment_lengths):
    if segment_lengths is None:
        return np.array([n_samples])
    seg = np.asarray(segment_lengths, dtype=np.int64).reshape(-1)
    if np.any(seg < 0) or seg.sum() != n_samples:
        raise ValueError(f"segment_lengths {seg.tolist()} must be non-negative and sum to the "
                         f"number of TRs ({n_samples}).")
    return seg


def fir_delays(X, delays=range(6), segment_lengths=None):
    """Finite impulse response design: copies of ``X`` delayed by each delay, per segment.

    Parameters
    ----------
    X : array of shape (n_trs, D)
        TR-level features of consecutive segments (stories) concatenated in time.
    delays : iterable of int
        Delays in TRs (``range(6)``: 0 to 5 TRs). A delay ``k`` puts ``X[t - k]`` at row ``t``.
        Negative delays (leads) are allowed.
    segment_lengths : sequence of int or None
        Number of TRs of each segment, summing to ``n_trs``; ``None`` = one segment. Delayed
        values never cross a segment boundary: rows whose source lies in another segment are
        zeros.

    Returns
    -------
    out : float32 array of shape (n_trs, D * n_delays)
        Block ``j`` (columns ``j*D:(j+1)*D``) holds ``X`` delayed by ``delays[j]``.
    """
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    delays = [int(d) for d in delays]
    n, dim = X.shape
    seg = _check_segments(n, segment_lengths)
    out = np.zeros((n, dim * len(delays)), dtype=np.float32)
    start = 0
    for length in seg:
        stop = start + length
        for j, d in enumerate(delays):
            cols = slice(j * dim, (j + 1) * dim)
            if d >= 0 and d < length:
                out[start + d:stop, cols] = X[start:stop - d]
            elif d < 0 and -d < length:
                out[start:stop + d, cols] = X[start - d:stop]
        start = stop
    return out


# --------------------------------------------------------------------------------------------
# Forecast windows of generated futures, control sources and the TR design of feature blocks
# --------------------------------------------------------------------------------------------

def generated_windows(generated, X, distance, width=7):
    """Forecast windows whose future words are the model's own continuation.

    Parameters
    ----------
    generated : array of shape (n_words, horizon, D)
        Activations of the generated words for ONE layer (``generate_continuations(...)[i]``):
        ``generated[n, j - 1]`` = ``j``-th word generated after word ``n``.
    X : array of shape (n_words, D)
        TRUE activations of the story's words, same layer.
    distance : int
        ``d``: the window covers positions ``j = d - width + 1 .. d`` relative to word ``n``.
        Must not exceed ``horizon``.
    width : int
        Words per window (7 in the paper).

    Returns
    -------
    windows : float32 array of shape (n_words, width * D)
        Block ``k`` (columns ``k*D:(k+1)*D``) holds position ``j = d - width + 1 + k`` (oldest
        first, as :func:`brainpred.design.forecast_windows`): ``X[n + j]`` for ``j <= 0`` (zeros
        before the story start), ``generated[n, j - 1]`` for ``j >= 1`` (a continuation exists
        after every word, including the story's last ones). With ``generated[n, j - 1] =
        X[n + j]`` (zeros past the end) this equals ``forecast_windows(X, d, width)``.

    Raises
    ------
    ConfigError
        ``d > horizon`` (key ``controls.generated.horizon``) or ``width < 1``.
    ValueError
        Shapes of ``generated`` and ``X`` that do not match.
    """
    G = np.asarray(generated)
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if G.ndim != 3 or X.ndim != 2 or G.shape[0] != X.shape[0] or G.shape[2] != X.shape[1]:
        raise ValueError(f"generated of shape {G.shape} and X of shape {X.shape} do not match "
                         "(expected (n_words, horizon, D) and (n_words, D)).")
    n_words, horizon, dim = G.shape
    width, d = int(width), int(distance)
    if width < 1:
        raise ConfigError(f"forecast window width must be >= 1, got {width}.")
    if d > horizon:
        raise ConfigError(f"controls.generated.horizon: distance d = {d} needs {d} generated "
                          f"words but the continuations have horizon = {horizon}; generate "
                          f"them with horizon >= {d} (the largest forecast distance).")
    out = np.zeros((n_words, width * dim), dtype=np.float32)
    for k in range(width):
        j = d - width + 1 + k
        cols = slice(k * dim, (k + 1) * dim)
        if j >= 1:
            out[:, cols] = G[:, j - 1]
        else:
            lo = -j  # rows n >= -j have word n + j inside the story
            if lo < n_words:
                out[lo:, cols] = X[:n_words - lo]
    return out


def _story_seed(seed, story, layer):
    return [int(seed), zlib.crc32(str(story).encode()), int(layer)]


def random_vectors(values, seed):
    """Random word vectors matched in dimension and variance to ``values``, with zero mean.

    Parameters
    ----------
    values : ndarray, shape (n_words, D)
    seed : int or sequence of int

    Returns
    -------
    ndarray, shape (n_words, D), float32
        Independent Gaussian vectors with each unit's standard deviation over words. The
        mean is 0, not the activations' mean: a TR sum of vectors with a common mean would
        count the words of each TR, i.e. carry the speech rate, which is real information.
    """
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(values.shape)
    return (z * values.std(0)).astype(np.float32)


def shuffled_vectors(values, seed):
    """The word vectors of a story in a random order (seeded permutation of the rows).

    Parameters
    ----------
    values : ndarray, shape (n_words, D)

    Returns
    -------
    ndarray, shape (n_words, D), float32
    """
    perm = np.random.default_rng(seed).permutation(len(values))
    return np.asarray(values, dtype=np.float32)[perm]


class WordSources:
    """Word-level arrays of the stories of one fit, and the blocks built from them.

    Parameters
    ----------
    words : dict
        ``story -> words DataFrame`` (``start`` column, seconds from the audio onset).
    acts : dict
        ``story -> ndarray (n_layers + 1, n_words, D)``, the model's activations.
    syntactic : dict, optional
        ``story -> ndarray (n_layers + 1, n_words, D)``, X_syn (:mod:`brainpred.syntax`).
    generated : dict, optional
        ``story -> (layer, ndarray (n_words, horizon, D))``, activations of the model's own
        continuation (:mod:`brainpred.continuations`).
    seed : int
        Seed of the random and shuffled controls (``controls.seed``).
    models : dict, optional
        ``key -> {story -> ndarray (n_layers + 1, n_words, D)}``, activations of other models
        (sources ``model:<key>``).
    audio : dict, optional
        ``story -> (waveform ndarray (n_samples,) or (n_samples, n_channels), sample rate)``,
        the story's audio file (source ``nuisance:audio_envelope``).
    """

    def __init__(self, words, acts, syntactic=None, generated=None, seed=0, models=None,
                 audio=None):
        self.words, self.acts = words, acts
        self.syntactic, self.generated = syntactic or {}, generated or {}
        self.models = models or {}
        self.audio = audio or {}
        self.seed = int(seed)
        self._cache = {}

    def vectors(self, story, source, layer):
        """Word vectors (n_words, D) of ``source`` at ``layer`` (a tuple: concatenated)."""
        if isinstance(layer, (tuple, list)):
            return np.concatenate([self.vectors(story, source, k) for k in layer], axis=1)
        if source.startswith("nuisance:"):
            return word_values(self.words[story], source.split(":", 1)[1])
        if source.startswith("model:"):
            key = source.split(":", 1)[1]
            if key not in self.models or story not in self.models[key]:
                raise DataError(f"no activations of model {key} for story {story}; re-run "
                                "snakemake.")
            acts = self.models[key][story]
            if not 0 <= layer < acts.shape[0]:
                raise ConfigError(f"layer {layer}: model {key} has only layers "
                                  f"0..{acts.shape[0] - 1}.")
            return np.asarray(acts[layer], dtype=np.float32)
        acts = self.acts[story]
        if not 0 <= layer < acts.shape[0]:
            raise ConfigError(f"layer {layer}: the model has only layers 0..{acts.shape[0] - 1}.")
        x = np.asarray(acts[layer], dtype=np.float32)
        if source == "acts":
            return x
        if source == "random":
            return random_vectors(x, _story_seed(self.seed, story, layer))
        if source == "shuffled":
            return shuffled_vectors(x, _story_seed(self.seed + 1, story, layer))
        if source in ("syntactic", "semantic"):
            if story not in self.syntactic:
                raise DataError(f"no syntactic activations for story {story}; re-run snakemake.")
            x_syn = np.asarray(self.syntactic[story][layer], dtype=np.float32)
            if x_syn.shape != x.shape:
                raise DataError(f"story {story}: syntactic activations {x_syn.shape} do not "
                                f"match the activations {x.shape}; re-run snakemake.")
            return x_syn if source == "syntactic" else x - x_syn
        raise ConfigError(f"unknown feature source {source!r}.")

    def envelope(self, story, tr, n_trs, audio_onset, tr_offset=1):
        """The audio envelope (n_trs, 1) of ``story`` on a run's TR grid
        (:func:`brainpred.nuisance.audio_envelope`)."""
        if story not in self.audio:
            raise DataError(f"no audio of story {story} (nuisance: audio_envelope); re-run "
                            "snakemake.")
        key = ("envelope", story, float(tr), int(n_trs), float(audio_onset), int(tr_offset))
        if key not in self._cache:        # the subjects of a fit share their runs' grids
            waveform, rate = self.audio[story]
            self._cache[key] = audio_envelope(waveform, rate, tr, n_trs,
                                              audio_onset=audio_onset, tr_offset=tr_offset,
                                              span=audio_span(story))
        return self._cache[key]

    def block(self, story, block):
        """Word-level array (n_words, D or width * D) of a block."""
        key = (story, block)
        if key not in self._cache:
            if block.source.startswith("nuisance:") and block.distance is not None:
                raise ValueError(f"{block.source}: a nuisance block has no forecast window.")
            if block.source == "generated":
                if block.distance is None:
                    raise ValueError("a generated block needs a distance.")
                if story not in self.generated:
                    raise DataError(f"no generated continuations for story {story}; re-run "
                                    "snakemake.")
                g_layer, gen = self.generated[story]
                if g_layer != block.layer:
                    raise DataError(f"story {story}: continuations hold layer {g_layer}, the "
                                    f"analysis needs layer {block.layer}; re-run snakemake.")
                out = generated_windows(gen, self.vectors(story, "acts", block.layer),
                                        block.distance, block.width)
            else:
                x = self.vectors(story, block.source, block.layer)
                out = x if block.distance is None else forecast_windows(
                    x, block.distance, block.width)
            self._cache[key] = np.asarray(out, dtype=np.float32)
        return self._cache[key]


def block_design(runs, sources, blocks, tr_offset=1, tr_method="sum"):
    """TR-level arrays of feature blocks for one subject's runs.

    Parameters
    ----------
    runs : DataFrame
        The subject's kept rows of the run table, in analysis order (``basename``, ``story``,
        ``audio_onset``, ``tr``, ``n_trs``). A run holding several stories has one row per
        story; their words are summed on the same TR grid.
    sources : WordSources
    blocks : sequence of Block
        A ``nuisance:audio_envelope`` block is computed at TR level from the story's audio
        (:meth:`WordSources.envelope`); every other block is word-level, put on the TR grid by
        :func:`words_to_trs`.
    tr_offset : int
    tr_method : {"sum", "mean", "lanczos"}

    Returns
    -------
    arrays : list of ndarray, shape (n_trs_total, D_b)
        One per block, float32.
    segment_lengths : list of int
        TRs of each run, in order.
    groups : ndarray of int, shape (n_trs_total,)
        Run index of each TR.
    """
    parts = [[] for _ in blocks]
    lengths = []
    for basename, g in runs.groupby("basename", sort=False):
        n_trs, tr = int(g["n_trs"].iloc[0]), float(g["tr"].iloc[0])
        if n_trs <= 0:
            raise DataError(f"{basename}: unknown number of TRs in the run table.")
        acc = [None] * len(blocks)
        for row in g.itertuples():
            words = sources.words[row.story]
            check_words_in_run(words, float(row.audio_onset), tr, n_trs,
                                          where=f"{basename} ({row.story})")
            onsets = words["start"].to_numpy(dtype=float) + float(row.audio_onset)
            for i, b in enumerate(blocks):
                if b.source == "nuisance:audio_envelope":      # TR level, from the audio
                    x = sources.envelope(row.story, tr, n_trs, float(row.audio_onset),
                                         tr_offset=tr_offset)
                    acc[i] = x if acc[i] is None else acc[i] + x
                    continue
                x = words_to_trs(sources.block(row.story, b), onsets, tr, n_trs,
                                        tr_offset=tr_offset, method=tr_method)
                acc[i] = x if acc[i] is None else acc[i] + x
        for i in range(len(blocks)):
            parts[i].append(acc[i])
        lengths.append(n_trs)
    arrays = [np.concatenate(p).astype(np.float32) for p in parts]
    return arrays, lengths, np.repeat(np.arange(len(lengths)), lengths)


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
