"""The audit replay reproduces the recorded decisions, and names the first divergence when config changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.kafka.worker import Worker
from battery_worker.settings import load_settings
from tests.test_cli import cli
from tests.workerkit import ercot_week, feed, make_settings, reference, send_raw, settings_env

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
    assert (await replay(settings, ReplayOptions(processes=3))).report.sites == same.report.sites


async def test_replay_command_exit_codes(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await feed(settings, ercot_week()[:48], "solo")
    assert await Worker(settings).run(max_messages=48, idle_timeout_s=20) == 48
    env = settings_env(settings)
    ok = cli("replay", env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "replay identical" in ok.stdout
    changed = cli(
        "replay",
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
    what_if = cli("replay", "--output-prefix", "whatif", env=env)
    assert what_if.returncode == 0
    assert json.loads(cli("status", "--json", env=env).stdout)["solo"]["ticks_applied"] == 48
