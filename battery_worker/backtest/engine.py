"""Backtest: run a policy over past ticks through :func:`dispatch`, and measure it against the optimum. Pure.

The run goes through :func:`battery_worker.dispatch.dispatch`, the worker's own path, so the decisions are
exactly the worker's. Ticks at or before the last applied one are skipped and counted, as the worker does.

Valuing the end fairly: a policy may end fuller or emptier than it started. Its gross value is the cash it
earned (avoided cost minus charging cost) plus :func:`optimum.terminal_value` of that energy difference at
the *terminal price*, the mean price of the series (never below zero): a surplus counts as sold after the
discharge loss, a deficit as bought back with the charge loss. Its value is that less the wear of the energy
it delivered (``cycle_cost_per_mwh``; 0 by default). The optimum is solved with the same rules, and the
capture ratio is taken against its bound (the LP relaxation's value, which no schedule of the battery can
beat), so it is at most 1; the summary says whether that figure is exact or a bound, and the gap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime

import numpy as np

from battery_worker.backtest.optimum import (
    FloatArray,
    Optimum,
    solve_optimum,
    step_days,
    step_durations,
    terminal_value,
)
from battery_worker.backtest.optimum_lp import IntArray
from battery_worker.battery import Action, step_hours
from battery_worker.battery_config import BatteryConfig
from battery_worker.dispatch import SiteState, dispatch, new_site_state
from battery_worker.emissions import DEFAULT_CARRY_HOURS, Emissions, carried_intensities, counted_between
from battery_worker.errors import InvalidInput
from battery_worker.policies.base import Decision, JsonObject, Policy
from battery_worker.ticks import PriceTick


@dataclass(frozen=True, slots=True)
class BacktestRun:
    """One entry per applied tick. Power is signed (+ charging, − discharging), site side, after clamping.
    ``bought_mwh`` is what charging bought from the grid; ``intensities`` the ticks' carbon intensity,
    ``used_intensities`` what each step's emissions used (given, carried or None) and ``net_kg`` the step's
    net emissions (NaN: unknown). ``emissions`` are the run's totals as :func:`dispatch` counted them, the
    worker's own figures."""

    policy: str
    timestamps: tuple[datetime, ...]
    prices: FloatArray
    durations_hours: FloatArray
    decisions: tuple[Decision, ...]
    power_mw: FloatArray
    state_of_charge_mwh: FloatArray
    cash_flows: FloatArray
    drawn_mwh: FloatArray
    delivered_mwh: FloatArray
    lost_mwh: FloatArray
    bought_mwh: FloatArray
    intensities: tuple[float | None, ...]
    used_intensities: tuple[float | None, ...]
    net_kg: FloatArray
    emissions: Emissions
    skipped_ticks: int
    initial_energy_mwh: float
    final: SiteState


@dataclass(frozen=True, slots=True)
class MonthFigures:
    """One calendar month (UTC). Values are cash only (the terminal rule applies to the whole run); the wear
    of the month's deliveries is beside them, the policy's and the optimum's."""

    month: str
    ticks: int
    value: float
    optimum_value: float
    cycles: float
    energy_lost_mwh: float
    wear_cost: float
    optimum_wear_cost: float

    @property
    def net_value(self) -> float:
        return self.value - self.wear_cost

    @property
    def optimum_net_value(self) -> float:
        return self.optimum_value - self.optimum_wear_cost


