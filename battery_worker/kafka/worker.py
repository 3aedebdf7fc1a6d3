"""The consume → decide → produce loop. It moves bytes, batches, commits and asks the domain; no rules here.

One batch, in this order (the order is the delivery guarantee; each step is marked ``# Step N`` where it
happens):

1. Fetch: a batch of ``prices`` records, each assigned partition's share first (:mod:`.fair_fetch`), as
   many as step 2 can handle in a fifth of the session (:mod:`.batch_size`), at most
   ``worker.max_batch_records``.
2. Process: hand each record of a partition this worker still owns to :class:`TickProcessor` (validate,
   decide, apply), partition by partition in offset order.
3. Send and await events: the batch's actions, status, history and dead letters, sent together and all
   acknowledged. The batch's offsets join the pending checkpoint (:mod:`.checkpoint`); when one is due
   (``worker.commit_interval_ms`` since the last; 0: every batch), the previous tail is awaited and the
   checkpoint's tail is started.
4. State records (tail): one per site touched since the last checkpoint, carrying the last input offset it
   reflects, taken from memory when the tail starts; all acknowledged.
5. Commit (tail): the checkpoint's input offsets, the latest per partition.

The invariant: a state record is written only after the events it reflects are acknowledged, and input
offsets are committed only after the state records of their checkpoint are acknowledged.

Steps 4 and 5 (the checkpoint's *tail*, :mod:`.tail`) run in a task of their own while the next batches go
through steps 1 to 3: they are off the tick-to-action path. Tails never overlap: the next checkpoint starts
its tail only after this one has finished (so offsets commit in order), and a rebalance, a rewind or a stop
waits for it first. A tail's failure is raised where it is awaited, and the worker rewinds to the stored
state, dropping the pending checkpoint. A pending checkpoint is also taken, due or not, on a stop or the end
of a run and on revocation; and when a poll returns nothing and it is due.

A crash after step 3 re-reads every batch since the last checkpoint and re-emits byte-identical events
(same ``event_id``). A crash after step 4 re-reads them too, but the restored state already reflects those
records, so they are skipped. Either way no tick is applied twice to the battery and none is skipped.

Partitions: on assignment the sites of those partitions are restored from the state topic before any of
their ticks is handled; on revocation the in-flight batch finishes and the pending checkpoint is stored
and committed first.

Exactly-once (``worker.processing_guarantee``): steps 3 to 5 become one Kafka transaction per partition of
the batch (:mod:`.transactions`), awaited before the next fetch: events, state records and the input offset
commit together or not at all, so nothing is ever re-emitted. On assignment the partition's transactional
producer starts before its state is restored (that start fences the previous owner); a rewind also seeks
back to the committed offsets (:mod:`.positions`: how a seek is made to stick with aiokafka).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from battery_worker.errors import BatteryWorkerError
from battery_worker.kafka.backoff import Backoff
from battery_worker.kafka.batch_size import BatchSize
from battery_worker.kafka.batching import drained, send_and_wait
from battery_worker.kafka.checkpoint import Checkpoint
from battery_worker.kafka.clients import make_group_consumer, make_producer, make_reader, membership_lost
from battery_worker.kafka.connecting import Connector, StopRequested, pause
from battery_worker.kafka.diagnose import typed
from battery_worker.kafka.exceptions import TopicMisconfigured
from battery_worker.kafka.fair_fetch import FairFetch
from battery_worker.kafka.freezes import FreezeWatch
from battery_worker.kafka.latency import BatchLatency
from battery_worker.kafka.positions import Positions, commit_metadata, marked
from battery_worker.kafka.probes import broker_answers, consumer_lag
from battery_worker.kafka.record_log import log_handled, log_handled_debug
from battery_worker.kafka.records import ConsumedRecord, input_record
from battery_worker.kafka.shutdown import BoundedStop, close_clients
from battery_worker.kafka.store import restore_sites
from battery_worker.kafka.tail import BatchTail, store_and_commit
from battery_worker.kafka.topics import check_partition_counts, current_partition_counts
from battery_worker.kafka.transactions import PartitionTransactions, PartitionWork, require_transactions
from battery_worker.kafka.worker_stats import Assignment, WorkerStats, counting_failures, summary
from battery_worker.pipeline.processing import Handled, InputRecord, OutputRecord, TickProcessor
from battery_worker.settings import Settings

log = logging.getLogger(__name__)

UNASSIGNED_NOTICE_S = 10.0
"""How long a worker holds no partition before it says so (then once a minute)."""

__all__ = ["Worker"]


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
        self.site_directory = settings.site_directory()
        self.fingerprint = settings.decisions_fingerprint()
        """The decision settings' digest: logged at start, and in each offset commit's metadata."""
        self.processor = TickProcessor(
            self.site_directory,
            self.topics,
            prices_partitions=settings.topics.partitions,
            max_message_bytes=settings.worker.max_message_bytes,
            max_tick_ahead_s=settings.worker.max_tick_ahead_s,
        )
        self.stats = WorkerStats()
        self.assignment = Assignment()
        self.latency = BatchLatency()
        self._on_handled = on_handled
        self._stop = BoundedStop(settings.worker.shutdown_timeout_s)
        self._lock = asyncio.Lock()
        self._needs_rewind = False
        self._misconfigured: TopicMisconfigured | None = None
        """Set by a rebalance that found the topics unfit to run on; the loop raises it."""
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._backoff = Backoff(settings.worker.backoff_initial_s, settings.worker.backoff_max_s)
        self._connector = Connector(settings, self._stop, self._backoff)
        self._tail = BatchTail()
        self._checkpoint = Checkpoint(settings.worker.commit_interval_ms)
        self._positions = Positions()
        self._warned_decided: set[tuple[TopicPartition, str]] = set()
        self._state_written: set[int] = set()
        """State partitions known to hold records (restored, or written since): their commits say so
        (:data:`.positions.STATE_STORED`). Not the homes of the sites held: after ``prices`` grew, a site's
        new home was marked before its state was written there (a review of the diff)."""
        self._read_up_to: dict[TopicPartition, int] = {}
        """Per partition, the offset after the furthest record handled: what a rewind makes read again."""
        self._again_until: dict[TopicPartition, int] = {}
        """Since a rewind, per partition: records before this offset are read a second time."""
        self._fetch: FairFetch | None = None
        self._transactions: PartitionTransactions | None = None
        session_s = settings.worker.session_timeout_ms / 1000
        self._freezes = FreezeWatch(session_s)
        heartbeat_s = settings.worker.heartbeat_interval_ms / 1000
        self._batch_size = BatchSize(session_s, heartbeat_s, settings.worker.max_batch_records)

    def stop(self) -> None:
        """Ask for a graceful stop: the in-flight batch finishes, is flushed and committed.

        Bounded by ``worker.shutdown_timeout_s`` even with a frozen broker (see :mod:`.shutdown`).
        """
        self._stop.request()

    @property
    def stopping(self) -> bool:
        return self._stop.requested.is_set()

    @property
    def connect_failure(self) -> str | None:
        """Why the last connection attempt failed (for ``/health``); None once connected."""
        return self._connector.failure

    async def run(self, *, max_messages: int | None = None, idle_timeout_s: float | None = None) -> int:
        """Run until stopped, ``max_messages`` records handled, or ``idle_timeout_s`` without records.

        Returns the number of input records handled.
        """
        log.info("battery-worker starting with settings %s", self.settings.masked())
        log.info(
            "decision settings fingerprint %s: every worker of group %r should show the same one (a site's "
            "decisions follow the worker that owns its partition)",
            self.fingerprint,
            self.settings.worker.group_id,
        )
        for line in self.site_directory.setup_lines():
            log.info("%s", line)
        for line in self.site_directory.warning_lines():
            log.warning("%s", line)
        self._stop.guard(asyncio.current_task())
        self._freezes.start()
        try:
            try:
                return await self._loop(max_messages, idle_timeout_s)
            except StopRequested:
                log.info("stop requested before the broker answered: nothing was in flight")
                return self.processor.counters.total
            except asyncio.CancelledError:
                if not self._stop.absorb():
                    raise
                return self.processor.counters.total
        finally:
            self._stop.closing()
            await self._freezes.stop()
            await self._tail.settle_on_exit(self._stop.remaining_s() / 2)
            if self._transactions is not None:
                await self._transactions.close_all()
            await close_clients((self._consumer, self._producer, self._reader), self._stop)
            stats = summary(self.processor.counters, self.stats, self.processor.site_count)
            log.info("battery-worker stopped: %s", stats)

    async def _loop(self, max_messages: int | None, idle_timeout_s: float | None) -> int:
        self._connector.give_up_after_s = idle_timeout_s  # a bounded job: the broker's absence is idle too
        await self._connect()
        self._connector.give_up_after_s = None  # once running, an outage is waited out as ever
        unassigned = asyncio.create_task(self._say_while_unassigned())
        try:
            return await self._batches(max_messages, idle_timeout_s)
        finally:
            unassigned.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await unassigned

    async def _say_while_unassigned(self) -> None:
        """A worker no partition is assigned to says so after :data:`UNASSIGNED_NOTICE_S`, then each minute:
        workers started after a stop-all on the embedded broker waited over 90 s for an assignment without
        a line after their start (an upgrade review), and a stop then spoke of a batch in flight."""
        waited = 0.0
        said_at = 0.0
        while True:
            await asyncio.sleep(UNASSIGNED_NOTICE_S)
            if self.assignment.partitions:
                waited = said_at = 0.0
                continue
            waited += UNASSIGNED_NOTICE_S
            if said_at == 0.0 or waited - said_at >= 60.0:
                said_at = waited
                log.info(  # not a warning: a first join on the embedded broker can take longer
                    "no %s partition assigned for %.0f s (group %s): more workers than partitions, or a "
                    "group join the coordinator has not completed",
                    self.topics.prices,
                    waited,
                    self.settings.worker.group_id,
                )

    async def _batches(self, max_messages: int | None, idle_timeout_s: float | None) -> int:
        handled = 0
        idle_since = time.monotonic()
        while not self._stop.requested.is_set():
            if max_messages is not None and handled >= max_messages:
                break
            try:
                if self._misconfigured is not None:
                    raise self._misconfigured
                if self._tail.ended:
                    await self._tail.settle()  # a failed tail while idle: rewind now, not at the next batch
                if self._needs_rewind:
                    await self._rewind()
                count = await self._poll_once(None if max_messages is None else max_messages - handled)
                if not count:  # idle: no batch would take a due checkpoint
                    await self._checkpoint_between_batches(due_only=True)
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
            elif (
                idle_timeout_s is not None
                and self.assignment.partitions
                and now - max(idle_since, self.assignment.assigned_at) > idle_timeout_s  # from an assignment
            ):
                break
        try:  # a stop or the end of a run: what is stored and committed now is not re-emitted on restart
            await self._checkpoint_between_batches(due_only=False)
        except (KafkaError, BatteryWorkerError) as error:  # the next owner re-reads those records
            log.warning("storing the last checkpoint failed (%s); its records will be re-read", error)
        return handled

    # --- connecting and closing ------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Create the topics if allowed and start the clients, waiting for the broker (:mod:`.connecting`)."""
        settings = self.settings
        partitions = await self._connector.ensure_topics()
        self.processor.prices_partitions = partitions[self.topics.prices]
        if settings.worker.exactly_once:
            await require_transactions(settings.kafka)
            worker = settings.worker
            self._transactions = PartitionTransactions(
                settings.kafka, worker.group_id, self.topics.prices, worker.transaction_timeout_ms, self.stats
            )
        self._producer = make_producer(settings.kafka)
        self._reader = make_reader(settings.kafka)
        self._consumer = make_group_consumer(settings.kafka, settings.worker)
        self._fetch = FairFetch(self._consumer, self._positions, settings.worker.poll_timeout_ms)
        for client in (self._producer, self._reader, self._consumer):
            await self._connector.start(client)
        self._consumer.subscribe([self.topics.prices], listener=_Rebalance(self))
        self._connector.connected()

    # --- the batch protocol: steps 1 to 3 here, the tail (steps 4 and 5) in the background ----------------

    async def _poll_once(self, limit: int | None) -> int:
        assert self._consumer is not None
        max_records = self._batch_size.limit()
        if limit is not None:
            max_records = max(1, min(max_records, limit))
        # Step 1. fetch: each partition's share first (kafka/fair_fetch.py)
        assert self._fetch is not None
        with counting_failures(self.stats, "fetch"):
            fetched = await self._fetch.fetch(max_records)
        if not fetched:
            return 0
        started = time.monotonic()
        async with self._lock:  # a rebalance's restore may hold it: not the batch's own time
            if self._misconfigured is not None:  # a rebalance found the topics unfit meanwhile
                raise self._misconfigured
            if self._needs_rewind:  # a rebalance hit a failure meanwhile: the rewind seeks back, drop this
                return 0
            self.stats.batch_started_at = time.monotonic()
            try:
                count = await self._process(fetched.current(self._positions))
            finally:
                self.stats.batch_started_at = None
        self.latency.observe_batch(fetched.batch, started)
        return count

    async def _process(self, batch: Mapping[TopicPartition, Sequence[ConsumedRecord]]) -> int:
        """Steps 2 and 3 of a fetched batch, then its tail (steps 4 and 5) started in the background."""
        if self._transactions is not None:
            return await self._process_in_transactions(batch)
        # Step 2. process: each record of a partition still assigned, in offset order
        outputs: list[OutputRecord] = []
        commits: dict[TopicPartition, int] = {}
        now_ms = int(time.time() * 1000)
        count = 0
        for tp, records in self._owned(batch):
            self._note_read(tp, records)
            count += self._handle_all(records, now_ms, outputs)
            commits[tp] = records[-1].offset + 1
        # Step 3. send and await events (actions, status, history, dead letters)
        with counting_failures(self.stats, "produce"):
            await self._send_all(outputs)
        self._checkpoint.add(commits)
        if self._checkpoint.due():
            await self._take_checkpoint()
        self.stats.batches += 1
        self._backoff.reset()
        return count

    async def _take_checkpoint(self) -> None:
        """Start the tail (steps 4 and 5) of everything handled since the last checkpoint.

        Tails never overlap: the previous one ends first (its failure is raised here), so offsets commit in
        order. This tail starts in the background with the state records as they are now: a later batch
        cannot change what it writes. Called only with every handled record's events acknowledged.
        """
        assert self._producer is not None
        assert self._consumer is not None
        froze = self._freezes.froze_for()
        if froze is not None:  # the group has dropped it, and aiokafka may not know yet (kafka/freezes.py)
            log.warning(
                "this worker stood still for %.1f s, longer than worker.session_timeout_ms: the group may "
                "have dropped it and given its partitions to another member, whose state would be newer; "
                "its checkpoint is not stored, and it rewinds to the stored state",
                froze,
            )
            self._checkpoint.drop()
            self._needs_rewind = True
            return
        states = self.processor.take_state_records()
        self._note_state_written(states)
        commits = marked(self._checkpoint.take(), self._state_written, self.fingerprint)
        tail = store_and_commit(self._producer, self._consumer, self.stats, states, commits)
        await self._tail.start_after_previous(tail)
        self.stats.checkpoints += 1

    async def _checkpoint_between_batches(self, *, due_only: bool) -> None:
        """Idle (``due_only``) or stopping: take the pending checkpoint, unless a rewind will redo it."""
        async with self._lock:
            wanted = self._checkpoint.due() if due_only else self._checkpoint.pending
            if wanted and not self._needs_rewind:
                await self._take_checkpoint()

    async def _process_in_transactions(self, batch: Mapping[TopicPartition, Sequence[ConsumedRecord]]) -> int:
        """Exactly-once: step 2 partition by partition, then steps 3 to 5 as one transaction per partition."""
        assert self._transactions is not None
        handled: list[tuple[TopicPartition, list[OutputRecord], int]] = []
        now_ms = int(time.time() * 1000)
        count = 0
        for tp, records in self._owned(batch):
            self._note_read(tp, records)
            outputs: list[OutputRecord] = []
            count += self._handle_all(records, now_ms, outputs)
            outputs.extend(self.processor.take_state_records())  # this partition's sites only
            handled.append((tp, outputs, records[-1].offset + 1))
        if not handled:
            return 0
        for _, outputs, _ in handled:
            self._note_state_written(outputs)
        work = [
            PartitionWork(
                tp, outputs, offset, commit_metadata(tp.partition, self._state_written, self.fingerprint)
            )
            for tp, outputs, offset in handled
        ]
        with counting_failures(self.stats, "commit"):
            await self._transactions.commit_all(work)
        self.stats.batches += 1
        self._backoff.reset()
        return count

    def _note_state_written(self, outputs: Iterable[OutputRecord]) -> None:
        """The state partitions these outputs write to: their commits say the state is stored."""
        state = self.topics.state
        self._state_written.update(
            o.partition for o in outputs if o.topic == state and o.partition is not None
        )

    def _note_read(self, tp: TopicPartition, records: Sequence[ConsumedRecord]) -> None:
        """Counts the records read again since a rewind (once per partition's batch, not per record)."""
        end = records[-1].offset + 1
        until = self._again_until.get(tp)
        if until is not None:
            if records[0].offset < until:
                self.stats.read_again += sum(1 for record in records if record.offset < until)
            if end >= until:
                del self._again_until[tp]
        if end > self._read_up_to.get(tp, 0):
            self._read_up_to[tp] = end

    def _owned(
        self, batch: Mapping[TopicPartition, Sequence[ConsumedRecord]]
    ) -> Iterable[tuple[TopicPartition, Sequence[ConsumedRecord]]]:
        owned = self.assignment.partitions
        return ((tp, records) for tp, records in batch.items() if records and tp in owned)

    def _handle_all(self, records: Sequence[ConsumedRecord], now_ms: int, outputs: list[OutputRecord]) -> int:
        """Step 2 for one partition's records, in offset order; their outputs are appended to ``outputs``."""
        debug = log_handled_debug()
        started = time.perf_counter()
        applied = 0
        for message in records:
            record = input_record(message)
            handled = self.processor.handle(record, now_ms)
            outputs.extend(handled.outputs)
            if handled.kind != "applied" or debug:
                log_handled(record, handled)
            applied += handled.kind == "applied"
            if self._on_handled is not None:
                self._on_handled(record, handled)
        self._batch_size.handled(applied, time.perf_counter() - started)
        return len(records)

    async def _send_all(self, outputs: list[OutputRecord]) -> None:
        """Send everything, then wait for every acknowledgement: no per-message wait on the hot path.

        One closed batch per partition (``batching.send_and_wait``), not one ``send`` per record. The list
        is emptied as its records are encoded: a failed send rewinds and recomputes, it never re-sends.
        """
        assert self._producer is not None
        await send_and_wait(self._producer, drained(outputs))

    # --- failures: rewind to the stored state -----------------------------------------------------------

    async def _recover(self, error: Exception) -> None:
        """A fetch, send, commit or restore failed (counted where it failed): back off, then rebuild
        memory from what is stored on the broker."""
        self._needs_rewind = True
        delay = self._backoff.next_delay()
        log.warning("%s: %s; rewinding to the stored state in %.1f s", type(error).__name__, error, delay)
        await pause(self._stop, delay)

    async def _rewind(self) -> None:
        """Forget in-memory state and re-read it; seek inputs back to the committed offsets."""
        assert self._consumer is not None
        async with self._lock:
            with contextlib.suppress(KafkaError, BatteryWorkerError):
                await self._tail.settle()  # its failure is why we rewind, or irrelevant now
            self.stats.rewinds += 1
            self._again_until = dict(self._read_up_to)
            self.processor.drop_all()
            self._checkpoint.drop()
            self._give_up_fenced()
            assigned = set(self.assignment.partitions)
            await self._follow_partition_counts(assigned)
            await self._open_transactions(assigned)
            stateless = await self._restore(assigned)
            await self._seek(assigned, stateless)
            self._needs_rewind = False
            self._freezes.clear()
            self.assignment.restored = True

    async def _seek(
        self, partitions: set[TopicPartition], stateless: set[int], *, where_needed: bool = False
    ) -> None:
        """To the committed offsets; a partition whose state partition was never written but whose
        offsets were committed lost its state: it is decided again from its first tick. Went on from the
        offsets, its sites restarted with new batteries, and the events re-sent for ticks since the last
        checkpoint differed from the first ones under the same ``event_id`` (a review run deleted the
        state topic). From the first tick, each event is sent again as it was first sent (where ``prices``
        still holds every tick since), and the state is rebuilt."""
        assert self._consumer is not None
        with counting_failures(self.stats, "restore"):
            sought = await self._positions.seek_to_committed(
                self._consumer, partitions, stateless, where_needed=where_needed, fingerprint=self.fingerprint
            )
        for tp, (committed, theirs) in sorted(sought.decided_otherwise.items()):
            # Once per partition and committer's settings (a rebalance gives partitions back uncommitted: a
            # runbook review saw it at every one); not under exactly-once, where a killed worker's events
            # after its commit were aborted, never read_committed (a review of the diff).
            if self.settings.worker.exactly_once or (tp, theirs) in self._warned_decided:
                continue
            self._warned_decided.add((tp, theirs))
            log.warning(
                "%s[%d]: offset %d was committed by a worker deciding with settings %s, this one decides "
                "with %s: if that worker did not stop cleanly (kill -9, OOM, a lost session), the ticks it "
                "handled after its commit are decided again here and their events re-sent under the same "
                'event_id with this worker\'s decisions (docs/operations.md, "Changing settings")',
                tp.topic,
                tp.partition,
                committed,
                theirs,
                self.fingerprint,
                extra={"topic": tp.topic, "partition": tp.partition},
            )
        for tp, (position, committed) in sorted(sought.misplaced.items()):
            log.warning(
                "%s[%d]: the consumer positioned itself at offset %d, but group %s committed %d (the "
                "coordinator refused its offset fetch for a moment, which aiokafka takes for no commit): "
                "sought to %d",
                tp.topic,
                tp.partition,
                position,
                self.settings.worker.group_id,
                committed,
                committed,
                extra={"topic": tp.topic, "partition": tp.partition},
            )
        for tp, (committed, beginning) in sorted(sought.rebuilt.items()):
            whole = beginning == 0
            log.warning(
                "%s[%d]: group %s committed offset %d, but %s[%d] holds no state, never written (the state "
                "topic deleted, or topics.state renamed?): its sites' state is lost; %s "
                '(docs/operations.md, "State topic lost")',
                tp.topic,
                tp.partition,
                self.settings.worker.group_id,
                committed,
                self.topics.state,
                tp.partition,
                "the partition is decided again from its first tick, each event sent again as it was"
                if whole
                else f"it begins at offset {beginning}, its first ticks deleted, so it cannot be decided "
                "again as it was: its sites go on from the committed offset with new batteries",
                extra={"topic": tp.topic, "partition": tp.partition},
            )

    async def _open_transactions(self, partitions: set[TopicPartition]) -> None:
        """Exactly-once: a producer for each partition, before its state is read (that start fences)."""
        if self._transactions is not None:
            with counting_failures(self.stats, "restore"):
                await self._transactions.open(partitions)

    def _give_up_fenced(self) -> None:
        """Exactly-once: partitions whose producer was fenced belong to another worker now. Stop handling
        them (reopening would fence the new owner in turn) and ask the group for a fresh assignment."""
        if self._transactions is None:
            return
        fenced = self._transactions.take_fenced()
        if not fenced:
            return
        self.assignment.partitions -= fenced
        self.processor.drop_partitions(tp.partition for tp in fenced)
        log.warning("partitions %s fenced: rejoining the group", sorted(tp.partition for tp in fenced))
        # aiokafka has no public "rejoin"; a partition left without a producer is idle until the next
        # assignment, which the expired membership (the usual cause of a fence) brings anyway.
        request_rejoin = getattr(getattr(self._consumer, "_coordinator", None), "request_rejoin", None)
        if request_rejoin is not None:
            request_rejoin()

    async def _restore(self, partitions: set[TopicPartition]) -> set[int]:
        """Load the sites of ``partitions`` from the state topic (:func:`.store.restore_sites`); returns the
        state partitions never written to."""
        assert self._reader is not None
        numbers = {tp.partition for tp in partitions if tp.topic == self.topics.prices}
        timeout_s = self.settings.worker.restore_timeout_s
        never_written = await restore_sites(
            self._reader, self.processor, self.topics.state, numbers, self.stats, timeout_s=timeout_s
        )
        self._state_written = (self._state_written - never_written) | (numbers - never_written)
        return never_written

    # --- operations: read by the metrics and health server, never on the hot path ----------------------

    @property
    def ready(self) -> bool:
        """State restored for every assigned partition and consuming (not stopping, no rewind pending)."""
        return (
            self.assignment.restored
            and not self._needs_rewind
            and self._misconfigured is None
            and not self._stop.requested.is_set()
        )

    async def lag(self) -> dict[TopicPartition, int]:
        return await consumer_lag(self._consumer, self.assignment.partitions)

    async def broker_reachable(self, timeout_s: float = 3.0) -> bool:
        return await broker_answers(self._producer, timeout_s)

    # --- rebalance callbacks (called by aiokafka's coordinator) ---------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            # The revoked partitions' state and offsets first, so the next owner carries on from them;
            # unless the group dropped this worker already: its partitions have another owner, whose
            # state is newer than this checkpoint, and a commit would move the group's offsets back.
            stored = await self._tail.settle_quietly()
            lost = self._consumer is not None and membership_lost(self._consumer)
            if lost and self._checkpoint.pending:
                log.warning(
                    "the group had dropped this worker before it could store its last checkpoint (paused "
                    "past worker.session_timeout_ms or max_poll_interval_ms?): not stored; its partitions' "
                    "next owner, this worker again or another, goes on from the stored state"
                )
                self._checkpoint.drop()
            elif stored and not self._needs_rewind and self._checkpoint.pending:
                await self._take_checkpoint()  # the previous tail is settled: starting it cannot fail
                stored = await self._tail.settle_quietly()
            if not stored:
                self._needs_rewind = True
            if revoked:  # aiokafka calls this with nothing revoked on the first join too: no rebalance
                self.stats.rebalances += 1
            self.assignment.restored = False
            dropped = self.processor.drop_partitions(tp.partition for tp in revoked)
            self.assignment.partitions -= set(revoked)
            if self._transactions is not None:
                await self._transactions.close(revoked)
            if revoked:
                partitions = sorted(tp.partition for tp in revoked)
                extra = {"partitions": partitions}
                log.info("revoked %s (%d sites dropped)", partitions, dropped, extra=extra)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            self.assignment.partitions |= set(assigned)
            # Named in the warning: a refused transactional id was said as "restore ... failed", and
            # nothing had failed to restore (a security review).
            step = "reading the partition counts"
            try:
                await self._follow_partition_counts(self.assignment.partitions)
                step = "opening their transactional producers"
                await self._open_transactions(set(assigned))
                step = "restoring their state"
                stateless = await self._restore(set(assigned))
                step = "seeking to the committed offsets"
                if self._transactions is not None:  # no older offset, so no dead letter is written twice
                    await self._seek(set(assigned), stateless)
                else:  # the consumer positions them at their committed offsets itself, or should
                    await self._seek(set(assigned), stateless, where_needed=True)
            except TopicMisconfigured as error:  # the loop raises it: not a failure a rewind cures
                self._misconfigured = error
                log.error("%s", error)
            except (KafkaError, BatteryWorkerError, OSError) as error:
                log.warning(
                    "preparing the assigned partitions failed while %s (%s); will rewind before processing",
                    step,
                    error,
                )
                self._needs_rewind = True
            except Exception:  # aiokafka logs and swallows a listener's error: unrestored, rewind
                log.exception(
                    "preparing the assigned partitions failed while %s; will rewind before processing", step
                )
                self._needs_rewind = True
            self.assignment.restored = not self._needs_rewind and self._misconfigured is None
            self.assignment.assigned_at = time.monotonic()  # after the restore: it is not idle time either
            if self.assignment.restored:  # its sites are the stored ones now, whatever it froze before
                self._freezes.clear()
            if self._misconfigured is None:  # else the ERROR above is the last word: the worker stops
                partitions = sorted(tp.partition for tp in assigned)
                log.info("assigned %s", partitions, extra={"partitions": partitions})

    async def _follow_partition_counts(self, assigned: set[TopicPartition]) -> None:
        """``prices`` grown while the worker runs (its consumers rebalance on it): sites' homes follow the
        new count. Kept at the old one, every tick of a moved site came on "another partition than its
        home" and was dead-lettered, its offset committed: lost. A state topic that did not grow as well
        has no partition for the new homes' state (its restore waited for good): the worker stops with
        :class:`TopicMisconfigured` rather than apply ticks without their state. The counts are asked of a
        broker at each assignment and rewind; one behind the assignment itself is a retriable error."""
        assert self._producer is not None
        names = [self.topics.prices, self.topics.state]
        timeout_s = self.settings.worker.restore_timeout_s
        counts = await current_partition_counts(self._producer.client, names, timeout_s)
        partitions = check_partition_counts(self.settings.topics, counts)
        beyond = sorted(tp.partition for tp in assigned if tp.partition >= partitions)
        if beyond:
            raise KafkaError(
                f"metadata says {self.topics.prices} has {partitions} partitions, but {beyond} are assigned"
            )
        if partitions != self.processor.prices_partitions:
            log.warning(
                "%s has %d partitions now, not %d (its state topic too): sites' homes follow the new "
                "count; a site whose home moved to a partition another worker owns starts there from its "
                "initial state (docs/delivery.md, 'Adding partitions')",
                self.topics.prices,
                partitions,
                self.processor.prices_partitions,
            )
            self.processor.prices_partitions = partitions


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.on_assigned(assigned)
