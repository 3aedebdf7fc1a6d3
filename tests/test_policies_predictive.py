"""Adaptive and MPC policies: determinism, restart through dump/load, bounded memory, fallback, forecasts."""

from __future__ import annotations

import math
import tracemalloc
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from battery_worker.backtest.engine import backtest, run_policy
from battery_worker.battery import Action, BatteryConfig
from battery_worker.dispatch import SiteState
from battery_worker.errors import InvalidConfig
from battery_worker.policies import POLICIES, make_policy
from battery_worker.policies.adaptive import AdaptivePolicy
from battery_worker.policies.base import Policy, PolicyMemory
from battery_worker.policies.forecast import (
    HourlyHistory,
    _profile_hour,
    analog_forecast,
    daily_profile,
    departed,
    flat_forecast,
    pack_means,
    profile_forecast,
)
from battery_worker.policies.intra_hour import IntraHour
from battery_worker.policies.mpc import MpcPolicy
from battery_worker.pricefiles import load_ticks
from battery_worker.ticks import PriceTick, make_tick

DATA = Path(__file__).parent / "data"
CONFIG = BatteryConfig()
T0 = datetime(2023, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def ercot_week() -> list[PriceTick]:
    return load_ticks(DATA / "ercot_2023-08-01_07.csv")


@pytest.fixture(scope="module")
def mara_5min() -> list[PriceTick]:
    return load_ticks(DATA / "mara_api_5min_2025-05-22_48h.json")


def daily_cycle(days: int) -> list[PriceTick]:
    """Cheap nights, dear evenings: a shape a predictive policy should learn within a day."""
    return [
        make_tick(50.0 + 40.0 * math.sin(2 * math.pi * (h % 24) / 24.0), 0.0, 0.0, T0 + timedelta(hours=h))
        for h in range(24 * days)
    ]


PREDICTIVE: list[Policy] = [AdaptivePolicy(), MpcPolicy()]


def test_registered_and_selectable_by_name() -> None:
    assert {"threshold", "adaptive", "mpc"} <= set(POLICIES)
    assert isinstance(make_policy("mpc", {"horizon_hours": 24.0}), MpcPolicy)
    with pytest.raises(InvalidConfig):
        make_policy("adaptive", {"charge_quantile": 0.9, "discharge_quantile": 0.1})


@pytest.mark.parametrize("policy", PREDICTIVE, ids=lambda p: p.name)
@pytest.mark.parametrize("source", ["ercot_week", "mara_5min"])
def test_same_ticks_same_decisions(policy: Policy, source: str, request: pytest.FixtureRequest) -> None:
    ticks = request.getfixturevalue(source)
    first = run_policy(ticks, CONFIG, policy)
    second = run_policy(ticks, CONFIG, policy)
    assert first.decisions == second.decisions
    assert first.final == second.final


@pytest.mark.parametrize("policy", PREDICTIVE, ids=lambda p: p.name)
@pytest.mark.parametrize("source", ["ercot_week", "mara_5min"])
def test_restart_half_way_through_dump_and_load(
    policy: Policy, source: str, request: pytest.FixtureRequest
) -> None:
    ticks = request.getfixturevalue(source)
    whole = run_policy(ticks, CONFIG, policy)
    half = len(ticks) // 2
    first = run_policy(ticks[:half], CONFIG, policy)
    stored = orjson.dumps(policy.dump_memory(first.final.policy_memory))
    restored = SiteState(
        battery=first.final.battery,
        policy_memory=policy.load_memory(orjson.loads(stored)),
        emissions=first.final.emissions,  # restored from the state record too
    )
    assert restored.policy_memory == first.final.policy_memory
    second = run_policy(ticks[half:], CONFIG, policy, site=restored)
    assert first.decisions + second.decisions == whole.decisions
    assert second.final == whole.final


@pytest.mark.parametrize("policy", PREDICTIVE, ids=lambda p: p.name)
def test_memory_is_bounded_and_never_mutated(policy: Policy, mara_5min: list[PriceTick]) -> None:
    memory = policy.initial_memory()
    battery = run_policy(mara_5min[:1], CONFIG, policy).final.battery
    for tick in mara_5min[1:]:
        before = orjson.dumps(policy.dump_memory(memory))
        _decision, new_memory = policy.decide(tick, battery, CONFIG, memory)
        assert orjson.dumps(policy.dump_memory(memory)) == before
        memory = new_memory
    history = memory.history if isinstance(memory, IntraHour) else memory
    assert isinstance(history, HourlyHistory)
    assert len(history.means) <= history.max_hours
    long_run = HourlyHistory(24)
    for hour in range(1000):
        long_run = long_run.add(T0 + timedelta(hours=hour), float(hour))
    assert long_run.means == tuple(float(hour) for hour in range(975, 999))  # hour 999 is open


@pytest.mark.parametrize("policy", PREDICTIVE, ids=lambda p: p.name)
def test_learns_a_daily_cycle(policy: Policy) -> None:
    _run, summary = backtest(daily_cycle(6), CONFIG, policy)
    # One warm-up day is lost; the five days after it should be traded well.
    assert summary.capture_ratio is not None
    assert summary.capture_ratio > 0.6


def test_warm_up_holds_only_until_a_whole_hour_is_known() -> None:
    run = run_policy(daily_cycle(1)[:10], CONFIG, MpcPolicy())
    assert run.decisions[0].action is Action.HOLD
    assert run.decisions[0].reason.startswith("warming up")
    assert not any(d.reason.startswith("warming up") for d in run.decisions[1:])
    holding = run_policy(daily_cycle(1)[:10], CONFIG, MpcPolicy(plan_from_hours=24))
    assert all(d.reason.startswith("warming up") for d in holding.decisions)


def test_short_history_plans_on_the_median_of_what_is_known() -> None:
    # Less than a day of prices: a dip below the median so far is bought, a peak above it is sold.
    prices = [50.0, 50.0, 52.0, 10.0, 48.0, 120.0]
    ticks = [make_tick(p, 0.0, 0.0, T0 + timedelta(hours=h)) for h, p in enumerate(prices)]
    run = run_policy(ticks, CONFIG, MpcPolicy())
    assert [d.action for d in run.decisions][3:] == [Action.CHARGE, Action.HOLD, Action.DISCHARGE]
    assert all(d.reason.startswith("mpc plan") for d in run.decisions[1:])


def test_flat_forecast_is_the_median_so_one_spike_does_not_move_it() -> None:
    assert list(flat_forecast(np.array([20.0, 22.0, 900.0]), 3)) == [22.0, 22.0, 22.0]


def test_mpc_falls_back_to_adaptive_when_the_solver_gives_up(ercot_week: list[PriceTick]) -> None:
    # One simplex iteration is never enough: every decision after warm-up must come from the fallback.
    capped = MpcPolicy(max_iterations=1)
    run = run_policy(ercot_week, CONFIG, capped)
    after_warmup = run.decisions[24:]
    assert all(d.reason.startswith("mpc fallback") for d in after_warmup)
    adaptive = run_policy(ercot_week, CONFIG, capped.fallback)
    assert [d.action for d in after_warmup] == [d.action for d in adaptive.decisions[24:]]


def test_hourly_history_folds_ticks_into_hours_and_fills_gaps() -> None:
    history = HourlyHistory(10)
    for minute, price in ((0, 1.0), (30, 3.0), (60, 5.0)):
        history = history.add(T0 + timedelta(minutes=minute), price)
    assert history.means == (2.0,)
    assert list(history.known()) == [2.0, 5.0]
    history = history.add(T0 + timedelta(hours=4), 7.0)  # hours 2 and 3 had no tick
    assert list(history.known()) == [2.0, 5.0, 5.0, 5.0, 7.0]
    assert HourlyHistory.load(orjson.loads(orjson.dumps(history.dump()))) == history


@pytest.mark.parametrize("days", [1, 7, 8, 14])
def test_the_daily_profile_computed_at_once_is_the_per_hour_rule_bit_for_bit(days: int) -> None:
    # Whole rows go through one array, the rest hour by hour (_profile_hour, the rule); decisions and
    # replay need the very same doubles either way. 8 and 14 days sum by numpy's pairwise path.
    rng = np.random.default_rng(days)
    for size in (1, 23, 24 * days, 24 * days + 1, 24 * (days + 1), 168, 696):
        history = rng.normal(50.0, 30.0, size) + rng.standard_cauchy(size)
        for horizon in (0, 1, 24, 25, 48, 49, 72):
            profile = daily_profile(history, horizon, days=days, recent_weight=0.3, spike_quantile=0.98)
            capped = np.minimum(history, float(np.quantile(history, 0.98)))
            rule = [_profile_hour(capped, k, days, 0.3) for k in range(horizon + 1)]
            assert profile.tobytes() == np.array(rule).tobytes(), (size, horizon)


def test_profile_forecast_repeats_a_periodic_day() -> None:
    day = np.array([10.0 + h for h in range(24)])
    history = np.tile(day, 3)[:-5]  # ends at hour 18 of the third day
    forecast = profile_forecast(history, 24, days=2, recent_weight=0.5, spike_quantile=1.0, level_decay=0.9)
    assert list(forecast) == pytest.approx(list(np.roll(day, -19)))


def test_invalid_params_are_refused() -> None:
    with pytest.raises(InvalidConfig, match="horizon_hours"):
        MpcPolicy(horizon_hours=0)
    with pytest.raises(InvalidConfig, match="history_hours"):
        MpcPolicy(history_hours=12)
    with pytest.raises(InvalidConfig, match="window_hours"):
        AdaptivePolicy(window_hours=1)
    with pytest.raises(InvalidConfig, match="soc_tilt=True: must be within 0-1"):
        AdaptivePolicy(soc_tilt=True)
    with pytest.raises(InvalidConfig, match="level_decay=False: must be within 0-1"):
        MpcPolicy(level_decay=False)
    with pytest.raises(InvalidConfig, match=r"analog_weight=1\.5: must be within 0-1"):
        MpcPolicy(analog_weight=1.5)
    with pytest.raises(InvalidConfig, match="analog_neighbours=8: must not exceed analog_days"):
        MpcPolicy(analog_days=7, analog_neighbours=8)
    with pytest.raises(InvalidConfig, match="analog_window_hours"):
        MpcPolicy(analog_window_hours=0)


def intra_hour_alternation(days: int) -> list[PriceTick]:
    """5-minute ticks: a daily cycle of hourly means; inside every hour, cheap and dear slots alternate."""
    ticks = []
    for i in range(days * 288):
        at = T0 + timedelta(minutes=5 * i)
        hourly_mean = 50.0 + 30.0 * math.sin(2 * math.pi * at.hour / 24.0)
        ticks.append(make_tick(hourly_mean + (-4.0 if i % 2 == 0 else 4.0), 0.0, 0.0, at))
    return ticks


def test_sub_hourly_plan_trades_the_slots_inside_the_hour() -> None:
    ticks = intra_hour_alternation(2)
    # Holding through the warm-up (plan_from_hours) keeps the two runs alike until the shape is learned.
    quick = partial(
        MpcPolicy, warmup_hours=12, plan_from_hours=12, history_hours=24, fallback=AdaptivePolicy(12, 12)
    )
    runs = {sub: backtest(ticks, CONFIG, quick(sub_hourly=sub)) for sub in (True, False)}
    decisions = runs[True][0].decisions[144:]  # after the warm-up

    def count(action: Action, parity: int) -> int:
        return sum(1 for i, d in enumerate(decisions) if d.action is action and i % 2 == parity)

    # Knowing a dear slot comes next, the sub-hourly plan buys in cheap slots and sells in dear ones, and
    # earns more than the hourly plan, which sees the rest of each hour only through the hours after it.
    # Its level is measured from the daily profile, so the hours' daily cycle is not taken for a departure
    # (a level of raw prices lagged that cycle by more than the slots' spread and earned no more).
    assert count(Action.CHARGE, 0) > 3 * count(Action.CHARGE, 1)
    assert count(Action.DISCHARGE, 1) > 3 * count(Action.DISCHARGE, 0)
    assert runs[True][1].value > 1.08 * runs[False][1].value > 0


def test_hourly_ticks_plan_as_the_hourly_plan(ercot_week: list[PriceTick]) -> None:
    assert run_policy(ercot_week, CONFIG, MpcPolicy()).decisions == (
        run_policy(ercot_week, CONFIG, MpcPolicy(sub_hourly=False)).decisions
    )


def test_intra_hour_memory_dumps_and_loads_to_an_equal_value(mara_5min: list[PriceTick]) -> None:
    policy = MpcPolicy()
    memory = run_policy(mara_5min[:100], CONFIG, policy).final.policy_memory
    assert isinstance(memory, IntraHour)
    assert memory.gap_seconds == 300.0
    assert any(memory.shape)
    assert any(memory.slot_counts)
    assert policy.load_memory(orjson.loads(orjson.dumps(policy.dump_memory(memory)))) == memory
    # A worker upgraded in place reads the bare hourly history the mpc stored before: the rest starts empty.
    assert policy.load_memory(memory.history.dump()) == IntraHour(memory.history)
    with pytest.raises(InvalidConfig, match="12 slots"):
        policy.load_memory({**orjson.loads(orjson.dumps(memory.dump())), "shape": [0.0]})


def test_wear_makes_the_plan_cycle_less() -> None:
    winter = load_ticks(DATA / "ercot_2023_first_2400h.csv")[:336]
    plain = run_policy(winter, CONFIG, MpcPolicy())
    worn = run_policy(winter, BatteryConfig(cycle_cost_per_mwh=40.0), MpcPolicy())
    assert worn.delivered_mwh.sum() < 0.2 * plain.delivered_mwh.sum()
    # Without wear the plan is the one it was before wear existed.
    assert run_policy(winter, BatteryConfig(cycle_cost_per_mwh=0.0), MpcPolicy()).decisions == plain.decisions


@pytest.mark.parametrize("zone", ["UTC", "America/Chicago"])
@pytest.mark.parametrize("source", ["ercot_week", "mara_5min"])
def test_the_plan_keeps_within_the_daily_cycle_cap(
    source: str, zone: str, request: pytest.FixtureRequest
) -> None:
    ticks = request.getfixturevalue(source)
    config = BatteryConfig(max_cycles_per_day=0.5, cycle_day_timezone=zone)
    cap = config.daily_delivery_cap_mwh
    assert cap is not None
    run = run_policy(
        ticks, config, MpcPolicy(warmup_hours=12, history_hours=24, fallback=AdaptivePolicy(12, 12))
    )
    per_day: dict[object, float] = {}
    steps = zip(run.timestamps, run.decisions, run.durations_hours, run.delivered_mwh, strict=True)
    for at, decision, hours, delivered in steps:
        day = at.astimezone(ZoneInfo(zone)).date()
        before = per_day.get(day, 0.0)
        if decision.action is Action.DISCHARGE:
            # The plan asks for no more than the cap leaves today: the battery never has to clamp it.
            assert decision.power_mw * hours <= cap - before + 1e-6
        per_day[day] = before + float(delivered)
    assert max(per_day.values()) <= cap + 1e-9
    assert max(per_day.values()) > 0.5 * cap


def falling_spike_after_calm_days(days: int) -> list[PriceTick]:
    """5-minute ticks: calm days near 1.0, then an hour that opens at 3.0 and falls to 2.0 (the MARA event's
    shape: its first hour falls from 3.00 to 2.07 after a month near 1)."""
    calm = [
        make_tick(1.0 + (0.02 if i % 2 else -0.02), 0.0, 0.0, T0 + timedelta(minutes=5 * i))
        for i in range(days * 288)
    ]
    start = T0 + timedelta(days=days)
    fall = [3.0, 2.8, 2.6, 2.4, 2.2, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    return calm + [make_tick(p, 0.0, 0.0, start + timedelta(minutes=5 * i)) for i, p in enumerate(fall)]


def test_a_falling_hour_is_planned_from_its_level_not_its_lagging_mean() -> None:
    ticks = falling_spike_after_calm_days(2)
    run = run_policy(ticks, CONFIG, MpcPolicy())
    spike = run.decisions[-12:]
    # Twice anything seen before and falling: sell while it lasts. The hour's mean so far (2.5 at 2.0) lags
    # the fall; planning the coming hours from it would buy at 2.0 to sell at a 2.5 that never comes.
    assert [d.action for d in spike] == [Action.DISCHARGE] * 12


def test_the_forecast_is_the_profile_plus_a_fading_departure() -> None:
    history = np.tile(np.full(24, 10.0), 3)
    history[-1] = 30.0  # the open hour's mean so far
    profile = daily_profile(history, 3, days=2, recent_weight=0.5, spike_quantile=1.0)
    assert list(profile) == pytest.approx([10.0] * 4)
    forecast = profile_forecast(history, 3, days=2, recent_weight=0.5, spike_quantile=1.0, level_decay=0.5)
    assert list(forecast) == pytest.approx([20.0, 15.0, 12.5])
    assert list(departed(profile, 4.0, 0.5)) == pytest.approx([12.0, 11.0, 10.5])


def test_the_level_is_a_time_weighted_mean_of_departures_from_the_profile() -> None:
    start = T0.timestamp()
    memory = IntraHour(HourlyHistory(24)).add(T0, 12.0, 0.95).with_level(12.0, 10.0, 3600.0)
    assert memory.level == 2.0, "the first tick sets it"
    five = memory.add(T0 + timedelta(minutes=5), 22.0, 0.95).with_level(22.0, 10.0, 3600.0)
    hour = memory.add(T0 + timedelta(minutes=60), 22.0, 0.95).with_level(22.0, 10.0, 3600.0)
    # A tick 5 minutes on moves the level by 1 − e^(−5/60) of the way, one an hour on by 1 − e^(−1).
    assert five.level == pytest.approx(2.0 + 10.0 * (1 - math.exp(-5 / 60)))
    assert hour.level == pytest.approx(2.0 + 10.0 * (1 - math.exp(-1)))
    near = five.near_term(7200.0, expected=10.0)
    assert near is not None
    assert five.level is not None
    assert list(near.prices) == pytest.approx([10.0 + five.level] * near.prices.size)
    assert near.ends[0] == start + 600.0
    # Stored and read back; a memory stored before the level existed starts it at the next tick.
    dumped = orjson.loads(orjson.dumps(five.dump()))
    assert IntraHour.load(dumped) == five
    older = IntraHour.load({k: v for k, v in dumped.items() if k != "level"})
    assert older.level is None
    assert older.near_term(7200.0, expected=10.0) is None
    with pytest.raises(InvalidConfig, match="level_minutes"):
        MpcPolicy(level_minutes=0)


def test_the_estimate_is_the_last_tick_where_prices_hold_and_the_level_where_they_wobble() -> None:
    """A review run: on hourly prices held over four 15-minute ticks the level lagged every hour's move, and
    the sub-hourly plan earned 87.6 % of the optimum against 89.8 % planning hourly."""

    def memory_after(prices: list[float], minutes: int) -> IntraHour:
        memory = IntraHour(HourlyHistory(24))
        for i, price in enumerate(prices):
            at = T0 + timedelta(minutes=minutes * i)
            memory = memory.add(at, price, 0.95).with_level(price, 10.0, 3600.0)
        return memory

    held = memory_after([10.0 + 5.0 * (i // 4 % 3) for i in range(96)], 15)  # a step each hour
    assert held.level_share is not None
    assert held.level_share < 0.5
    assert held.estimate == held.last_departure != held.level
    wobbling = memory_after([10.0 + (3.0 if i % 2 else -3.0) for i in range(96)], 5)
    assert wobbling.level_share is not None
    assert wobbling.level_share > 0.5
    assert wobbling.estimate == wobbling.level != wobbling.last_departure
    near = held.near_term(7200.0, expected=10.0)
    assert near is not None
    assert held.estimate is not None
    assert list(near.prices) == pytest.approx([10.0 + held.estimate] * near.prices.size)
    dumped = orjson.loads(orjson.dumps(held.dump()))
    assert IntraHour.load(dumped) == held
    # Stored before the share existed: the level prices the plan, as it did then, until the next tick.
    older = IntraHour.load(
        {k: v for k, v in dumped.items() if k not in ("last_departure", "level_wins", "wins_weight")}
    )
    assert older.estimate == older.level == held.level
    # Its next tick starts the last departure, the one after the share: held prices turn to the last tick.
    at = T0 + timedelta(minutes=15 * 96)
    for i in range(8):
        price = 10.0 + 5.0 * ((96 + i) // 4 % 3)
        older = older.add(at + timedelta(minutes=15 * i), price, 0.95).with_level(price, 10.0, 3600.0)
    assert older.level_share is not None
    assert older.level_share < 0.5
    assert older.estimate == older.last_departure


def test_one_early_tick_does_not_decide_the_estimate_for_a_day() -> None:
    """The share is of the ticks seen so far (a weighted sum over its weight, not a mean started at the
    first result): a jump held for two ticks at the start, which the last tick predicts best, does not keep
    the estimate on the last tick through the wobbling after it."""
    memory = IntraHour(HourlyHistory(24))
    prices = [10.0, 20.0, 20.0, 20.0, *(10.0 + (3.0 if i % 2 else -3.0) for i in range(40))]
    for i, price in enumerate(prices):
        at = T0 + timedelta(minutes=5 * i)
        memory = memory.add(at, price, 0.95).with_level(price, 10.0, 3600.0)
    assert memory.level_share is not None
    assert memory.level_share > 0.5, "forty ticks of wobbling outweigh one early jump"
    assert memory.estimate == memory.level


def test_hourly_prices_over_15_minute_ticks_plan_as_the_hourly_prices_do(ercot_week: list[PriceTick]) -> None:
    quarter = [
        tick.model_copy(update={"timestamp": tick.timestamp + timedelta(minutes=15 * k)})
        for tick in ercot_week
        for k in range(4)
    ]
    hourly = backtest(ercot_week, CONFIG, MpcPolicy())[1].capture_ratio
    held = backtest(quarter, CONFIG, MpcPolicy())[1].capture_ratio
    assert held is not None
    assert hourly is not None
    assert held >= hourly - 0.01, (held, hourly)


def quiet_then_spiky_days(pattern: str) -> npt.NDArray[np.float64]:
    """Hourly prices, one day per letter: ``q`` a quiet day (10 all day, a morning bump to 20 at 06-09),
    ``s`` a spiky one (10 all day, 50 at 17-20)."""
    quiet = np.full(24, 10.0)
    quiet[6:10] = 20.0
    spiky = np.full(24, 10.0)
    spiky[17:21] = 50.0
    return np.concatenate([quiet if day == "q" else spiky for day in pattern])


def test_the_nearest_past_days_continue_the_forecast() -> None:
    # Eight weeks where a quiet day always follows a spiky one, then today: a quiet morning after a spiky day.
    history = np.concatenate([quiet_then_spiky_days("ssqs" * 14 + "s"), quiet_then_spiky_days("q")[:12]])
    profile = daily_profile(history[-168:], 48, days=7, recent_weight=0.5, spike_quantile=0.98)
    base = departed(profile, float(history[-1]) - profile[0], 0.97)
    evening = slice(17 - 12, 21 - 12)  # hours 17-20 today: the forecast starts at 12, the hour after now
    assert base[evening].min() > 20  # the profile: a spike most evenings
    analog = analog_forecast(history, base, days=28, neighbours=5, window_hours=24, weight=1.0)
    # Every past quiet morning after a spiky day went on quietly: the whole next day is 10.
    assert analog[:24] == pytest.approx(np.full(24, 10.0))
    assert np.array_equal(analog[24:], base[24:])  # beyond a day, the profile alone
    half = analog_forecast(history, base, days=28, neighbours=5, window_hours=24, weight=0.5)
    assert half[:24] == pytest.approx((base[:24] + 10.0) / 2)
    off = analog_forecast(history, base, days=28, neighbours=5, window_hours=24, weight=0.0)
    assert off is base
    # Fewer past days than neighbours: nothing to compare with, the forecast as it was.
    assert analog_forecast(history[-100:], base, days=28, neighbours=5, window_hours=24, weight=1.0) is base


def test_a_day_unlike_any_before_keeps_its_forecast() -> None:
    """A month of calm days, then prices jump to 30 (the MARA event after its 30 days): no past day is nearer
    than a typical one, so none continues today; the profile and its fading departure plan."""
    calm = 10.0 + np.random.default_rng(7).normal(0.0, 0.5, 29 * 24)
    history = np.concatenate([calm, [30.0, 30.0, 30.0]])
    profile = daily_profile(history[-168:], 48, days=7, recent_weight=0.5, spike_quantile=0.98)
    base = departed(profile, float(history[-1]) - profile[0], 0.97)
    blended = analog_forecast(history, base, days=28, neighbours=5, window_hours=24, weight=1.0)
    # Continued at full weight, the calm days would hold today's 30 for a day: 10 above the faded departure.
    assert 30.0 - base[23] > 9
    assert np.abs(blended - base).max() < 2.0


def load_traced(policy: MpcPolicy, stored: bytes) -> tuple[PolicyMemory, int]:
    """A memory loaded from its stored JSON (parsed here, as from the state topic) and the bytes it holds."""
    tracemalloc.start()
    try:
        restored = policy.load_memory(orjson.loads(stored))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return restored, held


def test_a_restored_full_history_holds_its_hours_as_packed_doubles() -> None:
    # 10,000 mpc sites keep 696 hours each: as a tuple of floats that was 32 bytes an hour, 220 MB.
    policy = MpcPolicy()
    hours = policy.memory_hours
    full = IntraHour(HourlyHistory(hours, pack_means(h / 7 for h in range(hours)), 1000, 5.0, 1))
    stored = orjson.dumps(policy.dump_memory(full))
    restored, held = load_traced(policy, stored)
    assert restored == full
    # 8 bytes an hour plus the rest of the memory (about 4 KB); a tuple of floats held 32 bytes an hour.
    assert hours * 8 <= held < hours * 20
    assert orjson.dumps(policy.dump_memory(restored)) == stored


def test_a_restored_intra_hour_memory_holds_its_slots_as_packed_doubles() -> None:
    # The shape and the slot sums: 12 numbers each, as tuples of floats 850 bytes a site, packed 260.
    policy = MpcPolicy()
    shape = [0.1 * s - 0.3 for s in range(12)]
    sums = [20.0 + s / 3 for s in range(12)]
    history = HourlyHistory(policy.memory_hours).dump()
    stored: dict[str, object] = {"history": history, "last_at": 1.7e9, "gap_seconds": 300.0}
    stored |= {"shape": shape, "slot_sums": sums, "slot_counts": [1] * 12, "level": 0.5}  # dump()'s order
    stored |= {"last_departure": 0.25, "level_wins": 0.75, "wins_weight": 0.9}
    raw = orjson.dumps(stored)
    restored, held = load_traced(policy, raw)
    assert isinstance(restored, IntraHour)
    assert restored.shape == tuple(shape)
    assert restored.slot_sums == tuple(sums)
    assert orjson.dumps(policy.dump_memory(restored)) == raw
    assert held < 1_800  # 1,518 bytes here; 2,108 with the slots as tuples of floats


def test_the_analogs_memory_and_a_shorter_stored_one() -> None:
    policy = MpcPolicy()
    assert policy.memory_hours == 24 * 28 + 24 > policy.history_hours
    assert MpcPolicy(analog_weight=0).memory_hours == policy.history_hours
    # A state written before the analogs kept 168 hours: read back, its hours stay and more may come.
    old = IntraHour(HourlyHistory(168, pack_means(float(h) for h in range(168)), 1000, 5.0, 1))
    loaded = policy.load_memory(old.dump())
    assert loaded.history.max_hours == policy.memory_hours
    assert loaded.history.means == old.history.means
    assert policy.load_memory(policy.dump_memory(loaded)) == loaded


def test_an_unknown_parameter_is_refused_with_the_names_the_policy_takes() -> None:
    """An analyst's review: 'unknown parameters for policy 'threshold'' named none of the right ones, and
    the library's charge_threshold is the policy's charge_below."""
    with pytest.raises(InvalidConfig) as caught:
        make_policy("threshold", {"charge_threshold": 25})
    assert str(caught.value) == (
        "policy.params=['charge_threshold']: unknown parameters for policy 'threshold': it takes "
        "charge_below, discharge_above, inference_demand_mw, mining_demand_mw (BatterySystem's "
        "charge_threshold and discharge_threshold are its charge_below and discharge_above)"
    )
    with pytest.raises(InvalidConfig, match=r"for policy 'site': it takes .*carbon_price") as site:
        make_policy("site", {"nope": 1})
    assert "site," not in str(site.value), "the site model is not a parameter"


@pytest.mark.parametrize(("wiggle", "wear"), [(0.0, 0.0), (0.5, 0.0), (4.0, 20.0)])
def test_adaptive_does_not_buy_what_its_dear_prices_cannot_pay_back(wiggle: float, wear: float) -> None:
    """An analyst's review: on 30 days of 40 ± 0.5 adaptive cycled 35 times through 10 % losses and lost
    12,504; on a flat 40 it charged (a price equal to both quantiles counted as cheap)."""
    start = datetime(2023, 3, 1, tzinfo=UTC)
    prices = [40.0 + wiggle * math.sin(hour * 0.7) for hour in range(24 * 10)]
    ticks = [make_tick(p, 0.0, 0.0, start + timedelta(hours=h)) for h, p in enumerate(prices)]
    config = BatteryConfig(cycle_cost_per_mwh=wear)
    run, summary = backtest(ticks, config, make_policy("adaptive"))
    assert summary.value >= -300, "at most the initial charge sold at a dear hour's price"
    bought = [d.reason for d, mwh in zip(run.decisions, run.bought_mwh, strict=True) if mwh > 0]
    assert bought == []
    held = [d.reason for d in run.decisions if "does not pay it back" in d.reason]
    assert held, "a cheap hour said why it did not buy"
    wide = [
        make_tick(40.0 + 30.0 * math.sin(h * 0.7), 0.0, 0.0, start + timedelta(hours=h)) for h in range(240)
    ]
    assert backtest(wide, config, make_policy("adaptive"))[1].value > 0, "a spread that pays is still traded"
