"""Memory a worker holds for its sites once their policies' histories are full: the figure per site.

    .venv/bin/python bench/state_memory.py                      # mpc, 10,000 sites
    .venv/bin/python bench/state_memory.py --policy adaptive --sites 1000

A worker in service for a month restores every site's state from the state topic, each with a full
price history (mpc: 696 hourly prices by default). The benchmark runs throughput from fresh sites, whose
histories are still short, so it never sees that memory. Here one site is run through ``--hours`` hourly
ticks of the bundled ERCOT fortnight (repeated) to a full history, its state record is cloned under
``--sites`` site ids, and a worker's ``TickProcessor`` restores them all, as at a start or a rebalance.
Printed: the process's RSS at start, with the records read, with the sites restored and the records
dropped, and once the freed pages are handed back (``ops/memory.py``), as the worker does after a
restore; the peak RSS; and the Python heap a site holds (``tracemalloc``, in a second restore of at most
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


def processor_for(policy: str) -> TickProcessor:
    settings = settings_for("unused:9092", "prices", "bench", "unused")
    settings = settings.model_copy(
        update={"policy": settings.policy.model_copy(update={"name": policy, "params": {}})}
    )
    return TickProcessor(settings.site_directory(), settings.topics.names(), prices_partitions=PARTITIONS)


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
    args = parser.parse_args()
    state = orjson.loads(full_state(args.policy, args.hours))
    processor = processor_for(args.policy)
    gc.collect()
    start = rss_mb()
    stored = records_of(state, args.sites)
    before = rss_mb()
    started = time.perf_counter()
    restore(processor, stored)
    restore_s = time.perf_counter() - started
    size = len(stored[0])
    del stored  # as the worker drops what it read once the sites are restored (kafka/store.py)
    gc.collect()
    kept = rss_mb()
    release_freed_memory()
    after = rss_mb()
    peak = peak_rss_mb()
    processor.drop_all()
    traced = records_of(state, min(args.sites, TRACED_SITES))
    gc.collect()
    tracemalloc.start()  # apart and on fewer sites: tracing inflates the RSS it would be measured with
    restore(processor, traced)
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{args.policy}, {args.sites:,} sites after {args.hours} hourly ticks (state record {size:,} bytes): "
        f"RSS {start:.0f} MB, {before:.0f} with the records read, {kept:.0f} with the sites restored "
        f"({restore_s:.1f} s), {after:.0f} once the freed pages are handed back (peak {peak:.0f}); "
        f"a site holds {held / len(traced) / 1e3:.1f} KB "
        f"(tracemalloc over {len(traced):,} sites)"
    )


def records_of(state: dict[str, object], sites: int) -> list[bytes]:
    """``state`` as the stored record of each of ``sites`` site ids, each the size of its bytes (as a fetch
    gives them; orjson's own result keeps its growth buffer)."""
    return [dumped({**state, "site_id": f"site-{index}"}) for index in range(sites)]


def restore(processor: TickProcessor, stored: list[bytes]) -> None:
    """As the worker restores (``kafka/store.py``): each record parsed from its bytes as it is restored."""
    values = {f"site-{index}".encode(): value for index, value in enumerate(stored)}
    processor.restore(Stored(values, len(values)).records())


if __name__ == "__main__":
    main()
