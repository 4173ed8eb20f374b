"""How a rule's job runs: logging to the rule's log file, thread limits."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

from .errors import BrainpredError

__all__ = ["setup_logging", "limit_threads"]

log = logging.getLogger("brainpred")


def setup_logging(log_path=None, level=logging.INFO):
    """Log brainpred messages to the rule's log file and to stderr."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.captureWarnings(True)
    sys.excepthook = _log_exception
    return log


def _log_exception(exc_type, exc, tb):
    """A rule script's uncaught exception, where the user looks: the brainpred message first,
    in the rule's log and on the console; the traceback only for unexpected errors (and in the
    log file for every error)."""
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    if issubclass(exc_type, BrainpredError):
        log.error("%s", exc)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.stream.write(f"\n(traceback, for a bug report)\n{text}\n")
                handler.flush()
    else:
        log.error("unexpected error (a bug: please report it with this log): %s: %s\n%s",
                  exc_type.__name__, exc, text)


def limit_threads(n):
    """Cap BLAS and torch threads at the rule's ``threads``."""
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass
