"""The consume → decide → produce loop. It moves bytes, batches, commits and asks the domain; no rules here.

One batch, in this order (the order is the delivery guarantee):

1. ``getmany`` a batch of ``prices`` records; hand each to :class:`TickProcessor` (validate, decide, apply).
2. Send the batch's actions, status, history and dead letters; wait until all are acknowledged.
3. Send one state record per site the batch touched (carrying the last input offset it reflects);
   wait until acknowledged.
4. Commit the input offsets.

Steps 3 and 4 (the batch's *tail*) run in a task of their own while the next batch is fetched and
processed: they are off the tick-to-action path. Tails never overlap: the next batch's tail starts only
after this one has finished, and a rebalance, a rewind or a stop waits for it first. The state records are
taken from memory when the tail starts, so a later batch cannot change what this tail writes.

A crash after 2 re-reads the batch and re-emits byte-identical events (same ``event_id``). A crash after
3 re-reads it too, but the restored state already reflects those records, so they are skipped. Either way
no tick is applied twice to the battery and none is skipped.

Partitions: on assignment the sites of those partitions are restored from the state topic before any of
their ticks is handled; on revocation the in-flight batch finishes and commits first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from battery_worker.errors import BatteryWorkerError
from battery_worker.kafka.backoff import Backoff
from battery_worker.kafka.batching import send_and_wait
from battery_worker.kafka.clients import (
    connection_options,
    make_admin,
    make_group_consumer,
    make_producer,
    make_reader,
)
from battery_worker.kafka.diagnose import explain, typed
from battery_worker.kafka.latency import BatchLatency
from battery_worker.kafka.probes import broker_answers, consumer_lag
from battery_worker.kafka.record_log import log_handled, log_handled_debug
from battery_worker.kafka.shutdown import BoundedStop, close_clients
from battery_worker.kafka.store import load_states
from battery_worker.kafka.topics import ensure_topics
from battery_worker.pipeline.processing import Handled, InputRecord, OutputRecord, TickProcessor
from battery_worker.settings import Settings

log = logging.getLogger(__name__)

_TAIL_FAILED = "storing the last batch's state failed (%s); its records will be re-read"


@dataclass(slots=True)
class WorkerStats:
    """Counters for the closing summary line, health and metrics."""

    batches: int = 0
    rebalances: int = 0
    restores: int = 0
    sites_restored: int = 0
    last_restore_seconds: float = 0.0
    produce_errors: int = 0
    commit_failures: int = 0
    rewinds: int = 0
    assigned: set[TopicPartition] = field(default_factory=set)
    ready: bool = False
    connect_failure: str | None = None
    started_at: float = field(default_factory=time.monotonic)


class Worker:
    """Owns the lifecycle: connect (with back-off), run the loop, stop gracefully, always close."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_handled: Callable[[InputRecord, Handled], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics.names()
        self.processor = TickProcessor(
            settings.site_directory(),
            self.topics,
            prices_partitions=settings.topics.partitions,
            max_message_bytes=settings.worker.max_message_bytes,
            max_tick_ahead_s=settings.worker.max_tick_ahead_s,
        )
        self.stats = WorkerStats()
        self.latency = BatchLatency()
        self._on_handled = on_handled
        self._stop = BoundedStop(settings.worker.shutdown_timeout_s)
        self._lock = asyncio.Lock()
        self._needs_rewind = False
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._backoff = Backoff(settings.worker.backoff_initial_s, settings.worker.backoff_max_s)
        self._tail: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """Ask for a graceful stop: the in-flight batch finishes, is flushed and committed.

        Bounded by ``worker.shutdown_timeout_s`` even with a frozen broker (see :mod:`.shutdown`).
        """
        self._stop.request()

    @property
    def stopping(self) -> bool:
        return self._stop.requested.is_set()

    async def run(self, *, max_messages: int | None = None, idle_timeout_s: float | None = None) -> int:
        """Run until stopped, ``max_messages`` records handled, or ``idle_timeout_s`` without records.

        Returns the number of input records handled.
        """
        log.info("battery-worker starting with settings %s", self.settings.masked())
        self._stop.guard(asyncio.current_task())
        try:
            try:
                return await self._loop(max_messages, idle_timeout_s)
            except _StopRequested:
                log.info("stop requested before the broker answered: nothing was in flight")
                return self.processor.counters.total
            except asyncio.CancelledError:
                if not self._stop.absorb():
                    raise
                return self.processor.counters.total
        finally:
            self._stop.closing()
            await self._settle_tail_on_exit()
            await close_clients((self._consumer, self._producer, self._reader), self._stop)
            counters = self.processor.counters
            log.info(
                "battery-worker stopped: %d records (%d applied, %d stale, %d already applied, "
                "%d to DLQ), %d batches, %d rebalances, %d rewinds, %d sites in memory",
                counters.total,
                counters.applied,
                counters.stale,
                counters.already_applied,
                counters.rejected,
                self.stats.batches,
                self.stats.rebalances,
                self.stats.rewinds,
                self.processor.site_count,
            )

    async def _loop(self, max_messages: int | None, idle_timeout_s: float | None) -> int:
        handled = 0
        await self._connect()
        idle_since = time.monotonic()
        while not self._stop.requested.is_set():
            if max_messages is not None and handled >= max_messages:
                break
            try:
                if self._tail is not None and self._tail.done():
                    await self._settle_tail()  # a failed tail while idle: rewind now, not at the next batch
                if self._needs_rewind:
                    await self._rewind()
                count = await self._poll_once(None if max_messages is None else max_messages - handled)
            except (KafkaError, BatteryWorkerError) as error:
                fatal = typed(error, self.settings.kafka) if isinstance(error, KafkaError) else error
                if fatal is not None and not fatal.retriable:
                    raise fatal from None
                await self._recover(error)
                continue
            handled += count
            now = time.monotonic()
            if count:
                idle_since = now
            elif idle_timeout_s is not None and self.stats.assigned and now - idle_since > idle_timeout_s:
                break
        return handled

    # --- connecting and closing ------------------------------------------------------------------------

    async def _connect(self) -> None:
        settings = self.settings
        while True:
            try:
                admin = make_admin(settings.kafka)
                try:
                    await admin.start()
                    partitions = await ensure_topics(admin, settings.topics)
                finally:
                    await admin.close()
                break
            except KafkaError as error:
                await self._wait_for_broker(error)
        self.processor.prices_partitions = partitions[self.topics.prices]
        self._producer = make_producer(settings.kafka)
        self._reader = make_reader(settings.kafka)
        self._consumer = make_group_consumer(settings.kafka, settings.worker)
        for client in (self._producer, self._reader, self._consumer):
            while True:
                try:
                    await client.start()
                    break
                except KafkaError as error:
                    await self._wait_for_broker(error)
        self._consumer.subscribe([self.topics.prices], listener=_Rebalance(self))
        self._backoff.reset()
        self.stats.connect_failure = None

    async def _wait_for_broker(self, error: KafkaError) -> None:
        """Back off after a failed connection, unless its cause is one that waiting cannot cure.

        Authentication, authorization and TLS failures stop the worker with one line naming the cause
        (:mod:`.diagnose`); a stop requested meanwhile ends the wait quietly (exit 0, nothing in flight).
        """
        if self._stop.requested.is_set():
            raise _StopRequested
        cause = await explain(error, self.settings.kafka, connection_options(self.settings.kafka))
        if not cause.retriable:
            raise cause
        delay = self._backoff.next_delay()
        log.warning("%s; retrying in %.1f s", cause, delay)
        self.stats.connect_failure = str(cause)
        await self._sleep(delay)
        if self._stop.requested.is_set():
            raise _StopRequested

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.requested.wait(), seconds)

    # --- the loop ----------------------------------------------------------------------------------------

    async def _poll_once(self, limit: int | None) -> int:
        assert self._consumer is not None
        max_records = self.settings.worker.max_batch_records
        if limit is not None:
            max_records = max(1, min(max_records, limit))
        batch = await self._consumer.getmany(
            timeout_ms=self.settings.worker.poll_timeout_ms, max_records=max_records
        )
        if not batch:
            return 0
        started = time.monotonic()
        async with self._lock:
            if self._needs_rewind:
                return 0
            count = await self._process(batch)
        self.latency.observe_batch(batch, started)
        return count

    async def _process(self, batch: dict[TopicPartition, list[object]]) -> int:
        assert self._consumer is not None
        assert self._producer is not None
        outputs: list[OutputRecord] = []
        commits: dict[TopicPartition, int] = {}
        now_ms = int(time.time() * 1000)
        debug = log_handled_debug()
        count = 0
        for tp, records in batch.items():
            if tp not in self.stats.assigned or not records:
                continue
            for message in records:
                record = InputRecord(
                    tp.topic,
                    tp.partition,
                    message.offset,  # type: ignore[attr-defined]
                    message.key,  # type: ignore[attr-defined]
                    message.value,  # type: ignore[attr-defined]
                    message.timestamp,  # type: ignore[attr-defined]
                )
                handled = self.processor.handle(record, now_ms)
                outputs.extend(handled.outputs)
                if handled.kind != "applied" or debug:
                    log_handled(record, handled)
                if self._on_handled is not None:
                    self._on_handled(record, handled)
                count += 1
            commits[tp] = records[-1].offset + 1  # type: ignore[attr-defined]
        await self._send_all(outputs)
        await self._settle_tail()
        self._tail = asyncio.create_task(self._store_and_commit(self.processor.take_state_records(), commits))
        self.stats.batches += 1
        self._backoff.reset()
        return count

    async def _store_and_commit(self, states: list[OutputRecord], commits: dict[TopicPartition, int]) -> None:
        """A batch's tail: its state records acknowledged, then its input offsets committed."""
        assert self._consumer is not None
        await self._send_all(states)
        try:
            await self._consumer.commit(commits)
        except CommitFailedError as error:
            self.stats.commit_failures += 1
            log.warning("commit failed after a rebalance (state is stored, nothing lost): %s", error)

    async def _settle_tail(self) -> None:
        """Wait for the previous batch's tail; its error, if any, is raised here (and leads to a rewind)."""
        tail, self._tail = self._tail, None
        if tail is not None:
            await tail

    async def _settle_tail_quietly(self) -> None:
        try:
            await self._settle_tail()
        except (KafkaError, BatteryWorkerError) as error:
            log.warning(_TAIL_FAILED, error)
            self._needs_rewind = True

    async def _settle_tail_on_exit(self) -> None:
        """On the way out, within the stop budget: a tail still waiting on a frozen broker is cancelled."""
        tail = self._tail
        if tail is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(tail), max(0.0, self._stop.remaining_s() / 2))
        except TimeoutError:
            tail.cancel()
            log.warning("the last batch's state was not stored in time; its records will be re-read")
        except Exception as error:  # on the way out: report it, never mask the exit
            log.warning(_TAIL_FAILED, error)
        self._tail = None

    async def _send_all(self, outputs: Iterable[OutputRecord]) -> None:
        """Send everything, then wait for every acknowledgement: no per-message wait on the hot path.

        One closed batch per partition (``batching.send_and_wait``), not one ``send`` per record.
        """
        assert self._producer is not None
        await send_and_wait(self._producer, outputs)

    async def _recover(self, error: Exception) -> None:
        """A send or restore failed: back off, then rebuild memory from what is stored on the broker."""
        self.stats.produce_errors += 1
        self._needs_rewind = True
        delay = self._backoff.next_delay()
        log.warning("%s: %s; rewinding to the stored state in %.1f s", type(error).__name__, error, delay)
        await self._sleep(delay)

    async def _rewind(self) -> None:
        """Forget in-memory state and re-read it; seek inputs back to the committed offsets."""
        assert self._consumer is not None
        async with self._lock:
            with contextlib.suppress(KafkaError, BatteryWorkerError):
                await self._settle_tail()  # its failure is why we rewind, or irrelevant now
            self.stats.rewinds += 1
            self.processor.drop_all()
            assigned = set(self.stats.assigned)
            await self._restore(assigned)
            for tp in assigned:
                committed = await self._consumer.committed(tp)
                if committed is None:
                    await self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, committed)
            self._needs_rewind = False
            self.stats.ready = True

    async def _restore(self, partitions: set[TopicPartition]) -> None:
        assert self._reader is not None
        numbers = {tp.partition for tp in partitions if tp.topic == self.topics.prices}
        if not numbers:
            return
        restored = await load_states(
            self._reader, self.topics.state, numbers, timeout_s=self.settings.worker.restore_timeout_s
        )
        loaded = self.processor.restore(restored.records)
        self.stats.restores += 1
        self.stats.sites_restored = loaded
        self.stats.last_restore_seconds = restored.seconds
        log.info(
            "restored %d sites of partitions %s from %d state records in %.3f s",
            loaded,
            sorted(numbers),
            restored.records_read,
            restored.seconds,
            extra={"topic": self.topics.state, "partitions": sorted(numbers)},
        )

    # --- operations: read by the metrics and health server, never on the hot path ----------------------

    @property
    def ready(self) -> bool:
        """State restored for every assigned partition and consuming (not stopping, no rewind pending)."""
        return self.stats.ready and not self._needs_rewind and not self._stop.requested.is_set()

    async def lag(self) -> dict[TopicPartition, int]:
        return await consumer_lag(self._consumer, self.stats.assigned)

    async def broker_reachable(self, timeout_s: float = 3.0) -> bool:
        return await broker_answers(self._producer, timeout_s)

    # --- rebalance callbacks (called by aiokafka's coordinator) ---------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            await self._settle_tail_quietly()  # the revoked partitions' state and offsets, stored first
            self.stats.rebalances += 1
            self.stats.ready = False
            dropped = self.processor.drop_partitions(tp.partition for tp in revoked)
            self.stats.assigned -= set(revoked)
            if revoked:
                partitions = sorted(tp.partition for tp in revoked)
                extra = {"partitions": partitions}
                log.info("revoked %s (%d sites dropped)", partitions, dropped, extra=extra)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            self.stats.assigned |= set(assigned)
            try:
                await self._restore(set(assigned))
            except (KafkaError, BatteryWorkerError) as error:
                log.warning("restore on assignment failed (%s); will rewind before processing", error)
                self._needs_rewind = True
            self.stats.ready = not self._needs_rewind
            partitions = sorted(tp.partition for tp in assigned)
            log.info("assigned %s", partitions, extra={"partitions": partitions})


class _StopRequested(Exception):
    """A stop was asked for while the worker still waited for the broker: leave quietly (exit 0)."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.on_assigned(assigned)
