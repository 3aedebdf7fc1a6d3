"""The ``site`` policy: deterministic, restartable through its memory, and better than running everything."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest

from battery_worker.backtest.engine import run_policy
from battery_worker.battery import Action
from battery_worker.battery_config import BatteryConfig
from battery_worker.dispatch import SiteState, new_site_state
from battery_worker.errors import InvalidConfig
from battery_worker.fleet import SiteModel
from battery_worker.fleet.accounting import no_battery_profit, run_plans, run_profit
from battery_worker.fleet.optimum import site_optimum
from battery_worker.policies.forecast import profile_forecast
from battery_worker.policies.site import SiteMemory, SitePolicy
from battery_worker.pricefiles import load_ticks
from battery_worker.ticks import PriceTick

DATA = Path(__file__).parent / "data"
CONFIG = BatteryConfig()
SITE = SiteModel()


@pytest.fixture(scope="module")
def mara_48h() -> list[PriceTick]:
    return load_ticks(DATA / "mara_api_5min_2025-05-22_48h.json")


def test_memory_dumps_to_json_and_loads_back_equal(mara_48h: list[PriceTick]) -> None:
    policy = SitePolicy(warmup_hours=2)
    run = run_policy(mara_48h[:60], CONFIG, policy)
    memory = run.final.policy_memory
    assert isinstance(memory, SiteMemory)
    stored = orjson.loads(orjson.dumps(policy.dump_memory(memory)))
    assert policy.load_memory(stored) == memory
    assert policy.load_memory(None) == policy.initial_memory()
    with pytest.raises(InvalidConfig, match="policy_memory"):
        policy.load_memory({"energy": stored["energy"]})


def test_decisions_are_deterministic_and_a_restart_decides_as_an_uninterrupted_run(
    mara_48h: list[PriceTick],
) -> None:
    policy = SitePolicy(warmup_hours=2, horizon_hours=12)
    ticks = mara_48h[:72]
    whole = run_policy(ticks, CONFIG, policy)
    assert run_policy(ticks, CONFIG, policy).decisions == whole.decisions
    first = run_policy(ticks[:40], CONFIG, policy)
    stored = orjson.loads(orjson.dumps(policy.dump_memory(first.final.policy_memory)))
    restored = SiteState(battery=first.final.battery, policy_memory=policy.load_memory(stored))
    rest = run_policy(ticks[40:], CONFIG, policy, site=restored)
    assert first.decisions + rest.decisions == whole.decisions
    assert any(d.reason.startswith("site plan: charge") for d in whole.decisions)


def test_the_plans_respect_the_site_limits(mara_48h: list[PriceTick]) -> None:
    run = run_policy(mara_48h[:72], CONFIG, SitePolicy(warmup_hours=2, horizon_hours=12))
    plans = run_plans(SITE, run)
    assert len(plans) == 72
    for plan in plans:
        assert plan.grid_import_mw <= SITE.import_limit_mw + 1e-9
        assert plan.grid_export_mw == plan.spilled_mw == pytest.approx(0.0)


def test_the_site_policy_earns_more_than_every_machine_always_on(mara_48h: list[PriceTick]) -> None:
    # The first day warms up (the battery holds, the machines are planned all the same).
    site = run_profit(SITE, CONFIG, run_policy(mara_48h, CONFIG, SitePolicy())).profit
    always_on = no_battery_profit(SITE, CONFIG, mara_48h).profit
    optimum = site_optimum(SITE, CONFIG, mara_48h).profit
    assert always_on < site <= optimum
    assert site >= 0.9 * optimum


def test_a_bad_site_is_refused_by_the_policy() -> None:
    with pytest.raises(InvalidConfig, match="site"):
        SitePolicy(site="big")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="warmup_hours"):
        SitePolicy(warmup_hours=500)


@pytest.fixture(scope="module")
def ercot_fortnight_unpaid() -> list[PriceTick]:
    """The bundled ERCOT fortnight with nothing paying the machines: its first day opens at 645 and 741."""
    ticks = load_ticks(Path(__file__).parents[1] / "battery_worker" / "data" / "ercot_2023-08-01_14.csv")
    return [tick.model_copy(update={"hash_price": 0.0, "token_price": 0.0}) for tick in ticks]


def test_the_forecast_stays_within_the_prices_seen(ercot_fortnight_unpaid: list[PriceTick]) -> None:
    """A review run as the site operator: a day that began at 645 and 741 made the next day's profile at
    that hour about 700, and a price of 146 there departed from it by −554, so the next 24 hours were
    forecast at −130 to −410 on a market that had never gone below 17."""
    history = np.array([tick.energy_price for tick in ercot_fortnight_unpaid[:25]])
    policy = SitePolicy()
    forecast = profile_forecast(
        history,
        24,
        days=policy.profile_days,
        recent_weight=policy.recent_weight,
        spike_quantile=policy.spike_quantile,
        level_decay=policy.level_decay,
    )
    assert forecast.min() >= history.min()
    assert forecast.max() <= history.max()


def test_a_site_with_nothing_to_run_never_discharges_into_nothing(
    ercot_fortnight_unpaid: list[PriceTick],
) -> None:
    """With hash and token at 0 every machine is curtailed and, without export, the battery has nowhere
    to discharge (docs/site.md). It discharged 20, 20 and 7.4 MW, all spilled, then bought back."""
    run = run_policy(ercot_fortnight_unpaid, CONFIG, SitePolicy())
    assert run.delivered_mwh.sum() == 0.0
    assert run.bought_mwh.sum() > 0  # it still stores cheap energy at the end value: not a policy that idles


def test_negative_prices_ahead_never_make_the_site_discharge_into_nothing() -> None:
    """Review runs as a site manager and a data engineer (DE-LU's and CAISO's spring, hash and token at 0,
    no export): the LP ran its continuous machines for nothing on the battery's energy, to make room for
    being paid to charge at negative prices, but the step's whole machines do not run for nothing, so every
    such discharge was spilled (452 MWh in a DE-LU May) and still counted as avoided cost. Here 502 MWh."""
    at = datetime(2023, 5, 1, tzinfo=UTC)
    ticks = []
    for step in range(24 * 6):
        hour = step % 24
        price = -30.0 if 10 <= hour < 16 else 90.0 if 18 <= hour < 22 else 40.0
        when = at + timedelta(hours=step)
        ticks.append(PriceTick(energy_price=price, hash_price=0.0, token_price=0.0, timestamp=when))
    run = run_policy(ticks, CONFIG, SitePolicy())
    plans = run_plans(SiteModel(), run, curtail=True)
    assert max(plan.spilled_mw for plan in plans) == 0.0
    assert run.delivered_mwh.sum() == 0.0
    assert run.bought_mwh.sum() > 0  # paid to charge while it has room
    held = [d.reason for d in run.decisions if "no machine earns its energy now" in d.reason]
    assert held, "the reason says why the plan's discharge was not made"


def test_a_site_that_takes_no_discharge_holds_rather_than_discharging_at_0_mw() -> None:
    """A site with no machines and no export: the plan's discharge has no outlet, so the site window is 0 MW
    and "discharge" at 0 MW told the schedulers to discharge."""
    policy = SitePolicy(site=SiteModel(machines=()), warmup_hours=1)
    battery = new_site_state(CONFIG, policy).battery
    at = datetime(2023, 8, 1, tzinfo=UTC)
    memory = None
    for hour, price in enumerate([-50.0, 500.0, -50.0, 500.0, 900.0]):
        when = at + timedelta(hours=hour)
        tick = PriceTick(energy_price=price, hash_price=60, token_price=25, timestamp=when)
        decided, memory = policy.decide(tick, battery, CONFIG, memory)
        assert decided.action != Action.DISCHARGE, decided
