"""Show backtests: text tables for the terminal and docs, and one PNG of a run against the optimum.

matplotlib is the optional ``plot`` extra, so it is imported inside :func:`write_png` only: the worker and the
tables never need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from battery_worker.backtest.engine import BacktestRun, BacktestSummary
from battery_worker.backtest.optimum import Optimum
from battery_worker.battery import BatteryConfig
from battery_worker.errors import InvalidConfig


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}%"


def summary_table(summaries: Sequence[BacktestSummary]) -> str:
    """One Markdown row per policy: value, share of the optimum, cycles, energy lost."""
    lines = [
        "| policy | value | optimum | captured | cycles | energy lost (MWh) | final charge |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.policy} | {s.value:,.0f} | {s.optimum_value:,.0f} | {_ratio(s.capture_ratio)} "
            f"| {s.cycles:.1f} | {s.energy_lost_mwh:,.0f} | {s.final_charge_percent:.0f}% |"
        )
    return "\n".join(lines)


def month_table(summary: BacktestSummary) -> str:
    """Per-month cash value against the optimum's cash in the same month (the terminal rule is yearly)."""
    lines = [
        f"{summary.policy}: per month",
        "| month | ticks | value | optimum | captured | cycles | energy lost (MWh) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in summary.months:
        ratio = m.value / m.optimum_value if m.optimum_value > 0 else None
        lines.append(
            f"| {m.month} | {m.ticks} | {m.value:,.0f} | {m.optimum_value:,.0f} | {_ratio(ratio)} "
            f"| {m.cycles:.1f} | {m.energy_lost_mwh:,.0f} |"
        )
    return "\n".join(lines)


def write_png(
    path: str | Path,
    runs: Sequence[BacktestRun],
    optimum: Optimum,
    config: BatteryConfig,
    *,
    title: str = "",
) -> Path:
    """Price, state of charge, power and cumulative value of each run against the optimum, in one PNG."""
    if not runs:
        raise InvalidConfig("runs", 0, "nothing to plot")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidConfig(
            "png", str(path), "plotting needs matplotlib: pip install 'battery-worker[plot]'"
        ) from None
    first = runs[0]
    times = list(first.timestamps)
    figure, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True, constrained_layout=True)
    price_axis, soc_axis, power_axis, value_axis = axes
    price_axis.plot(times, first.prices, color="black", linewidth=0.6)
    price_axis.set_ylabel("price per MWh")
    price_axis.set_title(title or f"Backtest against the perfect-foresight optimum ({len(times)} ticks)")
    soc_axis.plot(
        times,
        100.0 * optimum.state_of_charge_mwh / config.capacity_mwh,
        color="grey",
        linewidth=0.6,
        alpha=0.6,
        label="optimum",
    )
    for run in runs:
        soc_axis.plot(
            times, 100.0 * run.state_of_charge_mwh / config.capacity_mwh, linewidth=0.7, label=run.policy
        )
        power_axis.plot(times, run.power_mw, linewidth=0.5, label=run.policy)
        value_axis.plot(times, np.cumsum(run.cash_flows), linewidth=1.0, label=run.policy)
    value_axis.plot(times, np.cumsum(optimum.cash_flows), color="black", linestyle="--", label="optimum")
    soc_axis.set_ylabel("state of charge (%)")
    soc_axis.set_ylim(-2, 102)
    power_axis.set_ylabel("power (MW, + charge)")
    value_axis.set_ylabel("cumulative cash value")
    for axis in (soc_axis, power_axis, value_axis):
        axis.legend(loc="upper left", fontsize=8)
        axis.grid(alpha=0.3)
    price_axis.grid(alpha=0.3)
    target = Path(path)
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target
