"""Send many records as one closed batch per partition: the producer half of the hot path.

``AIOKafkaProducer.send`` costs tens of microseconds per record in Python (a coroutine, a future, a
partitioner call, an accumulator lookup) and its batches wait ``linger_ms`` before they leave. The worker
always has a whole batch of records in hand and waits for all their acknowledgements anyway, so it appends
them to one ``BatchBuilder`` per partition (the record encoding runs in aiokafka's C extension), closes the
builders so nothing lingers, and submits them together with ``send_batch``.

Each record lands where ``send`` would have put it: its explicit partition, else the default partitioner's
choice (murmur2 of the key over the topic's partitions; a random partition when there is no key), and in
the order given within each partition. A record with a ``partition_key`` (history: a key unique per tick,
partitioned by its site) is partitioned as a record keyed by that would be.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Iterator
from typing import Any

from aiokafka import AIOKafkaProducer

from battery_worker.pipeline.partitioning import key_partition_uncached
from battery_worker.pipeline.processing import OutputRecord

_MAX_CACHED_KEYS = 200_000
_key_partition: dict[tuple[bytes, int], int] = {}
_NO_HEADERS: list[tuple[str, bytes]] = []
"""Shared by every record without headers (most): the C record builder reads the list, never changes it."""


def key_partition(key: bytes, partitions: int) -> int:
    """The default partitioner's choice for ``key`` (as Kafka's Java client), cached for repeated keys.

    ``partitioning.murmur2``, the same hash as aiokafka's (``tests`` hold them equal), about twice as fast.
    """
    cached = _key_partition.get((key, partitions))
    if cached is not None:
        return cached
    partition = key_partition_uncached(key, partitions)
    if len(_key_partition) >= _MAX_CACHED_KEYS:
        _key_partition.clear()
    _key_partition[(key, partitions)] = partition
    return partition


def partition_of(record: OutputRecord, partitions: int) -> int:
    """The partition of a record without an explicit one, among the topic's ``partitions``."""
    by = record.key if record.partition_key is None else record.partition_key
    return random.randrange(partitions) if by is None else key_partition(by, partitions)


async def send_batched(producer: AIOKafkaProducer, outputs: Iterable[OutputRecord]) -> list[Any]:
    """Queue every record, closed batch by closed batch; returns the futures of their acknowledgements.

    If queuing fails half way (a transaction an earlier batch's refusal failed refuses the next), the
    first batch queued before it that has failed already is raised, the cause, and the others' errors are
    retrieved whenever they come: left alone, asyncio logged each as "Future exception was never
    retrieved" (an ERROR). Nothing is waited for: the failure is raised at once, as before."""
    pending: list[Any] = []
    try:
        return await _queue(producer, outputs, pending)
    except Exception as error:
        for future in pending:
            future.add_done_callback(_retrieved)
        cause = next(
            (f.exception() for f in pending if f.done() and not f.cancelled() and f.exception()), None
        )
        if cause is not None:
            raise cause from error
        raise


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def _queue(
    producer: AIOKafkaProducer, outputs: Iterable[OutputRecord], pending: list[Any]
) -> list[Any]:
    counts: dict[str, int] = {}
    open_batches: dict[tuple[str, int], Any] = {}
    for record in outputs:
        partition = record.partition
        if partition is None:
            count = counts.get(record.topic)
            if count is None:
                count = counts[record.topic] = len(await producer.partitions_for(record.topic))
            partition = partition_of(record, count)
        tp = (record.topic, partition)
        batch = open_batches.get(tp)
        if batch is None:
            batch = open_batches[tp] = producer.create_batch()
        headers = list(record.headers) if record.headers else _NO_HEADERS
        if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers) is None:
            batch.close()
            pending.append(await producer.send_batch(batch, record.topic, partition=partition))
            batch = open_batches[tp] = producer.create_batch()
            if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers) is None:
                raise ValueError(f"a record for {record.topic} is larger than the producer's batch size")
    for (topic, partition), batch in open_batches.items():
        batch.close()
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    return pending


def drained(records: list[OutputRecord]) -> Iterator[OutputRecord]:
    """The records in order, each dropped from the list as it is taken (the list ends empty).

    Appended to a batch, a record's bytes are copied into the batch's buffer; dropped as they go, a batch's
    output lives once in memory while it is encoded and acknowledged, not twice.
    """
    records.reverse()
    while records:
        yield records.pop()


async def send_and_wait(producer: AIOKafkaProducer, outputs: Iterable[OutputRecord]) -> None:
    """Send every record and wait until each is acknowledged; the first failure is raised.

    Every acknowledgement is awaited even after a failure: a failed batch's error left unretrieved would be
    logged by asyncio later as "Future exception was never retrieved", one ERROR line per partition.
    """
    pending = await send_batched(producer, outputs)
    if pending:
        results = await asyncio.gather(*pending, return_exceptions=True)
        failure = next((result for result in results if isinstance(result, BaseException)), None)
        if failure is not None:
            raise failure
