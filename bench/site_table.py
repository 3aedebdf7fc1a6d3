"""The site table of docs/site.md: profit of machines and battery on the MARA files (not a test).

Run: ``.venv/bin/python bench/site_table.py [FILE ...] [--hash-price P --token-price P]``. FILEs default to
the shared MARA 30-day and event-day files; the prices are for market files, which carry energy prices only.
For the default site (:class:`battery_worker.fleet.SiteModel`) and battery, the profit (revenues − energy
cost, the battery's end valued as the backtest does) of (a) every machine always on, no battery; (b) every
machine on, the battery run by ``mpc``; the machines planned tick by tick without a battery (what the
battery adds at a planned site); (c) the ``site`` policy; and the site optimum (perfect foresight,
machines continuous). Prints Markdown with each profit's share of the optimum and the seconds each took.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from battery_worker.backtest.engine import run_policy
from battery_worker.battery_config import BatteryConfig
from battery_worker.fleet import SiteModel
from battery_worker.fleet.accounting import no_battery_profit, run_profit
from battery_worker.fleet.optimum import site_optimum
from battery_worker.policies import make_policy
from battery_worker.policies.site import SitePolicy
from battery_worker.pricefiles import load_ticks
from battery_worker.ticks import PriceTick

SHARED = Path("/work/shared/data")
DEFAULT_FILES = (
    SHARED / "mara_api_30day_2025-05-22_to_2025-06-21_5min.csv",
    SHARED / "mara_event_2025-06-21_5min.csv",
)


def timed(compute: Callable[[], float]) -> tuple[float, float]:
    """The profit ``compute`` returns and the seconds it took."""
    start = time.perf_counter()
    return compute(), time.perf_counter() - start


def cell(profit: float, optimum: float, seconds: float) -> str:
    return f"{profit:,.1f} ({profit / optimum:.1%}, {seconds:.1f} s)"


def row(path: Path, ticks: list[PriceTick]) -> str:
    site, config = SiteModel(), BatteryConfig()
    optimum, seconds = timed(lambda: site_optimum(site, config, ticks).profit)
    mpc = make_policy("mpc")
    profits = [
        timed(lambda: no_battery_profit(site, config, ticks).profit),
        timed(lambda: run_profit(site, config, run_policy(ticks, config, mpc), curtail=False).profit),
        timed(lambda: no_battery_profit(site, config, ticks, curtail=True).profit),
        timed(lambda: run_profit(site, config, run_policy(ticks, config, SitePolicy(site=site))).profit),
    ]
    cells = " | ".join(cell(profit, optimum, took) for profit, took in profits)
    return f"| {path.name} | {len(ticks)} | {optimum:,.1f} ({seconds:.1f} s) | {cells} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", type=Path, nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument("--hash-price", type=float, default=0.0, help="for market files (default 0)")
    parser.add_argument("--token-price", type=float, default=0.0, help="for market files (default 0)")
    args = parser.parse_args()
    print(
        "| file | ticks | optimum | (a) all on, no battery | (b) all on + mpc | planned machines, no battery "
        "| (c) site |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in args.files:
        print(
            row(path, load_ticks(path, hash_price=args.hash_price, token_price=args.token_price)), flush=True
        )


if __name__ == "__main__":
    main()
