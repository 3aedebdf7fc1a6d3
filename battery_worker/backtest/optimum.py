"""The perfect-foresight optimum: the most any policy could earn on a price series, and a bound on it. Pure.

The battery model is exactly that of :mod:`battery_worker.battery`: for the step ending at tick ``t`` (length
``h_t`` from :func:`battery.step_hours`) the schedule buys ``c_t`` and delivers ``d_t`` on the site side,
within the rate limits × ``h_t``; the cells move by ``√η · c_t − d_t / √η`` within the state-of-charge
bounds; the step earns ``price_t · (d_t − c_t)`` and wears ``cycle_cost_per_mwh · d_t``; with
``max_cycles_per_day`` the energy delivered on each calendar day (in ``cycle_day_timezone``, the day of the
tick ending the step) stays within that many usable windows. The matrices live in
:mod:`battery_worker.backtest.optimum_lp`.

Two ways to treat the energy left at the end (the backtest values a policy with the same rule):

* ``terminal_price=None``: the battery must end where it started (the reference "start and end at 50%").
* ``terminal_price=v``: the end is free; see :func:`terminal_value`.

The state machine does one thing per step. Buying and delivering in the same step only pays when the price
is negative (it burns energy bought at a negative price), so the exact optimum is a mixed-integer programme
with one binary per negative-price step, which at 5-minute resolution HiGHS does not close in hours. Instead:

1. The LP relaxation (the one-action rule relaxed to its convex hull on negative-price steps) gives
   ``bound``: no schedule of the battery, so no policy, can earn more.
2. If no step of that solution both buys and delivers, it is a schedule the battery can follow: ``exact``.
3. Otherwise each step is fixed to the direction the relaxation moved the cells in (charge-only or
   discharge-only; charge-only where it did nothing at a negative price) and the LP is solved again: a
   schedule the battery can follow, whose value is ``value``. The true optimum lies between the two, and
   ``gap`` says how far apart they are.

Two sparse LPs at most; bench/optimum_scale.py measures a year of 5-minute prices, a third of them negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from battery_worker.backtest.optimum_lp import (
    FloatArray,
    IntArray,
    LpSolution,
    OptimumError,
    Steps,
    end_prices,
    solve_lp,
)
from battery_worker.battery import as_utc, step_hours
from battery_worker.battery_config import BatteryConfig

__all__ = ["FloatArray", "Optimum", "OptimumError", "solve_optimum", "step_durations", "terminal_value"]

EXACT_TOLERANCE = 1e-7
"""Relative gap under which a schedule counts as the optimum itself: HiGHS' own feasibility tolerance."""


@dataclass(frozen=True, slots=True)
class Optimum:
    """The best schedule found for a series, and the bound no schedule can beat.

    Arrays have one entry per step, in MWh (site side) or price × MWh, and describe the schedule. ``value``
    is its cash, minus its wear, plus the end energy valued by the terminal rule. ``bound`` equals ``value``
    when ``exact``; ``simultaneous_steps`` counts the relaxation's steps that both bought and delivered.
    """

    value: float
    cash_value: float
    wear_cost: float
    terminal_value: float
    bought_mwh: FloatArray
    delivered_mwh: FloatArray
    state_of_charge_mwh: FloatArray
    cash_flows: FloatArray
    bound: float
    exact: bool
    simultaneous_steps: int

    @property
    def gap(self) -> float:
        """How much more than ``value`` the true optimum might be worth (0 when exact)."""
        return 0.0 if self.exact else max(0.0, self.bound - self.value)

    @property
    def relative_gap(self) -> float:
        return self.gap / abs(self.bound) if self.bound else 0.0


def step_durations(config: BatteryConfig, timestamps: Sequence[datetime]) -> list[float]:
    """Hours of each step, by the state machine's own rule (first tick and long gaps get the default)."""
    durations: list[float] = []
    previous: datetime | None = None
    for at in timestamps:
        at = as_utc(at)
        hours, _gap = step_hours(config, previous, at)
        durations.append(hours)
        previous = at
    return durations


def step_days(config: BatteryConfig, timestamps: Sequence[datetime]) -> list[int]:
    """The cycle day of each step's tick (:meth:`BatteryConfig.cycle_day`): what ``max_cycles_per_day``
    counts by, as the battery counts it."""
    return [config.cycle_day(as_utc(at).timestamp()) for at in timestamps]


def terminal_value(config: BatteryConfig, delta_mwh: float, price: float) -> float:
    """Worth of ending with ``delta_mwh`` more (or less) energy in the cells than at the start.

    A surplus could be sold at ``price`` (less the wear of delivering it) after the discharge loss (``√η``);
    a deficit must be bought back at ``price`` plus the charge loss (``1/√η``). Valuing the two sides apart
    means no policy gains by simply ending fuller or emptier than it started.
    """
    surplus, deficit = end_prices(config, price)
    return delta_mwh * surplus if delta_mwh >= 0 else delta_mwh * deficit


