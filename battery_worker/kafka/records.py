"""A consumed Kafka record as the worker reads it, and the one place it becomes an :class:`InputRecord`.

aiokafka's ``ConsumerRecord[K, V]`` is generic, but aiokafka ships no type information (no ``py.typed``),
so to mypy it is ``Any``. :class:`ConsumedRecord` names the fields we read, so that mypy checks every use;
aiokafka's records (``getmany``, :func:`battery_worker.kafka.reading.read_to_end`) match it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from battery_worker.pipeline.processing import InputRecord


class ConsumedRecord(Protocol):
    """The fields of an aiokafka ``ConsumerRecord[bytes, bytes]`` that battery-worker reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...
    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch, as the producer or the broker stamped it (-1 when absent)."""
        ...


def input_record(message: ConsumedRecord) -> InputRecord:
    """The record the data path handles: its Kafka coordinates, key, value, timestamp and headers."""
    return InputRecord(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        message.timestamp,
        message.headers,
    )
