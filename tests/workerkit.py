"""Helpers for worker tests: per-test settings and topics, feeding, reading back, and the reference run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from battery_worker.dispatch import SiteState, dispatch, new_site_state
from battery_worker.events import BatteryAction, BatteryStatus, HistoryRecord
from battery_worker.kafka.clients import make_producer, make_reader
from battery_worker.kafka.tools.feed import publish_ticks
from battery_worker.kafka.tools.inspect import read_topic
from battery_worker.kafka.topics import prepare_topics
from battery_worker.kafka.worker import Worker
from battery_worker.pricefiles import load_ticks
from battery_worker.settings import Settings, load_settings
from battery_worker.ticks import PriceTick

DATA = Path(__file__).parent / "data"
POLICY = {"name": "threshold", "params": {"charge_below": 25.0, "discharge_above": 100.0}}


def ercot_week() -> list[PriceTick]:
    return load_ticks(DATA / "ercot_2023-08-01_07.csv")


def topic_overrides(prefix: str, partitions: int = 3) -> dict[str, Any]:
    names = ("prices", "actions", "status", "state", "history", "dlq")
    return {**{name: f"{prefix}.{name}" for name in names}, "partitions": partitions}


def session_ms() -> int:
    """A test worker's session: 2 s on the brokers the suite starts, whose group minimum is lowered to 1 s;
    6 s, Kafka's minimum by default, on a broker of ``KAFKA_BOOTSTRAP_SERVERS``.

    Short because the embedded broker holds a member's join for half the session
    (``docs/embedded-broker.md``), and many tests start workers: with 6 s the suite's broker tests took
    997 s on it, with 2 s 830 s."""
    return 6000 if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else 2000


def make_settings(bootstrap: str, prefix: str, group: str, partitions: int = 3, **extra: Any) -> Settings:
    worker = {"group_id": group, "session_timeout_ms": session_ms(), "heartbeat_interval_ms": 600}
    overrides: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": topic_overrides(prefix, partitions),
        "worker": {**worker, **extra.pop("worker", {})},
        "policy": POLICY,
        **extra,
    }
    return load_settings(None, overrides)


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for a worker run as a separate process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATTERY_WORKER_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env["BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap_servers
    for name, value in settings.topics.model_dump().items():
        env[f"BATTERY_WORKER_TOPICS__{name.upper()}"] = str(value)
    for name, value in settings.worker.model_dump().items():
        if value is not None:
            env[f"BATTERY_WORKER_WORKER__{name.upper()}"] = str(value)
    env["BATTERY_WORKER_POLICY__NAME"] = settings.policy.name
    for key, value in settings.policy.params.items():
        env[f"BATTERY_WORKER_POLICY__PARAMS__{key.upper()}"] = str(value)
    return env


def start_worker_process(
    settings: Settings, log: Path, *args: str, global_args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """``battery-worker [global_args] run [args]`` with ``settings`` in its environment, stderr to ``log``."""
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "battery_worker.cli", *global_args, "run", *args],
            env=settings_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


async def feed(settings: Settings, ticks: Sequence[PriceTick], site: str, *, prepare: bool = True) -> None:
    """``ticks`` to ``prices`` keyed by ``site``; ``prepare=False``: as any producer, without ``feed``'s
    check of the topics (which refuses a state topic behind ``prices``)."""
    if prepare:
        await prepare_topics(settings)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        await publish_ticks(producer, settings.topics.prices, ticks, site_id=site)
    finally:
        await producer.stop()


async def send_raw(
    settings: Settings,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    headers: Sequence[Sequence[tuple[str, bytes | None]] | None] = (),
) -> list[tuple[int, int]]:
    """Publish raw key/value pairs in order, the i-th with ``headers[i]`` when given; returns the
    (partition, offset) each landed at."""
    await prepare_topics(settings)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        pending = [
            await producer.send(
                settings.topics.prices,
                value,
                key=key,
                headers=list(headers[i] or ()) if i < len(headers) else None,
            )
            for i, (key, value) in enumerate(messages)
        ]
        landed = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return [(meta.partition, meta.offset) for meta in landed]


async def create_topics(settings: Settings, specs: Sequence[tuple[str, int, dict[str, str]]]) -> None:
    """Create topics by hand (name, partitions, configs), as an operator might have, before the worker."""
    from aiokafka.admin import NewTopic

    from battery_worker.kafka.clients import make_admin

    admin = make_admin(settings.kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, count, 1, topic_configs=configs) for name, count, configs in specs]
        )
    finally:
        await admin.close()


async def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The group's committed offsets, asked of the broker (a partition never committed is absent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.worker.group_id)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def list_offsets_end(settings: Settings, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """ListOffsets(latest), the broker's own answer: the high watermark on Kafka, not always on Tansu
    (``kafka/reading.py``)."""
    reader = make_reader(settings.kafka)
    await reader.start()
    try:
        return dict(await reader.end_offsets(list(tps)))
    finally:
        await reader.stop()


@dataclass
class Published:
    actions: list[BatteryAction]
    statuses: list[BatteryStatus]
    history: list[HistoryRecord]


async def read_published(settings: Settings) -> Published:
    return Published(
        await read_topic(settings, settings.topics.actions, BatteryAction),
        await read_topic(settings, settings.topics.status, BatteryStatus),
        await read_topic(settings, settings.topics.history, HistoryRecord),
    )


async def run_with_a_restart(settings: Settings, ticks: Sequence[PriceTick], half: int) -> None:
    """Handle ``ticks`` (fed to one site) with two workers in turn, the second restored from the first's state
    after ``half`` of them: what every agreement test puts the worker through."""
    assert await Worker(settings).run(max_messages=half, idle_timeout_s=20) == half
    second = Worker(settings)
    assert await second.run(max_messages=len(ticks) - half, idle_timeout_s=20) == len(ticks) - half
    assert second.stats.sites_restored == 1


def unique_actions(published: Published) -> list[BatteryAction]:
    """Each action once (a re-emit has the same ``event_id``), in tick order."""
    unique = {a.event_id: a for a in published.actions}
    return sorted(unique.values(), key=lambda a: a.tick_timestamp)


def reference(settings: Settings, ticks: Sequence[PriceTick]) -> tuple[list[tuple[Any, ...]], SiteState]:
    """What the domain core computes directly: (timestamp, action, power, soc after) per tick, final state."""
    setup = settings.site_directory().default
    site = new_site_state(setup.config, setup.policy)
    trace = []
    for tick in ticks:
        outcome = dispatch(tick, site, setup.config, setup.policy)
        site = outcome.state
        trace.append(
            (
                tick.timestamp,
                outcome.step.action.value,
                outcome.step.power_mw,
                outcome.step.state_of_charge_after_mwh,
            )
        )
    return trace, site


def trace_of(actions: Sequence[BatteryAction], site: str) -> list[tuple[Any, ...]]:
    unique = {a.event_id: a for a in actions if a.site_id == site}
    ordered = sorted(unique.values(), key=lambda a: a.tick_timestamp)
    return [(a.tick_timestamp, a.action.value, a.power_mw, a.state_of_charge_after_mwh) for a in ordered]


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "battery_worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
        check=False,
    )
