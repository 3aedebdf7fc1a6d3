"""A broker that is not there yet: the worker waits with back-off and a clear log line, then gets to work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from battery_worker.kafka.embedded import EmbeddedBroker
from battery_worker.kafka.launcher import free_port
from battery_worker.kafka.worker import Worker
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
    with caplog.at_level(logging.WARNING, logger="battery_worker"):
        running = asyncio.create_task(worker.run(max_messages=24, idle_timeout_s=30))
        await asyncio.sleep(3)
        assert not running.done(), "no crash while the broker is away"
        waits = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert 2 <= len(waits) <= 12, "retries back off instead of spinning"
        assert f"127.0.0.1:{port}" in waits[0]
        assert "retrying in" in waits[0]
        with EmbeddedBroker(port=port):
            await feed(settings, ercot_week()[:24], "late")
            assert await asyncio.wait_for(running, 60) == 24
    assert worker.processor.counters.applied == 24
