"""A backtest run's money at the site: machines and battery together, as the site optimum counts it. Pure.

Profit is revenues − energy cost (money of :mod:`battery_worker.fleet.model`), summed over the run's
applied ticks from each tick's :class:`SitePlan`. The battery's end is valued as the backtest values it
(:func:`battery_worker.backtest.optimum.terminal_value` at the series' mean energy price) and its wear
(``cycle_cost_per_mwh``) is paid, so a run is compared fairly with the optimum, which ends where it began.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from battery_worker.backtest.engine import BacktestRun, applicable_ticks, applied_intensities, terminal_price
from battery_worker.backtest.optimum import terminal_value
from battery_worker.battery_config import BatteryConfig
from battery_worker.emissions import DEFAULT_CARRY_HOURS
from battery_worker.fleet.model import SiteModel
from battery_worker.fleet.optimum import series_of
from battery_worker.fleet.plan import SitePlan, account, plan_applied, plan_site
from battery_worker.ticks import PriceTick


@dataclass(frozen=True, slots=True)
class SiteProfit:
    profit: float
    mining_revenue: float
    inference_revenue: float
    energy_cost: float
    battery_value: float
    curtailed_mwh: float
    grid_import_kg: float | None = None
    """The site's emissions: its grid import × each step's intensity, over the steps with one (None: none)."""


def no_battery_profit(
    site: SiteModel,
    config: BatteryConfig,
    ticks: Sequence[PriceTick],
    *,
    curtail: bool = False,
    carry_hours: float = DEFAULT_CARRY_HOURS,
) -> SiteProfit:
    """No battery: every machine running at every applied tick, or (``curtail``) the machines planned."""
    kept = applicable_ticks(ticks)
    series = series_of(kept, config)
    used = applied_intensities(kept, carry_hours)
    everything = {machine.name: machine.count for machine in site.machines}
    plans = []
    steps = zip(series.energy, series.hash, series.token, series.hours, used, strict=True)
    for p, h, t, hours, intensity in steps:
        prices = (float(p), float(h), float(t))
        if curtail:
            plan = plan_site(site, *prices, 0.0, float(hours))
        else:
            plan = account(site, *prices, everything, 0.0, float(hours))
        plans.append(plan.with_intensity(intensity))
    return _sum(plans, site, 0.0)


def run_plans(site: SiteModel, run: BacktestRun, *, curtail: bool = True) -> list[SitePlan]:
    """Each applied tick's plan beside the battery's real power; ``curtail=False``: every machine runs."""
    plans: list[SitePlan] = []
    steps = zip(run.decisions, run.power_mw, run.durations_hours, run.used_intensities, strict=True)
    for chosen, battery_mw, hours, intensity in steps:
        prices = (chosen.energy_price, chosen.hash_price, chosen.token_price)
        plan = plan_applied(site, *prices, float(battery_mw), float(hours), curtail=curtail)
        plans.append(plan.with_intensity(intensity))
    return plans


def run_profit(
    site: SiteModel, config: BatteryConfig, run: BacktestRun, *, curtail: bool = True
) -> SiteProfit:
    """The run's profit at the site, its battery's end valued and its wear paid."""
    plans = run_plans(site, run, curtail=curtail)
    end = 0.0
    delivered = 0.0
    if run.state_of_charge_mwh.size:
        delta = float(run.state_of_charge_mwh[-1]) - run.initial_energy_mwh
        end = terminal_value(config, delta, terminal_price(run.prices))
        delivered = float(run.delivered_mwh.sum())
    return _sum(plans, site, end - delivered * config.cycle_cost_per_mwh)


def _sum(plans: list[SitePlan], site: SiteModel, battery_extra: float) -> SiteProfit:
    battery = sum(plan.battery_value for plan in plans) + battery_extra
    mining = sum(plan.mining_revenue for plan in plans)
    inference = sum(plan.inference_revenue for plan in plans)
    cost = sum(plan.energy_cost for plan in plans)
    curtailed = sum((site.fleet_mw - plan.mining_mw - plan.inference_mw) * plan.hours for plan in plans)
    known = [plan.grid_import_kg for plan in plans if plan.grid_import_kg is not None]
    return SiteProfit(
        profit=mining + inference - cost + battery,
        mining_revenue=mining,
        inference_revenue=inference,
        energy_cost=cost,
        battery_value=battery,
        curtailed_mwh=curtailed,
        grid_import_kg=sum(known) if known else None,
    )
