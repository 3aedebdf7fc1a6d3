"""The backtest chart: one PNG a person can read, of each policy against the perfect-foresight optimum.

A year of state of charge and power drawn tick by tick is a solid block, so the chart shows three views:

* (a) the cumulative cash value of each policy and of the optimum over the whole run, the zoomed week shaded;
* (b) capture per calendar month, the policy's cash in the month ÷ the optimum's cash in the same month, as
  grouped bars with the 100 % line (skipped, and said so, when the run lies within one month);
* (c) one week at full resolution: price, state of charge, and each policy's power as steps, with the
  optimum's schedule behind them in grey;
* when the ticks carry a carbon intensity, a panel between (a) and (c): each policy's and the optimum's
  cumulative net emissions in tonnes CO₂eq (below zero: the battery lowered the grid's emissions).

What is shown is decided in :mod:`.report` (pure, tested without drawing): the week is
:func:`~battery_worker.backtest.report.zoom_window`, the 7 days from a UTC midnight in which the optimum earns
most, where a policy has most to gain or lose; a run shorter than a week is shown whole. This module only
draws, with matplotlib (the optional ``plot`` extra) on its Agg backend: files, no display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from battery_worker.backtest.engine import BacktestRun, BacktestSummary, summarize
from battery_worker.backtest.optimum import FloatArray, Optimum
from battery_worker.backtest.report import (
    ZoomWindow,
    cumulative_net_tonnes,
    hourly_power,
    money,
    monthly_capture,
    optimum_net_kg,
    price_scale,
    ratio_text,
    shows_emissions,
    typical_step_seconds,
    zoom_window,
)
from battery_worker.battery import as_utc
from battery_worker.battery_config import BatteryConfig
from battery_worker.errors import InvalidConfig, InvalidInput
from battery_worker.outputs import write_atomically

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WEEK_RULE = "the 7 days in which the optimum earns most"
WIDTH_INCHES = 14.0
DPI = 100
OPTIMUM_GREY = "0.72"
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 11}


def _resolution(step_seconds: float) -> str:
    minutes = step_seconds / 60.0
    return f"{minutes / 60:g}-hour" if minutes >= 60 else f"{minutes:g}-minute"


def optimum_power_mw(optimum: Optimum, durations_hours: FloatArray) -> FloatArray:
    """The optimum's signed site-side power (+ charging), as the runs record theirs."""
    hours = np.where(durations_hours > 0, durations_hours, 1.0)
    return np.asarray((optimum.bought_mwh - optimum.delivered_mwh) / hours, dtype=np.float64)


def figure_height_inches(policies: int, emissions: bool = False) -> float:
    """Top row, (emissions), price and state of charge, then one short power row per policy, plus titles."""
    return 9.6 + 1.05 * policies + (2.2 if emissions else 0.0)


def write_png(
    path: str | Path,
    runs: Sequence[BacktestRun],
    optimum: Optimum,
    config: BatteryConfig,
    *,
    title: str = "",
) -> Path:
    """Draw the chart of ``runs`` (one per policy, over the same ticks) against ``optimum`` into ``path``."""
    pyplot = _pyplot(path)
    figure = draw_figure(runs, optimum, config, title=title)
    target = Path(path)
    image = io.BytesIO()
    try:
        # A PNG whatever the name's ending (matplotlib went by it: '.txt' failed after the whole run, no
        # ending wrote PATH.png), written as the summary is: missing folders made, never half a file.
        figure.savefig(image, dpi=DPI, format="png")
    finally:
        pyplot.close(figure)
    return write_atomically(target, image.getvalue())


def draw_figure(
    runs: Sequence[BacktestRun], optimum: Optimum, config: BatteryConfig, *, title: str = ""
) -> Figure:
    """The chart as an open matplotlib figure (the caller closes it): what :func:`write_png` saves."""
    if not runs:
        raise InvalidConfig("runs", 0, "nothing to plot")
    ticks = len(runs[0].timestamps)
    if ticks == 0:
        raise InvalidInput("ticks", 0, "no ticks to plot")
    for run in runs:
        if run.timestamps != runs[0].timestamps:
            raise InvalidInput("runs", run.policy, "every run must cover the same ticks")
    if optimum.cash_flows.size != ticks:
        raise InvalidInput("optimum", int(optimum.cash_flows.size), f"must cover the runs' {ticks} ticks")
    pyplot = _pyplot("chart")
    with pyplot.rc_context(STYLE):
        figure: Figure = pyplot.figure(
            figsize=(WIDTH_INCHES, figure_height_inches(len(runs), shows_emissions(runs))),
            dpi=DPI,
            layout="constrained",
        )
        _draw(figure, runs, optimum, config, title)
    return figure


