"""Exactly-once: one transactional producer per owned ``prices`` partition, one transaction per batch of it.

A partition's transaction holds everything its records produced (actions, statuses, history, dead letters),
the state records of its sites, and its next input offset (``send_offsets_to_transaction``): all of it is
committed, or none of it. A ``read_committed`` reader never sees the output of an aborted transaction.

Why a producer per input partition (Kafka's first exactly-once design, KIP-98) and not one per worker
(KIP-447): aiokafka sends ``TxnOffsetCommit`` version 0, which carries no consumer-group generation or
member id, so the group coordinator cannot refuse a zombie's offsets. The transactional id is then the only
fence, and it fences only if it names the input partition: the partition's next owner starts a producer
with the same id, the broker bumps its epoch, aborts the old owner's open transaction, and refuses the old
producer from then on (``ProducerFenced``). The cost: a producer (and its connections) per owned partition,
a ``InitProducerId`` per partition on every assignment, and a commit per partition per batch, each with its
markers written to every partition the transaction touched. ``docs/delivery.md`` has the comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    IllegalOperation,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTxnState,
    KafkaConnectionError,
    KafkaError,
    ProducerFenced,
    UnsupportedVersionError,
)

from battery_worker.kafka.batching import send_and_wait
from battery_worker.kafka.clients import make_idempotent_probe, make_transactional_producer
from battery_worker.kafka.diagnose import typed
from battery_worker.kafka.exceptions import PartitionFenced, TransactionsUnsupported
from battery_worker.kafka.worker_stats import WorkerStats
from battery_worker.pipeline.processing import OutputRecord
from battery_worker.settings import KafkaSettings

log = logging.getLogger(__name__)

_FENCED = (ProducerFenced, InvalidProducerEpoch, InvalidProducerIdMapping)
_AFTER_AN_ERROR = (IllegalOperation, InvalidTxnState)
"""What aiokafka raises for a call in a transaction an earlier error has failed."""
_STOP_TIMEOUT_S = 5.0
_PROBE_ATTEMPTS = 3

__all__ = ["PartitionTransactions", "PartitionWork", "require_transactions"]


@dataclass(frozen=True, slots=True)
class PartitionWork:
    """What one partition's transaction commits: its outputs, and the offset to resume from."""

    partition: TopicPartition
    outputs: Sequence[OutputRecord]
    next_offset: int
    metadata: str = ""
    """The commit's metadata (:data:`.positions.STATE_STORED` where the partition has state stored)."""


async def require_transactions(kafka: KafkaSettings) -> None:
    """Refuse exactly-once on a broker without transactions, with one line, before anything is consumed.

    An idempotent producer's start asks for a producer id (``InitProducerId``), which every broker with
    transactions grants; the embedded broker answers it with an error.
    """
    for attempt in range(1, _PROBE_ATTEMPTS + 1):
        refusal = await _ask_for_a_producer_id(kafka)
        if refusal is None:
            return
        problem = typed(refusal, kafka)  # an ACL or credentials problem is named as such
        if problem is not None:
            raise problem
        if not _transient(refusal) or attempt == _PROBE_ATTEMPTS:
            break
        await asyncio.sleep(attempt)
    raise TransactionsUnsupported(
        f"exactly-once needs Kafka transactions, and the broker at {kafka.bootstrap_servers} refused a "
        f"producer id ({type(refusal).__name__}); the embedded broker has none: use Apache Kafka, or "
        "worker.processing_guarantee=at-least-once"
    )


async def _ask_for_a_producer_id(kafka: KafkaSettings) -> BaseException | None:
    probe = make_idempotent_probe(kafka)
    sender_log = logging.getLogger("aiokafka.producer.sender")
    sender_log.disabled = True  # its own line about the refused request would precede ours, less clear
    try:
        await probe.start()
    except (KafkaError, TimeoutError) as error:
        return error
    finally:
        sender_log.disabled = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(probe.stop(), _STOP_TIMEOUT_S)
    return None


def _transient(error: BaseException) -> bool:
    """A lost connection or a coordinator moving, worth asking again; a broker's refusal is not."""
    return isinstance(error, TimeoutError | KafkaConnectionError) or bool(getattr(error, "retriable", False))


