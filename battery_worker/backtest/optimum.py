"""The perfect-foresight optimum: the most any policy could earn on a price series. Pure.

A linear programme over the whole series with exactly the battery model of :mod:`battery_worker.battery`:
for the step ending at tick ``t`` (length ``h_t`` from :func:`battery.step_hours`, the same timestamp rule as
the state machine) it chooses the energy bought ``c_t`` and delivered ``d_t`` on the site side, within the
rate limits ``c_t ≤ max_charge_rate_mw · h_t`` and ``d_t ≤ max_discharge_rate_mw · h_t``; the cells then move
by ``√η · c_t − d_t / √η`` and must stay within the state-of-charge bounds. The step earns
``price_t · (d_t − c_t)``.

Two ways to treat the energy left at the end (the backtest values a policy with the same rule):

* ``terminal_price=None``: the battery must end where it started (the reference "start and end at 50%").
* ``terminal_price=v``: the end is free; a surplus over the start is worth ``√η · v`` per MWh (it could be
  sold) and a deficit costs ``v / √η`` per MWh (it must be bought back). See :func:`terminal_value`.

The state machine does one thing per tick. Charging and discharging in the same step only pays when the price
is negative (it burns energy bought at a negative price), so those steps alone get a binary
charge-or-discharge variable and the problem becomes a small mixed-integer one; without negative prices it is
a plain LP. Sparse matrices keep a year of hourly steps (8,760) to a few seconds with HiGHS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from battery_worker.battery import BatteryConfig, as_utc, step_hours
from battery_worker.errors import InvalidInput

FloatArray = NDArray[np.float64]


class OptimumError(InvalidInput):
    """The optimum could not be computed (the solver failed): the message says why."""


@dataclass(frozen=True, slots=True)
class Optimum:
    """The best schedule for a series. Arrays have one entry per step, in MWh (site side) or price × MWh.

    ``value`` is the cash earned plus the end-of-series energy valued by the terminal rule.
    """

    value: float
    cash_value: float
    terminal_value: float
    bought_mwh: FloatArray
    delivered_mwh: FloatArray
    state_of_charge_mwh: FloatArray
    cash_flows: FloatArray
    mixed_integer_steps: int


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


def terminal_value(config: BatteryConfig, delta_mwh: float, price: float) -> float:
    """Worth of ending with ``delta_mwh`` more (or less) energy in the cells than at the start.

    A surplus could be sold at ``price`` after the discharge loss (``√η``); a deficit must be bought back at
    ``price`` plus the charge loss (``1/√η``). Valuing the two sides apart means no policy gains by simply
    ending fuller or emptier than it started.
    """
    keep = config.one_way_efficiency
    return delta_mwh * keep * price if delta_mwh >= 0 else delta_mwh * price / keep


def solve_optimum(
    config: BatteryConfig,
    prices: Sequence[float],
    durations_hours: Sequence[float],
    *,
    terminal_price: float | None = None,
    initial_energy_mwh: float | None = None,
) -> Optimum:
    """The perfect-foresight schedule for ``prices`` (per MWh) over steps of ``durations_hours``.

    Raises :class:`OptimumError` when the inputs disagree or the solver fails.
    """
    price = np.asarray(prices, dtype=np.float64)
    hours = np.asarray(durations_hours, dtype=np.float64)
    n = int(price.size)
    if hours.size != n:
        raise OptimumError("durations_hours", int(hours.size), f"must have one entry per price ({n})")
    if not (np.all(np.isfinite(price)) and np.all(np.isfinite(hours)) and np.all(hours >= 0)):
        raise OptimumError("prices", "…", "prices and durations must be finite, durations >= 0")
    start = config.initial_energy_mwh if initial_energy_mwh is None else float(initial_energy_mwh)
    if n == 0:
        empty = np.zeros(0)
        return Optimum(
            value=0.0,
            cash_value=0.0,
            terminal_value=0.0,
            bought_mwh=empty,
            delivered_mwh=empty,
            state_of_charge_mwh=empty,
            cash_flows=empty,
            mixed_integer_steps=0,
        )
    keep = config.one_way_efficiency
    low, high = config.min_energy_mwh, config.max_energy_mwh
    negative = np.flatnonzero(price < 0)
    m = negative.size
    # Variables: bought c (n), delivered d (n), state of charge s (n), surplus u, deficit w, binaries z (m).
    nvar = 3 * n + 2 + m
    ic, id_, is_, iu, iw, iz = 0, n, 2 * n, 3 * n, 3 * n + 1, 3 * n + 2
    objective = np.zeros(nvar)
    objective[ic : ic + n] = price
    objective[id_ : id_ + n] = -price
    if terminal_price is not None:
        objective[iu] = -keep * terminal_price
        objective[iw] = terminal_price / keep

    rows = np.arange(n)
    # Energy balance: s_t − s_{t−1} − √η c_t + d_t/√η = 0 (s_{−1} = start).
    balance = sparse.coo_matrix(
        (
            np.concatenate([np.ones(n), -np.ones(n - 1), np.full(n, -keep), np.full(n, 1.0 / keep)]),
            (
                np.concatenate([rows, rows[1:], rows, rows]),
                np.concatenate([is_ + rows, is_ + rows[:-1], ic + rows, id_ + rows]),
            ),
        ),
        shape=(n, nvar),
    )
    balance_rhs = np.zeros(n)
    balance_rhs[0] = start
    # End rule: s_{n−1} − u + w = start.
    end = sparse.coo_matrix(([1.0, -1.0, 1.0], ([0, 0, 0], [is_ + n - 1, iu, iw])), shape=(1, nvar))
    blocks = [balance, end]
    lower = [balance_rhs, np.array([start])]
    upper = [balance_rhs, np.array([start])]
    charge_cap = config.max_charge_rate_mw * hours
    discharge_cap = config.max_discharge_rate_mw * hours
    if m:
        # Negative-price steps: c_t ≤ cap·z_t and d_t ≤ cap·(1 − z_t), one action per step like the battery.
        k = np.arange(m)
        exclusive = sparse.coo_matrix(
            (
                np.concatenate([np.ones(m), -charge_cap[negative], np.ones(m), discharge_cap[negative]]),
                (
                    np.concatenate([k, k, m + k, m + k]),
                    np.concatenate([ic + negative, iz + k, id_ + negative, iz + k]),
                ),
            ),
            shape=(2 * m, nvar),
        )
        blocks.append(exclusive)
        lower.append(np.full(2 * m, -np.inf))
        upper.append(np.concatenate([np.zeros(m), discharge_cap[negative]]))
    matrix = sparse.vstack(blocks, format="csr")

    lb = np.zeros(nvar)
    ub = np.zeros(nvar)
    ub[ic : ic + n] = charge_cap
    ub[id_ : id_ + n] = discharge_cap
    lb[is_ : is_ + n] = low
    ub[is_ : is_ + n] = high
    if terminal_price is not None:
        ub[iu] = max(0.0, high - start)
        ub[iw] = max(0.0, start - low)
    ub[iz : iz + m] = 1.0
    integrality = np.zeros(nvar)
    integrality[iz : iz + m] = 1

    result = milp(
        objective,
        constraints=LinearConstraint(matrix, np.concatenate(lower), np.concatenate(upper)),
        bounds=Bounds(lb, ub),
        integrality=integrality,
        options={"disp": False, "mip_rel_gap": 1e-9},
    )
    if result.status != 0 or result.x is None:
        raise OptimumError("optimum", int(result.status), f"solver failed: {result.message}")
    x = result.x
    bought = np.maximum(x[ic : ic + n], 0.0)
    delivered = np.maximum(x[id_ : id_ + n], 0.0)
    soc = x[is_ : is_ + n]
    cash_flows = price * (delivered - bought)
    cash = float(cash_flows.sum())
    end_value = 0.0
    if terminal_price is not None:
        end_value = terminal_value(config, float(soc[-1]) - start, terminal_price)
    return Optimum(
        value=cash + end_value,
        cash_value=cash,
        terminal_value=end_value,
        bought_mwh=bought,
        delivered_mwh=delivered,
        state_of_charge_mwh=soc,
        cash_flows=cash_flows,
        mixed_integer_steps=m,
    )
