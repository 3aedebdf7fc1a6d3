"""What only Apache Kafka's log can show: the state topic really compacted, restored from, and offsets as
ListOffsets reports them.

The embedded broker neither compacts nor reports ListOffsets' end faithfully (README, "The embedded
broker"), so these tests take ``apache_kafka`` and are skipped, with the reason, elsewhere::

    BATTERY_WORKER_TEST_BROKER=apache .venv/bin/pytest tests/test_compaction.py

* Compaction: the state and status topics are created (before the worker) to compact at once. Once the log
  cleaner has removed the superseded records of every site, a new worker process of the same group restores
  from what is left and goes on; the result equals an uninterrupted run.
* Lag: with a worker paused between batches, its ``lag()`` (fetch high watermark − position) and the lag
  ``battery-worker status`` prints (high watermark − committed) both equal ListOffsets' end offsets minus
  the group's committed offsets as the admin client reads them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from battery_worker.brokers.apache_kafka import ApacheKafkaBroker
from battery_worker.kafka.batching import key_partition
from battery_worker.kafka.tools.inspect import latest_status
from battery_worker.kafka.tools.overview import group_lag
from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.kafka.worker import Worker
from battery_worker.settings import Settings
from battery_worker.ticks import PriceTick
from tests.faultkit import read_records, site_streams
from tests.workerkit import (
    cli,
    committed_offsets,
    create_topics,
    feed,
    list_offsets_end,
    make_settings,
    read_published,
    reference,
    settings_env,
    start_worker_process,
    trace_of,
)

pytestmark = pytest.mark.broker

#: Compact as soon as possible: roll a segment after 200 ms (on the next write), clean any dirt at all,
#: keep tombstones only briefly. 1 MiB is the smallest segment.bytes Kafka 4 accepts.
COMPACT_NOW = {
    "cleanup.policy": "compact",
    "segment.ms": "200",
    "segment.bytes": str(1024 * 1024),
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "100",
    "file.delete.delay.ms": "100",
}
ROLL_KEY = b"__segment-roll__"
RESTORED = re.compile(r"restored (\d+) sites of partitions \[[\d, ]*\] from (\d+) state records")


def sites_over(partitions: int, per_partition: int) -> list[str]:
    """Site ids spread evenly over the ``prices`` partitions (as the default partitioner puts their keys)."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    index = 0
    while any(len(names) < per_partition for names in chosen.values()):
        site = f"site-{index:02d}"
        names = chosen[key_partition(site.encode(), partitions)]
        if len(names) < per_partition:
            names.append(site)
        index += 1
    return sorted(site for names in chosen.values() for site in names)


async def records_per_key(settings: Settings, topic: str, partitions: int) -> Counter[bytes]:
    """How many records of each key the topic holds now, read from the beginning (tombstones included)."""
    records = await read_records(settings, topic, partitions, timeout_s=30)
    return Counter(record.key for record in records if record.key is not None)


