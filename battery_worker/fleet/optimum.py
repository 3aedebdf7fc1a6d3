"""The site's perfect-foresight optimum: what machines and battery together could have earned. Pure.

Solved over the ticks a backtest applies (each strictly after the previous), each step as long as the
battery's own rule makes it (the first tick and long gaps get ``default_step_hours``), the battery starting
at its initial charge. Its end is valued by the backtest's terminal rule (a surplus sold at the series' mean
energy price after the discharge loss, a deficit bought back), the rule :mod:`battery_worker.fleet.accounting`
values a policy's end by, so no policy can beat the optimum by ending fuller; ``end_at_start`` instead
makes it end where it started. Machines are continuous between their minimum and all of them (see
:mod:`battery_worker.fleet.lp`), so ``profit`` is an upper bound for any policy with whole machines. A month
of 5-minute steps (8,640 steps, 86,400 variables) solves in a few seconds.

With a carbon intensity on the ticks, the optimum's site emissions are counted as a run's are (its grid
import × each step's intensity, a missing one carried, :mod:`battery_worker.fleet.accounting`): those of
the schedule the solver found. The optimum is chosen by profit alone, so another schedule of equal profit
may emit otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from battery_worker.backtest.engine import applicable_ticks, applied_intensities, terminal_price
from battery_worker.backtest.optimum import step_durations
from battery_worker.backtest.optimum_lp import OptimumError
from battery_worker.battery_config import BatteryConfig
from battery_worker.emissions import DEFAULT_CARRY_HOURS
from battery_worker.fleet.lp import SiteSeries, SiteSolution, solve_site
from battery_worker.fleet.model import SiteModel
from battery_worker.ticks import PriceTick


@dataclass(frozen=True, slots=True)
class SiteOptimum:
    """``profit`` = revenues − energy cost (− wear), money of :mod:`battery_worker.fleet.model`."""

    profit: float
    series: SiteSeries
    solution: SiteSolution
    grid_import_kg: float | None = None
    """The schedule's grid import × each step's intensity, over the steps with one (None: none had one)."""


def series_of(ticks: Sequence[PriceTick], config: BatteryConfig) -> SiteSeries:
    """The prices and step hours of the ticks a run applies."""
    kept = applicable_ticks(ticks)
    return SiteSeries(
        energy=np.asarray([tick.energy_price for tick in kept], dtype=np.float64),
        hash=np.asarray([tick.hash_price for tick in kept], dtype=np.float64),
        token=np.asarray([tick.token_price for tick in kept], dtype=np.float64),
        hours=np.asarray(step_durations(config, [tick.timestamp for tick in kept]), dtype=np.float64),
    )


def site_optimum(
    site: SiteModel,
    config: BatteryConfig,
    ticks: Sequence[PriceTick],
    *,
    end_at_start: bool = False,
    carry_hours: float = DEFAULT_CARRY_HOURS,
) -> SiteOptimum:
    """The optimum over ``ticks``; :class:`OptimumError` if there are none or the solver fails.

    ``carry_hours``: how long a missing intensity is carried, as the runs it is compared with carry it.
    """
    series = series_of(ticks, config)
    if series.energy.size == 0:
        raise OptimumError("ticks", 0, "no ticks to optimise")
    end_price = None if end_at_start else terminal_price(series.energy)
    solution = solve_site(site, config, series, config.initial_energy_mwh, terminal_price=end_price)
    if solution is None:
        raise OptimumError("site optimum", series.energy.size, "solver failed")
    return SiteOptimum(
        profit=solution.value,
        series=series,
        solution=solution,
        grid_import_kg=_grid_import_kg(ticks, series, solution, carry_hours),
    )


def _grid_import_kg(
    ticks: Sequence[PriceTick], series: SiteSeries, solution: SiteSolution, carry_hours: float
) -> float | None:
    used = applied_intensities(applicable_ticks(ticks), carry_hours)
    known = [
        float(mw * hours * intensity)
        for mw, hours, intensity in zip(solution.import_mw, series.hours, used, strict=True)
        if intensity is not None
    ]
    return sum(known) if known else None
