"""The worker on a real broker: real prices in, the domain's decisions out, bad input to the DLQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from battery_worker.events import event_id
from battery_worker.kafka.clients import make_producer
from battery_worker.kafka.exceptions import TopicMisconfigured
from battery_worker.kafka.tools.inspect import latest_status, site_history
from battery_worker.kafka.topics import partition_count, state_configs_problem
from battery_worker.kafka.worker import Worker
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.processing import InputRecord
from tests.workerkit import (
    create_topics,
    ercot_week,
    feed,
    make_settings,
    read_published,
    reference,
    send_raw,
    trace_of,
)

pytestmark = pytest.mark.broker


async def test_real_prices_give_the_domain_cores_decisions(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()
    for site in ("site-a", "site-b"):
        await feed(settings, ticks, site)
    worker = Worker(settings)
    handled = await worker.run(max_messages=2 * len(ticks), idle_timeout_s=20)
    assert handled == 2 * len(ticks)
    assert worker.stats.rebalances == 0, "the first join revokes nothing (the metric counted it)"

    expected, final = reference(settings, ticks)
    published = await read_published(settings)
    for site in ("site-a", "site-b"):
        assert trace_of(published.actions, site) == expected
        history = sorted((h for h in published.history if h.site_id == site), key=lambda h: h.timestamp)
        assert [h.timestamp for h in history] == [row[0] for row in expected]
    assert len(published.actions) == len(published.statuses) == 2 * len(ticks)
    assert {a.action.value for a in published.actions} == {"charge", "discharge", "hold"}

    status = (await latest_status(settings))["site-a"]
    assert status.available_energy_mwh == final.battery.state_of_charge_mwh
    assert status.ticks_applied == len(ticks)
    assert status.net_value == pytest.approx(final.battery.net_value)
    exported = await site_history(settings, "site-b")
    assert len(exported) == len(ticks)


async def test_a_site_retired_by_a_status_tombstone_is_no_longer_listed(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """delivery.md's "Retiring a site": a tombstone to battery.status. ``status`` kept the site's older
    status (a data engineer's review) until the broker's cleaner ran, which on Tansu is never."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:5]
    for site in ("old-site", "kept-site"):
        await feed(settings, ticks, site)
    await Worker(settings).run(max_messages=2 * len(ticks), idle_timeout_s=20)
    assert set(await latest_status(settings)) == {"old-site", "kept-site"}
    partitions = await partition_count(settings, settings.topics.status)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        partition = home_partition("old-site", partitions)
        await producer.send_and_wait(settings.topics.status, None, key=b"old-site", partition=partition)
    finally:
        await producer.stop()
    assert set(await latest_status(settings)) == {"kept-site"}


async def test_events_carry_schema_version_and_input_derived_ids(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    await feed(settings, ercot_week()[:10], "s1")
    await Worker(settings).run(max_messages=10, idle_timeout_s=20)
    published = await read_published(settings)
    first = published.actions[0]
    assert first.schema_version == 3  # battery.actions v3: with site_plan and emissions
    assert published.statuses[0].schema_version == 3  # battery.status v3: with wear_cost
    assert first.source.topic == settings.topics.prices
    assert first.source.offset == 0
    assert len({a.event_id for a in published.actions}) == 10
    assert not {a.event_id for a in published.actions} & {s.event_id for s in published.statuses}
    prices = settings.topics.prices  # derived from the input's coordinates, so a re-emit has the same id
    actions = published.actions
    assert [a.event_id for a in actions] == [
        event_id("action", prices, 0, n, "s1", a.tick_timestamp.isoformat()) for n, a in enumerate(actions)
    ]


async def test_bad_input_goes_to_the_dlq_with_headers_and_valid_ticks_around_it_are_processed(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    good = ercot_week()[:4]

    def tick(i: int) -> bytes:
        t = good[i]
        return orjson.dumps(
            {"energy_price": t.energy_price, "hash_price": 0, "token_price": 0, "timestamp": t.timestamp}
        )

    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"s", b"not json at all"),
        (b"s", b'{"energy_price": 1.0, "hash_price": 1.0}'),
        (
            b"s",
            b'{"energy_price": "cheap", "hash_price": 1, "token_price": 1, "timestamp": "2023-08-01T00:00"}',
        ),
        (b"s", b'{"energy_price": NaN, "hash_price": 1, "token_price": 1, "timestamp": "2023-08-01T00:00"}'),
        (
            b"s",
            b'{"energy_price": 1e999, "hash_price": 1, "token_price": 1, "timestamp": "2023-08-01T00:00"}',
        ),
        (b"s", b"{" + b" " * 70_000 + b"}"),
        (b"s", None),
    ]
    messages = [(b"s", tick(0)), *bad[:4], (b"s", tick(1)), *bad[4:], (b"s", tick(2)), (b"s", tick(1))]
    # The producer's own headers on the first bad record, one named as a dead letter's own header is.
    producer_headers = [("trace-id", b"abc-123"), ("error", b"the producer's"), ("empty", None)]
    await send_raw(settings, messages, headers=[None, producer_headers])
    seen: list[tuple[InputRecord, str]] = []
    worker = Worker(settings, on_handled=lambda record, handled: seen.append((record, handled.kind)))
    await worker.run(max_messages=len(messages), idle_timeout_s=20)

    kinds = [kind for _, kind in seen]
    assert kinds.count("applied") == 3
    assert kinds.count("rejected") == len(bad)
    assert kinds.count("stale") == 1
    published = await read_published(settings)
    assert [a.tick_timestamp for a in published.actions] == [t.timestamp for t in good[:3]]

    from aiokafka import TopicPartition

    from battery_worker.kafka.clients import make_reader
    from battery_worker.kafka.reading import read_to_end

    reader = make_reader(settings.kafka)
    await reader.start()
    dead = []
    try:
        async for batch in read_to_end(
            reader, [TopicPartition(settings.topics.dlq, p) for p in range(1)], timeout_s=20
        ):
            dead.extend(batch)
    finally:
        await reader.stop()
    assert len(dead) == len(bad)
    headers = dict(dead[0].headers)
    assert headers["source.topic"] == settings.topics.prices.encode()
    assert headers["source.partition"] == b"0"
    assert headers["source.offset"] == b"1"
    assert b"JSON" in (headers["error"] or b"") or b"json" in (headers["error"] or b"")
    assert int(headers["dlq.timestamp_ms"] or b"0") > 0
    assert dead[0].value == b"not json at all"
    # The producer's headers follow the dead letter's, renamed, in order, a null value kept null; the
    # dead letter's own `error` is not shadowed. They were dropped before 2026-12-06 (a tracing id lost).
    assert list(dead[0].headers[-3:]) == [
        ("source.header.trace-id", b"abc-123"),
        ("source.header.error", b"the producer's"),
        ("source.header.empty", None),
    ]
    assert headers["error"] != b"the producer's"
    assert not any(name.startswith("source.header.") for name, _ in dead[1].headers)
    fields = [dict(record.headers)["error.field"] for record in dead]
    assert b"energy_price" in fields
    assert dead[-1].value == b""  # the tombstone, accounted for


async def test_a_state_topic_that_is_not_compacted_is_a_startup_error(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await create_topics(settings, [(settings.topics.state, 3, {})])
    with pytest.raises(TopicMisconfigured, match=r"cleanup\.policy"):
        await Worker(settings).run(idle_timeout_s=1)


async def test_a_state_topic_with_fewer_partitions_than_prices_is_a_startup_error(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await create_topics(settings, [(settings.topics.prices, 2, {})])
    await Worker(settings).run(idle_timeout_s=0.5)  # state created with the prices count: fine
    fewer = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await create_topics(
        fewer, [(fewer.topics.prices, 3, {}), (fewer.topics.state, 2, {"cleanup.policy": "compact"})]
    )
    with pytest.raises(TopicMisconfigured, match=r"has 2 partitions but .* has 3: a site.s state lies in"):
        await Worker(fewer).run(idle_timeout_s=1)
    # More is how it is grown ahead of prices (docs/delivery.md): the extra partitions stay unused. Refused
    # with "recreate the state topic", that would have had an operator delete every site's state.
    more = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await create_topics(
        more, [(more.topics.prices, 2, {}), (more.topics.state, 3, {"cleanup.policy": "compact"})]
    )
    await feed(more, ercot_week()[:5], "s")
    assert await Worker(more).run(max_messages=5, idle_timeout_s=20) == 5
    # Said once, though checked at start and again at the assignment (it was said there each time).
    assert sum("partitions 2 and up stay unused" in r.getMessage() for r in caplog.records) == 1


async def test_a_3_mb_message_is_dead_lettered_truncated_and_the_worker_goes_on(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    from aiokafka import TopicPartition

    from battery_worker.kafka.clients import make_reader
    from battery_worker.kafka.reading import read_to_end

    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    good = ercot_week()[:2]
    body = orjson.dumps(
        {"energy_price": 1.0, "hash_price": 0, "token_price": 0, "timestamp": good[1].timestamp}
    )
    await feed(settings, good[:1], "s")
    await send_raw(settings, [(b"s", b"{" + b" " * 3_000_000 + b"}"), (b"s" * 300, body), (b"s", body)])
    worker = Worker(settings)
    assert await worker.run(max_messages=4, idle_timeout_s=20) == 4
    assert worker.processor.counters.applied == 2
    reader = make_reader(settings.kafka)
    await reader.start()
    try:
        dead = [
            r
            async for batch in read_to_end(reader, [TopicPartition(settings.topics.dlq, 0)], timeout_s=20)
            for r in batch
        ]
    finally:
        await reader.stop()
    assert len(dead) == 2
    assert dict(dead[0].headers)["dlq.truncated_from_bytes"] == b"3000002"
    assert dead[0].value is not None
    assert len(dead[0].value) == 900_000
    assert dict(dead[1].headers)["error.field"] == b"key"


def test_a_state_topic_that_also_deletes_is_refused_unless_it_keeps_for_ever() -> None:
    """'compact,delete' passed the check (a substring match): retention then removed the state of any site
    quiet for 7 days, which started afresh without a word."""
    assert state_configs_problem("s", {"cleanup.policy": "compact"}) is None
    assert state_configs_problem("s", {"cleanup.policy": "compact,delete", "retention.ms": "-1"}) is None
    both = state_configs_problem("s", {"cleanup.policy": "compact,delete"})
    assert both is not None
    assert "retention.ms=604800000" in both
    assert "must be compact" in (state_configs_problem("s", {"cleanup.policy": "delete"}) or "")
    assert "must be compact" in (state_configs_problem("s", {}) or ""), "not reported: the default, delete"


async def test_a_misconfigured_state_topic_is_refused_before_the_other_topics_are_created(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await create_topics(
        settings,
        [(settings.topics.state, 3, {"cleanup.policy": "compact,delete", "retention.ms": "86400000"})],
    )
    with pytest.raises(TopicMisconfigured, match=r"retention\.ms=86400000"):
        await Worker(settings).run(idle_timeout_s=1)
    assert await partition_count(settings, settings.topics.prices) == 0, "created before the refusal"
    assert await partition_count(settings, settings.topics.actions) == 0


async def test_a_compacted_log_topic_is_said_at_start(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A compacted battery.actions keeps only each site's last action: it started without a word."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    topics = settings.topics
    await create_topics(
        settings,
        [
            (topics.actions, 3, {"cleanup.policy": "compact"}),
            (topics.dlq, 3, {"cleanup.policy": "compact,delete"}),
        ],
    )
    await Worker(settings).run(idle_timeout_s=0.5)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"topic {topics.actions} has cleanup.policy=compact:" in line for line in warned)
    assert any(f"topic {topics.dlq} has cleanup.policy=compact,delete:" in line for line in warned)
    assert not any(topics.prices + " has" in line for line in warned), "the worker made it: delete"


async def test_a_status_or_history_topic_that_deletes_and_prices_of_fewer_partitions_are_said_at_start(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An SRE review: status and history made with cleanup.policy=delete and retention.ms=60000, and a
    prices topic a producer had made with the broker's one partition (topics.partitions 3: the group's
    other workers idle), started without a word."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    topics = settings.topics
    deleting = {"cleanup.policy": "delete", "retention.ms": "60000"}
    week = {"cleanup.policy": "delete", "retention.ms": "604800000"}  # said, as Tansu reports no default
    await create_topics(
        settings,
        [
            (topics.prices, 1, week),
            (topics.status, 1, {"cleanup.policy": "compact,delete", "retention.ms": "60000"}),
            (topics.history, 1, deleting),
        ],
    )
    await Worker(settings).run(idle_timeout_s=0.5)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        f"topic {topics.status} has cleanup.policy=compact,delete with retention.ms=60000: a site quiet that "
        "long drops out of battery-worker status; the worker creates it compacted alone (kafka-configs "
        f"--alter --entity-type topics --entity-name {topics.status} --add-config cleanup.policy=compact)"
    ) in warned
    assert (
        f"topic {topics.history} keeps records 60000 ms (retention.ms), less than {topics.prices} "
        "(604800000 ms): the operation log of decisions whose prices are still kept is deleted"
    ) in warned
    assert (
        f"topic {topics.prices} has 1 partition(s), where topics.partitions is 3 (created before the worker, "
        "by a producer and the broker's num.partitions?): at most 1 worker(s) of the group have work; grow "
        "it as docs/delivery.md says, 'Adding partitions'"
    ) in warned
    caplog.clear()
    fresh = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    kept_for_ever = {"cleanup.policy": "delete", "retention.ms": "-1"}  # nothing lost: read longer
    audit_month = {"cleanup.policy": "compact,delete", "retention.ms": str(30 * 86_400_000)}
    await create_topics(
        fresh,
        [
            (fresh.topics.prices, 3, {"cleanup.policy": "delete", "retention.ms": "604800000"}),
            (fresh.topics.status, 3, kept_for_ever),
            (fresh.topics.history, 3, audit_month),  # operations.md's advice: longer than prices
        ],
    )
    await Worker(fresh).run(idle_timeout_s=0.2)
    await Worker(fresh).run(idle_timeout_s=0.2)  # on the topics it made: nothing to say
    assert not [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


async def test_a_start_on_existing_topics_describes_their_configs_in_two_requests(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The state topic's configs, checked before anything is created, were asked for again after, and each
    log topic's in a request of its own: five DescribeConfigs at every start. Now the state topic's and
    the log topics' (prices, actions, dead letters) and the kept ones' (status, history) together."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await Worker(settings).run(idle_timeout_s=0.2)  # creates the topics
    asked: list[list[str]] = []
    describe = AIOKafkaAdminClient.describe_configs

    async def counted(self: AIOKafkaAdminClient, resources: list[Any], *args: Any, **kwargs: Any) -> Any:
        asked.append(sorted(resource.name for resource in resources))
        return await describe(self, resources, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaAdminClient, "describe_configs", counted)
    await Worker(settings).run(idle_timeout_s=0.2)
    topics = settings.topics
    logs_and_kept = [topics.prices, topics.actions, topics.dlq, topics.status, topics.history]
    assert asked == [[topics.state], sorted(logs_and_kept)]


async def test_a_state_topic_of_other_partitions_than_prices_would_get_is_refused_before_creating_it(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """With the state topic there and prices not, prices and four more were created, then refused."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await create_topics(settings, [(settings.topics.state, 2, {"cleanup.policy": "compact"})])
    with pytest.raises(TopicMisconfigured, match=r"would be created with topics\.partitions=3"):
        await Worker(settings).run(idle_timeout_s=1)
    assert await partition_count(settings, settings.topics.prices) == 0


async def test_a_backlog_of_dear_ticks_is_taken_in_batches_the_session_outlasts(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A review run: 2,000 ``site`` policy ticks in one batch held the event loop past the session, and the
    worker rewound and emitted the whole backlog again. Here each tick holds the loop 20 ms: 160 of them in
    one batch hold it 3.2 s, past a 2 s session."""
    settings = make_settings(
        kafka_bootstrap,
        new_topic_name(),
        new_group_id(),
        partitions=1,
        worker={"session_timeout_ms": 2000, "heartbeat_interval_ms": 600},
    )
    ticks = ercot_week()[:160]
    await feed(settings, ticks, "dear")
    worker = Worker(settings, on_handled=lambda _record, _handled: time.sleep(0.02))
    assert await worker.run(max_messages=len(ticks), idle_timeout_s=20) == len(ticks)
    assert (worker.stats.rewinds, worker.stats.commit_failures) == (0, 0)
    assert worker.stats.checkpoints >= 1, "the checkpoint is stored: no stand-still past the session"
    assert worker.stats.batches >= 4, "at most a fifth of the session's worth of ticks a batch"
    assert await Worker(settings).run(idle_timeout_s=3) == 0, "nothing is left to read again"
    published = await read_published(settings)
    assert [a.tick_timestamp for a in published.actions] == [t.timestamp for t in ticks], "each once"


async def test_a_backlog_on_every_partition_is_taken_from_each_in_turn_not_one_partition_first(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """An auditor's run: a backlog's first partition, under the slow site policy, held the worker while the
    sites of the other two got no decision (after 23 s, their lag had not moved). aiokafka hands out one
    partition's whole fetch before the next's."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    sites: dict[int, str] = {}
    for n in range(50):
        sites.setdefault(home_partition(f"site-{n}", 3), f"site-{n}")
    ticks = ercot_week()[:120]
    for site in sites.values():
        await feed(settings, ticks, site)
    order: list[str] = []
    worker = Worker(settings, on_handled=lambda record, _handled: order.append((record.key or b"").decode()))
    assert await worker.run(max_messages=3 * len(ticks), idle_timeout_s=20) == 3 * len(ticks)
    assert set(order[:30]) == set(sites.values()), order[:30]
    for site in sites.values():  # each site's ticks still in order, each once
        assert order.count(site) == len(ticks)
    published = await read_published(settings)
    for site in sites.values():
        assert [a.tick_timestamp for a in published.actions if a.site_id == site] == [
            t.timestamp for t in ticks
        ]


async def test_the_topics_read_whole_are_created_to_roll_a_segment_each_hour(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A soak: the active segment, which Kafka never compacts, held every state record written since the
    topic's creation, and each restore read them all (300 sites: 118,659 records after 11 minutes)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from battery_worker.kafka.clients import make_admin

    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await Worker(settings).run(idle_timeout_s=0.2)  # creates the topics
    admin = make_admin(settings.kafka)
    await admin.start()
    try:
        topics = [settings.topics.state, settings.topics.status, settings.topics.history]
        resources = [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        described = await admin.describe_configs(resources)
    finally:
        await admin.close()
    configs = {
        name: {entry[0]: entry[1] for entry in resource[4]}
        for response in described
        for resource in response.resources
        for name in [resource[3]]
    }
    for topic in topics[:2]:
        assert configs[topic]["segment.ms"] == "3600000", topic
        assert configs[topic]["segment.bytes"] == str(100 * 1024 * 1024), topic
        assert configs[topic]["cleanup.policy"] == "compact", topic
    assert configs[settings.topics.history]["cleanup.policy"] == "compact"


async def test_ticks_compressed_with_every_codec_a_producer_may_choose_are_applied(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A producer review: a price producer with lz4, snappy or zstd stopped every partition of the worker
    (``UnsupportedCodecError``, rewinding every 30 s without end) where aiokafka had not its codec library
    (``cramjam``, a dependency since)."""
    from aiokafka import AIOKafkaProducer

    from battery_worker.kafka.clients import connection_options
    from battery_worker.kafka.tools.feed import publish_ticks

    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:20]
    codecs = ("gzip", "snappy", "lz4", "zstd")
    await feed(settings, ticks[:1], "first")
    for codec in codecs:
        producer = AIOKafkaProducer(**connection_options(settings.kafka), compression_type=codec)
        await producer.start()
        try:
            await publish_ticks(producer, settings.topics.prices, ticks, site_id=f"site-{codec}")
        finally:
            await producer.stop()
    total = 1 + len(codecs) * len(ticks)
    worker = Worker(settings)
    assert await worker.run(max_messages=total, idle_timeout_s=20) == total
    assert worker.processor.counters.rejected == 0
    expected, _ = reference(settings, ticks)
    published = await read_published(settings)
    for codec in codecs:
        assert trace_of(published.actions, f"site-{codec}") == expected, codec


async def test_records_read_again_after_a_rewind_are_counted_and_said_in_the_closing_line(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A producer review summed the closing lines' "applied" over two runs: 80 more than the ticks it
    sent, the ticks applied again after rewinds, which nothing said."""
    from aiokafka.errors import KafkaConnectionError

    from battery_worker.kafka.worker_stats import summary

    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    ticks = ercot_week()[:20]
    await feed(settings, ticks, "s1")
    worker = Worker(settings)
    send_all = Worker._send_all
    failed: list[int] = []

    async def failing_once(self: Worker, outputs: list[Any]) -> None:
        if not failed:
            failed.append(len(outputs))
            raise KafkaConnectionError("a send lost (the test)")
        await send_all(self, outputs)

    monkeypatch.setattr(Worker, "_send_all", failing_once)
    handled = await worker.run(idle_timeout_s=3)
    again = worker.stats.read_again
    assert worker.stats.rewinds == 1
    assert 0 < again <= len(ticks)
    assert handled == len(ticks)  # the batches that went through
    assert worker.processor.counters.total == len(ticks) + again
    assert worker.processor.counters.applied == len(ticks) + again
    line = summary(worker.processor.counters, worker.stats, 1)
    assert f", 1 rewinds ({again} records read again), " in line
    published = await read_published(settings)
    assert len({a.event_id for a in published.actions}) == len(ticks)


async def test_a_codec_this_install_cannot_read_stops_the_worker_naming_the_fix(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upgrade review pulled the version that needs cramjam into an install without it: lz4 ticks made
    every partition rewind without end (4 s, 8 s, 16 s ...), 0 applied, nothing naming the fix."""
    import aiokafka.codec
    from aiokafka import AIOKafkaProducer

    from battery_worker.kafka.clients import connection_options
    from battery_worker.kafka.exceptions import CodecMissing
    from battery_worker.kafka.tools.feed import publish_ticks

    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    await feed(settings, ercot_week()[:1], "first")
    producer = AIOKafkaProducer(**connection_options(settings.kafka), compression_type="lz4")
    await producer.start()
    try:
        await publish_ticks(producer, settings.topics.prices, ercot_week()[1:5], site_id="first")
    finally:
        await producer.stop()
    monkeypatch.setattr(aiokafka.codec, "has_lz4", lambda: False)
    worker = Worker(settings)
    with pytest.raises(CodecMissing) as stopped:
        await asyncio.wait_for(worker.run(idle_timeout_s=10), 60)
    assert "compressed with a codec this install cannot read" in str(stopped.value)
    assert "pip install -e ." in str(stopped.value)
    assert worker.stats.rewinds == 0
