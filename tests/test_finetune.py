"""Tests of brainpred.finetune: contrastive forecast fine-tuning of GPT-2.

Offline (HF_HUB_OFFLINE=1) with the random ``tiny-gpt2`` on a generated toy-grammar corpus.
"""

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from brainpred import lm  # noqa: E402
from brainpred import finetune as ft  # noqa: E402
from brainpred.errors import ConfigError, DataError  # noqa: E402


# ------------------------------------------------------------------------------------ helpers


pytestmark = pytest.mark.usefixtures("one_torch_thread", "cache_dir")

@pytest.fixture(scope="module")
def tok(cache_dir):
    return lm.gpt2_tokenizer()


def _grammar_text(n_sentences, seed):
    """A repetitive toy grammar: 'the <adj> <noun> <verb> the <noun> .' sentences."""
    rng = np.random.default_rng(seed)
    adjs = ["big", "small", "red", "old"]
    nouns = ["cat", "dog", "bird", "fish", "man"]
    verbs = ["sees", "likes", "eats", "follows"]
    out = []
    for _ in range(n_sentences):
        out.append(f"The {rng.choice(adjs)} {rng.choice(nouns)} {rng.choice(verbs)} the "
                   f"{rng.choice(nouns)} in the garden.")
    return " ".join(out)


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    paths = []
    for i in range(4):
        p = root / f"doc{i}.txt"
        p.write_text(_grammar_text(150, seed=i), encoding="utf-8")
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def seqs(corpus_files, tok):
    return ft.load_corpus([str(p) for p in corpus_files], tok, context=32, seed=0)


def _cfg(**kw):
    base = dict(alpha=0.5, steps=6, lr=1e-3, context=32, batch_size=2, checkpoints=[], seed=3,
                queue_size=256, temperature=0.1, target_layer=8, target_distance=8,
                rescale_every=50, train_layers=[8, 12])
    base.update(kw)
    return base


def _weights(ckpt):
    from safetensors.torch import load_file

    return load_file(str(Path(ckpt) / "model.safetensors"))


# ------------------------------------------------------------------------------ loss pieces

def test_info_nce_matches_hand_computed_reference():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 4, generator=g)
    target = torch.randn(3, 4, generator=g)
    queue = torch.randn(2, 4, generator=g)
    T = 0.1

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    cands = list(target) + list(queue)
    losses = []
    for i in range(3):
        logits = np.array([cos(pred[i], c) / T for c in cands])
        losses.append(-(logits[i] - np.log(np.exp(logits).sum())))
    expected = float(np.mean(losses))
    got = float(ft.info_nce(pred, target, queue, temperature=T))
    assert got == pytest.approx(expected, rel=1e-5)
    # in-batch negatives only; scale invariance of cosine
    cands = list(target)
    ref = np.mean([-(cos(pred[i], target[i]) / T
                     - np.log(sum(np.exp(cos(pred[i], c) / T) for c in cands)))
                   for i in range(3)])
    assert float(ft.info_nce(3.0 * pred, target, None, T)) == pytest.approx(ref, rel=1e-5)
    # a perfect prediction with orthogonal negatives gives a small loss
    eye = torch.eye(4)
    assert float(ft.info_nce(eye, eye, None, T)) == pytest.approx(
        math.log(1 + 3 * math.exp(-1 / T)), rel=1e-3)


def test_target_queue_is_fifo():
    q = ft.TargetQueue(size=5, dim=2)
    assert q.get().shape == (0, 2)
    x = torch.tensor([[1.0, 0.0]] * 3) * torch.arange(1, 4)[:, None]  # normalised to (1, 0)
    q.push(x)
    assert q.count == 3 and q.ptr == 3
    q.push(torch.tensor([[0.0, 2.0]] * 4))  # 2 fill the end, 2 overwrite the oldest
    assert q.count == 5 and q.ptr == 2
    np.testing.assert_allclose(q.buffer.numpy(), [[0, 1], [0, 1], [1, 0], [0, 1], [0, 1]])
    q.push(torch.tensor([[3.0, 4.0]] * 7))  # more than the size: the last 5 only
    np.testing.assert_allclose(q.get().numpy(), [[0.6, 0.8]] * 5, rtol=1e-6)
    state = q.state_dict()
    q2 = ft.TargetQueue(size=5, dim=2)
    q2.load_state_dict(state)
    assert torch.equal(q2.buffer, q.buffer) and (q2.ptr, q2.count) == (q.ptr, q.count)
    empty = ft.TargetQueue(size=0, dim=2)
    empty.push(x)
    assert empty.get().shape == (0, 2)


