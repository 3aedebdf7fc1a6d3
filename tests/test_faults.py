"""Proof under faults (real broker, real processes): crashes, rebalances, a stalled broker, hostile input.

Marked ``slow``; CI runs them too. Each ends with the audit replay reporting no divergence.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.kafka.worker import Worker
from battery_worker.pipeline.processing import Handled, InputRecord
from battery_worker.settings import Settings, load_settings
from battery_worker.ticks import PriceTick
from tests.conftest import PrivateBroker
from tests.faultkit import (
    SITES,
    all_applied,
    assignment_report,
    assignments,
    emitted_at_least,
    interleaved,
    log_tail,
    paced_feed,
    raw_values,
    rng,
    shared_out,
    site_streams,
    stop,
    verify_against_uninterrupted,
)
from tests.waiting import wait_until_async
from tests.workerkit import feed, make_settings, reference, send_raw, start_worker_process

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def fault_settings(bootstrap: str, prefix: str, group: str, **worker: object) -> Settings:
    return make_settings(
        bootstrap,
        prefix,
        group,
        worker={"heartbeat_interval_ms": 500, **worker},
    )


async def test_kill_9_at_20_random_points_gives_the_uninterrupted_results(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    settings = fault_settings(kafka_bootstrap, new_topic_name(), new_group_id(), max_batch_records=40)
    streams = site_streams()
    assert sum(len(t) for t in streams.values()) >= 10_000
    log = tmp_path / "workers.log"
    feeder = asyncio.create_task(paced_feed(settings, interleaved(streams), rate_per_s=150))
    chance = rng(20261125)
    kills = 0
    try:
        for _ in range(20):
            worker = start_worker_process(settings, log)
            await asyncio.sleep(chance.uniform(1.0, 5.0))
            assert stop(worker, signal.SIGKILL) == -signal.SIGKILL
            kills += 1
        await feeder
        final = start_worker_process(settings, log)
        await wait_until_async(all_applied(settings, streams), 180, "the last worker to apply every tick")
        assert stop(final, signal.SIGTERM) == 0, log_tail(log)
    finally:
        feeder.cancel()
    verdict = await verify_against_uninterrupted(settings, streams)
    print(f"\nkill -9 x{kills}: {verdict.events} events, {verdict.reemitted} re-emitted byte-identical")

    site = SITES[3]
    changed = load_settings(
        None,
        {
            **settings.model_dump(mode="python", exclude={"policy"}),
            "policy": {"name": "threshold", "params": {"charge_below": 15.0, "discharge_above": 100.0}},
        },
    )
    what_if = await replay(changed, ReplayOptions(site=site))
    recorded, _ = reference(settings, streams[site])
    recomputed, _ = reference(changed, streams[site])
    first = next(i for i, pair in enumerate(zip(recorded, recomputed, strict=True)) if pair[0] != pair[1])
    reported = what_if.report.sites[site].first
    assert reported is not None
    assert reported.tick_timestamp == recorded[first][0].isoformat()
    assert reported.recorded is not None
    assert reported.recorded["action"] == recorded[first][1]


async def test_three_workers_joining_leaving_and_dying_give_the_single_worker_results(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    settings = fault_settings(kafka_bootstrap, new_topic_name(), new_group_id(), max_batch_records=40)
    streams = site_streams(per_site=300)
    partitions = settings.topics.partitions
    logs = [tmp_path / f"worker-{name}.log" for name in ("first", "second", "third")]
    report = assignment_report(logs)
    feeder = asyncio.create_task(paced_feed(settings, interleaved(streams), rate_per_s=200))
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(start_worker_process(settings, logs[0]))
        await wait_until_async(
            shared_out(logs[:1], partitions), 60, "the first worker to hold every partition", detail=report
        )
        await wait_until_async(emitted_at_least(settings, 200), 60, "the first worker to emit 200 actions")
        workers += [start_worker_process(settings, logs[1]), start_worker_process(settings, logs[2])]
        await wait_until_async(
            shared_out(logs, partitions, {logs[0]: 1}),
            60,
            "three workers to hold a partition each",
            detail=report,
        )
        emitted = len(await raw_values(settings, settings.topics.actions))
        await wait_until_async(
            emitted_at_least(settings, emitted + 200), 60, "200 more actions from the three workers"
        )
        seen = {log: len(assignments(log)) for log in logs}
        first, second, third = workers
        assert stop(second, signal.SIGTERM) == 0, log_tail(logs[1])
        await wait_until_async(
            shared_out([logs[0], logs[2]], partitions, seen),
            60,
            "the two workers left to take over the leaver's partition",
            detail=report,
        )
        assert stop(third, signal.SIGKILL) == -signal.SIGKILL
        await feeder
        await wait_until_async(
            all_applied(settings, streams), 180, "the remaining worker to apply every tick"
        )
        assert stop(first, signal.SIGTERM) == 0, log_tail(logs[0])
    finally:
        feeder.cancel()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    text = "".join(log.read_text() for log in logs)
    assert text.count("restored") >= 3, "each assignment restores before processing"
    verdict = await verify_against_uninterrupted(settings, streams)
    print(f"\nrebalances: {verdict.events} events, {verdict.reemitted} re-emitted byte-identical")


@pytest.mark.parametrize(
    ("new_owner", "interval_ms"),
    [
        ("keeps running", 600_000),  # its checkpoint pending: stored on revocation, it was
        ("has stopped", 600_000),  # the group empty: its commit, without a generation, was taken too
        ("keeps running", 10_000),  # its checkpoint due on waking, before aiokafka knows (a review run)
    ],
)
async def test_a_worker_paused_past_its_session_leaves_the_state_to_the_new_owner(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    tmp_path: Path,
    new_owner: str,
    interval_ms: int,
) -> None:
    """At-least-once. A worker SIGSTOPped past its session with a checkpoint pending, then SIGCONTed:
    aiokafka calls on_partitions_revoked as for any rebalance, and the worker stored its old checkpoint
    after the new owner's newer state; the partition's next owner restored that, behind the committed
    offsets, and the site had applied 11 ticks of 21. With the group empty, its commit (made without a
    generation, which the broker takes from an empty group) also moved the offsets back (a review run)."""
    prefix, group = new_topic_name(), new_group_id()
    worker = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}  # a session longer than a restore
    paused_settings = make_settings(
        kafka_bootstrap, prefix, group, partitions=1, worker={**worker, "commit_interval_ms": interval_ms}
    )
    settings = make_settings(kafka_bootstrap, prefix, group, partitions=1, worker=worker)
    x = "site-00"
    streams = site_streams(sites=(x,), per_site=21)
    backlog = site_streams(sites=tuple(f"backlog-{i:03d}" for i in range(100)), per_site=60)
    logs = [tmp_path / "paused.log", tmp_path / "new-owner.log"]
    workers = [start_worker_process(paused_settings, logs[0])]
    try:
        await feed(settings, streams[x][:10], x)
        await wait_until_async(_applied(settings, x, 10), 60, "the first worker to apply 10 ticks")
        workers[0].send_signal(signal.SIGSTOP)  # its checkpoint of those 10 is pending
        await paced_feed(settings, interleaved(backlog), rate_per_s=100_000)
        await feed(settings, streams[x][10:20], x)
        workers.append(start_worker_process(settings, logs[1]))
        await wait_until_async(_stored(settings, x, 20), 120, "the new owner to store 20 ticks of the site")
        if new_owner == "has stopped":
            assert stop(workers[1], signal.SIGTERM) == 0, log_tail(logs[1])
        workers[0].send_signal(signal.SIGCONT)
        await wait_until_async(
            _logged(logs[0], "revoked [0]"),
            60,
            "the paused worker's revocation",
            detail=lambda: log_tail(logs[0]),
        )
        await feed(settings, streams[x][20:], x)
        await wait_until_async(all_applied(settings, streams), 60, "the last tick applied")
        for index, process in enumerate(workers):
            if process.poll() is None:
                assert stop(process, signal.SIGTERM) == 0, log_tail(logs[index])
    finally:
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()
    stored = [json.loads(value) for value in await raw_values(settings, settings.topics.state)]
    offsets = [record["source"]["offset"] for record in stored if record["site_id"] == x]
    assert offsets == sorted(offsets), f"an older state of {x} stored after a newer one: {offsets}"
    last = [record for record in stored if record["site_id"] == x][-1]
    assert last["ticks_applied"] == 21, last


def _logged(log: Path, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in log_tail(log)

    return check


def _applied(settings: Settings, site: str, ticks: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        actions = [orjson.loads(v) for v in await raw_values(settings, settings.topics.actions)]
        return len({a["event_id"] for a in actions if a["site_id"] == site}) >= ticks

    return check


def _stored(settings: Settings, site: str, ticks: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        records = [json.loads(value) for value in await raw_values(settings, settings.topics.state)]
        return any(r["site_id"] == site and r["ticks_applied"] >= ticks for r in records)

    return check


async def test_a_broker_stalled_for_30_s_is_survived_without_a_restart(
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    tmp_path: Path,
    private_broker: PrivateBroker,
) -> None:
    """The broker process (Tansu, or the Apache Kafka JVM) SIGSTOPped for 30 s mid-stream."""
    broker = private_broker  # its own, to SIGSTOP (an embedded one beside an external cluster)
    settings = fault_settings(
        broker.bootstrap_servers, new_topic_name(), new_group_id(), max_batch_records=20
    )
    streams = site_streams(SITES[:6], per_site=300)
    log = tmp_path / "worker.log"
    feeder = asyncio.create_task(paced_feed(settings, interleaved(streams), rate_per_s=60))
    worker = start_worker_process(settings, log)
    try:
        await wait_until_async(
            emitted_at_least(settings, 300), 60, "300 actions before the stall", detail=lambda: log_tail(log)
        )
        assert not feeder.done(), "the stall must land mid-stream"
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        stalled_at = time.monotonic()
        await asyncio.sleep(30)
        os.kill(broker.pid, signal.SIGCONT)
        assert worker.poll() is None, "the worker must survive the stall"
        await feeder
        await wait_until_async(all_applied(settings, streams), 180, "the worker to catch up after the stall")
        assert worker.poll() is None, "and it was never restarted"
        assert stop(worker, signal.SIGTERM) == 0, log_tail(log)
    finally:
        feeder.cancel()
        if worker.poll() is None:
            worker.kill()
    print(f"\nstall: {time.monotonic() - stalled_at:.0f} s from SIGSTOP to done")
    verdict = await verify_against_uninterrupted(settings, streams)
    print(f"stall: {verdict.events} events, {verdict.reemitted} re-emitted byte-identical")


Message = tuple[bytes | None, bytes | None]


def fuzzed_stream(
    seed: int, sites: tuple[str, ...], per_site: int, garbage: int
) -> tuple[list[Message], list[str], dict[str, list[PriceTick]]]:
    """Valid ticks (a fifth with unknown fields) interleaved with garbage, duplicates and late ticks.

    Returns the messages, the outcome each must have (applied, stale or rejected), and the clean streams.
    """
    chance = rng(seed)
    streams = site_streams(sites, per_site)
    valid = interleaved(streams)
    sent: list[Message] = []
    expected: list[str] = []
    history: list[Message] = []
    started: list[str] = []
    positions = dict.fromkeys(sites, 0)

    def body(site: str, index: int, **extra: object) -> dict[str, object]:
        tick = streams[site][index]
        return {
            "energy_price": tick.energy_price,
            "hash_price": 0.0,
            "token_price": 0.0,
            "timestamp": tick.timestamp.isoformat(),
            **extra,
        }

    def add(message: Message, outcome: str) -> None:
        sent.append(message)
        expected.append(outcome)

    per_valid, budget = garbage / len(valid), 0.0
    for site, _tick in valid:
        index = positions[site]
        positions[site] += 1
        extra = {"monitor": "mara", "seq": chance.randint(0, 10**6)} if chance.random() < 0.2 else {}
        message = (site.encode(), orjson.dumps(body(site, index, **extra)))
        add(message, "applied")
        history.append(message)
        if site not in started:
            started.append(site)
        budget += per_valid
        while budget >= 1:
            budget -= 1
            kind = chance.randrange(12)
            target = chance.choice(started)
            key = target.encode()
            sample = body(target, 0)
            if kind == 0:
                add((key, b"\x00" + chance.randbytes(chance.randint(0, 300))), "rejected")
            elif kind == 1:
                text = orjson.dumps(sample)
                add((key, text[: chance.randint(0, len(text) - 1)]), "rejected")
            elif kind == 2:
                wrong: object = chance.choice(["x", None, [], {}, True])
                add((key, orjson.dumps({**sample, "energy_price": wrong})), "rejected")
            elif kind == 3:
                literal = chance.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400"])
                prefix = b'{"energy_price": ' + literal
                add(
                    (key, prefix + b', "hash_price": 1, "token_price": 1, "timestamp": "2023-01-01"}'),
                    "rejected",
                )
            elif kind == 4:
                huge = chance.choice([1e300, -1e200, 10**30])
                add((key, json.dumps({**sample, "hash_price": huge}).encode()), "rejected")
            elif kind == 5:
                add((key, orjson.dumps({**sample, "pad": "x" * chance.randint(70_000, 200_000)})), "rejected")
            elif kind == 6:
                add((key, chance.choice([b"[]", b'"tick"', b"3", b"null", b"{}", b"", None])), "rejected")
            elif kind == 7:
                dropped = chance.choice(list(sample))
                add((key, orjson.dumps({k: v for k, v in sample.items() if k != dropped})), "rejected")
            elif kind == 8:
                add((b"\xff\xfe", orjson.dumps(sample)), "rejected")
            elif kind == 9:
                add((key, orjson.dumps({**sample, "site_id": "someone-else"})), "rejected")
            elif kind == 10:
                add(chance.choice(history), "stale")
            else:
                add((key, orjson.dumps({**sample, "timestamp": "2022-06-01T00:00:00"})), "stale")
    return sent, expected, streams


async def test_sigterm_with_the_broker_frozen_exits_within_the_shutdown_budget_and_loses_nothing(
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    tmp_path: Path,
    private_broker: PrivateBroker,
) -> None:
    """Kubernetes sends SIGKILL after its grace period: the worker must be gone before, broker or not."""
    budget_s = 6.0
    broker = private_broker  # its own, to SIGSTOP (an embedded one beside an external cluster)
    settings = fault_settings(
        broker.bootstrap_servers,
        new_topic_name(),
        new_group_id(),
        max_batch_records=50,
        shutdown_timeout_s=budget_s,
    )
    streams = site_streams(SITES[:10], per_site=3000)
    log = tmp_path / "worker.log"
    for site, ticks in streams.items():  # a backlog, so the worker is busy when the broker freezes
        await feed(settings, ticks, site)
    first = start_worker_process(settings, log)
    second = None
    try:
        await wait_until_async(_log_says(log, "assigned"), 60, "the worker to be assigned")
        await asyncio.sleep(1)  # mid-backlog
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        await asyncio.sleep(1)
        asked = time.monotonic()
        first.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(first.wait, 60)
        took = time.monotonic() - asked
        os.kill(broker.pid, signal.SIGCONT)
        abandoned = "abandoning it uncommitted" in log.read_text()
        print(f"\nfrozen broker: SIGTERM to exit {took:.1f} s (budget {budget_s} s), exit {code}")
        print(f"frozen broker: in-flight batch abandoned: {abandoned}")
        assert code == 0, log_tail(log)
        assert took < budget_s + 3, log_tail(log)
        assert not await all_applied(settings, streams)(), "frozen after the backlog was done"
        second = start_worker_process(settings, log)
        await wait_until_async(all_applied(settings, streams), 180, "a new worker to finish the stream")
        assert stop(second, signal.SIGTERM) == 0, log_tail(log)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
    verdict = await verify_against_uninterrupted(settings, streams)
    print(f"frozen broker: {verdict.events} events, {verdict.reemitted} re-emitted byte-identical")


def _log_says(path: Path, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in await asyncio.to_thread(path.read_text)

    return check


async def test_ten_thousand_fuzzed_messages_are_each_accounted_for_once(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    sites = SITES[:5]
    messages, expected, streams = fuzzed_stream(7, sites, 400, 10_000)
    assert len(messages) - sum(len(t) for t in streams.values()) >= 10_000
    expected_stale, expected_rejected = expected.count("stale"), expected.count("rejected")
    landed: list[tuple[int, int]] = []
    for start in range(0, len(messages), 2000):
        landed += await send_raw(settings, messages[start : start + 2000])
    want = dict(zip(landed, expected, strict=True))
    outcomes: dict[str, int] = {}
    wrong: list[tuple[int, int, str, str]] = []

    def account(record: InputRecord, handled: Handled) -> None:
        outcomes[handled.kind] = outcomes.get(handled.kind, 0) + 1
        if want.pop((record.partition, record.offset)) != handled.kind:
            wrong.append((record.partition, record.offset, handled.kind, str(handled.error)))

    worker = Worker(settings, on_handled=account)
    assert await worker.run(max_messages=len(messages), idle_timeout_s=30) == len(messages)
    applied = sum(len(t) for t in streams.values())
    assert not want, "every message is handled"
    assert not wrong, wrong[:5]
    assert outcomes == {"applied": applied, "stale": expected_stale, "rejected": expected_rejected}
    assert len(await raw_values(settings, settings.topics.dlq)) == expected_rejected
    verdict = await verify_against_uninterrupted(settings, streams)
    assert verdict.reemitted == 0
    assert all(math.isfinite(s.battery.net_value) for s in worker.processor.sites().values())
    print(
        f"\nfuzz: {len(messages)} messages: {applied} applied, "
        f"{expected_stale} stale, {expected_rejected} DLQ"
    )