def _pyplot(path: str | Path) -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display), or why it cannot be had."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidConfig(
            "png", str(path), "plotting needs matplotlib: pip install 'battery-worker[plot]'"
        ) from None
    return plt


def _draw(
    figure: Figure, runs: Sequence[BacktestRun], optimum: Optimum, config: BatteryConfig, title: str
) -> None:
    first = runs[0]
    times = np.array([as_utc(at).replace(tzinfo=None) for at in first.timestamps], dtype="datetime64[s]")
    colors = [f"C{i % 10}" for i in range(len(runs))]
    summaries = [summarize(run, config, optimum) for run in runs]
    window = zoom_window(first.timestamps, optimum.cash_flows)
    months = [monthly_capture(s) for s in summaries]
    show_months = len(months[0]) > 1
    emissions = shows_emissions(runs)
    top = 2 if emissions else 1
    rows = top + 2 + len(runs)
    heights = [3.4, *([2.2] if emissions else []), 1.5, 1.9, *[1.0] * len(runs)]
    grid = figure.add_gridspec(rows, 2, height_ratios=heights, width_ratios=[3, 2])
    value_axis = figure.add_subplot(grid[0, 0] if show_months else grid[0, :])
    _cumulative(value_axis, times, runs, optimum, colors, window)
    if show_months:
        _months(figure.add_subplot(grid[0, 1]), runs, months, colors)
    if emissions:
        _emissions(figure.add_subplot(grid[1, :], sharex=value_axis), times, runs, optimum, colors)
    price_axis = figure.add_subplot(grid[top, :])
    week_axes = [
        price_axis,
        *(figure.add_subplot(grid[row, :], sharex=price_axis) for row in range(top + 1, rows)),
    ]
    _week(week_axes, times, runs, optimum, config, colors, window)

    span = (
        f"{len(times):,} {_resolution(typical_step_seconds(first.timestamps))} ticks, "
        f"{first.timestamps[0]:%Y-%m-%d} to {first.timestamps[-1]:%Y-%m-%d} (UTC)"
    )
    notes = [] if show_months else ["capture per month not shown: the run lies within one calendar month"]
    labels = [f"optimum: {money(optimum.value, keep_zeros=True)}"] + [_policy_label(s) for s in summaries]
    # The title heads the legend: a suptitle and an outside legend would be drawn over each other.
    legend = figure.legend(
        list(value_axis.lines),
        labels,
        loc="outside upper center",
        ncols=min(len(labels), 3),
        frameon=False,
        title="\n".join([title or "Backtest: policies against the perfect-foresight optimum", span, *notes]),
        title_fontproperties={"size": 14},
        alignment="center",
    )
    legend.get_title().set_multialignment("center")


def _policy_label(summary: BacktestSummary) -> str:
    """Value and share of the optimum, as the table gives them; no share when the optimum earns nothing."""
    share = "" if summary.capture_ratio is None else f" = {ratio_text(summary.capture_ratio)} of the optimum"
    return f"{summary.policy}: {money(summary.value, keep_zeros=True)}{share}"


def _cumulative(
    axis: Axes,
    times: Any,
    runs: Sequence[BacktestRun],
    optimum: Optimum,
    colors: list[str],
    window: ZoomWindow,
) -> None:
    """(a): the optimum dashed first, then each policy; its lines are the legend's handles, in that order."""
    from matplotlib.ticker import FuncFormatter

    if not window.whole_run:
        axis.axvspan(times[window.start], times[window.stop - 1], color="gold", alpha=0.3, lw=0)
    axis.plot(times, np.cumsum(optimum.cash_flows), color="black", lw=1.6, ls="--")
    for run, color in zip(runs, colors, strict=True):
        axis.plot(times, np.cumsum(run.cash_flows), color=color, lw=1.6)
    shaded = "" if window.whole_run else " (shaded: the zoomed week below)"
    axis.set_title(f"(a) cumulative cash value over the whole run{shaded}")
    axis.yaxis.set_major_formatter(FuncFormatter(money))
    axis.set_ylabel("cash value")
    _dates(axis)


