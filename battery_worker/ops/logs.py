"""Logging set-up: one JSON object per line for log collectors, or readable text on a terminal.

``--log-format json|text|auto`` (env ``BATTERY_WORKER_LOG_FORMAT``, default ``auto``: text when stderr is a
terminal, JSON otherwise). A JSON line carries ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``
and, where the call site passed them with ``extra=``, the coordinates ``site_id``, ``topic``,
``partition``, ``partitions`` and ``offset``. Secrets never reach a log line: settings are logged through
``Settings.masked()`` (``SecretStr`` prints as ``**********``) and errors name masked values only.
"""

from __future__ import annotations

import logging
import ssl
import sys
import time
from collections.abc import Callable
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


def _one_line(value: object) -> str:
    """``value`` with its control characters escaped (a newline as ``\\n``): a site id is a record key
    anyone who can write to ``prices`` chooses, and one holding a newline forged a log line of its own."""
    text = str(value)
    return text if text.isprintable() else repr(text)[1:-1]


class TextFormatter(logging.Formatter):
    """The classic one-liner, with the coordinates appended as ``key=value``; one line per record (but
    for a traceback), whatever the message and coordinates hold."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _one_line(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _context(record)
        if not context:
            return text
        return text + " " + " ".join(f"{key}={_one_line(value)}" for key, value in context.items())


def resolve_format(log_format: str, stream: IO[str]) -> Literal["json", "text"]:
    if log_format not in LOG_FORMATS:
        from battery_worker.errors import InvalidConfig

        raise InvalidConfig("log_format", log_format, f"expected one of {', '.join(LOG_FORMATS)}")
    if log_format == "auto":
        return "text" if stream.isatty() else "json"
    return "json" if log_format == "json" else "text"


def setup_logging(level: str = "INFO", log_format: str = "auto", stream: IO[str] | None = None) -> None:
    """Configure the root logger once (replacing earlier handlers); aiokafka stays at WARNING or above, less
    the lines :class:`KafkaClientNoise` quiets."""
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
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    # A first chart of a new install logged "generated new fontManager" amid a backtest's table.
    logging.getLogger("matplotlib").setLevel(max(logging.WARNING, root.level))
    handler.addFilter(KafkaClientNoise(root.level))


BOOTSTRAP_FAILURES = ('Unable connect to "', 'Unable to request metadata from "')
"""aiokafka's lines for a bootstrap server that does not answer (``host:port`` in quotes; a known broker is
named by its node id instead, and those lines stay)."""
SESSION_EXPIRED = "Heartbeat session expired - marking coordinator dead"
"""aiokafka's ERROR when its heartbeats have not been answered for the group's session: after a broker
stall or outage, or the process stood still. The worker acts on it itself (its partitions may have gone:
it rewinds to the stored state, ``kafka/freezes.py``), so it is a ``WARNING``, not a page (an observability
review counted 11 in a few stalls, with the lines of :data:`CONNECTION_FAILURES` they follow)."""
REBALANCING = "Heartbeat failed for group %s because it is rebalancing"
"""aiokafka's WARNING at every rebalance of the group (a deploy, a scale-out): the worker logs the
rebalance itself (``revoked``, ``assigned``), so it is ``INFO``."""
COORDINATOR_LOOKUP_FAILED = "Group Coordinator Request failed: %s"
"""aiokafka's line for each failed lookup of the group's coordinator, logged at ERROR and retried."""
TOPIC_NOT_FOUND = "Topic %s not found in cluster metadata"
"""aiokafka's ERROR at each metadata answer without a topic it follows: 90 in 50 ms of a broker restarted
empty (an SRE review), before the worker's own line naming the missing topic. Said once per topic per
``persist_s``, as a ``WARNING``."""
CONNECTION_FAILURES = frozenset(
    (
        "Unable connect to node with id %s: %s",
        "Unable to update metadata from %s",
        "Unable to request metadata from node with id %s: %r",
        "Failed fetch messages from %s: %s",
        "Failed fetch offsets from %s: %s",
        "Got error produce response: %s",
        "Cannot send %r to %s: %r",
        "Heartbeat send request failed: %s. Will retry.",
        "Error sending %s to node %s [%s] -- marking coordinator dead",
        "LeaveGroup request failed: %s",
    )
)
"""aiokafka's lines for a known broker it cannot reach, each retried: in a broker outage of 87 s, some 9,000
of them (4,981 of the first alone), about 100 a second, ERROR most of them."""


class KafkaClientNoise(logging.Filter):
    """aiokafka's ERROR lines that are not errors of the service, on the handler (a logger's filter does not
    see its children's records, and aiokafka logs under ``aiokafka.client``, ``aiokafka.consumer...``).

    - A bootstrap server that does not answer: the worker and the commands report the same failure
      themselves, with its cause (``kafka/diagnose.py``), so the line is dropped (kept at ``DEBUG``).
    - A heartbeat answered "rebalancing": routine at every rebalance, which the worker logs itself (``INFO``).
    - The group session expired (:data:`SESSION_EXPIRED`): a ``WARNING``; the worker rewinds on it.
    - A known broker that cannot be reached (:data:`CONNECTION_FAILURES`): the first line of a run of them is
      a ``WARNING`` that says the rest are counted; then one ``WARNING`` per ``persist_s`` gives how long
      and how many, with the latest line; a run ends when none has come for ``persist_s``. A failed
      coordinator lookup within such a run is one of them (not the hint about ``__consumer_offsets``).
    - A topic missing from a metadata answer (:data:`TOPIC_NOT_FOUND`): a ``WARNING`` once per topic per
      ``persist_s``.
    - A retriable failure to find the group's coordinator: a brand-new cluster answers so until it has
      created ``__consumer_offsets``, and aiokafka asks again every 100 ms. The first lines of a run of them
      are ``INFO``; once the run has lasted ``persist_s`` the coordinator is really missing (for example
      ``offsets.topic.replication.factor`` above the brokers there are), and a ``WARNING`` says so at most
      once per ``persist_s``. A failure that is not retriable stays an ERROR.
    """

    def __init__(
        self, level: int, *, persist_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._level = level
        self._persist_s = persist_s
        self._clock = clock
        self._run_started: float | None = None
        self._last_failure = 0.0
        self._last_warning: float | None = None
        self._outage_started: float | None = None
        self._last_connection_failure = 0.0
        self._last_outage_line = 0.0
        self._not_shown = 0
        self._topics_missing: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        message = str(record.msg)
        if message.startswith(BOOTSTRAP_FAILURES):
            return self._level <= logging.DEBUG
        if message in CONNECTION_FAILURES and _connection_trouble(record):
            return self._connection_failure(record)
        if message == COORDINATOR_LOOKUP_FAILED and _retriable(record):
            if self._in_outage(self._clock()):
                return self._connection_failure(record)
            return self._coordinator_lookup(record)
        if message == REBALANCING:
            _relevel(record, logging.INFO)
            return self._level <= logging.INFO
        if message == SESSION_EXPIRED:
            _relevel(record, logging.WARNING)
            return self._level <= logging.WARNING
        if message == TOPIC_NOT_FOUND:
            return self._topic_not_found(record)
        return True

    def _topic_not_found(self, record: logging.LogRecord) -> bool:
        if self._level <= logging.DEBUG:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        topic, now = str(args[0]) if args else "", self._clock()
        said = self._topics_missing.get(topic)
        if said is not None and now - said < self._persist_s:
            return False
        self._topics_missing[topic] = now
        _relevel(record, logging.WARNING)
        record.msg = f"{record.msg} (said once per {self._persist_s:.0f} s)"
        return self._level <= logging.WARNING

    def _in_outage(self, now: float) -> bool:
        return self._outage_started is not None and now - self._last_connection_failure <= self._persist_s

    def _connection_failure(self, record: logging.LogRecord) -> bool:
        if self._level <= logging.DEBUG:
            return True  # every line, as aiokafka logged it
        now = self._clock()
        if not self._in_outage(now):
            self._outage_started, self._last_outage_line, self._not_shown = now, now, 0
            self._last_connection_failure = now
            _relevel(record, logging.WARNING)
            record.msg = (
                f"{record.msg} (the Kafka client retries; lines like it are counted, not shown, until none "
                f"has come for {self._persist_s:.0f} s)"
            )
            return self._level <= logging.WARNING
        assert self._outage_started is not None
        self._last_connection_failure = now
        self._not_shown += 1
        if now - self._last_outage_line < self._persist_s:
            return False
        _relevel(record, logging.WARNING)
        record.msg = (
            f"Kafka connections failing for {now - self._outage_started:.0f} s: {self._not_shown:,} client "
            f"errors in the last {now - self._last_outage_line:.0f} s, the latest: {record.msg}"
        )
        self._last_outage_line, self._not_shown = now, 0
        return self._level <= logging.WARNING

    def _coordinator_lookup(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        if self._run_started is None or now - self._last_failure > self._persist_s:
            self._run_started, self._last_warning = now, None
        self._last_failure = now
        if now - self._run_started < self._persist_s:
            _relevel(record, logging.INFO)
            return self._level <= logging.INFO
        if self._last_warning is not None and now - self._last_warning < self._persist_s:
            return False
        self._last_warning = now
        _relevel(record, logging.WARNING)
        record.msg = (
            f"no group coordinator for {now - self._run_started:.0f} s "
            "(can the brokers create and lead __consumer_offsets?): %s"
        )
        return self._level <= logging.WARNING


def _connection_trouble(record: logging.LogRecord) -> bool:
    """A line of :data:`CONNECTION_FAILURES` for a broker out of reach: no error in it, or a retriable one
    (a produce or fetch error such as an authorization failure stays as aiokafka logged it)."""
    args = record.args if isinstance(record.args, tuple) else ()
    errors = [arg for arg in args if isinstance(arg, BaseException)]
    if any(isinstance(e, ssl.SSLError) for e in errors):
        return False  # an OSError, but a certificate or a host name refused: waiting cannot cure it
    return not errors or any(getattr(e, "retriable", False) is True or isinstance(e, OSError) for e in errors)


def _retriable(record: logging.LogRecord) -> bool:
    args = record.args if isinstance(record.args, tuple) else ()
    return bool(args) and getattr(args[0], "retriable", False) is True


def _relevel(record: logging.LogRecord, level: int) -> None:
    record.levelno, record.levelname = level, logging.getLevelName(level)
