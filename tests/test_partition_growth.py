"""``prices`` given more partitions while a worker runs (a review run as the operator of a fleet).

The running workers kept the partition count they started with. Every tick of a site the new count moved
came "on another partition than its home" and was dead-lettered, its offset committed: lost (23,760 of
48,000 ticks). With the state topic left at the old count, the restore of a new partition waited for good,
``/ready`` 503 and nothing in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from battery_worker.audit import Outside
from battery_worker.kafka.clients import METADATA_MAX_AGE_MS, make_producer
from battery_worker.kafka.exceptions import TopicMisconfigured
from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.kafka.worker import Worker
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.settings import Settings
from battery_worker.ticks import PriceTick
from tests.capabilities import lacks_admin
from tests.conftest import BrokerKind
from tests.faultkit import raw_values
from tests.waiting import wait_until_async
from tests.workerkit import (
    ercot_week,
    feed,
    list_offsets_end,
    make_settings,
    read_published,
    reference,
    trace_of,
)

pytestmark = pytest.mark.broker


@pytest.fixture(autouse=True)
def _create_partitions(broker_kind: BrokerKind, request: pytest.FixtureRequest) -> None:
    if broker_kind == "embedded":
        pytest.skip("the embedded broker (Tansu) has no CreatePartitions (no API version): Apache Kafka")
    if broker_kind == "external":
        lacking = asyncio.run(lacks_admin(request.getfixturevalue("kafka_bootstrap"), "CreatePartitions"))
        if lacking:
            pytest.skip(lacking)


MOVED = next(f"site-{n}" for n in range(100) if home_partition(f"site-{n}", 6) >= 3)
"""A site whose home is one of the new partitions once ``prices`` has 6 rather than 3."""
STAYS = next(f"s-{n}" for n in range(100) if home_partition(f"s-{n}", 6) == home_partition(f"s-{n}", 3))


async def grow(settings: Settings, topics: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(partitions) for topic in topics})
    finally:
        await admin.close()


async def refresh_metadata(worker: Worker) -> None:
    """What the consumer's periodic metadata refresh (``metadata_max_age_ms``, 5 min) does: it learns the
    new count, and the group rebalances on it."""
    consumer = worker._consumer
    assert consumer is not None
    await consumer._client.force_metadata_update()


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    async def holds() -> bool:
        return condition()

    await wait_until_async(holds, timeout_s, what, poll_s=0.2)


async def test_sites_follow_the_new_partition_count_when_prices_and_state_grow(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:48]
    before, after = ticks[:24], ticks[24:]
    await feed(settings, before, MOVED)
    await feed(settings, before, STAYS)
    worker = Worker(settings)
    running = asyncio.create_task(worker.run(idle_timeout_s=60))
    try:
        await until(lambda: worker.processor.counters.applied == 48, "the first day applied")
        await grow(settings, [settings.topics.prices, settings.topics.state], 6)
        with caplog.at_level(logging.WARNING):
            # No nudge: the consumer's own metadata refresh (clients.METADATA_MAX_AGE_MS, 30 s) finds the
            # new partitions (with aiokafka's 5 min they had no owner that long, a review run).
            rebalanced = lambda: worker.stats.rebalances >= 1 and worker.ready  # noqa: E731
            await until(rebalanced, "a rebalance on the new count", METADATA_MAX_AGE_MS / 1000 + 30)
        await feed(settings, after, MOVED)  # its ticks now land on the new home
        await until(lambda: worker.processor.counters.total >= 72, "every tick handled")
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
    assert worker.processor.counters.rejected == 0, "ticks of a moved site were dead-lettered"
    assert worker.processor.counters.applied == 72
    assert await raw_values(settings, settings.topics.dlq) == []
    expected, _ = reference(settings, ticks)
    published = await read_published(settings)
    assert trace_of(published.actions, MOVED) == expected, "the moved site went on from its state"
    said = [r.getMessage() for r in caplog.records if "partitions now, not 3" in r.getMessage()]
    assert said, [r.getMessage() for r in caplog.records]

    # The replay reads ticks by today's count: the moved site's first day lies away from its home now. Its
    # decisions are counted as not verified, in one process and in two (the site's owner does not read the
    # old partition: they were in no count).
    for processes in (1, 2):
        audited = await replay(settings, ReplayOptions(processes=processes))
        assert not audited.identical
        assert audited.report.unverified == {Outside.AWAY_FROM_HOME: {MOVED: 24}}
        assert audited.report.sites[STAYS].identical
        assert audited.report.sites[STAYS].matched == 24
        assert audited.report.sites[MOVED].missing == 0


async def test_a_state_topic_that_did_not_grow_stops_the_worker_with_the_fix(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks: list[PriceTick] = ercot_week()[:24]
    await feed(settings, ticks[:12], MOVED)
    worker = Worker(settings)
    running = asyncio.create_task(worker.run(idle_timeout_s=60))
    await until(lambda: worker.processor.counters.applied == 12, "the first ticks applied")
    await grow(settings, [settings.topics.prices], 6)
    await feed(settings, ticks[12:], MOVED, prepare=False)  # feed's own check refuses the topics
    await refresh_metadata(worker)
    with pytest.raises(TopicMisconfigured) as raised:
        await asyncio.wait_for(running, 60)  # before, the restore of partition 3 or more waited for good
    assert str(raised.value) == (
        f"state topic {settings.topics.state} has 3 partitions but {settings.topics.prices} has 6: a site's "
        f"state lies in the partition numbered as its home, so grow it to 6 as well (kafka-topics --alter "
        f"--topic {settings.topics.state} --partitions 6), then start the worker again; docs/delivery.md, "
        "'Adding partitions'"
    )
    assert not worker.ready
    assert worker.processor.counters.rejected == 0, "no tick is dead-lettered for it"
    dlq = [TopicPartition(settings.topics.dlq, p) for p in range(3)]
    assert set((await list_offsets_end(settings, dlq)).values()) == {0}  # feed's read refuses the topics


async def test_a_new_partition_with_only_dead_letters_is_not_taken_for_a_lost_state(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A review of the diff: after growth, a restored site homed on a new partition marked that partition's
    commits "state stored" before any state was written there, so with only a dead letter on it, every
    restart took its state for lost and read it again from its start, the dead letter written again."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    moving = next(f"site-{n}" for n in range(100) if home_partition(f"site-{n}", 2) == 1)
    await feed(settings, ercot_week()[:10], moving)
    assert await Worker(settings).run(max_messages=10, idle_timeout_s=20) == 10
    await grow(settings, [settings.topics.prices, settings.topics.state], 2)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.prices, b"not json", key=b"junk", partition=1)
    finally:
        await producer.stop()
    assert await Worker(settings).run(max_messages=1, idle_timeout_s=20) == 1
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert await Worker(settings).run(idle_timeout_s=5) == 0, "nothing read again"
    assert len(await raw_values(settings, settings.topics.dlq)) == 1
    assert not [r for r in caplog.records if "holds no state" in r.getMessage()]
