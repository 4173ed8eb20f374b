import numpy as np
import pytest

from brainpred import design
from brainpred.design import (fir_delays, forecast_windows, lanczos_weights, tr_indices,
                              words_to_trs)
from brainpred.errors import ConfigError


def test_tr_indices_offset_and_dropped():
    onsets = np.array([-3.0, 0.0, 1.4, 1.5, 2.9, 3.0, 5.9, 6.0, np.nan])
    # tr 1.5, 5 TRs, offset 1: floor(t/1.5) + 1
    idx = tr_indices(onsets, tr=1.5, n_trs=5, tr_offset=1)
    np.testing.assert_array_equal(idx, [-1, 1, 1, 2, 2, 3, 4, -1, -1])
    idx0 = tr_indices(onsets, tr=1.5, n_trs=5, tr_offset=0)
    np.testing.assert_array_equal(idx0, [-1, 0, 0, 1, 1, 2, 3, 4, -1])


def test_words_to_trs_sum_and_mean():
    values = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [8.0, 80.0], [16.0, 160.0]])
    onsets = np.array([0.1, 0.5, 2.1, 4.0, 9.0])   # tr 2 -> floor: 0, 0, 1, 2, 4
    out = words_to_trs(values, onsets, tr=2.0, n_trs=4, tr_offset=1)
    assert out.dtype == np.float32 and out.shape == (4, 2)
    # offset 1: TR 1 <- words 0, 1; TR 2 <- word 2; TR 3 <- word 3; word 4 -> 5 dropped
    np.testing.assert_array_equal(out, [[0, 0], [3, 30], [4, 40], [8, 80]])
    mean = words_to_trs(values, onsets, tr=2.0, n_trs=4, tr_offset=1, method="mean")
    np.testing.assert_array_equal(mean, [[0, 0], [1.5, 15], [4, 40], [8, 80]])
    out0 = words_to_trs(values[:, 0], onsets, tr=2.0, n_trs=5, tr_offset=0)
    np.testing.assert_array_equal(out0[:, 0], [3, 4, 8, 0, 16])


def test_words_to_trs_lanczos():
    onsets = np.array([0.75, 2.25, 3.75])           # exactly the centres of TRs 1, 2, 3
    w = lanczos_weights(onsets, tr=1.5, n_trs=5, tr_offset=1)
    np.testing.assert_allclose(w[1:4], np.eye(3), atol=1e-12)
    values = np.ones((3, 1))
    out = words_to_trs(values, onsets, tr=1.5, n_trs=5, method="lanczos")
    np.testing.assert_allclose(out[1:4, 0], 1.0, atol=1e-6)
    # a word between two TR centres spreads over both
    w2 = lanczos_weights([1.5], tr=1.5, n_trs=5)
    assert w2[1, 0] == pytest.approx(w2[2, 0]) and w2[1, 0] > 0.5
    with pytest.raises(ConfigError):
        words_to_trs(values, onsets, 1.5, 5, method="bogus")


def test_forecast_windows_positive_negative_zero():
    v = np.arange(1, 6, dtype=float)[:, None] * np.array([[1.0, -1.0]])   # word n -> (n+1, -(n+1))
    w0 = forecast_windows(v, 0, width=3)
    assert w0.shape == (5, 6)
    # word 2, d=0: words 0, 1, 2
    np.testing.assert_array_equal(w0[2], [1, -1, 2, -2, 3, -3])
    # word 0, d=0: words -2, -1 (zeros), 0
    np.testing.assert_array_equal(w0[0], [0, 0, 0, 0, 1, -1])
    w2 = forecast_windows(v, 2, width=3)
    # word 1, d=2: words 1, 2, 3
    np.testing.assert_array_equal(w2[1], [2, -2, 3, -3, 4, -4])
    # word 3, d=2: words 3, 4, 5 (outside)
    np.testing.assert_array_equal(w2[3], [4, -4, 5, -5, 0, 0])
    np.testing.assert_array_equal(w2[4], [5, -5, 0, 0, 0, 0])
    wm = forecast_windows(v, -2, width=2)
    # word 4, d=-2: words 1, 2
    np.testing.assert_array_equal(wm[4], [2, -2, 3, -3])
    np.testing.assert_array_equal(wm[1], [0, 0, 0, 0])
    # default width 7, far distance: all zeros
    assert forecast_windows(v, 20).shape == (5, 14)
    assert not forecast_windows(v, 20).any()


