"""A stop request with a time budget, so a worker always exits inside an orchestrator's grace period.

Two phases (as the style guide asks): first the in-flight batch may finish and commit; if it is still
running after ``BATCH_SHARE_OF_SHUTDOWN`` of ``shutdown_timeout_s`` (a broker that does not answer), the
task running the loop is cancelled and the batch abandoned uncommitted: its records are re-read by the
next owner, whose events are byte-identical, so nothing is lost. The clients then close in what is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from battery_worker.kafka.clients import leave_group_at_stop

log = logging.getLogger(__name__)

BATCH_SHARE_OF_SHUTDOWN = 0.6
"""Share of ``shutdown_timeout_s`` the in-flight batch gets after a stop request; the rest is for closing."""

MIN_CLOSE_S = 1.0
"""Each client gets at least this long to close, even when the budget is spent."""


class BoundedStop:
    """``requested`` is the event the loop watches; :meth:`request` also arms the abandon timer."""

    def __init__(self, budget_s: float) -> None:
        self.requested = asyncio.Event()
        self.budget_s = budget_s
        self.abandoned = False
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._guarded: asyncio.Task[int] | None = None
        self._closing = False

    def guard(self, task: asyncio.Task[int] | None) -> None:
        """The task to cancel when the in-flight batch overstays (the one running the loop)."""
        self._guarded = task

    def request(self) -> None:
        if self.requested.is_set():
            return
        self.requested.set()
        self._deadline = time.monotonic() + self.budget_s
        task = self._guarded
        if task is not None and not task.done():
            self._timer = task.get_loop().call_later(self.budget_s * BATCH_SHARE_OF_SHUTDOWN, self._abandon)

    def absorb(self) -> bool:
        """In ``except CancelledError``: True (and the cancellation undone) when it was this abandonment."""
        if not self.abandoned or self._guarded is None:
            return False
        self._guarded.uncancel()
        return True

    def closing(self) -> None:
        """The loop is over: from here on only the closing phase runs, never cancelled."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()

    def remaining_s(self) -> float:
        if self._deadline is None:
            return self.budget_s
        return self._deadline - time.monotonic()

    def _abandon(self) -> None:
        task = self._guarded
        if task is None or task.done() or self._closing:
            return
        self.abandoned = True
        log.warning(
            "the step in flight (a batch, or the consumer's fetch while the group rebalances) did not finish "
            "within %.1f s of the stop request; abandoning it uncommitted (its records are re-read on "
            "restart, nothing is lost)",
            self.budget_s * BATCH_SHARE_OF_SHUTDOWN,
        )
        task.cancel()


async def close_clients(
    clients: Sequence[AIOKafkaConsumer | AIOKafkaProducer | None], stop: BoundedStop
) -> None:
    """One by one, in the given order (the group consumer first, to leave the group at once), each within
    what is left of the budget. Closing them together made Tansu keep a consumer's stop waiting."""
    for client in clients:
        if client is None:
            continue
        try:
            await _close_one(client, max(MIN_CLOSE_S, stop.remaining_s()))
        except KafkaError as error:
            log.warning("closing %s failed: %s", type(client).__name__, error)


async def _close_one(client: AIOKafkaConsumer | AIOKafkaProducer, timeout_s: float) -> None:
    if isinstance(client, AIOKafkaConsumer):
        leave_group_at_stop(client)
    try:
        await asyncio.wait_for(client.stop(), timeout_s)
    except TimeoutError:
        raise KafkaError(f"not closed within {timeout_s:.1f} s (the broker does not answer)") from None
    except asyncio.CancelledError:
        # aiokafka's fetcher re-raises the cancellation of its own fetch tasks from stop(); only a
        # cancellation of the worker itself must go on.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise KafkaError("stop() was interrupted by the client's own cancelled tasks") from None
