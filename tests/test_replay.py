"""The audit replay reproduces the recorded decisions, and names the first divergence when config changed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from battery_worker.audit import Outside
from battery_worker.errors import InvalidConfig
from battery_worker.kafka import reading
from battery_worker.kafka.batching import key_partition, partition_of, send_and_wait
from battery_worker.kafka.clients import make_producer, make_reader
from battery_worker.kafka.reading import read_to_end
from battery_worker.kafka.records import ConsumedRecord, input_record
from battery_worker.kafka.tools import replay as replay_module
from battery_worker.kafka.tools.feed import tick_payload
from battery_worker.kafka.tools.inspect import site_history
from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.kafka.topics import prepare_topics
from battery_worker.kafka.worker import Worker
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.payloads import HISTORY_BY_SITE, history_key, key_site
from battery_worker.pipeline.processing import TickProcessor
from battery_worker.settings import Settings, TopicNames, load_settings
from battery_worker.ticks import PriceTick
from tests.capabilities import lacks_admin
from tests.conftest import BrokerKind
from tests.waiting import wait_until_async
from tests.workerkit import cli, ercot_week, feed, make_settings, reference, send_raw, settings_env

pytestmark = pytest.mark.broker


async def test_replay_reproduces_every_decision_and_finds_the_first_divergence(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()
    for site in ("east", "west"):
        await feed(settings, ticks, site)
    await send_raw(settings, [(b"east", b"garbage")])
    total = 2 * len(ticks) + 1
    assert await Worker(settings).run(max_messages=total, idle_timeout_s=20) == total

    same = await replay(settings, ReplayOptions(out_file=tmp_path / "actions.jsonl"))
    assert same.identical
    assert same.history.totals().matched == 2 * len(ticks)
    assert same.records_read == total
    assert same.report.totals().matched == 2 * len(ticks)
    assert same.counters.rejected == 1
    assert len((tmp_path / "actions.jsonl").read_bytes().splitlines()) == 2 * len(ticks)

    changed_params = {"charge_below": 25.0, "discharge_above": 60.0}
    what_if = load_settings(
        None,
        {
            **settings.model_dump(mode="python", exclude={"policy"}),
            "policy": {"name": "threshold", "params": changed_params},
        },
    )
    diverged = await replay(what_if, ReplayOptions(site="west"))
    assert not diverged.identical
    assert diverged.history.totals().diverged == diverged.report.totals().diverged
    assert set(diverged.report.sites) == {"west"}
    recorded_trace, _ = reference(settings, ticks)
    changed_trace, _ = reference(what_if, ticks)
    first_index = next(
        i for i, (a, b) in enumerate(zip(recorded_trace, changed_trace, strict=True)) if a != b
    )
    first = diverged.report.sites["west"].first
    assert first is not None
    assert first.tick_timestamp == recorded_trace[first_index][0].isoformat()
    assert first.recorded is not None
    assert first.recomputed is not None
    assert first.recorded["action"] == recorded_trace[first_index][1]
    assert first.recomputed["action"] == changed_trace[first_index][1]
    assert diverged.report.sites["west"].reworded > 0, "changed thresholds also change the reasons"

    # Partitions replayed in two processes: the same report, merged.
    parallel = await replay(what_if, ReplayOptions(site="west", processes=2))
    assert parallel.records_read == diverged.records_read
    assert parallel.report.sites == diverged.report.sites
    assert parallel.history.sites == diverged.history.sites
    assert parallel.counters == diverged.counters
    seen: list[tuple[int, int | None]] = []
    in_three = await replay(settings, ReplayOptions(processes=3), progress=lambda *now: seen.append(now))
    assert in_three.report.sites == same.report.sites
    assert seen[-1] == (total, total), "the processes' progress, summed: every record of the offsets' total"
    assert [read for read, _ in seen] == sorted(read for read, _ in seen)


async def test_replay_command_exit_codes(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await feed(settings, ercot_week()[:48], "solo")
    assert await Worker(settings).run(max_messages=48, idle_timeout_s=20) == 48
    env = settings_env(settings)
    report = tmp_path / "audit" / "report.json"
    ok = cli("replay", "--progress", "--report", str(report), env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "replay identical" in ok.stdout
    said = json.loads(report.read_text())
    assert (said["verdict"], said["records_read"], said["applied"]) == ("identical", 48, 48)
    assert said["actions"]["sites"]["solo"]["identical"] == 48
    assert said["history"]["totals"]["compared"] == 48
    assert any(
        line.startswith("compared 48 decisions") and line.endswith("0 recomputed but not recorded")
        for line in ok.stdout.splitlines()
    ), "each line whole, not wrapped at 80 columns in a pipe (a script greps them)"
    assert "replay: 100% (48 of about 48 records" in ok.stderr, "with --progress and no terminal, a line"
    changed = cli(
        "replay",
        "--report",
        str(report),
        "--policy",
        "threshold",
        "--policy-param",
        "charge_below=10",
        "--policy-param",
        "discharge_above=100",
        env=env,
    )
    assert changed.returncode == 1
    assert "first divergence at tick" in changed.stdout
    said_changed = json.loads(report.read_text())
    first = said_changed["actions"]["sites"]["solo"]["first"]
    assert first["kind"] == "divergence"
    assert first["recorded"] != first["recomputed"]
    assert first["recorded_at"].startswith(f"{settings.topics.actions}[")
    # The replay's own fingerprint, beside the worker's logged one, tells its settings differ (an
    # auditor's review: nothing said so for a changed parameter).
    (fingerprint,) = said_changed["decision_settings_fingerprints"]
    (worker_s,) = said["decision_settings_fingerprints"]
    assert fingerprint != worker_s
    assert f"recomputed with decision settings fingerprint {fingerprint}: each worker logs" in changed.stdout
    assert "decision settings fingerprint" not in ok.stdout, "said where something diverged"
    what_if = cli("replay", "--output-prefix", "whatif", env=env)
    assert what_if.returncode == 0
    past_the_end = cli("replay", "--from-offset", "5000", env=env)
    assert past_the_end.returncode == 1, "sought past the end, the reader's reset replayed the whole log"
    assert "replay compared nothing: no tick in the range replayed (from offset 5,000)" in past_the_end.stderr
    misnamed = cli("replay", env={**env, "BATTERY_WORKER_TOPICS__ACTIONS": "no-such.actions"})
    assert misnamed.returncode == 1, "48 decisions recomputed and none recorded"
    assert "topic no-such.actions does not exist: nothing was recorded there" in misnamed.stdout
    assert "replay identical" not in misnamed.stdout
    split = cli(
        "replay", "--processes", "2", env={**env, "BATTERY_WORKER_TOPICS__ACTIONS": "no-such.actions"}
    )
    assert split.returncode == 1
    assert "topic no-such.actions does not exist" in split.stdout, "the processes' merge dropped it"
    assert json.loads(cli("status", "--json", env=env).stdout)["solo"]["ticks_applied"] == 48


async def test_after_an_upgrade_of_the_state_record_the_replay_says_the_decisions_were_reproduced(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    """An upgrade review: a state record of version 1 (before the emissions totals) restores with none
    counted, so every event written after the upgrade counts its emissions from there, where the replay
    counts from the first tick. It fails the audit, as any difference does, but said only 'N diverged'
    over decisions whose action, power and charge were each reproduced."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await feed(settings, ercot_week()[:48], "solo")
    assert await Worker(settings).run(max_messages=24, idle_timeout_s=20) == 24
    latest = (await read_records(settings, settings.topics.state))[-1]  # solo's latest
    assert latest.value is not None
    version_1 = {
        name: value
        for name, value in json.loads(latest.value).items()
        if not name.startswith(("emissions_", "carried_"))
    }
    await _write_beside(
        settings, settings.topics.state, latest, json.dumps({**version_1, "schema_version": 1}).encode()
    )
    assert await Worker(settings).run(max_messages=24, idle_timeout_s=20) == 24
    report = tmp_path / "report.json"
    audit = cli("replay", "--report", str(report), env=settings_env(settings))
    assert audit.returncode == 1, audit.stdout
    assert (
        "48 decisions over 1 site: 24 identical, 24 diverged (24 in the emissions accounting alone), "
        in audit.stdout
    )
    assert (
        "history: 48 records compared, 24 identical, 24 different (24 in the emissions accounting alone)"
        in audit.stdout
    )
    assert "site solo: first divergence (in the emissions accounting alone) at tick" in audit.stdout
    said = json.loads(report.read_text())["actions"]["sites"]["solo"]
    assert (said["diverged"], said["diverged_in_emissions"], said["diverged_older_version"]) == (24, 24, 0)
    assert said["first"]["difference"] == "emissions"
    recorded, recomputed = said["first"]["recorded"], said["first"]["recomputed"]
    assert recorded["emissions"]["steps"] == 1, "counted from the upgrade"
    assert recomputed["emissions"]["steps"] == 25, "counted from the first tick"
    assert {**recorded, "emissions": None} == {**recomputed, "emissions": None}


