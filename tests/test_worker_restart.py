"""Stopping the worker mid-stream, gracefully or with kill -9, changes nothing in the results."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition

from battery_worker.kafka.clients import make_reader
from battery_worker.kafka.inspect import latest_status
from battery_worker.kafka.reading import read_to_end
from battery_worker.kafka.worker import Worker
from battery_worker.settings import Settings
from tests.workerkit import (
    ercot_week,
    feed,
    make_settings,
    read_published,
    reference,
    start_worker_process,
    trace_of,
)

pytestmark = pytest.mark.broker
SITES = ("north", "south", "west")


async def raw_events(settings: Settings, topic: str) -> list[bytes]:
    reader = make_reader(settings.kafka)
    await reader.start()
    values: list[bytes] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        async for batch in read_to_end(reader, tps, timeout_s=30):
            values.extend(record.value for record in batch if record.value is not None)
    finally:
        await reader.stop()
    return values


async def assert_same_as_uninterrupted(settings: Settings, ticks_per_site: int) -> dict[str, int]:
    """Results equal a straight run; every event id has one byte-identical payload. Returns duplicates."""
    ticks = ercot_week()[:ticks_per_site]
    expected, final = reference(settings, ticks)
    published = await read_published(settings)
    statuses = await latest_status(settings)
    for site in SITES:
        assert trace_of(published.actions, site) == expected
        history = {h.event_id: h for h in published.history if h.site_id == site}
        assert sorted(h.timestamp for h in history.values()) == [row[0] for row in expected]
        assert statuses[site].ticks_applied == ticks_per_site
        assert statuses[site].available_energy_mwh == final.battery.state_of_charge_mwh
        assert statuses[site].net_value == pytest.approx(final.battery.net_value, rel=1e-12)
    duplicates: dict[str, int] = {}
    for topic in (settings.topics.actions, settings.topics.status, settings.topics.history):
        by_id: dict[str, set[bytes]] = defaultdict(set)
        raw = await raw_events(settings, topic)
        for value in raw:
            by_id[orjson.loads(value)["event_id"]].add(value)
        assert all(len(payloads) == 1 for payloads in by_id.values()), "re-emitted events differ"
        assert len(by_id) == len(SITES) * ticks_per_site
        duplicates[topic] = len(raw) - len(by_id)
    return duplicates


async def test_graceful_stop_and_restart_continue_exactly(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), worker={"max_batch_records": 50}
    )
    ticks = ercot_week()
    for site in SITES:
        await feed(settings, ticks, site)
    total = len(SITES) * len(ticks)
    first = Worker(settings)
    assert await first.run(max_messages=total // 2, idle_timeout_s=20) == total // 2
    second = Worker(settings)
    assert await second.run(max_messages=total - total // 2, idle_timeout_s=20) == total - total // 2
    assert second.stats.sites_restored >= 1
    assert second.processor.counters.already_applied == 0
    duplicates = await assert_same_as_uninterrupted(settings, len(ticks))
    assert set(duplicates.values()) == {0}, "a graceful stop re-emits nothing"


async def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[misc]
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def test_kill_9_mid_stream_then_restart_gives_the_uninterrupted_results(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    tmp_path: Path,
) -> None:
    settings = make_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), worker={"max_batch_records": 7}
    )
    ticks = ercot_week()
    for site in SITES:
        await feed(settings, ticks, site)
    log = tmp_path / "worker.log"

    async def actions_at_least(n: int) -> bool:
        return len(await raw_events(settings, settings.topics.actions)) >= n

    async def all_applied() -> bool:
        statuses = await latest_status(settings)
        return all(site in statuses and statuses[site].ticks_applied == len(ticks) for site in SITES)

    victim = start_worker_process(settings, log)
    try:
        await wait_for(lambda: actions_at_least(60), 60, "the first worker to emit actions")
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        survivor = start_worker_process(settings, log)
        await wait_for(all_applied, 90, "the restarted worker to finish")
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(30) == 0, log.read_text()[-2000:]
    finally:
        for process in (victim, locals().get("survivor")):
            if process is not None and process.poll() is None:
                process.kill()
    await assert_same_as_uninterrupted(settings, len(ticks))
    assert "restored" in log.read_text()