@dataclass(frozen=True, slots=True)
class BacktestSummary:
    """A run's figures. ``value`` is net of wear (``gross_value − wear_cost``). ``optimum_value`` is what no
    policy can beat: the optimum itself when ``optimum_exact``, else the LP bound, which the best schedule
    found (``optimum_schedule_value``) is ``optimum_gap`` (relative) below. The emissions are the run's
    (as the worker counts them), None when no tick had a carbon intensity."""

    policy: str
    ticks: int
    skipped_ticks: int
    start: str
    end: str
    value: float
    gross_value: float
    wear_cost: float
    cash_value: float
    terminal_value: float
    terminal_price: float
    optimum_value: float
    optimum_exact: bool
    optimum_gap: float
    optimum_schedule_value: float
    capture_ratio: float | None
    cycles: float
    energy_delivered_mwh: float
    energy_lost_mwh: float
    final_charge_percent: float
    months: tuple[MonthFigures, ...]
    # kgCO2eq over the steps with a known or carried intensity (None: no step had one, not zero).
    emissions_bought_kg: float | None = None
    emissions_avoided_kg: float | None = None
    emissions_net_kg: float | None = None
    emissions_coverage: float = 0.0
    # The optimum's (its best schedule's) wear and full-equivalent cycles, as the run's are counted.
    optimum_wear_cost: float = 0.0
    optimum_cycles: float = 0.0

    def to_json(self) -> JsonObject:
        """The JSON summary: ``policy``, ``value``, ``optimum_value`` and ``capture_ratio`` on top."""
        data = asdict(self)
        data["months"] = [asdict(month) for month in self.months]
        return data


def run_policy(
    ticks: Sequence[PriceTick],
    config: BatteryConfig,
    policy: Policy,
    *,
    site: SiteState | None = None,
    on_tick: Callable[[], None] | None = None,
    carry_hours: float = DEFAULT_CARRY_HOURS,
) -> BacktestRun:
    """Dispatch every tick in order from ``site`` (a fresh site by default)."""
    state = new_site_state(config, policy) if site is None else site
    first = state.emissions
    start = state.battery.state_of_charge_mwh
    stamps: list[datetime] = []
    prices: list[float] = []
    hours: list[float] = []
    decisions: list[Decision] = []
    power: list[float] = []
    soc: list[float] = []
    cash: list[float] = []
    drawn: list[float] = []
    delivered: list[float] = []
    lost: list[float] = []
    bought: list[float] = []
    intensities: list[float | None] = []
    used: list[float | None] = []
    net_kg: list[float] = []
    skipped = 0
    for tick in ticks:
        if on_tick is not None:
            on_tick()
        if state.is_stale(tick):
            skipped += 1
            continue
        before = state.battery
        outcome = dispatch(tick, state, config, policy, carry_hours=carry_hours)
        step, after = outcome.step, outcome.step.state
        state = outcome.state
        stamps.append(tick.timestamp)
        prices.append(tick.energy_price)
        hours.append(step.duration_hours)
        decisions.append(outcome.decision)
        sign = 1.0 if step.action is Action.CHARGE else -1.0 if step.action is Action.DISCHARGE else 0.0
        power.append(sign * step.power_mw)
        soc.append(after.state_of_charge_mwh)
        cash.append(after.net_value - before.net_value)
        drawn.append(after.energy_drawn_mwh - before.energy_drawn_mwh)
        delivered.append(after.energy_delivered_mwh - before.energy_delivered_mwh)
        lost.append(after.energy_lost_mwh - before.energy_lost_mwh)
        bought.append(after.energy_bought_mwh - before.energy_bought_mwh)
        intensities.append(tick.carbon_intensity)
        used.append(outcome.intensity)
        net = outcome.emissions.net_kg
        net_kg.append(math.nan if net is None else net)
    return BacktestRun(
        policy=policy.name,
        timestamps=tuple(stamps),
        prices=np.asarray(prices),
        durations_hours=np.asarray(hours),
        decisions=tuple(decisions),
        power_mw=np.asarray(power),
        state_of_charge_mwh=np.asarray(soc),
        cash_flows=np.asarray(cash),
        drawn_mwh=np.asarray(drawn),
        delivered_mwh=np.asarray(delivered),
        lost_mwh=np.asarray(lost),
        bought_mwh=np.asarray(bought),
        intensities=tuple(intensities),
        used_intensities=tuple(used),
        net_kg=np.asarray(net_kg, dtype=np.float64),
        emissions=counted_between(first, state.emissions),
        skipped_ticks=skipped,
        initial_energy_mwh=start,
        final=state,
    )


