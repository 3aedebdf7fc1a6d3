"""One worker process against two in one group, on the same ``prices`` (3 partitions): what a second
process per machine gives. Prints the figures; the doc quotes them.

    .venv/bin/python bench/scale_out.py              # embedded broker, 60,000 ticks, 100 sites, 3 rounds
    .venv/bin/python bench/scale_out.py --ticks 30000 --rounds 1

Each round runs one worker on a fresh group, then two workers together on another fresh group (the group
gives one of them two partitions, the other one); ticks/s of the pair run from the first batch either
consumed to the last batch either acknowledged (``perf_counter`` is the machine's monotonic clock, shared
by the processes). Each worker stops after 5 s without records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import create_topics, produce, tick_messages  # noqa: E402

IDLE_S = "5"


def workers(bootstrap: str, prices: str, prefix: str, count: int, processes: int) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "child.py"),
                "worker",
                bootstrap,
                prices,
                prefix,
                f"{prefix}.g",
                str(count),
                "--idle-timeout",
                IDLE_S,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(processes)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        results.append(json.loads([line for line in out.splitlines() if line.startswith("{")][-1]))
    return results


def combined(results: list[dict[str, Any]]) -> tuple[float, float, int]:
    """(ticks/s of them together, their CPU µs per tick, ticks applied; a rebalance may re-read a few)."""
    handled = sum(r["handled"] for r in results)
    applied = sum(r["applied"] for r in results)
    seconds = max(r["last_at"] for r in results) - min(r["first_at"] for r in results)
    cpu_us = sum(r["cpu_us_per_tick"] * r["handled"] for r in results) / handled
    return applied / seconds, cpu_us, applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=60_000)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from battery_worker.brokers.embedded import EmbeddedBroker

    token = uuid.uuid4().hex[:8]
    figures: dict[int, list[float]] = {1: [], 2: []}
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        prices = f"scale-{token}.prices"
        asyncio.run(create_topics(bootstrap, [prices]))
        asyncio.run(produce(bootstrap, prices, tick_messages(args.ticks, args.sites)))
        for run in range(args.rounds):
            for processes in (1, 2):
                prefix = f"scale-{token}.r{run}.p{processes}"
                rate, cpu_us, applied = combined(workers(bootstrap, prices, prefix, args.ticks, processes))
                if applied != args.ticks:
                    raise RuntimeError(f"{processes} workers applied {applied} of {args.ticks} ticks")
                figures[processes].append(rate)
                print(
                    f"round {run + 1}, {processes} process(es): {rate:,.0f} ticks/s, {cpu_us:.0f} µs CPU/tick"
                )
    one, two = (statistics.median(figures[n]) for n in (1, 2))
    print(f"median: 1 process {one:,.0f} ticks/s, 2 processes {two:,.0f} ticks/s ({two / one:.2f}×)")


if __name__ == "__main__":
    main()
