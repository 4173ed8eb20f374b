"""Mutation table: every check below can fail.

Each entry of :data:`MUTATIONS` seeds one known bug through ``monkeypatch`` (patched where the
pipeline looks the attribute up) and names the check that must catch it. The parametrized test
runs the check clean (it must pass) and under the mutation (it must raise ``AssertionError``).
The checks compare the pipeline's entry functions (``design.subject_design``,
``mapping.forecast_scores`` / ``forecast_scores_shared``, ``noise_ceiling.other_subjects_mean``,
``features.story_features``) with references written here with numpy, scikit-learn and plain
HuggingFace only, or with a null bound derived from the data size.

Run ``PYTHONPATH=src python tests/test_sensitivity.py`` to print the table that
``docs/sensitivity.md`` holds.
"""

import math
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from brainpred import design, features, lm, mapping  # noqa: E402
from brainpred import noise_ceiling as nc  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "sensitivity.md"
ALPHAS = np.logspace(-1, 8, 10)


# ============================================================================================
# independent references (numpy / scikit-learn / HuggingFace only)
# ============================================================================================

def _ref_fir(Z, delays, segments):
    """Naive FIR: row t of delay d holds Z[t - d] of the same segment, else zeros."""
    n, D = Z.shape
    out = np.zeros((n, D * len(delays)))
    start = 0
    for length in segments:
        for t in range(length):
            for j, d in enumerate(delays):
                if 0 <= t - d < length:
                    out[start + t, j * D:(j + 1) * D] = Z[start + t - d]
        start += length
    return out


def _pearson(a, b):
    a = a - a.mean(0)
    b = b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def _ref_scores(blocks, Y, segments, n_components, delays, n_folds=5, n_inner=5):
    """The fold pipeline with scikit-learn only: contiguous outer folds (np.array_split), per
    block StandardScaler + PCA fitted on the training rows, naive FIR, StandardScaler, Ridge
    with the alpha of least mean inner-fold MSE (contiguous inner folds), Pearson r."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    n, V = Y.shape
    Y = Y.astype(np.float64)
    scores = []
    for test in np.array_split(np.arange(n), n_folds):
        train = np.setdiff1d(np.arange(n), test)
        reduced = []
        for X in blocks:
            X = X.astype(np.float64)
            sc = StandardScaler().fit(X[train])
            k = min(n_components, X.shape[1], len(train))
            pca = PCA(k, svd_solver="full").fit(sc.transform(X[train]))
            reduced.append(pca.transform(sc.transform(X)))
        D = _ref_fir(np.concatenate(reduced, 1), delays, segments)
        D = StandardScaler().fit(D[train]).transform(D)
        Dtr, Dte, Ytr = D[train], D[test], Y[train]
        mse = np.zeros((len(ALPHAS), V))
        for val in np.array_split(np.arange(len(train)), n_inner):
            fit = np.setdiff1d(np.arange(len(train)), val)
            for a, alpha in enumerate(ALPHAS):
                p = Ridge(alpha=alpha).fit(Dtr[fit], Ytr[fit]).predict(Dtr[val])
                mse[a] += ((Ytr[val] - p) ** 2).mean(0) / n_inner
        best = mse.argmin(0)
        pred = np.empty((len(test), V))
        for a in np.unique(best):
            cols = best == a
            pred[:, cols] = Ridge(alpha=ALPHAS[a]).fit(Dtr, Ytr[:, cols]).predict(Dte).reshape(
                len(test), -1)
        scores.append(_pearson(Y[test], pred))
    return np.mean(scores, 0)


# ============================================================================================
# data generators (no brainpred code)
# ============================================================================================

def _story(rng, n_words, dim, n_layers=3, gap=0.35):
    starts = np.cumsum(rng.uniform(0.1, 2 * gap, n_words))
    words = pd.DataFrame({"word": [f"w{i}" for i in range(n_words)], "start": starts,
                          "end": starts + 0.1})
    acts = rng.standard_normal((n_layers, n_words, dim)).astype(np.float32)
    return acts, words


def _design_data():
    rng = np.random.default_rng(0)
    feats = {"s1": _story(rng, 90, 3), "s2": _story(rng, 70, 3)}
    runs = pd.DataFrame({
        "basename": ["sub-001_task-s1", "sub-001_task-s2"], "story": ["s1", "s2"],
        "audio_onset": [0.0, 3.1], "tr": [1.5, 2.0], "n_trs": [30, 25]})
    return runs, feats


def _ref_subject_design(runs, feats, layer, distances, width, tr_offset):
    """Naive per-word loop: window of word i = words i+d-width+1 .. i+d (zeros outside the
    story), every word's vectors summed into volume floor(onset / TR) + tr_offset."""
    Xs, Ws = [], {d: [] for d in distances}
    for row in runs.itertuples():
        acts, words = feats[row.story]
        a = acts[layer].astype(np.float64)
        n_words, D = a.shape
        X = np.zeros((row.n_trs, D))
        W = {d: np.zeros((row.n_trs, D * width)) for d in distances}
        for i, start in enumerate(words["start"]):
            v = int(math.floor((start + row.audio_onset) / row.tr)) + tr_offset
            if not 0 <= v < row.n_trs:
                continue
            X[v] += a[i]
            for d in distances:
                for k in range(width):
                    j = i + d - width + 1 + k
                    if 0 <= j < n_words:
                        W[d][v, k * D:(k + 1) * D] += a[j]
        Xs.append(X)
        for d in distances:
            Ws[d].append(W[d])
    return np.concatenate(Xs), {d: np.concatenate(w) for d, w in Ws.items()}