def warmed_site(history: Sequence[PriceTick], config: BatteryConfig, policy: Policy) -> SiteState:
    """A fresh site whose policy has already seen ``history``: what a worker running before the backtest's
    first tick would hold (a backtest of a few hours otherwise starts with a policy that knows nothing).

    Only the policy's memory is kept. The battery starts as configured and nothing is counted, so value and
    capture are those of the backtest's own ticks, measured against an optimum over the same ticks.
    """
    learned = run_policy(history, config, policy).final.policy_memory
    return replace(new_site_state(config, policy), policy_memory=learned)


def before_first(warmup: Sequence[PriceTick], ticks: Sequence[PriceTick]) -> list[PriceTick]:
    """The warm-up ticks that are the past of ``ticks``: those before its first tick (the rest overlap it)."""
    if not ticks:
        return []
    first = ticks[0].timestamp
    return [tick for tick in warmup if tick.timestamp < first]


def applicable_ticks(ticks: Sequence[PriceTick]) -> list[PriceTick]:
    """The ticks a run applies: each strictly after the previous applied one (others are skipped)."""
    kept: list[PriceTick] = []
    for tick in ticks:
        if not kept or tick.timestamp > kept[-1].timestamp:
            kept.append(tick)
    return kept


@dataclass(frozen=True, slots=True)
class PriceGap:
    """Hours without a tick, longer than ``max_step_hours``, that the battery books as ``default_step_hours``
    (:func:`battery_worker.battery.step_hours`): ``after`` is the tick before it."""

    after: datetime
    hours: float


def price_gaps(ticks: Sequence[PriceTick], config: BatteryConfig) -> list[PriceGap]:
    """The gaps of ``ticks`` (:func:`applicable_ticks`) by the battery's own rule. A file with a 7-month hole
    ran without a word, each gap booked as one default step, and the chart drew a line across it."""
    applied = applicable_ticks(ticks)
    found = []
    for before, tick in itertools.pairwise(applied):
        _, gap = step_hours(config, before.timestamp, tick.timestamp)
        if gap is not None:
            found.append(PriceGap(before.timestamp, gap))
    return found


def applied_intensities(applied: Sequence[PriceTick], carry_hours: float) -> list[float | None]:
    """Each applied tick's carbon intensity (``applied``: :func:`applicable_ticks`), a missing one carried
    for ``carry_hours``: what a run's emissions use, so the optimum and the runs accounted afterwards count
    the same intensities."""
    return carried_intensities(
        [tick.timestamp for tick in applied], [tick.carbon_intensity for tick in applied], carry_hours
    )


def terminal_price(prices: Sequence[float] | FloatArray) -> float:
    """The price the energy left at the end is valued at: the series' mean, never below zero."""
    values = np.asarray(prices, dtype=np.float64)
    return max(0.0, float(values.mean())) if values.size else 0.0


@dataclass(frozen=True, slots=True)
class OptimumInputs:
    """What the optimum of a run is solved from: plain arrays, cheap to hand to another process."""

    prices: FloatArray
    durations_hours: FloatArray
    days: IntArray
    terminal_price: float

    def solve(self, config: BatteryConfig) -> Optimum:
        return solve_optimum(
            config, self.prices, self.durations_hours, terminal_price=self.terminal_price, days=self.days
        )


def optimum_inputs(ticks: Sequence[PriceTick], config: BatteryConfig) -> OptimumInputs:
    """What the optimum of a run over ``ticks`` is solved from: the ticks it applies, its end rule."""
    kept = applicable_ticks(ticks)
    prices = np.asarray([tick.energy_price for tick in kept], dtype=np.float64)
    stamps = [tick.timestamp for tick in kept]
    return OptimumInputs(
        prices=prices,
        durations_hours=np.asarray(step_durations(config, stamps), dtype=np.float64),
        days=np.asarray(step_days(config, stamps), dtype=np.int64),
        terminal_price=terminal_price(prices),
    )


def optimum_for(ticks: Sequence[PriceTick], config: BatteryConfig) -> Optimum:
    """The perfect-foresight optimum over the ticks a run applies, with the backtest's terminal rule."""
    return optimum_inputs(ticks, config).solve(config)


