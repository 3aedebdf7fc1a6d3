"""The MPC's plan as a small dense LP: the steps it covers, wear, the daily cycle cap, one capped HiGHS solve.

Apart from :mod:`battery_worker.policies.mpc` (which builds the steps from the tick and the forecast) because
the LP has its own rules. Variables: bought ``c``, delivered ``d`` and state of charge ``s``, one each per
step; ``s_t − s_{t−1} − √η c_t + d_t/√η = 0``. The objective is what the optimum maximises
(:mod:`battery_worker.backtest.optimum_lp`), over the forecast: ``Σ price_t (d_t − c_t) − wear Σ d_t`` plus
the energy left in the cells at the end, worth ``end_value`` per MWh.

Wear and the cap are added only when the battery has them, so a battery without wear solves exactly the LP
it solved before they existed (the same matrices, the same decisions, bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog

from battery_worker.battery_config import BatteryConfig

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class PlanSteps:
    """The steps of one plan, the current one first: price, length in hours and cycle day (a date ordinal;
    None without a cycle cap, which is all that reads it)."""

    prices: FloatArray
    hours: FloatArray
    days: IntArray | None


def end_value_after_wear(config: BatteryConfig, end_value: float) -> float:
    """Worth of one MWh left in the cells once the wear of delivering it later is paid (never below 0 by it).

    Delivering a cell MWh later delivers √η MWh, each paying ``cycle_cost_per_mwh``. Without wear the value
    is returned unchanged (not ``end_value − 0.0``), so the LP is the one it was before wear existed.
    """
    if config.cycle_cost_per_mwh <= 0:
        return end_value
    return max(min(end_value, 0.0), end_value - config.one_way_efficiency * config.cycle_cost_per_mwh)


def solve_plan(
    config: BatteryConfig,
    soc: float,
    steps: PlanSteps,
    end_value: float,
    delivered_today_mwh: float,
    max_iterations: int,
) -> tuple[float, float] | None:
    """Bought and delivered MWh of the first step of the best plan, or None if the solver gave up.

    ``delivered_today_mwh`` is what the battery has delivered on the first step's cycle day before it: under a
    cycle cap the steps of that day may deliver only the rest, every later day the whole cap.
    """
    prices, hours = steps.prices, steps.hours
    n = prices.size
    keep = config.one_way_efficiency
    a_eq = np.zeros((n, 3 * n))
    rows = np.arange(n)
    a_eq[rows, 2 * n + rows] = 1.0
    a_eq[rows[1:], 2 * n + rows[:-1]] = -1.0
    a_eq[rows, rows] = -keep
    a_eq[rows, n + rows] = 1.0 / keep
    b_eq = np.zeros(n)
    b_eq[0] = soc
    delivered_cost = -prices
    if config.cycle_cost_per_mwh > 0:
        delivered_cost = config.cycle_cost_per_mwh - prices
    cost = np.concatenate([prices, delivered_cost, np.zeros(n)])
    cost[-1] = -end_value_after_wear(config, end_value)
    bounds = np.empty((3 * n, 2))
    bounds[:n] = np.column_stack([np.zeros(n), config.max_charge_rate_mw * hours])
    bounds[n : 2 * n] = np.column_stack([np.zeros(n), config.max_discharge_rate_mw * hours])
    low, high = config.min_energy_mwh, config.max_energy_mwh
    bounds[2 * n :] = (min(low, soc), max(high, soc))
    a_ub, b_ub = _daily_caps(config, steps.days, delivered_today_mwh)
    result = linprog(
        cost,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=bounds,
        method="highs-ds",
        options={"maxiter": max_iterations, "presolve": True},
    )
    if result.status != 0 or result.x is None:
        return None
    return max(0.0, float(result.x[0])), max(0.0, float(result.x[n]))


def _daily_caps(
    config: BatteryConfig, days: IntArray | None, delivered_today_mwh: float
) -> tuple[FloatArray | None, FloatArray | None]:
    """One row per cycle day in the plan: its steps deliver at most the cap (the first day: what is left)."""
    cap = config.daily_delivery_cap_mwh
    if cap is None:
        return None, None
    if days is None:
        raise ValueError("a plan under a cycle cap needs the cycle day of each step")
    n = days.size
    first, day = np.unique(days, return_inverse=True)
    a_ub = np.zeros((first.size, 3 * n))
    a_ub[day, n + np.arange(n)] = 1.0
    b_ub = np.full(first.size, cap)
    b_ub[day[0]] = max(0.0, cap - delivered_today_mwh)
    return a_ub, b_ub
