"""Site state in the compacted state topic: read back on assignment, the latest record per site wins.

Restore is a mode of the worker loop, not a side path (as in Quix Streams' ``state/recovery.py``): before
any tick of a newly assigned ``prices`` partition is handled, the same-numbered state partition is read to
its high watermark. A ``None`` value is a tombstone: the site is forgotten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from battery_worker.events import BatteryStateRecord
from battery_worker.kafka.reading import read_to_end
from battery_worker.kafka.worker_stats import WorkerStats, counting_failures
from battery_worker.pipeline.processing import TickProcessor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Restored:
    records: list[BatteryStateRecord]
    records_read: int
    seconds: float


async def load_states(
    reader: AIOKafkaConsumer, state_topic: str, partitions: Collection[int], *, timeout_s: float
) -> Restored:
    """The latest state record of every site stored in ``partitions`` of ``state_topic``."""
    started = time.perf_counter()
    latest: dict[bytes, bytes | None] = {}
    read = 0
    tps = [TopicPartition(state_topic, partition) for partition in sorted(partitions)]
    async for batch in read_to_end(reader, tps, timeout_s=timeout_s):
        read += len(batch)
        for record in batch:
            if record.key is not None:
                latest[record.key] = record.value
    states: list[BatteryStateRecord] = []
    for key, value in latest.items():
        if value is None:
            continue
        try:
            states.append(BatteryStateRecord.model_validate_json(value))
        except ValidationError as error:
            log.error("state record for %r is unreadable, the site starts afresh: %s", key, error)
    return Restored(states, read, time.perf_counter() - started)


async def restore_sites(
    reader: AIOKafkaConsumer,
    processor: TickProcessor,
    state_topic: str,
    partitions: Collection[int],
    stats: WorkerStats,
    *,
    timeout_s: float,
) -> None:
    """Load the sites of ``partitions`` into ``processor`` from the state topic, counting it in ``stats``.

    A failure is counted as a ``restore`` failure and raised: the worker rewinds.
    """
    if not partitions:
        return
    with counting_failures(stats, "restore"):
        restored = await load_states(reader, state_topic, partitions, timeout_s=timeout_s)
        loaded = processor.restore(restored.records)
    stats.restores += 1
    stats.sites_restored = loaded
    stats.last_restore_seconds = restored.seconds
    log.info(
        "restored %d sites of partitions %s from %d state records in %.3f s",
        loaded,
        sorted(partitions),
        restored.records_read,
        restored.seconds,
        extra={"topic": state_topic, "partitions": sorted(partitions)},
    )