def _mapping_data(seed=0, n=120, V=8):
    """X and one window with signal through FIR delays 0..2; targets of graded signal."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 10))
    W = rng.standard_normal((n, 14))
    segments = [70, 50]
    drive = _ref_fir(np.c_[X[:, :2], W[:, :2]], [1, 2], segments)
    Y = rng.standard_normal((n, V)) + drive @ rng.standard_normal((drive.shape[1], V)) \
        * np.linspace(0.05, 1.0, V)
    return X.astype(np.float32), W.astype(np.float32), Y.astype(np.float32), segments


MAP_KW = dict(n_components=4, delays=range(3), alphas=ALPHAS, n_folds=5, n_inner_folds=5,
              backend="numpy")


def _ceiling_data():
    rng = np.random.default_rng(5)
    n_subjects, n_trs, V = 4, 40, 6
    shared = rng.standard_normal((n_trs, V))
    bold, rows = {}, []
    for s in range(n_subjects):
        base = f"sub-{s + 1:03d}_task-a"
        bold[base] = (shared + rng.standard_normal((n_trs, V))).astype(np.float32)
        rows.append({"subject": f"sub-{s + 1:03d}", "task": "a", "condition": "",
                     "n_trs": n_trs, "basename": base})
    return pd.DataFrame(rows), bold


# ============================================================================================
# checks (each raises AssertionError when the pipeline disagrees with its reference)
# ============================================================================================

def check_subject_design():
    """design.subject_design (X and W_d for d in -2, 0, 3, 8) equals the naive per-word loop
    with volume floor(t / TR) + 1."""
    runs, feats = _design_data()
    distances = [-2, 0, 3, 8]
    X, windows, lengths, groups = design.subject_design(runs, feats, layer=1,
                                                          distances=distances, width=7,
                                                          tr_offset=1)
    ref_X, ref_W = _ref_subject_design(runs, feats, 1, distances, 7, 1)
    assert lengths == [30, 25] and groups.tolist() == [0] * 30 + [1] * 25
    assert np.abs(ref_X).sum() > 0 and all(np.abs(w).sum() > 0 for w in ref_W.values())
    np.testing.assert_allclose(X, ref_X, atol=1e-5)
    for d in distances:
        np.testing.assert_allclose(windows[d], ref_W[d], atol=1e-5, err_msg=f"W_{d}")


def check_mapping_reference():
    """mapping.forecast_scores (R_X and R_{X+W}) equals the scikit-learn fold pipeline over
    the full alpha grid, to 1e-4."""
    X, W, Y, segments = _mapping_data()
    R_X, R_XW = mapping.forecast_scores(X, {3: W}, Y, segments, **MAP_KW)
    ref_X = _ref_scores([X], Y, segments, 4, range(3))
    ref_XW = _ref_scores([X, W], Y, segments, 4, range(3))
    assert np.nanmax(ref_XW) > 0.5                       # the planted signal is found
    np.testing.assert_allclose(R_X, ref_X, atol=1e-4)
    np.testing.assert_allclose(R_XW[0], ref_XW, atol=1e-4)


def check_null_bound():
    """Independent noise (600 TRs, 1,000 targets, the pipeline's 20 components x 6 delays):
    the mean over targets of R(X) and of F(d) is within 3 standard errors of 0.

    Given X, the targets' scores are independent with mean exactly 0 (the test BOLD is
    symmetric and independent of the prediction), so SE = sd(per-target scores) / sqrt(V).
    That sd is about 1 / sqrt(n_TRs) (null sd of a test r over n_test TRs, 1 / sqrt(n_test),
    averaged over 5 folds); measured 1.35 / sqrt(n) for R(X), the folds' r being positively
    correlated through their shared training rows. Checked within 0.7-2 / sqrt(n), so that
    a spread inflated by a bug cannot loosen the bound."""
    rng = np.random.default_rng(4)
    n, V = 600, 1000
    X = rng.standard_normal((n, 30)).astype(np.float32)
    W = rng.standard_normal((n, 30)).astype(np.float32)
    Y = rng.standard_normal((n, V)).astype(np.float32)
    R_X, R_XW = mapping.forecast_scores(X, {5: W}, Y, None, n_components=20, delays=range(6),
                                        backend="numpy")
    for name, s in (("R(X)", R_X), ("F(d)", R_XW[0] - R_X)):
        sd = np.std(s, ddof=1)
        assert 0.7 / np.sqrt(n) < sd < 2.0 / np.sqrt(n), f"{name}: per-target sd {sd:.4f}"
        se = sd / np.sqrt(V)
        assert abs(np.mean(s)) < 3 * se, f"{name}: mean {np.mean(s):.4f}, 3 SE {3 * se:.4f}"


def check_shared_equals_separate():
    """mapping.forecast_scores_shared of 3 subjects equals 3 single-subject forecast_scores
    (and the subjects' scores differ, so a mix-up shows)."""
    X, W, Y, segments = _mapping_data(seed=1, V=18)
    Ys = [Y[:, 0:6], Y[:, 6:12][:, ::-1].copy(), Y[:, 12:18]]
    shared = mapping.forecast_scores_shared(X, {3: W, 8: W[::-1].copy()}, Ys, segments,
                                            target_batch=5, **MAP_KW)
    separate = [mapping.forecast_scores(X, {3: W, 8: W[::-1].copy()}, y, segments, **MAP_KW)
                for y in Ys]
    assert not np.allclose(separate[0][0], separate[1][0], atol=1e-2)
    assert not np.allclose(separate[1][0], separate[2][0], atol=1e-2)
    for s, ((rx, rxw), (ex, exw)) in enumerate(zip(shared, separate)):
        np.testing.assert_allclose(rx, ex, atol=1e-6, err_msg=f"subject {s} R(X)")
        np.testing.assert_allclose(rxw, exw, atol=1e-6, err_msg=f"subject {s} R(X+W)")


def check_ceiling_loo_mean():
    """noise_ceiling.other_subjects_mean, from the BOLD files and from listener sums, equals
    the hand-computed mean of the other subjects (the subject's own BOLD left out)."""
    runs, bold = _ceiling_data()
    load = lambda b, n: bold[b][:n]                   # noqa: E731
    sums = nc.listener_sums(runs, load)
    for subject in ("sub-001", "sub-003"):
        others = [bold[b] for b in bold if not b.startswith(subject)]
        ref = np.mean(np.stack(others).astype(np.float64), 0)
        for with_sums in (None, sums):
            Y, P, lengths, n_others = nc.other_subjects_mean(subject, runs, load,
                                                             sums=with_sums)
            np.testing.assert_array_equal(Y, bold[f"{subject}_task-a"])
            assert lengths == [40] and n_others == [3], (lengths, n_others)
            np.testing.assert_allclose(P, ref, atol=1e-5)


_TINY = {}


def _tiny():
    if not _TINY:
        _TINY["model"], _TINY["tok"] = lm.load_model("tiny-gpt2", seed=0, device="cpu")
    return _TINY["model"], _TINY["tok"]


def check_features_reference():
    """features.story_features (exact mode, 6-token context) equals a plain HuggingFace
    forward pass with output_hidden_states of each word's prefix text (its last 6 tokens),
    read at the last position, every layer (layer 0: the token embedding)."""
    import torch

    model, tok = _tiny()
    word_list = ("once upon a time the old fisherman walked slowly to the harbour and "
                 "counted his boats").split()
    text = " ".join(word_list)
    ends = np.cumsum([len(w) + 1 for w in word_list]) - 1
    words = pd.DataFrame({"word": word_list, "char_start": ends - [len(w) for w in word_list],
                          "char_end": ends})
    C = 6
    ours = features.story_features(words, text, model, tok, context_tokens=C, batch_size=4)
    ref = []
    with torch.no_grad():
        for e in words["char_end"]:
            ids = tok(text[:e])["input_ids"][-C:]
            out = model(torch.tensor([ids]), output_hidden_states=True)
            emb = model.get_input_embeddings()(torch.tensor([ids[-1]]))[0]
            ref.append(torch.stack([emb] + [h[0, -1] for h in out.hidden_states[1:]]).numpy())
    ref = np.stack(ref, 1)
    assert ours.shape == ref.shape == (13, len(word_list), 64)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


# ============================================================================================
# mutations (each seeds one bug with a pytest MonkeyPatch)
# ============================================================================================

def _shifted_windows(shift):
    def apply(mp):
        orig = design.forecast_windows
        mp.setattr(design, "forecast_windows",
                   lambda values, distance, width=7: orig(values, distance + shift, width))
    return apply


def _tr_offset_zero(mp):
    orig = design.tr_indices
    mp.setattr(design, "tr_indices",
               lambda onsets, tr, n_trs, tr_offset=1: orig(onsets, tr, n_trs, 0))


def _patch_fir(mp, fn):
    # the mapping (encoding models and noise ceiling alike) calls fir_delays from design
    for module in (mapping, design):
        mp.setattr(module, "fir_delays", fn)


def _fir_wrapped(mp):
    def rolled(X, delays=range(6), segment_lengths=None):
        X = np.asarray(X, dtype=np.float32)
        X = X[:, None] if X.ndim == 1 else X
        seg = [len(X)] if segment_lengths is None else list(segment_lengths)
        out, start = [], 0
        for length in seg:
            part = X[start:start + length]
            out.append(np.concatenate([np.roll(part, int(d), axis=0) for d in delays], 1))
            start += length
        return np.concatenate(out).astype(np.float32)
    _patch_fir(mp, rolled)


def _fir_reversed(mp):
    orig = design.fir_delays
    _patch_fir(mp, lambda X, delays=range(6), segment_lengths=None:
               orig(X, [-int(d) for d in delays], segment_lengths))


def _standardise_all_rows(mp):
    orig = mapping._fold_design

    def leaky(reduced_blocks, train, test, delays, segment_lengths):
        everything = np.arange(reduced_blocks[0].shape[0])
        D, _ = orig(reduced_blocks, everything, test, delays, segment_lengths)
        return D[train], D[test]
    mp.setattr(mapping, "_fold_design", leaky)


def _block_scaler_all_rows(mp):
    from sklearn.decomposition import PCA

    def leaky(X, train, n_components):
        X = np.asarray(X, dtype=np.float64)
        Xs = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)    # all rows
        k = int(min(n_components, X.shape[1], len(train)))
        return PCA(k, svd_solver="full").fit(Xs[train]).transform(Xs).astype(np.float32)
    mp.setattr(mapping, "_reduce_block", leaky)


