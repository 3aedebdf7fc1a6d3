"""The site's linear programme: machines and battery over a price series, one sparse HiGHS solve. Pure.

Shared by the perfect-foresight optimum (the real series, the battery ends where it started) and the
``site`` policy (a forecast, energy left at the end valued at a price). Per step ``t`` (``h_t`` hours):

* ``x_kt`` MW of machine type ``k`` running, within [minimum, all] of its machines: the continuous
  relaxation of whole machines (a step may run 12.4 machines), so the optimum is a bound on whole counts;
* battery energy bought ``c_t`` and delivered ``d_t`` (MWh, site side) and its state ``s_t`` (MWh), with
  the conventions of :mod:`battery_worker.backtest.optimum_lp`: ``s_t − s_{t−1} − √η c_t + d_t/√η = 0``,
  rates × hours as bounds, the relaxed one-action row ``c/C + d/D ≤ 1``;
* grid import ``g_t`` and export ``e_t`` (MW): ``Σ_k x_kt + (c_t − d_t)/h_t = g_t − e_t``, within the
  limits, with ``g/I + e/E ≤ 1`` when export is allowed (else both at once could pay at negative prices).

Maximised: ``Σ_t h_t (Σ_k r_kt x_kt − p_t g_t + f p_t e_t) − wear Σ d_t`` (+ the end value), where
``r_kt`` is the type's revenue per MWh. The daily cycle cap is not modelled (the battery enforces it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.optimize import linprog

from battery_worker.backtest.optimum_lp import end_prices
from battery_worker.battery_config import BatteryConfig, end_value_after_wear
from battery_worker.fleet.model import SiteModel

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SiteSeries:
    """Prices per step and each step's hours."""

    energy: FloatArray
    hash: FloatArray
    token: FloatArray
    hours: FloatArray


@dataclass(frozen=True, slots=True)
class SiteSolution:
    machines_mw: FloatArray  # (types, steps)
    bought_mwh: FloatArray
    delivered_mwh: FloatArray
    state_of_charge_mwh: FloatArray
    import_mw: FloatArray
    export_mw: FloatArray
    value: float


def revenue_per_mwh(site: SiteModel, series: SiteSeries) -> FloatArray:
    """(types, steps): what one MW of each type earns per hour at each step's prices."""
    rows = [
        machine.output
        * (series.hash if machine.paid_by == "hash" else series.token)
        / (machine.power_kw * 1e3)
        for machine in site.machines
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(site.machines), series.energy.size)