def _emissions(
    axis: Axes, times: Any, runs: Sequence[BacktestRun], optimum: Optimum, colors: list[str]
) -> None:
    """Cumulative net emissions, the optimum (price only) dashed; totals and coverage in the title."""
    best = cumulative_net_tonnes(optimum_net_kg(optimum, runs[0].used_intensities))
    axis.plot(times, best, color="black", lw=1.6, ls="--", label=f"optimum {best[-1]:+,.0f} t")
    for run, color in zip(runs, colors, strict=True):
        line = cumulative_net_tonnes(run.net_kg)
        axis.plot(times, line, color=color, lw=1.6, label=f"{run.policy} {line[-1]:+,.0f} t")
    axis.axhline(0.0, color="black", lw=0.6)
    coverage = ratio_text(runs[0].emissions.coverage)
    axis.set_title(
        f"net emissions over the whole run, t CO₂eq (below 0: lower); intensity coverage {coverage}",
        pad=30,  # room for the legend's row under it
    )
    axis.set_ylabel("net t CO₂eq")
    # One row between the title and the plot: inside, it covered the curves of a week's daily cycles.
    axis.legend(
        loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(runs) + 1, frameon=False, fontsize=10
    )
    _dates(axis)


def _week(
    axes: list[Axes],
    times: Any,
    runs: Sequence[BacktestRun],
    optimum: Optimum,
    config: BatteryConfig,
    colors: list[str],
    window: ZoomWindow,
) -> None:
    """(c): price, state of charge of all, then one power row per policy; the optimum in grey behind."""
    price_axis, soc_axis, *power_axes = axes
    week = slice(window.start, window.stop)
    week_times, first = times[week], runs[0]
    price_axis.step(week_times, first.prices[week], where="pre", color="black", lw=1.0)
    if float(np.min(first.prices[week])) < 0:
        price_axis.axhline(0.0, color="grey", lw=0.8)
    scale = price_scale(first.prices[week])
    price_axis.set_ylim(scale.low, scale.high)
    if scale.clipped:
        price_axis.text(
            0.995,
            0.96,
            f"{scale.clipped:,} {'tick' if scale.clipped == 1 else 'ticks'} outside the axis, the furthest "
            f"at {money(scale.beyond)}",
            transform=price_axis.transAxes,
            ha="right",
            va="top",
            fontsize=10,
            bbox={"facecolor": "white", "edgecolor": "0.6", "pad": 2},
        )
    price_axis.set_ylabel("price\nper MWh")
    rule = "the whole run (shorter than a week)" if window.whole_run else WEEK_RULE
    begin, end = first.timestamps[window.start], first.timestamps[window.stop - 1]
    run_cash = float(optimum.cash_flows.sum())
    share = ""
    if run_cash > 0 and not window.whole_run:
        share = f", {ratio_text(window.optimum_cash / run_cash)} of its cash over the run"
    price_axis.set_title(
        f"(c) {begin:%a %d %b %Y} to {end:%a %d %b %Y}, {rule}: {money(window.optimum_cash)} in cash{share}"
    )
    percent = 100.0 / config.capacity_mwh
    soc_axis.fill_between(
        week_times, percent * optimum.state_of_charge_mwh[week], 0.0, color=OPTIMUM_GREY, lw=0
    )
    for run, color in zip(runs, colors, strict=True):
        soc_axis.plot(week_times, percent * run.state_of_charge_mwh[week], color=color, lw=1.4)
    soc_axis.set_ylim(0, 102)
    soc_axis.set_ylabel("state of\ncharge %")
    best_power = optimum_power_mw(optimum, first.durations_hours)[week]
    limit = 1.1 * max(config.max_charge_rate_mw, config.max_discharge_rate_mw)
    stamps, spans = first.timestamps[week], first.durations_hours[week]
    hourly = typical_step_seconds(stamps) < 3600.0  # sub-hourly ticks: each hour's mean, not a barcode
    where: Literal["pre", "post"] = "pre"
    power_times = week_times
    if hourly:  # each hour from its start, the last one's end added so that it is drawn too
        where = "post"
        starts, best_power = hourly_power(stamps, best_power, spans)
        edges = np.append(starts, starts[-1] + 3600.0).astype(np.int64)
        power_times, best_power = edges.astype("datetime64[s]"), np.append(best_power, best_power[-1])
    for axis, run, color in zip(power_axes, runs, colors, strict=True):
        power = run.power_mw[week]
        if hourly:
            means = hourly_power(stamps, power, spans)[1]
            power = np.append(means, means[-1])
        axis.fill_between(power_times, best_power, 0.0, step=where, color=OPTIMUM_GREY, lw=0)
        axis.step(power_times, power, where=where, color=color, lw=1.2)
        axis.axhline(0.0, color="black", lw=0.6)
        axis.set_ylim(-limit, limit)
        axis.set_ylabel(f"{run.policy}\nMW")
    mean = ", each hour's mean" if hourly else ""
    power_axes[0].set_title(f"power{mean}, + charging, − discharging (grey behind: the optimum)", fontsize=11)
    for axis in axes[:-1]:
        axis.grid(alpha=0.3)
        axis.tick_params(labelbottom=False)
    _dates(axes[-1], daily=bool(week_times[-1] - week_times[0] >= np.timedelta64(2, "D")))
    if week_times[-1] > week_times[0]:  # a single tick has no span to fit
        price_axis.set_xlim(week_times[0], week_times[-1])