def _pca_all_rows(mp):
    from sklearn.decomposition import PCA

    def leaky(X, train, n_components):
        X = np.asarray(X, dtype=np.float64)
        mu, sd = X[train].mean(0), X[train].std(0)
        Xs = (X - mu) / np.where(sd > 0, sd, 1.0)
        k = int(min(n_components, X.shape[1], len(train)))
        return PCA(k, svd_solver="full").fit(Xs).transform(Xs).astype(np.float32)  # all rows
    mp.setattr(mapping, "_reduce_block", leaky)


def _alpha_on_test_fold(mp):
    """Per target, the best test-fold r over all alphas (numpy backend)."""
    def leaky(plan, Y, Y_test_c, test_norm):
        S, T = mapping._target_products(plan, Y)
        T = np.asarray(plan.final_V_T @ S if T is None else T, dtype=np.float64)
        H = np.asarray(plan.final_H_T, dtype=np.float64)
        XV = np.asarray(plan.test_XV, dtype=np.float64)
        Yt = np.asarray(Y_test_c, dtype=np.float64)
        best = np.full(T.shape[1], -np.inf)
        for a in range(H.shape[1]):
            best = np.fmax(best, _pearson(Yt, XV @ (T * H[:, a:a + 1])))
        return best.astype(np.float32)
    mp.setattr(mapping, "_ridge_batch_scores", leaky)