def summarize(run: BacktestRun, config: BatteryConfig, optimum: Optimum) -> BacktestSummary:
    """Value, share of the optimum, cycles, losses and per-month figures of ``run``."""
    if len(run.timestamps) == 0:
        raise InvalidInput("ticks", 0, "no ticks to backtest")
    if optimum.cash_flows.size != run.prices.size:
        raise InvalidInput(
            "optimum", optimum.cash_flows.size, f"must cover the run's {run.prices.size} ticks"
        )
    price = terminal_price(run.prices)
    cash = float(run.cash_flows.sum())
    end = terminal_value(config, float(run.state_of_charge_mwh[-1]) - run.initial_energy_mwh, price)
    delivered = float(run.delivered_mwh.sum())
    wear = delivered * config.cycle_cost_per_mwh
    value = cash + end - wear
    ratio = value / optimum.bound if optimum.bound > 0 else None
    counted = run.emissions
    some = counted.coverage > 0
    return BacktestSummary(
        policy=run.policy,
        ticks=len(run.timestamps),
        skipped_ticks=run.skipped_ticks,
        start=run.timestamps[0].isoformat(),
        end=run.timestamps[-1].isoformat(),
        value=value,
        gross_value=cash + end,
        wear_cost=wear,
        cash_value=cash,
        terminal_value=end,
        terminal_price=price,
        optimum_value=optimum.bound,
        optimum_exact=optimum.exact,
        optimum_gap=optimum.relative_gap,
        optimum_schedule_value=optimum.value,
        capture_ratio=ratio,
        cycles=float(run.drawn_mwh.sum()) / config.capacity_mwh,
        energy_delivered_mwh=delivered,
        energy_lost_mwh=float(run.lost_mwh.sum()),
        final_charge_percent=100.0 * float(run.state_of_charge_mwh[-1]) / config.capacity_mwh,
        months=monthly(run, config, optimum),
        optimum_wear_cost=optimum.wear_cost,
        optimum_cycles=float(optimum.delivered_mwh.sum()) / config.one_way_efficiency / config.capacity_mwh,
        emissions_bought_kg=counted.bought_kg if some else None,
        emissions_avoided_kg=counted.avoided_kg if some else None,
        emissions_net_kg=counted.net_kg if some else None,
        emissions_coverage=counted.coverage,
    )


def monthly(run: BacktestRun, config: BatteryConfig, optimum: Optimum) -> tuple[MonthFigures, ...]:
    keys = [f"{at.year:04d}-{at.month:02d}" for at in run.timestamps]
    months: list[MonthFigures] = []
    start = 0
    for index in range(1, len(keys) + 1):
        if index == len(keys) or keys[index] != keys[start]:
            part = slice(start, index)
            months.append(
                MonthFigures(
                    month=keys[start],
                    ticks=index - start,
                    value=float(run.cash_flows[part].sum()),
                    optimum_value=float(optimum.cash_flows[part].sum()),
                    cycles=float(run.drawn_mwh[part].sum()) / config.capacity_mwh,
                    energy_lost_mwh=float(run.lost_mwh[part].sum()),
                    wear_cost=float(run.delivered_mwh[part].sum()) * config.cycle_cost_per_mwh,
                    optimum_wear_cost=float(optimum.delivered_mwh[part].sum()) * config.cycle_cost_per_mwh,
                )
            )
            start = index
    return tuple(months)


def backtest(
    ticks: Sequence[PriceTick],
    config: BatteryConfig,
    policy: Policy,
    *,
    optimum: Optimum | None = None,
    on_tick: Callable[[], None] | None = None,
    carry_hours: float = DEFAULT_CARRY_HOURS,
    warmup: Sequence[PriceTick] = (),
) -> tuple[BacktestRun, BacktestSummary]:
    """Run ``policy`` over ``ticks`` and summarise it; pass ``optimum`` to share one across policies.

    ``warmup``: past ticks the policy learns from first (:func:`warmed_site`), neither traded nor counted.
    """
    site = warmed_site(before_first(warmup, ticks), config, policy) if warmup else None
    run = run_policy(ticks, config, policy, site=site, on_tick=on_tick, carry_hours=carry_hours)
    best = optimum_for(ticks, config) if optimum is None else optimum
    return run, summarize(run, config, best)
