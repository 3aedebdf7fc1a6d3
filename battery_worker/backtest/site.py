"""The site backtest: machines and battery over a price file, against the site's perfect-foresight optimum.

Pure. What ``battery-worker backtest --site`` prints and ``bench/site_table.py`` tabulates: profit
(revenues − energy cost, the battery's end valued and its wear paid as the backtest does, see
:mod:`battery_worker.fleet.accounting`) of (a) every machine always on, no battery; (b) every machine on,
the battery run by ``mpc``; the machines planned tick by tick without a battery (what planning alone earns);
(c) the ``site`` policy, machines and battery together; each as a share of the site optimum (machines
continuous, so an upper bound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from battery_worker.backtest.engine import run_policy
from battery_worker.battery_config import BatteryConfig
from battery_worker.fleet.accounting import SiteProfit, no_battery_profit, run_profit
from battery_worker.fleet.model import SiteModel
from battery_worker.fleet.optimum import site_optimum
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

    def share(self, key: str) -> float:
        return self.profits[key].profit / self.optimum if self.optimum else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "optimum_profit": self.optimum,
            "runs": {
                key: {"profit": self.profits[key].profit, "share_of_optimum": self.share(key)}
                for key, _label in RUNS
            },
        }


def compare_site(
    ticks: Sequence[PriceTick],
    config: BatteryConfig,
    site: SiteModel,
    *,
    mpc: Policy,
    site_policy: Policy,
    announce: Announce | None = None,
) -> SiteComparison:
    """Run the four comparisons and solve the optimum; ``site_policy`` must plan on ``site``."""

    def on_tick(key: str) -> Callable[[], None] | None:
        return None if announce is None else announce(key)

    optimum = site_optimum(site, config, ticks).profit
    profits = {
        "all_on": no_battery_profit(site, config, ticks),
        "all_on_mpc": run_profit(
            site, config, run_policy(ticks, config, mpc, on_tick=on_tick("all_on_mpc")), curtail=False
        ),
        "planned": no_battery_profit(site, config, ticks, curtail=True),
        "site": run_profit(site, config, run_policy(ticks, config, site_policy, on_tick=on_tick("site"))),
    }
    return SiteComparison(ticks=len(ticks), optimum=optimum, profits=profits)


def site_table(comparison: SiteComparison) -> str:
    """The comparison as a Markdown table: profit and share of the optimum per run."""
    lines = [
        "| site run | profit | share of optimum |",
        "|---|---:|---:|",
        f"| site optimum (perfect foresight) | {comparison.optimum:,.1f} | 100.0 % |",
    ]
    for key, label in RUNS:
        profit = comparison.profits[key].profit
        lines.append(f"| {label} | {profit:,.1f} | {100 * comparison.share(key):.1f} % |")
    return "\n".join(lines)


def site_line(site: SiteModel) -> str:
    """One line describing the site, for the report's head."""
    mining = sum(m.max_mw for m in site.machines if m.paid_by == "hash")
    inference = sum(m.max_mw for m in site.machines if m.paid_by == "token")
    return (
        f"site: {len(site.machines)} machine types, {mining:g} MW mining + {inference:g} MW inference, "
        f"import limit {site.import_limit_mw:g} MW, export limit {site.export_limit_mw:g} MW"
    )
