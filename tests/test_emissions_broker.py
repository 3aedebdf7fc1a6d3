"""Worker, replay, backtest and the Python API agree on emissions for the same ticks (issue 18).

A week of ERCOT prices with its carbon intensity, five hours of it missing (three carried, then two
unknown), through ``mpc`` with a carbon price. The worker restarts halfway: its totals and the carried
intensity come back from the state topic. Every action's and history record's step emissions, and the last
status's running totals, must equal what the backtest's run counted and what ``BatterySystem`` answers, to
the bit; so must the whole site's running total, the sum of the actions' ``site_plan.grid_import_kg``.
The audit replay recomputes every event byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from battery_worker import BatterySystem
from battery_worker.backtest.engine import run_policy
from battery_worker.emissions import emissions
from battery_worker.fleet.accounting import run_plans
from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.policies import make_policy
from battery_worker.pricefiles import load_ticks
from tests.workerkit import DATA, feed, make_settings, read_published, run_with_a_restart, unique_actions

pytestmark = pytest.mark.broker

POLICY: dict[str, Any] = {"name": "mpc", "params": {"carbon_price": 50.0}}
MISSING = range(40, 45)
"""Hours without an intensity: 40-42 carried from hour 39 (carry_hours = 3), 43-44 unknown."""


def _nan_for_none(value: float | None) -> float:
    return math.nan if value is None else value


async def test_worker_replay_backtest_and_api_agree_on_emissions(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(
        kafka_bootstrap,
        new_topic_name(),
        new_group_id(),
        partitions=1,
        policy=POLICY,
        worker={"max_batch_records": 20},
    )
    ticks = load_ticks(DATA / "ercot_2023-08-01_07.csv", carbon_file=DATA / "ercot_carbon_2023-08-01_07.csv")
    ticks = [
        t.model_copy(update={"carbon_intensity": None}) if i in MISSING else t for i, t in enumerate(ticks)
    ]
    assert all(t.carbon_intensity is not None for i, t in enumerate(ticks) if i not in MISSING)
    await feed(settings, ticks, "ercot")
    half = 42  # stops while the intensity of hour 39 is being carried
    await run_with_a_restart(settings, ticks, half)

    published = await read_published(settings)
    actions = unique_actions(published)
    history = sorted({h.event_id: h for h in published.history}.values(), key=lambda h: h.timestamp)
    statuses = sorted({s.event_id: s for s in published.statuses}.values(), key=lambda s: s.ticks_applied)
    assert len(actions) == len(history) == len(statuses) == len(ticks)
    assert {a.schema_version for a in actions} == {3}
    assert {s.schema_version for s in statuses} == {3}  # version 3 added the wear
    assert {h.schema_version for h in history} == {2}
    worker_steps = [a.emissions.model_dump() for a in actions if a.emissions]
    assert worker_steps == [h.emissions.model_dump() for h in history if h.emissions]
    last = statuses[-1].emissions
    assert last is not None

    setup = settings.site_directory().default
    policy = make_policy(POLICY["name"], POLICY["params"], site=setup.site)
    run = run_policy(ticks, setup.config, policy, carry_hours=settings.emissions.carry_hours)
    net = [_nan_for_none(step["net_kg"]) for step in worker_steps]
    assert net == pytest.approx(run.net_kg.tolist(), nan_ok=True, abs=0.0, rel=0.0)
    assert [step["carbon_intensity"] for step in worker_steps] == list(run.used_intensities)
    backtest = run.emissions
    assert (last.total_bought_kg, last.total_avoided_kg, last.total_net_kg) == (
        backtest.bought_kg,
        backtest.avoided_kg,
        backtest.net_kg,
    )
    assert (last.steps, last.unknown_steps, last.coverage) == (len(ticks), 2, backtest.coverage)
    assert [s["intensity_carried"] for s in worker_steps[39:45]] == [False, True, True, True, False, False]
    assert [s["net_kg"] is None for s in worker_steps[39:45]] == [False] * 4 + [True] * 2
    assert any(step["bought_kg"] for step in worker_steps)
    assert any(step["avoided_kg"] for step in worker_steps)
    # the emissions module's own fold over the run's energies: the same figures, to rounding
    folded = emissions(run.timestamps, run.intensities, run.bought_mwh.tolist(), run.delivered_mwh.tolist())
    assert folded.net_kg == pytest.approx(last.total_net_kg, rel=1e-9)
    # the site's emissions in the plan: its grid import at the step's intensity
    plans = [a.site_plan for a in actions if a.site_plan]
    assert plans[0].grid_import_kg == pytest.approx(
        plans[0].grid_import_mw * plans[0].hours * worker_steps[0]["carbon_intensity"]
    )
    assert plans[43].grid_import_kg is None
    # the whole site's running total: the actions' grid_import_kg summed, carried over the restart
    running, site_kg = [], 0.0
    for plan in plans:
        site_kg += 0.0 if plan.grid_import_kg is None else plan.grid_import_kg
        running.append(site_kg)
    assert [step["total_site_kg"] for step in worker_steps] == running
    assert last.total_site_kg == site_kg > last.total_bought_kg
    assert running[half] > running[half - 1], "counted on after the restart"
    backtest_site = 0.0
    for site_plan in run_plans(setup.site, run, curtail=setup.plans_machines):
        backtest_site += 0.0 if site_plan.grid_import_kg is None else site_plan.grid_import_kg
    assert backtest_site == site_kg

    api = BatterySystem(policy=make_policy(POLICY["name"], POLICY["params"]), site=setup.site)
    api_steps = [
        api.make_decision(
            t.energy_price,
            t.hash_price,
            t.token_price,
            timestamp=t.timestamp,
            carbon_intensity=t.carbon_intensity,
        )["emissions"]
        for t in ticks
    ]
    assert api_steps == worker_steps
    totals = api.get_status()["emissions"]
    assert (totals["total_net_kg"], totals["unknown_steps"]) == (last.total_net_kg, 2)
    assert totals["total_site_kg"] == last.total_site_kg

    same = await replay(settings, ReplayOptions())
    assert same.identical
    assert same.report.totals().matched == len(ticks)
