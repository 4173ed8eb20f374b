"""Low-level nuisance regressors: word rate, word length, word frequency, audio envelope.

A reviewer of an encoding-model paper asks whether a forecast gain F(d) survives regressors
that are correlated with the future words but carry no linguistic content. The configured
``nuisance`` blocks (:data:`NUISANCE`, any subset) are fitted in **both** models of F(d) and in
R(X) (:func:`brainpred.conditions.nuisance_blocks`), each with its own standardisation, PCA
and FIR delays like any block (:func:`brainpred.mapping.design_scores`):

``word_rate``
    1 per word: on the TR grid (``features.tr_method: sum``) the number of words per TR.
``word_length``
    The number of letters and digits of the word as written (``"didn't"`` -> 5).
``word_frequency``
    ``wordfreq.zipf_frequency(word, "en")`` (log10 of the frequency per billion words + 9;
    wordfreq ships its word lists, no download); a word wordfreq does not know gets 0, its
    own value for unknown words (the Zipf scale of the rarest known words is about 1).
``audio_envelope``
    The amplitude envelope of the story's audio (:func:`audio_envelope`), directly on the
    run's TR grid (no word-to-TR binning).

The word-level ones go to the TR grid exactly like X (:func:`brainpred.design.words_to_trs`,
same ``tr_method`` and ``tr_offset``). Pure functions on arrays and tables.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy import signal

from .conditions import NUISANCE
from .errors import ConfigError, DataError

__all__ = ["NUISANCE", "WORD_NUISANCE", "word_values", "audio_envelope", "mono"]

#: The nuisance regressors with one value per word (binned to TRs like X).
WORD_NUISANCE = ("word_rate", "word_length", "word_frequency")


def word_values(words, name):
    """Word-level values of one word nuisance regressor.

    Parameters
    ----------
    words : DataFrame, shape (n_words, >= 1)
        A story's words table (column ``word``, as written in the alignment).
    name : {"word_rate", "word_length", "word_frequency"}

    Returns
    -------
    values : float32 ndarray, shape (n_words, 1)
        ``word_rate``: 1; ``word_length``: letters and digits of the word; ``word_frequency``:
        ``wordfreq.zipf_frequency(word, "en")`` (0 for a word wordfreq does not know).
    """
    text = [str(w) for w in words["word"]]
    if name == "word_rate":
        out = np.ones(len(text))
    elif name == "word_length":
        out = np.array([sum(ch.isalnum() for ch in w) for w in text], float)
    elif name == "word_frequency":
        from wordfreq import zipf_frequency   # a third-party import: loads its data lazily

        cache = {}
        out = np.array([cache.setdefault(w, zipf_frequency(w, "en")) for w in text], float)
    elif name == "audio_envelope":
        raise ValueError("audio_envelope has no word-level values; use audio_envelope().")
    else:
        raise ConfigError(f"nuisance: unknown regressor {name!r}; expected one of {NUISANCE}.")
    return out.astype(np.float32)[:, None]


def mono(waveform):
    """A waveform as mono float64 in [-1, 1]: channels averaged, integer PCM scaled.

    Parameters
    ----------
    waveform : ndarray, shape (n_samples,) or (n_samples, n_channels)
        As :func:`scipy.io.wavfile.read` returns it (int16, int32, uint8 or float PCM).

    Returns
    -------
    ndarray, shape (n_samples,), float64
    """
    x = np.asarray(waveform)
    if x.dtype == np.uint8:
        x = (x.astype(np.float64) - 128.0) / 128.0
    elif np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(np.iinfo(x.dtype).max)
    else:
        x = x.astype(np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise DataError(f"audio of shape {np.shape(waveform)}: expected (n_samples,) or "
                        "(n_samples, n_channels).")
    return x


def audio_envelope(waveform, sample_rate, tr, n_trs, audio_onset=0.0, tr_offset=1,
                   span=(0.0, math.inf), rate=20, order=8):
    """Amplitude envelope of a story's audio on the run's TR grid.

    1. The envelope is the rectified waveform ``|x|`` (channels averaged, integer PCM scaled
       to [-1, 1]), resampled to ``rate`` Hz by :func:`scipy.signal.resample_poly` (its
       polyphase FIR is the anti-aliasing filter of this step).
    2. It is set to 0 outside ``span`` (file time) and placed in scan time: scan time = file
       time + ``audio_onset`` (the words' convention, :func:`brainpred.design.block_design`).
    3. Anti-aliasing for the TR grid: a zero-phase Butterworth low-pass (order ``order``,
       cutoff at the TR grid's Nyquist ``1 / (2 tr)``, :func:`scipy.signal.sosfiltfilt`),
       so that a modulation faster than the TRs can represent is removed, not aliased; then
       exactly 0 before the audio (or span) starts and after it ends.
    4. TR ``i`` is the mean over the scan-time interval ``[(i - tr_offset) tr,
       (i - tr_offset + 1) tr)``: the interval whose words the ``sum`` binning assigns to TR
       ``i`` (:func:`brainpred.design.tr_indices`).

    Parameters
    ----------
    waveform : ndarray, shape (n_samples,) or (n_samples, n_channels)
    sample_rate : int
        Samples per second of ``waveform``.
    tr : float
        Repetition time (s).
    n_trs : int
        Volumes of the run.
    audio_onset : float
        Scan time (s) of the audio file's start (the run table's ``audio_onset``).
    tr_offset : int
        ``features.tr_offset``.
    span : (float, float)
        File-time interval (s) of the story in the audio (``slumlord`` / ``reach`` share one
        file, :func:`brainpred.narratives.audio_span`); the envelope is 0 outside it.
    rate : int
        Intermediate rate (Hz) of the envelope; must exceed ``2 / tr``.
    order : int
        Order of the Butterworth low-pass.

    Returns
    -------
    envelope : float32 ndarray, shape (n_trs, 1)
    """
    tr, n_trs, rate = float(tr), int(n_trs), int(rate)
    if tr <= 0 or n_trs <= 0:
        raise ConfigError(f"audio_envelope: tr = {tr} and n_trs = {n_trs} must be positive.")
    if rate * tr < 4:
        raise ValueError(f"audio_envelope: rate = {rate} Hz is too low for tr = {tr} s.")
    x = np.abs(mono(waveform))
    ratio = Fraction(rate, int(sample_rate))
    env = signal.resample_poly(x, ratio.numerator, ratio.denominator) if len(x) else x
    t_file = np.arange(len(env)) / rate
    env = np.where((t_file >= span[0]) & (t_file < span[1]), np.maximum(env, 0.0), 0.0)
    # scan-time grid of the TRs' intervals, with a margin for the filter's edges
    pad = 4.0 * tr
    t0 = -int(tr_offset) * tr
    t_scan = t0 - pad + np.arange(int(round((n_trs * tr + 2 * pad) * rate))) / rate
    on_scan = np.interp(t_scan - float(audio_onset), t_file, env, left=0.0, right=0.0) \
        if len(env) else np.zeros_like(t_scan)
    sos = signal.butter(int(order), 0.5 / tr, btype="low", fs=rate, output="sos")
    smooth = signal.sosfiltfilt(sos, on_scan)
    # exactly 0 outside the audio (and the span): the filter's ringing stays inside
    t_rel = t_scan - float(audio_onset)
    smooth[(t_rel < max(span[0], 0.0)) | (t_rel >= min(span[1], len(x) / sample_rate))] = 0.0
    idx = np.floor((t_scan - t0) / tr).astype(np.int64)
    keep = (idx >= 0) & (idx < n_trs)
    sums = np.bincount(idx[keep], weights=smooth[keep], minlength=n_trs)
    counts = np.bincount(idx[keep], minlength=n_trs)
    out = np.divide(sums, counts, out=np.zeros(n_trs), where=counts > 0)
    return out.astype(np.float32)[:, None]
