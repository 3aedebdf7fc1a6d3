"""Read partitions from the beginning to their end, trusting the fetch high watermark.

Some brokers (Tansu, the embedded one) answer ListOffsets "latest" with the start of the last batch + 1, so
``end_offsets()`` alone can stop a read early. The high watermark that comes with each fetch response is
right on every broker; the read ends when every partition's position has reached the larger of the two.

A ``read_committed`` reader cannot pass the last stable offset (the first record of a transaction still
open); its end is that offset instead of the high watermark.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Collection

from aiokafka import AIOKafkaConsumer, TopicPartition

from battery_worker.kafka.batching import key_partition
from battery_worker.kafka.exceptions import RestoreFailed
from battery_worker.kafka.records import ConsumedRecord


async def read_to_end(
    reader: AIOKafkaConsumer,
    partitions: Collection[TopicPartition],
    *,
    timeout_s: float,
    max_records: int = 50_000,
    start_offsets: dict[TopicPartition, int] | None = None,
    stop_offsets: dict[TopicPartition, int] | None = None,
) -> AsyncIterator[list[ConsumedRecord]]:
    """Yield batches of records of ``partitions`` from the start (or ``start_offsets``) to the end, or to
    just before ``stop_offsets`` (an end taken earlier, :func:`partition_ends`: records written since are
    not read).

    The batches are aiokafka's ``ConsumerRecord[bytes, bytes]``, typed as :class:`ConsumedRecord` (the
    fields we read) because aiokafka ships no type information and mypy would see ``Any``.

    Raises :class:`RestoreFailed` when the end is not reached within ``timeout_s``.
    """
    remaining = set(partitions)
    if not remaining:
        return
    reader.assign(list(remaining))
    for tp in remaining:
        offset = (start_offsets or {}).get(tp)
        if offset is None:
            await reader.seek_to_beginning(tp)
        else:
            reader.seek(tp, offset)
    committed_only = _reads_committed_only(reader)
    listed = {} if committed_only else await reader.end_offsets(list(remaining))
    stops = stop_offsets or {}
    deadline = time.monotonic() + timeout_s
    while remaining:
        if time.monotonic() > deadline:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(remaining))
            raise RestoreFailed(f"could not read {names} to its end within {timeout_s:.0f} s")
        batch = await reader.getmany(*remaining, timeout_ms=100, max_records=max_records)
        for tp, records in batch.items():
            stop = stops.get(tp)
            if stop is not None and records and records[-1].offset >= stop:
                records = [record for record in records if record.offset < stop]
            if records:
                yield records
        for tp in list(remaining):
            position = await reader.position(tp)
            stop = stops.get(tp)
            if stop is not None and position >= stop:
                remaining.discard(tp)
                continue
            end = _fetched_end(reader, tp, committed_only)
            if end is None:
                continue
            if position >= max(end, listed.get(tp, 0)):
                remaining.discard(tp)
        await asyncio.sleep(0)


async def partition_ends(
    reader: AIOKafkaConsumer, partitions: Collection[TopicPartition], *, timeout_s: float
) -> dict[TopicPartition, int]:
    """Where each partition ends now: the offset a read to the end would stop at if nothing more came.

    ListOffsets is not trusted alone (the module docstring): a fetch brings the high watermark (the last
    stable offset, reading committed records only), and the end is the larger. The fetch starts at the
    listed end's last record, so the broker answers at once instead of waiting for new records.
    """
    tps = list(partitions)
    if not tps:
        return {}
    reader.assign(tps)
    listed = await reader.end_offsets(tps)
    for tp in tps:
        reader.seek(tp, max(listed[tp] - 1, 0))
    committed_only = _reads_committed_only(reader)
    ends: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + timeout_s
    while len(ends) < len(tps):
        if time.monotonic() > deadline:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(set(tps) - set(ends)))
            raise RestoreFailed(f"could not learn where {names} ends within {timeout_s:.0f} s")
        await reader.getmany(*(tp for tp in tps if tp not in ends), timeout_ms=100)
        for tp in tps:
            end = _fetched_end(reader, tp, committed_only)
            if tp not in ends and end is not None:
                ends[tp] = max(end, listed[tp])
    return ends


async def read_by_site(
    reader: AIOKafkaConsumer,
    topic: str,
    partitions: int,
    first: Collection[int],
    site_of: Callable[[bytes | None], str | None],
    *,
    timeout_s: float,
    marker: tuple[str, bytes] | None = None,
) -> AsyncIterator[list[ConsumedRecord]]:
    """Read the ``first`` partitions of an event topic, where the sites wanted keep their events, to the end.

    Events are partitioned by their site (``batching.partition_of``), so that is enough; but history
    written before it was partitioned by its unique key lies anywhere. Two signs tell so, and then the
    other partitions are read too:

    * a record found away from its site's partition (``site_of`` its key): the whole rest is read;
    * with ``marker``, the header every record of the by-site layout carries (``payloads.HISTORY_BY_SITE``):
      a record without it in the ``first`` partitions (the whole rest is read), or as the oldest record of
      another partition (that partition is read). The oldest record decides because a partition's records
      of the old layout came before those of the new; so a single site's history, which the first sign
      cannot catch (every record of the site's partition is the site's), is found whole.
    """
    by_site = True
    async for batch in read_to_end(reader, [TopicPartition(topic, p) for p in first], timeout_s=timeout_s):
        for record in batch:
            if by_site:
                site_id = site_of(record.key)
                by_site = site_id is None or key_partition(site_id.encode(), partitions) == record.partition
                by_site = by_site and (marker is None or marker in record.headers)
        yield batch
    rest = [TopicPartition(topic, p) for p in range(partitions) if p not in first]
    if by_site and marker is not None and rest:
        oldest = await _oldest_records(reader, rest, timeout_s=timeout_s)
        rest = [tp for tp, record in oldest.items() if record is not None and marker not in record.headers]
    elif by_site:
        rest = []
    async for batch in read_to_end(reader, rest, timeout_s=timeout_s):
        yield batch


async def _oldest_records(
    reader: AIOKafkaConsumer, partitions: Collection[TopicPartition], *, timeout_s: float
) -> dict[TopicPartition, ConsumedRecord | None]:
    """Each partition's oldest record (None: the partition is empty), one fetch's worth read of each."""
    remaining = set(partitions)
    reader.assign(list(remaining))
    for tp in remaining:
        await reader.seek_to_beginning(tp)
    oldest: dict[TopicPartition, ConsumedRecord | None] = {}
    committed_only = _reads_committed_only(reader)
    deadline = time.monotonic() + timeout_s
    while remaining:
        if time.monotonic() > deadline:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(remaining))
            raise RestoreFailed(f"could not read the first record of {names} within {timeout_s:.0f} s")
        batch = await reader.getmany(*remaining, timeout_ms=100)
        for tp, records in batch.items():
            if records and tp in remaining:
                oldest[tp] = records[0]
                remaining.discard(tp)
        for tp in list(remaining):
            end = _fetched_end(reader, tp, committed_only)
            if end is not None and await reader.position(tp) >= end:
                oldest[tp] = None
                remaining.discard(tp)
    return {tp: oldest[tp] for tp in partitions}


def _fetched_end(reader: AIOKafkaConsumer, tp: TopicPartition, committed_only: bool) -> int | None:
    """The end the last fetch of ``tp`` reported (None before one): the high watermark, or the last stable
    offset for a reader of committed records only, which cannot read past it."""
    end: int | None = reader.last_stable_offset(tp) if committed_only else reader.highwater(tp)
    return end


def _reads_committed_only(reader: AIOKafkaConsumer) -> bool:
    # aiokafka keeps the setting private and has no getter; make_reader is where it is chosen.
    return getattr(reader, "_isolation_level", "read_uncommitted") == "read_committed"
