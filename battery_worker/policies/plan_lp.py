"""The MPC's plan as a small dense LP: the steps it covers, wear, the daily cycle cap, one capped HiGHS solve.

Apart from :mod:`battery_worker.policies.mpc` (which builds the steps from the tick and the forecast) because
the LP has its own rules. Variables: bought ``c``, delivered ``d`` and state of charge ``s``, one each per
step; ``s_t − s_{t−1} − √η c_t + d_t/√η = 0``. The objective is what the optimum maximises
(:mod:`battery_worker.backtest.optimum_lp`), over the forecast: ``Σ price_t (d_t − c_t) − wear Σ d_t`` plus
the energy left in the cells at the end, worth ``end_value`` per MWh; under wear, what it ends with above
the charge it starts from is worth ``end_value`` less the wear of delivering it (an ``excess`` column and
row: a concave value, still an LP).

Wear and the cap are added only when the battery has them, so a battery without wear solves exactly the LP
it solved before they existed (the same matrices, the same decisions, bit for bit).

The LP goes to HiGHS through ``highspy``, not through ``scipy.optimize.linprog``: linprog's checks and
conversions took three quarters of a plan's time, and importing ``scipy.optimize`` took 40 MiB of a worker's
memory (``highspy``: 4). It is the same solver with the options linprog gave it (dual simplex, presolve, the
iteration cap), so the decisions are the same bit for bit as long as the HiGHS version is, which
``pyproject.toml`` pins (1.13, which plans as scipy 1.17's 1.12 did): an audit replay on another install
must decide alike.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import highspy
import numpy as np
from numpy.typing import NDArray

from battery_worker.battery_config import BatteryConfig, end_value_after_wear

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
RowArray = NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class PlanSteps:
    """The steps of one plan, the current one first: price, length in hours and cycle day (a date ordinal;
    None without a cycle cap, which is all that reads it)."""

    prices: FloatArray
    hours: FloatArray
    days: IntArray | None


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
    delivered_cost = -prices
    if config.cycle_cost_per_mwh > 0:
        delivered_cost = config.cycle_cost_per_mwh - prices
    worn = config.cycle_cost_per_mwh > 0
    cost = np.concatenate([prices, delivered_cost, np.zeros(n + worn)])
    if worn:
        # Energy left below today's charge is worth end_value (the deficit is bought again to be delivered
        # later anyway, wear or not); only a surplus pays the wear of delivering it: the excess column.
        # One value for both, minus the wear, made the plan sell the charge it starts with whenever the
        # price topped the wear and then never buy again: below doing nothing where wear beats the spread.
        cost[3 * n - 1] = -end_value
        cost[3 * n] = end_value - end_value_after_wear(config, end_value)
    else:
        cost[-1] = -end_value
    if not np.isfinite(cost).all():
        raise ValueError("the plan's prices and end value must be finite")
    low, high = config.min_energy_mwh, config.max_energy_mwh
    lower = np.zeros(3 * n + worn)
    lower[2 * n : 3 * n] = min(low, soc)
    upper = np.full(3 * n + worn, highspy.kHighsInf)
    upper[:n] = config.max_charge_rate_mw * hours
    upper[n : 2 * n] = config.max_discharge_rate_mw * hours
    upper[2 * n : 3 * n] = max(high, soc)
    day = None if config.daily_delivery_cap_mwh is None else _cycle_days(steps.days)
    caps = 0 if day is None else int(day.max()) + 1
    row_lower, row_upper = _row_bounds(config, soc, n, day, caps, delivered_today_mwh)
    start, index, value = _columns(n, config.one_way_efficiency, day, caps)
    if worn:  # the excess row: s_end − excess ≤ soc, the last row, its two entries last in their columns
        row_lower, row_upper = np.append(row_lower, -highspy.kHighsInf), np.append(row_upper, soc)
        excess_row = caps + n
        index = np.append(index, np.array([excess_row, excess_row], np.int32))
        value = np.append(value, [1.0, -1.0])
        start = np.append(start, start[-1] + 2)
        start[-2] += 1
    lp = highspy.HighsLp()
    lp.num_col_ = lp.a_matrix_.num_col_ = 3 * n + worn
    lp.num_row_ = lp.a_matrix_.num_row_ = row_lower.size
    lp.col_cost_ = cost
    lp.col_lower_ = lower
    lp.col_upper_ = upper
    lp.row_lower_, lp.row_upper_ = row_lower, row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = start, index, value
    solver = _solver()
    solver.setOptionValue("simplex_iteration_limit", max_iterations)
    solver.passModel(lp)
    solver.run()
    if solver.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    x = solver.getSolution().col_value
    return max(0.0, float(x[0])), max(0.0, float(x[n]))


_local = threading.local()


def _solver() -> highspy._Highs:
    """This thread's HiGHS, set as ``linprog(method="highs-ds")`` set it; kept, as making one costs 60 µs.

    ``_Highs`` is the solver without ``Highs``' Python callbacks and interrupt handling, which a plan of a few
    milliseconds needs neither of; ``highspy`` exports it. One per thread: the library may decide in threads.
    """
    solver: highspy._Highs | None = getattr(_local, "solver", None)
    if solver is None:
        solver = highspy._Highs()
        solver.setOptionValue("output_flag", False)
        solver.setOptionValue("presolve", "on")
        solver.setOptionValue("solver", "simplex")
        solver.setOptionValue("simplex_strategy", 1)  # dual
        _local.solver = solver
    return solver


def _cycle_days(days: IntArray | None) -> IntArray:
    """Each step's cycle day as 0, 1, … in date order: the row of the cap it counts against."""
    if days is None:
        raise ValueError("a plan under a cycle cap needs the cycle day of each step")
    return np.unique(days, return_inverse=True)[1].reshape(-1)