def test_loss_mixer_rescales_to_alpha_from_running_means():
    m = ft.LossMixer(alpha=0.25, rescale_every=3)
    # step 1: its own values
    lam = m.update(1, ce=6.0, nce=2.0)
    assert lam == pytest.approx(0.25 / 0.75 * 6.0 / 2.0)
    assert lam * 2.0 / (6.0 + lam * 2.0) == pytest.approx(0.25)
    # held until the next rescale (step 4), which uses the mean of steps 2..4
    assert m.update(2, ce=4.0, nce=1.0) == lam
    assert m.update(3, ce=5.0, nce=3.0) == lam
    lam4 = m.update(4, ce=3.0, nce=2.0)
    mce, mnce = (4 + 5 + 3) / 3, (1 + 3 + 2) / 3
    assert lam4 == pytest.approx(1 / 3 * mce / mnce)
    assert lam4 * mnce / (mce + lam4 * mnce) == pytest.approx(0.25)
    # alpha = 0: the control, lambda stays 0
    m0 = ft.LossMixer(alpha=0.0, rescale_every=1)
    assert m0.update(1, 5.0, 2.0) == 0.0 and m0.update(2, 5.0, 2.0) == 0.0


# --------------------------------------------------------------------------------- training

def test_training_reduces_both_losses(seqs, tmp_path):
    cfg = _cfg(steps=16, batch_size=4, queue_size=4 * (32 - 8), rescale_every=1000)
    ft.train("tiny-gpt2", seqs, tmp_path / "run", cfg, device="cpu", progress=False)
    df = ft.loss_curves(tmp_path / "run")
    assert list(df["step"]) == list(range(1, 17))
    # step 1 has an empty queue (fewer negatives): compare steps 2-6 with the last 5
    # (batch-to-batch noise of a 5-step mean: about 0.005 for CE, 0.05 for NCE)
    first, last = df.iloc[1:6], df.iloc[-5:]
    assert last["ce"].mean() < first["ce"].mean() - 0.04
    assert last["nce"].mean() < first["nce"].mean() - 0.5
    # lambda set at step 1 so that the contrastive share of the total is alpha
    assert df["nce_share"].iloc[0] == pytest.approx(0.5, abs=1e-6)
    assert np.allclose(df["total"], df["ce"] + df["lambda"] * df["nce"], rtol=1e-5)


def test_frozen_target_and_frozen_blocks(seqs):
    model, _ = lm.load_model("tiny-gpt2", seed=1, device="cpu")
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tuner = ft.FineTuner(model, _cfg(lr=1e-3))
    assert tuner.target is not tuner.model and not tuner.target.training
    assert not any(p.requires_grad for p in tuner.target.parameters())
    tr = model.transformer
    assert all(not p.requires_grad for blk in tr.h[:7] for p in blk.parameters())
    assert all(p.requires_grad for blk in tr.h[7:] for p in blk.parameters())
    assert not tr.wte.weight.requires_grad and not tr.wpe.weight.requires_grad
    assert tr.ln_f.weight.requires_grad
    for step in range(3):
        tuner.train_step(seqs[2 * step:2 * step + 2])
    for k, v in tuner.target.state_dict().items():
        assert torch.equal(v, start[k]), k
    now = model.state_dict()
    for k in now:
        frozen = (k.startswith(("transformer.wte", "transformer.wpe", "lm_head"))
                  or any(k.startswith(f"transformer.h.{i}.") for i in range(7)))
        trained = (any(k.startswith(f"transformer.h.{i}.") for i in range(7, 12))
                   or k.startswith("transformer.ln_f"))
        if frozen:
            assert torch.equal(now[k], start[k]), k
        elif trained and k.endswith(("weight", "bias")) and ".attn.bias" not in k:
            assert not torch.equal(now[k], start[k]), k


