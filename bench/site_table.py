"""The site table of docs/site.md: profit of machines and battery on the MARA files (not a test).

Run: ``.venv/bin/python bench/site_table.py [FILE ...] [--hash-price P --token-price P]``. FILEs default to
the shared MARA 30-day and event-day files; the prices are for market files, which carry energy prices only.
For the default site (:class:`battery_worker.fleet.SiteModel`) and battery, the runs of
:func:`battery_worker.backtest.site.compare_site` (what ``battery-worker backtest --site`` prints): (a) every
machine always on, no battery; (b) every machine on, the battery run by ``mpc``; the machines planned tick
by tick without a battery; (c) the ``site`` policy; against the site optimum. Prints Markdown with each
profit's share of the optimum and the seconds each file took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from battery_worker.backtest.site import RUNS, compare_site
from battery_worker.battery_config import BatteryConfig
from battery_worker.fleet import SiteModel
from battery_worker.policies import make_policy
from battery_worker.pricefiles import load_ticks
from battery_worker.ticks import PriceTick

SHARED = Path("/work/shared/data")
DEFAULT_FILES = (
    SHARED / "mara_api_30day_2025-05-22_to_2025-06-21_5min.csv",
    SHARED / "mara_event_2025-06-21_5min.csv",
)


def row(path: Path, ticks: list[PriceTick]) -> str:
    site, config = SiteModel(), BatteryConfig()
    started = time.perf_counter()
    comparison = compare_site(
        ticks, config, site, mpc=make_policy("mpc"), site_policy=make_policy("site", site=site)
    )
    seconds = time.perf_counter() - started
    cells = " | ".join(
        f"{comparison.profits[key].profit:,.1f} ({comparison.share(key):.1%})" for key, _label in RUNS
    )
    return f"| {path.name} | {len(ticks)} | {comparison.optimum:,.1f} | {cells} | {seconds:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", type=Path, nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument("--hash-price", type=float, help="for market files, which have none (default 0)")
    parser.add_argument("--token-price", type=float, help="for market files, which have none (default 0)")
    args = parser.parse_args()
    print("| file | ticks | optimum | " + " | ".join(label for _key, label in RUNS) + " | seconds |")
    print("|---|---:|---:|" + "---:|" * len(RUNS) + "---:|")
    for path in args.files:
        print(
            row(path, load_ticks(path, hash_price=args.hash_price, token_price=args.token_price)), flush=True
        )


if __name__ == "__main__":
    main()
