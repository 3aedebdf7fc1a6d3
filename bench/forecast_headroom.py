"""How much better ``mpc``'s price forecast would have to be for a capture target (not a test).

Run: ``.venv/bin/python bench/forecast_headroom.py FILE [--shrink 1,0.9,0.75,0.5,0] [--processes 2]``.
Each run is ``mpc`` with its defaults over the price file, except that every hourly forecast is moved toward
the prices that really came: ``actual + shrink × (forecast − actual)``. Shrink 1 is today's policy, 0 a
perfect forecast of the next hours (the current tick is known either way). Only the size of the forecast's
error changes, not its pattern, so the curve says how much of the gap to the optimum the forecast explains
and how much more accurate it would have to be for a target (docs/dispatch.md, issue 16).

The hourly forecast is replaced in the benchmark process only (``policies.mpc.departed``, the daily profile
plus the departure, looked up at each call), with the actual prices of the file; the policy knows nothing of
them.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from multiprocessing import Pool
from pathlib import Path

import numpy as np

import battery_worker.policies.mpc as mpc_module
from battery_worker.backtest.engine import backtest, optimum_for
from battery_worker.battery import BatteryState
from battery_worker.battery_config import BatteryConfig
from battery_worker.policies import make_policy
from battery_worker.policies.base import Decision, PolicyMemory
from battery_worker.policies.forecast import FloatArray, departed
from battery_worker.policies.intra_hour import IntraHour
from battery_worker.policies.mpc import MpcPolicy
from battery_worker.pricefiles import load_ticks
from battery_worker.ticks import PriceTick

FORECAST = departed  # the function mpc calls by its module-level name ``departed``
DECIDE = MpcPolicy.decide
"""The originals, taken at import: a pool process that runs several factors wraps these, not its last wrap."""


def capture_at(path: Path, shrink: float) -> tuple[float, float]:
    """``mpc``'s capture over ``path`` with its forecast error scaled by ``shrink``."""
    ticks = load_ticks(path)
    prices = np.asarray([t.energy_price for t in ticks])
    position = {t.timestamp: i for i, t in enumerate(ticks)}
    now: dict[str, int] = {"index": 0}

    def shrunk(profile: FloatArray, departure: float, level_decay: float) -> FloatArray:
        guess: FloatArray = FORECAST(profile, departure, level_decay)
        ahead = prices[now["index"] + 1 : now["index"] + 1 + guess.size]
        actual = np.concatenate([ahead, np.full(guess.size - ahead.size, prices[-1])])
        moved: FloatArray = actual + shrink * (guess - actual)
        return moved

    # mpc looks ``departed`` up in its own namespace at each call: replace it there (mpc does not export
    # the name, so through the module's dict rather than as an attribute).
    vars(mpc_module)["departed"] = shrunk

    def decide_at(
        self: MpcPolicy,
        tick: PriceTick,
        battery: BatteryState,
        config: BatteryConfig,
        memory: PolicyMemory | None,
    ) -> tuple[Decision, IntraHour]:
        now["index"] = position[tick.timestamp]
        return DECIDE(self, tick, battery, config, memory)

    # Patching a method on the class is the point here (mypy flags any method assignment).
    MpcPolicy.decide = decide_at  # type: ignore[method-assign]
    config = BatteryConfig()
    _run, summary = backtest(ticks, config, make_policy("mpc"), optimum=optimum_for(ticks, config))
    return shrink, summary.capture_ratio or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--shrink", default="1,0.9,0.75,0.5,0", help="comma-separated factors")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    factors = [float(x) for x in args.shrink.split(",")]
    started = datetime.now()
    with Pool(max(1, args.processes)) as pool:
        results = pool.starmap(capture_at, [(args.file, f) for f in factors])
    print(f"{args.file.name}: mpc's capture with its forecast error scaled")
    print("| forecast error × | capture |\n|---:|---:|")
    for shrink, capture in results:
        print(f"| {shrink:g} | {100 * capture:.1f} % |")
    print(f"({(datetime.now() - started).total_seconds():.0f} s)")


if __name__ == "__main__":
    main()