async def _write_beside(settings: Settings, topic: str, like: ConsumedRecord | None, value: bytes) -> None:
    """Produce ``value`` to ``topic`` as ``like`` was (key, partition, headers), or keyed by the site."""
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        if like is None:
            await producer.send_and_wait(topic, value, key=b"solo", partition=key_partition(b"solo", 3))
        else:
            headers = list(like.headers)
            await producer.send_and_wait(
                topic, value, key=like.key, partition=like.partition, headers=headers
            )
    finally:
        await producer.stop()


async def test_a_record_that_is_no_event_a_history_difference_and_an_empty_range_are_each_said(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """Before: a replay of a site id mistyped or of a time past the end (which the embedded broker answered
    with offset 0) compared nothing and passed; a history record changed alone failed the audit with no
    line saying where; and one record in battery.actions that was not JSON made every audit crash."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await feed(settings, ercot_week()[:24], "solo")
    assert await Worker(settings).run(max_messages=24, idle_timeout_s=20) == 24
    env = settings_env(settings)
    for flags, said in (
        (("--site", "solo-1"), "(of site 'solo-1')"),
        (("--from-time", "2099-01-01T00:00"), "(written from 2099-01-01T00:00:00+00:00)"),
    ):
        nothing = cli("replay", *flags, env=env)
        assert nothing.returncode == 1, nothing.stderr
        assert f"replay compared nothing: no tick in the range replayed {said}" in nothing.stderr
        assert "replay identical" not in nothing.stdout
    other_policy = cli("replay", "--policy", "adaptive", env=env)
    assert other_policy.returncode == 1
    assert (
        "site solo was recorded under policy 'threshold' and replayed with 'adaptive': replay with the "
        "worker's settings" in other_policy.stdout
    )

    reader = make_reader(settings.kafka)
    await reader.start()
    try:
        tps = [TopicPartition(settings.topics.history, p) for p in range(3)]
        recorded = [r async for batch in read_to_end(reader, tps, timeout_s=20) for r in batch]
    finally:
        await reader.stop()
    first = min(recorded, key=lambda r: json.loads(r.value or b"{}")["timestamp"])
    changed = json.loads(first.value or b"{}") | {"charge_after_mwh": 1.5}
    await _write_beside(settings, settings.topics.history, first, json.dumps(changed).encode())
    history_only = cli("replay", env=env)
    assert history_only.returncode == 1
    assert "compared 24 decisions over 1 site: 24 identical" in history_only.stdout  # not '1 sites'
    assert "history: 24 records compared, 23 identical, 1 different" in history_only.stdout
    lines = [line for line in history_only.stdout.splitlines() if "first history divergence" in line]
    assert len(lines) == 1, history_only.stdout
    assert lines[0].startswith(f"site solo: first history divergence at tick {changed['timestamp']} ")
    # Where the altered record lies, not only the input its copies all name (an auditor's review).
    assert re.search(
        rf"recorded at {re.escape(settings.topics.history)}\[\d\]@\d+ {{charge_after_mwh=1.5}}", lines[0]
    )

    await _write_beside(settings, settings.topics.actions, None, b"not json at all")
    unreadable = cli("replay", env=env)
    assert unreadable.returncode == 1, unreadable.stderr
    assert "unexpected" not in unreadable.stderr
    found = re.search(
        rf"1 records of {re.escape(settings.topics.actions)} are no event: (\S+): not JSON", unreadable.stdout
    )
    assert found is not None, unreadable.stdout
    assert found.group(1).startswith(f"{settings.topics.actions}[{key_partition(b'solo', 3)}]@")


async def test_a_replay_from_an_offset_counts_only_the_ticks_from_there(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """The recorded events of earlier ticks are neither compared nor missing; they are the ones the
    comparison is left with after the replay, so they are read a second time and set aside by their input."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:48]
    await feed(settings, ticks, "solo")
    assert await Worker(settings).run(max_messages=48, idle_timeout_s=20) == 48

    seen: list[tuple[int, int | None]] = []
    later = await replay(settings, ReplayOptions(from_offset=30), progress=lambda *now: seen.append(now))
    solo = later.report.sites["solo"]
    assert later.records_read == 18
    assert seen[-1] == (18, 18), "the progress's total counts from the offset"
    assert (solo.ticks, solo.missing, solo.extra) == (18, 0, 0)
    assert later.history.sites["solo"].ticks == 18
    # From offset 30 the battery starts fresh: where that changes a decision, the first difference lies
    # in the replayed range, and the verdict says so.
    assert later.identical == (solo.first is None)
    assert solo.first is None or solo.first.source.endswith(tuple(f"@{o}" for o in range(30, 48)))
    from_start = await replay(settings, ReplayOptions(from_offset=0))
    assert from_start.identical
    assert from_start.report.sites["solo"].matched == 48


async def test_the_stretch_before_a_settings_change_is_audited_with_the_settings_then(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A review run as the platform engineer followed operations.md ("replay each stretch with the
    settings in force then") and could not: with no stop, the stretch before a change was replayed with
    the ticks decided after it, and diverged. ``to_time`` (when the new settings began) and ``to_offset``
    end the replay there; the later events are out of range by choice, neither compared nor missing."""
    before = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    higher = {"charge_below": 25.0, "discharge_above": 150.0}
    after = before.model_copy(update={"policy": before.policy.model_copy(update={"params": higher})})
    ticks = ercot_week()[:72]
    await feed(before, ticks[:48], "solo")
    assert await Worker(before).run(max_messages=48, idle_timeout_s=20) == 48
    await asyncio.sleep(0.05)
    changed = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await feed(after, ticks[48:], "solo")
    assert await Worker(after).run(max_messages=24, idle_timeout_s=20) == 24

    whole = await replay(before, ReplayOptions())
    assert whole.report.sites["solo"].diverged > 0, "the later stretch was decided otherwise"
    for stop in (ReplayOptions(to_time=changed), ReplayOptions(to_offset=48)):
        stretch = await replay(before, stop)
        solo = stretch.report.sites["solo"]
        assert stretch.records_read == 48, stop
        assert (solo.ticks, solo.matched, solo.missing, solo.extra) == (48, 48, 0, 0), stop
        assert stretch.identical, stop
    later = await replay(after, ReplayOptions(from_offset=48))
    assert later.records_read == 24
    assert later.report.sites["solo"].ticks == 24
    command = cli("replay", "--to-time", changed.isoformat(), env=settings_env(before))
    assert command.returncode == 0, command.stdout + command.stderr
    assert f"written before {changed.isoformat()}" in command.stdout


THRESHOLD_100 = {"name": "threshold", "params": {"charge_below": 25.0, "discharge_above": 100.0}}
THRESHOLD_150 = {"name": "threshold", "params": {"charge_below": 25.0, "discharge_above": 150.0}}
ADAPTIVE = {"name": "adaptive", "params": {}}
ADAPTIVE_LOW = {"name": "adaptive", "params": {"charge_quantile": 0.1}}


@pytest.mark.parametrize(
    ("old", "new", "whole"),
    [
        (THRESHOLD_100, THRESHOLD_150, False),
        (THRESHOLD_100, ADAPTIVE, False),
        (ADAPTIVE, ADAPTIVE_LOW, True),
    ],
    ids=["other thresholds", "another policy: a fresh memory", "other quantiles: the memory carried"],
)
async def test_a_replay_through_a_settings_change_hands_each_site_over_with_its_state(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    old: dict[str, Any],
    new: dict[str, Any],
    whole: bool,
) -> None:
    """The stretch after a change: a replay from it starts with a fresh battery where the workers went on
    with the stored one, so it could not pass (a review run). Replayed from the beginning with the settings
    before, then those after from the change on, each site carried over as a restarted worker restores it,
    the whole record is reproduced, in one and two processes; a partition with no record after the change
    keeps the settings before. The premises (neither settings alone pass) and the run in two processes
    are checked in the case whose memory is carried, the one with the most to hand over: each replay is
    a few seconds on the embedded broker."""
    prefix, group = new_topic_name(), new_group_id()
    before = make_settings(kafka_bootstrap, prefix, group, policy=old)
    after = make_settings(kafka_bootstrap, prefix, group, policy=new)
    homes: dict[int, str] = {}
    for candidate in (f"site-{n}" for n in range(50)):
        homes.setdefault(home_partition(candidate, 3), candidate)
    sites = [homes[p] for p in range(3)]  # one site on each partition
    week = ercot_week()
    for site in sites:
        await feed(before, week[:60], site)
    assert await Worker(before).run(max_messages=180, idle_timeout_s=20) == 180
    await asyncio.sleep(0.05)
    changed = datetime.now(UTC)
    await asyncio.sleep(0.05)
    for site in sites[:2]:  # the third partition gets nothing after the change
        await feed(after, week[60:96], site)
    assert await Worker(after).run(max_messages=72, idle_timeout_s=20) == 72

    if whole:
        assert not (await replay(before, ReplayOptions())).identical
        assert not (await replay(after, ReplayOptions(from_time=changed))).identical, "a fresh battery"
    for processes in (1, 2) if whole else (1,):
        options = ReplayOptions(changed_at=changed, changed_settings=after, processes=processes)
        through = await replay(before, options)
        assert through.identical, processes
        assert through.report.totals().matched == 252
        assert (through.changed_records, through.changed_partitions) == (72, 2)


async def test_the_command_replays_through_a_change_and_says_how_much_lay_after_it(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    prefix, group = new_topic_name(), new_group_id()
    before = make_settings(kafka_bootstrap, prefix, group, partitions=1)
    week = ercot_week()
    await feed(before, week[:30], "solo")
    assert await Worker(before).run(max_messages=30, idle_timeout_s=20) == 30
    await asyncio.sleep(0.05)
    changed = datetime.now(UTC)
    await asyncio.sleep(0.05)
    after = make_settings(kafka_bootstrap, prefix, group, partitions=1, policy=THRESHOLD_150)
    await feed(after, week[30:72], "solo")
    assert await Worker(after).run(max_messages=42, idle_timeout_s=20) == 42
    config = tmp_path / "after.toml"
    config.write_text(
        '[policy]\nname = "threshold"\nparams = { charge_below = 25.0, discharge_above = 150.0 }\n'
    )
    # The environment is read over either file, as by the worker: the policy goes in the files and flags.
    env = {k: v for k, v in settings_env(before).items() if not k.startswith("BATTERY_WORKER_POLICY")}
    old = [
        "--policy",
        "threshold",
        "--policy-param",
        "charge_below=25",
        "--policy-param",
        "discharge_above=100",
    ]
    at = ["--changed-at", changed.isoformat(), "--changed-config", str(config)]
    command = cli("replay", *old, *at, env=env)
    assert command.returncode == 0, command.stdout + command.stderr
    said = f"decided with the settings of {config} from {changed.isoformat()} on: 42 of 72 records, the sites"
    assert said in command.stdout
    assert "1 partition handed over" in command.stdout
    alone = cli("replay", "--changed-config", str(config), env=env)
    assert alone.returncode == 2
    assert "needs --changed-at too" in alone.stderr
    reversed_range = cli("replay", *old, "--from-offset", "20", "--to-offset", "10", env=env)
    assert reversed_range.returncode == 2
    assert "--to-offset=10: must be above --from-offset 20" in reversed_range.stderr
    from_zero = cli("replay", *old, "--from-offset", "0", "--to-offset", "30", env=env)
    assert from_zero.returncode == 0, from_zero.stdout
    assert "fresh battery" not in from_zero.stdout, "offset 0 is the beginning"


async def test_a_replay_prints_the_first_differences_of_20_sites_and_counts_the_rest(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A what-if over 10,000 sites printed 20,000 lines of first differences (a review run)."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    ticks = ercot_week()[66:70]  # 245, 193, ... above discharge_above=100
    for site in range(25):
        await feed(settings, ticks, f"s{site:02d}")
    assert await Worker(settings).run(max_messages=100, idle_timeout_s=20) == 100
    whatif = cli("replay", "--policy-param", "discharge_above=1000", env=settings_env(settings))
    assert whatif.returncode == 1
    lines = whatif.stdout.splitlines()
    assert sum(line.startswith("site s") and ": first divergence" in line for line in lines) == 20
    assert sum(": first history divergence" in line for line in lines) == 20
    assert "and 5 more sites with a difference, each site's first in --report FILE" in lines
    assert "history: and 5 more sites with a difference, each site's first in --report FILE" in lines


async def test_a_read_stops_where_the_partition_ended_when_asked(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """``partition_ends`` trusts the fetch's high watermark (records sent together are one batch, whose end
    the embedded broker's ListOffsets misstates), and a read with those ends leaves later records unread."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    landed = await send_raw(settings, [(b"solo", b"%d" % i) for i in range(10)])
    tp = TopicPartition(settings.topics.prices, landed[0][0])
    reader = make_reader(settings.kafka)
    await reader.start()
    try:
        ends = await reading.partition_ends(reader, [tp], timeout_s=30)
        assert ends == {tp: landed[-1][1] + 1}
        await send_raw(settings, [(b"solo", b"late")] * 5)
        until_then = [
            record.value
            async for batch in read_to_end(reader, [tp], timeout_s=30, stop_offsets=ends)
            for record in batch
        ]
        assert until_then == [b"%d" % i for i in range(10)]
        everything = [
            record.value async for batch in read_to_end(reader, [tp], timeout_s=30) for record in batch
        ]
        assert everything == until_then + [b"late"] * 5
    finally:
        await reader.stop()


async def test_ticks_written_while_a_replay_runs_are_not_replayed(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A replay beside a running feed: the record is read first, so ticks that arrive after it have no
    recorded events yet and would count as extra; the replay stops where ``prices`` ended as it began."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()
    sites = [f"site-{n}" for n in range(40)]  # 6,720 ticks: more than one fetch of 1 MiB
    for site in sites:
        await feed(settings, ticks, site)
    total = len(sites) * len(ticks)
    assert await Worker(settings).run(max_messages=total, idle_timeout_s=30) == total
    late: list[int] = []

    def feed_more(read: int, of: int | None) -> None:
        if not late:  # once, during the read of prices: in a thread, as the replay's loop is busy
            thread = threading.Thread(target=asyncio.run, args=(feed(settings, ercot_week()[:24], "late"),))
            thread.start()
            thread.join()
            late.append(read)

    result = await replay(settings, ReplayOptions(), progress=feed_more)
    assert late, "the late ticks were written during the replay"
    assert late[0] < total, "while prices was being read"
    assert result.records_read == total
    assert result.identical, result.report.totals()


async def record_as_the_worker(settings: Settings, site: str) -> int:
    """Write the events a live worker writes for a new site's ticks (its own ``TickProcessor``, batching and
    producer), without a second group join, which takes the embedded broker some 12 s; returns the ticks."""
    names = settings.topics.names()
    processor = TickProcessor(settings.site_directory(), names, prices_partitions=3)
    ticks = [record for record in await read_records(settings, names.prices) if record.key == site.encode()]
    outputs = [out for tick in ticks for out in processor.handle(input_record(tick), tick.timestamp).outputs]
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        await send_and_wait(producer, outputs)
    finally:
        await producer.stop()
    return len(ticks)


async def test_ticks_a_live_worker_records_after_the_replays_stop_are_out_of_its_range(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beside a live worker, ticks that arrive after the replay took where ``prices`` ended are decided while
    the record is read: their events are in the record, and are neither compared nor counted as missing."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:48]
    for site in ("east", "west"):
        await feed(settings, ticks, site)
    assert await Worker(settings).run(max_messages=96, idle_timeout_s=20) == 96
    took_ends = reading.partition_ends
    decided_later: list[int] = []

    async def ends_then_the_worker_goes_on(
        reader: Any, partitions: Any, *, timeout_s: float
    ) -> dict[TopicPartition, int]:
        ends = await took_ends(reader, partitions, timeout_s=timeout_s)
        await feed(settings, ticks[:24], "later")
        decided_later.append(await record_as_the_worker(settings, "later"))
        return ends

    monkeypatch.setattr(replay_module, "partition_ends", ends_then_the_worker_goes_on)
    result = await replay(settings, ReplayOptions())
    assert decided_later == [24], "the later ticks were decided before the record was read"
    assert result.records_read == 96
    assert result.identical, result.report.totals()
    assert "later" not in result.report.sites
    assert result.report.totals().matched == result.history.totals().matched == 96


async def test_ticks_a_live_worker_was_deciding_as_the_replay_read_the_record_are_met(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """Ticks written before the replay began but decided only after it read the record: their events are
    found by the record's second read and agree, not counted as recomputed but not recorded."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:48]
    for site in ("east", "west"):
        await feed(settings, ticks, site)
    assert await Worker(settings).run(max_messages=96, idle_timeout_s=20) == 96
    await feed(settings, ticks[:24], "in-flight")
    decided: list[int] = []

    def decide_in_flight(read: int, of: int | None) -> None:
        if not decided:  # once, during the read of prices: in a thread, as the replay's loop is busy

            def run() -> None:
                decided.append(asyncio.run(record_as_the_worker(settings, "in-flight")))

            thread = threading.Thread(target=run)
            thread.start()
            thread.join()

    result = await replay(settings, ReplayOptions(), progress=decide_in_flight)
    assert decided == [24], "the in-flight ticks were decided after the record's first read"
    assert result.records_read == 120
    assert result.identical, result.report.totals()
    assert result.report.sites["in-flight"].matched == result.history.sites["in-flight"].matched == 24


async def test_ticks_past_the_groups_committed_offsets_are_pending_and_below_them_a_difference(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A worker behind (a backlog, a stop) has not decided the ticks past its group's committed offsets:
    their recomputed events are counted as pending, and the replay still passes. Once the group has
    committed past a tick, its events must be in the record, and a tick without them is a difference."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:48]
    for site in ("east", "west"):
        await feed(settings, ticks, site)
    assert await Worker(settings).run(max_messages=96, idle_timeout_s=20) == 96
    await feed(settings, ticks[:24], "behind")

    for processes in (1, 3):
        behind = await replay(settings, ReplayOptions(processes=processes))
        assert behind.identical, (processes, behind.report.totals())
        assert behind.report.totals().matched == behind.history.totals().matched == 96
        assert behind.report.sites["behind"].pending == behind.history.sites["behind"].pending == 24
        assert behind.report.totals().pending == 24
        assert behind.report.totals().extra == 0
    shown = cli("replay", env=settings_env(settings))
    assert shown.returncode == 0, shown.stdout + shown.stderr[-2000:]
    pending_line = "24 recomputed for ticks past the committed offsets of group"
    assert any(line.startswith(pending_line) for line in shown.stdout.splitlines())

    # A worker of the group that records elsewhere decides the ticks and commits past them.
    elsewhere = load_settings(
        None,
        {
            **settings.model_dump(mode="python"),
            "topics": {
                **settings.topics.model_dump(),
                "actions": new_topic_name(),
                "history": new_topic_name(),
            },
        },
    )
    assert await Worker(elsewhere).run(max_messages=24, idle_timeout_s=20) == 24
    skipped = await replay(settings, ReplayOptions())
    assert not skipped.identical
    assert skipped.report.sites["behind"].extra == skipped.history.sites["behind"].extra == 24
    assert skipped.report.totals().pending == 0
    assert skipped.report.totals().matched == 96


async def test_a_tick_before_a_recorded_action_was_decided_whatever_the_groups_commit_says(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """An auditor's review deleted 30,000 actions and moved the group's offsets back: the replay passed
    them as "not yet decided" (exit 0). A partition's ticks are handled, and their actions sent, in order,
    so an action of a later tick proves the earlier ones recorded. History proves nothing of the actions:
    a worker killed between a batch's acknowledgements leaves history without actions, and that stays
    pending (a review of the diff)."""
    from aiokafka.structs import OffsetAndMetadata

    from battery_worker.kafka.clients import make_group_consumer

    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    await feed(settings, ercot_week()[:48], "east")
    # The first 24 ticks' actions land elsewhere: the audited topic lacks them, as if deleted; the last
    # 24 are recorded there.
    actions_elsewhere = load_settings(
        None,
        {
            **settings.model_dump(mode="python"),
            "topics": {**settings.topics.model_dump(), "actions": new_topic_name()},
        },
    )
    assert await Worker(actions_elsewhere).run(max_messages=24, idle_timeout_s=20) == 24
    assert await Worker(settings).run(max_messages=24, idle_timeout_s=20) == 24
    tp = TopicPartition(settings.topics.prices, 0)

    async def commit(offset: int) -> None:  # an operator's reset of the group's offsets
        consumer = make_group_consumer(settings.kafka, settings.worker)
        await consumer.start()
        try:
            consumer.subscribe([settings.topics.prices])

            async def assigned() -> bool:
                if tp not in consumer.assignment():
                    await consumer.getmany(timeout_ms=200, max_records=1)
                return tp in consumer.assignment()

            await wait_until_async(assigned, 30, "the partition assigned")
            await consumer.commit({tp: OffsetAndMetadata(offset, "")})
        finally:
            await consumer.stop()

    await commit(0)
    result = await replay(settings, ReplayOptions())
    assert result.history.sites["east"].matched == 48
    assert result.report.sites["east"].matched == 24
    assert result.report.sites["east"].pending == 0
    assert result.report.sites["east"].extra == 24
    assert not result.identical

    # Nothing recorded in actions past the history: the worker stopped between the acknowledgements.
    only_history = load_settings(
        None,
        {
            **settings.model_dump(mode="python"),
            "topics": {**settings.topics.model_dump(), "actions": new_topic_name()},
        },
    )
    await prepare_topics(only_history)
    behind = await replay(only_history, ReplayOptions())
    assert behind.report.sites["east"].pending == 48
    assert behind.report.sites["east"].extra == 0
    assert behind.history.sites["east"].matched == 48
    assert behind.identical


async def test_a_forged_action_away_from_its_sites_partition_is_found_by_a_replay_in_processes(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """An auditor's review wrote a forged action (the same key and event_id, another power) to another
    partition of the actions topic than its site's: one process found it, three did not (the process
    comparing the site reads only the site's partition, the one reading that partition skipped a site it
    does not compare)."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    for site in ("east", "west"):
        await feed(settings, ercot_week()[:24], site)
    assert await Worker(settings).run(max_messages=48, idle_timeout_s=20) == 48
    home = key_partition(b"east", 3)
    reader = make_reader(settings.kafka)
    await reader.start()
    try:
        recorded = [
            r
            async for batch in read_to_end(
                reader, [TopicPartition(settings.topics.actions, home)], timeout_s=20
            )
            for r in batch
            if r.key == b"east"
        ]
    finally:
        await reader.stop()
    genuine = json.loads(recorded[5].value or b"")
    forged = json.dumps({**genuine, "power_mw": -genuine["power_mw"] - 1.0}).encode()
    away = (home + 1) % 3
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.actions, forged, key=b"east", partition=away)
    finally:
        await producer.stop()

    one = await replay(settings, ReplayOptions())
    assert not one.identical
    assert one.report.sites["east"].diverged == 1
    assert one.report.sites["east"].first is not None
    assert one.report.sites["east"].first.recorded_at.startswith(f"{settings.topics.actions}[{away}]@")
    for processes in (2, 3):
        split = await replay(settings, ReplayOptions(processes=processes))
        assert not split.identical, processes
        (line,) = split.report.unreadable
        assert line.startswith(f"{settings.topics.actions}[{away}]@")
        assert f"an event of site 'east' away from its site's partition ({home})" in line


def sigterm(parent: int) -> None:
    os.kill(parent, signal.SIGTERM)


def ctrl_c(parent: int) -> None:
    os.killpg(parent, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group


def kill_a_share(parent: int) -> None:
    """SIGKILL to one of the replay's share processes, as the out-of-memory killer would."""
    children = [
        int(stat.split()[0])
        for stat in (path.read_text() for path in Path("/proc").glob("[0-9]*/stat") if path.exists())
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent
    ]
    shares = [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(shares) == 3, children
    os.kill(shares[1], signal.SIGKILL)


STOPPED = "battery-worker replay: stopped by {} before it finished, no verdict"
"""The line a stop signal leaves (a pattern as each case's line is; it has nothing a pattern reads)."""


@pytest.mark.parametrize(
    ("processes", "interrupt", "code", "line"),
    [
        (1, sigterm, 143, STOPPED.format("SIGTERM")),
        (3, sigterm, 143, STOPPED.format("SIGTERM")),
        (3, ctrl_c, 130, STOPPED.format("SIGINT")),
        pytest.param(
            3,
            kill_a_share,
            1,
            r"battery-worker: error: battery-worker replay [123]/3 ended \(exit code -9\) "
            "before sending its report",
            marks=pytest.mark.skipif(
                not Path("/proc/self/stat").exists(),
                reason="finds the replay's processes in /proc, which only Linux has (CI runs it)",
            ),
        ),
    ],
)
async def test_a_replay_cut_short_ends_in_one_line_without_a_verdict_or_a_process_left(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    processes: int,
    interrupt: Callable[[int], None],
    code: int,
    line: str,
) -> None:
    """SIGTERM to the command, Ctrl-C to its whole process group as a terminal sends it, or one of its
    processes killed: the replay ends within seconds in one line, with no report and an exit code that is
    not 0 (0 would pass a script's audit), and leaves no process behind. Before, a stopped replay exited 0,
    and one in processes first waited for them to finish their whole share. No worker ran: a replay of a log
    with no record takes long enough to be cut short in the middle."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = hourly_ticks(600)
    await send_raw(settings, [(f"site-{n}".encode(), tick_payload(t)) for t in ticks for n in range(100)])
    ended, out, err, took = cut_short_replay(settings_env(settings), processes, interrupt)
    assert ended == code, err
    lines = [text for text in err.splitlines() if not text.startswith("replay: ")]
    assert len(lines) == 1, err
    assert re.fullmatch(line, lines[0]), err
    assert out == "", "no report of a replay cut short"
    assert took < 10.0


def hourly_ticks(hours: int) -> list[PriceTick]:
    """The ERCOT week's prices over and over, an hour apart: a log as long as a test needs."""
    week = ercot_week()
    start = week[0].timestamp
    return [
        week[hour % len(week)].model_copy(update={"timestamp": start + timedelta(hours=hour)})
        for hour in range(hours)
    ]


def cut_short_replay(
    env: dict[str, str], processes: int, interrupt: Callable[[int], None], *more: str
) -> tuple[int, str, str, float]:
    """``battery-worker replay`` in a process group of its own (as run from a terminal), interrupted once a
    tenth is replayed: its exit code, stdout, stderr and the seconds it took to end. Fails if any process
    of the group outlives it by 5 s."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "battery_worker.cli",
            "replay",
            "--progress",
            "--processes",
            str(processes),
            *more,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith("replay: "), first  # a tenth replayed: the processes are at work
        sent = time.monotonic()
        interrupt(process.pid)
        out, err = process.communicate(timeout=60)
        took = time.monotonic() - sent
        deadline = time.monotonic() + 5
        while True:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "a replay process outlived the command"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, out, first + err, took


async def read_records(settings: Settings, topic: str, partitions: int = 3) -> list[ConsumedRecord]:
    reader = make_reader(settings.kafka)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return [record async for batch in read_to_end(reader, tps, timeout_s=30) for record in batch]
    finally:
        await reader.stop()


async def test_events_lie_on_their_sites_partition_and_a_replay_in_processes_reads_only_its_own(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    """A site's history follows the site (its key is unique per tick), so each process of a replay reads
    its own partitions of every topic; a log whose history was partitioned by that key (written before)
    is found out and read whole, never reported as missing events."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    names = settings.topics.names()
    ticks = ercot_week()[:72]
    sites = ("east", "west", "north", "south")
    for site in sites:
        await feed(settings, ticks, site)
    assert await Worker(settings).run(max_messages=4 * 72, idle_timeout_s=20) == 4 * 72
    for topic in (names.actions, names.history):
        records = await read_records(settings, topic)
        assert len(records) == 4 * 72
        for record in records:
            owner = key_site(record.key, history=topic == names.history)
            assert owner in sites
            assert record.partition == home_partition(str(owner), 3), (topic, record.key)
    alone = await replay(settings, ReplayOptions(site="west", out_file=tmp_path / "west.jsonl"))
    assert alone.identical
    assert alone.history.totals().matched == 72
    neighbours = [site for site in sites if home_partition(site, 3) == home_partition("west", 3)]
    assert alone.records_read == 72 * len(neighbours), "only the site's home partition of prices is read"
    written = [json.loads(line) for line in (tmp_path / "west.jsonl").read_bytes().splitlines()]
    assert [action["site_id"] for action in written] == ["west"] * 72
    assert len(await site_history(settings, "west")) == 72  # history export: one partition, in order

    # The same log as a worker that partitioned history by its unique key wrote it.
    old = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    for site in sites:
        await feed(old, ticks, site)
    await write_as_before(old)
    history = await read_records(old, old.topics.history)
    homes = [home_partition(str(key_site(record.key, history=True)), 3) for record in history]
    partitions = [record.partition for record in history]
    assert homes != partitions, "the old layout puts some of a site's history on other partitions"
    exported = await site_history(old, "west")
    assert [record.timestamp for record in exported] == [tick.timestamp for tick in ticks]
    for options in (ReplayOptions(processes=2), ReplayOptions(site="west"), ReplayOptions()):
        result = await replay(old, options)
        assert result.identical, options
        expected = 72 if options.site else 4 * 72
        assert result.history.totals().matched == expected, options
        assert result.report.totals().matched == expected, options


async def write_as_before(settings: Settings, *, until: int | None = None) -> None:
    """The events of every tick in ``prices``, as a worker wrote them before history was partitioned by its
    site: each history record by its whole site|timestamp key, and without the by-site header. From the
    ``until``-th tick on, as the worker writes them now (an upgrade in the middle of the log)."""
    names = settings.topics.names()
    processor = TickProcessor(settings.site_directory(), names, prices_partitions=3)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        for index, message in enumerate(await read_records(settings, names.prices)):
            now = until is not None and index >= until
            for output in processor.handle(input_record(message), message.timestamp).outputs:
                if output.topic == names.status:
                    continue
                if output.topic == names.history and not now:
                    partition = partition_of(replace(output, partition_key=None, headers=()), 3)
                    output = replace(output, headers=())
                else:
                    partition = partition_of(output, 3)
                headers = list(output.headers)
                await producer.send_and_wait(
                    output.topic, output.value, key=output.key, partition=partition, headers=headers
                )
    finally:
        await producer.stop()


async def test_one_sites_history_of_the_old_layout_is_read_whole_and_of_the_new_only_where_it_lies(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One site's history partitioned by its unique key (the old layout) lies on every partition, and every
    record of the site's own partition is the site's, so only the by-site header tells the layout: without
    it, history export and replay would find a third of the site's history. After an upgrade the other
    partitions still start with old records, so they are still read; a topic of the new layout alone is
    read at the site's partition only."""
    read: list[list[int]] = []
    reading_to_end = reading.read_to_end

    def counting(reader: Any, partitions: Any, **kwargs: Any) -> Any:
        read.append(sorted(tp.partition for tp in partitions))
        return reading_to_end(reader, partitions, **kwargs)

    monkeypatch.setattr(reading, "read_to_end", counting)
    week = ercot_week()
    home = home_partition("solo", 3)
    # Old ticks whose history lies away from the site's partition: after the upgrade that partition holds
    # only records of the new layout, and only the other partitions' oldest records tell the old one.
    away = [t for t in week[:48] if key_partition(history_key("solo", t.timestamp.isoformat()), 3) != home]
    away = away[:8]
    cases = (
        ("old layout", week[:24], None, False),
        ("upgraded after 24 ticks", week[:48], 24, False),
        ("upgraded, none of the old on the site's partition", [*away, *week[48:72]], len(away), True),
    )
    for case, ticks, until, old_away_only in cases:
        old_count = len(ticks) if until is None else until
        settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
        await feed(settings, ticks, "solo")
        await write_as_before(settings, until=until)
        history = await read_records(settings, settings.topics.history)
        old = [record for record in history if HISTORY_BY_SITE not in record.headers]
        assert len(old) == old_count, case
        old_partitions = {record.partition for record in old}
        assert old_partitions - {home}, case
        if old_away_only:
            assert home not in old_partitions, case
        read.clear()
        exported = await site_history(settings, "solo")
        assert [record.timestamp for record in exported] == [tick.timestamp for tick in ticks], case
        others_read = {partition for partitions in read if home not in partitions for partition in partitions}
        assert old_partitions - {home} <= others_read, (case, read)
        result = await replay(settings, ReplayOptions(site="solo"))
        assert result.identical, case
        assert result.history.totals().matched == len(ticks), case

    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    assert home_partition("other-site", 3) != home, "the other partitions are not empty"
    await feed(settings, week[:24], "solo")
    await feed(settings, week[:24], "other-site")
    assert await Worker(settings).run(max_messages=48, idle_timeout_s=20) == 48
    history = await read_records(settings, settings.topics.history)
    assert all(HISTORY_BY_SITE in record.headers for record in history)
    read.clear()
    assert len(await site_history(settings, "solo")) == 24
    assert all(partitions in ([home], []) for partitions in read), read


def test_an_output_prefix_is_refused_only_where_a_topic_it_writes_is_live() -> None:
    """The check named the default topics, not the configured ones, and left history and dead letters out:
    with actions 'x.y' and history 'y', prefix 'x' wrote the replay's history into the live actions; with
    the live topics under 'site.', prefix 'site' (writing 'site.site.*') was refused."""
    crossed = TopicNames(actions="x.y", history="y")
    with pytest.raises(InvalidConfig, match=r"would write to the live topic x\.y"):
        replay_module.check_output_prefix("x", crossed)
    dead_letters = TopicNames(dlq="z", prices="w.z")
    with pytest.raises(InvalidConfig, match=r"would write to the live topic w\.z"):
        replay_module.check_output_prefix("w", dead_letters)
    under_site = TopicNames(**{f: f"site.{v}" for f, v in dataclasses.asdict(TopicNames()).items()})
    replay_module.check_output_prefix("site", under_site)
    with pytest.raises(InvalidConfig, match="is empty"):
        replay_module.check_output_prefix("..", TopicNames())


async def test_recorded_decisions_whose_prices_the_replay_cannot_read_are_said_and_fail_it(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    """Decisions recorded from another prices topic were left out of every count, and so were those whose
    prices retention had deleted: the replay said every recorded decision was reproduced, exit 0."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:48]
    await feed(settings, ticks, "solo")
    assert await Worker(settings).run(max_messages=48, idle_timeout_s=20) == 48
    elsewhere = settings.model_copy(
        update={
            "topics": settings.topics.model_copy(update={"prices": f"{new_topic_name()}.prices"}),
            "worker": settings.worker.model_copy(update={"group_id": new_group_id()}),
        }
    )
    await feed(elsewhere, ticks[:24], "other")  # recorded in the same battery.actions
    assert await Worker(elsewhere).run(max_messages=24, idle_timeout_s=20) == 24

    result = await replay(settings, ReplayOptions())
    assert result.report.totals().matched == 48
    assert result.report.unverified == {Outside.OTHER_PRICES_TOPIC: {"other": 24}}
    assert not result.identical
    report = tmp_path / "report.json"
    run = cli("replay", "--report", str(report), env=settings_env(settings))
    assert run.returncode == 1
    assert (
        "24 recorded decisions of 1 site (other) not verified: their ticks came from another prices topic"
        in run.stdout
    )
    assert "replay incomplete" in run.stderr
    assert "replay identical" not in run.stdout
    said = json.loads(report.read_text())
    assert said["verdict"] == "incomplete"
    assert said["actions"]["totals"]["identical"] == 48
    assert said["actions"]["unverified"] == [
        {
            "reason": "other_prices_topic",
            "said": "their ticks came from another prices topic",
            "sites": {"other": 24},
        }
    ]


async def test_recorded_decisions_whose_prices_are_deleted_are_said_and_fail_the_replay(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    broker_kind: BrokerKind,
    tmp_path: Path,
) -> None:
    """A prices partition that retention had emptied left its 500 recorded decisions out of every count, and
    the replay passed; one cut in the middle blamed the worker for every decision after the cut."""
    if broker_kind == "embedded":
        pytest.skip(
            "the embedded broker (Tansu) has no DeleteRecords (it closes the connection): Apache Kafka"
        )
    if broker_kind == "external" and (lacking := await lacks_admin(kafka_bootstrap, "DeleteRecords")):
        pytest.skip(lacking)
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:48]
    await feed(settings, ticks, "solo")
    assert await Worker(settings).run(max_messages=48, idle_timeout_s=20) == 48
    home = TopicPartition(settings.topics.prices, home_partition("solo", 3))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({home: RecordsToDelete(before_offset=20)}, timeout_ms=10_000)
        cut = await replay(settings, ReplayOptions())
        from_offset = await replay(settings, ReplayOptions(from_offset=30))
        await admin.delete_records({home: RecordsToDelete(before_offset=48)}, timeout_ms=10_000)
    finally:
        await admin.close()
    assert cut.report.unverified == {Outside.PRICES_DELETED: {"solo": 20}}
    assert cut.prices_begin == {home.partition: 20}
    run = cli("replay", env=settings_env(settings))
    assert run.returncode == 1
    assert "48 recorded decisions of 1 site (solo) not verified: their prices are deleted" in run.stdout
    assert f"{home.topic}[{home.partition}] begins at offset 48: its earlier ticks are deleted" in run.stdout
    assert "replay identical" not in run.stdout
    assert "replay incomplete" in run.stderr, "the verdict is the deletion, not the range"
    assert from_offset.report.unverified == {}, "before a start asked for: out of range by choice"
    by_time = cli("replay", "--from-time", "2020-01-01T00:00", env=settings_env(settings))
    assert "48 recorded decisions of 1 site (solo) not verified" in by_time.stdout, "published after 2020"
    asked_before = cli(
        "replay", "--from-offset", "10", "--report", str(tmp_path / "r.json"), env=settings_env(settings)
    )
    assert asked_before.returncode == 1
    said = json.loads((tmp_path / "r.json").read_text())["actions"]["unverified"]
    assert said[0]["sites"] == {"solo": 38}, "from the offset asked for to the log start: deleted"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({home: RecordsToDelete(before_offset=48)}, timeout_ms=10_000)
    finally:
        await admin.close()


async def test_a_replay_under_a_dear_policy_stops_within_a_moment_of_the_signal(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    """A fetch holds thousands of ticks, which mpc or site took 15 s and more to recompute before a stop
    signal was seen, and the progress said nothing meanwhile. No worker ran: nothing is compared."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await send_raw(settings, [(b"dear", tick_payload(t)) for t in hourly_ticks(3000)])
    env = {**settings_env(settings), "BATTERY_WORKER_POLICY__NAME": "mpc"}
    env = {k: v for k, v in env.items() if not k.startswith("BATTERY_WORKER_POLICY__PARAMS__")}
    report = tmp_path / "report.json"
    report.write_text('{"verdict": "identical"}')  # an earlier run's
    ended, out, err, took = cut_short_replay(env, 1, sigterm, "--report", str(report))
    assert json.loads(report.read_text()) == {"verdict": "stopped", "signal": "SIGTERM"}
    first = err.splitlines()[0]
    assert not first.startswith("replay: 100%"), "progress said while the fetched ticks are recomputed"
    assert ended == 143, err
    assert out == ""
    assert took < 5.0, f"{took:.1f} s from the signal to the end"


async def test_a_decision_this_version_dead_letters_is_said_with_why_and_the_rules_named(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An upgrade review replayed with today's version a history where last week's had applied a tick of
    1970 (dead-lettered since): 'recorded ... vs recomputed nothing', no why, and the fingerprint line
    blamed the settings (--config, --policy) where the code's decision rules had changed."""
    from battery_worker.pipeline import processing

    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    zero = PriceTick(
        energy_price=30.0, hash_price=1.0, token_price=1.0, timestamp=datetime(1970, 1, 1, tzinfo=UTC)
    )
    await feed(settings, [zero, *ercot_week()[:3]], "solo")
    monkeypatch.setattr(processing, "EARLIEST_REAL_TIME", datetime(1, 1, 1, tzinfo=UTC))  # last week's rules
    assert await Worker(settings).run(max_messages=4, idle_timeout_s=20) == 4
    monkeypatch.undo()
    report = tmp_path / "report.json"
    replayed = cli("replay", "--report", str(report), env=settings_env(settings))
    assert replayed.returncode == 1, replayed.stderr
    line = next(line for line in replayed.stdout.splitlines() if line.startswith("site solo: first"))
    assert line.endswith(
        "vs recomputed nothing (the recomputation dead-letters its tick: "
        "timestamp='1970-01-01T00:00:00+00:00': before 2000-01-01T00:00:00+00:00: a producer's zero or "
        "default time? (applied, it would be decided as a real price))"
    ), line
    assert "or its version decided by other rules (this one's: dispatch.DECISION_RULES" in replayed.stdout
    first = json.loads(report.read_text())["actions"]["sites"]["solo"]["first"]
    assert first["recomputation_refused"].startswith("timestamp='1970-01-01T00:00:00+00:00': before 2000")


async def test_status_and_replay_read_a_commit_through_a_coordinator_refusing_for_a_moment(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka's committed() reads an offset fetch refused as a whole (NOT_COORDINATOR, a top-level error
    with no partitions: Apache Kafka's answer for a moment after a stall) as "nothing committed": status
    then showed a whole backlog, and the replay counted every tick. They read commits as the worker does
    now (kafka/committed.py), asking again."""
    from types import SimpleNamespace

    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from aiokafka.protocol.commit import OffsetFetchRequest

    from battery_worker.kafka.tools.overview import committed_offsets

    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    await feed(settings, ercot_week()[:6], "solo")
    assert await Worker(settings).run(max_messages=6, idle_timeout_s=20) == 6
    send = GroupCoordinator._send_req
    refused: list[object] = []

    async def refusing_a_while(self: GroupCoordinator, request: Any) -> Any:
        # Three: the consumer's own refresh of an assigned partition's commit may take one.
        if isinstance(request, OffsetFetchRequest) and len(refused) < 3:
            refused.append(request)
            return SimpleNamespace(error_code=16, topics=[])  # NOT_COORDINATOR, no partitions
        return await send(self, request)

    monkeypatch.setattr(GroupCoordinator, "_send_req", refusing_a_while)
    tp = TopicPartition(settings.topics.prices, 0)
    assert await committed_offsets(settings.kafka, settings.worker.group_id, [tp]) == {tp: 6}
    assert refused
