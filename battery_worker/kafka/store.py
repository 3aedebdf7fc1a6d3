"""Site state in the compacted state topic: read back on assignment, the latest record per site wins.

Restore is a mode of the worker loop, not a side path (as in Quix Streams' ``state/recovery.py``): before
any tick of a newly assigned ``prices`` partition is handled, the same-numbered state partition is read to
its high watermark. A ``None`` value is a tombstone: the site is forgotten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from battery_worker.events import BatteryStateRecord
from battery_worker.kafka.reading import read_to_end
from battery_worker.kafka.worker_stats import WorkerStats, counting_failures
from battery_worker.ops.memory import release_freed_memory
from battery_worker.pipeline.processing import TickProcessor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stored:
    """The latest value of every site's state record, still as bytes, and how many records were read."""

    values: dict[bytes, bytes]
    records_read: int

    def records(self) -> Iterator[BatteryStateRecord]:
        """Each site's record parsed as it is restored, not all at once. Parsed, an ``mpc`` site's record
        holds its 696-hour history as float objects (about 25 KB); all parsed before the first was restored,
        10,000 such sites left the process at 588 MiB of RSS instead of 488 (``bench/state_memory.py``,
        before the history was packed): freed memory is not given back, so the peak is what stays."""
        for key, value in self.values.items():
            try:
                yield BatteryStateRecord.model_validate_json(value)
            except ValidationError as error:
                log.error("state record for %r is unreadable, the site starts afresh: %s", key, error)


async def load_states(
    reader: AIOKafkaConsumer, state_topic: str, partitions: Collection[int], *, timeout_s: float
) -> Stored:
    """The latest state record of every site stored in ``partitions`` of ``state_topic``."""
    latest: dict[bytes, bytes | None] = {}
    read = 0
    tps = [TopicPartition(state_topic, partition) for partition in sorted(partitions)]
    async for batch in read_to_end(reader, tps, timeout_s=timeout_s):
        read += len(batch)
        for record in batch:
            if record.key is not None:
                latest[record.key] = record.value
    return Stored({key: value for key, value in latest.items() if value is not None}, read)


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

    One partition at a time: a site's latest record is known only once its partition is read to the end,
    so the records read are held until then, and partition by partition only one partition's are held at
    once (10,000 ``mpc`` sites with a month of history: 92 MiB of records read, ``bench/state_memory.py``).
    A failure is counted as a ``restore`` failure and raised: the worker rewinds.
    """
    if not partitions:
        return
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    records_read = loaded = 0
    with counting_failures(stats, "restore"):
        for partition in sorted(partitions):
            left_s = max(0.0, deadline - time.monotonic())
            stored = await load_states(reader, state_topic, [partition], timeout_s=left_s)
            records_read += stored.records_read
            loaded += processor.restore(stored.records())
            del stored  # this partition's records read: freed before the next one's are read
    release_freed_memory()  # and the freed pages handed back to the system
    seconds = time.perf_counter() - started
    stats.restores += 1
    stats.sites_restored = loaded
    stats.last_restore_seconds = seconds
    log.info(
        "restored %d sites of partitions %s from %d state records in %.3f s",
        loaded,
        sorted(partitions),
        records_read,
        seconds,
        extra={"topic": state_topic, "partitions": sorted(partitions)},
    )
