"""Memory a worker holds for its sites once their policies' histories are full: the figure per site.

    .venv/bin/python bench/state_memory.py                      # mpc, 10,000 sites
    .venv/bin/python bench/state_memory.py --policy adaptive --sites 1000

A worker in service for a month restores every site's state from the state topic, each with a full
price history (mpc: 696 hourly prices by default). The benchmark runs throughput from fresh sites, whose
histories are still short, so it never sees that memory. Here one site is run through ``--hours`` hourly
ticks of the bundled ERCOT fortnight (repeated) to a full history, its state record is cloned under
``--sites`` site ids, and a worker's ``TickProcessor`` restores them all, as at a start or a rebalance:
partition by partition (``--partitions``, the worker's default 3), each partition's records read, its
sites restored from them one by one and the records dropped before the next partition's are read
(``kafka/store.py``). Printed: the process's RSS at start, with the sites restored, and once the freed
pages are handed back (``ops/memory.py``), as the worker does after a restore; the peak RSS; the largest
partition's records; and the Python heap a site holds (``tracemalloc``, in a second restore of at most
1,000 of them).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from common import PARTITIONS, T0, peak_rss_mb, rss_mb, sample_prices, settings_for

from battery_worker.kafka.store import Stored
from battery_worker.kafka.tools.feed import tick_payload
from battery_worker.ops.memory import release_freed_memory
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.payloads import dumped
from battery_worker.pipeline.processing import InputRecord, TickProcessor
from battery_worker.ticks import make_tick

TRACED_SITES = 1_000


def processor_for(policy: str, partitions: int = PARTITIONS) -> TickProcessor:
    settings = settings_for("unused:9092", "prices", "bench", "unused")
    settings = settings.model_copy(
        update={"policy": settings.policy.model_copy(update={"name": policy, "params": {}})}
    )
    return TickProcessor(settings.site_directory(), settings.topics.names(), prices_partitions=partitions)


def full_state(policy: str, hours: int) -> bytes:
    """One site's state record after ``hours`` hourly ticks: its policy's history as full as it gets."""
    processor = processor_for(policy)
    prices = sample_prices()
    site = "site-0"
    partition = home_partition(site, PARTITIONS)
    for hour in range(hours):
        tick = make_tick(prices[hour % len(prices)], 0.0, 0.0, T0 + timedelta(hours=hour))
        value = tick_payload(tick)
        processor.handle(InputRecord("prices", partition, hour, site.encode(), value), 0)
    (record,) = processor.take_state_records()
    return record.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="mpc", help="mpc (the default), adaptive, site, threshold")
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--hours", type=int, default=744, help="hourly ticks run before cloning (a month)")
    parser.add_argument("--partitions", type=int, default=PARTITIONS, help="of the state topic")
    args = parser.parse_args()
    state = orjson.loads(full_state(args.policy, args.hours))
    processor = processor_for(args.policy, args.partitions)
    gc.collect()
    start = rss_mb()
    started = time.perf_counter()
    size, largest = restore_by_partition(processor, state, args.sites, args.partitions)
    restore_s = time.perf_counter() - started
    gc.collect()
    kept = rss_mb()
    release_freed_memory()
    after = rss_mb()
    peak = peak_rss_mb()
    processor.drop_all()
    traced = min(args.sites, TRACED_SITES)
    gc.collect()
    tracemalloc.start()  # apart and on fewer sites: tracing inflates the RSS it would be measured with
    restore_by_partition(processor, state, traced, args.partitions)
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{args.policy}, {args.sites:,} sites after {args.hours} hourly ticks (state record {size:,} bytes), "
        f"{args.partitions} partitions: RSS {start:.0f} MiB at start, {kept:.0f} with the sites restored "
        f"({restore_s:.1f} s), {after:.0f} once the freed pages are handed back (peak {peak:.0f}); "
        f"the largest partition's records {largest / 2**20:.0f} MiB; a site holds "
        f"{held / traced / 1e3:.1f} KB (tracemalloc over {traced:,} sites)"
    )


def restore_by_partition(
    processor: TickProcessor, state: dict[str, object], sites: int, partitions: int
) -> tuple[int, int]:
    """``state`` restored under ``sites`` site ids as the worker restores them (``kafka/store.py``): per
    partition, its records read (as the bytes a fetch gives: orjson's own result keeps its growth buffer),
    each parsed as its site is restored, then dropped. Returns a record's size and the largest partition's
    records in bytes."""
    homes: dict[int, list[str]] = {}
    for index in range(sites):
        site = f"site-{index}"
        homes.setdefault(home_partition(site, partitions), []).append(site)
    size = largest = 0
    for partition in sorted(homes):
        values = {site.encode(): dumped({**state, "site_id": site}) for site in homes[partition]}
        size = len(next(iter(values.values())))
        largest = max(largest, sum(map(len, values.values())))
        processor.restore(Stored(values, len(values)).records())
        del values
    return size, largest


if __name__ == "__main__":
    main()