def _next_word_token(mp):
    orig = features.word_token_index

    def shifted(text, char_start, char_end, tokenizer):
        ids, last = orig(text, char_start, char_end, tokenizer)
        return ids, np.r_[last[1:], len(ids) - 1].astype(np.int64)
    mp.setattr(features, "word_token_index", shifted)


def _ceiling_with_self(mp):
    orig = nc._listeners
    everyone = nc._with_keys(_ceiling_data()[0])
    mp.setattr(nc, "_listeners", lambda runs, key: orig(everyone, key))


def _sums_own_run_not_found(mp):
    orig = nc.listener_sums

    def by_basename(runs, load):
        out = orig(runs, load)
        return {k: (t, c, m.assign(subject=m["basename"])) for k, (t, c, m) in out.items()}
    mp.setattr(nc, "listener_sums", by_basename)


class _GatherNextSubject(mapping._Targets):
    def gather(self, rows, sl):
        saved = self.Y_list
        self.Y_list = list(saved[1:]) + list(saved[:1])
        try:
            return super().gather(rows, sl)
        finally:
            self.Y_list = saved


class _ScatterPreviousSubject(mapping._Targets):
    def scatter(self, flat):
        out = super().scatter(flat)
        return out[-1:] + out[:-1]


def _targets_class(cls):
    return lambda mp: mp.setattr(mapping, "_Targets", cls)


