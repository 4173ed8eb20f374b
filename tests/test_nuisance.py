"""Nuisance regressors (brainpred.nuisance): word-level values, the audio envelope on the TR
grid, their blocks in every condition, the audio's early check, and a planted patch driven
only by the word rate whose forecast score the word_rate regressor removes."""

import numpy as np
import pandas as pd
import pytest
from scipy.io import wavfile
from wordfreq import zipf_frequency

from brainpred import conditions as cond
from brainpred import design, mapping, narratives, nuisance
from brainpred.conditions import Block
from brainpred.errors import ConfigError, DataError
from brainpred.stages.common import load_story_audio, nuisance_audio
from brainpred.stages.mapping import make_fit_scores
from factories import config, fit_config, fit_inputs


def _runs(n_trs, tr=1.5, onset=0.0, story="a"):
    return pd.DataFrame({"basename": ["sub-001_task-a"], "story": [story],
                         "audio_onset": [onset], "tr": [tr], "n_trs": [n_trs]})


def test_word_rate_per_tr_is_a_hand_count():
    rng = np.random.default_rng(0)
    onsets = np.sort(rng.uniform(0, 60, 50))
    words = pd.DataFrame({"word": ["w"] * 50, "start": onsets, "end": onsets + 0.1})
    tr, n_trs, onset = 1.5, 45, 2.0
    src = design.WordSources({"a": words}, {"a": np.zeros((1, 50, 2), np.float32)})
    (rate,), _, _ = design.block_design(_runs(n_trs, tr, onset), src,
                                        [Block("nuisance:word_rate", 0)], tr_offset=1)
    hand = np.zeros(n_trs)
    for t in onsets:
        i = int((t + onset) // tr) + 1
        if i < n_trs:
            hand[i] += 1
    assert rate.shape == (n_trs, 1)
    np.testing.assert_array_equal(rate[:, 0], hand)


def test_word_length_and_frequency():
    words = pd.DataFrame({"word": ["the", "didn't", "lighthouse", "1921", "xqzvbk"]})
    np.testing.assert_array_equal(nuisance.word_values(words, "word_length")[:, 0],
                                  [3, 5, 10, 4, 6])
    freq = nuisance.word_values(words, "word_frequency")[:, 0]
    np.testing.assert_allclose(freq, [zipf_frequency(w, "en") for w in words["word"]],
                               rtol=1e-6)
    assert freq[0] > 7 and freq[-1] == 0          # unknown words: 0
    np.testing.assert_array_equal(nuisance.word_values(words, "word_rate")[:, 0], 1)
    with pytest.raises(ConfigError, match="unknown"):
        nuisance.word_values(words, "pitch")


def test_envelope_burst_lands_on_its_tr():
    rate, tr, n_trs, onset = 1000, 1.5, 40, 3.0
    x = np.zeros(int(30 * rate))
    burst = slice(int(10.5 * rate), int(11.5 * rate))     # file time 10.5-11.5 s
    x[burst] = np.random.default_rng(0).standard_normal(burst.stop - burst.start)
    env = nuisance.audio_envelope(x, rate, tr, n_trs, audio_onset=onset, tr_offset=1)
    assert env.shape == (n_trs, 1) and env.dtype == np.float32
    # scan time 13.5-14.5 s: floor(13.5 / 1.5) + 1 = TR 10
    assert int(np.argmax(env[:, 0])) == 10
    # 0 before the audio starts (scan time 3 s: TRs 0..2) and after it ends (33 s: TR 23 on)
    assert np.all(env[:3, 0] == 0) and np.all(env[23:, 0] == 0)
    # without the onset the burst moves 2 TRs earlier
    env0 = nuisance.audio_envelope(x, rate, tr, n_trs, audio_onset=0.0, tr_offset=1)
    assert int(np.argmax(env0[:, 0])) == 8


def test_envelope_removes_modulation_above_the_tr_nyquist():
    """A 0.5 Hz loudness modulation (TR 1.5 s: Nyquist 0.33 Hz) is removed, where sampling the
    envelope at the TRs (naive decimation) aliases it to a strong 0.17 Hz oscillation."""
    rate, tr, n_trs = 2000, 1.5, 100
    t = np.arange(int(n_trs * tr * rate)) / rate
    loud = 1 + 0.8 * np.sin(2 * np.pi * 0.5 * t)
    x = loud * np.sin(2 * np.pi * 300 * t)
    env = nuisance.audio_envelope(x, rate, tr, n_trs, tr_offset=0)[5:-5, 0]
    naive = np.abs(x).reshape(n_trs, -1)[:, :int(0.05 * rate)].mean(1)[5:-5]  # 50 ms a TR
    assert naive.std() > 0.3 * naive.mean()
    assert env.std() < 0.01 * env.mean()
    # a slow modulation (0.05 Hz) passes
    slow = (1 + 0.8 * np.sin(2 * np.pi * 0.05 * t)) * np.sin(2 * np.pi * 300 * t)
    env_slow = nuisance.audio_envelope(slow, rate, tr, n_trs, tr_offset=0)[5:-5, 0]
    assert env_slow.std() > 0.3 * env_slow.mean()


def test_mono_scales_int_pcm_and_averages_channels():
    x = np.array([[32767, -32767], [16384, 16384]], np.int16)
    np.testing.assert_allclose(nuisance.mono(x), [0.0, 16384 / 32767])


def test_audio_path_and_span_of_shared_audio(tmp_path):
    assert narratives.audio_path(tmp_path, "pieman") == tmp_path / "stimuli/pieman_audio.wav"
    for part in ("slumlord", "reach"):
        assert narratives.audio_path(tmp_path, part).name == "slumlordreach_audio.wav"
    split = narratives.SLUMLORDREACH_SPLIT
    assert narratives.audio_span("slumlord") == (0.0, split)
    assert narratives.audio_span("reach")[0] == split
    # the two parts of one run sum to the whole file's envelope
    rate, tr = 100, 1.5
    x = np.random.default_rng(1).standard_normal(int((split + 60) * rate))
    n_trs = int((split + 70) / tr)
    whole = nuisance.audio_envelope(x, rate, tr, n_trs)
    parts = sum(nuisance.audio_envelope(x, rate, tr, n_trs, span=narratives.audio_span(p))
                for p in ("slumlord", "reach"))
    far = np.abs(np.arange(n_trs) * tr - tr - split) > 30   # away from the cut (ringing)
    np.testing.assert_allclose(parts[far], whole[far], rtol=1e-4, atol=1e-6)


def test_missing_wav_is_an_early_error(tmp_path):
    (tmp_path / "stimuli").mkdir()
    wavfile.write(tmp_path / "stimuli" / "pieman_audio.wav", 8000, np.zeros(80, np.int16))
    narratives.check_audio_files(tmp_path, ["pieman"])
    with pytest.raises(DataError, match=r"tunnel_audio\.wav.*drop audio_envelope"):
        narratives.check_audio_files(tmp_path, ["pieman", "tunnel"])
    link = tmp_path / "stimuli" / "lucy_audio.wav"
    link.symlink_to(tmp_path / "annex" / "object")          # DataLad content not fetched
    with pytest.raises(DataError, match="datalad get"):
        narratives.check_audio_files(tmp_path, ["lucy"])


def test_fit_stage_reads_the_wavs_only_with_audio_envelope(tmp_path):
    path = tmp_path / "a_audio.wav"
    wavfile.write(path, 8000, np.ones(800, np.int16))
    assert nuisance_audio(config(nuisance=["word_rate"]), ["a"]) == {}
    audio = nuisance_audio(config(nuisance=["audio_envelope"]), ["a"], {"a": path})
    assert audio["a"][1] == 8000 and audio["a"][0].shape == (800,)
    with pytest.raises(DataError, match="no audio file"):
        nuisance_audio(config(nuisance=["audio_envelope"]), ["a", "b"], {"a": path})
    with pytest.raises(DataError, match="cannot read"):
        load_story_audio({"a": tmp_path / "missing.wav"})


def test_fit_stage_with_nuisance_blocks(tmp_path):
    """The main fit with every nuisance regressor: the WAV comes from the job's config
    (``audio``, as the workflow's params pass it); the scores change, the design records the
    list; without nuisance the fit file is as before."""
    from brainpred import io
    from brainpred import provenance as prov

    inputs = fit_inputs(tmp_path, n_words=60)
    wav = tmp_path / "a_audio.wav"
    t = np.arange(80 * 4000) / 4000
    wavfile.write(wav, 4000, (3000 * np.sin(2 * np.pi * 440 * t)
                              * (np.sin(2 * np.pi * 0.05 * t) > 0)).astype(np.int16))
    out = {}
    for key, extra in (("plain", {}),
                       ("nuisance", {"nuisance": list(nuisance.NUISANCE),
                                     "audio": {"a": str(wav)}})):
        cfg = {**fit_config(), **extra}
        out[key] = tmp_path / f"{key}.npz"
        make_fit_scores(["sub-001", "sub-002"], inputs["table"], inputs["features"],
                        inputs["bold"], cfg, out[key])
    plain, nz = io.load_npz(out["plain"]), io.load_npz(out["nuisance"])
    assert "nuisance" not in prov.read(out["plain"], plain)["design"]
    assert prov.read(out["nuisance"], nz)["design"]["nuisance"] == list(nuisance.NUISANCE)
    assert plain["sub-001__brain_score"].shape == nz["sub-001__brain_score"].shape
    assert not np.allclose(plain["sub-001__brain_score"], nz["sub-001__brain_score"])
    with pytest.raises(DataError, match="no audio file"):
        make_fit_scores(["sub-001"], inputs["table"], inputs["features"], inputs["bold"],
                        {**fit_config(), "nuisance": ["audio_envelope"]}, tmp_path / "x.npz")


def test_nuisance_blocks_in_every_condition():
    plain = config()
    on = config(nuisance=["audio_envelope", "word_rate"])
    assert cond.nuisance_blocks(plain) == ()
    expected = (Block("nuisance:word_rate", 0), Block("nuisance:audio_envelope", 0))
    assert cond.nuisance_blocks(on) == expected                 # NUISANCE order
    for analysis in ("main", "layers", "controls", "syntax"):
        base = cond.conditions(analysis, plain, 12, width_distance=5)
        extra = cond.conditions(analysis, on, 12, width_distance=5)
        assert [c.name for c in base] == [c.name for c in extra]
        for b, e in zip(base, extra):
            assert e.blocks == b.blocks + expected


def test_audio_envelope_block_in_the_design():
    rate, tr, n_trs = 1000, 1.5, 30
    x = np.random.default_rng(2).standard_normal(20 * rate)
    words = pd.DataFrame({"word": ["a", "b"], "start": [1.0, 2.0], "end": [1.5, 2.5]})
    src = design.WordSources({"a": words}, {"a": np.zeros((1, 2, 3), np.float32)},
                             audio={"a": (x, rate)})
    (env,), _, _ = design.block_design(_runs(n_trs, tr, 4.5), src,
                                       [Block("nuisance:audio_envelope", 0)])
    np.testing.assert_allclose(env, nuisance.audio_envelope(x, rate, tr, n_trs, 4.5))
    with pytest.raises(ValueError, match="no forecast window"):
        src.block("a", Block("nuisance:word_rate", 0, 3, 7))


# --------------------------------------------------------------------------------------------
# Planted: a patch driven only by the word rate
# --------------------------------------------------------------------------------------------

def _rate_patch(seed, n_trs=500, tr=1.5, dim=16, mean=0.45, noise=1.0):
    """Word vectors = zero-mean content (3 strong directions, weak elsewhere, rotated off the
    columns) + a small shared mean in the weak directions; bursty speech; BOLD = the word
    count per TR through 3 delays, plus noise (made here, not by brainpred)."""
    rng = np.random.default_rng(seed)
    lam = np.repeat(rng.choice([0.5, 2.0, 4.0], n_trs // 10 + 1), 10)[:n_trs]
    counts = rng.poisson(lam)
    counts[-8:] = 0
    onsets = np.concatenate([np.sort(t * tr + rng.uniform(0, tr, c))
                             for t, c in enumerate(counts)])
    n = len(onsets)
    scale = np.r_[np.ones(3), np.full(dim - 3, 0.3)]
    m = np.r_[np.zeros(3), rng.standard_normal(dim - 3)]
    m *= mean / np.linalg.norm(m)
    Q = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    acts = ((rng.standard_normal((n, dim)) * scale + m) @ Q)[None].astype(np.float32)
    words = pd.DataFrame({"word": ["w"] * n, "start": onsets, "end": onsets + 0.2})
    idx = np.floor(onsets / tr).astype(int) + 1
    c = np.bincount(idx[idx < n_trs], minlength=n_trs).astype(float)
    drive = sum(w * np.r_[np.zeros(k), c[:n_trs - k]] for k, w in ((1, .5), (2, 1.), (3, .7)))
    drive = (drive - drive.mean()) / drive.std()
    Y = drive[:, None] + noise * rng.standard_normal((n_trs, 8))
    return acts, words, Y.astype(np.float32), n_trs


@pytest.mark.parametrize("seed", [0, 1])
def test_word_rate_nuisance_removes_a_rate_driven_forecast_score(seed):
    """The TR sum of X carries the word count weakly (its 3 PCs keep the content), a window
    sums 7 words per word so the shared mean (the count) survives its PCA: W explains the
    rate patch, F > 0. With word_rate in both models F is about 0.
    Measured (seeds 0-5): F 0.41-0.67 without, mean |F| <= 0.01 and max |F| <= 0.023 with."""
    acts, words, Y, n_trs = _rate_patch(seed)
    src = design.WordSources({"a": words}, {"a": acts})
    X, W, N = Block("acts", 0), Block("acts", 0, 5, 7), Block("nuisance:word_rate", 0)
    arrays, lengths, _ = design.block_design(_runs(n_trs), src, [X, W, N])
    s = mapping.design_scores(arrays, [(0,), (0, 1), (0, 2), (0, 1, 2)], [Y], lengths,
                              n_components=3, delays=range(6), alphas=np.logspace(-1, 6, 8),
                              n_folds=5, n_inner_folds=5, backend="numpy")[0]
    F_plain, F_nuisance = s[1] - s[0], s[3] - s[2]
    assert F_plain.min() > 0.3
    assert abs(F_nuisance.mean()) < 0.015 and np.abs(F_nuisance).max() < 0.04
    assert s[2].mean() > 0.5                      # the nuisance explains the patch itself
