"""The wear table of docs/dispatch.md: value and cycles on one market at several wear costs (not a test).

Run: ``.venv/bin/python bench/wear_table.py [FILE] [--costs 0,10,20,40]``. FILE defaults to ERCOT 2023 in the
shared data. For each wear cost (USD per MWh delivered), the optimum and every policy with today's code on
the default battery (100 MWh, 20 MW, 90 %), then the battery-type presets as they are, their cycle cap
counted per day in each of ``--cycle-day-timezones`` (UTC by default). Values are net of wear; cycles are
full-equivalent (energy drawn from the cells over the capacity) over the year. Prints Markdown.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from battery_worker.backtest.engine import backtest, optimum_for
from battery_worker.battery_config import BatteryConfig
from battery_worker.chemistries import CHEMISTRIES, chemistry_fields
from battery_worker.policies import BATTERY_POLICIES, make_policy
from battery_worker.pricefiles import load_ticks
from battery_worker.ticks import PriceTick

DEFAULT_FILE = Path("/work/shared/data/US-TEX-ERCO_electricity_prices_2023.csv")


def row(label: str, ticks: list[PriceTick], config: BatteryConfig) -> str:
    optimum = optimum_for(ticks, config)
    drawn = float(optimum.delivered_mwh.sum()) / math.sqrt(config.efficiency)
    kind = "" if optimum.exact else f" (bound {optimum.bound / 1e6:.3f} M)"
    cells = [
        f"{optimum.value / 1e6:.3f} M{kind}, wear {optimum.wear_cost / 1e6:.3f} M, "
        f"{drawn / config.capacity_mwh:.0f} cycles"
    ]
    for name in BATTERY_POLICIES:
        _run, summary = backtest(ticks, config, make_policy(name), optimum=optimum)
        ratio = 100 * (summary.capture_ratio or 0.0)
        cells.append(f"{summary.value / 1e6:.2f} M ({ratio:.1f}%), {summary.cycles:.0f} cycles")
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path, nargs="?", default=DEFAULT_FILE)
    parser.add_argument("--costs", default="0,10,20,40", help="wear costs per MWh delivered")
    parser.add_argument(
        "--cycle-day-timezones",
        default="UTC",
        help="the presets' rows again for each of these cycle days (e.g. UTC,America/Chicago)",
    )
    args = parser.parse_args()
    ticks = load_ticks(args.file)
    print(f"{args.file.name}: {len(ticks)} ticks")
    print("| battery | optimum: value, wear, cycles | " + " | ".join(BATTERY_POLICIES) + " |")
    print("|---|---|" + "---:|" * len(BATTERY_POLICIES))
    for cost in (float(text) for text in args.costs.split(",")):
        print(row(f"wear {cost:g}/MWh", ticks, BatteryConfig(cycle_cost_per_mwh=cost)), flush=True)
    for zone in args.cycle_day_timezones.split(","):
        for name, chemistry in CHEMISTRIES.items():
            label = (
                f"{name} preset ({chemistry.efficiency:.0%}, {chemistry.min_charge_percent:g}–"
                f"{chemistry.max_charge_percent:g} %, {chemistry.cycle_cost_per_mwh:g}/MWh, "
                f"≤ {chemistry.max_cycles_per_day:g}/day{'' if zone == 'UTC' else f' in {zone}'})"
            )
            config = BatteryConfig(**chemistry_fields(name), cycle_day_timezone=zone)
            print(row(label, ticks, config), flush=True)


if __name__ == "__main__":
    main()
