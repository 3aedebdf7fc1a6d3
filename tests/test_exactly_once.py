"""Exactly-once (``worker.processing_guarantee``): proof with real brokers and real processes.

A ``read_committed`` reader of every output topic sees each event once, after kill -9 at random points
(some deliberately inside an open transaction) and after a zombie worker comes back from a pause longer
than its session; a ``read_uncommitted`` reader sees the aborted output, so the transactions are real.
Kafka transactions need Apache Kafka: on the embedded broker those tests skip, and the refusal is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from battery_worker.brokers.embedded import EmbeddedBroker
from battery_worker.cli.common import command_settings
from battery_worker.cli.main import build_parser
from battery_worker.errors import InvalidConfig
from battery_worker.kafka.clients import connection_options, make_reader
from battery_worker.kafka.tools.feed import tick_payload
from battery_worker.kafka.topics import prepare_topics
from battery_worker.kafka.worker import Worker
from battery_worker.ops.metrics import WorkerCollector, build_registry
from battery_worker.settings import Settings, load_settings
from battery_worker.ticks import PriceTick
from tests.faultkit import (
    all_applied,
    assignment_report,
    assignments,
    emitted_at_least,
    interleaved,
    log_tail,
    paced_feed,
    paced_send,
    raw_values,
    read_records,
    rng,
    shared_out,
    site_streams,
    stop,
    verify_against_uninterrupted,
)
from tests.waiting import wait_until_async
from tests.workerkit import (
    cli,
    ercot_week,
    feed,
    make_settings,
    session_ms,
    settings_env,
    start_worker_process,
)

GUARANTEE_ENV = "BATTERY_WORKER_WORKER__PROCESSING_GUARANTEE"
Message = tuple[bytes | None, bytes | None]


def exactly_once_settings(bootstrap: str, prefix: str, group: str, **worker: object) -> Settings:
    session = session_ms()
    return make_settings(
        bootstrap,
        prefix,
        group,
        worker={
            "processing_guarantee": "exactly-once",
            "session_timeout_ms": session,
            "heartbeat_interval_ms": 500,
            "transaction_timeout_ms": max(20_000, session + 1000),
            **worker,
        },
    )


def with_dead_letters(items: Sequence[tuple[str, PriceTick]], count: int) -> tuple[list[Message], set[int]]:
    """The keyed ticks with ``count`` invalid records spread among them (each must go to the DLQ once).

    Returns the messages and the indexes of the invalid ones.
    """
    sample = orjson.loads(tick_payload(items[0][1]))
    invalid: list[bytes] = [
        b"not json at all",
        b"",
        orjson.dumps({**sample, "energy_price": "cheap"}),
        b'{"energy_price": NaN, "hash_price": 0, "token_price": 0, "timestamp": "2023-01-01T00:00:00"}',
        orjson.dumps({k: v for k, v in sample.items() if k != "timestamp"}),
        orjson.dumps({**sample, "site_id": "someone-else"}),
    ]
    messages: list[Message] = []
    bad: set[int] = set()
    every = len(items) // (count + 1)
    for index, (site, tick) in enumerate(items):
        if index and index % every == 0 and len(bad) < count:
            bad.add(len(messages))
            messages.append((site.encode(), invalid[len(bad) % len(invalid)]))
        messages.append((site.encode(), tick_payload(tick)))
    return messages, bad


class TransactionProbe:
    """Is a transaction open in some output partition? Two readers of the same partitions: the end a
    ``read_committed`` reader lists is the last stable offset, a ``read_uncommitted`` one's the high
    watermark; the first is behind the second while a transaction that wrote there is open."""

    def __init__(self, settings: Settings) -> None:
        self._committed = make_reader(settings.kafka)
        self._everything = make_reader(settings.kafka, committed_only=False)

    async def __aenter__(self) -> TransactionProbe:
        await self._committed.start()
        await self._everything.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._committed.stop()
        await self._everything.stop()

    async def open_in(self, partitions: Sequence[TopicPartition]) -> list[TopicPartition]:
        """The partitions with a transaction open now and still open 0.2 s later: with its worker stopped,
        a transaction whose commit was already asked for ends within milliseconds; an open one stays."""
        stable = await self._committed.end_offsets(list(partitions))
        high = await self._everything.end_offsets(list(partitions))
        if all(stable[tp] >= high[tp] for tp in partitions):
            return []
        await asyncio.sleep(0.2)
        stable = await self._committed.end_offsets(list(partitions))
        return [tp for tp in partitions if stable[tp] < high[tp]]


async def output_partitions(settings: Settings, names: Sequence[str] | None = None) -> list[TopicPartition]:
    topics = settings.topics
    counts = await prepare_topics(settings)
    names = names or (topics.actions, topics.status, topics.history, topics.state, topics.dlq)
    return [TopicPartition(name, p) for name in names for p in range(counts[name])]


async def stop_mid_transaction(
    process: subprocess.Popen[bytes],
    probe: TransactionProbe,
    partitions: Sequence[TopicPartition],
    chance: Callable[[], float],
    tries: int = 40,
) -> bool:
    """SIGSTOP the worker until one of ``partitions`` has an open transaction; True if one has (the worker
    is left stopped either way; the caller kills or continues it)."""
    assert process.pid is not None
    for _ in range(tries):
        os.kill(process.pid, signal.SIGSTOP)
        if await probe.open_in(partitions):
            return True
        os.kill(process.pid, signal.SIGCONT)
        await asyncio.sleep(0.005 + 0.05 * chance())
    os.kill(process.pid, signal.SIGSTOP)
    return False


def assigned_anew(log: Path, before: int) -> Callable[[], Awaitable[bool]]:
    """True once the workers logging to ``log`` logged more than ``before`` assignments."""

    async def check() -> bool:
        return len(assignments(log)) > before

    return check


async def dead_letter_sources(settings: Settings) -> list[tuple[int, int]]:
    """The (partition, offset) of the input record behind each dead letter a read_committed reader sees."""
    sources = []
    for record in await read_records(settings, settings.topics.dlq):
        headers = {name: value.decode() for name, value in record.headers}
        sources.append((int(headers["source.partition"]), int(headers["source.offset"])))
    return sources


async def uncommitted_view(settings: Settings) -> tuple[int, int]:
    """(records a read_uncommitted reader sees beyond a read_committed one, in every output topic;
    event ids it sees more than once in actions, status and history)."""
    topics = settings.topics
    aborted = duplicated = 0
    for topic in (topics.actions, topics.status, topics.history, topics.state, topics.dlq):
        everything = await read_records(settings, topic, committed_only=False)
        committed = await read_records(settings, topic)
        aborted += len(everything) - len(committed)
        if topic in (topics.actions, topics.status, topics.history):
            ids = Counter(orjson.loads(r.value)["event_id"] for r in everything if r.value is not None)
            duplicated += sum(n - 1 for n in ids.values() if n > 1)
    return aborted, duplicated


# --- kill -9, some inside an open transaction --------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.usefixtures("transactions")
async def test_kill_9_at_20_points_leaves_each_event_committed_exactly_once(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    settings = exactly_once_settings(kafka_bootstrap, new_topic_name(), new_group_id(), max_batch_records=40)
    streams = site_streams(per_site=300)
    messages, bad = with_dead_letters(interleaved(streams), 12)
    log = tmp_path / "workers.log"
    feeder = asyncio.create_task(paced_send(settings, messages, rate_per_s=100))
    chance = rng(20261202)
    kills = inside = 0
    try:
        async with TransactionProbe(settings) as probe:
            partitions = await output_partitions(settings)
            for round_ in range(20):
                before = len(assignments(log))
                worker = start_worker_process(settings, log)
                if round_ % 2 == 0:  # anywhere: starting, joining, restoring, processing
                    await asyncio.sleep(chance.uniform(1.0, 4.0))
                else:  # once it processes, stopped until an output partition has a transaction open
                    await wait_until_async(
                        assigned_anew(log, before),
                        60,
                        "the worker to be assigned",
                        detail=lambda: log_tail(log),
                    )
                    await asyncio.sleep(chance.uniform(0.3, 1.5))
                    inside += await stop_mid_transaction(worker, probe, partitions, chance.random)
                assert stop(worker, signal.SIGKILL) == -signal.SIGKILL
                kills += 1
        landed = await feeder
        before = len(assignments(log))
        final = start_worker_process(settings, log)
        # Assigned first: where the killed workers had committed every tick, all_applied held at once and
        # the SIGTERM came while the last one was still starting Python (a run saw exit -15).
        await wait_until_async(assigned_anew(log, before), 60, "the last worker to be assigned")
        await wait_until_async(all_applied(settings, streams), 180, "the last worker to apply every tick")
        assert stop(final, signal.SIGTERM) == 0, log_tail(log)
    finally:
        feeder.cancel()
    assert "Traceback" not in log.read_text(), log_tail(log)
    verdict = await verify_against_uninterrupted(settings, streams)
    assert verdict.reemitted == 0, f"{verdict.reemitted} events committed more than once"
    dead_letters = await dead_letter_sources(settings)
    assert sorted(dead_letters) == sorted(landed[i] for i in bad), "each invalid record: one dead letter"
    aborted, seen_twice = await uncommitted_view(settings)
    print(
        f"\nexactly-once kill -9 x{kills} ({inside} inside an open transaction): {verdict.events} events "
        f"and {len(dead_letters)} dead letters committed once each; read_committed duplicates "
        f"{verdict.reemitted}; read_uncommitted sees {aborted} aborted records, {seen_twice} event ids twice"
    )
    assert inside >= 1, "no kill landed inside an open transaction"
    assert aborted > 0, "a read_uncommitted reader sees the killed workers' aborted output"
    assert seen_twice > 0, "the aborted events were emitted again, committed this time"


# --- a zombie: paused past its session, its partitions moved, then woken up -------------------------------


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.usefixtures("transactions")
async def test_a_zombie_worker_woken_after_its_partitions_moved_commits_nothing_for_them(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    # 6 s, not 2 s: an exactly-once assignment (an InitProducerId per partition, then a restore) takes up to
    # 2 s on a loaded machine, without heartbeats: a 2 s session then rebalances the three workers in a loop.
    settings = exactly_once_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), max_batch_records=40, session_timeout_ms=6000
    )
    streams = site_streams(per_site=300)
    partitions = settings.topics.partitions
    logs = [tmp_path / f"worker-{name}.log" for name in ("zombie", "second", "third")]
    report = assignment_report(logs)
    feeder = asyncio.create_task(paced_feed(settings, interleaved(streams), rate_per_s=150))
    workers = [start_worker_process(settings, log) for log in logs]
    zombie = workers[0]
    try:
        await wait_until_async(
            shared_out(logs, partitions), 60, "three workers to hold a partition each", detail=report
        )
        await wait_until_async(emitted_at_least(settings, 300), 60, "300 actions from the three workers")
        held = assignments(logs[0])[-1]
        seen = {log: len(assignments(log)) for log in logs}
        async with TransactionProbe(settings) as probe:
            topics = settings.topics
            names = (topics.actions, topics.status, topics.state)
            its_own = [tp for tp in await output_partitions(settings, names) if tp.partition in held]
            inside = await stop_mid_transaction(zombie, probe, its_own, rng(7).random)
        paused_at = time.monotonic()
        await wait_until_async(
            shared_out(logs[1:], partitions, seen),
            60,
            "the two live workers to take over the zombie's partitions",
            detail=report,
        )
        emitted = len(await raw_values(settings, settings.topics.actions))
        await wait_until_async(
            emitted_at_least(settings, emitted + 200), 60, "200 more actions while the zombie sleeps"
        )
        paused_s = time.monotonic() - paused_at
        assert zombie.pid is not None
        seen = {log: len(assignments(log)) for log in logs}
        os.kill(zombie.pid, signal.SIGCONT)
        await wait_until_async(
            shared_out(logs, partitions, {logs[0]: seen[logs[0]]}),
            60,
            "the zombie to rejoin and hold a partition again",
            detail=report,
        )
        assert not feeder.done(), "the zombie must rejoin while the stream flows"
        await feeder
        await wait_until_async(all_applied(settings, streams), 180, "the three workers to apply every tick")
        for worker, log in zip(workers, logs, strict=True):
            assert stop(worker, signal.SIGTERM) == 0, log_tail(log)
    finally:
        feeder.cancel()
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.kill()
    zombie_log = logs[0].read_text()
    fenced = zombie_log.count("PartitionFenced")  # the worker's warning when a commit finds it fenced
    gave_up = zombie_log.count("fenced: rejoining the group")
    verdict = await verify_against_uninterrupted(settings, streams)
    aborted, seen_twice = await uncommitted_view(settings)
    print(
        f"\nzombie: paused {paused_s:.1f} s holding {sorted(held)} ({'inside' if inside else 'outside'} an "
        f"open transaction), fenced {fenced}x on waking ({gave_up} partition give-ups logged); "
        f"{verdict.events} events committed once each, read_committed duplicates {verdict.reemitted}; "
        f"read_uncommitted sees {aborted} aborted records, {seen_twice} event ids twice"
    )
    assert verdict.reemitted == 0, f"{verdict.reemitted} events committed more than once"
    # What this test is for, not left to chance: a pause outside a transaction proves no fencing.
    assert inside, "no pause of the zombie landed inside an open transaction (40 tries)"
    assert fenced >= 1, log_tail(logs[0])  # its open transaction, aborted by the new owner, could not commit
    assert aborted > 0


# --- in process: transactions counted, and the commands read what they committed ------------------------


@pytest.mark.broker
@pytest.mark.usefixtures("transactions")
async def test_a_worker_in_exactly_once_commits_transactions_that_status_and_history_read(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    # make_settings' 6 s session, not the fault tests' 2 s: aiokafka sends no heartbeat during the
    # assignment callback, which here starts a producer per partition and restores (up to 2.1 s on a fresh
    # group), and the rebalance a 2 s session's expiry brings can land in the worker's closing phase.
    settings = make_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), worker={"processing_guarantee": "exactly-once"}
    )
    week = ercot_week()[:96]
    for site in ("alpha", "beta"):
        await feed(settings, week, site)
    worker = Worker(settings)
    assert await worker.run(max_messages=2 * len(week), idle_timeout_s=20) == 2 * len(week)
    outcomes = dict(worker.stats.transactions)
    assert outcomes["committed"] > 0, outcomes
    assert (outcomes["aborted"], outcomes["fenced"]) == (0, 0), outcomes
    metrics = {
        sample.labels["outcome"]: sample.value
        for family in build_registry(WorkerCollector(worker)).collect()
        if family.name == "battery_worker_transactions"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert metrics["committed"] == outcomes["committed"]

    env = settings_env(settings)
    status = cli("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert {site: s["ticks_applied"] for site, s in json.loads(status.stdout).items()} == {
        "alpha": len(week),
        "beta": len(week),
    }
    out = tmp_path / "beta.json"
    exported = cli("history", "export", "--site", "beta", "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    history = json.loads(out.read_text())
    assert [datetime.fromisoformat(h["timestamp"]) for h in history] == [t.timestamp for t in week]
    print(f"\nexactly-once in process: {2 * len(week)} ticks, transactions {outcomes}")


@pytest.mark.broker
@pytest.mark.usefixtures("transactions")
async def test_ticks_of_an_aborted_transaction_upstream_are_never_applied(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A price producer writing in transactions: the worker read ``prices`` uncommitted and applied a tick
    its producer aborted, which the replay (reading committed records) then failed on (a review run)."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    await prepare_topics(settings)
    week = ercot_week()[:12]
    aborted = week[5].model_copy(update={"energy_price": 999.0})
    producer = AIOKafkaProducer(**connection_options(settings.kafka), transactional_id=new_group_id())
    await producer.start()
    try:
        for batch, commit in ((week[:5], True), ([aborted], False), (week[6:], True)):
            await producer.begin_transaction()
            for tick in batch:
                await producer.send_and_wait(settings.topics.prices, tick_payload(tick), key=b"tx")
            await (producer.commit_transaction() if commit else producer.abort_transaction())
    finally:
        await producer.stop()
    worker = Worker(settings)
    assert await worker.run(max_messages=11, idle_timeout_s=10) == 11
    actions = [orjson.loads(value) for value in await raw_values(settings, settings.topics.actions)]
    assert [a["tick_timestamp"] for a in actions] == [
        t.timestamp.isoformat() for t in week if t is not week[5]
    ]
    assert 999.0 not in [a["energy_price"] for a in actions]
    audit = cli("replay", env=settings_env(settings))
    assert audit.returncode == 0, audit.stdout + audit.stderr


@pytest.mark.broker
@pytest.mark.usefixtures("transactions")
async def test_records_a_poll_returns_after_a_rebalance_sought_are_handled_not_dropped(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """Exactly-once seeks to the committed offsets on every assignment. A poll that was already waiting
    returns records read from there: they are the worker's to handle. (They were dropped once, as if fetched
    before the seek, and the consumer had moved past them: ticks lost under rebalance churn.)"""
    settings = make_settings(
        kafka_bootstrap,
        new_topic_name(),
        new_group_id(),
        worker={"processing_guarantee": "exactly-once", "poll_timeout_ms": 60_000},  # the longest allowed
    )
    week = ercot_week()[:48]
    await feed(settings, week[:24], "alpha")
    kinds: list[str] = []
    worker = Worker(settings, on_handled=lambda record, handled: kinds.append(handled.kind))
    running = asyncio.create_task(worker.run(max_messages=len(week)))
    everything = {TopicPartition(settings.topics.prices, p) for p in range(settings.topics.partitions)}

    def settled(rebalances: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            owned = worker.assignment.partitions == everything
            return worker.stats.rebalances >= rebalances and worker.ready and owned

        return check

    try:
        await wait_until_async(settled(0), 60, "the worker to own every partition")
        await wait_until_async(_at_least(kinds, 24), 60, "the first 24 ticks", detail=lambda: str(kinds))
        before = worker.stats.rebalances
        # Another member joins and leaves: two rebalances, two seeks, all while the worker's poll waits.
        intruder = AIOKafkaConsumer(
            **connection_options(settings.kafka), group_id=settings.worker.group_id, enable_auto_commit=False
        )
        intruder.subscribe([settings.topics.prices])
        await intruder.start()
        try:
            await wait_until_async(_joined(intruder), 60, "the other member to be assigned partitions")
        finally:
            await intruder.stop()
        await wait_until_async(settled(before + 2), 60, "the worker to own every partition again")
        await feed(settings, week[24:], "alpha")
        await wait_until_async(
            _at_least(kinds, len(week)), 60, "every tick handled after the seeks", detail=lambda: f"{kinds}"
        )
        assert await asyncio.wait_for(running, 30) == len(week)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert kinds == ["applied"] * len(week)


def _at_least(items: Sequence[object], count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(items) >= count

    return check


def _joined(consumer: AIOKafkaConsumer) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        await consumer.getmany(timeout_ms=200)
        return bool(consumer.assignment())

    return check


# --- the embedded broker: refused with one line ------------------------------------------------------------


@pytest.mark.broker
def test_exactly_once_on_the_embedded_broker_exits_1_with_one_clear_line(
    embedded_broker: EmbeddedBroker,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATTERY_WORKER_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "battery_worker.cli",
            "run",
            "--bootstrap-servers",
            embedded_broker.bootstrap_servers,
            "--processing-guarantee",
            "exactly-once",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("battery-worker: error: exactly-once needs Kafka transactions"), last
    assert embedded_broker.bootstrap_servers in last
    assert "use Apache Kafka, or worker.processing_guarantee=at-least-once" in last
    assert "Traceback" not in result.stderr
    assert took < 30, f"refused after {took:.1f} s"


# --- settings ----------------------------------------------------------------------------------------------


def test_exactly_once_is_chosen_by_environment_or_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GUARANTEE_ENV, raising=False)
    assert load_settings().worker.processing_guarantee == "at-least-once"
    assert not load_settings().worker.exactly_once
    monkeypatch.setenv(GUARANTEE_ENV, "exactly-once")
    assert load_settings().worker.exactly_once
    flagged = command_settings(build_parser().parse_args(["run", "--processing-guarantee", "at-least-once"]))
    assert not flagged.worker.exactly_once, "the flag beats the environment"
    monkeypatch.delenv(GUARANTEE_ENV)
    flagged = command_settings(build_parser().parse_args(["run", "--processing-guarantee", "exactly-once"]))
    assert flagged.worker.exactly_once
    assert flagged.worker.transaction_timeout_ms == 60_000


def test_an_unknown_guarantee_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(GUARANTEE_ENV, "exactly-twice")
    with pytest.raises(InvalidConfig) as caught:
        load_settings()
    assert caught.value.field == "worker.processing_guarantee"
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "--processing-guarantee", "exactly-twice"])
    assert exited.value.code == 2
    assert "invalid choice: 'exactly-twice'" in capsys.readouterr().err


@pytest.mark.parametrize("transaction_timeout_ms", [5_000, 10_000])
def test_a_transaction_timeout_not_above_the_session_is_refused_in_exactly_once(
    transaction_timeout_ms: int,
) -> None:
    worker = {"session_timeout_ms": 10_000, "transaction_timeout_ms": transaction_timeout_ms}
    with pytest.raises(InvalidConfig) as caught:
        load_settings(None, {"worker": {**worker, "processing_guarantee": "exactly-once"}})
    assert caught.value.field == "worker"
    assert (
        f"worker.transaction_timeout_ms ({transaction_timeout_ms}) must exceed "
        "worker.session_timeout_ms (10000) with exactly-once"
    ) in str(caught.value)
    assert not load_settings(None, {"worker": worker}).worker.exactly_once, "at-least-once has no such rule"
    accepted = {**worker, "transaction_timeout_ms": 10_001, "processing_guarantee": "exactly-once"}
    assert load_settings(None, {"worker": accepted}).worker.exactly_once


def test_the_run_command_refuses_that_timeout_with_one_line_before_connecting() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATTERY_WORKER_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env[GUARANTEE_ENV] = "exactly-once"
    env["BATTERY_WORKER_WORKER__TRANSACTION_TIMEOUT_MS"] = "5000"
    result = cli("run", "--bootstrap-servers", "127.0.0.1:1", env=env, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("battery-worker: error: worker=")
    assert "worker.transaction_timeout_ms (5000) must exceed worker.session_timeout_ms (10000)" in lines[0]