async def roll_segments(settings: Settings, topics: Sequence[str], partitions: int) -> None:
    """A tombstone of a key no site has, on every partition: the write that rolls an expired active segment
    (a single node compacts only closed segments). Restore and ``status`` skip tombstones."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        sent = [
            await producer.send(topic, None, key=ROLL_KEY, partition=p)
            for topic in topics
            for p in range(partitions)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def wait_compacted(
    settings: Settings, topics: Sequence[str], partitions: int, sites: Sequence[str], timeout_s: float
) -> dict[str, Counter[bytes]]:
    """Poll until the cleaner has left at most two records per site in each topic; return the counts."""
    keys = [site.encode() for site in sites]
    deadline = time.monotonic() + timeout_s
    while True:
        await roll_segments(settings, topics, partitions)
        counts = {topic: await records_per_key(settings, topic, partitions) for topic in topics}
        if all(counts[t][key] <= 2 for t in topics for key in keys):
            return counts
        if time.monotonic() > deadline:
            shown = {t: {k.decode(): counts[t][k] for k in keys} for t in topics}
            raise AssertionError(f"not compacted within {timeout_s:.0f} s: records per site {shown}")
        await asyncio.sleep(1.0)


async def wait_exit(process: Callable[[float], int], timeout_s: float) -> int:
    return await asyncio.to_thread(process, timeout_s)


# ----------------------------------------------------------------------------------------------- compaction


@pytest.mark.apache_needs("a log cleaner that compacts, configured to run at once")
async def test_a_new_worker_restores_exactly_from_a_state_topic_the_cleaner_has_compacted(
    apache_kafka: ApacheKafkaBroker,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    tmp_path: Path,
) -> None:
    partitions, first, more = 2, 1000, 150
    sites = sites_over(partitions, 2)
    streams = site_streams(sites, first + more)
    # Batches of 10 records, each a checkpoint: one state record per site it touched, ~100 per site in all.
    settings = make_settings(
        apache_kafka.bootstrap_servers,
        new_topic_name(),
        new_group_id(),
        partitions=partitions,
        worker={"max_batch_records": 10, "commit_interval_ms": 0},
    )
    topics = settings.topics
    await create_topics(
        settings,
        [
            (topics.prices, partitions, {}),
            (topics.state, partitions, COMPACT_NOW),
            (topics.status, partitions, COMPACT_NOW),
        ],
    )
    for site in sites:
        await feed(settings, streams[site][:first], site)

    log = tmp_path / "worker-1.log"
    worker = start_worker_process(settings, log, "--max-messages", str(first * len(sites)))
    assert await wait_exit(worker.wait, 120) == 0, log.read_text()[-3000:]
    summary = re.search(r"(\d+) records \(\d+ applied.*?\), (\d+) batches", log.read_text())
    assert summary is not None, log.read_text()[-3000:]
    batches = int(summary.group(2))
    assert batches >= first * len(sites) // 10

    state_tps = [TopicPartition(topics.state, p) for p in range(partitions)]
    written = sum((await list_offsets_end(settings, state_tps)).values())
    assert written >= batches  # one state record per site a batch touched
    compacted = await wait_compacted(settings, [topics.state, topics.status], partitions, sites, 90)
    state_counts = compacted[topics.state]
    for site in sites:
        assert 1 <= state_counts[site.encode()] <= 2
    assert state_counts.total() < written // 10, (state_counts, written)
    print(f"compaction: {batches} batches, {written} state records written, {state_counts.total()} left")
    statuses = await latest_status(settings)  # the latest status of each site survived
    assert {site: statuses[site].ticks_applied for site in sites} == dict.fromkeys(sites, first)

    for site in sites:
        await feed(settings, streams[site][first:], site)
    log2 = tmp_path / "worker-2.log"
    worker = start_worker_process(settings, log2, "--max-messages", str(more * len(sites)))
    assert await wait_exit(worker.wait, 120) == 0, log2.read_text()[-3000:]
    text = log2.read_text()
    restored = [(int(a), int(b)) for a, b in RESTORED.findall(text)]
    assert restored, text[-3000:]
    assert sum(sites_restored for sites_restored, _ in restored) == len(sites)
    records_read = sum(read for _, read in restored)
    assert records_read <= sum(state_counts.values()) + partitions * 2, (restored, state_counts)
    assert f"{more * len(sites)} records ({more * len(sites)} applied, 0 stale, 0 already applied" in text
    print(f"restore after compaction: {restored}")

    published = await read_published(settings)
    statuses = await latest_status(settings)
    for site, ticks in streams.items():
        expected, final = reference(settings, ticks)
        assert trace_of(published.actions, site) == expected, site
        history = {h.event_id: h.timestamp for h in published.history if h.site_id == site}
        assert sorted(history.values()) == [t.timestamp for t in ticks], site
        assert statuses[site].available_energy_mwh == final.battery.state_of_charge_mwh, site
        assert statuses[site].ticks_applied == len(ticks), site
        assert statuses[site].net_value == final.battery.net_value, site
    result = await replay(settings, ReplayOptions())
    assert result.identical


# ----------------------------------------------------------------------------------------------- lag


class _PausingWorker(Worker):
    """Stops between two batches once ``pause_after`` records are handled and their tail is stored
    (with ``commit_interval_ms`` 0, every batch has its tail)."""

    def __init__(self, settings: Settings, pause_after: int) -> None:
        super().__init__(settings)
        self.pause_after = pause_after
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()

    async def _poll_once(self, limit: int | None) -> int:
        if self.processor.counters.total >= self.pause_after and not self.resume.is_set():
            await self._tail.settle()  # state stored and offsets committed: position == committed
            self.paused.set()
            await self.resume.wait()
        return await super()._poll_once(limit)


def printed_lag(settings: Settings) -> dict[int, int]:
    """Per partition, the lag line of ``battery-worker status``: ``lag of group G on T: N (0: a, 1: b)``."""
    result = cli("status", env={**settings_env(settings), "COLUMNS": "250"}, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r"lag of group \S+ on \S+: (\d+) \(([^)]*)\)", result.stdout)
    assert found is not None, result.stdout
    parts = dict(part.split(": ") for part in found.group(2).split(", "))
    lags = {int(p): int(n) for p, n in parts.items()}
    assert sum(lags.values()) == int(found.group(1))
    return lags


@pytest.mark.apache_needs("ListOffsets that answers a batch-written partition's end rightly")
async def test_worker_and_status_lag_equal_list_offsets_minus_committed(
    apache_kafka: ApacheKafkaBroker,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
) -> None:
    settings = make_settings(  # a checkpoint per batch: paused between two, position == committed
        apache_kafka.bootstrap_servers,
        new_topic_name(),
        new_group_id(),
        worker={"max_batch_records": 20, "commit_interval_ms": 0},
    )
    sites = sites_over(3, 1)
    streams: dict[str, list[PriceTick]] = site_streams(sites, 60)
    for site in sites:
        await feed(settings, streams[site], site)
    total = sum(len(ticks) for ticks in streams.values())
    tps = [TopicPartition(settings.topics.prices, p) for p in range(3)]

    worker = _PausingWorker(settings, pause_after=total // 2)
    running = asyncio.create_task(worker.run(idle_timeout_s=2))
    try:
        await asyncio.wait_for(worker.paused.wait(), 60)
        ends = await list_offsets_end(settings, tps)
        committed = await committed_offsets(settings)
        real = {tp: ends[tp] - committed.get(tp, 0) for tp in tps}
        assert 0 < sum(real.values()) < total, (ends, committed)
        print(f"lag while paused: { ({tp.partition: n for tp, n in real.items()}) }")
        assert await worker.lag() == real
        assert {lag.partition: lag.lag for lag in await group_lag(settings, settings.worker.group_id)} == {
            tp.partition: n for tp, n in real.items()
        }
        assert await asyncio.to_thread(printed_lag, settings) == {tp.partition: n for tp, n in real.items()}
    finally:
        worker.resume.set()
        handled = await asyncio.wait_for(running, 60)
    assert worker.processor.counters.total == total, handled
    ends = await list_offsets_end(settings, tps)
    assert await committed_offsets(settings) == ends
    assert await asyncio.to_thread(printed_lag, settings) == dict.fromkeys(range(3), 0)
    assert all(offset > 0 for offset in ends.values())  # every partition held ticks
