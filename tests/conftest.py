"""Fixtures shared by the test modules that run language models."""

import os

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """The models in the tests are tiny: one torch thread is as fast, and immune to a busy
    machine (two threads contend badly on the many small operations of a tiny model)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """BRAINPRED_CACHE (where the GPT-2 tokenizer files are copied) in a temporary directory."""
    path = tmp_path_factory.mktemp("brainpred-cache")
    old = os.environ.get("BRAINPRED_CACHE")
    os.environ["BRAINPRED_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("BRAINPRED_CACHE", None)
    else:
        os.environ["BRAINPRED_CACHE"] = old
