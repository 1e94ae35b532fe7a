"""Structured logs: one JSON object per line, carrying the current request's id.

The app sets ``request_id_var`` per request (``bind_request_id``); every record logged while it is
set carries it, whichever logger wrote it. Fields passed with ``extra=`` are written too, except
those whose name says they may hold prompt text or secrets: those are redacted, so a careless call
cannot put a prompt or a key in the logs.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Iterator

request_id_var: ContextVar[str | None] = ContextVar("coe_request_id", default=None)

REDACTED = "[redacted]"
SENSITIVE_FIELDS = frozenset(
    {
        "prompt", "messages", "content", "text", "input", "body",
        "api_key", "authorization", "key", "password", "secret", "token",
    }
)
# Attributes every LogRecord has; anything else on a record came from ``extra=``. uvicorn adds
# ``color_message``, the message again with terminal colour codes.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message", "asctime", "color_message"
}


@contextmanager
def bind_request_id(request_id: str) -> Iterator[None]:
    """Attach ``request_id`` to every record logged inside the block (in this context)."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id(record)
        if request_id is not None:
            entry["request_id"] = request_id
        for name, value in vars(record).items():
            if name in _RECORD_ATTRIBUTES or name == "request_id" or name.startswith("_"):
                continue
            entry[name] = REDACTED if _sensitive(name) else value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger [request id] message``, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record)} {record.levelname} {record.name} "
            f"[{_request_id(record) or '-'}] {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _request_id(record: logging.LogRecord) -> str | None:
    explicit = getattr(record, "request_id", None)
    return str(explicit) if explicit is not None else request_id_var.get()


def _sensitive(name: str) -> bool:
    lowered = name.lower()
    return lowered in SENSITIVE_FIELDS or lowered.endswith(("_key", "_token", "_secret", "prompt"))


def configure_logging(level: str = "info", json: bool = True) -> logging.Handler:
    """Send every logger's records to stderr, as JSON lines (or plain text with ``json=False``).

    Replaces the handlers on the root logger, so calling it again reconfigures rather than
    duplicates. Returns the installed handler.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; a URL can carry a credential.
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))
    return handler
