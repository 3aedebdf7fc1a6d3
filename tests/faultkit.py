"""Helpers for the fault tests: a 20-site stream, a paced feeder, worker processes, and the final checks."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from battery_worker.kafka.clients import connection_options, make_reader
from battery_worker.kafka.reading import read_to_end
from battery_worker.kafka.tools.feed import tick_payload
from battery_worker.kafka.tools.inspect import latest_status
from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.kafka.topics import prepare_topics
from battery_worker.pricefiles import load_ticks
from battery_worker.settings import Settings
from battery_worker.ticks import PriceTick
from tests.workerkit import DATA, read_published, reference, trace_of

SITES = tuple(f"site-{i:02d}" for i in range(20))
TICKS_PER_SITE = 500
_ASSIGNED = re.compile(r"assigned \[(\d[\d, ]*)\]")


def site_streams(sites: Sequence[str] = SITES, per_site: int = TICKS_PER_SITE) -> dict[str, list[PriceTick]]:
    """Each site gets its own window of the 2400 hours, so the sites decide differently."""
    hours = load_ticks(DATA / "ercot_2023_first_2400h.csv")
    return {site: hours[i * 95 : i * 95 + per_site] for i, site in enumerate(sites)}


def interleaved(streams: dict[str, list[PriceTick]]) -> list[tuple[str, PriceTick]]:
    length = max(len(ticks) for ticks in streams.values())
    return [(site, ticks[i]) for i in range(length) for site, ticks in streams.items() if i < len(ticks)]


async def paced_feed(settings: Settings, items: Sequence[tuple[str, PriceTick]], rate_per_s: float) -> None:
    """Publish keyed ticks at a steady rate; a failed send is retried (a duplicate is merely stale)."""
    await paced_send(settings, [(site.encode(), tick_payload(tick)) for site, tick in items], rate_per_s)


async def paced_send(
    settings: Settings, messages: Sequence[tuple[bytes | None, bytes | None]], rate_per_s: float
) -> list[tuple[int, int]]:
    """Publish raw key/value pairs at a steady rate, in order; returns the (partition, offset) each landed
    at. A failed send is retried (for a tick, a duplicate is merely stale)."""
    await prepare_topics(settings)
    options = {**connection_options(settings.kafka), "request_timeout_ms": 120_000}
    producer = AIOKafkaProducer(**options, acks="all")
    await producer.start()
    landed: list[tuple[int, int]] = []
    try:
        started = time.monotonic()
        for index, (key, value) in enumerate(messages):
            for _attempt in range(10):
                try:
                    meta = await (await producer.send(settings.topics.prices, value, key=key))
                    landed.append((meta.partition, meta.offset))
                    break
                except Exception:  # any send failure: retry; a duplicate is merely a stale tick
                    await asyncio.sleep(1)
            else:
                raise AssertionError(f"could not publish message {index}")
            delay = started + (index + 1) / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await producer.stop()
    return landed


def all_applied(settings: Settings, streams: dict[str, list[PriceTick]]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        statuses = await latest_status(settings)
        return all(
            site in statuses and statuses[site].last_tick_at == ticks[-1].timestamp
            for site, ticks in streams.items()
        )

    return check


def assignments(log: Path) -> list[set[int]]:
    """The partitions one worker logged as assigned (``assigned [0, 2]``), a set per non-empty assignment."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return [{int(p) for p in found.split(", ")} for found in _ASSIGNED.findall(text)]


def shared_out(
    logs: Sequence[Path], partitions: int, seen: Mapping[Path, int] | None = None
) -> Callable[[], Awaitable[bool]]:
    """True once the workers logging to ``logs`` hold every partition exactly once between them, each at
    least one, each by an assignment newer than the ``seen[log]`` it had before (a rebalance happened)."""
    before = seen or {}

    async def check() -> bool:
        held = [assignments(log) for log in logs]
        if any(len(sets) <= before.get(log, 0) for log, sets in zip(logs, held, strict=True)):
            return False
        latest = [sets[-1] for sets in held]
        return sorted(p for parts in latest for p in parts) == list(range(partitions))

    return check


