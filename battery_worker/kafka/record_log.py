"""One log line per input record that an operator may need to trace, with its Kafka coordinates.

Rejected records (sent to the DLQ) are logged at WARNING, stale ticks at INFO, applied decisions and
already-applied re-reads at DEBUG. Each line carries ``site_id`` (when known), ``topic``, ``partition`` and
``offset`` as ``extra`` fields, so the JSON formatter writes them as keys and a log search for one site or
offset finds every line about it. The DEBUG lines cost one ``isEnabledFor`` check per record when off.
"""

from __future__ import annotations

import logging

from battery_worker.pipeline.processing import Handled, InputRecord
from battery_worker.ticks import MAX_SITE_ID_BYTES

log = logging.getLogger("battery_worker.records")

_MAX_ERROR_CHARS = 500
"""An error names the offending value; a 3 MB field must not make a 3 MB log line."""


def log_handled_debug() -> bool:
    """Checked once per batch: applied records are only worth a call when DEBUG is on."""
    return log.isEnabledFor(logging.DEBUG)


def log_handled(record: InputRecord, handled: Handled) -> None:
    kind = handled.kind
    if kind == "applied":  # only called for these when DEBUG is on (log_handled_debug, once per batch)
        if handled.outcome is None:
            return
        step = handled.outcome.step
        log.debug(
            "%s %.3f MW for %.3f h, state of charge %.3f MWh",
            step.action.value,
            step.power_mw,
            step.duration_hours,
            step.state_of_charge_after_mwh,
            extra=_coordinates(record, handled),
        )
    elif kind == "rejected":
        error = handled.error
        reason = "unknown" if error is None else error.field
        text = str(error)
        if len(text) > _MAX_ERROR_CHARS:
            text = text[:_MAX_ERROR_CHARS] + "..."
        log.warning(
            "rejected to the dead-letter topic (%s): %s", reason, text, extra=_coordinates(record, handled)
        )
    elif kind == "stale":
        assert handled.stale_at is not None, "TickProcessor gives a stale tick's times"
        tick_at, last_at = handled.stale_at
        log.info(
            "stale tick skipped: its time %s is at or before the site's last applied tick, %s",
            tick_at.isoformat(),
            last_at.isoformat(),
            extra=_coordinates(record, handled),
        )
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("already applied before a restart or rebalance", extra=_coordinates(record, handled))


def _coordinates(record: InputRecord, handled: Handled) -> dict[str, object]:
    extra: dict[str, object] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    if handled.site_id is not None:
        extra["site_id"] = handled.site_id
    elif record.key is not None and len(record.key) <= MAX_SITE_ID_BYTES:
        # A rejected record has no validated site; its key is what an operator searches for.
        extra["site_id"] = record.key.decode("utf-8", "replace")
    return extra
