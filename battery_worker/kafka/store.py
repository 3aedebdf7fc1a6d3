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

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from battery_worker.events import SCHEMA_VERSION, BatteryStateRecord
from battery_worker.kafka.exceptions import StateOfNewerVersion
from battery_worker.kafka.reading import read_to_end
from battery_worker.kafka.worker_stats import WorkerStats, counting_failures
from battery_worker.ops.memory import release_freed_memory
from battery_worker.pipeline.processing import TickProcessor

log = logging.getLogger(__name__)


HOLD_BYTES = 16 * 2**20
"""The state records a restore holds while it reads a partition to its end. A site's latest record is known
only there, so a read holds every site's latest; past this size it keeps only each site's latest offset and
reads the partition a second time, restoring each site from its latest record as it passes. Memory stays
bounded whatever the state's size, for a second read: 10,000 ``mpc`` sites with a month of history are
92 MiB of records (``bench/state_memory.py``), most state partitions far less."""


@dataclass(frozen=True, slots=True)
class Stored:
    """The latest value of every site's state record, still as bytes, and how many records were read; or,
    where those were more than a read holds (``hold_bytes``), each site's latest offset instead."""

    values: dict[bytes, bytes]
    records_read: int
    latest_offsets: dict[bytes, int] | None = None
    """Set (and ``values`` empty) when the records were let go: the offset of each site's latest record,
    for sites whose latest is not a tombstone. :func:`restore_latest` reads them again."""

    def records(self) -> Iterator[BatteryStateRecord]:
        """Each site's record parsed as it is restored, not all at once. Parsed, an ``mpc`` site's record
        holds its 696-hour history as float objects (about 25 KB); all parsed before the first was restored,
        10,000 such sites left the process at 588 MiB of RSS instead of 488 (``bench/state_memory.py``,
        before the history was packed): freed memory is not given back, so the peak is what stays."""
        for key, value in self.values.items():
            try:
                record = BatteryStateRecord.model_validate_json(value)
            except ValidationError as error:
                _refuse_a_newer_version(key, _version_of(value))
                log.error("state record for %r is unreadable, the site starts afresh: %s", key, error)
                continue
            _refuse_a_newer_version(key, record.schema_version)
            yield record


def _version_of(value: bytes) -> object:
    """The ``schema_version`` a record that did not validate says it is of, if it says one."""
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return parsed.get("schema_version") if isinstance(parsed, dict) else None


def _refuse_a_newer_version(key: bytes, version: object) -> None:
    """A record of a newer version than this code reads (:class:`StateOfNewerVersion`) stops the worker."""
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise StateOfNewerVersion(key.decode("utf-8", "replace"), version, SCHEMA_VERSION)


async def load_states(
    reader: AIOKafkaConsumer,
    state_topic: str,
    partitions: Collection[int],
    *,
    timeout_s: float,
    hold_bytes: int,
) -> Stored:
    """The latest state record of every site stored in ``partitions`` of ``state_topic``; once the records
    held pass ``hold_bytes``, only their offsets (``Stored.latest_offsets``)."""
    latest: dict[bytes, bytes | None] | None = {}
    offsets: dict[bytes, int] = {}
    held = read = 0
    tps = [TopicPartition(state_topic, partition) for partition in sorted(partitions)]
    async for batch in read_to_end(reader, tps, timeout_s=timeout_s):
        read += len(batch)
        for record in batch:
            key = record.key
            if key is None:
                continue
            offsets[key] = -1 if record.value is None else record.offset
            if latest is not None:
                held += len(record.value or b"") - len(latest.get(key) or b"")
                latest[key] = record.value
        if latest is not None and held > hold_bytes:
            latest = None  # let go: a second read restores from the offsets
    if latest is None:
        return Stored({}, read, {key: offset for key, offset in offsets.items() if offset >= 0})
    return Stored({key: value for key, value in latest.items() if value is not None}, read)


async def restore_latest(
    reader: AIOKafkaConsumer,
    processor: TickProcessor,
    partition: TopicPartition,
    latest_offsets: dict[bytes, int],
    *,
    timeout_s: float,
) -> int:
    """Read ``partition`` again and restore each site from its latest record as it passes, holding one
    fetch's records at a time; returns how many sites were restored.

    A site's record written after the first read (by a previous owner still finishing) is newer than the
    one that read found and is restored over it: the latest wins, as in one read, a tombstone too (the site
    is forgotten again). A site the first read did not see, or whose latest was a tombstone, is not restored.
    """
    restored: set[str] = set()
    async for batch in read_to_end(reader, [partition], timeout_s=timeout_s):
        values: dict[bytes, bytes] = {}
        for record in batch:
            key, value = record.key, record.value
            wanted = None if key is None else latest_offsets.get(key)
            if key is None or wanted is None or record.offset < wanted:
                continue
            if value is None:  # deleted since the first read: the record before it no longer counts
                values.pop(key, None)
                processor.forget(key.decode("utf-8", "replace"))
                restored.discard(key.decode("utf-8", "replace"))
            else:
                values[key] = value
        processor.restore(_noted(Stored(values, len(batch)).records(), restored))
    return len(restored)


def _noted(records: Iterator[BatteryStateRecord], sites: set[str]) -> Iterator[BatteryStateRecord]:
    """``records``, each one's site noted in ``sites`` (a site restored twice is counted once)."""
    for record in records:
        sites.add(record.site_id)
        yield record


async def restore_sites(
    reader: AIOKafkaConsumer,
    processor: TickProcessor,
    state_topic: str,
    partitions: Collection[int],
    stats: WorkerStats,
    *,
    timeout_s: float,
    hold_bytes: int = HOLD_BYTES,
) -> set[int]:
    """Load the sites of ``partitions`` into ``processor`` from the state topic, counting it in ``stats``;
    returns the partitions of the state topic never written to (they end at offset 0). Compaction and
    tombstones never bring a written partition back to 0: one that is there lost its records with the topic
    (deleted, or ``topics.state`` renamed), unless nothing was ever stored for its sites.

    One partition at a time, each one's records let go before the next is read; a partition whose records
    are more than ``hold_bytes`` is read twice (:data:`HOLD_BYTES`). A failure is counted as a ``restore``
    failure and raised: the worker rewinds.
    """
    if not partitions:
        return set()
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    records_read = loaded = 0
    read_twice = []
    never_written: set[int] = set()
    with counting_failures(stats, "restore"):
        for partition in sorted(partitions):
            stored = await load_states(
                reader, state_topic, [partition], timeout_s=_left(deadline), hold_bytes=hold_bytes
            )
            records_read += stored.records_read
            if await reader.position(TopicPartition(state_topic, partition)) == 0:  # read to its end
                never_written.add(partition)
            if stored.latest_offsets is None:
                loaded += processor.restore(stored.records())
            else:
                read_twice.append(partition)
                tp = TopicPartition(state_topic, partition)
                loaded += await restore_latest(
                    reader, processor, tp, stored.latest_offsets, timeout_s=_left(deadline)
                )
            del stored  # this partition's records read: freed, and their pages handed back to the system
            release_freed_memory()
    seconds = time.perf_counter() - started
    stats.restores += 1
    stats.sites_restored = loaded
    stats.last_restore_seconds = seconds
    log.info(
        "restored %d sites of partitions %s from %d state records in %.3f s%s",
        loaded,
        sorted(partitions),
        records_read,
        seconds,
        f" (read twice, more than {hold_bytes:,} bytes of records: {read_twice})" if read_twice else "",
        extra={"topic": state_topic, "partitions": sorted(partitions)},
    )
    return never_written


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
