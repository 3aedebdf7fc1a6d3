"""The site backtest: machines and battery over a price file, against the site's perfect-foresight optimum.

Pure. What ``battery-worker backtest --site`` prints and ``bench/site_table.py`` tabulates: profit
(revenues − energy cost, the battery's end valued and its wear paid as the backtest does, see
:mod:`battery_worker.fleet.accounting`) of (a) every machine always on, no battery; (b) every machine on,
the battery run by ``mpc``; the machines planned tick by tick without a battery (what planning alone earns);
(c) the ``site`` policy, machines and battery together; each as a share of the site optimum (machines
continuous, so an upper bound). With a carbon intensity on the ticks, each run's site emissions too: the
grid import × each step's intensity (:attr:`SitePlan.grid_import_kg`), summed; and the optimum's, of the
schedule it found (:class:`~battery_worker.fleet.optimum.SiteOptimum`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from battery_worker.backtest.engine import (
    BacktestRun,
    applicable_ticks,
    applied_intensities,
    run_policy,
    warmed_site,
)
from battery_worker.battery_config import BatteryConfig
from battery_worker.emissions import DEFAULT_CARRY_HOURS
from battery_worker.fleet.accounting import SiteProfit, no_battery_profit, run_profit
from battery_worker.fleet.model import SiteModel
from battery_worker.fleet.optimum import SiteOptimum, site_optimum
from battery_worker.policies.base import Policy
from battery_worker.ticks import PriceTick

RUNS = (
    ("all_on", "(a) every machine on, no battery"),
    ("all_on_mpc", "(b) every machine on, battery by mpc"),
    ("planned", "machines planned, no battery"),
    ("site", "(c) site policy: machines and battery"),
)
"""Each compared run's key and label, in the order they are reported."""

Announce = Callable[[str], Callable[[], None] | None]
"""Called with a run's key before it starts; may return a per-tick callback (a progress bar)."""


@dataclass(frozen=True, slots=True)
class SiteComparison:
    ticks: int
    optimum: float
    profits: dict[str, SiteProfit]
    optimum_grid_import_kg: float | None = None
    emissions_coverage: float = 0.0
    """The share of ticks whose intensity was known or carried: the tonnes cover those ticks only."""

    def share(self, key: str) -> float:
        return self.profits[key].profit / self.optimum if self.optimum else float("nan")

    @property
    def counts_emissions(self) -> bool:
        """Some tick had a carbon intensity: the runs' site emissions are reported."""
        return any(profit.grid_import_kg is not None for profit in self.profits.values())

    def to_json(self) -> dict[str, Any]:
        runs: dict[str, Any] = {}
        for key, _label in RUNS:
            runs[key] = {"profit": self.profits[key].profit, "share_of_optimum": self.share(key)}
            if self.counts_emissions:
                runs[key]["grid_import_kg"] = self.profits[key].grid_import_kg
        summary: dict[str, Any] = {"ticks": self.ticks, "optimum_profit": self.optimum}
        if self.counts_emissions:
            summary["optimum_grid_import_kg"] = self.optimum_grid_import_kg
            summary["emissions_coverage"] = self.emissions_coverage
        return {**summary, "runs": runs}


def compare_site(
    ticks: Sequence[PriceTick],
    config: BatteryConfig,
    site: SiteModel,
    *,
    mpc: Policy,
    site_policy: Policy,
    announce: Announce | None = None,
    carry_hours: float = DEFAULT_CARRY_HOURS,
    warmup: Sequence[PriceTick] = (),
    solve: Callable[..., SiteOptimum] = site_optimum,
) -> SiteComparison:
    """Run the four comparisons and solve the optimum; ``site_policy`` must plan on ``site``.

    ``warmup``: past ticks the two policies learn from first (:func:`warmed_site`). ``solve``: called as
    :func:`site_optimum` is (the command line's solves it in a child process, to stop at once).
    """

    def run(policy: Policy, key: str) -> BacktestRun:
        on_tick = None if announce is None else announce(key)
        start = warmed_site(warmup, config, policy) if warmup else None
        return run_policy(ticks, config, policy, site=start, on_tick=on_tick, carry_hours=carry_hours)

    optimum = solve(site, config, ticks, carry_hours=carry_hours)
    profits = {
        "all_on": no_battery_profit(site, config, ticks, carry_hours=carry_hours),
        "all_on_mpc": run_profit(site, config, run(mpc, "all_on_mpc"), curtail=False),
        "planned": no_battery_profit(site, config, ticks, curtail=True, carry_hours=carry_hours),
        "site": run_profit(site, config, run(site_policy, "site")),
    }
    used = applied_intensities(applicable_ticks(ticks), carry_hours)  # what the runs' emissions used
    return SiteComparison(
        ticks=len(ticks),
        optimum=optimum.profit,
        profits=profits,
        optimum_grid_import_kg=optimum.grid_import_kg,
        emissions_coverage=sum(value is not None for value in used) / len(used) if used else 0.0,
    )


def site_table(comparison: SiteComparison) -> str:
    """The comparison as a Markdown table: profit and share of the optimum per run, and the site's grid
    emissions when the ticks carry an intensity ("-": no step of that run had one)."""
    carbon = comparison.counts_emissions
    extra = ("", "", "")
    if carbon:
        known = f"{100 * comparison.emissions_coverage:.1f} % of ticks with an intensity"
        extra = (f" site emissions (t CO₂eq; {known}) |", "---:|", _tonnes(comparison.optimum_grid_import_kg))
    lines = [
        "| site run | profit | share of optimum |" + extra[0],
        "|---|---:|---:|" + extra[1],
        f"| site optimum (perfect foresight) | {comparison.optimum:,.1f} | 100.0 % |" + extra[2],
    ]
    for key, label in RUNS:
        profit = comparison.profits[key]
        row = f"| {label} | {profit.profit:,.1f} | {100 * comparison.share(key):.1f} % |"
        if carbon:
            row += _tonnes(profit.grid_import_kg)
        lines.append(row)
    return "\n".join(lines)


def _tonnes(kg: float | None) -> str:
    return " - |" if kg is None else f" {kg / 1000:,.1f} |"


def site_line(site: SiteModel) -> str:
    """One line describing the site, for the report's head."""
    mining = sum(m.max_mw for m in site.machines if m.paid_by == "hash")
    inference = sum(m.max_mw for m in site.machines if m.paid_by == "token")
    return (
        f"site: {len(site.machines)} machine types, {mining:g} MW mining + {inference:g} MW inference, "
        f"import limit {site.import_limit_mw:g} MW, export limit {site.export_limit_mw:g} MW"
    )
