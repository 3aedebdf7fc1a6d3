"""The table of docs/dispatch.md: every policy on every shared price file, against the optimum.

Run: ``.venv/bin/python bench/dispatch_table.py [DATA_DIR] [--png docs/dispatch_ercot_2023.png] [--jobs 2]
[--files ERCOT,PJM] [--hours N] [--param mpc.key=value]``. Runs the nine shared files (seven hourly market
years and the two 5-minute MARA files), files in ``--jobs`` processes, and prints Markdown: per file the
optimum and each policy's capture and value, then the mean capture of ``adaptive`` and ``mpc`` and whether
the robustness targets hold (``mpc`` >= 85 % on every file, >= 90 % on average, never below ``adaptive``).
``--files`` keeps the files whose label contains one of the given words; ``--hours`` keeps each file's first
N hours (for quick exploration; the table in the docs is of whole files). The PNG shows the run on ERCOT 2023.
The MARA event file is run after the 30-day history that precedes it (``backtest --warmup``): the policies
learn from the history's ticks before the event's first tick; only the event is traded and counted.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from battery_worker.backtest.engine import BacktestRun, backtest, optimum_for
from battery_worker.backtest.report import write_png
from battery_worker.battery import BatteryConfig
from battery_worker.cli.backtest import parse_params
from battery_worker.policies import BATTERY_POLICIES as POLICIES
from battery_worker.policies import make_policy
from battery_worker.pricefiles import load_ticks

MARA_30_DAYS = "mara_api_30day_2025-05-22_to_2025-06-21_5min.csv"
FILES = (
    ("ERCOT 2022", "US-TEX-ERCO_electricity_prices_2022.csv", None),
    ("ERCOT 2023", "US-TEX-ERCO_electricity_prices_2023.csv", None),
    ("CAISO 2023", "US-CAL-CISO_electricity_prices_2023.csv", None),
    ("PJM 2023", "US-MIDA-PJM_electricity_prices_2023.csv", None),
    ("NYISO 2023", "US-NY-NYIS_electricity_prices_2023.csv", None),
    ("DE-LU 2023", "DE-LU_electricity_prices_2023.csv", None),
    ("AU-NSW 2023", "AU-NSW_electricity_prices_2023.csv", None),
    ("MARA 30 days (5 min)", MARA_30_DAYS, None),
    # The event was served by the same API right after those 30 days: a worker running then had seen them.
    ("MARA event (5 min, 9 h, after the 30 days)", "mara_event_2025-06-21_5min.csv", MARA_30_DAYS),
)
PNG_FILE = "US-TEX-ERCO_electricity_prices_2023.csv"
EVERY_FILE_TARGET = 0.85
MEAN_TARGET = 0.90


@dataclass(frozen=True, slots=True)
class FileResult:
    label: str
    ticks: int
    optimum: float
    optimum_exact: bool
    seconds: float
    captures: dict[str, float]
    values: dict[str, float]


def run_file(
    label: str,
    path: Path,
    warmup_path: Path | None,
    hours: int,
    params: dict[str, dict[str, Any]],
    png: Path | None,
) -> FileResult:
    start = time.perf_counter()
    ticks = load_ticks(path)
    warmup = [] if warmup_path is None else load_ticks(warmup_path)
    if hours:
        ticks = [t for t in ticks if t.timestamp < ticks[0].timestamp + timedelta(hours=hours)]
    config = BatteryConfig()
    optimum = optimum_for(ticks, config)
    captures: dict[str, float] = {}
    values: dict[str, float] = {}
    runs: list[BacktestRun] = []
    for name in POLICIES:
        policy = make_policy(name, params.get(name))
        run, summary = backtest(ticks, config, policy, optimum=optimum, warmup=warmup)
        runs.append(run)
        captures[name] = summary.capture_ratio or 0.0
        values[name] = summary.value
    if png is not None:
        write_png(png, runs, optimum, config, title=f"{label}: policies against the optimum")
    return FileResult(
        label, len(ticks), optimum.bound, optimum.exact, time.perf_counter() - start, captures, values
    )


def money(value: float) -> str:
    """Millions for the market files (USD), plain figures for the MARA files (API units, small)."""
    return f"{value / 1e6:.3f} M" if abs(value) >= 1e4 else f"{value:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", type=Path, nargs="?", default=Path("/work/shared/data"))
    parser.add_argument(
        "--png", type=Path, help="draw the ERCOT 2023 run here (docs/dispatch_ercot_2023.png); default: none"
    )
    parser.add_argument("--jobs", type=int, default=2, help="files run in this many processes")
    parser.add_argument("--files", default="", help="comma-separated words; keep files whose label has one")
    parser.add_argument("--hours", type=int, default=0, help="only each file's first N hours (0: all)")
    parser.add_argument(
        "--param", action="append", default=[], help="policy.key=value, e.g. mpc.horizon_hours=36"
    )
    args = parser.parse_args()
    words = [w.strip().lower() for w in args.files.split(",") if w.strip()]
    chosen = [file for file in FILES if not words or any(w in file[0].lower() for w in words)]
    params = parse_params(args.param)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(
                run_file,
                label,
                args.data_dir / name,
                None if warmup is None else args.data_dir / warmup,
                args.hours,
                params,
                args.png if name == PNG_FILE and not args.hours else None,
            )
            for label, name, warmup in chosen
        ]
        results = [future.result() for future in futures]
    print("| file | ticks | optimum | " + " | ".join(POLICIES) + " |")
    print("|---|---:|---:|" + "---:|" * len(POLICIES))
    for r in results:
        bound = "" if r.optimum_exact else " (LP bound)"
        cells = [f"{100 * r.captures[n]:.1f} % ({money(r.values[n])})" for n in POLICIES]
        print(f"| {r.label} | {r.ticks:,} | {money(r.optimum)}{bound} | " + " | ".join(cells) + " |")
    mean = {n: sum(r.captures[n] for r in results) / len(results) for n in POLICIES}
    print("| **mean capture** | | | " + " | ".join(f"{100 * mean[n]:.1f} %" for n in POLICIES) + " |")
    seconds = sum(r.seconds for r in results)
    print(f"\n{len(results)} files, {seconds:.0f} s of runs in {args.jobs} processes.")
    if "mpc" in POLICIES and "adaptive" in POLICIES:
        worst = min(results, key=lambda r: r.captures["mpc"])
        below = [r.label for r in results if r.captures["mpc"] < r.captures["adaptive"]]
        holds = {
            f"mpc >= {EVERY_FILE_TARGET:.0%} on every file (worst: {worst.label}, "
            f"{100 * worst.captures['mpc']:.1f} %)": worst.captures["mpc"] >= EVERY_FILE_TARGET,
            f"mpc >= {MEAN_TARGET:.0%} on average ({100 * mean['mpc']:.1f} %)": mean["mpc"] >= MEAN_TARGET,
            "mpc never below adaptive" + (f" (below on: {', '.join(below)})" if below else ""): not below,
        }
        for text, held in holds.items():
            print(f"- {'holds' if held else 'FAILS'}: {text}")


if __name__ == "__main__":
    main()
