"""Emissions in the backtest: each run's and the optimum's net effect, and the optimum with carbon priced in.
Pure.

The optimum with a carbon price is the ordinary optimum solved on effective prices
(:func:`battery_worker.emissions.effective_prices`, missing intensity carried as the emissions module
carries it): its schedule trades money for emissions. It is then valued in money at the real prices, with
the run's own end rule, so its value sits beside the policies' and below the price-only optimum's. With a
carbon price of 0 the inputs are the price-only optimum's, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from battery_worker.backtest.engine import (
    BacktestRun,
    BacktestSummary,
    OptimumInputs,
    applicable_ticks,
    applied_intensities,
    optimum_inputs,
)
from battery_worker.backtest.optimum import Optimum, terminal_value
from battery_worker.backtest.report import amount
from battery_worker.battery_config import BatteryConfig
from battery_worker.emissions import (
    DEFAULT_CARRY_HOURS,
    Emissions,
    effective_prices,
    emissions,
)
from battery_worker.policies import policy_class
from battery_worker.ticks import PriceTick


@dataclass(frozen=True, slots=True)
class CarbonFigures:
    """One row of the emissions report: money value (net of wear, end energy valued), cycles, emissions."""

    name: str
    value: float
    cycles: float
    emissions: Emissions
    uncounted_bought_mwh: float = 0.0
    """Energy bought in steps whose intensity was unknown (neither given nor carried): not in the totals."""
    uncounted_delivered_mwh: float = 0.0
    """Energy delivered in such steps: its avoided emissions are not in the totals either."""

    @property
    def uncounted(self) -> bool:
        return self.uncounted_bought_mwh > 0 or self.uncounted_delivered_mwh > 0

    def to_json(self) -> dict[str, Any]:
        """The row as ``--summary`` writes it under ``carbon``: every figure the table prints, in kg, named
        as a policy's summary names its run's (``emissions_net_kg``, ...)."""
        e = self.emissions
        some = e.coverage > 0  # none known is None, never 0, as in a policy's summary
        return {
            "run": self.name,
            "value": self.value,
            "cycles": self.cycles,
            "emissions_net_kg": e.net_kg if some else None,
            "emissions_bought_kg": e.bought_kg if some else None,
            "emissions_avoided_kg": e.avoided_kg if some else None,
            "emissions_coverage": e.coverage,
            "emissions_uncounted_bought_mwh": self.uncounted_bought_mwh,
            "emissions_uncounted_delivered_mwh": self.uncounted_delivered_mwh,
        }


def _uncounted(
    used: Sequence[float | None], bought: Sequence[float], delivered: Sequence[float]
) -> tuple[float, float]:
    """Energy bought and delivered in the steps without an intensity (``used`` None)."""
    unknown = [n for n, intensity in enumerate(used) if intensity is None]
    return float(sum(bought[n] for n in unknown)), float(sum(delivered[n] for n in unknown))


def carbon_inputs(
    ticks: Sequence[PriceTick],
    config: BatteryConfig,
    carbon_price: float,
    carry_hours: float = DEFAULT_CARRY_HOURS,
) -> OptimumInputs:
    """The optimum's inputs with emissions priced in; the end energy keeps its price-only value."""
    base = optimum_inputs(ticks, config)
    if carbon_price == 0.0:
        return base
    used = applied_intensities(applicable_ticks(ticks), carry_hours)
    planned = effective_prices([float(price) for price in base.prices], used, carbon_price)
    return replace(base, prices=np.asarray(planned, dtype=np.float64))


def run_figures(run: BacktestRun, summary: BacktestSummary) -> CarbonFigures:
    """A policy's row: the emissions :func:`dispatch` counted during the run, the worker's own figures."""
    bought, delivered = _uncounted(run.used_intensities, run.bought_mwh.tolist(), run.delivered_mwh.tolist())
    return CarbonFigures(summary.policy, summary.value, summary.cycles, run.emissions, bought, delivered)


