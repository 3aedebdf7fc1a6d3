"""Take a batch from every assigned ``prices`` partition that has records, not from the first one alone.

aiokafka's ``getmany`` drains its buffered fetches in the order they arrived: the first partition's whole
fetch (up to ``max_partition_fetch_bytes``, 4 MiB, some 27,000 ticks) before a record of the next. Under a
policy that takes milliseconds a tick (``site``, ``mpc``) a backlog's first partition held the worker for
minutes while the sites of the others got no decision (an auditor's run: after 23 s, partitions 1 and 2 not
moved). So each batch first asks each assigned partition, in turn from a rotating start, for its share of
the batch without waiting; then tops the batch up from whichever partitions have more; and only when none
had anything waits, as before, for the first records of any.

Every ``getmany`` is an ``await``: a rebalance callback may seek between two of them. So each call's
records keep the positions' stamp taken as it returned (:class:`~battery_worker.kafka.positions.Positions`),
and are checked against it, not against the first call's: records fetched after a seek are from the new
position and must not be dropped as stale. A ``getmany`` that raises loses the records the calls before it
took (the consumer's position is past them): safe only because the worker answers every ``KafkaError`` by
rewinding to the stored state and the committed offsets, which reads them again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from battery_worker.kafka.positions import Positions
from battery_worker.kafka.records import ConsumedRecord

Batch = Mapping[TopicPartition, Sequence[ConsumedRecord]]


@dataclass(slots=True)
class Fetched:
    """A batch as fetched: each ``getmany``'s records with the positions' stamp taken as it returned."""

    parts: list[tuple[dict[TopicPartition, int], Batch]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.parts)

    @property
    def batch(self) -> dict[TopicPartition, list[ConsumedRecord]]:
        """Every record fetched, per partition in offset order."""
        return _merged(self.parts)

    def current(self, positions: Positions) -> dict[TopicPartition, list[ConsumedRecord]]:
        """The records not made stale by a seek since their own ``getmany`` returned."""
        return _merged([(stamp, positions.still_current(stamp, part)) for stamp, part in self.parts])


def _merged(parts: Sequence[tuple[object, Batch]]) -> dict[TopicPartition, list[ConsumedRecord]]:
    merged: dict[TopicPartition, list[ConsumedRecord]] = {}
    for _, part in parts:
        for tp, records in part.items():
            if records:
                merged.setdefault(tp, []).extend(records)
    return merged


class FairFetch:
    """``fetch(max_records)``: a batch with each assigned partition's share first (module docstring)."""

    def __init__(self, consumer: AIOKafkaConsumer, positions: Positions, timeout_ms: int) -> None:
        self._consumer = consumer
        self._positions = positions
        self._timeout_ms = timeout_ms
        self._turn = 0

    async def fetch(self, max_records: int) -> Fetched:
        fetched = Fetched()
        assigned = sorted(self._consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        if len(assigned) <= 1:
            await self._take(fetched, max_records, timeout_ms=self._timeout_ms)
            return fetched
        share = max(1, max_records // len(assigned))
        self._turn = (self._turn + 1) % len(assigned)
        turn = assigned[self._turn :] + assigned[: self._turn]
        left = await self._shares(fetched, turn, share, max_records)
        if not fetched:  # nothing buffered: wait for a share of any, then share what the fetch brought
            left -= await self._take(fetched, share, timeout_ms=self._timeout_ms)
            if not fetched:
                return fetched
            left = await self._shares(fetched, turn, share, left)
        if left > 0:  # topped up from the partitions that have more, without waiting
            await self._take(fetched, left)
        return fetched

    async def _shares(self, fetched: Fetched, turn: list[TopicPartition], share: int, left: int) -> int:
        for tp in turn:
            if left <= 0:
                break
            left -= await self._take(fetched, min(share, left), tp)
        return left

    async def _take(
        self, fetched: Fetched, max_records: int, *partitions: TopicPartition, timeout_ms: int = 0
    ) -> int:
        if max_records <= 0:
            return 0
        part = await self._consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        stamp = self._positions.stamp()  # no await since getmany returned: see Positions
        if not part:
            return 0
        fetched.parts.append((stamp, part))
        return sum(len(records) for records in part.values())
