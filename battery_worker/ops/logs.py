"""Logging set-up: one JSON object per line for log collectors, or readable text on a terminal.

``--log-format json|text|auto`` (env ``BATTERY_WORKER_LOG_FORMAT``, default ``auto``: text when stderr is a
terminal, JSON otherwise). A JSON line carries ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``
and, where the call site passed them with ``extra=``, the coordinates ``site_id``, ``topic``,
``partition``, ``partitions`` and ``offset``. Secrets never reach a log line: settings are logged through
``Settings.masked()`` (``SecretStr`` prints as ``**********``) and errors name masked values only.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson

LogFormat = Literal["json", "text", "auto"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text", "auto")

#: ``extra=`` keys copied into every line that has them.
CONTEXT_FIELDS = ("site_id", "topic", "partition", "partitions", "offset", "group_id")

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in CONTEXT_FIELDS if hasattr(record, name)}


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line; values orjson cannot encode are written with ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic one-liner, with the coordinates appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _context(record)
        if not context:
            return text
        return text + " " + " ".join(f"{key}={value}" for key, value in context.items())


def resolve_format(log_format: str, stream: IO[str]) -> Literal["json", "text"]:
    if log_format not in LOG_FORMATS:
        from battery_worker.errors import InvalidConfig

        raise InvalidConfig("log_format", log_format, f"expected one of {', '.join(LOG_FORMATS)}")
    if log_format == "auto":
        return "text" if stream.isatty() else "json"
    return "json" if log_format == "json" else "text"


def setup_logging(level: str = "INFO", log_format: str = "auto", stream: IO[str] | None = None) -> None:
    """Configure the root logger once (replacing earlier handlers); aiokafka stays at WARNING or above."""
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if resolve_format(log_format, out) == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    try:
        root.setLevel(level.upper())
    except ValueError:
        from battery_worker.errors import InvalidConfig

        raise InvalidConfig("log_level", level, "expected DEBUG, INFO, WARNING, ERROR or CRITICAL") from None
    aiokafka = logging.getLogger("aiokafka")
    aiokafka.setLevel(max(logging.WARNING, root.level))
    if root.level > logging.DEBUG:
        aiokafka.addFilter(_drop_bootstrap_failures)


def _drop_bootstrap_failures(record: logging.LogRecord) -> bool:
    """aiokafka logs each failed bootstrap connection at ERROR; the worker and the commands report the same
    failure themselves, with its cause (``kafka/diagnose.py``), so the line would only be noise."""
    return not str(record.msg).startswith(("Unable connect to", "Unable to request metadata from"))
