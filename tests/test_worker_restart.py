"""Stopping the worker mid-stream, gracefully or with kill -9, changes nothing in the results."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from battery_worker.kafka.clients import make_admin, make_group_consumer, make_producer
from battery_worker.kafka.exceptions import StateOfNewerVersion
from battery_worker.kafka.positions import STATE_STORED, commit_metadata, decided_with, state_stored
from battery_worker.kafka.tools.overview import group_lag
from battery_worker.kafka.worker import Worker
from battery_worker.settings import Settings
from tests.capabilities import lacks_admin
from tests.conftest import BrokerKind
from tests.faultkit import (
    all_applied,
    emitted_at_least,
    interleaved,
    paced_feed,
    raw_values,
    read_records,
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
    assert await group_members(settings) == [], "a stopped worker leaves its group at once"
    second = Worker(settings)
    assert await second.run(max_messages=total - total // 2, idle_timeout_s=20) == total - total // 2
    assert second.stats.sites_restored >= 1
    assert second.processor.counters.already_applied == 0
    verdict = await verify_against_uninterrupted(settings, streams)
    assert verdict.reemitted == 0, "a graceful stop re-emits nothing"


async def group_members(settings: Settings) -> list[Any]:
    """The group's members as the broker describes them: a stopped worker that did not leave (Tansu
    numbers a first generation 0, from which aiokafka sent no LeaveGroup) held up the next one's join."""
    admin = make_admin(settings.kafka)
    await admin.start()
    try:
        (described,) = await admin.describe_consumer_groups([settings.worker.group_id])
    finally:
        await admin.close()
    ((error_code, _group, _state, _protocol_type, _protocol, members),) = described.groups
    assert error_code == 0, described
    return list(members)


def test_a_commits_metadata_names_the_state_stored_and_the_committers_settings() -> None:
    assert commit_metadata(2, {2}, "3f9c0a1b2c4d") == f"{STATE_STORED} decisions=3f9c0a1b2c4d"
    assert commit_metadata(1, {2}, "3f9c0a1b2c4d") == "decisions=3f9c0a1b2c4d"
    assert commit_metadata(2, {2}) == STATE_STORED
    assert state_stored(f"{STATE_STORED} decisions=3f9c0a1b2c4d")
    assert state_stored(STATE_STORED)  # as a worker before 2026-12-06 committed it
    assert not state_stored("decisions=3f9c0a1b2c4d")
    assert not state_stored("")
    assert decided_with(f"{STATE_STORED} decisions=3f9c0a1b2c4d") == "3f9c0a1b2c4d"
    assert decided_with(STATE_STORED) is None
    assert decided_with("") is None


