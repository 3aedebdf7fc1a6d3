"""At-least-once checkpoints (``kafka/checkpoint.py``): which offsets one commits, and when it is due."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from battery_worker.kafka.checkpoint import Checkpoint
from battery_worker.kafka.tail import BatchTail

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