def optimum_figures(
    name: str,
    optimum: Optimum,
    ticks: Sequence[PriceTick],
    config: BatteryConfig,
    carry_hours: float = DEFAULT_CARRY_HOURS,
) -> CarbonFigures:
    """An optimum's schedule valued at the real prices (whatever prices it was solved on)."""
    real = optimum_inputs(ticks, config)
    kept = applicable_ticks(ticks)
    bought, delivered = optimum.bought_mwh, optimum.delivered_mwh
    cash = float(np.dot(real.prices, delivered - bought))
    wear = float(delivered.sum()) * config.cycle_cost_per_mwh
    end = 0.0
    if optimum.state_of_charge_mwh.size:
        moved = float(optimum.state_of_charge_mwh[-1]) - config.initial_energy_mwh
        end = terminal_value(config, moved, real.terminal_price)
    cycles = float(delivered.sum()) / config.one_way_efficiency / config.capacity_mwh
    found = emissions(
        [tick.timestamp for tick in kept],
        [tick.carbon_intensity for tick in kept],
        bought.tolist(),
        delivered.tolist(),
        carry_hours,
    )
    uncounted = _uncounted(applied_intensities(kept, carry_hours), bought.tolist(), delivered.tolist())
    return CarbonFigures(name, cash - wear + end, cycles, found, *uncounted)


def carbon_table(rows: Sequence[CarbonFigures]) -> str:
    """Markdown: value, net emissions effect in tonnes (+ raises, − lowers), coverage and cycles per row."""
    lines = [
        "| run | value | net emissions (t CO₂eq, below 0: lower) | bought (t) | avoided (t) | coverage "
        "| cycles |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    scale = max((abs(row.value) for row in rows), default=0.0)
    for row in rows:
        e = row.emissions
        tonnes = (
            f"{e.net_tonnes:+,.1f} | {e.bought_kg / 1000:,.1f} | {e.avoided_kg / 1000:,.1f}"
            if e.coverage > 0
            else "- | - | -"  # nothing known: unknown, not 0
        )
        value = amount(row.value, scale)
        lines.append(f"| {row.name} | {value} | {tonnes} | {100 * e.coverage:.1f}% | {row.cycles:.1f} |")
    lines += [_uncounted_line(row) for row in rows if row.uncounted and row.emissions.coverage > 0]
    return "\n".join(lines)


def _uncounted_line(row: CarbonFigures) -> str:
    """A net of two large totals: 3 % of steps without an intensity, all of them charging, made a run's net
    benefit 2.5 times what the whole file gave (an analyst's review), and the coverage looked harmless."""
    return (
        f"{row.name}: {row.uncounted_bought_mwh:,.0f} MWh bought and {row.uncounted_delivered_mwh:,.0f} MWh "
        "delivered in steps without a known intensity are in no total: its net leaves them out"
    )


def carbon_param(name: str, carbon_price: float) -> dict[str, float]:
    """``--carbon-price`` for the policies that take one; ``--policy-param`` given after it wins."""
    fields = getattr(policy_class(name), "__dataclass_fields__", {})
    return {"carbon_price": carbon_price} if carbon_price and "carbon_price" in fields else {}


def carbon_rows(
    ticks: Sequence[PriceTick],
    config: BatteryConfig,
    runs: Sequence[BacktestRun],
    summaries: Sequence[BacktestSummary],
    optimum: Optimum,
    carbon_price: float,
    carry_hours: float = DEFAULT_CARRY_HOURS,
    solve: Callable[[BatteryConfig, OptimumInputs], Optimum] | None = None,
) -> list[CarbonFigures]:
    """The emissions report's rows: each policy, the price-only optimum and (carbon price > 0) the carbon
    one (:func:`carbon_table` prints them, ``--summary`` writes them).

    ``solve`` solves the carbon-priced optimum (``inputs.solve(config)`` by default); the command line's
    solves it in a child process, so that a stop signal ends it at once (``optimum_process``).
    """
    rows = [run_figures(run, summary) for run, summary in zip(runs, summaries, strict=True)]
    rows.append(optimum_figures("optimum (price only)", optimum, ticks, config, carry_hours))
    if carbon_price:
        inputs = carbon_inputs(ticks, config, carbon_price, carry_hours)
        carbon_optimum = inputs.solve(config) if solve is None else solve(config, inputs)
        name = f"optimum (carbon {carbon_price:g}/t)"
        rows.append(optimum_figures(name, carbon_optimum, ticks, config, carry_hours))
    return rows
