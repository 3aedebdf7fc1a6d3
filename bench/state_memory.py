"""Memory a worker holds for its sites once their policies' histories are full: the figure per site.

    .venv/bin/python bench/state_memory.py                      # mpc, 10,000 sites, the embedded broker
    .venv/bin/python bench/state_memory.py --policy threshold --bootstrap-servers localhost:9092

A worker in service for a month restores every site's state from the state topic, each with a full
price history (mpc: 696 hourly prices by default). The benchmark runs throughput from fresh sites, whose
histories are still short, so it never sees that memory. Here one site is run through ``--hours`` hourly
ticks of the bundled ERCOT fortnight (repeated) to a full history, and its state record is cloned under
``--sites`` site ids into a state topic of 3 partitions (written by a child process, so its producer's
memory is not this one's). Then this process restores them with the worker's own
``store.restore_sites``, reading the broker as a worker does at a start or a rebalance. Printed: the RSS
before the restore and after it (the worker hands the freed pages back at its end, ``ops/memory.py``), the
peak RSS during it, its time, and the Python heap a site holds (``tracemalloc``, restoring at most 1,000
of the records again without a broker). ``--hold-bytes`` sets what a restore holds before it reads a
partition twice (``store.HOLD_BYTES``; 0: no limit, one read however large).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import sys
import time
import tracemalloc
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from common import (
    PARTITIONS,
    T0,
    create_topics,
    on_broker,
    peak_rss_mb,
    produce,
    rss_mb,
    sample_prices,
    settings_for,
)

from battery_worker.kafka.clients import make_reader, start_client
from battery_worker.kafka.store import HOLD_BYTES, Stored, restore_sites
from battery_worker.kafka.tools.feed import tick_payload
from battery_worker.kafka.worker_stats import WorkerStats
from battery_worker.ops.memory import release_freed_memory
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.payloads import dumped
from battery_worker.pipeline.processing import InputRecord, TickProcessor
from battery_worker.settings import Settings
from battery_worker.ticks import make_tick

TRACED_SITES = 1_000


def settings_of(bootstrap: str, prefix: str, policy: str) -> Settings:
    settings = settings_for(bootstrap, f"{prefix}.prices", prefix, "unused")
    return settings.model_copy(
        update={"policy": settings.policy.model_copy(update={"name": policy, "params": {}})}
    )


def processor_for(settings: Settings) -> TickProcessor:
    return TickProcessor(settings.site_directory(), settings.topics.names(), prices_partitions=PARTITIONS)


def full_state(settings: Settings, hours: int) -> bytes:
    """One site's state record after ``hours`` hourly ticks: its policy's history as full as it gets."""
    processor = processor_for(settings)
    prices = sample_prices()
    site = "site-0"
    partition = home_partition(site, PARTITIONS)
    for hour in range(hours):
        tick = make_tick(prices[hour % len(prices)], 0.0, 0.0, T0 + timedelta(hours=hour))
        value = tick_payload(tick)
        processor.handle(InputRecord("prices", partition, hour, site.encode(), value), 0)
    (record,) = processor.take_state_records()
    return record.value


def clones(state: bytes, sites: int) -> list[tuple[bytes, bytes]]:
    """``state`` as the record of each of ``sites`` site ids (key, value), each the size of its bytes."""
    body = orjson.loads(state)
    return [(f"site-{i}".encode(), dumped({**body, "site_id": f"site-{i}"})) for i in range(sites)]


def fill(bootstrap: str, topic: str, state: bytes, sites: int) -> None:
    """Write the clones to the state topic, each on its site's home partition (in a child process)."""
    records = clones(state, sites)
    homes = [home_partition(key.decode(), PARTITIONS) for key, _ in records]
    asyncio.run(produce(bootstrap, topic, records, homes))


async def restore(settings: Settings, hold_bytes: int) -> tuple[TickProcessor, WorkerStats]:
    """The sites restored as a worker restores them, and the restore's figures."""
    reader = make_reader(settings.kafka)
    await start_client(reader, settings.kafka)
    processor = processor_for(settings)
    stats = WorkerStats()
    try:
        await restore_sites(
            reader,
            processor,
            settings.topics.names().state,
            range(PARTITIONS),
            stats,
            timeout_s=600,
            hold_bytes=hold_bytes or sys.maxsize,
        )
    finally:
        await reader.stop()
    return processor, stats


def reset_peak() -> None:
    """Start the peak RSS (VmHWM) afresh (Linux 4.0 and later); elsewhere it stays the process's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


async def measure(bootstrap: str, args: argparse.Namespace) -> None:
    settings = settings_of(bootstrap, f"bench-state-{uuid.uuid4().hex[:8]}", args.policy)
    state = full_state(settings, args.hours)
    topic = settings.topics.names().state
    await create_topics(bootstrap, [topic], compact=[topic])
    child = multiprocessing.get_context("spawn").Process(
        target=fill, args=(bootstrap, topic, state, args.sites)
    )
    child.start()
    await asyncio.get_running_loop().run_in_executor(None, child.join)
    if child.exitcode != 0:
        raise RuntimeError(f"writing the state records failed (exit code {child.exitcode})")
    gc.collect()
    release_freed_memory()
    start = rss_mb()
    reset_peak()
    started = time.perf_counter()
    processor, stats = await restore(settings, args.hold_bytes)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    after = rss_mb()
    if stats.sites_restored != args.sites or processor.site_count != args.sites:
        raise RuntimeError(f"restored {stats.sites_restored} of {args.sites} sites")
    processor.drop_all()
    held = heap_per_site(settings, state, min(args.sites, TRACED_SITES))
    hold = f"{args.hold_bytes / 2**20:g} MiB held at most" if args.hold_bytes else "no limit held"
    print(
        f"{args.policy}, {args.sites:,} sites after {args.hours} hourly ticks (state record {len(state):,} "
        f"bytes, {PARTITIONS} partitions, {hold}): RSS {start:.0f} MiB before the restore, {after:.0f} "
        f"after it, peak {peak:.0f} during it ({seconds:.1f} s); a site holds {held / 1e3:.1f} KB "
        f"(tracemalloc over {min(args.sites, TRACED_SITES):,} sites)"
    )


def heap_per_site(settings: Settings, state: bytes, sites: int) -> float:
    """The Python heap a restored site holds, by ``tracemalloc`` (apart and on fewer sites: tracing
    inflates the RSS it would be measured with)."""
    values = dict(clones(state, sites))
    processor = processor_for(settings)
    gc.collect()
    tracemalloc.start()
    processor.restore(Stored(values, len(values)).records())
    del values
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held / sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="mpc", help="mpc (the default), adaptive, site, threshold")
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--hours", type=int, default=744, help="hourly ticks run before cloning (a month)")
    parser.add_argument("--hold-bytes", type=int, default=HOLD_BYTES, help="0: no limit (one read)")
    parser.add_argument("--bootstrap-servers", help="a running broker; default: the embedded one")
    args = parser.parse_args()
    on_broker(args.bootstrap_servers, lambda bootstrap: measure(bootstrap, args))


if __name__ == "__main__":
    main()
