"""The emissions table of docs/emissions.md: value, net emissions and cycles of ``mpc`` and the optimum at
several carbon prices, on ERCOT 2023 and CAISO 2023 (not a test).

Run: ``.venv/bin/python bench/carbon_table.py [--prices 0,25,50,100,200] [--processes 2]``. For each grid its
price file joined to its carbon file (shared data), the default battery (100 MWh, 20 MW, 90 %), and each
carbon price (per tonne CO₂eq): ``mpc`` with ``carbon_price`` set, and the perfect-foresight optimum solved on
price + carbon price × intensity. Values are money at the real prices (net of wear, end energy valued as the
backtest does); net emissions are the battery's (bought − avoided, tonnes; negative lowers the grid's).
One process per grid. Prints Markdown.
"""

from __future__ import annotations

import argparse
from multiprocessing import Pool
from pathlib import Path

from battery_worker.backtest.carbon import CarbonFigures, carbon_inputs, optimum_figures, run_figures
from battery_worker.backtest.engine import backtest, optimum_for
from battery_worker.battery_config import BatteryConfig
from battery_worker.policies import make_policy
from battery_worker.pricefiles import load_ticks

SHARED = Path("/work/shared/data")
GRIDS = {
    "ERCOT 2023": ("US-TEX-ERCO_electricity_prices_2023.csv", "US-TEX-ERCO_carbon_intensity_2023.csv"),
    "CAISO 2023": ("US-CAL-CISO_electricity_prices_2023.csv", "US-CAL-CISO_carbon_intensity_2023.csv"),
}


def cell(figures: CarbonFigures) -> str:
    e = figures.emissions
    return f"{figures.value / 1e6:.3f} M | {e.net_tonnes:+,.0f} | {figures.cycles:.0f}"


def grid_table(grid: str, carbon_prices: list[float]) -> str:
    prices, carbon = GRIDS[grid]
    ticks = load_ticks(SHARED / prices, carbon_file=SHARED / carbon)
    config = BatteryConfig()
    price_only = optimum_for(ticks, config)
    lines = [
        f"{grid}: {len(ticks)} ticks, mean intensity "
        f"{sum(t.carbon_intensity or 0.0 for t in ticks) / len(ticks):.0f} kg/MWh",
        "| carbon price (/t) | mpc value | mpc net (t) | mpc cycles | optimum value | optimum net (t) "
        "| optimum cycles | coverage |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for carbon_price in carbon_prices:
        policy = make_policy("mpc", {"carbon_price": carbon_price})
        run, summary = backtest(ticks, config, policy, optimum=price_only)
        mpc = run_figures(run, summary)
        best = carbon_inputs(ticks, config, carbon_price).solve(config)
        optimum = optimum_figures("optimum", best, ticks, config)
        lines.append(
            f"| {carbon_price:g} | {cell(mpc)} | {cell(optimum)} | {100 * mpc.emissions.coverage:.1f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prices", default="0,25,50,100,200", help="carbon prices per tonne")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    carbon_prices = [float(text) for text in args.prices.split(",")]
    with Pool(args.processes) as pool:
        tables = pool.starmap(grid_table, [(grid, carbon_prices) for grid in GRIDS])
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
