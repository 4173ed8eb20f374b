"""Stage entry points of ``workflow/rules/dataset.smk``: the synthetic dataset, the run table
and the word tables of the stories."""

from __future__ import annotations

import logging

from .. import derivatives, io, narratives, synthetic
from ..errors import DataError
from ..plan import run_basename, run_plan

__all__ = ["make_synthetic_dataset", "make_run_table", "make_story_words",
           "make_dataset_description"]

log = logging.getLogger(__name__)


def make_synthetic_dataset(root, config):
    """Rule ``synthetic_dataset``: write the offline demo dataset under ``root``."""
    synthetic.generate(root, config)


def make_run_table(root, config, out_tsv):
    """Rule ``run_table``: the subject x story table (kept and excluded runs) as TSV.

    Only the runs of the configured subjects and tasks are kept; the other rows stay in the
    table with their reason, so the table explains what the analysis used.
    """
    ds = config["dataset"]
    table = narratives.build_run_table(root, tasks=ds["tasks"], subjects=ds["subjects"],
                                       space=ds["space"], keep_scrambled=ds["keep_scrambled"],
                                       keep_schema=ds["keep_schema"])
    # one row per (run, story): slumlordreach is one run holding two stories
    table = narratives.split_story_rows(table)
    plan = run_plan(config)
    table["run"] = table["run"].fillna("").astype(str)
    table["basename"] = [run_basename(s, t, r) for s, t, r in
                         zip(table["subject"], table["task"], table["run"])]
    # crop the runs of a task to their common length (runs of a task differ by a few TRs),
    # over every subject's kept runs, so that the subject selection changes no run's crop
    crop = narratives.task_crop_lengths(root, tasks=set(table.loc[table["kept"], "task"]),
                                        space=ds["space"], keep_scrambled=ds["keep_scrambled"],
                                        keep_schema=ds["keep_schema"])
    table["n_trs_file"] = table["n_trs"]
    kept_known = table["kept"] & (table["n_trs"] > 0)
    table.loc[kept_known, "n_trs"] = table.loc[kept_known, "task"].map(crop).astype(int)
    kept = table[table["kept"]]
    got = set(zip(kept["subject"], kept["task"], kept["story"], kept["run"]))
    want = set(zip(plan["subject"], plan["task"], plan["story"], plan["run"]))
    if got != want:
        raise DataError(
            f"{root}: the runs found on disk differ from the workflow's plan "
            f"(missing on disk: {sorted(want - got)[:5]}, not planned: {sorted(got - want)[:5]}). "
            "The dataset changed since the workflow started: run snakemake again.")
    narratives.check_runs_cover_their_stories(root, kept)
    io.write_tsv(out_tsv, table)
    log.info("run table: %d kept runs of %d subjects, %d excluded rows",
             len(kept), kept["subject"].nunique(), int((~table["kept"]).sum()))


def make_story_words(root, story, out_tsv, out_txt):
    """Rule ``story_words``: the word table (file time) and the text the model reads."""
    words, text = narratives.story_words(root, story)
    io.write_tsv(out_tsv, words)
    with io.atomic_write(out_txt) as f:
        f.write(text)
    log.info("%s: %d words (%d with interpolated timing), %d characters of text", story,
             len(words), int(words["interpolated"].sum()) if "interpolated" in words else 0,
             len(text))


def make_dataset_description(config, version, out_json):
    """Rule ``dataset_description``: ``results/dataset_description.json``
    (:func:`brainpred.derivatives.dataset_description`).

    Parameters
    ----------
    config : dict
        The settings that change results (no runtime key): its hash is recorded in
        ``GeneratedBy``; ``dataset.source`` names the source dataset.
    version : str
        The brainpred version.
    out_json : path
    """
    ds = config.get("dataset", {})
    name = ("synthetic Narratives-like demo dataset" if ds.get("source") == "synthetic"
            else "Narratives (Nastase et al. 2021, OpenNeuro ds002345)")
    url = None if ds.get("source") == "synthetic" else "https://openneuro.org/datasets/ds002345"
    io.write_json(out_json, derivatives.dataset_description(version, config, source_name=name,
                                                            source_url=url))
