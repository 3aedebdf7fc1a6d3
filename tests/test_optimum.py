"""The perfect-foresight optimum: hand-solvable cases, the terminal rule, and agreement with the battery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from battery_worker.backtest.optimum import (
    Optimum,
    OptimumError,
    solve_optimum,
    step_days,
    step_durations,
    terminal_value,
)
from battery_worker.battery import Action, apply_for, apply_tick, initial_state
from battery_worker.battery_config import BatteryConfig, BatteryFields
from battery_worker.pricefiles import load_ticks

DATA = Path(__file__).parent / "data"


def small(**changes: float) -> BatteryConfig:
    fields: BatteryFields = {
        "capacity_mwh": 10.0,
        "max_charge_rate_mw": 10.0,
        "max_discharge_rate_mw": 10.0,
        "efficiency": 1.0,
        "initial_charge_percent": 0.0,
    }
    fields.update(changes)
    return BatteryConfig(**fields)


def test_buy_low_sell_high_lossless() -> None:
    # Fill 10 MWh at 10, sell them at 100: 1000 − 100.
    best = solve_optimum(small(), [10.0, 100.0], [1.0, 1.0])
    assert best.value == pytest.approx(900.0)
    assert list(best.bought_mwh) == pytest.approx([10.0, 0.0])
    assert list(best.delivered_mwh) == pytest.approx([0.0, 10.0])


def test_losses_split_as_root_eta_each_way() -> None:
    # η = 0.81: buying 10 MWh stores 9, which deliver 8.1. Value 8.1·100 − 10·10 = 710.
    best = solve_optimum(small(efficiency=0.81), [10.0, 100.0], [1.0, 1.0])
    assert best.value == pytest.approx(710.0)
    assert best.state_of_charge_mwh[0] == pytest.approx(9.0)


def test_rate_limit_scales_with_step_length() -> None:
    # Half-hour steps at 10 MW move 5 MWh each: two cheap steps fill the battery, two dear ones empty it.
    best = solve_optimum(small(), [1.0, 1.0, 50.0, 50.0], [0.5, 0.5, 0.5, 0.5])
    assert best.value == pytest.approx(10 * 50.0 - 10 * 1.0)
    assert max(best.bought_mwh) == pytest.approx(5.0)


def test_no_spread_after_losses_means_no_trade() -> None:
    # Round trip keeps 81%: buying at 90 to sell at 100 loses money, so the best is to hold.
    best = solve_optimum(small(efficiency=0.81), [90.0, 100.0], [1.0, 1.0])
    assert best.value == pytest.approx(0.0, abs=1e-6)


def test_end_at_start_by_default() -> None:
    config = small(initial_charge_percent=50.0)
    best = solve_optimum(config, [100.0, 100.0], [1.0, 1.0])
    # Selling the 5 MWh in store would earn 500, but the battery must end where it started.
    assert best.value == pytest.approx(0.0, abs=1e-6)
    assert best.state_of_charge_mwh[-1] == pytest.approx(5.0)


def test_terminal_price_values_the_end_state() -> None:
    config = small(initial_charge_percent=50.0)
    # Energy bought at 10 and worth 100 at the end: fill up (5 MWh) for −50 + 500.
    best = solve_optimum(config, [10.0], [1.0], terminal_price=100.0)
    assert best.value == pytest.approx(450.0)
    assert best.terminal_value == pytest.approx(terminal_value(config, 5.0, 100.0))
    # A deficit is bought back with the charge loss, a surplus sold after the discharge loss.
    lossy = small(efficiency=0.81)
    assert terminal_value(lossy, 1.0, 100.0) == pytest.approx(90.0)
    assert terminal_value(lossy, -1.0, 100.0) == pytest.approx(-100.0 / 0.9)


def test_negative_price_one_action_per_step() -> None:
    # Full battery, price −10: buying and selling at once would burn energy for money; the battery does one
    # thing per step, so the schedule holds (value 0). The relaxation may buy c and deliver d with
    # c/10 + d/10 ≤ 1 and 0.9c = d/0.9 (nothing stored): c = 10/1.81, earning 10·0.19·c = 10.497... That
    # is the bound, not exact.
    config = small(efficiency=0.81, initial_charge_percent=100.0)
    best = solve_optimum(config, [-10.0], [1.0])
    assert best.simultaneous_steps == 1
    assert best.value == pytest.approx(0.0, abs=1e-6)
    assert best.bound == pytest.approx(19.0 / 1.81)
    assert not best.exact
    assert best.gap == pytest.approx(best.bound)
    # Empty battery, same price: charging is paid (10 MWh · 10), and energy left is worth nothing here.
    paid = solve_optimum(small(efficiency=0.81), [-10.0], [1.0], terminal_price=0.0)
    assert paid.value == pytest.approx(100.0)
    assert paid.exact


def test_step_durations_follow_the_state_machine() -> None:
    config = BatteryConfig()
    t0 = datetime(2023, 1, 1, tzinfo=UTC)
    stamps = [t0, t0 + timedelta(minutes=30), t0 + timedelta(hours=1), t0 + timedelta(hours=6)]
    # First tick and the 5-hour gap (> max_step_hours) take the default step.
    assert step_durations(config, stamps) == [1.0, 0.5, 0.5, 1.0]


def test_schedule_replayed_through_the_battery_earns_the_optimum() -> None:
    config = BatteryConfig()
    ticks = load_ticks(DATA / "ercot_2023-08-01_07.csv")
    prices = [tick.energy_price for tick in ticks]
    hours = step_durations(config, [tick.timestamp for tick in ticks])
    best = solve_optimum(config, prices, hours)
    state = initial_state(config)
    for price, h, bought, delivered in zip(prices, hours, best.bought_mwh, best.delivered_mwh, strict=True):
        if bought > 1e-9:
            state = apply_for(config, state, Action.CHARGE, bought / h, h, price).state
        elif delivered > 1e-9:
            state = apply_for(config, state, Action.DISCHARGE, delivered / h, h, price).state
    assert state.net_value == pytest.approx(best.value, rel=1e-6)
    assert state.state_of_charge_mwh == pytest.approx(config.initial_energy_mwh, abs=1e-5)
    assert best.value > 0


def test_inputs_must_agree() -> None:
    with pytest.raises(OptimumError, match="one entry per price"):
        solve_optimum(BatteryConfig(), [1.0, 2.0], [1.0])
    assert solve_optimum(BatteryConfig(), [], []).value == 0.0


def test_without_negative_prices_the_lp_is_exact() -> None:
    config = BatteryConfig()
    ticks = load_ticks(DATA / "ercot_2023-08-01_07.csv")
    prices = [tick.energy_price for tick in ticks]
    assert min(prices) >= 0
    best = solve_optimum(
        config, prices, step_durations(config, [t.timestamp for t in ticks]), terminal_price=50.0
    )
    assert best.exact
    assert best.bound == best.value
    assert best.gap == 0.0
    assert best.simultaneous_steps == 0


def five_minute_days(days: int, seed: int) -> tuple[list[datetime], npt.NDArray[np.float64]]:
    """Noisy 5-minute prices, negative for 8 hours a day (a third): long enough to fill the battery and
    leave hours in which only burning energy earns more."""
    rng = np.random.default_rng(seed)
    n = days * 288
    hour = (np.arange(n) % 288) / 12.0
    prices = np.where((hour >= 9) & (hour < 17), -40.0, 60.0) + rng.normal(0, 15, n)
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    return [t0 + timedelta(minutes=5 * i) for i in range(n)], prices


def replay(
    config: BatteryConfig, stamps: list[datetime], prices: npt.NDArray[np.float64], best: Optimum
) -> float:
    """The schedule through the state machine, tick by tick; returns the value it earns (net of wear)."""
    state = initial_state(config)
    for at, price, bought, delivered in zip(stamps, prices, best.bought_mwh, best.delivered_mwh, strict=True):
        assert min(bought, delivered) == 0.0, "one action per step"
        hours = (at - state.last_tick_at).total_seconds() / 3600 if state.last_tick_at else 1.0
        if bought > 0:
            step = apply_tick(config, state, Action.CHARGE, bought / hours, float(price), at)
        elif delivered > 0:
            step = apply_tick(config, state, Action.DISCHARGE, delivered / hours, float(price), at)
        else:
            step = apply_tick(config, state, Action.HOLD, 0.0, float(price), at)
        assert step.energy_mwh == pytest.approx(bought + delivered, rel=1e-6, abs=1e-6)
        state = step.state
    assert state.state_of_charge_mwh == pytest.approx(best.state_of_charge_mwh[-1], abs=1e-4)
    return state.net_value_after_wear(config)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"cycle_cost_per_mwh": 15.0},
        {"max_cycles_per_day": 1.0, "min_charge_percent": 10.0},
        # The schedule is replayed through the battery, which clamps at its own day's cap: the days agree.
        {"max_cycles_per_day": 1.0, "min_charge_percent": 10.0, "cycle_day_timezone": "America/Chicago"},
    ],
    ids=["plain", "wear", "cycle-cap", "cycle-cap-chicago"],
)
def test_with_negative_prices_a_replayable_schedule_and_a_bound_above_it(changes: BatteryFields) -> None:
    config = BatteryConfig(**changes)
    stamps, prices = five_minute_days(6, seed=3)
    best = solve_optimum(config, prices, step_durations(config, stamps), days=step_days(config, stamps))
    if not changes:  # wear (15 per MWh delivered) or a cap make burning energy not worth it
        assert best.simultaneous_steps > 0
        assert best.bound > best.value
    assert best.bound >= best.value
    assert best.relative_gap < 0.05
    # Ending where it started: the schedule's whole value is its cash less its wear.
    assert replay(config, stamps, prices, best) == pytest.approx(best.value, rel=1e-6, abs=1e-3)
    assert best.state_of_charge_mwh[-1] == pytest.approx(config.initial_energy_mwh, abs=1e-5)


def test_wear_is_paid_per_mwh_delivered() -> None:
    # 10 MWh bought at 10 and delivered at 100 earn 900 before wear.
    assert solve_optimum(small(cycle_cost_per_mwh=20.0), [10.0, 100.0], [1.0, 1.0]).value == pytest.approx(
        700.0
    )
    worn = solve_optimum(small(cycle_cost_per_mwh=20.0), [10.0, 100.0], [1.0, 1.0])
    assert worn.wear_cost == pytest.approx(200.0)
    # A spread of 90 does not pay a wear of 95 per MWh: hold.
    idle = solve_optimum(small(cycle_cost_per_mwh=95.0), [10.0, 100.0], [1.0, 1.0])
    assert idle.value == pytest.approx(0.0, abs=1e-6)
    assert idle.delivered_mwh.sum() == pytest.approx(0.0, abs=1e-6)


def test_the_cycle_cap_holds_per_calendar_day() -> None:
    # Two days of [10, 100]; half a cycle a day (5 MWh delivered) halves the 2 × 900 of the uncapped battery.
    prices, hours, days = [10.0, 100.0, 10.0, 100.0], [1.0] * 4, [0, 0, 1, 1]
    assert solve_optimum(small(), prices, hours, days=days).value == pytest.approx(1800.0)
    capped = solve_optimum(small(max_cycles_per_day=0.5), prices, hours, days=days)
    assert capped.value == pytest.approx(900.0)
    assert capped.delivered_mwh[:2].sum() <= 5.0 + 1e-6
    with pytest.raises(OptimumError, match="day of each step"):
        solve_optimum(small(max_cycles_per_day=0.5), prices, hours)


def test_terminal_surplus_is_worth_its_sale_less_wear() -> None:
    lossy = small(efficiency=0.81, cycle_cost_per_mwh=30.0)
    assert terminal_value(lossy, 1.0, 100.0) == pytest.approx(0.9 * 70.0)
    assert terminal_value(lossy, -1.0, 100.0) == pytest.approx(-100.0 / 0.9)
    assert terminal_value(small(cycle_cost_per_mwh=200.0), 1.0, 100.0) == 0.0
