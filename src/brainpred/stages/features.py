"""Stage entry point of ``workflow/rules/features.smk``: a story's activations, every layer."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import features, io
from .. import provenance as prov
from ..conditions import entry_model_config
from .common import load_language_model, story_of

__all__ = ["make_story_features", "make_model_features"]

log = logging.getLogger(__name__)


def make_story_features(words_tsv, text_txt, model_cfg, out_npz, story=None):
    """Rule ``story_features``: activations of every layer for every word of a story.

    The cache records its provenance (:func:`brainpred.provenance.features_record`): the
    story (``story``, by default read from the ``story-<s>_`` file name of ``words_tsv``), the
    sha256 of ``words_tsv`` and ``text_txt``, the model, its revision (``<name> seed <k>``
    for the offline test models) and the result-changing ``model.*`` settings.
    """
    words = io.read_tsv(words_tsv)
    text = Path(text_txt).read_text(encoding="utf-8")
    log.info("%s: %d words, model %s (%s mode, context %d tokens)", Path(words_tsv).name,
             len(words), model_cfg["name"], model_cfg["mode"], model_cfg["context_tokens"])
    model, tokenizer = load_language_model(model_cfg)
    acts = features.story_features(words, text, model, tokenizer,
                                   context_tokens=model_cfg["context_tokens"],
                                   batch_size=model_cfg["batch_size"], mode=model_cfg["mode"],
                                   min_context=model_cfg["min_context"], progress=True)
    meta = {k: model_cfg[k] for k in ("name", "seed", "context_tokens", "mode",
                                      "min_context", "dtype")}
    name = model_cfg["name"]
    revision = prov.model_revision(name, model, seed=model_cfg["seed"])
    rec = prov.features_record(
        story if story is not None else story_of(words_tsv), words_tsv, text_txt, model_cfg,
        revision)
    features.save_features(out_npz, acts, words, meta, provenance=rec)
    log.info("wrote %s: %d layers x %d words x %d dims", Path(out_npz).name, *acts.shape)


def make_model_features(words_tsv, text_txt, model_cfg, entry, out_npz):
    """Rule ``model_features_<label>``: a story's activations under one model of the ``models``
    list (analysis ``models``), every layer: :func:`make_story_features` with the entry's
    ``name`` and ``seed`` in place of ``model.*``'s (:func:`brainpred.conditions.
    entry_model_config`), the other model settings (context, mode, batch size, device, dtype)
    from ``model_cfg``. The cache is a plain features cache (provenance kind ``features``)."""
    make_story_features(words_tsv, text_txt, entry_model_config(model_cfg, entry), out_npz)