class PartitionTransactions:
    """The transactional producers of the partitions this worker owns, and their commits."""

    def __init__(
        self, kafka: KafkaSettings, group_id: str, prices_topic: str, timeout_ms: int, stats: WorkerStats
    ) -> None:
        self._kafka = kafka
        self._group_id = group_id
        self._prices_topic = prices_topic
        self._timeout_ms = timeout_ms
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._fenced: set[TopicPartition] = set()
        self._counts = stats.transactions
        self._closed = False

    def transactional_id(self, partition: int) -> str:
        """Stable per group and input partition: the id the partition's next owner fences this one with."""
        return f"battery-worker.{self._group_id}.{self._prices_topic}.{partition}"

    async def open(self, partitions: Iterable[TopicPartition]) -> None:
        """Start a producer for each partition that has none: this fences the previous owner and waits
        until its open transaction is aborted, so a restore afterwards reads its final state."""
        self._fenced -= set(partitions)  # the group gives them (back) to us: an older fence is moot
        missing = sorted(set(partitions) - set(self._producers))
        if self._closed or not missing:  # closed: a rebalance during the worker's stop opens nothing
            return
        started = {
            tp: make_transactional_producer(
                self._kafka, self.transactional_id(tp.partition), transaction_timeout_ms=self._timeout_ms
            )
            for tp in missing
        }
        results = await asyncio.gather(
            *(producer.start() for producer in started.values()), return_exceptions=True
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await _stop_all(started.values())
            if isinstance(failure, UnsupportedVersionError):
                raise TransactionsUnsupported(f"the broker refused transactions: {failure}") from None
            raise failure
        if self._closed:  # the worker closed while these started
            await _stop_all(started.values())
            return
        self._producers.update(started)

    def take_fenced(self) -> set[TopicPartition]:
        """The partitions fenced since the last call (their producers are closed)."""
        fenced, self._fenced = self._fenced, set()
        return fenced

    async def close(self, partitions: Iterable[TopicPartition]) -> None:
        self._fenced -= set(partitions)  # revoked: no rejoin is needed for them any more
        await _stop_all([p for tp in set(partitions) if (p := self._producers.pop(tp, None)) is not None])

    async def close_all(self) -> None:
        self._closed = True
        await self.close(list(self._producers))

    async def commit_all(self, work: Sequence[PartitionWork]) -> None:
        """One transaction per partition, all at once; every one has ended when this returns.

        The first failure is raised after the others have ended (committed or aborted): the caller
        rewinds to what is stored, which then includes the partitions that did commit.
        """
        results = await asyncio.gather(*(self._commit(item) for item in work), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _commit(self, work: PartitionWork) -> None:
        tp = work.partition
        producer = self._producers.get(tp)
        if producer is None:  # its producer failed earlier; the rewind before this batch reopens it
            raise PartitionFenced(f"{tp.topic}[{tp.partition}] has no transactional producer")
        await producer.begin_transaction()
        try:
            await send_and_wait(producer, work.outputs)
            await producer.send_offsets_to_transaction(
                {tp: (work.next_offset, work.metadata)}, self._group_id
            )
            await producer.commit_transaction()
        except BaseException as error:
            # What failed the transaction, taken before an abort gives it a new waiter (left there, asyncio
            # logged it at exit as "Future exception was never retrieved", a security review): the refusal
            # of a write, or a fence, rather than the next call's IllegalOperation, said as "a bug".
            cause = _transaction_error(producer)
            failure = cause if isinstance(error, _AFTER_AN_ERROR) and cause is not None else error
            if isinstance(failure, _FENCED):
                self._counts["fenced"] += 1
                await self.close([tp])
                self._fenced.add(tp)
                raise PartitionFenced(
                    f"{tp.topic}[{tp.partition}] fenced ({type(failure).__name__}): another worker owns it "
                    "now, or its transaction outlived worker.transaction_timeout_ms; nothing of the batch is "
                    "committed"
                ) from None
            self._counts["aborted"] += 1
            with contextlib.suppress(Exception):  # best effort: a successor aborts it anyway
                await asyncio.wait_for(producer.abort_transaction(), _STOP_TIMEOUT_S)
            # A producer in doubt is replaced, not reused: its successor's InitProducerId aborts whatever is
            # still open under this id before the rewind reads the stored state back.
            await self.close([tp])
            if failure is not error:
                raise failure from error
            raise
        self._counts["committed"] += 1


async def _stop_all(producers: Iterable[AIOKafkaProducer]) -> None:
    async def stop(producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), _STOP_TIMEOUT_S)
        except Exception as error:  # closing a failed producer: report it, it is dropped either way
            log.debug("a transactional producer did not stop cleanly: %s", error)
        _forget_fatal_error(producer)

    await asyncio.gather(*(stop(producer) for producer in producers))


def _transaction_error(producer: AIOKafkaProducer) -> BaseException | None:
    """The error that failed the producer's transaction (aiokafka sets it on the transaction's waiter),
    retrieved; None if there is none."""
    waiter = getattr(getattr(producer, "_txn_manager", None), "_transaction_waiter", None)
    if isinstance(waiter, asyncio.Future) and waiter.done() and not waiter.cancelled():
        return waiter.exception()
    return None


def _forget_fatal_error(producer: AIOKafkaProducer) -> None:
    """aiokafka also sets a fence on a transaction waiter nobody awaits; asyncio would log it at exit as
    "Future exception was never retrieved" (an ERROR with a traceback). It is handled here: retrieve it."""
    _transaction_error(producer)
