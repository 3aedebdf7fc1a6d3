"""What ``battery-worker status`` shows besides the status topic: each site's last action and the group's lag.

The last action per site is read from the tail of ``battery.actions`` (no event contract changes); the lag
of a partition is its high watermark minus the group's committed offset (which the replay reads too: the
ticks past it are not decided yet). The high watermark comes from a fetch response, never from ListOffsets
alone (on Tansu that under-reports a batch-written partition).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from battery_worker.events import BatteryAction
from battery_worker.kafka.clients import connection_options, make_reader, start_client
from battery_worker.kafka.committed import committed_offsets as read_committed
from battery_worker.kafka.reading import read_to_end
from battery_worker.kafka.topics import partition_count
from battery_worker.settings import KafkaSettings, Settings


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    high_watermark: int
    committed: int | None
    """``None``: the group has committed nothing there yet; the lag then counts from the first record."""
    lag: int


async def last_actions(settings: Settings, tail_per_partition: int = 10_000) -> dict[str, BatteryAction]:
    """The latest action of every site found in the last ``tail_per_partition`` records of each partition."""
    topic = settings.topics.actions
    count = await partition_count(settings, topic)
    if not count:
        return {}
    reader = make_reader(settings.kafka)
    await start_client(reader, settings.kafka)
    latest: dict[str, BatteryAction] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(count)]
        # ListOffsets may under-report the end: starting from it minus the tail is still at or before the
        # true tail start, and read_to_end reads on to the fetch high watermark.
        ends = await reader.end_offsets(tps)
        beginnings = await reader.beginning_offsets(tps)
        starts = {tp: max(beginnings.get(tp, 0), ends.get(tp, 0) - tail_per_partition) for tp in tps}
        async for batch in read_to_end(
            reader, tps, timeout_s=settings.worker.restore_timeout_s, start_offsets=starts
        ):
            for record in batch:
                if record.value is None:
                    continue
                try:
                    action = BatteryAction.model_validate_json(record.value)
                except ValidationError:
                    continue
                latest[action.site_id] = action
    finally:
        await reader.stop()
    return latest


async def group_lag(settings: Settings, group_id: str, timeout_s: float = 10.0) -> list[PartitionLag]:
    """Per ``prices`` partition: high watermark, the group's committed offset, and the difference."""
    topic = settings.topics.prices
    count = await partition_count(settings, topic)
    if not count:
        return []
    tps = [TopicPartition(topic, p) for p in range(count)]
    committed = await committed_offsets(settings.kafka, group_id, tps)
    reader = make_reader(settings.kafka, committed_only=False)
    await start_client(reader, settings.kafka)
    try:
        reader.assign(tps)
        beginnings = await reader.beginning_offsets(tps)
        highs = await _high_watermarks(reader, tps, timeout_s)
    finally:
        await reader.stop()
    lags = []
    for tp in tps:
        offset = committed[tp]
        high = highs[tp]
        start = offset if offset is not None else beginnings.get(tp, 0)
        lags.append(PartitionLag(tp.partition, high, offset, max(0, high - start)))
    return lags


async def committed_offsets(
    kafka: KafkaSettings, group_id: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The group's committed offset of each partition (None: nothing committed there).

    Read by a consumer of the group that never joins it (manual assignment) and commits nothing, not by the
    admin client: Tansu closes the connection on the admin's OffsetFetch. Through ``kafka/committed.py``, as
    the worker reads them: a coordinator refusing the fetch for a moment is asked again, never read as
    "nothing committed" (which made the replay count every tick, and ``status`` show a whole backlog).
    """
    reader = AIOKafkaConsumer(**connection_options(kafka), group_id=group_id, enable_auto_commit=False)
    await start_client(reader, kafka)
    try:
        reader.assign(partitions)
        found = await read_committed(reader, partitions)
        return {tp: offset for tp, (offset, _metadata) in found.items()}
    finally:
        await reader.stop()


async def _high_watermarks(
    reader: AIOKafkaConsumer, tps: list[TopicPartition], timeout_s: float
) -> dict[TopicPartition, int]:
    await reader.seek_to_end(*tps)
    deadline = time.monotonic() + timeout_s
    while True:
        await reader.getmany(*tps, timeout_ms=100, max_records=1)
        highs = {tp: reader.highwater(tp) for tp in tps}
        if all(high is not None for high in highs.values()):
            return {tp: int(high) for tp, high in highs.items() if high is not None}
        if time.monotonic() > deadline:
            # No fetch answer yet for some partition: fall back to ListOffsets for those.
            listed = await reader.end_offsets(tps)
            return {tp: int(highs[tp] or listed.get(tp, 0)) for tp in tps}
        await asyncio.sleep(0)


def age_text(seconds: float) -> str:
    """A short human duration: ``42 s``, ``7 min``, ``5.2 h``, ``430 d``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.0f} d"
