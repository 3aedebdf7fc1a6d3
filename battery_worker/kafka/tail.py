"""At-least-once: a batch's tail (steps 4 and 5 of :mod:`.worker`) runs in the background, one at a time.

Why apart from the loop: the tail is off the tick-to-action path, and what makes that safe is here in one
place: tails never overlap (a new one starts only after the previous one has ended, so offsets commit in
order), and a tail's failure is raised where it is awaited, so the loop rewinds to the stored state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from battery_worker.errors import BatteryWorkerError
from battery_worker.kafka.batching import send_and_wait
from battery_worker.kafka.clients import membership_lost
from battery_worker.kafka.worker_stats import WorkerStats, counting_failures
from battery_worker.pipeline.processing import OutputRecord

log = logging.getLogger(__name__)

_FAILED = "storing the last batch's state failed (%s); its records will be re-read"

__all__ = ["BatchTail", "store_and_commit"]


async def store_and_commit(
    producer: AIOKafkaProducer,
    consumer: AIOKafkaConsumer,
    stats: WorkerStats,
    states: list[OutputRecord],
    commits: Mapping[TopicPartition, tuple[int, str]],
) -> None:
    """A batch's tail, run while the next batch goes through steps 1 to 3.

    Neither step is taken once the group has dropped this worker (:func:`membership_lost`): the new owner
    of its partitions has newer state and offsets. A step already under way when the group drops it still
    lands; exactly-once fences that too (docs/delivery.md).
    """
    # Step 4. state records: one per site the batch touched, all acknowledged
    if _dropped(consumer, stats, "store its state"):
        return
    with counting_failures(stats, "produce"):
        await send_and_wait(producer, states)
    # Step 5. commit the batch's input offsets, now that its state is stored
    if _dropped(consumer, stats, "commit"):
        return
    with counting_failures(stats, "commit"):
        try:
            await consumer.commit(commits)
        except CommitFailedError as error:
            stats.commit_failures += 1
            log.warning(
                "commit failed after a rebalance (the state is stored; the partitions' new owner goes on "
                "from the last committed offsets): %s",
                error,
            )


def _dropped(consumer: AIOKafkaConsumer, stats: WorkerStats, step: str) -> bool:
    if not membership_lost(consumer):
        return False
    stats.commit_failures += 1
    log.warning("the group dropped this worker before its checkpoint could %s: left to the new owner", step)
    return True


class BatchTail:
    """The one tail in flight, if any."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    @property
    def ended(self) -> bool:
        """A tail has ended and not been settled: settle it now (a failure while idle rewinds at once)."""
        return self._task is not None and self._task.done()

    async def start_after_previous(self, tail: Coroutine[Any, Any, None]) -> None:
        """Wait for the previous tail (its failure is raised here, and ``tail`` is then never started),
        then start ``tail`` in the background."""
        try:
            await self.settle()
        except BaseException:
            tail.close()
            raise
        self._task = asyncio.create_task(tail)

    async def settle(self) -> None:
        """Wait for the tail in flight; its error, if any, is raised here (and leads to a rewind)."""
        task, self._task = self._task, None
        if task is not None:
            await task

    async def settle_quietly(self) -> bool:
        """Settle, logging a failure instead of raising it; False when it failed (rewind before going on)."""
        try:
            await self.settle()
        except (KafkaError, BatteryWorkerError) as error:
            log.warning(_FAILED, error)
            return False
        return True

    async def settle_on_exit(self, budget_s: float) -> None:
        """On the way out, within ``budget_s``: a tail still waiting on a frozen broker is cancelled."""
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), max(0.0, budget_s))
        except TimeoutError:
            task.cancel()
            # Ended before the clients close under it (wait raises neither its cancellation nor its error).
            await asyncio.wait({task}, timeout=1.0)
            log.warning("the last batch's state was not stored in time; its records will be re-read")
        except Exception as error:  # on the way out: report it, never mask the exit
            log.warning(_FAILED, error)
