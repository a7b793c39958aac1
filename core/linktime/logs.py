"""Log lines: ``LINKTIME_LOG_FORMAT=text`` (the default) or ``json``, one JSON object per line
(python-json-logger) with ``time``, ``level``, ``logger``, ``message``, ``exception`` and, while
a run is being processed, ``account_id``, ``run_id``, ``event_id`` and ``step_id``.

The engine binds those ids in a context variable (``bound``) around the work of a run and of
each step; a filter on the handler copies them onto every record, so a plugin's own
``logging.getLogger(...)`` lines carry them too.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Iterator
from typing import Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Never mutated: each binding sets a new dict, so a thread or task sees only its own.
_ids: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("linktime_log_ids")


def ids() -> dict[str, str]:
    """The ids bound in this context."""
    return _ids.get({})


def bind(**values: str) -> None:
    """Add ids to this context for good (a coroutine's own context, say)."""
    _ids.set({**ids(), **values})


@contextlib.contextmanager
def bound(**values: str) -> Iterator[None]:
    """Add ids to the log lines of this context while the block runs."""
    token = _ids.set({**ids(), **values})
    try:
        yield
    finally:
        _ids.reset(token)


class RunIds(logging.Filter):
    """Puts the ids bound where the line is logged on the record (a JSON line's fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in ids().items():
            setattr(record, name, value)
        return True


# The last segment of these paths is a capability (an unsubscribe token, an account's callback
# key): whoever reads it in a log could use it. Access logs and error lines show "…" instead.
_CAPABILITY_RE = re.compile(r"(/v1/(?:unsubscribe|callbacks/[^/?#\s\"]+)/)[^/?#\s\"]+")


def redact(text: str) -> str:
    """``text`` with the tokens of unsubscribe and callback paths replaced by "…"."""
    return _CAPABILITY_RE.sub(r"\1…", text)


class Redact(logging.Filter):
    """Takes the capabilities out of every line (uvicorn's access log names each path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        timestamp="time",  # ISO 8601 in UTC, from the record's creation
        # uvicorn's copy of each message with terminal colour codes: noise in a log store
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        rename_fields={
            "levelname": "level",
            "name": "logger",
            "exc_info": "exception",
            "stack_info": "stack",
        },
    )


def configure(log_format: LogFormat, *, verbose: bool = False) -> None:
    """Log this process's lines (every logger's, warnings too) to stderr in ``log_format``."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RunIds())
    handler.addFilter(Redact())
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    logging.captureWarnings(True)
    # One INFO line per outgoing request would cost more than the request's bookkeeping.
    for chatty in ("alembic", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