async def test_a_worker_taking_partitions_committed_under_other_settings_says_so(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fleet operator's review: kill -9, then a restart with a new policy, re-sent the ticks after the
    last commit under the same event_ids with other decisions, and nothing said so."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    ticks = ercot_week()
    await feed(settings, ticks[:20], "north")
    before = Worker(settings)
    assert await before.run(max_messages=20, idle_timeout_s=20) == 20
    if not await _keeps_commit_metadata(settings):  # Tansu, which keeps no commit metadata
        pytest.skip("the broker keeps no commit metadata, where the committing worker's settings are named")
    changed = settings.model_copy(
        update={
            "policy": settings.policy.model_copy(
                update={"params": {**settings.policy.params, "charge_below": 30.0}}
            )
        }
    )
    await feed(settings, ticks[20:25], "north")
    caplog.set_level("WARNING", logger="battery_worker")
    after = Worker(changed)
    assert after.fingerprint != before.fingerprint
    assert await after.run(max_messages=5, idle_timeout_s=20) == 5
    said = [
        r.getMessage() for r in caplog.records if "was committed by a worker deciding with" in r.getMessage()
    ]
    assert said == [
        f"{settings.topics.prices}[0]: offset 20 was committed by a worker deciding with settings "
        f"{before.fingerprint}, this one decides with {after.fingerprint}: if that worker did not stop "
        "cleanly (kill -9, OOM, a lost session), the ticks it handled after its commit are decided again "
        "here and their events re-sent under the same event_id with this worker's decisions "
        '(docs/operations.md, "Changing settings")'
    ]
    caplog.clear()
    await feed(settings, ticks[25:27], "north")
    assert await Worker(changed).run(max_messages=2, idle_timeout_s=20) == 2
    assert not [r for r in caplog.records if "was committed by a worker deciding with" in r.getMessage()]
    # Exactly-once: a killed worker's events after its commit were aborted, never read_committed
    once = changed.model_copy(
        update={
            "worker": changed.worker.model_copy(update={"processing_guarantee": "exactly-once"}),
            "policy": changed.policy.model_copy(
                update={"params": {**changed.policy.params, "charge_below": 35.0}}
            ),
        }
    )
    assert Worker(once).fingerprint != after.fingerprint
    await feed(settings, ticks[27:29], "north")
    assert await Worker(once).run(max_messages=2, idle_timeout_s=20) == 2
    assert not [r for r in caplog.records if "was committed by a worker deciding with" in r.getMessage()]


async def test_a_state_record_of_a_newer_version_stops_the_worker_before_it_applies_anything(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A rollback: an upgrade review ran an older commit on the state a newer one had written; each
    record was 'unreadable, the site starts afresh', every battery was reset, and ticks the newer version
    had decided were decided again under new event ids, the worker exiting 0."""
    settings = make_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), worker={"max_batch_records": 50}
    )
    ticks = ercot_week()
    await feed(settings, ticks, "north")
    first = Worker(settings)
    assert await first.run(max_messages=len(ticks) // 2, idle_timeout_s=20) == len(ticks) // 2
    stored = (await read_records(settings, settings.topics.state))[-1]  # the site's latest
    newer = {**orjson.loads(stored.value), "schema_version": 99, "field_of_version_99": 1.0}
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topics.state, orjson.dumps(newer), key=stored.key, partition=stored.partition
        )
    finally:
        await producer.stop()
    actions = len(await raw_values(settings, settings.topics.actions))
    with pytest.raises(StateOfNewerVersion) as raised:
        await Worker(settings).run(idle_timeout_s=20)
    assert str(raised.value) == (
        "the state record of site 'north' is of version 99, newer than this battery-worker reads (2): a "
        "newer version wrote it, and this one would reset the battery of every such site; run that newer "
        "version (docs/operations.md, 'Upgrading and rolling back')"
    )
    assert len(await raw_values(settings, settings.topics.actions)) == actions, "nothing applied"


@pytest.fixture(params=["at-least-once", "exactly-once"])
def guarantee(request: pytest.FixtureRequest) -> str:
    """Each processing guarantee; exactly-once skips where the broker has no transactions, with why."""
    if request.param == "exactly-once":
        request.getfixturevalue("transactions")
    return str(request.param)


async def test_a_lost_state_topic_is_rebuilt_from_the_first_tick_each_event_sent_again_as_it_was(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
    guarantee: str,
    broker_kind: BrokerKind,
) -> None:
    """A review run deleted ``battery.state`` under running workers: restarted, they went on from the
    group's offsets with new batteries, and re-sent events that differed from the first ones under the same
    ``event_id``. A state partition never written whose ``prices`` partition has committed offsets lost its
    state: it is decided again from the first tick. Here the state topic is renamed, as an operator might,
    which leaves the group's offsets with an empty state topic as its deletion does."""
    if broker_kind == "embedded":
        pytest.skip(
            "the embedded broker (Tansu) keeps no commit metadata, which tells a lost state from none; "
            "runs on Apache Kafka in CI"
        )
    settings = make_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), worker={"processing_guarantee": guarantee}
    )
    streams = {site: ercot_week()[:40] for site in SITES}
    for site, ticks in streams.items():
        await feed(settings, ticks[:30], site)
    assert await Worker(settings).run(max_messages=90, idle_timeout_s=20) == 90
    if not await _keeps_commit_metadata(settings):  # Tansu given by KAFKA_BOOTSTRAP_SERVERS, for one
        pytest.skip("the broker keeps no commit metadata, which tells a lost state from none")
    renamed = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"state": f"{settings.topics.state}.new"})}
    )
    for site, ticks in streams.items():
        await feed(renamed, ticks[30:], site)
    again = Worker(renamed)
    assert await again.run(max_messages=120, idle_timeout_s=20) == 120, "the 90 decided again, 30 new"
    verdict = await verify_against_uninterrupted(renamed, streams)
    assert verdict.reemitted == 3 * 90, "each action, status and history sent again as it was"
    lost = [r.getMessage() for r in caplog.records if "holds no state, never written" in r.getMessage()]
    assert lost, "a warning says the state was lost"
    assert "decided again from its first tick" in lost[0]


async def test_a_lost_state_whose_first_ticks_are_deleted_goes_on_from_the_offsets(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
    broker_kind: BrokerKind,
) -> None:
    """Decided again from its oldest retained tick with new batteries, every retained tick's events were
    sent again, each differing from the first under its ``event_id`` (a review of the diff): where
    retention deleted the first ticks, the partition goes on from its committed offset, and says why."""
    if broker_kind == "embedded":
        pytest.skip(
            "the embedded broker (Tansu) has no DeleteRecords and keeps no commit metadata: Apache Kafka"
        )
    if broker_kind == "external" and (lacking := await lacks_admin(kafka_bootstrap, "DeleteRecords")):
        pytest.skip(lacking)
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    week = ercot_week()[:70]
    await feed(settings, week[:60], "s")
    assert await Worker(settings).run(max_messages=60, idle_timeout_s=20) == 60
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        prices = TopicPartition(settings.topics.prices, 0)
        await admin.delete_records({prices: RecordsToDelete(before_offset=30)}, timeout_ms=10_000)
    finally:
        await admin.close()
    renamed = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"state": f"{settings.topics.state}.new"})}
    )
    await feed(renamed, week[60:], "s")
    assert await Worker(renamed).run(max_messages=10, idle_timeout_s=20) == 10, "the 10 new ticks only"
    actions = [orjson.loads(value) for value in await raw_values(settings, settings.topics.actions)]
    assert len(actions) == 70
    assert len({action["event_id"] for action in actions}) == 70, "no event sent again"
    lost = [r.getMessage() for r in caplog.records if "holds no state, never written" in r.getMessage()]
    assert lost, "a warning says the state was lost"
    assert "it begins at offset 30, its first ticks deleted, so it cannot be decided again" in lost[0]


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