def solve_optimum(
    config: BatteryConfig,
    prices: Sequence[float] | FloatArray,
    durations_hours: Sequence[float] | FloatArray,
    *,
    terminal_price: float | None = None,
    initial_energy_mwh: float | None = None,
    days: Sequence[int] | IntArray | None = None,
) -> Optimum:
    """The perfect-foresight schedule for ``prices`` (per MWh) over steps of ``durations_hours``.

    ``days`` (one calendar-day number per step, see :func:`step_days`) is needed with a cycle cap. Raises
    :class:`OptimumError` when the inputs disagree or the solver fails.
    """
    price = np.asarray(prices, dtype=np.float64)
    hours = np.asarray(durations_hours, dtype=np.float64)
    n = int(price.size)
    if hours.size != n:
        raise OptimumError("durations_hours", int(hours.size), f"must have one entry per price ({n})")
    if not (np.all(np.isfinite(price)) and np.all(np.isfinite(hours)) and np.all(hours >= 0)):
        raise OptimumError("prices", "…", "prices and durations must be finite, durations >= 0")
    if terminal_price is not None and not (np.isfinite(terminal_price) and terminal_price >= 0):
        raise OptimumError("terminal_price", terminal_price, "must be a finite price >= 0")
    day = None if days is None else np.asarray(days, dtype=np.int64)
    if day is not None and day.size != n:
        raise OptimumError("days", int(day.size), f"must have one entry per price ({n})")
    start = config.initial_energy_mwh if initial_energy_mwh is None else float(initial_energy_mwh)
    if n == 0:
        nothing = LpSolution(np.zeros(0), np.zeros(0), np.zeros(0), value=0.0)
        return _schedule(config, price, nothing, start, terminal_price, bound=0.0, simultaneous=0)
    steps = Steps(
        price=price,
        charge_cap_mwh=config.max_charge_rate_mw * hours,
        discharge_cap_mwh=config.max_discharge_rate_mw * hours,
        day=day,
        start_mwh=start,
        terminal_price=terminal_price,
    )
    negative = np.flatnonzero(price < 0)
    relaxed = solve_lp(config, steps, negative)
    simultaneous = int(np.count_nonzero(np.minimum(relaxed.bought_mwh, relaxed.delivered_mwh) > 1e-9))
    if simultaneous == 0:  # a schedule the battery can follow already: the optimum itself
        return _schedule(config, price, _net(config, relaxed), start, terminal_price, None, 0)
    netted = _schedule(
        config, price, _net(config, relaxed), start, terminal_price, relaxed.value, simultaneous
    )
    if netted.exact:
        return netted
    # Fix each negative-price step to the direction the relaxation moved the cells in, and solve again.
    keep = config.one_way_efficiency
    discharging = keep * relaxed.bought_mwh < relaxed.delivered_mwh / keep
    charge_cap, discharge_cap = steps.charge_cap_mwh.copy(), steps.discharge_cap_mwh.copy()
    charge_cap[negative[discharging[negative]]] = 0.0
    discharge_cap[negative[~discharging[negative]]] = 0.0
    fixed = Steps(price, charge_cap, discharge_cap, day, start, terminal_price)
    solution = _net(config, solve_lp(config, fixed, np.zeros(0, dtype=np.int64)))
    improved = _schedule(config, price, solution, start, terminal_price, relaxed.value, simultaneous)
    return improved if improved.value >= netted.value else netted


def _net(config: BatteryConfig, solution: LpSolution) -> LpSolution:
    """One action per step: where a step both bought and delivered, keep only the net move of the cells.

    The state of charge is unchanged, so every other constraint still holds; at a price >= 0 the value can
    only rise (less bought, less delivered and worn), at a negative price it loses the energy burnt.
    """
    bought, delivered = solution.bought_mwh, solution.delivered_mwh
    both = (bought > 0) & (delivered > 0)
    if not both.any():
        return solution
    keep = config.one_way_efficiency
    move = keep * bought - delivered / keep
    return LpSolution(
        bought_mwh=np.where(both, np.maximum(move, 0.0) / keep, bought),
        delivered_mwh=np.where(both, np.maximum(-move, 0.0) * keep, delivered),
        state_of_charge_mwh=solution.state_of_charge_mwh,
        value=solution.value,
    )


def _schedule(
    config: BatteryConfig,
    price: FloatArray,
    solution: LpSolution,
    start: float,
    terminal_price: float | None,
    bound: float | None,
    simultaneous: int,
) -> Optimum:
    """The :class:`Optimum` of a schedule the battery can follow (one action per step), valued as a policy
    is: cash, wear and end energy recomputed from the energies, not taken from the solver's objective.
    ``bound`` None: the schedule is known to be optimal (its value is the bound)."""
    bought, delivered = solution.bought_mwh, solution.delivered_mwh
    cash_flows = price * (delivered - bought)
    cash = float(cash_flows.sum())
    wear = float(delivered.sum()) * config.cycle_cost_per_mwh
    end_value = 0.0
    if terminal_price is not None and solution.state_of_charge_mwh.size:
        end_value = terminal_value(config, float(solution.state_of_charge_mwh[-1]) - start, terminal_price)
    value = cash - wear + end_value
    bound = value if bound is None else max(bound, value)
    return Optimum(
        value=value,
        cash_value=cash,
        wear_cost=wear,
        terminal_value=end_value,
        bought_mwh=bought,
        delivered_mwh=delivered,
        state_of_charge_mwh=solution.state_of_charge_mwh,
        cash_flows=cash_flows,
        bound=bound,
        exact=bound - value <= EXACT_TOLERANCE * max(1.0, abs(bound)),
        simultaneous_steps=simultaneous,
    )
