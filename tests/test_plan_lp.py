"""The mpc's plan LP as it goes to HiGHS: the matrix built column by column is the LP written out densely,
and HiGHS through highspy plans what scipy's ``linprog`` plans on that dense LP."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy.optimize import linprog

from battery_worker.backtest.engine import backtest
from battery_worker.battery import BatteryConfig
from battery_worker.battery_config import end_value_after_wear
from battery_worker.policies import make_policy
from battery_worker.policies.plan_lp import (
    PlanSteps,
    _columns,
    _cycle_days,
    _row_bounds,
    solve_plan,
)
from battery_worker.ticks import make_tick

WORN_AND_CAPPED = BatteryConfig(cycle_cost_per_mwh=20.0, max_cycles_per_day=1.0)


def dense_lp(
    config: BatteryConfig, soc: float, steps: PlanSteps, end_value: float, delivered_today: float
) -> dict[str, Any]:
    """The plan's LP as ``linprog`` takes it, written from the model in the module's docstring: one balance
    row per step (``s_t − s_{t−1} − √η c_t + d_t/√η``, the first equal to the charge it starts from), one
    cap row per cycle day (the first day only what is left)."""
    prices, hours = steps.prices, steps.hours
    n = prices.size
    keep = config.one_way_efficiency
    a_eq = np.zeros((n, 3 * n))
    for t in range(n):
        a_eq[t, t] = -keep
        a_eq[t, n + t] = 1.0 / keep
        a_eq[t, 2 * n + t] = 1.0
        if t:
            a_eq[t, 2 * n + t - 1] = -1.0
    b_eq = np.zeros(n)
    b_eq[0] = soc
    cost = np.concatenate([prices, config.cycle_cost_per_mwh - prices, np.zeros(n)])
    cost[-1] = -end_value
    bounds = (
        [(0.0, config.max_charge_rate_mw * h) for h in hours]
        + [(0.0, config.max_discharge_rate_mw * h) for h in hours]
        + [(min(config.min_energy_mwh, soc), max(config.max_energy_mwh, soc))] * n
    )
    rows: list[npt.NDArray[np.float64]] = []
    limits: list[float] = []
    cap = config.daily_delivery_cap_mwh
    if cap is not None:
        assert steps.days is not None
        days = sorted(set(steps.days.tolist()))
        a_ub = np.zeros((len(days), 3 * n))
        for t, day in enumerate(steps.days.tolist()):
            a_ub[days.index(day), n + t] = 1.0
        b_ub = np.full(len(days), cap)
        b_ub[days.index(int(steps.days[0]))] = max(0.0, cap - delivered_today)
        rows, limits = list(a_ub), list(b_ub)
    lp: dict[str, Any] = {"c": cost, "A_eq": a_eq, "b_eq": b_eq, "bounds": bounds}
    if config.cycle_cost_per_mwh > 0:
        # The end charge above ``soc`` (``excess`` ≥ s_end − soc) is worth end_value less the wear of
        # delivering it; below it, end_value: s_end at end_value, the excess charged the difference.
        lp["c"] = np.append(cost, end_value - end_value_after_wear(config, end_value))
        lp["A_eq"] = np.hstack([a_eq, np.zeros((n, 1))])
        lp["bounds"] = [*bounds, (0.0, None)]
        rows = [np.append(row, 0.0) for row in rows]
        excess = np.zeros(3 * n + 1)
        excess[3 * n - 1], excess[3 * n] = 1.0, -1.0
        rows.append(excess)
        limits.append(soc)
    if rows:
        lp |= {"A_ub": np.vstack(rows), "b_ub": np.array(limits)}
    return lp


def random_steps(seed: int, n: int, days: bool) -> PlanSteps:
    rng = np.random.default_rng(seed)
    prices = rng.normal(40.0, 30.0, n)
    hours = np.where(np.arange(n) < 6, 1 / 12, 1.0)  # near-term 5-minute steps, then hourly
    day = 739_000 + np.cumsum(hours)[:n].astype(np.int64) // 24 if days else None
    return PlanSteps(prices, hours, day)


@pytest.mark.parametrize("config", [BatteryConfig(), WORN_AND_CAPPED], ids=["plain", "worn-and-capped"])
@pytest.mark.parametrize("n", [1, 2, 30, 80])
def test_the_matrix_built_by_columns_is_the_dense_lp(config: BatteryConfig, n: int) -> None:
    capped = config.daily_delivery_cap_mwh is not None
    steps = random_steps(n, n, days=capped)
    day = _cycle_days(steps.days) if capped else None
    caps = 0 if day is None else int(day.max()) + 1
    start, index, value = _columns(n, config.one_way_efficiency, day, caps)
    built = np.zeros((caps + n, 3 * n))
    for column in range(3 * n):
        rows = index[start[column] : start[column + 1]]
        assert list(rows) == sorted(rows), "rows ascend within a column"
        built[rows, column] = value[start[column] : start[column + 1]]
    lp = dense_lp(replace(config, cycle_cost_per_mwh=0.0), 3.0, steps, 55.0, 4.0)  # the excess row apart
    dense = np.vstack([lp["A_ub"], lp["A_eq"]]) if capped else lp["A_eq"]
    np.testing.assert_array_equal(built, dense)
    lower, upper = _row_bounds(config, 3.0, n, day, caps, 4.0)
    b_eq = lp["b_eq"]
    if capped:
        np.testing.assert_array_equal(upper, np.concatenate([lp["b_ub"], b_eq]))
        assert np.all(lower[:caps] < -1e20)
        np.testing.assert_array_equal(lower[caps:], b_eq)
    else:
        np.testing.assert_array_equal(lower, b_eq)
        np.testing.assert_array_equal(upper, b_eq)


@pytest.mark.parametrize("config", [BatteryConfig(), WORN_AND_CAPPED], ids=["plain", "worn-and-capped"])
@pytest.mark.parametrize("seed", range(6))
def test_highs_plans_what_linprog_plans_on_the_dense_lp(config: BatteryConfig, seed: int) -> None:
    steps = random_steps(seed, 60, days=config.daily_delivery_cap_mwh is not None)
    soc = [config.min_energy_mwh, 2.0, config.max_energy_mwh][seed % 3]
    plan = solve_plan(config, soc, steps, 45.0, 1.5, max_iterations=2000)
    expected = linprog(**dense_lp(config, soc, steps, 45.0, 1.5), method="highs-ds")
    assert expected.status == 0
    assert plan is not None
    assert plan == pytest.approx((expected.x[0], expected.x[60]), abs=1e-7)


def test_a_plan_the_iteration_cap_cuts_short_is_none_and_the_next_starts_afresh() -> None:
    steps = random_steps(1, 60, days=False)
    assert solve_plan(BatteryConfig(), 2.0, steps, 45.0, 0.0, 1) is None
    expected = linprog(**dense_lp(BatteryConfig(), 2.0, steps, 45.0, 0.0), method="highs-ds")
    plan = solve_plan(BatteryConfig(), 2.0, steps, 45.0, 0.0, 2000)  # the thread's solver, used again
    assert plan == pytest.approx((expected.x[0], expected.x[60]), abs=1e-7)


def test_a_price_that_is_not_finite_is_refused() -> None:
    steps = random_steps(1, 10, days=False)
    steps.prices[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        solve_plan(BatteryConfig(), 2.0, steps, 45.0, 0.0, 2000)


@pytest.mark.parametrize("policy", ["mpc", "site"])
def test_under_wear_a_plan_keeps_the_charge_it_has_where_no_spread_pays_the_wear(policy: str) -> None:
    """One end value for every MWh, less the wear, made the plan sell the charge it started with as soon as
    a price topped the wear, and never buy again: on a daily 10-30 sinusoid at LFP's 28 per MWh, mpc lost
    927 where the optimum (doing nothing) made 0 (the site policy's plan, valuing its end alike, lost 331).
    Below the start, the end charge is worth the end value."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    prices = [20 + 10 * np.sin(hour * 2 * np.pi / 24) for hour in range(72)]
    ticks = [make_tick(float(p), 1000.0, 1000.0, t0 + timedelta(hours=h)) for h, p in enumerate(prices)]
    _run, summary = backtest(ticks, BatteryConfig(cycle_cost_per_mwh=28.0), make_policy(policy))
    assert summary.optimum_value == pytest.approx(0.0, abs=1e-6)
    assert summary.value == pytest.approx(0.0, abs=1e-6)
    assert summary.cycles == 0
