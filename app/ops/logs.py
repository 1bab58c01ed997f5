"""Logs as one JSON object per line (python-json-logger), each carrying the job, dataset and worker it is about.

The ids live in context variables: a worker sets `worker_id` once, a runner sets `job_id` and `dataset_id` at
the start of its job's task, and every record logged below it (the accept step in its thread, the backend's
retries, the trainer's supervisor) carries them, because asyncio tasks and `asyncio.to_thread` copy the
context. `SPROUT_LOG_FORMAT=json` (the default of `sprout worker`) or `text`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]

_FIELDS = ("worker_id", "job_id", "job_kind", "dataset_id")
QUIET_LOGGERS = ("alembic.runtime.plugins",)
_context: dict[str, ContextVar[Any]] = {name: ContextVar(name, default=None) for name in _FIELDS}


def bind(**ids: Any) -> None:
    """Attach ids to everything this task (and what it starts) logs from now on."""
    for name, value in ids.items():
        _context[name].set(value)


@contextmanager
def bound(**ids: Any) -> Iterator[None]:
    """Attach ids for the duration of a block."""
    tokens = [(_context[name], _context[name].set(value)) for name, value in ids.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextIds(logging.Filter):
    """Copies the bound ids onto each record (absent ones as None, so every JSON line has the same keys)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


class _TextFormatter(logging.Formatter):
    """Plain lines for a terminal, with the ids that are set appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{n}={getattr(record, n)}" for n in _FIELDS if getattr(record, n, None) is not None)
        return f"{line} [{ids}]" if ids else line


def configure_logging(fmt: LogFormat = "text", level: str | int = "INFO") -> None:
    """One handler on the root logger, to stderr; uvicorn's loggers go through it too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextIds())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
                # uvicorn's copy of its message with terminal colours: noise in a log pipeline.
                reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            )
        )
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)  # the root's level decides (a uvicorn run may have set its own)
    # Alembic announces each of its plugins at INFO on every start.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
