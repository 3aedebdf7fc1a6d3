"""Stopping the worker mid-stream, gracefully or with kill -9, changes nothing in the results."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from battery_worker.kafka.worker import Worker
from tests.faultkit import (
    all_applied,
    interleaved,
    paced_feed,
    raw_values,
    stop,
    verify_against_uninterrupted,
)
from tests.waiting import wait_until_async
from tests.workerkit import ercot_week, feed, make_settings, start_worker_process

pytestmark = pytest.mark.broker
SITES = ("north", "south", "west")


async def test_graceful_stop_and_restart_continue_exactly(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), worker={"max_batch_records": 50}
    )
    streams = {site: ercot_week() for site in SITES}
    for site, ticks in streams.items():
        await feed(settings, ticks, site)
    total = sum(len(ticks) for ticks in streams.values())
    first = Worker(settings)
    assert await first.run(max_messages=total // 2, idle_timeout_s=20) == total // 2
    second = Worker(settings)
    assert await second.run(max_messages=total - total // 2, idle_timeout_s=20) == total - total // 2
    assert second.stats.sites_restored >= 1
    assert second.processor.counters.already_applied == 0
    verdict = await verify_against_uninterrupted(settings, streams)
    assert verdict.reemitted == 0, "a graceful stop re-emits nothing"


async def test_kill_9_mid_stream_then_restart_gives_the_uninterrupted_results(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    tmp_path: Path,
) -> None:
    settings = make_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), worker={"max_batch_records": 7}
    )
    streams = {site: ercot_week() for site in SITES}
    log = tmp_path / "worker.log"

    async def some_actions() -> bool:
        return len(await raw_values(settings, settings.topics.actions)) >= 60

    victim = start_worker_process(settings, log)
    feeder = asyncio.create_task(paced_feed(settings, interleaved(streams), rate_per_s=50))
    survivor = None
    try:
        await wait_until_async(some_actions, 60, "the first worker to emit actions")
        assert not feeder.done(), "the kill must land mid-stream"
        assert stop(victim, signal.SIGKILL) == -signal.SIGKILL
        survivor = start_worker_process(settings, log)
        await feeder
        await wait_until_async(all_applied(settings, streams), 90, "the restarted worker to finish")
        assert stop(survivor, signal.SIGTERM) == 0, log.read_text()[-2000:]
    finally:
        feeder.cancel()
        for process in (victim, survivor):
            if process is not None and process.poll() is None:
                process.kill()
    await verify_against_uninterrupted(settings, streams)
    assert "restored" in log.read_text()
