"""A restore that reads a state partition twice restores what one read restores.

A restore reads each state partition to its end, where each site's latest record is known. Past
``store.HOLD_BYTES`` of records it keeps only each site's latest offset and reads the partition again; these
tests hold that second read to the first's result on a real broker: superseded records, a tombstone and
an unreadable latest record included.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from aiokafka import TopicPartition

from battery_worker.dispatch import SiteState
from battery_worker.kafka.clients import make_producer, make_reader, start_client
from battery_worker.kafka.store import load_states, restore_latest, restore_sites
from battery_worker.kafka.tools.feed import tick_payload
from battery_worker.kafka.worker_stats import WorkerStats
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.processing import InputRecord, TickProcessor
from battery_worker.settings import Settings
from tests.workerkit import create_topics, ercot_week, make_settings

pytestmark = pytest.mark.broker

PARTITIONS = 3
SITES = [f"site-{index}" for index in range(12)]
FORGOTTEN, UNREADABLE = SITES[0], SITES[1]


Written = tuple[bytes, bytes | None, int]
"""A state record as written: key, value (None: a tombstone) and partition."""


def written_state(settings: Settings) -> tuple[list[Written], dict[str, SiteState]]:
    """State records as a worker writes them (three checkpoints, so each site has three versions), then a
    tombstone as one site's latest and an unreadable record as another's; and what the writer holds."""
    names = settings.topics.names()
    writer = TickProcessor(settings.site_directory(), names, prices_partitions=PARTITIONS)
    ticks = ercot_week()[:60]
    offsets = [0] * PARTITIONS
    records: list[Written] = []
    for checkpoint in range(3):
        for tick in ticks[checkpoint * 20 : (checkpoint + 1) * 20]:
            for site in SITES:
                home = home_partition(site, PARTITIONS)
                writer.handle(
                    InputRecord(names.prices, home, offsets[home], site.encode(), tick_payload(tick))
                )
                offsets[home] += 1
        records += [(r.key or b"", r.value, r.partition or 0) for r in writer.take_state_records()]
    for site, value in ((FORGOTTEN, None), (UNREADABLE, b'{"schema_version": 2, "site_id": ')):
        records.append((site.encode(), value, home_partition(site, PARTITIONS)))
    return records, writer.sites()


async def restored(settings: Settings, hold_bytes: int) -> tuple[dict[str, SiteState], int]:
    processor = TickProcessor(
        settings.site_directory(), settings.topics.names(), prices_partitions=PARTITIONS
    )
    reader = make_reader(settings.kafka)
    await start_client(reader, settings.kafka)
    stats = WorkerStats()
    try:
        await restore_sites(
            reader,
            processor,
            settings.topics.names().state,
            range(PARTITIONS),
            stats,
            timeout_s=60,
            hold_bytes=hold_bytes,
        )
    finally:
        await reader.stop()
    return processor.sites(), stats.sites_restored


async def test_a_partition_read_twice_restores_what_one_read_restores(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(kafka_bootstrap, f"restore-{uuid.uuid4().hex[:8]}", "unused")
    state_topic = settings.topics.names().state
    await create_topics(settings, [(state_topic, PARTITIONS, {})])
    records, written = written_state(settings)
    producer = make_producer(settings.kafka)
    await start_client(producer, settings.kafka)
    try:
        for key, value, partition in records:
            await producer.send_and_wait(state_topic, value, key=key, partition=partition)
    finally:
        await producer.stop()
    expected = {site: state for site, state in written.items() if site not in (FORGOTTEN, UNREADABLE)}

    with caplog.at_level(logging.INFO, logger="battery_worker.kafka.store"):
        once, once_count = await restored(settings, hold_bytes=10**9)
        assert "read twice" not in caplog.text
        twice, twice_count = await restored(settings, hold_bytes=1)
        homes = sorted({home_partition(site, PARTITIONS) for site in SITES})
        assert f"read twice, more than 1 bytes of records: {homes}" in caplog.text

    assert once == expected
    assert twice == expected
    assert once_count == twice_count == len(expected)
    assert caplog.text.count(f"state record for {UNREADABLE.encode()!r} is unreadable") == 2


async def test_a_site_deleted_between_the_two_reads_stays_deleted(kafka_bootstrap: str) -> None:
    """The second read skipped tombstones, so a site deleted after the first read came back from the
    record before it, against 'the latest wins, as in one read'."""
    settings = make_settings(kafka_bootstrap, f"restore-{uuid.uuid4().hex[:8]}", "unused")
    state_topic = settings.topics.names().state
    await create_topics(settings, [(state_topic, PARTITIONS, {})])
    records, written = written_state(settings)
    deleted = SITES[2]
    home = home_partition(deleted, PARTITIONS)
    producer = make_producer(settings.kafka)
    reader = make_reader(settings.kafka)
    await start_client(producer, settings.kafka)
    await start_client(reader, settings.kafka)
    try:
        for key, value, partition in records:
            await producer.send_and_wait(state_topic, value, key=key, partition=partition)
        first = await load_states(reader, state_topic, [home], timeout_s=60, hold_bytes=1)
        assert first.latest_offsets is not None
        assert deleted.encode() in first.latest_offsets
        await producer.send_and_wait(state_topic, None, key=deleted.encode(), partition=home)  # meanwhile
        processor = TickProcessor(
            settings.site_directory(), settings.topics.names(), prices_partitions=PARTITIONS
        )
        tp = TopicPartition(state_topic, home)
        count = await restore_latest(reader, processor, tp, first.latest_offsets, timeout_s=60)
    finally:
        await producer.stop()
        await reader.stop()
    kept = {site for site in SITES if home_partition(site, PARTITIONS) == home} - {
        deleted,
        FORGOTTEN,
        UNREADABLE,
    }
    assert set(processor.sites()) == kept
    assert count == len(kept)
    assert all(processor.sites()[site] == written[site] for site in kept)