#: (bug id, description, check name)
MUTATIONS = [
    ("1", "forecast window shifted +1 word (W_d built as W_{d+1})", "check_subject_design"),
    ("2", "forecast window shifted -3 words (W_d built as W_{d-3})", "check_subject_design"),
    ("3", "tr_offset 0 instead of the configured 1 (volume floor(t/TR))",
     "check_subject_design"),
    ("4", "FIR delays wrapped around per story (np.roll, no zero padding)",
     "check_mapping_reference"),
    ("5", "FIR delays reversed (delay k applied as -k: the design sees the future)",
     "check_mapping_reference"),
    ("6a", "standardisation after the FIR delays fitted on all rows (train + test)",
     "check_mapping_reference"),
    ("6b", "per-block standardisation before PCA fitted on all rows", "check_mapping_reference"),
    ("7", "PCA fitted on all rows (train + test)", "check_mapping_reference"),
    ("8a", "ridge alpha chosen on the test fold (best test r per target)",
     "check_mapping_reference"),
    ("8b", "ridge alpha chosen on the test fold, on pure noise", "check_null_bound"),
    ("9", "a word's activation read at the next word's last token (sees one more word)",
     "check_features_reference"),
    ("10a", "noise ceiling: the others' mean includes the subject (BOLD-file path)",
     "check_ceiling_loo_mean"),
    ("10b", "noise ceiling: listener sums keyed so the subject's own run is not subtracted",
     "check_ceiling_loo_mean"),
    ("11a", "shared fit: subject s's columns gathered from subject s+1's BOLD",
     "check_shared_equals_separate"),
    ("11b", "shared fit: subjects' scores scattered back shifted by one subject",
     "check_shared_equals_separate"),
]

