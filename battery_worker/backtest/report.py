"""Show backtests: text tables for the terminal and docs, and what the chart shows (pure).

The chart itself, the one module that needs matplotlib, is :mod:`.chart`; :func:`write_png` stays here,
where the commands and benchmarks call it, and imports it only when a PNG is asked for. What the chart
shows is decided here, so it can be tested without drawing: capture per month (:func:`monthly_capture`),
the week it zooms on (:func:`zoom_window`) and the emissions panel (:func:`shows_emissions`,
:func:`cumulative_net_tonnes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from battery_worker.backtest.engine import BacktestRun, BacktestSummary
from battery_worker.backtest.optimum import FloatArray, Optimum
from battery_worker.battery import as_utc
from battery_worker.battery_config import BatteryConfig
from battery_worker.emissions import KG_PER_TONNE, step_emissions
from battery_worker.errors import InvalidInput

DAY_SECONDS = 86_400.0
ZOOM_DAYS = 7


def ratio_text(value: float | None) -> str:
    """A share with one decimal; one below 0.05 % keeps two significant digits ('-0.027%', not '-0.0%')."""
    if value is None:
        return "n/a"
    percent = 100.0 * value
    if percent != 0 and abs(percent) < 0.05 and math.isfinite(percent):
        return f"{percent:.{min(6, 1 - math.floor(math.log10(abs(percent))))}f}%"
    return f"{percent:.1f}%"


def amount(value: float, reference: float, most: int = 2) -> str:
    """``value`` with the decimals the run's scale (``reference``, its largest figure) needs for four digits,
    at most ``most`` (money's two): whole units from 1,000 on, 124.3 and 63.19 below (a MARA file's optimum
    of 124.3 showed as '124' and a policy's −0.04 as '-0'). Never '-0'."""
    size = abs(reference)
    decimals = (
        0
        if size >= 1000 or size == 0 or not math.isfinite(size)
        else min(most, 3 - math.floor(math.log10(size)))
    )
    return f"{round(value, decimals) + 0.0:,.{decimals}f}"


def energy(value: float, reference: float) -> str:
    """MWh as :func:`amount` shows money, to the kWh below 1 MWh: a 1 MWh battery's 0.105 MWh lost showed
    as '0', then (two decimals) its 4 kWh as '0.00' (a backtest and a diff review)."""
    return amount(value, reference, most=3)


def summary_table(summaries: Sequence[BacktestSummary]) -> str:
    """One Markdown row per policy: value, share of the optimum, cycles, energy lost."""
    lines = [
        "| policy | value | optimum | captured | cycles | energy lost (MWh) | final charge |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    scale = max((abs(x) for s in summaries for x in (s.value, s.optimum_value)), default=0.0)
    lost_scale = max((s.energy_lost_mwh for s in summaries), default=0.0)
    for s in summaries:
        lines.append(
            f"| {s.policy} | {amount(s.value, scale)} | {amount(s.optimum_value, scale)} "
            f"| {ratio_text(s.capture_ratio)} "
            f"| {s.cycles:.1f} | {energy(s.energy_lost_mwh, lost_scale)} | {s.final_charge_percent:.0f}% |"
        )
    return "\n".join(lines)


def month_table(summary: BacktestSummary) -> str:
    """Per-month cash value against the optimum's cash in the same month (the terminal rule is yearly).

    With wear priced, each side's wear has a column and the capture is of cash less wear, as the run's own
    capture is: a month's cash alone said 92.5 % where the run, net of wear, said 80.0 %."""
    worn = any(m.wear_cost or m.optimum_wear_cost for m in summary.months)
    if worn:
        head = "| month | ticks | cash | wear | optimum cash | optimum wear | captured (net of wear) |"
        rule = "|---|---:|---:|---:|---:|---:|---:|"
    else:
        head, rule = "| month | ticks | value | optimum | captured |", "|---|---:|---:|---:|---:|"
    lines = [f"{summary.policy}: per month", f"{head} cycles | energy lost (MWh) |", f"{rule}---:|---:|"]
    scale = max((abs(x) for m in summary.months for x in (m.value, m.optimum_value)), default=0.0)
    lost_scale = max((m.energy_lost_mwh for m in summary.months), default=0.0)
    for m, (_, ratio) in zip(summary.months, monthly_capture(summary), strict=True):
        money = (
            f"{amount(m.value, scale)} | {amount(m.wear_cost, scale)} | {amount(m.optimum_value, scale)} "
            f"| {amount(m.optimum_wear_cost, scale)}"
            if worn
            else f"{amount(m.value, scale)} | {amount(m.optimum_value, scale)}"
        )
        rest = f"{ratio_text(ratio)} | {m.cycles:.1f} | {energy(m.energy_lost_mwh, lost_scale)}"
        lines.append(f"| {m.month} | {m.ticks} | {money} | {rest} |")
    return "\n".join(lines)


def capture(value: float, optimum_value: float) -> float | None:
    """Share of the optimum; undefined when the optimum earns nothing (or loses) in that span."""
    return value / optimum_value if optimum_value > 0 else None


def monthly_capture(summary: BacktestSummary) -> list[tuple[str, float | None]]:
    """``(YYYY-MM, capture)`` per calendar month (UTC), from cash in the month less its wear on both sides
    (cash alone without a wear cost)."""
    return [(m.month, capture(m.net_value, m.optimum_net_value)) for m in summary.months]


@dataclass(frozen=True, slots=True)
class ZoomWindow:
    """Ticks ``start`` (included) to ``stop`` (excluded) of a run; ``whole_run`` if the run is that short."""

    start: int
    stop: int
    whole_run: bool
    optimum_cash: float


def _seconds(timestamps: Sequence[datetime]) -> FloatArray:
    return np.array([as_utc(at).timestamp() for at in timestamps], dtype=np.float64)


def typical_step_seconds(timestamps: Sequence[datetime]) -> float:
    """The median tick interval (an hour for a single tick): the run's resolution."""
    seconds = _seconds(timestamps)
    return float(np.median(np.diff(seconds))) if seconds.size > 1 else 3600.0


def zoom_window(
    timestamps: Sequence[datetime], optimum_cash_flows: FloatArray, *, days: int = ZOOM_DAYS
) -> ZoomWindow:
    """The ``days`` starting at a UTC midnight (or at the first tick) in which the optimum's cash is largest.

    A window holds the ticks stamped in ``[start, start + days)``; only windows the run covers completely
    compete, and a run no longer than ``days`` is its own window. Ties go to the earliest.
    """
    n = len(timestamps)
    if n == 0 or optimum_cash_flows.size != n:
        raise InvalidInput("optimum", int(optimum_cash_flows.size), f"must cover the {n} ticks to chart")
    seconds = _seconds(timestamps)
    length = days * DAY_SECONDS
    end = seconds[-1] + typical_step_seconds(timestamps)
    cumulative = np.concatenate([[0.0], np.cumsum(optimum_cash_flows)])
    if end - seconds[0] <= length:
        return ZoomWindow(0, n, True, float(cumulative[-1]))
    day = np.floor(seconds / DAY_SECONDS)
    starts = np.flatnonzero(np.concatenate([[True], day[1:] != day[:-1]]))
    starts = starts[seconds[starts] + length <= end]
    stops = np.searchsorted(seconds, seconds[starts] + length, side="left")
    earned = cumulative[stops] - cumulative[starts]
    best = int(np.argmax(earned))
    return ZoomWindow(int(starts[best]), int(stops[best]), False, float(earned[best]))


@dataclass(frozen=True, slots=True)
class PriceScale:
    """The zoomed week's price axis: ``low`` to ``high``; ``clipped`` ticks lie outside it, the furthest
    at ``beyond`` (above it if positive, below if that is further)."""

    low: float
    high: float
    clipped: int
    beyond: float


SPIKE_QUANTILE = 0.98
"""Prices between this quantile's two tails set the week's price axis when a few spikes would flatten the
rest."""


def price_scale(prices: FloatArray) -> PriceScale:
    """The week's price axis. Drawn to its highest price, a week of 5-minute prices with four spikes to
    about 1,300 showed the negative middays and evening peaks every decision turns on as a line on zero (a
    review viewing the chart). Each tail is cut where the prices beyond :data:`SPIKE_QUANTILE` (or below
    its mirror) reach further out than the whole range between the two quantiles; the chart then says how
    many ticks lie outside, and the furthest of them (a single tick at −1,000 flattened a week as well)."""
    low, peak = float(np.min(prices)), float(np.max(prices))
    bottom, top = (float(q) for q in np.quantile(prices, [1.0 - SPIKE_QUANTILE, SPIKE_QUANTILE]))
    span = top - bottom
    if span <= 0.0:
        pad = 0.05 * (peak - low) or 1.0
        return PriceScale(low - pad, peak + pad, 0, peak)
    high = top + 0.15 * span if peak - top > span else peak + 0.05 * span
    floor = bottom - 0.15 * span if bottom - low > span else low - 0.05 * span
    outside = int(np.count_nonzero((prices > high) | (prices < floor)))
    beyond = peak if peak - high >= floor - low else low
    return PriceScale(floor, high, outside, beyond)


def hourly_power(
    timestamps: Sequence[datetime], power_mw: FloatArray, durations_hours: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Power as hourly means, by UTC hour: (each hour's start in seconds, its MWh ÷ hours of ticks).

    Drawn tick by tick, a week of 5-minute power was a barcode, a policy's row nearly solid and the
    optimum behind it a hatch (a review viewing the chart); an hour's mean keeps what it did, charging or
    discharging and how hard."""
    seconds = _seconds(timestamps)
    hours = np.floor(seconds / 3600.0)
    starts = np.flatnonzero(np.concatenate([[True], hours[1:] != hours[:-1]]))
    energy = np.add.reduceat(power_mw * durations_hours, starts)
    spent = np.add.reduceat(durations_hours, starts)
    return hours[starts] * 3600.0, np.divide(energy, spent, out=np.zeros_like(energy), where=spent > 0)


def shows_emissions(runs: Sequence[BacktestRun]) -> bool:
    """The chart gets its emissions panel when some tick of the run had a carbon intensity."""
    return any(run.emissions.coverage > 0 for run in runs)


def cumulative_net_tonnes(net_kg: FloatArray) -> FloatArray:
    """Running net emissions in tonnes; an unknown step (NaN) adds nothing: it is left out of the totals."""
    return np.asarray(np.cumsum(np.nan_to_num(net_kg, nan=0.0)) / KG_PER_TONNE, dtype=np.float64)


def optimum_net_kg(optimum: Optimum, intensities: Sequence[float | None]) -> FloatArray:
    """The optimum's net emissions per step at the intensities the runs used (NaN: unknown)."""
    net = [
        step_emissions(float(bought), float(delivered), intensity).net_kg
        for bought, delivered, intensity in zip(
            optimum.bought_mwh, optimum.delivered_mwh, intensities, strict=True
        )
    ]
    return np.array([np.nan if kg is None else kg for kg in net], dtype=np.float64)


def money(amount: float, _position: object = None, *, keep_zeros: bool = False) -> str:
    """Three significant digits and a unit, for axes and legends: 5.07 M, 311 k, 1.39 k, 917, 5.13.

    ``keep_zeros`` (the legends, where figures stand side by side) keeps a trailing zero as a digit: 4.90 M
    beside 3.18 M, not 4.9 M. Axes drop it (50 k, not 50.0 k).
    """
    form = "#.3g" if keep_zeros else ".3g"
    for scale, unit in ((1e6, " M"), (1e3, " k")):
        if abs(amount) >= 0.9995 * scale:  # what rounds to 1,000 of a unit takes the next unit
            return f"{amount / scale:{form}}".rstrip(".") + unit
    return f"{amount:{form}}".rstrip(".")


def write_png(
    path: str | Path,
    runs: Sequence[BacktestRun],
    optimum: Optimum,
    config: BatteryConfig,
    *,
    title: str = "",
) -> Path:
    """The chart of ``runs`` against ``optimum`` as a PNG at ``path``: see :mod:`.chart`."""
    from battery_worker.backtest import chart

    return chart.write_png(path, runs, optimum, config, title=title)