def emitted_at_least(settings: Settings, count: int) -> Callable[[], Awaitable[bool]]:
    """True once the actions topic holds ``count`` records (re-emitted ones included)."""

    async def check() -> bool:
        return len(await raw_values(settings, settings.topics.actions)) >= count

    return check


def assignment_report(logs: Sequence[Path]) -> Callable[[], str]:
    """For a wait's failure message: each worker's assignments so far."""
    return lambda: "; ".join(f"{log.name}: {assignments(log)}" for log in logs)


def stop(process: subprocess.Popen[bytes], sig: int, timeout_s: float = 30) -> int:
    process.send_signal(sig)
    return process.wait(timeout_s)


def rng(seed: int) -> random.Random:
    return random.Random(seed)


@dataclass(frozen=True)
class Verdict:
    events: int
    reemitted: int


async def read_records(
    settings: Settings,
    topic: str,
    partitions: int | None = None,
    timeout_s: float = 60,
    *,
    committed_only: bool = True,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record in ``topic`` from the beginning, all of its partitions (``None``: asked of the broker).

    ``committed_only=False`` reads ``read_uncommitted``: aborted transactions' records too."""
    if partitions is None:
        partitions = (await prepare_topics(settings)).get(topic, 0)
    reader = make_reader(settings.kafka, committed_only=committed_only)
    await reader.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        async for batch in read_to_end(reader, tps, timeout_s=timeout_s):
            records.extend(batch)
    finally:
        await reader.stop()
    return records


async def raw_values(settings: Settings, topic: str) -> list[bytes]:
    """Every value in ``topic``, all of its partitions (asked of the broker, not assumed); no tombstones."""
    return [record.value for record in await read_records(settings, topic) if record.value is not None]


async def verify_against_uninterrupted(settings: Settings, streams: dict[str, list[PriceTick]]) -> Verdict:
    """Per-site results equal a straight run of the domain; each event id has exactly one payload."""
    published = await read_published(settings)
    statuses = await latest_status(settings)
    for site, ticks in streams.items():
        expected, final = reference(settings, ticks)
        got = trace_of(published.actions, site)
        assert got == expected, f"{site}: actions differ: {trace_difference(got, expected)}"
        history = {h.event_id: h for h in published.history if h.site_id == site}
        assert sorted(h.timestamp for h in history.values()) == [t.timestamp for t in ticks], site
        status = statuses[site]
        assert status.available_energy_mwh == final.battery.state_of_charge_mwh, site
        assert status.ticks_applied == len(ticks), site
        assert status.net_value == final.battery.net_value, site
    events = reemitted = 0
    for topic in (settings.topics.actions, settings.topics.status, settings.topics.history):
        payloads: dict[str, set[bytes]] = defaultdict(set)
        raw = await raw_values(settings, topic)
        for value in raw:
            payloads[orjson.loads(value)["event_id"]].add(value)
        different = [event for event, bodies in payloads.items() if len(bodies) > 1]
        assert not different, f"{topic}: re-emitted events differ from the first: {different[:3]}"
        expected_events = sum(len(t) for t in streams.values())
        assert len(payloads) == expected_events, (topic, len(payloads), expected_events)
        events += len(payloads)
        reemitted += len(raw) - len(payloads)
    result = await replay(settings, ReplayOptions())
    assert result.identical, [s.first for s in result.report.sites.values() if s.first][:3]
    assert result.history.totals().matched == sum(len(t) for t in streams.values())
    return Verdict(events, reemitted)


def trace_difference(got: Sequence[tuple[object, ...]], expected: Sequence[tuple[object, ...]]) -> str:
    """Where a site's published trace leaves the reference: what a failure message needs to be read."""
    first = next((i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e), None)
    if first is None:
        first = min(len(got), len(expected))
    times = Counter(entry[0] for entry in got)
    twice = sorted(str(t) for t, n in times.items() if n > 1)[:3]
    return (
        f"{len(got)} published, {len(expected)} expected; first difference at #{first}: "
        f"published {list(got[first : first + 2])}, expected {list(expected[first : first + 2])}; "
        f"ticks with more than one action: {len(twice)} {twice}"
    )


def log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""