def test_alpha_zero_is_next_word_only(seqs):
    model, _ = lm.load_model("tiny-gpt2", seed=0, device="cpu")
    tuner = ft.FineTuner(model, _cfg(alpha=0.0))
    head0 = {k: v.clone() for k, v in tuner.head.state_dict().items()}
    rows = [tuner.train_step(seqs[i:i + 2]) for i in (0, 2)]
    assert all(r["lambda"] == 0.0 and r["total"] == r["ce"] and r["nce"] > 0 for r in rows)
    for k, v in tuner.head.state_dict().items():
        assert torch.equal(v, head0[k])


def test_resume_equals_straight_run(seqs, tmp_path):
    cfg = _cfg(steps=6, checkpoints=[3], rescale_every=2)
    straight = ft.train("tiny-gpt2", seqs, tmp_path / "a", cfg, device="cpu", progress=False)
    assert [p.name for p in straight] == ["step-000003", "step-000006"]

    b = tmp_path / "b"
    first = ft.train("tiny-gpt2", seqs, b, {**cfg, "steps": 3, "checkpoints": []},
                     device="cpu", progress=False)
    assert [p.name for p in first] == ["step-000003"]
    with open(b / "loss.tsv", "a") as f:  # a step done after the checkpoint, then a crash
        f.write("4\t1.0\t1.0\t1.0\t2.0\t0.001\n")
    resumed = ft.train("tiny-gpt2", seqs, b, cfg, device="cpu", progress=False)
    assert [p.name for p in resumed] == ["step-000003", "step-000006"]

    wa, wb = _weights(straight[-1]), _weights(resumed[-1])
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
    sa = torch.load(straight[-1] / "training_state.pt", weights_only=True)
    sb = torch.load(resumed[-1] / "training_state.pt", weights_only=True)
    torch.testing.assert_close(sa["head"], sb["head"], rtol=0, atol=1e-6)
    torch.testing.assert_close(sa["queue"]["buffer"], sb["queue"]["buffer"], rtol=0, atol=1e-6)
    assert (tmp_path / "a" / "loss.tsv").read_text() == (b / "loss.tsv").read_text()

    # known answer of the running means: lambda rescaled at steps 1, 3, 5 (rescale_every=2)
    df = ft.loss_curves(b)
    assert df["lambda"].iloc[0] == pytest.approx(df["ce"].iloc[0] / df["nce"].iloc[0])
    for s in (3, 5):
        w = df[df["step"].isin([s - 1, s])]
        lam = df.loc[df["step"] == s, "lambda"].item()
        assert lam == pytest.approx(w["ce"].mean() / w["nce"].mean(), rel=1e-6)
        assert lam * w["nce"].mean() / (w["ce"].mean() + lam * w["nce"].mean()) == \
            pytest.approx(0.5)
    assert df.loc[df["step"] == 4, "lambda"].item() == df.loc[df["step"] == 3, "lambda"].item()

    # a finished run returns at once and changes nothing
    mtime = (b / "loss.tsv").stat().st_mtime_ns
    again = ft.train("tiny-gpt2", seqs, b, cfg, device="cpu", progress=False)
    assert again == resumed and (b / "loss.tsv").stat().st_mtime_ns == mtime
    # other settings on the same directory are refused, naming the key
    with pytest.raises(ConfigError, match=r"finetune\.lr"):
        ft.train("tiny-gpt2", seqs, b, {**cfg, "lr": 1e-4, "steps": 8}, device="cpu",
                 progress=False)
    # checkpoints load as local models
    model, tokenizer = lm.load_model(str(resumed[-1]), device="cpu")
    torch.testing.assert_close(model.transformer.h[11].mlp.c_fc.weight,
                               wb["transformer.h.11.mlp.c_fc.weight"], rtol=0, atol=0)
    assert tokenizer.eos_token_id == 50256
    assert not list(b.glob(".step-*"))  # no temporary directory left


# ------------------------------------------------------------------------------- corpus, errors

