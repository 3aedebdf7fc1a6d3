"""Shared by the benchmark orchestrator (``run.py``) and its child processes (``child.py``).

Settings for a run, topic creation, the pre-filled ``prices`` load, and the statistics of repeated runs.
Every run gets fresh output topics and a fresh consumer group, so no run sees another's state.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from aiokafka.admin import NewTopic

from battery_worker.kafka.clients import make_admin, make_producer
from battery_worker.kafka.tools.feed import tick_payload
from battery_worker.pricefiles import load_ticks
from battery_worker.settings import Settings, load_settings
from battery_worker.ticks import PriceTick

PARTITIONS = 3
POLICY = {"name": "threshold", "params": {"charge_below": 25.0, "discharge_above": 100.0}}
T0 = datetime(2020, 1, 1, tzinfo=UTC)
"""Far enough back that 30,000 hourly ticks stay in the past: a tick more than worker.max_tick_ahead_s
after its record's Kafka timestamp (the time of the run) goes to the DLQ."""


RETENTION_MS = "retention.ms"
KAFKA_DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)
"""Set explicitly on every topic the benchmark creates (it is Kafka's default): Quix Streams reads
``retention.ms`` of its input topic to configure the changelog topic, and the embedded Tansu broker's
DescribeConfigs answers only configs that were set explicitly (``KeyError: 'retention.ms'`` otherwise)."""

AT_LEAST_ONCE = "at-least-once"
EXACTLY_ONCE = "exactly-once"


def settings_for(
    bootstrap: str,
    prices: str,
    prefix: str,
    group: str,
    *,
    guarantee: str = AT_LEAST_ONCE,
    worker: dict[str, Any] | None = None,
) -> Settings:
    """The worker's settings for one run: shared input topic, fresh outputs and group.

    ``guarantee`` is ``worker.processing_guarantee``; ``worker`` adds or replaces other worker settings
    (``child.py --worker-setting``, for trying e.g. ``max_batch_records``).
    """
    topics: dict[str, Any] = {
        name: f"{prefix}.{name}" for name in ("actions", "status", "state", "history", "dlq")
    }
    return load_settings(
        None,
        {
            "kafka": {"bootstrap_servers": bootstrap},
            "topics": {"prices": prices, "partitions": PARTITIONS, **topics},
            "worker": {
                "group_id": group,
                "session_timeout_ms": 6000,
                "processing_guarantee": guarantee,
                **(worker or {}),
            },
            "policy": POLICY,
        },
    )


def sample_prices() -> list[float]:
    """The bundled ERCOT fortnight's prices (USD/MWh): a realistic mix of charge, hold and discharge."""
    source = resources.files("battery_worker") / "data" / "ercot_2023-08-01_14.csv"
    with resources.as_file(source) as path:
        ticks: list[PriceTick] = load_ticks(path)
    return [tick.energy_price for tick in ticks]


def tick_messages(count: int, sites: int) -> list[tuple[bytes, bytes]]:
    """``count`` ticks round-robin over ``sites`` sites, hourly per site, keyed by site id."""
    prices = sample_prices()
    messages = []
    for index in range(count):
        hour, site = divmod(index, sites)
        tick = PriceTick(
            energy_price=prices[(index * 7 + site) % len(prices)],
            hash_price=1.5,
            token_price=1.0,
            timestamp=T0 + timedelta(hours=hour),
        )
        messages.append((f"site-{site:05d}".encode(), tick_payload(tick)))
    return messages


async def create_topics(bootstrap: str, names: Sequence[str], *, compact: Sequence[str] = ()) -> None:
    settings = load_settings(None, {"kafka": {"bootstrap_servers": bootstrap}})
    admin = make_admin(settings.kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    PARTITIONS,
                    1,
                    topic_configs={
                        RETENTION_MS: KAFKA_DEFAULT_RETENTION_MS,
                        **({"cleanup.policy": "compact"} if name in compact else {}),
                    },
                )
                for name in names
            ]
        )
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes, bytes]],
    partitions: Sequence[int] | None = None,
) -> None:
    """Write ``messages`` (acks=all, the worker's producer settings) and wait for every acknowledgement."""
    settings = load_settings(None, {"kafka": {"bootstrap_servers": bootstrap}})
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        pending = []
        for index, (key, value) in enumerate(messages):
            partition = None if partitions is None else partitions[index]
            pending.append(await producer.send(topic, value, key=key, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated runs, with the runs themselves."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def rss_mb() -> float:
    """This process's resident set now, in MiB as :func:`peak_rss_mb`: what it holds, not its peak."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 1024 / 1024


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM, not ``ru_maxrss``, which Linux carries over from the parent on exec."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def on_broker(bootstrap_servers: str | None, measure: Callable[[str], Coroutine[Any, Any, None]]) -> None:
    """Run ``measure`` against a running broker, or against the embedded one started for it."""
    if bootstrap_servers:
        asyncio.run(measure(bootstrap_servers))
        return
    from battery_worker.brokers.embedded import EmbeddedBroker

    with EmbeddedBroker() as broker:
        asyncio.run(measure(broker.bootstrap_servers))
