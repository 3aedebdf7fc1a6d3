"""The stop budget: an overstaying batch is cancelled and absorbed; a prompt one is left alone."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from battery_worker.kafka.shutdown import BATCH_SHARE_OF_SHUTDOWN, BoundedStop


async def _loop_until_stopped(stop: BoundedStop, ignore_stop: bool) -> int:
    """Stands in for the worker's loop: a batch that never ends (ignore_stop) or one that notices."""
    stop.guard(asyncio.current_task())
    try:
        if ignore_stop:
            await asyncio.sleep(3600)
        else:
            await stop.requested.wait()
        return 1
    except asyncio.CancelledError:
        if not stop.absorb():
            raise
        return 2
    finally:
        stop.closing()


async def test_an_overstaying_batch_is_abandoned_at_its_share_of_the_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = BoundedStop(budget_s=0.5)
    task = asyncio.create_task(_loop_until_stopped(stop, ignore_stop=True))
    await asyncio.sleep(0.05)
    asked = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="battery_worker.kafka.shutdown"):
        stop.request()
        assert await asyncio.wait_for(task, 5) == 2  # returned normally: the cancellation was absorbed
    took = time.monotonic() - asked
    abandoned = [r for r in caplog.records if "abandoning it uncommitted" in r.getMessage()]
    assert [r.name for r in abandoned] == ["battery_worker.kafka.shutdown"]
    assert took >= 0.5 * BATCH_SHARE_OF_SHUTDOWN
    assert stop.abandoned
    assert not task.cancelled()
    assert stop.remaining_s() == pytest.approx(0.5 - took, abs=0.05)


async def test_a_batch_that_ends_in_time_is_not_abandoned() -> None:
    stop = BoundedStop(budget_s=0.2)
    task = asyncio.create_task(_loop_until_stopped(stop, ignore_stop=False))
    await asyncio.sleep(0.05)
    stop.request()
    assert await asyncio.wait_for(task, 5) == 1
    await asyncio.sleep(0.3)  # past the abandon time: the timer was disarmed by closing()
    assert not stop.abandoned


async def test_a_cancellation_from_elsewhere_is_not_swallowed() -> None:
    stop = BoundedStop(budget_s=10)
    task = asyncio.create_task(_loop_until_stopped(stop, ignore_stop=True))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not stop.abandoned