def test_load_corpus_sequences(corpus_files, tok):
    files = [str(p) for p in corpus_files]
    seqs = ft.load_corpus(files, tok, context=32, seed=0)
    ids = [tok(p.read_text())["input_ids"] for p in corpus_files]
    stream = ids[0]
    for x in ids[1:]:
        stream = stream + [tok.eos_token_id] + x
    n = len(stream) // 32
    assert seqs.shape == (n, 32) and seqs.dtype == np.int32
    blocks = np.asarray(stream[:n * 32]).reshape(n, 32)
    order = np.random.default_rng(0).permutation(n)
    np.testing.assert_array_equal(seqs, blocks[order])
    assert (seqs == tok.eos_token_id).sum() >= 1  # documents separated by EOS
    # same seed, same result; a glob gives the same files; another seed shuffles differently
    root = corpus_files[0].parent
    np.testing.assert_array_equal(ft.load_corpus([str(root / "doc*.txt")], tok, 32, seed=0),
                                  seqs)
    assert not np.array_equal(ft.load_corpus(files, tok, 32, seed=1), seqs)


def test_corpus_errors(corpus_files, tok, tmp_path, monkeypatch):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match="nope.txt"):
        ft.load_corpus([str(corpus_files[0]), str(missing)], tok, context=32)
    with pytest.raises(DataError, match="nothing-here"):
        ft.load_corpus([str(tmp_path / "nothing-here*.txt")], tok, context=32)
    short = tmp_path / "short.txt"
    short.write_text("Too short.")
    with pytest.raises(DataError, match="finetune.context"):
        ft.load_corpus([str(short)], tok, context=32)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails
    with pytest.raises(ConfigError, match="pip install datasets"):
        ft.load_corpus({"hf_dataset": "wikitext", "config": "wikitext-103-raw-v1"}, tok, 32)


@pytest.mark.parametrize("key, value", [
    ("alpha", 1.0), ("alpha", -0.1), ("alpha", "half"), ("steps", 0), ("lr", 0.0),
    ("context", 1), ("batch_size", 0), ("checkpoints", [0]), ("checkpoints", [7]),
    ("queue_size", -1), ("temperature", 0), ("target_distance", 0), ("rescale_every", 0),
    ("train_layers", [0, 12]), ("train_layers", [9, 8]), ("train_layers", 8), ("seed", 1.5),
])
def test_bad_config_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"finetune\.{key}"):
        ft.validate_config(_cfg(**{key: value}))


@pytest.mark.parametrize("key, value", [
    ("train_layers", [8, 13]), ("target_layer", 13), ("context", 2048),
])
def test_config_checked_against_the_model(key, value):
    model, _ = lm.load_model("tiny-gpt2", seed=0, device="cpu")
    with pytest.raises(ConfigError, match=rf"finetune\.{key}"):
        ft.FineTuner(model, _cfg(**{key: value}))


def test_train_checks_sequences(seqs, tmp_path):
    with pytest.raises(ConfigError, match=r"finetune\.context"):
        ft.train("tiny-gpt2", seqs[:, :16], tmp_path / "x", _cfg(), device="cpu",
                 progress=False)


def test_defaults_are_valid():
    cfg = ft.validate_config({"alpha": 0.5})
    assert cfg["target_layer"] == 8 and cfg["target_distance"] == 8
    assert cfg["train_layers"] == [8, 12] and cfg["temperature"] == 0.1
    assert cfg["lr"] == 5e-5 and cfg["context"] == 256 and cfg["rescale_every"] == 50
    assert cfg["checkpoints"] == [cfg["steps"]]


def test_defaults_are_the_schemas_and_alpha_is_stated():
    """No default of its own: every training setting left out is the schema's finetune one."""
    from brainpred.config import defaults

    schema = defaults("finetune")
    cfg = ft.validate_config({"alpha": 0.0, "enabled": True, "corpus": "stories"})
    assert set(cfg) == set(ft.TRAIN_KEYS) | {"alpha"}          # workflow keys ignored
    for key in ft.TRAIN_KEYS:
        want = sorted(set(schema[key]) | {schema["steps"]}) if key == "checkpoints" \
            else schema[key]
        assert cfg[key] == want, key
    assert set(ft.TRAIN_KEYS) <= set(schema)
    with pytest.raises(ConfigError, match=r"finetune\.alpha: missing.*finetune.alphas"):
        ft.validate_config({})
