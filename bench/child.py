"""One measured process: the worker, the raw-client ceiling, or the latency floor. Started by ``run.py``;
prints one JSON line.

A process of its own, so the peak RSS is the worker's alone and no orchestration shares its event loop.

    python bench/child.py worker  BOOTSTRAP PRICES PREFIX GROUP COUNT [--profile FILE]
                                  [--guarantee exactly-once] [--worker-setting KEY=VALUE ...]
                                  [--idle-timeout S] [--stripped]
    python bench/child.py ceiling BOOTSTRAP PRICES OUTPUT GROUP COUNT
    python bench/child.py passthrough BOOTSTRAP PRICES PREFIX GROUP COUNT

``--guarantee exactly-once`` runs the worker with Kafka transactions (Apache Kafka only); its JSON line
then counts them (``transactions``: committed, aborted, fenced). ``--worker-setting`` sets any other
``worker.*`` setting for the run (the value is read as JSON when it parses, e.g. ``max_batch_records=500``).

``--stripped`` runs the worker's loop with ``tick_floor.StrippedJob`` in place of ``TickProcessor.handle``
(the same three events a tick, with no domain): the floor under the worker's CPU per tick.

``passthrough`` is the latency run's floor: the worker's clients moving each tick to ``PREFIX.actions`` as
it comes, with nothing done to it but naming its source (what the latency run's consumer matches an action
to its tick by), in the worker's rhythm: ``getmany``, send, wait for the acknowledgements, a commit at most
once per ``commit_interval_ms``. What a broker and aiokafka take between a tick and its action, whatever
the processing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from aiokafka import ConsumerRebalanceListener, TopicPartition
from common import AT_LEAST_ONCE, EXACTLY_ONCE, create_topics, peak_rss_mb, settings_for

from battery_worker.kafka.clients import make_group_consumer, make_producer
from battery_worker.kafka.worker import Worker


class TimedWorker(Worker):
    """The worker, timed from the first batch consumed to the end of the last batch's ``_process``.

    At-least-once: the last batch's events are acknowledged (its state and commit, the tail, run after).
    Exactly-once: the last batch's transactions are committed (events, state and offsets).
    """

    first_consumed: float | None = None
    last_acked: float | None = None
    cpu_first: float = 0.0
    cpu_last: float = 0.0

    async def _process(self, batch: Any) -> int:
        # From the first batch with records: exactly-once seeks to the committed offsets on assignment,
        # and the fetch made before that seek reaches _process emptied; the clock starts at the re-fetch.
        if self.first_consumed is None and any(batch.values()):
            self.first_consumed, self.cpu_first = time.perf_counter(), time.process_time()
        handled = await super()._process(batch)
        self.last_acked, self.cpu_last = time.perf_counter(), time.process_time()
        return handled


def _strip(worker: Worker, settings: Any) -> None:
    """The worker's loop with ``tick_floor.StrippedJob`` in place of ``TickProcessor.handle``: the same three
    events a tick, no state records (no site is ever dirty)."""
    from tick_floor import StrippedJob

    from battery_worker.pipeline.processing import Handled, InputRecord

    job = StrippedJob(settings.topics.actions, settings.topics.status, settings.topics.history)

    def handle(record: InputRecord, now_ms: int = 0) -> Handled:
        outputs = job.handle(record)
        worker.processor.counters.applied += 1
        return Handled("applied", None, outputs)

    worker.processor.handle = handle  # type: ignore[method-assign]


async def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_for(
        args.bootstrap, args.prices, args.prefix, args.group, guarantee=args.guarantee, worker=args.worker
    )
    worker = TimedWorker(settings)
    if args.stripped:
        _strip(worker, settings)

    async def announce_ready() -> None:
        while not worker.assignment.restored:  # noqa: ASYNC110 (a flag set by the worker, no event to wait on)
            await asyncio.sleep(0.01)
        print("READY", flush=True)

    announcer = asyncio.create_task(announce_ready())
    handled = await worker.run(max_messages=args.count, idle_timeout_s=args.idle_timeout)
    stopped = time.perf_counter()  # the last checkpoint stored and the clients closed
    announcer.cancel()
    assert worker.first_consumed is not None
    assert worker.last_acked is not None
    seconds = worker.last_acked - worker.first_consumed
    counters = worker.processor.counters
    return {
        "handled": handled,
        "applied": counters.applied,
        "rejected": counters.rejected,
        "seconds": seconds,
        "ticks_per_s": handled / seconds,
        "first_at": worker.first_consumed,
        "last_at": worker.last_acked,
        "stopped_at": stopped,
        "batches": worker.stats.batches,
        "checkpoints": worker.stats.checkpoints,
        "cpu_share": (worker.cpu_last - worker.cpu_first) / seconds,
        "cpu_us_per_tick": (worker.cpu_last - worker.cpu_first) / handled * 1e6,
        "sites": worker.processor.site_count,
        "peak_rss_mb": peak_rss_mb(),
        "guarantee": settings.worker.processing_guarantee,
        "transactions": dict(worker.stats.transactions),
        "rewinds": worker.stats.rewinds,
    }


async def run_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """Plain aiokafka passthrough with the worker's client settings: getmany, send, acks, commit."""
    settings = settings_for(args.bootstrap, args.prices, "ceiling", args.group)
    consumer = make_group_consumer(settings.kafka, settings.worker)
    producer = make_producer(settings.kafka)
    await producer.start()
    await consumer.start()
    consumer.subscribe([args.prices])
    moved, batches = 0, 0
    first: float | None = None
    deadline = time.monotonic() + 300
    try:
        while moved < args.count and time.monotonic() < deadline:
            batch = await consumer.getmany(
                timeout_ms=settings.worker.poll_timeout_ms,
                max_records=min(settings.worker.max_batch_records, args.count - moved),
            )
            if not batch:
                continue
            if first is None:
                first = time.perf_counter()
            pending = [
                await producer.send(args.output, message.value, key=message.key)
                for records in batch.values()
                for message in records
            ]
            await asyncio.gather(*pending)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items() if records})
            moved += len(pending)
            batches += 1
        last = time.perf_counter()
    finally:
        await consumer.stop()
        await producer.stop()
    assert first is not None
    return {
        "handled": moved,
        "seconds": last - first,
        "ticks_per_s": moved / (last - first),
        "batches": batches,
        "peak_rss_mb": peak_rss_mb(),
    }


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.event.set()


