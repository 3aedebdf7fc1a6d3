"""A broker that is not there yet: the worker waits with back-off and a clear log line, then gets to work."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import pytest

from battery_worker.brokers.embedded import EmbeddedBroker
from battery_worker.brokers.launcher import free_port
from battery_worker.kafka.worker import Worker
from tests.waiting import wait_until_async
from tests.workerkit import ercot_week, feed, make_settings

pytestmark = pytest.mark.broker


async def test_worker_waits_for_a_broker_that_starts_late(
    new_topic_name: Callable[[], str], new_group_id: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = make_settings(
        f"127.0.0.1:{port}",
        new_topic_name(),
        new_group_id(),
        worker={"backoff_initial_s": 0.2, "backoff_max_s": 1.0},
    )
    worker = Worker(settings)

    def waits() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "unavailable" in r.getMessage()]

    async def backed_off_four_times() -> bool:
        return len(waits()) >= 4

    with caplog.at_level(logging.WARNING, logger="battery_worker"):
        running = asyncio.create_task(worker.run(max_messages=24, idle_timeout_s=30))
        await wait_until_async(
            backed_off_four_times,
            20,
            "four 'broker unavailable' warnings",
            poll_s=0.05,
            detail=lambda: str([r.getMessage() for r in waits()]),
        )
        assert not running.done(), "no crash while the broker is away"
        first = waits()[:4]
        message = first[0].getMessage()
        assert f"127.0.0.1:{port}" in message
        assert "retrying in" in message
        # Retries back off instead of spinning: the announced delays double, and each is really waited.
        delays = [float(r.getMessage().rsplit("retrying in ", 1)[1].split()[0]) for r in first]
        assert delays == [0.2, 0.4, 0.8, 1.0], delays
        gaps = [later.created - earlier.created for earlier, later in itertools.pairwise(first)]
        assert all(gap >= delay - 0.05 for gap, delay in zip(gaps, delays, strict=False)), (gaps, delays)
        with EmbeddedBroker(port=port):
            await feed(settings, ercot_week()[:24], "late")
            assert await asyncio.wait_for(running, 60) == 24
    assert worker.processor.counters.applied == 24
