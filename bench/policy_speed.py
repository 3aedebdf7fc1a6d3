"""Decision time per tick of every battery policy: prints p50/p99/max in milliseconds (not a test).

Run: ``.venv/bin/python bench/policy_speed.py FILE [--ticks N]``. Times ``policy.decide`` alone, on the ticks
of a real price file dispatched in order, so memory and battery evolve as in the worker. The MPC's budget is
deterministic (fixed horizon, solver iteration cap); this measures how far inside 20 ms it stays here.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from battery_worker.battery import BatteryConfig, apply_tick
from battery_worker.dispatch import SiteState, new_site_state
from battery_worker.policies import BATTERY_POLICIES, make_policy
from battery_worker.pricefiles import load_ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--ticks", type=int, default=0, help="only the first N ticks (0: all)")
    args = parser.parse_args()
    ticks = load_ticks(args.file)
    if args.ticks:
        ticks = ticks[: args.ticks]
    config = BatteryConfig()
    print(f"{args.file.name}: {len(ticks)} ticks, {os.cpu_count()} CPUs")
    print("| policy | p50 ms | p99 ms | max ms | mean ms |")
    print("|---|---:|---:|---:|---:|")
    for name in BATTERY_POLICIES:
        policy = make_policy(name)
        site = new_site_state(config, policy)
        times = np.empty(len(ticks))
        for i, tick in enumerate(ticks):
            start = time.perf_counter()
            decision, memory = policy.decide(tick, site.battery, config, site.policy_memory)
            times[i] = time.perf_counter() - start
            step = apply_tick(
                config, site.battery, decision.action, decision.power_mw, tick.energy_price, tick.timestamp
            )
            site = SiteState(step.state, memory)
        ms = times * 1000.0
        p50, p99 = np.percentile(ms, [50, 99])
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {ms.max():.3f} | {ms.mean():.3f} |")


if __name__ == "__main__":
    main()
