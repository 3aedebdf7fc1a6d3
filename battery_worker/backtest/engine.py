"""Backtest: run a policy over past ticks through :func:`dispatch`, and measure it against the optimum. Pure.

The run goes through :func:`battery_worker.dispatch.dispatch`, the worker's own path, so the decisions are
exactly the worker's. Ticks at or before the last applied one are skipped and counted, as the worker does.

Valuing the end fairly: a policy may end fuller or emptier than it started. Its value is the cash it earned
(avoided cost minus charging cost) plus :func:`optimum.terminal_value` of that energy difference at the
*terminal price*, the mean price of the series (never below zero): a surplus counts as sold after the
discharge loss, a deficit as bought back with the charge loss. The optimum is solved with the same rule, so it
bounds every policy's value and the capture ratio is at most 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from battery_worker.backtest.optimum import FloatArray, Optimum, solve_optimum, step_durations, terminal_value
from battery_worker.battery import Action, BatteryConfig
from battery_worker.dispatch import SiteState, dispatch, new_site_state
from battery_worker.errors import InvalidInput
from battery_worker.policies.base import Decision, JsonObject, Policy
from battery_worker.ticks import PriceTick


@dataclass(frozen=True, slots=True)
class BacktestRun:
    """One entry per applied tick. Power is signed (+ charging, − discharging), site side, after clamping."""

    policy: str
    timestamps: tuple[datetime, ...]
    prices: FloatArray
    durations_hours: FloatArray
    decisions: tuple[Decision, ...]
    power_mw: FloatArray
    state_of_charge_mwh: FloatArray
    cash_flows: FloatArray
    drawn_mwh: FloatArray
    lost_mwh: FloatArray
    skipped_ticks: int
    initial_energy_mwh: float
    final: SiteState


@dataclass(frozen=True, slots=True)
class MonthFigures:
    """One calendar month (UTC). Values are cash only: the terminal rule applies to the whole run."""

    month: str
    ticks: int
    value: float
    optimum_value: float
    cycles: float
    energy_lost_mwh: float


@dataclass(frozen=True, slots=True)
class BacktestSummary:
    policy: str
    ticks: int
    skipped_ticks: int
    start: str
    end: str
    value: float
    cash_value: float
    terminal_value: float
    terminal_price: float
    optimum_value: float
    capture_ratio: float | None
    cycles: float
    energy_lost_mwh: float
    final_charge_percent: float
    months: tuple[MonthFigures, ...]

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
) -> BacktestRun:
    """Dispatch every tick in order from ``site`` (a fresh site by default)."""
    state = new_site_state(config, policy) if site is None else site
    start = state.battery.state_of_charge_mwh
    stamps: list[datetime] = []
    prices: list[float] = []
    hours: list[float] = []
    decisions: list[Decision] = []
    power: list[float] = []
    soc: list[float] = []
    cash: list[float] = []
    drawn: list[float] = []
    lost: list[float] = []
    skipped = 0
    for tick in ticks:
        if on_tick is not None:
            on_tick()
        if state.is_stale(tick):
            skipped += 1
            continue
        before = state.battery
        outcome = dispatch(tick, state, config, policy)
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
        lost.append(after.energy_lost_mwh - before.energy_lost_mwh)
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
        lost_mwh=np.asarray(lost),
        skipped_ticks=skipped,
        initial_energy_mwh=start,
        final=state,
    )


def applicable_ticks(ticks: Sequence[PriceTick]) -> list[PriceTick]:
    """The ticks a run applies: each strictly after the previous applied one (others are skipped)."""
    kept: list[PriceTick] = []
    for tick in ticks:
        if not kept or tick.timestamp > kept[-1].timestamp:
            kept.append(tick)
    return kept


def terminal_price(prices: Sequence[float] | FloatArray) -> float:
    """The price the energy left at the end is valued at: the series' mean, never below zero."""
    values = np.asarray(prices, dtype=np.float64)
    return max(0.0, float(values.mean())) if values.size else 0.0


def optimum_for(ticks: Sequence[PriceTick], config: BatteryConfig) -> Optimum:
    """The perfect-foresight optimum over the ticks a run applies, with the backtest's terminal rule."""
    kept = applicable_ticks(ticks)
    prices = [tick.energy_price for tick in kept]
    hours = step_durations(config, [tick.timestamp for tick in kept])
    return solve_optimum(config, prices, hours, terminal_price=terminal_price(prices))


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
    value = cash + end
    ratio = value / optimum.value if optimum.value > 0 else None
    return BacktestSummary(
        policy=run.policy,
        ticks=len(run.timestamps),
        skipped_ticks=run.skipped_ticks,
        start=run.timestamps[0].isoformat(),
        end=run.timestamps[-1].isoformat(),
        value=value,
        cash_value=cash,
        terminal_value=end,
        terminal_price=price,
        optimum_value=optimum.value,
        capture_ratio=ratio,
        cycles=float(run.drawn_mwh.sum()) / config.capacity_mwh,
        energy_lost_mwh=float(run.lost_mwh.sum()),
        final_charge_percent=100.0 * float(run.state_of_charge_mwh[-1]) / config.capacity_mwh,
        months=monthly(run, config, optimum),
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
) -> tuple[BacktestRun, BacktestSummary]:
    """Run ``policy`` over ``ticks`` and summarise it; pass ``optimum`` to share one across policies."""
    run = run_policy(ticks, config, policy, on_tick=on_tick)
    best = optimum_for(ticks, config) if optimum is None else optimum
    return run, summarize(run, config, best)
