"""From word-level features to TR-level design matrices.

Pure numpy functions: word onsets to TR indices, word features summed (or averaged, or
Lanczos-resampled) per TR, forecast windows of future words, and FIR delays that are
zero-padded at the start of every story (segment) and never wrap around.

Conventions (see ``docs/architecture.md``): time runs along axis 0, outputs are ``float32``,
the TR index of a word with onset ``t`` (scan time, seconds) is ``floor(t / tr) + tr_offset``
and words whose index falls outside ``[0, n_trs)`` are dropped.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

__all__ = ["tr_indices", "words_to_trs", "forecast_windows", "fir_delays", "lanczos_weights"]

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