def _dates(axis: Axes, *, daily: bool = False) -> None:
    """Date ticks: one per day, named (``Thu 24 Aug``), over a week; matplotlib's concise ones otherwise."""
    import matplotlib.dates

    mdates: Any = matplotlib.dates  # its locators and formatters carry no type hints
    if daily:
        axis.xaxis.set_major_locator(mdates.DayLocator())
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b"))
    else:
        locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
        axis.xaxis.set_major_locator(locator)
        axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axis.grid(alpha=0.3)


def _months(
    axis: Axes,
    runs: Sequence[BacktestRun],
    months: list[list[tuple[str, float | None]]],
    colors: list[str],
) -> None:
    """(b): grouped bars, one group per month; a bar past the limits is cut and labelled with its value."""
    from matplotlib.ticker import PercentFormatter

    low_cut, high_cut = -0.5, 1.5
    names = [month for month, _ratio in months[0]]
    ratios = np.array([[np.nan if r is None else r for _m, r in per] for per in months], dtype=np.float64)
    finite = ratios[np.isfinite(ratios)]
    low = max(low_cut, min(0.0, float(finite.min()) if finite.size else 0.0))
    high = min(high_cut, max(1.08, float(finite.max()) if finite.size else 1.0))
    width = 0.8 / len(runs)
    x = np.arange(len(names))
    for i, (run, color) in enumerate(zip(runs, colors, strict=True)):
        offsets = x - 0.4 + width * (i + 0.5)
        shown = np.clip(ratios[i], low, high)
        axis.bar(offsets, np.nan_to_num(shown), width=width, color=color, label=run.policy)
        for at, ratio in zip(offsets, ratios[i], strict=True):
            if np.isnan(ratio):
                axis.text(at, 0.0, "n/a", ha="center", va="bottom", fontsize=8, rotation=90)
            elif ratio > high or ratio < low:
                edge = high if ratio > high else low
                where = "top" if ratio > high else "bottom"
                axis.text(at, edge, f"{100 * ratio:.0f}%", ha="center", va=where, fontsize=8, rotation=90)
    axis.axhline(1.0, color="black", lw=1.0, ls="--")
    axis.axhline(0.0, color="black", lw=0.6)
    axis.set_ylim(low - 0.02, high + 0.02)
    axis.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    every = -(-len(names) // 12)  # past a year, label every second (third, ...) month
    axis.set_xticks(x[::every], [_month_label(name, i == 0) for i, name in enumerate(names)][::every])
    axis.set_title("(b) capture per month: policy ÷ optimum cash")
    axis.grid(axis="y", alpha=0.3)


def _month_label(month: str, first: bool) -> str:
    stamp = datetime.strptime(month, "%Y-%m")
    return f"{stamp:%b}\n{stamp:%Y}" if first or stamp.month == 1 else f"{stamp:%b}"
