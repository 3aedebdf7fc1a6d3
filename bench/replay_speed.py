"""The audit replay's speed on a longer log than ``run.py``'s, in one process and in several.

    .venv/bin/python bench/replay_speed.py                  # embedded broker, 120,000 ticks, 1,000 sites
    .venv/bin/python bench/replay_speed.py --ticks 60000 --rounds 3 --processes 1,3

``prices`` is filled with the benchmark's ticks and ``battery.actions`` and ``battery.history`` with what the
worker's own ``TickProcessor`` makes of them (partitioned as the worker's producer does,
``batching.partition_of``), so the replay has a full record to compare with; every round must find it
identical. Ticks/s is the replay's own figure: records read over the seconds from its start (clients,
processes) to its report. Last, one more replay in one process of its own gives the peak RSS a replay of
this log takes (the filling's garbage is not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PARTITIONS,
    create_topics,
    on_broker,
    peak_rss_mb,
    produce,
    rss_mb,
    settings_for,
    tick_messages,
)

from battery_worker.kafka.batching import partition_of
from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.processing import InputRecord, OutputRecord, TickProcessor
from battery_worker.settings import Settings


async def fill(bootstrap: str, ticks: int, sites: int) -> Settings:
    prefix = f"bench-replay-{uuid.uuid4().hex[:8]}"
    settings = settings_for(bootstrap, f"{prefix}.prices", prefix, "unused")
    names = settings.topics.names()
    await create_topics(bootstrap, [names.prices, names.actions, names.history])
    messages = tick_messages(ticks, sites)
    homes = [home_partition(key.decode(), PARTITIONS) for key, _ in messages]
    await produce(bootstrap, names.prices, messages, homes)
    processor = TickProcessor(settings.site_directory(), names, prices_partitions=PARTITIONS)
    offsets = [0] * PARTITIONS
    events: dict[str, list[OutputRecord]] = {names.actions: [], names.history: []}
    for (key, value), home in zip(messages, homes, strict=True):
        handled = processor.handle(InputRecord(names.prices, home, offsets[home], key, value, -1))
        offsets[home] += 1
        for output in handled.outputs:
            if output.topic in events and output.key is not None:
                events[output.topic].append(output)
    for topic, outputs in events.items():
        records = [(output.key or b"", output.value) for output in outputs]
        await produce(bootstrap, topic, records, [partition_of(output, PARTITIONS) for output in outputs])
    return settings


async def measure(bootstrap: str, args: argparse.Namespace) -> None:
    settings = await fill(bootstrap, args.ticks, args.sites)
    processes = [int(p) for p in args.processes.split(",")]
    rates: dict[int, list[float]] = {p: [] for p in processes}
    for round_ in range(args.rounds):
        for count in processes:
            result = await replay(settings, ReplayOptions(processes=count))
            if not result.identical or result.records_read != args.ticks:
                raise RuntimeError(f"the replay in {count} process(es) does not reproduce the record")
            rates[count].append(result.records_per_second)
            print(f"  round {round_ + 1}, {count} process(es): {rates[count][-1]:,.0f} ticks/s", flush=True)
    for count, values in rates.items():
        print(
            f"{args.ticks:,} ticks, {args.sites:,} sites, {count} process(es): median "
            f"{statistics.median(values):,.0f} ticks/s ({min(values):,.0f}-{max(values):,.0f})"
        )
    # The same settings as a plain Settings, which pickles (as replay's own processes get them).
    portable = Settings.model_construct(_fields_set=settings.model_fields_set, **dict(settings))
    for what_if in (False, True):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            loop = asyncio.get_running_loop()
            before, peak, diverged = await loop.run_in_executor(pool, replay_memory, portable, what_if)
        kind = "a what-if replay (another charge_below)" if what_if else "replay"
        print(
            f"{kind} in a process of its own: RSS {before:.0f} MiB before it, peak {peak:.0f} MiB "
            f"({diverged:,} decisions diverged)"
        )


def replay_memory(settings: Settings, what_if: bool) -> tuple[float, float, int]:
    """RSS before a one-process replay and its peak (MiB), in the pool's fresh process, and how many
    decisions diverged. ``what_if``: with another ``charge_below``, so that the events differ and each is
    kept to be paired (an auditor's review measured 4.9 GB for 300,000 ticks so)."""
    if what_if:
        params = {**settings.policy.params, "charge_below": settings.policy.params["charge_below"] + 5.0}
        settings = settings.model_copy(
            update={"policy": settings.policy.model_copy(update={"params": params})}
        )
    before = rss_mb()
    result = asyncio.run(replay(settings, ReplayOptions()))
    if result.identical == what_if:
        raise RuntimeError("the replay does not reproduce the record" if not what_if else "nothing diverged")
    return before, peak_rss_mb(), result.report.totals().diverged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=120_000)
    parser.add_argument("--sites", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts to try")
    parser.add_argument("--bootstrap-servers", help="a running broker; default: the embedded one")
    args = parser.parse_args()
    on_broker(args.bootstrap_servers, lambda bootstrap: measure(bootstrap, args))


if __name__ == "__main__":
    main()