async def test_checkpoints_store_once_per_interval_and_a_kill_between_them_re_emits_byte_identical(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    tmp_path: Path,
) -> None:
    """``worker.commit_interval_ms`` longer than the run: state and offsets are stored at the stop only; a
    worker killed with everything pending is redone by the next one, byte-identical, nothing applied twice."""
    settings = make_settings(
        kafka_bootstrap,
        new_topic_name(),
        new_group_id(),
        worker={"max_batch_records": 20, "commit_interval_ms": 60_000},
    )
    streams = {site: ercot_week() for site in SITES}
    for site, ticks in streams.items():
        await feed(settings, ticks, site)
    total = sum(len(ticks) for ticks in streams.values())
    first_part = total // 3

    first = Worker(settings)
    assert await first.run(max_messages=first_part, idle_timeout_s=20) == first_part
    assert first.stats.batches > 3
    assert first.stats.checkpoints == 1, "one checkpoint, at the stop"
    touched = first.processor.site_count
    states = await raw_values(settings, settings.topics.state)
    assert len(states) == touched, "one state record per site, not per batch"
    assert await committed_total(settings) == first_part, "the last offsets committed"

    # The victim handles the rest, its events acknowledged, and is killed before its first checkpoint.
    log = tmp_path / "victim.log"
    victim = start_worker_process(settings, log)
    try:
        await wait_until_async(emitted_at_least(settings, total), 60, "the victim to emit every action")
    finally:
        assert stop(victim, signal.SIGKILL) == -signal.SIGKILL
    assert len(await raw_values(settings, settings.topics.state)) == touched, log.read_text()[-2000:]
    assert await committed_total(settings) == first_part

    redone: set[str | None] = set()  # Handled.site_id: None for a rejected tick
    survivor = Worker(settings, on_handled=lambda _record, handled: redone.add(handled.site_id))
    assert await survivor.run(max_messages=total - first_part, idle_timeout_s=20) == total - first_part
    assert survivor.stats.sites_restored == touched
    assert survivor.processor.counters.already_applied == 0, "the stored state and offsets agree"
    assert survivor.processor.counters.applied == total - first_part
    verdict = await verify_against_uninterrupted(settings, streams)
    events_per_tick = 3  # action, status, history
    assert verdict.reemitted == events_per_tick * (total - first_part), "the victim's events, once more"
    assert len(await raw_values(settings, settings.topics.state)) == touched + len(redone)
    assert await committed_total(settings) == total


async def committed_total(settings: Settings) -> int:
    """The group's committed offsets summed over the ``prices`` partitions (read as ``status`` does)."""
    return sum(lag.committed or 0 for lag in await group_lag(settings, settings.worker.group_id))


async def _keeps_commit_metadata(settings: Settings) -> bool:
    """Whether the group's commits of ``prices`` came back with the worker's metadata."""
    consumer = make_group_consumer(settings.kafka, settings.worker)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topics.prices, p) for p in range(settings.topics.partitions)]
        found = await consumer._coordinator.fetch_committed_offsets(tps)
    finally:
        await consumer.stop()
    return any(state_stored(commit.metadata) for commit in found.values())


async def test_feed_leaves_a_missing_state_topic_beside_prices_to_the_workers(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """An on-call review deleted the state topic while workers ran, then fed a new site: feed created the
    topic again, the workers' next state records landed in it, and a partition with one record counted as
    written, so its other sites started from empty batteries unsaid. The state topic is the workers' to
    create (their commits tell which partitions lost it); a renamed ``topics.state`` stands for the
    deleted topic here."""
    from battery_worker.kafka.topics import partition_counts, prepare_topics

    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await feed(settings, ercot_week()[:5], "north")  # prices and the state topic, as ever on a first feed
    gone = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"state": f"{settings.topics.state}.gone"})}
    )
    counts = await prepare_topics(gone, for_workers=False)
    assert gone.topics.state not in counts
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert gone.topics.state not in await partition_counts(admin, [gone.topics.state])
    finally:
        await admin.close()
    assert gone.topics.state in await prepare_topics(gone)  # a worker's start creates it