def test_fir_delays_zero_padding_per_segment_no_wrap():
    X = np.arange(1, 8, dtype=float)[:, None]          # two segments: 4 + 3 TRs
    out = fir_delays(X, delays=range(3), segment_lengths=[4, 3])
    assert out.shape == (7, 3) and out.dtype == np.float32
    expected = np.array([
        [1, 0, 0],
        [2, 1, 0],
        [3, 2, 1],
        [4, 3, 2],
        [5, 0, 0],     # segment start: no value from the previous segment
        [6, 5, 0],
        [7, 6, 5],
    ])
    np.testing.assert_array_equal(out, expected)
    # one segment: never wrapped (np.roll would put 7 at row 0)
    one = fir_delays(X, delays=[0, 1], segment_lengths=None)
    assert one[0, 1] == 0
    # a delay longer than a segment gives zeros there
    long = fir_delays(X, delays=[5], segment_lengths=[4, 3])
    assert not long.any()
    # column layout: block j = delay j
    X2 = np.array([[1.0, 10.0], [2.0, 20.0]])
    np.testing.assert_array_equal(fir_delays(X2, [0, 1], [2]), [[1, 10, 0, 0], [2, 20, 1, 10]])
    with pytest.raises(ValueError):
        fir_delays(X, segment_lengths=[3, 3])


def _huth_lanczos(data, oldtime, newtime, window=3):
    """Reference: Huth et al. (2016)'s lanczosinterp2D, written out as its per-sample loop
    (cutoff = 1 / the new sampling interval)."""
    cutoff = 1.0 / np.mean(np.diff(newtime))
    out = np.zeros((len(newtime), data.shape[1]))
    for i, t_new in enumerate(newtime):
        for j, t_old in enumerate(oldtime):
            t = (t_new - t_old) * cutoff
            if t == 0:
                w = 1.0
            elif abs(t) > window:
                w = 0.0
            else:
                w = window * np.sin(np.pi * t) * np.sin(np.pi * t / window) / (np.pi ** 2 * t ** 2)
            out[i] += w * data[j]
    return out


@pytest.mark.parametrize("tr_offset", [0, 1])
def test_words_to_trs_lanczos_matches_huth_reference(tr_offset):
    rng = np.random.default_rng(0)
    onsets = np.sort(rng.uniform(0, 30, 40))
    values = rng.standard_normal((40, 3))
    n_trs = 22
    centres = (np.arange(n_trs) - tr_offset + 0.5) * 1.5    # the volume each "sum" bin maps to
    ref = _huth_lanczos(values, onsets, centres)
    out = words_to_trs(values, onsets, 1.5, n_trs, tr_offset=tr_offset, method="lanczos")
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_lanczos_is_reachable_from_the_config(tmp_path):
    """features.tr_method: lanczos passes the schema and reaches the design of a fit."""
    import pandas as pd

    from brainpred.config import prepare_config

    cfg = prepare_config({"dataset": {"source": "synthetic", "root": str(tmp_path)},
                          "features": {"tr_method": "lanczos"}}, check_model=False)
    rng = np.random.default_rng(1)
    words = pd.DataFrame({"word": [f"w{i}" for i in range(30)],
                          "start": np.sort(rng.uniform(0, 20, 30))})
    acts = rng.standard_normal((2, 30, 4)).astype(np.float32)
    runs = pd.DataFrame([{"basename": "sub-001_task-a", "story": "a", "audio_onset": 2.0,
                          "tr": 1.5, "n_trs": 18}])
    X, windows, _, _ = design.subject_design(runs, {"a": (acts, words)}, 1, [0],
                                             tr_method=cfg["features"]["tr_method"])
    centres = (np.arange(18) - 1 + 0.5) * 1.5
    np.testing.assert_allclose(X, _huth_lanczos(acts[1], words["start"] + 2.0, centres),
                               atol=1e-5)
