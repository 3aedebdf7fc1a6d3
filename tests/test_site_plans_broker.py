"""Worker, replay, backtest and the Python API give the same site plans for the same ticks.

The worker runs the ``site`` policy over 48 hours of MARA ticks with a restart halfway (its memory comes
back from the state topic); every published action's ``site_plan`` must equal the backtest's plan of the
same tick and what ``BatterySystem.make_decision`` answers. The audit replay reproduces the actions byte
for byte, plans included, and counts a changed site model as a divergence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from battery_worker import BatterySystem
from battery_worker.backtest.engine import run_policy
from battery_worker.fleet.accounting import run_plans
from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.policies import make_policy
from battery_worker.pricefiles import load_ticks
from battery_worker.settings import load_settings
from tests.workerkit import DATA, feed, make_settings, read_published, run_with_a_restart, unique_actions

pytestmark = pytest.mark.broker

POLICY: dict[str, Any] = {"name": "site", "params": {"horizon_hours": 12}}


async def test_worker_replay_backtest_and_api_give_the_same_plans(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(
        kafka_bootstrap,
        new_topic_name(),
        new_group_id(),
        partitions=1,
        policy=POLICY,
        worker={"max_batch_records": 50},
    )
    ticks = load_ticks(DATA / "mara_api_5min_2025-05-22_48h.json")
    await feed(settings, ticks, "mara")
    await run_with_a_restart(settings, ticks, half=len(ticks) // 2)

    published = await read_published(settings)
    actions = unique_actions(published)
    worker_plans = [action.site_plan.model_dump() for action in actions if action.site_plan]
    assert {action.schema_version for action in actions} == {3}

    setup = settings.site_directory().default
    policy = make_policy(POLICY["name"], POLICY["params"], site=setup.site)
    run = run_policy(ticks, setup.config, policy)
    backtest_plans = [plan.to_json() for plan in run_plans(setup.site, run)]
    api = BatterySystem(policy=policy, site=setup.site)
    api_plans = [
        api.make_decision(t.energy_price, t.hash_price, t.token_price, timestamp=t.timestamp)["site_plan"]
        for t in ticks
    ]
    assert len(worker_plans) == len(ticks)
    assert worker_plans == backtest_plans == api_plans
    assert any(plan["battery_mw"] != 0 for plan in worker_plans), "the battery trades in the second day"

    same = await replay(settings, ReplayOptions())
    assert same.identical
    assert same.report.totals().matched == len(ticks)

    smaller = load_settings(
        None, {**settings.model_dump(mode="python", exclude={"site"}), "site": {"import_limit_mw": 30.0}}
    )
    diverged = await replay(smaller, ReplayOptions())
    assert diverged.report.totals().diverged > 0
    first = diverged.report.sites["mara"].first
    assert first is not None
    assert first.recorded is not None
    assert first.recomputed is not None
    assert first.recorded["site_plan"] != first.recomputed["site_plan"]
