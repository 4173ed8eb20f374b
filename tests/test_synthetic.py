"""The synthetic Narratives-shaped dataset: layout, quirks, planted truth, determinism."""

import json

import numpy as np
import pandas as pd
import pytest

from brainpred import narratives, synthetic
from brainpred.config import apply_defaults, load_schema
from brainpred.errors import ConfigError


def _tiny_config(**synthetic_kw):
    cfg = {"synthetic": {"n_subjects": 3, "n_stories": 2, "stories_per_subject": 1,
                         "speech_duration": 40.0, "seed": 3, **synthetic_kw},
           "model": {"name": "tiny-gpt2", "seed": 0},
           "features": {"tr_offset": 1}, "mapping": {"delays": [0, 1, 2, 3, 4, 5]}}
    return apply_defaults(cfg, load_schema())      # every other key at its schema default


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, _tiny_config(), progress=False)
    return root


def test_make_story_rate_and_punctuation():
    rng = np.random.default_rng(0)
    text, words = synthetic.make_story(rng, 100.0, 2.5, speech_start=12.0)
    assert words["start"].iloc[0] == pytest.approx(12.0)
    rate = len(words) / (words["end"].iloc[-1] - 12.0)
    assert rate == pytest.approx(2.5, rel=0.01)
    assert np.all(np.diff(words["start"]) > 0)
    assert np.all(words["end"] > words["start"])
    assert any(ch in text for ch in ".,?")
    # Gentle strips punctuation and splits hyphenated words
    assert not words["word"].str.contains(r"[.,?\"-]").any()


def test_plan_layout():
    cfg = _tiny_config()
    cfg["synthetic"].update(n_subjects=6, n_stories=3, stories_per_subject=2)
    plan = synthetic.plan(cfg)
    assert plan["subject"].nunique() == 6
    assert plan.groupby("subject")["story"].apply(frozenset).nunique() > 1
    assert plan["excluded"].sum() == 1
    # one audio onset per story, and they differ between stories
    onsets = plan.groupby("story")["audio_onset"].unique()
    assert all(len(v) == 1 for v in onsets)
    assert len({v[0] for v in onsets}) == 3


def test_plan_rejects_bad_settings():
    with pytest.raises(ConfigError, match="synthetic.n_stories"):
        synthetic.plan(_tiny_config(n_stories=99))
    with pytest.raises(ConfigError, match="stories_per_subject"):
        synthetic.plan(_tiny_config(stories_per_subject=5))


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
        # Gentle quirks: <unk> dictionary words (numbers always are)
        assert (raw[1] == "<unk>").any()
        # music before speech or a non-zero audio onset
        ev = pd.read_csv(next((tiny_dataset / "sub-001" / "func").glob("*_events.tsv")),
                         sep="\t")
        assert ev["trial_type"].iloc[-1] == "story"


def test_missing_times_are_written_and_interpolated(tmp_path):
    root = tmp_path / "ds"
    cfg = _tiny_config(missing_time_rate=0.2, n_subjects=2, n_stories=1)
    synthetic._write_text_files(root, synthetic._settings(cfg), np.random.default_rng(0))
    raw = pd.read_csv(root / "stimuli" / "gentle" / "lighthouse" / "align.csv", header=None)
    assert raw[2].isna().sum() > 5
    words, _ = narratives.story_words(root, "lighthouse")
    assert words["interpolated"].sum() == raw[2].isna().sum()
    assert np.all(np.isfinite(words["start"]))


def test_bold_has_medial_wall_nan_and_planted_patches(tiny_dataset):
    truth = json.loads((tiny_dataset / synthetic.TRUTH_DIR / "ground_truth.json").read_text())
    table = narratives.build_run_table(tiny_dataset, space="fsaverage5")
    row = table[table["kept"]].iloc[0]
    bold = narratives.load_bold(tiny_dataset / row["bold_L"], tiny_dataset / row["bold_R"])
    assert bold.shape == (row["n_trs"], 20484)
    medial = np.array(truth["medial_wall"])
    assert np.isnan(bold[:, medial]).all()
    assert not np.isnan(np.delete(bold, medial, axis=1)).any()
    assert truth["d_true"] == 8
    assert set(truth["patches"]) == {"auditory", "temporal", "frontal", "psts", "syntactic",
                                     "semantic"}
    assert truth["layers"] == {"frontal": 8, "psts": 0}
    assert truth["syntax"] == {"d_syntactic": 8, "d_semantic": 22}
    # patches do not overlap
    seen = [v for vs in truth["patches"].values() for v in vs]
    assert len(seen) == len(set(seen))
    for name, vertices in truth["patches"].items():
        assert 40 < len(vertices) < 400, name
        assert not set(vertices) & set(medial.tolist())
    # the auditory patch follows the word rate: it correlates with the words per TR
    words, _ = narratives.story_words(tiny_dataset, row["story"])
    from brainpred import design

    rate = design.words_to_trs(np.ones((len(words), 1), np.float32),
                               words["start"].to_numpy() + row["audio_onset"], 1.5,
                               int(row["n_trs"]))[:, 0]
    rate = np.convolve(rate, synthetic.spm_hrf(1.5, 9.0))[: len(rate)]
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
    assert {"L frontal", "R auditory"} <= set(names.values())


def test_generation_is_deterministic(tiny_dataset, tmp_path):
    again = tmp_path / "again"
    synthetic.generate(again, _tiny_config(), progress=False)
    for rel in synthetic.output_files(_tiny_config()):
        assert (tiny_dataset / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_spm_hrf_peaks_near_five_seconds():
    h = synthetic.spm_hrf(0.1)
    assert 4.5 < np.argmax(h) * 0.1 < 5.5
    assert np.linalg.norm(h) == pytest.approx(1.0)
