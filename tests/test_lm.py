"""Tests of brainpred.lm: the one GPT-2 fast forward against plain HuggingFace forward passes.

Runs offline (HF_HUB_OFFLINE=1) with the random ``tiny-gpt2`` (12 x 64). Every reference is a
plain HF forward over the whole sequence (``output_hidden_states=True``, no cache), layer 0
being the token embedding without position embedding.
"""

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from brainpred import lm  # noqa: E402
from brainpred.errors import ConfigError  # noqa: E402
from brainpred.features import read_positions  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny(cache_dir):
    model, _ = lm.load_model(lm.TINY_GPT2, seed=0, device="cpu")
    return model


def hf_all(model, ids):
    """States of one sequence by HF's forward: (L + 1, T, dim) and logits (T, vocab)."""
    with torch.inference_mode():
        t = torch.as_tensor(np.asarray(ids, dtype=np.int64))[None]
        out = model(input_ids=t, output_hidden_states=True, use_cache=False)
        emb = model.get_input_embeddings()(t[0])
        states = torch.stack([emb] + [h[0] for h in out.hidden_states[1:]])
        return states.numpy(), out.logits[0].numpy()


def _ids(rng, n):
    return rng.integers(0, 50257, size=n)


def _padded(seqs):
    ids = torch.zeros((len(seqs), max(len(s) for s in seqs)), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(s)
    return ids


def test_tiny_model_and_helpers(tiny):
    assert lm.n_layers(tiny) == lm.TINY_GPT2_CONFIG["n_layer"] == 12
    assert lm.max_positions(tiny) == 1024
    assert lm.FastGPT2.supports(tiny)
    assert lm.backbone(tiny) is tiny.transformer
    assert isinstance(lm.states_forward(tiny), lm.FastGPT2)
    assert not isinstance(lm.states_forward(tiny, "hf"), lm.FastGPT2)
    with pytest.raises(ConfigError, match="backend"):
        lm.states_forward(tiny, "fast")
    with pytest.raises(TypeError):
        lm.TINY_GPT2_CONFIG["n_layer"] = 2  # read-only
    tiny.train()
    try:
        assert not lm.FastGPT2.supports(tiny)
    finally:
        tiny.eval()


@pytest.mark.parametrize("case", ["reads_anywhere", "reads_at_end", "no_padding"])
def test_full_forward_equals_hf(tiny, case):
    """(a) A batched forward (right padding, reads anywhere or at the end) gives HF's states at
    every layer, at the read positions; :func:`hf_states` too."""
    rng = np.random.default_rng(0)
    lengths = [20, 20, 20] if case == "no_padding" else [20, 13, 7]
    seqs = [_ids(rng, n) for n in lengths]
    if case == "reads_anywhere":
        reads = [np.array([2, 7, 19]), np.array([12]), np.array([0, 6])]
    else:
        reads = [np.array([n - 1]) for n in lengths]
    qpos, qvalid = read_positions(reads)
    ids = _padded(seqs)
    fwd = lm.FastGPT2(tiny)
    with torch.inference_mode():
        got = fwd.states(ids, lengths, qpos, qvalid).numpy()
        via_hf = lm.hf_states(tiny, ids, lengths, qpos, qvalid).numpy()
        st, cache = fwd.states(ids, lengths, qpos, qvalid, return_cache=True)
        pre = fwd.prefix(ids, lengths)
    ref = np.concatenate([hf_all(tiny, s)[0][:, r] for s, r in zip(seqs, reads)], axis=1)
    assert got.shape == (13, sum(r.size for r in reads), 64)
    np.testing.assert_allclose(got, ref, **TOL)
    np.testing.assert_allclose(via_hf, ref, **TOL)
    np.testing.assert_array_equal(st.numpy(), got)
    assert len(cache) == len(pre) == 12
    for (k, v), (pk, pv) in zip(cache, pre):
        assert k.shape == (3, 4, 20, 16)
        torch.testing.assert_close(k, pk)
        torch.testing.assert_close(v, pv)


def test_shared_prefix_and_suffixes_equal_hf(tiny):
    """(b) Prefixes run once (keys / values cached), then several suffixes per prefix (and one
    without a prefix) read from the cache: HF's states over ``prefix + suffix``."""
    rng = np.random.default_rng(1)
    prefixes = [_ids(rng, 9), _ids(rng, 5)]
    fwd = lm.FastGPT2(tiny)
    # (cache row, prefix length, suffix, reads in the suffix)
    futs = [(0, 9, _ids(rng, 6), np.array([1, 5])), (0, 9, _ids(rng, 3), np.array([2])),
            (1, 5, _ids(rng, 4), np.array([0, 3])), (1, 5, _ids(rng, 2), np.array([0])),
            (0, 0, _ids(rng, 5), np.array([4]))]
    qpos, qvalid = read_positions([f[3] for f in futs])
    with torch.inference_mode():
        cache = fwd.prefix(_padded(prefixes), [p.size for p in prefixes])
        got = fwd.states(_padded([f[2] for f in futs]), [f[2].size for f in futs], qpos, qvalid,
                         past=cache, rows=torch.as_tensor([f[0] for f in futs]),
                         plen=torch.as_tensor([f[1] for f in futs])).numpy()
    ref = []
    for row, plen, suf, reads in futs:
        seq = np.concatenate([prefixes[row][:plen], suf])
        ref.append(hf_all(tiny, seq)[0][:, plen + reads])
    np.testing.assert_allclose(got, np.concatenate(ref, axis=1), **TOL)


@pytest.mark.parametrize("shared", [True, False])
def test_incremental_decoding_equals_hf(tiny, shared):
    """(c) Decoding steps over a key/value cache (one story prefix shared by every row, or one
    context per row) give HF's states and logits of the whole sequence at each new token."""
    rng = np.random.default_rng(2)
    fwd = lm.FastGPT2(tiny)
    n_new, B = 4, 3
    if shared:
        story = _ids(rng, 12)
        plen = np.array([4, 12, 7])
        contexts = [story[:p] for p in plen]
    else:
        contexts = [_ids(rng, 8) for _ in range(B)]
        plen = np.full(B, 8)
    new = rng.integers(0, 50257, size=(B, n_new))
    keep = list(range(13))
    with torch.inference_mode():
        if shared:
            reads = np.unique(plen - 1)
            st, past = fwd.states(torch.as_tensor(story)[None], None, reads[None],
                                  np.ones((1, reads.size), bool), return_cache=True)
            first = fwd.logits(st[-1][np.searchsorted(reads, plen - 1)]).numpy()
        else:
            st, past = fwd.states(_padded(contexts), None, np.full((B, 1), 7),
                                  np.ones((B, 1), bool), return_cache=True)
            first = fwd.logits(st[-1]).numpy()
        gen = fwd.new_cache(B, n_new, past[0][0])
        plen_t = torch.as_tensor(plen)
        steps = [fwd.step(torch.as_tensor(new[:, s]), plen_t, s, past, gen, keep)
                 for s in range(n_new)]
    for b in range(B):
        states, logits = hf_all(tiny, np.concatenate([contexts[b], new[b]]))
        p = plen[b]
        np.testing.assert_allclose(first[b], logits[p - 1], **TOL)
        for s, (st_s, lg_s) in enumerate(steps):
            np.testing.assert_allclose(st_s[:, b].numpy(), states[:, p + s], **TOL)
            np.testing.assert_allclose(lg_s[b].numpy(), logits[p + s], **TOL)
    # a subset of layers comes back in order
    with torch.inference_mode():
        gen = fwd.new_cache(B, n_new, past[0][0])
        sub, _ = fwd.step(torch.as_tensor(new[:, 0]), plen_t, 0, past, gen, [0, 5, 12])
    np.testing.assert_allclose(sub.numpy(), steps[0][0][[0, 5, 12]].numpy(), atol=1e-6)
