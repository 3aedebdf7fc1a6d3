"""The one error root of battery-worker.

Every error the project raises on purpose derives from :class:`BatteryWorkerError`. The Kafka loop reads
``retriable`` to choose between backing off and stopping, and the CLI turns any of them into one line.
Input errors also derive from :class:`ValueError`, so callers of the Python API can catch them the usual way.
"""

from __future__ import annotations

from typing import Any


class BatteryWorkerError(Exception):
    """Root of every error battery-worker raises on purpose."""

    retriable: bool = False


class InvalidValue(BatteryWorkerError, ValueError):
    """A configuration field or an input value is out of its domain.

    Carries the offending ``field`` and ``value`` so that logs, the DLQ headers and the CLI can name them.
    """

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}={_shown(value)}: {problem}")


SHOWN_VALUE_CHARS = 200
"""How much of a bad value an error's message quotes: enough to recognise it; a whole price file read as
one value made a one-line error of 1.2 MB."""


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) <= SHOWN_VALUE_CHARS:
        return text
    return f"{text[:SHOWN_VALUE_CHARS]}... ({len(text):,} characters)"


class InvalidConfig(InvalidValue):
    """A battery, policy or worker setting is invalid: fix the setting and start again."""


class InvalidInput(InvalidValue):
    """A power, duration or price passed to the battery is invalid; the battery was left unchanged."""


class InvalidTick(InvalidValue):
    """A price tick is malformed (missing field, wrong type, NaN/inf, bad timestamp)."""


class TimestampNotIncreasing(InvalidTick):
    """A tick's timestamp is not after the previous applied tick; the battery was left unchanged."""
