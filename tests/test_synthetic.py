"""The synthetic Narratives-shaped dataset: layout, quirks, planted truth, determinism, and its
independence from the pipeline's science code."""

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import gamma

from brainpred import narratives, synthetic
from brainpred.config import apply_defaults, load_schema
from brainpred.errors import ConfigError

SYNTHETIC_SOURCE = Path(synthetic.__file__)
#: What the generator may import from the package: I/O and errors (mesh helpers come from
#: nilearn directly).
ALLOWED = {"io", "errors"}


def _tiny_config(**synthetic_kw):
    cfg = {"synthetic": {"n_subjects": 3, "n_stories": 2, "stories_per_subject": 1,
                         "speech_duration": 40.0, "seed": 3, "n_futures": 2, **synthetic_kw},
           "dataset": {"source": "synthetic"}}
    return apply_defaults(cfg, load_schema())      # every other key at its schema default


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, _tiny_config(), progress=False)
    return root


def _truth(root):
    return json.loads((root / synthetic.TRUTH_DIR / "ground_truth.json").read_text())


def test_generator_imports_no_pipeline_science():
    """The generator shares no science code with the pipeline: from the package it imports only
    I/O and error helpers (read from its source, so a new import cannot slip in)."""
    tree = ast.parse(SYNTHETIC_SOURCE.read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level > 0:                      # from . import x / from .x import y
                used |= ({node.module.split(".")[0]} if node.module
                         else {a.name for a in node.names})
            elif node.module and node.module.split(".")[0] == "brainpred":
                used.add(node.module.split(".")[1] if "." in node.module else "brainpred")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "brainpred":
                    used.add(a.name.split(".")[1] if "." in a.name else "brainpred")
    assert used <= ALLOWED, f"brainpred.synthetic imports {sorted(used - ALLOWED)}"
    assert "io" in used        # the check reads real imports


def test_make_story_rate_spans_and_punctuation():
    rng = np.random.default_rng(0)
    sentences, text, words = synthetic.make_story(rng, 100.0, 2.5, speech_start=12.0)
    assert words["start"].iloc[0] == pytest.approx(12.0)
    assert words["end"].iloc[-1] == pytest.approx(112.0)
    assert len(words) == pytest.approx(250, abs=25)
    assert np.all(np.diff(words["start"]) > 0)
    assert np.all(words["end"] > words["start"])
    assert any(ch in text for ch in ".,?")
    # Gentle strips punctuation and splits hyphenated words; spans point at the written word
    assert not words["word"].str.contains(r"[.,?\"-]").any()
    for w, cs, ce in words[["word", "char_start", "char_end"]].itertuples(index=False):
        assert text[cs:ce] == w
    # timing is irregular (pauses between sentences): gaps spread well beyond a fixed step
    gaps = np.diff(words["start"])
    assert gaps.max() > 4 * np.median(gaps)


def test_alternative_stories_keep_structure_and_alignment():
    rng = np.random.default_rng(1)
    sentences, text, words = synthetic.make_story(rng, 60.0, 2.5, speech_start=0.0)
    alt = synthetic._alternative(sentences, np.random.default_rng(2))
    alt_text, alt_words = synthetic._transcript(alt)
    assert len(alt_words) == len(words)
    assert alt_text != text
    cats = [[it[0] for it in s if isinstance(it, tuple)] for s in sentences]
    assert cats == [[it[0] for it in s if isinstance(it, tuple)] for s in alt]
    changed = np.mean([a[0] != b for a, b in zip(alt_words, words["word"])])
    assert changed > 0.5


def test_window_sums_against_a_loop():
    v = np.random.default_rng(0).standard_normal(30)
    for d, w in ((0, 1), (5, 7), (-3, 7), (15, 7), (40, 7), (-40, 3)):
        ref = [sum(v[j] for j in range(n + d - w + 1, n + d + 1) if 0 <= j < 30)
               for n in range(30)]
        np.testing.assert_allclose(synthetic.window_sums(v, d, w), ref, atol=1e-12)


def test_spm_hrf_shape():
    t = np.arange(-2.0, 40.0, 0.01)
    h = synthetic.spm_hrf(t)
    assert 4.5 < t[np.argmax(h)] < 5.5 and h.max() == pytest.approx(1.0, abs=1e-3)
    assert np.all(h[t <= 0] == 0) and np.all(h[t > 32] == 0)
    assert h[(t > 12) & (t < 20)].min() < 0           # the undershoot
    ref = gamma.pdf(7.0, 6.0) - gamma.pdf(7.0, 16.0) / 6.0
    peak = gamma.pdf(5.0, 6.0) - gamma.pdf(5.0, 16.0) / 6.0
    assert synthetic.spm_hrf(7.0) == pytest.approx(ref / peak)


def test_noise_is_smooth_in_space_and_ar1_in_time():
    ops = synthetic._smoothing_operators()
    e = synthetic._noise(np.random.default_rng(0), 4000, ops, 4, 0.4)
    assert e.shape == (4000, 20484)
    np.testing.assert_allclose(e.std(0)[:50], 1.0, atol=0.05)
    lag1 = np.mean(e[1:, :200] * e[:-1, :200])
    assert lag1 == pytest.approx(0.4, abs=0.03)
    # neighbouring vertices (a mesh edge) correlate; distant ones do not
    from nilearn import datasets

    faces = np.asarray(datasets.load_fsaverage("fsaverage5")["pial"].parts["left"].faces)
    a, b = faces[:100, 0], faces[:100, 1]
    near = np.mean([np.corrcoef(e[:, i], e[:, j])[0, 1] for i, j in zip(a, b)])
    far = np.mean([np.corrcoef(e[:, i], e[:, i + 5000])[0, 1] for i in a])
    assert near > 0.5 and abs(far) < 0.05


def test_plan_layout():
    cfg = _tiny_config()
    cfg["synthetic"].update(n_subjects=6, n_stories=3, stories_per_subject=2)
    plan = synthetic.plan(cfg)
    assert plan["subject"].nunique() == 6
    assert plan.groupby("subject")["story"].apply(frozenset).nunique() > 1
    assert plan["excluded"].sum() == 1
    onsets = plan.groupby("story")["audio_onset"].unique()
    assert all(len(v) == 1 for v in onsets)
    assert len({v[0] for v in onsets}) == 3


def test_plan_rejects_bad_settings():
    with pytest.raises(ConfigError, match="synthetic.n_stories"):
        synthetic.plan(_tiny_config(n_stories=99))
    with pytest.raises(ConfigError, match="stories_per_subject"):
        synthetic.plan(_tiny_config(stories_per_subject=5))
    cfg = _tiny_config()
    del cfg["synthetic"]["noise_ar"]
    with pytest.raises(ConfigError, match="synthetic.noise_ar: missing"):
        synthetic.plan(cfg)


def test_generated_files_match_output_files(tiny_dataset):
    for rel in synthetic.output_files(_tiny_config()):
        assert (tiny_dataset / rel).is_file(), rel


def test_dataset_reads_like_narratives(tiny_dataset):
    table = narratives.build_run_table(tiny_dataset, space="fsaverage5")
    kept = table[table["kept"]]
    assert len(kept) == 3 and set(table.loc[~table["kept"], "reason"]) == {"scan_exclude"}
    assert set(kept["tr"]) == {1.5}
    assert (kept["n_trs"] > 0).all()
    for story in kept["story"].unique():
        words, text = narratives.story_words(tiny_dataset, story)
        assert len(words) > 50
        raw = pd.read_csv(tiny_dataset / "stimuli" / "gentle" / story / "align.csv",
                          header=None)
        assert (raw[1] == "<unk>").any()         # Gentle quirks: <unk> dictionary words
        ev = pd.read_csv(next((tiny_dataset / "sub-001" / "func").glob("*_events.tsv")),
                         sep="\t")
        assert ev["trial_type"].iloc[-1] == "story"


def test_missing_times_are_written_and_interpolated(tmp_path):
    root = tmp_path / "ds"
    cfg = _tiny_config(missing_time_rate=0.2, n_subjects=2, n_stories=1)
    _, stories = synthetic._write_text_files(root, synthetic._settings(cfg),
                                             np.random.default_rng(0))
    raw = pd.read_csv(root / "stimuli" / "gentle" / "lighthouse" / "align.csv", header=None)
    assert raw[2].isna().sum() > 5
    words, _ = narratives.story_words(root, "lighthouse")      # the pipeline's reading
    assert words["interpolated"].sum() == raw[2].isna().sum()
    mine = synthetic._word_onsets(root, "lighthouse", len(stories["lighthouse"]["words"]))
    true = stories["lighthouse"]["words"]["start"].to_numpy()
    known = raw[2].notna().to_numpy()
    np.testing.assert_allclose(mine[known], true[known], atol=1e-5)
    assert np.abs(mine - true).max() < 2.0          # interpolated within a few words' time


def test_generator_activations_equal_the_pipeline_features(tmp_path, cache_dir, one_torch_thread):
    """Two independent implementations agree: the generator's plain HuggingFace pass (one
    window per word, its own tokeniser, model construction and word spans) and the pipeline's
    fast extraction on the files it reads (its own spans, read at each word's last letter)."""
    from brainpred import features, lm

    cfg = _tiny_config(n_stories=1, n_subjects=2)
    _, stories = synthetic._write_text_files(tmp_path, synthetic._settings(cfg),
                                             np.random.default_rng(3))
    story = stories["lighthouse"]
    model, tokenizer = lm.load_model("tiny-gpt2", seed=0, device="cpu")
    gen_model, encode = synthetic._language_model("tiny-gpt2", 0)
    words, text = narratives.story_words(tmp_path, "lighthouse")
    assert text == story["text"] and words["word"].tolist() == story["words"]["word"].tolist()
    ours = features.story_features(words, text, model, tokenizer)
    theirs = synthetic._word_activations(gen_model, encode, story["text"], story["words"],
                                         [0, 4, 12], 1024)
    for k in (0, 4, 12):
        np.testing.assert_allclose(ours[k], theirs[k], atol=2e-4, rtol=1e-3)
    one_pass = synthetic._story_activations(gen_model, encode, story["text"], story["words"],
                                            4, 1024)
    np.testing.assert_allclose(one_pass, theirs[4], atol=2e-4, rtol=1e-3)


def test_bold_has_medial_wall_nan_and_planted_patches(tiny_dataset):
    truth = _truth(tiny_dataset)
    table = narratives.build_run_table(tiny_dataset, space="fsaverage5")
    row = table[table["kept"]].iloc[0]
    bold = narratives.load_bold(tiny_dataset / row["bold_L"], tiny_dataset / row["bold_R"])
    assert bold.shape == (row["n_trs"], 20484)
    medial = np.array(truth["medial_wall"])
    assert np.isnan(bold[:, medial]).all()
    assert not np.isnan(np.delete(bold, medial, axis=1)).any()
    assert truth["distances"] == {"frontal": 15, "psts": 5, "shallow": 15, "syntactic": 8,
                                  "semantic": 22}
    assert set(truth["patches"]) == set(synthetic.PATCHES)
    assert truth["layers"] == {"frontal": 8, "psts": 8, "shallow": 0}
    seen = [v for vs in truth["patches"].values() for v in vs]
    assert len(seen) == len(set(seen))                                 # no overlap
    for name, vertices in truth["patches"].items():
        assert 40 < len(vertices) < 400, name
        assert not set(vertices) & set(medial.tolist())
    for name, r in truth["signal_r"].items():
        assert 0.1 < r < 0.95, (name, r)
    # the auditory patch follows the word rate, written here in continuous time with scipy:
    # one impulse per word at its scan time, the SPM HRF, sampled at mid-volume
    words, _ = narratives.story_words(tiny_dataset, row["story"])
    t = 1.5 * (np.arange(int(row["n_trs"])) + 0.5)
    lag = t[:, None] - (words["start"].to_numpy() + row["audio_onset"])[None, :]
    h = np.where(lag > 0, gamma.pdf(lag, 6.0) - gamma.pdf(lag, 16.0) / 6.0, 0.0)
    rate = h.sum(1)
    aud = bold[:, truth["patches"]["auditory"]].mean(1)
    planted = np.concatenate([medial] + [np.array(v) for v in truth["patches"].values()])
    other = bold[:, np.setdiff1d(np.arange(20484), planted)[:200]].mean(1)
    assert np.corrcoef(rate, aud)[0, 1] > 0.5
    assert abs(np.corrcoef(rate, other)[0, 1]) < 0.4


def test_labels_written(tiny_dataset):
    from brainpred.regions import load_labels

    labels, names = load_labels(
        tiny_dataset / synthetic.TRUTH_DIR / "space-fsaverage5_hemi-L_desc-patches_dseg.label.gii",
        tiny_dataset / synthetic.TRUTH_DIR / "space-fsaverage5_hemi-R_desc-patches_dseg.label.gii")
    assert labels.shape == (20484,)
    assert {"L frontal", "R auditory", "L shallow"} <= set(names.values())


def test_generation_is_deterministic(tiny_dataset, tmp_path):
    again = tmp_path / "again"
    synthetic.generate(again, _tiny_config(), progress=False)
    for rel in synthetic.output_files(_tiny_config()):
        assert (tiny_dataset / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_audio_follows_the_word_timing(tiny_dataset):
    """stimuli/<story>_audio.wav: its envelope on the TR grid (brainpred.nuisance, the
    pipeline's reading) follows the words' count per TR, counted here from align.csv."""
    from scipy.io import wavfile

    from brainpred.nuisance import audio_envelope

    for story in synthetic.STORY_NAMES[:2]:
        rate, audio = wavfile.read(tiny_dataset / "stimuli" / f"{story}_audio.wav")
        assert rate == synthetic.AUDIO_RATE and audio.dtype == np.int16
        raw = pd.read_csv(tiny_dataset / "stimuli" / "gentle" / story / "align.csv",
                          header=None)
        start = raw[2].interpolate().to_numpy(float)
        assert len(audio) / rate > np.nanmax(raw[3])          # lasts past the last word
        tr, n_trs = synthetic.TR, int(len(audio) / rate / synthetic.TR) + 2
        count = np.bincount((start // tr).astype(int) + 1, minlength=n_trs)[:n_trs]
        env = audio_envelope(audio, rate, tr, n_trs, tr_offset=1)[:, 0]
        assert np.corrcoef(env, count)[0, 1] > 0.75      # measured: 0.85, 0.94


def test_a_missing_wav_stops_the_workflow_at_start(tiny_dataset, tmp_path):
    """Read as a local Narratives copy with nuisance audio_envelope, the plan (computed when
    Snakemake starts) refuses a story without its stimuli/<story>_audio.wav, naming it."""
    from brainpred.errors import DataError
    from brainpred.plan import run_plan

    cfg = _tiny_config()
    cfg["dataset"].update(source="local", root=str(tiny_dataset))
    cfg["nuisance"] = ["audio_envelope"]
    assert len(run_plan(cfg)) == 3
    copy = tmp_path / "copy"                       # the dataset without its WAVs
    (copy / "stimuli").mkdir(parents=True)
    for p in tiny_dataset.iterdir():
        if p.name != "stimuli":
            (copy / p.name).symlink_to(p)
    (copy / "stimuli" / "gentle").symlink_to(tiny_dataset / "stimuli" / "gentle")
    cfg["dataset"]["root"] = str(copy)
    with pytest.raises(DataError, match=r"stimuli/lighthouse_audio\.wav.*drop audio_envelope"):
        run_plan(cfg)
    cfg["nuisance"] = ["word_rate"]
    assert len(run_plan(cfg)) == 3
