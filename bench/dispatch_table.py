"""The table of docs/dispatch.md: every policy on every market file, against the perfect-foresight optimum.

Run: ``.venv/bin/python bench/dispatch_table.py [DATA_DIR] [--png docs/dispatch_ercot_2023.png]``.
ERCOT 2022 and CAISO 2023 are the tuning set; ERCOT 2023 is the test set (never tuned on). The PNG shows the
run on ERCOT 2023. Prints Markdown.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from battery_worker.backtest.engine import BacktestRun, applicable_ticks, backtest, optimum_for
from battery_worker.backtest.optimum import solve_optimum, step_durations
from battery_worker.backtest.report import write_png
from battery_worker.battery import BatteryConfig
from battery_worker.policies import BATTERY_POLICIES as POLICIES
from battery_worker.policies import make_policy
from battery_worker.pricefiles import load_ticks

FILES = (
    ("ERCOT 2022 (tuning)", "US-TEX-ERCO_electricity_prices_2022.csv"),
    ("CAISO 2023 (tuning)", "US-CAL-CISO_electricity_prices_2023.csv"),
    ("ERCOT 2023 (test)", "US-TEX-ERCO_electricity_prices_2023.csv"),
)
PNG_FILE = "US-TEX-ERCO_electricity_prices_2023.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", type=Path, nargs="?", default=Path("/work/shared/data"))
    parser.add_argument("--png", type=Path, default=Path("docs/dispatch_ercot_2023.png"))
    args = parser.parse_args()
    config = BatteryConfig()
    print("| file | optimum, end at start | optimum, backtest rule | " + " | ".join(POLICIES) + " |")
    print("|---|---:|---:|" + "---:|" * len(POLICIES))
    for label, name in FILES:
        ticks = load_ticks(args.data_dir / name)
        kept = applicable_ticks(ticks)
        start = time.perf_counter()
        fixed_end = solve_optimum(
            config, [t.energy_price for t in kept], step_durations(config, [t.timestamp for t in kept])
        )
        solve_seconds = time.perf_counter() - start
        optimum = optimum_for(ticks, config)
        cells: list[str] = []
        runs: list[BacktestRun] = []
        for policy_name in POLICIES:
            run, summary = backtest(ticks, config, make_policy(policy_name), optimum=optimum)
            runs.append(run)
            ratio = summary.capture_ratio or 0.0
            cells.append(f"{100 * ratio:.1f}% ({summary.value / 1e6:.2f} M)")
        print(
            f"| {label} | {fixed_end.value / 1e6:.3f} M ({solve_seconds:.1f} s) "
            f"| {optimum.value / 1e6:.3f} M | " + " | ".join(cells) + " |",
            flush=True,
        )
        if name == PNG_FILE:
            write_png(args.png, runs, optimum, config, title=f"{label}: policies against the optimum")


if __name__ == "__main__":
    main()