async def run_passthrough(args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_for(args.bootstrap, args.prices, args.prefix, args.group)
    output = settings.topics.names().actions
    await create_topics(args.bootstrap, [output])
    consumer = make_group_consumer(settings.kafka, settings.worker)
    producer = make_producer(settings.kafka, linger_ms=0)  # as the worker's (kafka/clients.py)
    await producer.start()
    await consumer.start()
    assigned = _Assigned()
    consumer.subscribe([args.prices], listener=assigned)
    moved, announced = 0, False
    commit_every_s = settings.worker.commit_interval_ms / 1000
    committed_at = time.monotonic()
    try:
        while moved < args.count:
            batch = await consumer.getmany(
                timeout_ms=settings.worker.poll_timeout_ms, max_records=settings.worker.max_batch_records
            )
            if assigned.event.is_set() and not announced:
                print("READY", flush=True)
                announced = True
            pending = [
                await producer.send(
                    output,
                    orjson.dumps({"source": {"partition": record.partition, "offset": record.offset}}),
                    key=record.key,
                )
                for records in batch.values()
                for record in records
            ]
            await asyncio.gather(*pending)
            moved += len(pending)
            if time.monotonic() - committed_at >= commit_every_s:
                await consumer.commit()
                committed_at = time.monotonic()
    finally:
        await consumer.stop()
        await producer.stop()
    return {"handled": moved, "applied": moved, "rewinds": 0, "transactions": {}}


def _setting(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["worker", "ceiling", "passthrough"])
    parser.add_argument("bootstrap")
    parser.add_argument("prices")
    parser.add_argument("target", help="output topic prefix (worker, passthrough) or output topic (ceiling)")
    parser.add_argument("group")
    parser.add_argument("count", type=int)
    parser.add_argument("--profile", type=Path, help="write a pyinstrument text profile of the run here")
    parser.add_argument(
        "--stripped", action="store_true", help="worker: tick_floor.StrippedJob in place of the processor"
    )
    parser.add_argument("--guarantee", choices=[AT_LEAST_ONCE, EXACTLY_ONCE], default=AT_LEAST_ONCE)
    parser.add_argument(
        "--idle-timeout", type=float, default=120, help="stop after this many seconds without records"
    )
    parser.add_argument(
        "--worker-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another worker.* setting for this run (repeatable)",
    )
    args = parser.parse_args()
    args.worker = dict(_setting(text) for text in args.worker_setting)
    rss_after_imports = peak_rss_mb()
    args.prefix = args.output = args.target
    runner = {"worker": run_worker, "ceiling": run_ceiling, "passthrough": run_passthrough}[args.mode]
    if args.profile is None:
        result = asyncio.run(runner(args))
    else:
        from pyinstrument import Profiler

        with Profiler(async_mode="disabled", interval=0.0005) as profiler:
            result = asyncio.run(runner(args))
        args.profile.write_text(
            "\n".join(
                [
                    "# functions by own time",
                    profiler.output_text(unicode=True, flat=True, time="percent_of_total"),
                    "# functions by total time (self and callees)",
                    profiler.output_text(unicode=True, flat=True, flat_time="total", time="percent_of_total"),
                    "# call tree",
                    profiler.output_text(unicode=True, time="percent_of_total"),
                ]
            )
        )
    print(json.dumps({**result, "rss_after_imports_mb": rss_after_imports}), flush=True)


if __name__ == "__main__":
    main()