def solve_site(
    site: SiteModel,
    config: BatteryConfig,
    series: SiteSeries,
    start_mwh: float,
    *,
    end_value: float | None = None,
    terminal_price: float | None = None,
    max_iterations: int | None = None,
) -> SiteSolution | None:
    """The best plan over ``series``; None if HiGHS gave up (status not optimal, or the iteration cap).

    The end: by default the battery ends at ``start_mwh``. With ``end_value`` it may end anywhere, each MWh
    in the cells below ``start_mwh`` worth ``end_value`` and each above it that less the wear of delivering
    it (the ``mpc`` plan's rule). With ``terminal_price`` the end is valued
    as the backtest values it: a surplus sold after the discharge loss, a deficit bought back with the
    charge loss (:func:`battery_worker.backtest.optimum_lp.end_prices`). The state-of-charge bounds widen to
    include ``start_mwh``, as the battery itself allows.
    """
    n, k = int(series.energy.size), len(site.machines)
    hours, price = series.hours, series.energy
    keep = config.one_way_efficiency
    ix, ic, id_, is_, ig, ie = 0, k * n, (k + 1) * n, (k + 2) * n, (k + 3) * n, (k + 4) * n
    iu, iw = (k + 5) * n, (k + 5) * n + 1  # end surplus and deficit: s_{n-1} - u + w = start
    nvar = (k + 5) * n + 2
    steps = np.arange(n)

    objective = np.zeros(nvar)
    objective[ix:ic] = -(revenue_per_mwh(site, series) * hours).ravel()
    objective[id_ : id_ + n] = config.cycle_cost_per_mwh
    objective[ig : ig + n] = price * hours
    objective[ie : ie + n] = -site.export_price_factor * price * hours
    surplus, deficit = _end_prices(config, end_value, terminal_price)
    objective[iu], objective[iw] = -surplus, deficit

    # Power balance, MW: Σ x + c/h − d/h − g + e = 0 (rows 0..n-1); battery balance (rows n..2n-1).
    machine_cols = ix + np.arange(k * n)
    machine_rows = np.tile(steps, k)
    rows = np.concatenate(
        [
            machine_rows,
            steps,
            steps,
            steps,
            steps,
            n + steps,
            n + steps[1:],
            n + steps,
            n + steps,
            [2 * n] * 3,
        ]
    )
    cols = np.concatenate(
        [
            *(machine_cols, ic + steps, id_ + steps, ig + steps, ie + steps),
            *(is_ + steps, is_ + steps[:-1], ic + steps, id_ + steps),
            [is_ + n - 1, iu, iw],
        ]
    )
    values = np.concatenate(
        [
            *(np.ones(k * n), 1.0 / hours, -1.0 / hours, -np.ones(n), np.ones(n)),
            *(np.ones(n), -np.ones(n - 1), np.full(n, -keep), np.full(n, 1.0 / keep)),
            [1.0, -1.0, 1.0],
        ]
    )
    equalities = sparse.csr_matrix((values, (rows, cols)), shape=(2 * n + 1, nvar))
    rhs = np.zeros(2 * n + 1)
    rhs[n] = rhs[2 * n] = start_mwh

    lb, ub = np.zeros(nvar), np.zeros(nvar)
    for index, machine in enumerate(site.machines):
        lb[ix + index * n : ix + (index + 1) * n] = machine.min_mw
        ub[ix + index * n : ix + (index + 1) * n] = machine.max_mw
    charge_cap, discharge_cap = config.max_charge_rate_mw * hours, config.max_discharge_rate_mw * hours
    ub[ic : ic + n], ub[id_ : id_ + n] = charge_cap, discharge_cap
    low, high = config.min_energy_mwh, config.max_energy_mwh
    low, high = min(low, start_mwh), max(high, start_mwh)
    lb[is_ : is_ + n], ub[is_ : is_ + n] = low, high
    if end_value is not None or terminal_price is not None:
        ub[iu], ub[iw] = high - start_mwh, start_mwh - low
    ub[ig : ig + n], ub[ie : ie + n] = site.import_limit_mw, site.export_limit_mw

    inequalities, limits = _one_action_rows(site, charge_cap, discharge_cap, (ic, id_, ig, ie), nvar)
    options: dict[str, int | bool] = {"presolve": True}
    if max_iterations is not None:
        options["maxiter"] = max_iterations
    result = linprog(
        objective,
        A_ub=inequalities,
        b_ub=limits,
        A_eq=equalities,
        b_eq=rhs,
        bounds=np.column_stack([lb, ub]),
        method="highs-ds",
        options=options,
    )
    if result.status != 0 or result.x is None:
        return None
    x = result.x
    return SiteSolution(
        machines_mw=x[ix:ic].reshape(k, n),
        bought_mwh=np.maximum(x[ic : ic + n], 0.0),
        delivered_mwh=np.maximum(x[id_ : id_ + n], 0.0),
        state_of_charge_mwh=x[is_ : is_ + n],
        import_mw=x[ig : ig + n],
        export_mw=x[ie : ie + n],
        value=-float(result.fun),
    )


def _end_prices(
    config: BatteryConfig, end_value: float | None, terminal_price: float | None
) -> tuple[float, float]:
    """Worth of a MWh of end surplus and cost of a MWh of end deficit (0, 0 when the end is fixed)."""
    if end_value is not None:  # a surplus pays the wear of delivering it; the charge kept is worth end_value
        return end_value_after_wear(config, end_value), end_value
    if terminal_price is not None:
        return end_prices(config, terminal_price)
    return 0.0, 0.0


def _one_action_rows(
    site: SiteModel,
    charge_cap: FloatArray,
    discharge_cap: FloatArray,
    starts: tuple[int, int, int, int],
    nvar: int,
) -> tuple[sparse.csr_matrix | None, FloatArray | None]:
    """``c/C + d/D ≤ 1`` per step (when both rates are above 0) and ``g/I + e/E ≤ 1`` (when E > 0)."""
    ic, id_, ig, ie = starts
    n = int(charge_cap.size)
    pairs: list[tuple[int, int, FloatArray, FloatArray]] = []
    if charge_cap.min() > 0 and discharge_cap.min() > 0:
        pairs.append((ic, id_, 1.0 / charge_cap, 1.0 / discharge_cap))
    if site.export_limit_mw > 0:
        pairs.append((ig, ie, np.full(n, 1.0 / site.import_limit_mw), np.full(n, 1.0 / site.export_limit_mw)))
    if not pairs:
        return None, None
    steps = np.arange(n)
    blocks = [
        sparse.csr_matrix(
            (
                np.concatenate([a, b]),
                (np.concatenate([steps, steps]), np.concatenate([i + steps, j + steps])),
            ),
            shape=(n, nvar),
        )
        for i, j, a, b in pairs
    ]
    return sparse.vstack(blocks, format="csr"), np.ones(n * len(pairs))
