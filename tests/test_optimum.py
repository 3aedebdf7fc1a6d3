"""The perfect-foresight optimum: hand-solvable cases, the terminal rule, and agreement with the battery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from battery_worker.backtest.optimum import OptimumError, solve_optimum, step_durations, terminal_value
from battery_worker.battery import Action, BatteryConfig, apply_for, initial_state
from battery_worker.pricefiles import load_ticks

DATA = Path(__file__).parent / "data"


def small(**changes: float) -> BatteryConfig:
    fields: dict[str, float] = {
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
    # Full battery, price −10: an LP would buy and sell at once to burn energy (earning 19); the battery
    # does one thing per step, so the exact optimum is to hold.
    config = small(efficiency=0.81, initial_charge_percent=100.0)
    best = solve_optimum(config, [-10.0], [1.0])
    assert best.mixed_integer_steps == 1
    assert best.value == pytest.approx(0.0, abs=1e-6)
    # Empty battery, same price: charging is paid (10 MWh · 10), and energy left is worth nothing here.
    paid = solve_optimum(small(efficiency=0.81), [-10.0], [1.0], terminal_price=0.0)
    assert paid.value == pytest.approx(100.0)


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