def _row_bounds(
    config: BatteryConfig, soc: float, n: int, day: IntArray | None, caps: int, delivered_today_mwh: float
) -> tuple[FloatArray, FloatArray]:
    """The rows' bounds: first the daily caps (at most the cap; the first day what is left), then the balance
    of each step (equal to 0, the first to the charge it starts from)."""
    balance = np.zeros(n)
    balance[0] = soc
    if day is None:
        return balance, balance.copy()
    cap = config.daily_delivery_cap_mwh
    assert cap is not None
    limits = np.full(caps, cap)
    limits[day[0]] = max(0.0, cap - delivered_today_mwh)
    return np.concatenate([np.full(caps, -highspy.kHighsInf), balance]), np.concatenate([limits, balance])


def _columns(n: int, keep: float, day: IntArray | None, caps: int) -> tuple[IntArray, RowArray, FloatArray]:
    """The constraint matrix column by column (CSC), rows in ascending order within each column.

    Bought ``c_t`` enters step t's balance as −√η; delivered ``d_t`` its cycle day's cap (if any) as 1 and the
    balance as 1/√η; the charge ``s_t`` step t's balance as 1 and the next step's as −1.
    """
    steps = np.arange(n)
    balance = caps + steps
    per_delivered = 1 if day is None else 2
    counts = np.concatenate([np.ones(n, np.int64), np.full(n, per_delivered), np.full(n, 2)])
    counts[-1] = 1
    start = np.zeros(3 * n + 1, np.int64)
    np.cumsum(counts, out=start[1:])
    index = np.empty(start[-1], np.int32)
    value = np.empty(start[-1])
    index[:n] = balance
    value[:n] = -keep
    delivered = start[n : 2 * n]
    if day is not None:
        index[delivered] = day
        value[delivered] = 1.0
        delivered = delivered + 1
    index[delivered] = balance
    value[delivered] = 1.0 / keep
    charge = start[2 * n : 3 * n]
    index[charge] = balance
    value[charge] = 1.0
    index[charge[:-1] + 1] = balance[1:]
    value[charge[:-1] + 1] = -1.0
    return start, index, value