_APPLY = {
    "1": _shifted_windows(+1), "2": _shifted_windows(-3), "3": _tr_offset_zero,
    "4": _fir_wrapped, "5": _fir_reversed, "6a": _standardise_all_rows,
    "6b": _block_scaler_all_rows, "7": _pca_all_rows, "8a": _alpha_on_test_fold,
    "8b": _alpha_on_test_fold, "9": _next_word_token, "10a": _ceiling_with_self,
    "10b": _sums_own_run_not_found, "11a": _targets_class(_GatherNextSubject),
    "11b": _targets_class(_ScatterPreviousSubject),
}

_CLEAN_PASSED = set()


def _run_clean(check_name):
    """Run a check without a mutation once per process (it must pass)."""
    if check_name not in _CLEAN_PASSED:
        globals()[check_name]()
        _CLEAN_PASSED.add(check_name)


# ============================================================================================
# tests
# ============================================================================================

@pytest.fixture
def env(cache_dir, one_torch_thread):
    yield


@pytest.mark.parametrize("bug, description, check_name", MUTATIONS,
                         ids=[m[0] for m in MUTATIONS])
def test_mutation_is_caught(env, monkeypatch, bug, description, check_name):
    _run_clean(check_name)                     # passes without the bug ...
    with monkeypatch.context() as mp:
        _APPLY[bug](mp)
        with pytest.raises(AssertionError):    # ... and fails with it
            globals()[check_name]()


def test_every_mutation_has_a_seed_and_a_check():
    ids = [m[0] for m in MUTATIONS]
    assert len(set(ids)) == len(ids) and set(ids) == set(_APPLY)
    assert all(callable(globals().get(m[2])) for m in MUTATIONS)
    # every bug of the brief (1..11) is seeded at least once
    assert {re.match(r"\d+", i).group() for i in ids} == {str(k) for k in range(1, 12)}


def test_doc_lists_every_mutation():
    text = DOC.read_text(encoding="utf-8")
    for bug, _, check_name in MUTATIONS:
        assert re.search(rf"^\|\s*{re.escape(bug)}\s*\|", text, re.M), f"bug {bug} not in {DOC}"
        assert check_name in text


# ============================================================================================
# the table
# ============================================================================================

def mutation_table():
    """Run every mutation; return the markdown table (and whether all were caught)."""
    lines = ["| bug | description | check that caught it | caught (yes/no) "
             "| passes without the bug |",
             "|---|---|---|---|---|"]
    all_ok = True
    for bug, description, check_name in MUTATIONS:
        check = globals()[check_name]
        try:
            check()
            clean = "yes"
        except AssertionError:
            clean = "no"
        with pytest.MonkeyPatch.context() as mp:
            _APPLY[bug](mp)
            try:
                check()
                caught = "no"
            except AssertionError:
                caught = "yes"
        all_ok &= caught == clean == "yes"
        lines.append(f"| {bug} | {description} | `{check_name}` | {caught} | {clean} |")
    return "\n".join(lines), all_ok


if __name__ == "__main__":
    if not os.environ.get("BRAINPRED_CACHE"):
        os.environ["BRAINPRED_CACHE"] = tempfile.mkdtemp(prefix="brainpred-cache-")
    import torch

    torch.set_num_threads(1)
    table, ok = mutation_table()
    print(table)
    sys.exit(0 if ok else 1)
