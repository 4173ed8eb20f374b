"""Self-contained HTML report: figures (inlined PNG), tables, config, versions, synthetic banner."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.metadata as _md
import json
from pathlib import Path

import numpy as np

from .errors import DataError
from .io import atomic_write, read_tsv

__all__ = ["write_report", "package_versions", "PACKAGES", "SYNTHETIC_BANNER"]

SYNTHETIC_BANNER = ("Synthetic data — these results come from the built-in demo dataset with "
                    "planted effects, not from real fMRI")

PACKAGES = ("brainpred", "numpy", "scipy", "pandas", "scikit-learn", "himalaya", "torch",
            "transformers", "nilearn", "nibabel", "snakemake")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAX_TABLE_ROWS = 200

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; }
.banner { background: #c62828; color: white; font-size: 1.3em; font-weight: bold;
          padding: 0.8em 1em; border-radius: 6px; margin: 1em 0; text-align: center; }
figure { margin: 1.5em 0; border-top: 1px solid #ddd; padding-top: 1em; }
figure img { max-width: 100%; }
figcaption { font-size: 0.95em; color: #333; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
pre { background: #f5f5f5; padding: 0.8em; overflow-x: auto; }
.meta { color: #555; font-size: 0.9em; }
"""


def package_versions(packages=PACKAGES):
    """``{package: version}`` for the installed packages among ``packages`` (others skipped)."""
    out = {}
    for name in packages:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            continue
    return out


def _plain(obj):
    """Convert config values (Path, numpy scalars/arrays, tuples, sets) to YAML-safe types."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _config_text(config):
    cfg = _plain(config or {})
    try:
        import yaml

        return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False, allow_unicode=True)
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        return json.dumps(cfg, indent=2)


def _png_data_uri(path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: figure not found for the report. Re-run the workflow step "
                        "that draws it (or remove it from the report's figure list).")
    data = path.read_bytes()
    if not data.startswith(_PNG_MAGIC):
        raise DataError(f"{path}: is not a PNG image. Delete it and re-run the step that "
                        "draws it.")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _table_html(path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: table not found for the report. Re-run the workflow step "
                        "that writes it.")
    df = read_tsv(path)
    note = ""
    if len(df) > _MAX_TABLE_ROWS:
        note = (f"<p class='meta'>First {_MAX_TABLE_ROWS} of {len(df)} rows; full table: "
                f"<code>{html.escape(path.name)}</code></p>")
        df = df.head(_MAX_TABLE_ROWS)
    return df.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="n/a",
                      border=0) + note


def write_report(out_html, figures, config, synthetic, title="brainpred report", tables=(),
                 summary=None, config_name="Configuration", interactive=None):
    """Write a self-contained HTML report.

    Parameters
    ----------
    out_html : str or Path
        Destination (written atomically).
    figures : list of (png_path, caption)
        PNG files, inlined as base64 in this order, each with its caption.
    config : dict
        The run's configuration, shown as YAML.
    synthetic : bool
        When True a red banner states that the results come from the synthetic demo dataset.
    title : str
        Page title.
    tables : list of (tsv_path, caption)
        TSV tables shown as HTML (first 200 rows).
    summary : (tsv_path, caption), optional
        The paper comparison table, shown as the report's first section.
    config_name : str
        Heading of the configuration section (e.g. the effective-config file's name).
    interactive : (html, caption), optional
        A self-contained HTML fragment (:func:`brainpred.viewer.viewer_html`: the interactive
        maps), shown before the figures with its caption.

    Raises
    ------
    DataError
        Naming the file, when a figure or table is missing or a figure is not a PNG.
    """
    blocks = []
    for png, caption in figures:
        uri = _png_data_uri(png)
        blocks.append(
            f"<figure><img src=\"{uri}\" alt=\"{html.escape(Path(png).name)}\">"
            f"<figcaption>{html.escape(str(caption))}</figcaption></figure>")
    table_blocks = []
    for tsv, caption in tables:
        table_blocks.append(f"<figure>{_table_html(tsv)}"
                            f"<figcaption>{html.escape(str(caption))}</figcaption></figure>")
    versions = package_versions()
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    banner = f"<div class=\"banner\">{html.escape(SYNTHETIC_BANNER)}</div>" if synthetic else ""
    ver_rows = "".join(f"<tr><td style='text-align:left'>{html.escape(k)}</td>"
                       f"<td>{html.escape(v)}</td></tr>" for k, v in versions.items())
    parts = [
        "<!DOCTYPE html>",
        "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}{' (SYNTHETIC DATA)' if synthetic else ''}</title>",
        f"<style>{_CSS}</style></head><body>",
        banner,
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=\"meta\">Generated {html.escape(now)} by brainpred "
        f"{html.escape(versions.get('brainpred', 'unknown'))}.</p>",
    ]
    if summary is not None:
        tsv, caption = summary
        parts += ["<h2>The paper's figures and this run's</h2>",
                  f"<figure>{_table_html(tsv)}"
                  f"<figcaption>{html.escape(str(caption))}</figcaption></figure>"]
    if interactive is not None:
        fragment, caption = interactive
        parts += ["<h2>Interactive maps</h2>",
                  f"<figure>{fragment}"
                  f"<figcaption>{html.escape(str(caption))}</figcaption></figure>"]
    if blocks:
        parts += ["<h2>Figures</h2>", *blocks]
    if table_blocks:
        parts += ["<h2>Tables</h2>", *table_blocks]
    parts += [
        f"<h2>{html.escape(config_name)}</h2>",
        f"<pre>{html.escape(_config_text(config))}</pre>",
        "<h2>Package versions</h2>",
        f"<table>{ver_rows}</table>",
        banner,
        "</body></html>",
    ]
    with atomic_write(out_html) as f:
        f.write("\n".join(p for p in parts if p) + "\n")
    return Path(out_html)
