"""At-least-once checkpoints (``kafka/checkpoint.py``): which offsets one commits, and when it is due."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from battery_worker.kafka.checkpoint import Checkpoint
from battery_worker.kafka.clients import make_group_consumer, make_producer
from battery_worker.kafka.tail import BatchTail, store_and_commit
from battery_worker.kafka.worker import Worker
from battery_worker.kafka.worker_stats import WorkerStats
from battery_worker.ops.metrics import WorkerCollector, build_registry
from battery_worker.pipeline.processing import OutputRecord
from battery_worker.settings import Settings
from tests.workerkit import (
    create_topics,
    ercot_week,
    feed,
    make_settings,
    read_published,
    reference,
    trace_of,
    unique_actions,
)

P0, P1 = TopicPartition("prices", 0), TopicPartition("prices", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_checkpoint_commits_the_latest_offset_of_every_partition_since_the_last() -> None:
    clock = Clock()
    checkpoint = Checkpoint(1000, clock)
    assert not checkpoint.pending
    checkpoint.add({P0: 5})
    checkpoint.add({P0: 9, P1: 3})
    checkpoint.add({P1: 7})
    assert checkpoint.pending
    assert checkpoint.take() == {P0: 9, P1: 7}
    assert not checkpoint.pending
    assert checkpoint.take() == {}


def test_due_once_the_interval_has_passed_since_the_last_checkpoint_and_something_is_pending() -> None:
    clock = Clock()
    checkpoint = Checkpoint(1000, clock)
    clock.now += 5.0
    assert not checkpoint.due(), "nothing pending: nothing to store"
    checkpoint.add({P0: 1})
    assert checkpoint.due(), "pending, and a second since the start"
    checkpoint.take()
    checkpoint.add({P0: 2})
    clock.now += 0.999
    assert not checkpoint.due()
    clock.now += 0.001
    assert checkpoint.due()


def test_zero_makes_every_batch_a_checkpoint() -> None:
    clock = Clock()
    checkpoint = Checkpoint(0, clock)
    for offset in range(1, 4):
        checkpoint.add({P0: offset})
        assert checkpoint.due()
        assert checkpoint.take() == {P0: offset}


def test_a_rewind_drops_what_is_pending() -> None:
    checkpoint = Checkpoint(1000, Clock())
    checkpoint.add({P0: 4})
    checkpoint.drop()
    assert not checkpoint.pending
    assert checkpoint.take() == {}


async def test_a_tail_cut_short_on_exit_has_ended_before_the_clients_close() -> None:
    """``settle_on_exit`` cancelled a tail stuck on a frozen broker and returned at once, so the producer
    was stopped under a tail still running; it now waits (briefly) for the cancellation to land."""
    stuck = asyncio.Event()

    async def frozen_broker() -> None:
        await stuck.wait()

    tail = BatchTail()
    await tail.start_after_previous(frozen_broker())
    await asyncio.sleep(0)
    task = tail._task
    assert task is not None
    await tail.settle_on_exit(0.01)
    assert task.cancelled()


@pytest.mark.broker
async def test_offsets_are_committed_only_once_their_state_is_stored(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """Step 4 before step 5 (docs/delivery.md): a batch whose state records fail commits no offset, or a
    crash after the commit would restart past ticks whose state was never stored. The test-suite review
    moved the commit before the state records, and every test passed: the kill -9 runs rarely land between
    the two."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    state = settings.topics.state
    compacted = {"cleanup.policy": "compact"}
    await create_topics(settings, [(settings.topics.prices, 1, {}), (state, 1, compacted)])
    prices = TopicPartition(settings.topics.prices, 0)
    producer = make_producer(settings.kafka)
    consumer = make_group_consumer(settings.kafka, settings.worker)
    await producer.start()
    await consumer.start()
    try:
        consumer.subscribe([prices.topic])  # a member of the group, as the worker is
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
        stats = WorkerStats()
        stored = OutputRecord(state, b"site", b"{}", partition=0)
        closed = make_producer(settings.kafka)  # its sends fail (Tansu) or never end (Kafka): not stored
        await closed.start()
        await closed.stop()
        with pytest.raises((KafkaError, TimeoutError)):
            await asyncio.wait_for(store_and_commit(closed, consumer, stats, [stored], {prices: (5, "")}), 5)
        assert await consumer.committed(prices) is None, "committed though the state was not stored"
        await store_and_commit(producer, consumer, stats, [stored], {prices: (5, "")})
        assert await consumer.committed(prices) == 5
    finally:
        await consumer.stop()
        await producer.stop()


class _FirstSendFails(Worker):
    """A worker whose first batch's events are not acknowledged (as when the broker times the produce out).

    A seam in the worker's own code, the broker real: what it checks is the order of the worker's steps."""

    failed = False

    async def _send_all(self, outputs: list[OutputRecord]) -> None:
        if not self.failed and outputs:
            self.failed = True
            raise KafkaTimeoutError("injected: the batch's events were not acknowledged")
        await super()._send_all(outputs)


@pytest.mark.broker
async def test_a_batch_whose_events_failed_is_neither_stored_nor_committed(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """Step 3 before steps 4 and 5: a checkpoint taken before the batch's events were acknowledged stored
    its state and committed its offsets, and the rewind after the failed send went on past ticks whose
    actions were never published. The test-suite review moved the checkpoint before the send, and every
    test passed."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"commit_interval_ms": 0})}
    )
    ticks = ercot_week()[:24]
    await feed(settings, ticks, "s")
    worker = _FirstSendFails(settings)
    await worker.run(idle_timeout_s=4)
    assert worker.failed
    expected, _final = reference(settings, ticks)
    assert trace_of(unique_actions(await read_published(settings)), "s") == expected


class _FirstSendHangs(Worker):
    """A worker whose first batch's send waits until released, as when its topic was deleted under it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.hanging = asyncio.Event()
        self.released = asyncio.Event()

    async def _send_all(self, outputs: list[OutputRecord]) -> None:
        if outputs and not self.hanging.is_set():
            self.hanging.set()
            await self.released.wait()
        await super()._send_all(outputs)


def _in_flight_seconds(worker: Worker) -> float:
    for family in build_registry(WorkerCollector(worker)).collect():
        if family.name == "battery_worker_batch_in_flight_seconds":
            return float(family.samples[0].value)
    raise AssertionError("no battery_worker_batch_in_flight_seconds")


@pytest.mark.broker
async def test_a_batch_whose_send_hangs_shows_in_the_metrics_as_it_hangs(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A review run deleted an output topic under the worker: for 30 s, until the sends failed, every
    counter stood still, the lag metric kept its last value and every probe said healthy."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    await feed(settings, ercot_week()[:24], "s")
    worker = _FirstSendHangs(settings)
    running = asyncio.create_task(worker.run(max_messages=24, idle_timeout_s=20))
    try:
        await asyncio.wait_for(worker.hanging.wait(), 30)
        await asyncio.sleep(1.0)
        assert _in_flight_seconds(worker) >= 1.0, "the hang grows on the gauge"
        worker.released.set()
        assert await asyncio.wait_for(running, 60) == 24
    finally:
        worker.released.set()
        running.cancel()
    assert _in_flight_seconds(worker) == 0.0, "none in hand between batches"
