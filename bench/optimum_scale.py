"""The optimum at market scale: time and peak memory on a year of 5-minute prices (not a test).

Run: ``.venv/bin/python bench/optimum_scale.py [--mara FILE] [--days 365] [--seed 16]``. Prints Markdown.

Cases, each in a fresh process so its peak memory (``ru_maxrss``) is its own:

* ``synthetic``: a seeded synthetic year of 5-minute prices (105,120 steps), a third of them negative (a solar
  dip at midday pushed below zero, an evening peak, persistent noise, rare spikes), solved in the process;
* ``synthetic-cli``: the same year written as a MARA CSV (the price API's format, newest first), read with
  ``load_ticks`` and solved as ``battery-worker backtest`` does: in a child process (its memory is the
  "child" column);
* ``mara``: a real MARA 5-minute file (``--mara``), the same way;

then the whole ``battery-worker backtest`` command on the synthetic year (reading, optimum, one policy run).

Battery: the defaults (100 MWh, 20 MW, 90 % round trip).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from battery_worker.backtest.engine import optimum_inputs
from battery_worker.backtest.optimum import Optimum, solve_optimum
from battery_worker.backtest.optimum_process import solve_in_child
from battery_worker.battery_config import BatteryConfig
from battery_worker.pricefiles import load_ticks

STEPS_PER_DAY = 288
START = datetime(2025, 1, 1, tzinfo=UTC)


def synthetic_prices(days: int, seed: int, negative_share: float = 1 / 3) -> npt.NDArray[np.float64]:
    """5-minute prices: daily shape, a wandering daily level, persistent noise, spikes; a share negative."""
    rng = np.random.default_rng(seed)
    n = days * STEPS_PER_DAY
    hour = (np.arange(n) % STEPS_PER_DAY) / 12.0
    solar = np.maximum(0.0, np.sin(np.pi * (hour - 6.0) / 12.0))
    shape = 45.0 + 30.0 * np.cos(2 * np.pi * (hour - 19.0) / 24.0) - 70.0 * solar
    level = np.repeat(rng.normal(0.0, 12.0, days).cumsum() * 0.3, STEPS_PER_DAY)
    noise = np.empty(n)
    shocks = rng.normal(0.0, 5.0, n)
    value = 0.0
    for i in range(n):
        value = 0.97 * value + shocks[i]
        noise[i] = value
    spikes = np.where(rng.random(n) < 0.002, rng.exponential(400.0, n), 0.0)
    prices: npt.NDArray[np.float64] = shape + level + noise + spikes
    shifted: npt.NDArray[np.float64] = prices - float(np.quantile(prices, negative_share))
    return shifted


def write_mara_csv(path: Path, prices: npt.NDArray[np.float64]) -> None:
    """The price API's CSV: energy, hash and token price, a zone-less UTC timestamp; newest row first."""
    lines = ["energy_price,hash_price,token_price,timestamp"]
    for i in range(prices.size - 1, -1, -1):
        at = (START + timedelta(minutes=5 * i)).strftime("%Y-%m-%dT%H:%M:%S")
        lines.append(f"{prices[i]:.4f},1.0,1.0,{at}")
    path.write_text("\n".join(lines) + "\n")


def describe(optimum: Optimum) -> dict[str, object]:
    return {
        "exact": optimum.exact,
        "value": optimum.value,
        "bound": optimum.bound,
        "gap_percent": 100 * optimum.relative_gap,
        "simultaneous": optimum.simultaneous_steps,
    }


def run_case(case: str, days: int, seed: int, mara: Path | None) -> dict[str, object]:
    config = BatteryConfig()
    if case == "synthetic":
        prices = synthetic_prices(days, seed)
        hours = np.full(prices.size, 5 / 60)
        days_of = (np.arange(prices.size) // STEPS_PER_DAY).astype(np.int64)
        start = time.perf_counter()
        optimum = solve_optimum(
            config, prices, hours, terminal_price=max(0.0, float(prices.mean())), days=days_of
        )
        seconds = time.perf_counter() - start
        steps, negative, read_seconds = prices.size, int((prices < 0).sum()), 0.0
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = mara if case == "mara" else Path(folder) / "year_5min.csv"
            assert path is not None
            if case == "synthetic-cli":
                write_mara_csv(path, synthetic_prices(days, seed))
            started = time.perf_counter()
            ticks = load_ticks(path)
            inputs = optimum_inputs(ticks, config)
            read_seconds = time.perf_counter() - started
            start = time.perf_counter()
            optimum = solve_in_child(config, inputs)
            seconds = time.perf_counter() - start
            steps, negative = inputs.prices.size, int((inputs.prices < 0).sum())
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "case": case,
        "steps": steps,
        "negative": negative,
        "seconds": seconds,
        "read_seconds": read_seconds,
        "rss_mb": own,
        "child_rss_mb": child,
        **describe(optimum),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mara", type=Path, help="a MARA 5-minute CSV to solve as well")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.days, args.seed, args.mara)))
        return
    cases = ["synthetic", "synthetic-cli"] + (["mara"] if args.mara else [])
    print("| case | steps | negative | read s | solve s | optimum | gap | peak RSS MB (process / child) |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for case in cases:
        command = [
            sys.executable,
            __file__,
            "--case",
            case,
            "--days",
            str(args.days),
            "--seed",
            str(args.seed),
        ]
        if args.mara:
            command += ["--mara", str(args.mara)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        kind = "exact" if row["exact"] else "bound + schedule"
        print(
            f"| {case} | {row['steps']:,} | {row['negative']:,} | {row['read_seconds']:.1f} "
            f"| {row['seconds']:.1f} | {kind}: "
            f"{row['value'] / 1e6:.3f} M (bound {row['bound'] / 1e6:.3f} M) | {row['gap_percent']:.2f}% "
            f"| {row['rss_mb']:.0f} / {row['child_rss_mb']:.0f} |",
            flush=True,
        )
    whole_command(args.days, args.seed)


def whole_command(days: int, seed: int) -> None:
    """``battery-worker backtest`` on the synthetic year (threshold: the quickest policy)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "year_5min.csv"
        write_mara_csv(path, synthetic_prices(days, seed))
        command = [sys.executable, "-m", "battery_worker.cli", "backtest", str(path)]
        start = time.perf_counter()
        subprocess.run([*command, "--policy", "threshold", "--no-png"], check=True, capture_output=True)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\nthe whole `backtest FILE --policy threshold --no-png`: {seconds:.1f} s, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
