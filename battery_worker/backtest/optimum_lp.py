"""The optimum's linear programme: the variables, the sparse constraints and one HiGHS solve. Pure.

Variables, in this order: energy bought ``c`` (n), delivered ``d`` (n), state of charge ``s`` (n), then the
end surplus ``u`` and deficit ``w``. Constraints, all sparse (a year of 5-minute steps is 105,120 steps, a
few MB of matrix):

* balance, per step: ``s_t − s_{t−1} − √η c_t + d_t/√η = 0`` (``s_{−1}`` is the start);
* end: ``s_{n−1} − u + w = start`` (``u = w = 0`` when the battery must end where it started);
* one action per step, relaxed: ``c_t/C_t + d_t/D_t ≤ 1`` on the steps given (``C``, ``D`` the step's rate
  limits). This is the convex hull of "charge or discharge, not both", the tightest constraint an LP can
  state of it; it still lets a fractional step buy and deliver at once;
* the cycle cap, per day: ``Σ d_t ≤ max_cycles_per_day × usable window``.

The objective is the value: ``Σ price_t (d_t − c_t) − cycle_cost Σ d_t`` plus the end energy valued by the
terminal rule (:func:`battery_worker.backtest.optimum.terminal_value`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.optimize import linprog

from battery_worker.battery_config import BatteryConfig
from battery_worker.errors import InvalidInput

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

SOLVER = "highs-ds"
"""HiGHS' dual simplex: on a year of 5-minute steps 16 s against 94 s for the interior point (2 cores)."""


class OptimumError(InvalidInput):
    """The optimum could not be computed (the solver failed): the message says why."""


@dataclass(frozen=True, slots=True)
class Steps:
    """One series as the LP sees it: prices, per-step rate limits in MWh, and the day of each step."""

    price: FloatArray
    charge_cap_mwh: FloatArray
    discharge_cap_mwh: FloatArray
    day: IntArray | None
    start_mwh: float
    terminal_price: float | None


@dataclass(frozen=True, slots=True)
class LpSolution:
    bought_mwh: FloatArray
    delivered_mwh: FloatArray
    state_of_charge_mwh: FloatArray
    value: float


def end_prices(config: BatteryConfig, terminal_price: float) -> tuple[float, float]:
    """Worth of one MWh of surplus in the cells at the end, and cost of one MWh of deficit.

    A surplus could be delivered (× √η) and sold at the terminal price less the wear that costs; a deficit
    must be bought back (÷ √η). The first never exceeds the second, which keeps the LP's end rule concave.
    """
    keep = config.one_way_efficiency
    return keep * max(0.0, terminal_price - config.cycle_cost_per_mwh), terminal_price / keep


def solve_lp(config: BatteryConfig, steps: Steps, exclusive: IntArray) -> LpSolution:
    """Solve the LP over ``steps``, with the relaxed one-action rule on the ``exclusive`` steps.

    Raises :class:`OptimumError` when HiGHS does not report an optimal solution.
    """
    price = steps.price
    n = int(price.size)
    keep = config.one_way_efficiency
    start = steps.start_mwh
    nvar = 3 * n + 2
    ic, id_, is_, iu, iw = 0, n, 2 * n, 3 * n, 3 * n + 1
    objective = np.empty(nvar)
    objective[ic : ic + n] = price
    objective[id_ : id_ + n] = config.cycle_cost_per_mwh - price
    objective[is_ : is_ + n] = 0.0
    objective[iu] = objective[iw] = 0.0
    if steps.terminal_price is not None:
        surplus, deficit = end_prices(config, steps.terminal_price)
        objective[iu], objective[iw] = -surplus, deficit

    rows = np.arange(n)
    last = np.array([n])
    balance = sparse.csr_matrix(
        (
            np.concatenate(
                [np.ones(n), -np.ones(n - 1), np.full(n, -keep), np.full(n, 1.0 / keep), [1.0, -1.0, 1.0]]
            ),
            (
                np.concatenate([rows, rows[1:], rows, rows, last, last, last]),
                np.concatenate([is_ + rows, is_ + rows[:-1], ic + rows, id_ + rows, [is_ + n - 1, iu, iw]]),
            ),
        ),
        shape=(n + 1, nvar),
    )
    balance_rhs = np.zeros(n + 1)
    balance_rhs[0] = start
    balance_rhs[n] = start

    inequalities, limits = _inequalities(config, steps, exclusive, nvar)
    lb = np.zeros(nvar)
    ub = np.empty(nvar)
    ub[ic : ic + n] = steps.charge_cap_mwh
    ub[id_ : id_ + n] = steps.discharge_cap_mwh
    lb[is_ : is_ + n] = config.min_energy_mwh
    ub[is_ : is_ + n] = config.max_energy_mwh
    ub[iu] = ub[iw] = 0.0
    if steps.terminal_price is not None:
        ub[iu] = max(0.0, config.max_energy_mwh - start)
        ub[iw] = max(0.0, start - config.min_energy_mwh)
    result = linprog(
        objective,
        A_ub=inequalities,
        b_ub=limits,
        A_eq=balance,
        b_eq=balance_rhs,
        bounds=np.column_stack([lb, ub]),
        method=SOLVER,
    )
    if result.status != 0 or result.x is None:
        raise OptimumError("optimum", int(result.status), f"solver failed: {result.message}")
    x = result.x
    return LpSolution(
        bought_mwh=np.maximum(x[ic : ic + n], 0.0),
        delivered_mwh=np.maximum(x[id_ : id_ + n], 0.0),
        state_of_charge_mwh=np.clip(x[is_ : is_ + n], config.min_energy_mwh, config.max_energy_mwh),
        value=-float(result.fun),
    )


def _inequalities(
    config: BatteryConfig, steps: Steps, exclusive: IntArray, nvar: int
) -> tuple[sparse.csr_matrix | None, FloatArray | None]:
    """The relaxed one-action rows and the daily cycle caps (None when there are neither)."""
    n = int(steps.price.size)
    blocks: list[sparse.csr_matrix] = []
    limits: list[FloatArray] = []
    charge, discharge = steps.charge_cap_mwh, steps.discharge_cap_mwh
    both = exclusive[(charge[exclusive] > 0) & (discharge[exclusive] > 0)]
    if both.size:
        k = np.arange(both.size)
        blocks.append(
            sparse.csr_matrix(
                (
                    np.concatenate([1.0 / charge[both], 1.0 / discharge[both]]),
                    (np.concatenate([k, k]), np.concatenate([both, n + both])),
                ),
                shape=(both.size, nvar),
            )
        )
        limits.append(np.ones(both.size))
    cap = config.daily_delivery_cap_mwh
    if cap is not None:
        if steps.day is None:
            raise OptimumError("days", None, "max_cycles_per_day needs the day of each step")
        first, day = np.unique(steps.day, return_inverse=True)
        blocks.append(sparse.csr_matrix((np.ones(n), (day, n + np.arange(n))), shape=(first.size, nvar)))
        limits.append(np.full(first.size, cap))
    if not blocks:
        return None, None
    return sparse.vstack(blocks, format="csr"), np.concatenate(limits)
