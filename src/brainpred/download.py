"""Selective download of the Narratives release with DataLad (``dataset.source: datalad``).

The release (``///labs/hasson/narratives``, a DataLad superdataset of OpenNeuro ds002345 plus
its derivatives) is large (several TB with every derivative). The analysis needs only:

* metadata: ``participants.tsv``, ``code/*.json``, the ``events.tsv`` and ``bold.json`` of
  the runs (:func:`metadata_files`);
* per story: ``stimuli/gentle/<story>/align.csv`` and ``transcript.txt``;
* per kept run: the two afni-nosmooth ``desc-clean.func.gii`` of the analysis space, in the
  subdataset ``derivatives/afni-nosmooth``;
* the FreeSurfer ``<space>`` surfaces and ``aparc.a2009s`` annotations, in the subdataset
  ``derivatives/freesurfer`` (:data:`FREESURFER_FILES`).

:func:`needed_files` lists these paths from a run table (pure, no DataLad).
:func:`fetch` installs the subdatasets that contain them (``datalad get --no-data``: in the
real release every ``derivatives/<name>`` is a subdataset, ``stimuli`` and ``code`` are
folders of the superdataset; a path inside any not-yet-installed subdataset works the same),
logs how many files and bytes will come, then ``datalad get``s them, logging progress file by
file.

Two steps, so that Snakemake can lay out the whole DAG before any fMRI is downloaded:

1. ``python -m brainpred.download metadata --configfile config/pieman.yaml`` clones the
   superdataset into ``dataset.root`` (or reuses the clone), gets the small metadata files of
   the selected subjects, installs the subdatasets and prints the size of what the analysis
   will fetch. :func:`brainpred.plan.run_plan` reads the run plan from these files (and
   says to run this step when they are absent).
2. The workflow's ``download_*`` rules (``workflow/rules/download.smk``) get the GIfTIs and
   alignments of each run and story before the jobs that read them
   (``python -m brainpred.download data ...`` gets them all at once instead).

Idempotent and resumable: files whose content is present are skipped (``get`` says
``notneeded``). A failure never leaves a half-written file: git-annex downloads into
``.git/annex/tmp``, checks the key's checksum and only then moves the object into place, so an
interrupted get leaves the file absent (a dangling symlink) and the next get resumes the
partial transfer. A tracked file deleted from the work tree (Snakemake removes a job's existing
outputs before rerunning it) is restored from git before getting.

DataLad is imported only here, and only when a download is asked for: ``dataset.source:
local`` never imports it and never touches the network.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .config import defaults, prepare_config
from .errors import BrainpredError, ConfigError, DataError
from .narratives import bold_rel, build_run_table, story_folder

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_URL", "SUBDATASETS", "FREESURFER_FILES", "check_tools", "metadata_files",
           "needed_files", "is_optional", "clone", "fetch", "fetch_outputs", "fetch_metadata",
           "download", "main"]

#: Where the Narratives release lives: the schema's ``dataset.url`` default (a config's
#: ``dataset.url`` overrides it; a local path works).
DEFAULT_URL = defaults("dataset")["url"]
#: Subdatasets of the release that the analysis reads from.
SUBDATASETS = ("derivatives/afni-nosmooth", "derivatives/freesurfer")
#: FreeSurfer files of the analysis space, ``{space}`` and ``{h}`` (``lh``/``rh``) filled in.
FREESURFER_FILES = tuple(
    [f"derivatives/freesurfer/{{space}}/surf/{{h}}.{s}"
     for s in ("inflated", "pial", "white", "sphere", "sulc", "curv")]
    + ["derivatives/freesurfer/{space}/label/{h}.aparc.a2009s.annot"])
#: Files listed by :func:`needed_files` that the release may lack (a warning, not an error).
_OPTIONAL_PREFIXES = ("derivatives/freesurfer/",)
_OPTIONAL_SUFFIXES = ("/transcript.txt",)

_INSTALL_HELP = ("Install them: `apt-get install git-annex` (or `conda install -c conda-forge "
                 "git-annex`, or `brew install git-annex`) and `pip install datalad` (the "
                 "brainpred[datalad] extra: `pip install -e \".[datalad]\"`); or set "
                 "dataset.source: local and point dataset.root at an existing copy.")


# --------------------------------------------------------------------------------------------
# tools
# --------------------------------------------------------------------------------------------

def check_tools():
    """Check that git, git-annex and the DataLad Python package are available.

    Returns
    -------
    module
        ``datalad.api``.

    Raises
    ------
    BrainpredError
        Naming what is missing and how to install it.
    """
    missing = [tool for tool in ("git", "git-annex") if shutil.which(tool) is None]
    try:
        import datalad.api as dl
    except ImportError:
        dl = None
        missing.append("datalad (Python package)")
    if missing:
        raise BrainpredError(f"dataset.source = datalad needs {', '.join(missing)}, not found. "
                             + _INSTALL_HELP)
    return dl


def _kw():
    return dict(result_renderer="disabled", on_failure="ignore")


# --------------------------------------------------------------------------------------------
# what to fetch (pure)
# --------------------------------------------------------------------------------------------

def _selected(selection):
    if selection in (None, "all"):
        return None
    return {selection} if isinstance(selection, str) else set(selection)


def metadata_files(root, subjects="all") -> list:
    """Metadata paths of a cloned release (content present or not), relative to ``root``.

    Parameters
    ----------
    root : str or Path
        The clone (its tree lists every file, annexed content or not).
    subjects : "all" or list of str
        Only these subjects' ``events.tsv`` / ``bold.json``.

    Returns
    -------
    list of str
        ``participants.tsv``, ``participants.json``, ``dataset_description.json`` (when in the
        tree), ``code/*.json``, and ``sub-*/func/*_events.tsv`` / ``*_bold.json`` of the
        subjects, sorted.
    """
    root = Path(root)
    keep = _selected(subjects)
    out = [p for p in ("participants.tsv", "participants.json", "dataset_description.json")
           if os.path.lexists(root / p)]
    out += sorted(p.relative_to(root).as_posix() for p in (root / "code").glob("*.json"))
    for pattern in ("sub-*/func/*_events.tsv", "sub-*/func/*_bold.json"):
        for p in root.glob(pattern):
            if keep is None or p.parent.parent.name in keep:
                out.append(p.relative_to(root).as_posix())
    return sorted(set(out))


def needed_files(run_table, space, stories=None, transcripts=True, freesurfer=True,
                 metadata=True) -> list:
    """Paths (relative to the dataset root) an analysis of ``run_table`` reads.

    Parameters
    ----------
    run_table : DataFrame
        :func:`brainpred.narratives.build_run_table` output (or a plan): columns ``subject``,
        ``task``, ``run``, ``story`` and optionally ``kept`` (only kept rows are used).
    space : str
        ``"fsaverage6"`` (real Narratives) or ``"fsaverage5"``.
    stories : list of str, optional
        Stories whose alignment is needed; default: the stories of the kept runs
        (``slumlord`` / ``reach`` map to the ``slumlordreach`` folder).
    transcripts : bool
        Include ``stimuli/gentle/<story>/transcript.txt`` (optional: see :func:`is_optional`).
    freesurfer : bool
        Include :data:`FREESURFER_FILES` of ``space`` (optional).
    metadata : bool
        Include ``participants.tsv``, ``code/scan_exclude.json`` and each kept run's
        ``events.tsv`` and ``bold.json``.

    Returns
    -------
    list of str
        Sorted, unique POSIX paths.
    """
    table = run_table
    if "kept" in table.columns:
        table = table[table["kept"].astype(bool)]
    out = set()
    if metadata:
        out |= {"participants.tsv", "code/scan_exclude.json"}
    for row in table.itertuples():
        run = "" if row.run is None or (isinstance(row.run, float) and row.run != row.run) \
            else str(row.run)
        base = f"{row.subject}_task-{row.task}" + (f"_run-{run}" if run else "")
        if metadata:
            out.add(f"{row.subject}/func/{base}_events.tsv")
            out.add(f"{row.subject}/func/{base}_bold.json")
        for hemi in ("L", "R"):
            out.add(bold_rel(row.subject, row.task, run, space, hemi))
    if stories is None:
        stories = sorted(set(table["story"]))
    for story in stories:
        for part in str(story).split(","):  # schema runs list several stories
            folder = story_folder(part)
            out.add(f"stimuli/gentle/{folder}/align.csv")
            if transcripts:
                out.add(f"stimuli/gentle/{folder}/transcript.txt")
    if freesurfer:
        out |= {f.format(space=space, h=h) for f in FREESURFER_FILES for h in ("lh", "rh")}
    return sorted(out)


def is_optional(path) -> bool:
    """Whether a path of :func:`needed_files` may be absent from the release (transcripts,
    FreeSurfer files): absent optional files are skipped with a warning."""
    path = str(path)
    return path.startswith(_OPTIONAL_PREFIXES) or path.endswith(_OPTIONAL_SUFFIXES)


# --------------------------------------------------------------------------------------------
# DataLad operations
# --------------------------------------------------------------------------------------------

def _is_dataset(root):
    return (Path(root) / ".git").exists()


def clone(url, root):
    """Clone the release into ``root``, or reuse the clone already there.

    Parameters
    ----------
    url : str
        DataLad source: ``///labs/hasson/narratives``, a git URL or a local path.
    root : str or Path
        Destination (``dataset.root``).

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    DataError
        ``root`` exists, is not empty and is not a DataLad/git dataset, or the clone failed.
    """
    root = Path(root)
    if _is_dataset(root):
        log.info("%s: existing clone reused", root)
        return root
    if root.exists() and any(root.iterdir()):
        raise DataError(f"dataset.root = {root}: the folder exists and is not a DataLad "
                        "dataset. Empty it, choose another dataset.root, or use "
                        "dataset.source: local to analyse it as it is.")
    dl = check_tools()
    log.info("cloning %s into %s", url, root)
    res = dl.clone(source=str(url), path=str(root), result_xfm=None, return_type="list",
                   **_kw())
    bad = [r for r in res if r.get("status") in ("impossible", "error")]
    if bad or not _is_dataset(root):
        msg = "; ".join(str(r.get("message")) for r in bad) or "no dataset created"
        raise DataError(f"cloning dataset.url = {url} into {root} failed: {msg}. Check the "
                        "URL and the network, then run again.")
    return root


@contextlib.contextmanager
def _lock(root):
    """Exclusive lock (one process at a time installs subdatasets / restores files)."""
    path = Path(root) / ".git" / "brainpred-download.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _containing_repo(root, rel):
    """Innermost git repository (superdataset or installed subdataset) holding ``rel``."""
    root = Path(root)
    parts = Path(rel).parts
    for i in range(len(parts) - 1, 0, -1):
        cand = root.joinpath(*parts[:i])
        if (cand / ".git").exists():
            return cand
    return root


def _submodules(repo):
    """Paths (relative to ``repo``) of the subdatasets registered in its ``.gitmodules``."""
    if not (Path(repo) / ".gitmodules").exists():
        return []
    res = subprocess.run(["git", "config", "-f", str(Path(repo) / ".gitmodules"),
                          "--get-regexp", r"^submodule\..*\.path$"],
                         capture_output=True, text=True, check=False)
    return [line.split(" ", 1)[1].strip() for line in res.stdout.splitlines() if " " in line]


def _install_subdatasets(dl, root, paths):
    """Install (no file content) every subdataset, nested ones included, holding a path."""
    done = set()
    while True:
        todo = []
        for repo in [root] + [root / d for d in sorted(done)]:
            for sub in _submodules(repo):
                rel = (repo / sub).relative_to(root).as_posix()
                if rel in done:
                    continue
                if any(p == rel or p.startswith(rel + "/") for p in paths):
                    todo.append(rel)
        todo = [d for d in todo if d not in done]
        if not todo:
            return
        need = [d for d in todo if not _is_dataset(root / d)]
        if need:
            log.info("installing subdataset(s) %s", ", ".join(need))
            res = dl.get(path=[str(root / d) for d in need], dataset=str(root),
                         get_data=False, return_type="list", **_kw())
            bad = [r for r in res if r.get("status") in ("impossible", "error")]
            if bad or not all(_is_dataset(root / d) for d in need):
                raise DataError(f"{root}: installing the subdataset(s) {need} failed: "
                                f"{'; '.join(str(r.get('message')) for r in bad)}. Check "
                                "dataset.url and the network, then run again.")
        done.update(todo)


def _restore_deleted(root, rels):
    """``git checkout`` tracked files deleted from the work tree (e.g. by Snakemake)."""
    by_repo = {}
    for rel in rels:
        if not os.path.lexists(Path(root) / rel):
            repo = _containing_repo(root, rel)
            by_repo.setdefault(repo, []).append(
                (Path(root) / rel).relative_to(repo).as_posix())
    for repo, paths in by_repo.items():
        tracked = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--", *paths],
                                 capture_output=True, text=True, check=False)
        names = [p for p in tracked.stdout.split("\0") if p]
        if names:
            log.info("%s: restoring %d deleted tracked file(s)", repo, len(names))
            subprocess.run(["git", "-C", str(repo), "checkout", "HEAD", "--", *names],
                           capture_output=True, text=True, check=False)


def _human(n):
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0


def _sizes(dl, root, rels):
    """Bytes of each path's content, from the annex keys (no download) or the file in git."""
    sizes = {}
    if not rels:
        return sizes
    res = dl.status(path=[str(Path(root) / r) for r in rels], dataset=str(root),
                    annex="basic", return_type="list", **_kw())
    for r in res:
        if r.get("type") == "file" and "path" in r:
            rel = Path(r["path"]).relative_to(Path(root).absolute()).as_posix()
            size = r.get("bytesize")
            if size is None and os.path.exists(r["path"]):
                size = os.path.getsize(r["path"])
            sizes[rel] = int(size or 0)
    return sizes


def fetch(root, paths, jobs=None, install_only=False):
    """Get the content of ``paths`` of a cloned release, installing subdatasets as needed.

    Parameters
    ----------
    root : str or Path
        The clone (:func:`clone`).
    paths : list of str
        Paths relative to ``root`` (:func:`needed_files`).
    jobs : int, optional
        Parallel transfers of ``datalad get``.
    install_only : bool
        Install the subdatasets holding the paths and report what would come; get nothing.

    Returns
    -------
    dict
        ``fetched``, ``present``, ``skipped`` (absent optional paths): lists of paths;
        ``bytes``: bytes fetched (or to fetch with ``install_only``).

    Raises
    ------
    BrainpredError
        git-annex or datalad missing.
    DataError
        A required path is not in the release, or a get failed (the message lists the files;
        run again to resume).
    """
    dl = check_tools()
    root = Path(root).absolute()
    if not _is_dataset(root):
        raise DataError(f"{root}: not a DataLad dataset. Run `python -m brainpred.download "
                        "metadata --configfile <your config>` first (it clones the release).")
    paths = sorted(set(str(p) for p in paths))
    with _lock(root):
        _install_subdatasets(dl, root, paths)
        _restore_deleted(root, paths)
    absent = [p for p in paths if not os.path.lexists(root / p)]
    required = [p for p in absent if not is_optional(p)]
    if required:
        raise DataError(f"{root}: {len(required)} needed file(s) are not in the dataset, e.g. "
                        f"{required[:5]}. Check dataset.subjects / dataset.tasks / "
                        "dataset.space, or that dataset.url is the Narratives release.")
    skipped = [p for p in absent if is_optional(p)]
    if skipped:
        log.warning("%d optional file(s) not in the release, skipped: %s%s", len(skipped),
                    skipped[:5], " ..." if len(skipped) > 5 else "")
    todo = [p for p in paths if p not in set(absent) and not os.path.exists(root / p)]
    present = [p for p in paths if p not in set(absent) and p not in set(todo)]
    sizes = _sizes(dl, root, todo)
    total = sum(sizes.get(p, 0) for p in todo)
    log.info("%d file(s) to fetch, %s; %d already present", len(todo), _human(total),
             len(present))
    out = dict(fetched=[], present=present, skipped=skipped, bytes=total)
    if install_only or not todo:
        return out
    done_bytes, failed = 0, []
    kw = {"jobs": jobs} if jobs else {}
    for r in dl.get(path=[str(root / p) for p in todo], dataset=str(root),
                    return_type="generator", **kw, **_kw()):
        if r.get("type") != "file" or "path" not in r:
            continue
        rel = Path(r["path"]).relative_to(root).as_posix()
        if r.get("status") in ("ok", "notneeded"):
            out["fetched"].append(rel)
            done_bytes += sizes.get(rel, 0)
            log.info("[%d/%d, %s / %s] %s", len(out["fetched"]), len(todo), _human(done_bytes),
                     _human(total), rel)
        else:
            failed.append(f"{rel} ({r.get('message')})")
    missing = [p for p in todo if not os.path.exists(root / p)]
    if failed or missing:
        raise DataError(f"{root}: {len(failed) or len(missing)} file(s) could not be fetched, "
                        f"e.g. {(failed or missing)[:3]}. Nothing half-written was left; check "
                        "the network and run again (the files already fetched are kept).")
    return out


def fetch_outputs(root, outputs, extra=(), jobs=None):
    """Workflow rules ``download_*``: get the job's output files (paths as Snakemake names
    them, under ``root``) and the optional ``extra`` paths (relative to ``root``, e.g. the
    story's transcript), with :func:`fetch`."""
    rels = [Path(os.path.relpath(Path(o).absolute(), Path(root).absolute())).as_posix()
            for o in outputs]
    return fetch(root, rels + [str(e) for e in extra], jobs=jobs)


# --------------------------------------------------------------------------------------------
# whole steps
# --------------------------------------------------------------------------------------------

def _dataset_cfg(config):
    ds = config["dataset"]
    if ds["source"] != "datalad":
        raise ConfigError(f"dataset.source = {ds['source']!r}: downloading needs "
                          "dataset.source: datalad.")
    return ds


def fetch_metadata(config, install_subdatasets=True, jobs=None):
    """Step 1: clone the release and get the metadata the run plan is built from.

    Parameters
    ----------
    config : dict
        Workflow configuration filled from the schema (``dataset.source: datalad``;
        :func:`brainpred.config.prepare_config`, or :func:`brainpred.config.filled`).
    install_subdatasets : bool
        Also install the subdatasets and log the size of what the analysis will fetch.
    jobs : int, optional
        Parallel transfers.

    Returns
    -------
    list of str
        Paths of the data files (:func:`needed_files`) the analysis will fetch.
    """
    ds = _dataset_cfg(config)
    root = clone(ds["url"], ds["root"])
    fetch(root, metadata_files(root, ds["subjects"]), jobs=jobs)
    table = build_run_table(root, tasks=ds["tasks"], subjects=ds["subjects"], space=ds["space"],
                            keep_scrambled=ds["keep_scrambled"], keep_schema=ds["keep_schema"])
    kept = table[table["kept"]]
    log.info("run plan: %d kept runs of %d subjects, %d stories", len(kept),
             kept["subject"].nunique(), kept["story"].nunique())
    files = needed_files(table, ds["space"])
    if install_subdatasets:
        fetch(root, files, jobs=jobs, install_only=True)
    return files


def download(config, jobs=None):
    """Steps 1 and 2 at once: clone, metadata, then every data file of the configured analysis
    (``config`` as in :func:`fetch_metadata`).

    Returns
    -------
    dict
        :func:`fetch`'s summary of the data files.
    """
    ds = _dataset_cfg(config)
    files = fetch_metadata(config, install_subdatasets=False, jobs=jobs)
    return fetch(ds["root"], files, jobs=jobs)


def _load_config(paths, root=None):
    """The effective config of the given files, as the workflow builds it (schema defaults
    for every key they leave out; :func:`brainpred.config.prepare_config`)."""
    config = {}
    for p in paths:
        if not Path(p).is_file():
            raise ConfigError(f"--configfile {p}: no such file.")
        with open(p, encoding="utf-8") as f:
            _merge(config, yaml.safe_load(f) or {})
    if root:
        config.setdefault("dataset", {})["root"] = root
    return prepare_config(config, check_model=False)   # the download loads no model


def _merge(base, new):
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def main(argv=None):
    """``python -m brainpred.download {metadata,data} --configfile FILE [--root DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m brainpred.download",
        description="Fetch the Narratives files a brainpred analysis needs with DataLad.")
    parser.add_argument("step", choices=["metadata", "data"],
                        help="metadata: clone + metadata (run before snakemake); data: also "
                             "every GIfTI, alignment and FreeSurfer file")
    parser.add_argument("--configfile", nargs="+", required=True,
                        help="workflow config file(s), merged in order (like snakemake)")
    parser.add_argument("--root", help="override dataset.root")
    parser.add_argument("--jobs", "-J", type=int, default=None, help="parallel transfers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        config = _load_config(args.configfile, args.root)
        if args.step == "metadata":
            fetch_metadata(config, jobs=args.jobs)
        else:
            download(config, jobs=args.jobs)
    except BrainpredError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
