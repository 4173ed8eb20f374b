"""Stage entry point of ``workflow/rules/bold.smk``: one run's BOLD cache."""

from __future__ import annotations

import logging

from .. import io, narratives
from .. import provenance as prov
from ..errors import DataError

__all__ = ["make_bold_cache"]

log = logging.getLogger(__name__)


def make_bold_cache(gii_left, gii_right, run_table_tsv, basename, out_npy, space=None,
                    out_json=None):
    """Rule ``bold_cache``: one run's BOLD as float32 ``.npy`` (n_trs, n_vertices), L then R.

    The run is cropped to the table's ``n_trs`` (the common length of its task); the vertex
    count is checked against ``space`` and the GIfTI's TR against the sidecar's. A JSON
    sidecar ``out_json`` (default: ``out_npy`` with ``.json``) records the subject, basename,
    both GIfTIs (path, size, mtime), n_trs, TR, space and the brainpred version
    (:func:`brainpred.provenance.save_bold`); :func:`load_run_bold` checks it.
    """
    table = io.read_tsv(run_table_tsv, dtype={"run": str})
    rows = table[table["kept"] & (table["basename"] == basename)]
    if rows.empty:
        raise DataError(f"{run_table_tsv}: no kept run {basename}; re-run snakemake.")
    n = int(rows["n_trs"].iloc[0])
    bold = narratives.load_bold(gii_left, gii_right, n_trs=n if n > 0 else None, space=space,
                                tr=float(rows["tr"].iloc[0]))
    subject = str(rows["subject"].iloc[0]) if "subject" in rows else basename.split("_")[0]
    prov.save_bold(out_npy, bold, subject, basename, tr=float(rows["tr"].iloc[0]), space=space,
                   sources=(gii_left, gii_right), sidecar=out_json)
    log.info("%s: %d TRs x %d vertices", basename, *bold.shape)
