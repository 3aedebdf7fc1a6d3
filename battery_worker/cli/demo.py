"""``battery-worker demo``: the whole system on one machine with no Kafka of your own.

Starts the embedded broker (unless a cluster is given), runs the worker, feeds the bundled fortnight of real
ERCOT prices (USD/MWh) to ``prices`` and shows the actions as they arrive on ``battery.actions``, then a
summary. The demo's policy is the seed's threshold policy with thresholds for USD/MWh: charge below 25,
discharge above 100 (the fortnight's median is 28, its top decile 378).

``demo --site`` feeds the bundled MARA slice instead (26 hours of the API's history, the 24-hour warm-up of
the ``site`` policy, then the event day's price spike) under the ``site`` policy, and shows the machines
running per tick: mining curtailed when the spike makes power dearer than hashes, the battery discharging
into the machines, mining back when prices ease.

``demo --live`` puts the price monitor in front: a local HTTP server replays the file in the MARA API's
format at ``--rate`` ticks per second, ``battery-worker monitor``'s loop polls it and publishes to
``prices``, so the whole chain runs: API → monitor → ``prices`` → worker → ``battery.actions``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import uuid
from collections import Counter, deque
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from battery_worker.cli.common import stdout_console
from battery_worker.events import BatteryAction
from battery_worker.kafka.clients import make_producer, make_reader, start_client
from battery_worker.kafka.tools.feed import publish_ticks
from battery_worker.kafka.topics import prepare_topics
from battery_worker.kafka.worker import Worker
from battery_worker.pricefiles import load_ticks
from battery_worker.settings import BOOTSTRAP_VARIABLES, PolicySettings, Settings, load_settings
from battery_worker.ticks import PriceTick

DEMO_SITE = "demo-site"
DEMO_POLICY = {"name": "threshold", "params": {"charge_below": 25.0, "discharge_above": 100.0}}
SITE_POLICY: dict[str, Any] = {"name": "site", "params": {}}
SAMPLE = "ercot_2023-08-01_14.csv"
SITE_SAMPLE = "mara_2025-06-20_event.csv"
LIVE_POLL_S = 0.25
EMBEDDED_SESSION_MS = 3000
"""The demo worker's session on the embedded broker, unless one is configured. Tansu holds a member's first
join for half the session (``docs/embedded-broker.md``): with the default 10 s the demo waited 5 s for its
first action, with this 1.5 s. A heartbeat each second (the default) is a third of it."""


def sample_path(name: str = SAMPLE) -> Path:
    return Path(str(resources.files("battery_worker") / "data" / name))


def run_demo(args: argparse.Namespace) -> int:
    variables = (os.environ.get(name) for name in BOOTSTRAP_VARIABLES)
    external = args.bootstrap_servers or next((value for value in variables if value), None)
    console = stdout_console()
    if args.log_level.upper() == "INFO" and "BATTERY_WORKER_LOG_LEVEL" not in os.environ:
        # The live table is the demo's output; the worker's INFO lines would scroll it away.
        logging.getLogger("battery_worker").setLevel(logging.WARNING)
    if external:
        return asyncio.run(_demo(args, external, console, fresh_topics=True))
    from battery_worker.brokers.embedded import EmbeddedBroker

    console.print("starting the embedded Kafka-compatible broker (Tansu)...")
    with EmbeddedBroker() as broker:
        console.print(f"broker ready at {broker.bootstrap_servers}")
        return asyncio.run(_demo(args, broker.bootstrap_servers, console, fresh_topics=False))


def _demo_settings(args: argparse.Namespace, bootstrap: str, fresh_topics: bool) -> Settings:
    overrides: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap},
        "worker": {"group_id": "battery-worker-demo"},
    }
    if fresh_topics:
        run = uuid.uuid4().hex[:8]
        names = ("prices", "actions", "status", "state", "history", "dlq")
        overrides["topics"] = {name: f"demo.{run}.{name}" for name in names}
        overrides["worker"]["group_id"] = f"battery-worker-demo-{run}"
    settings = load_settings(getattr(args, "config", None), overrides)
    # The demo's own policy replaces the file's whole: through load_settings, a file's [policy] params were
    # deep-merged into it ("unknown parameters for policy 'threshold'", with mpc's carbon_price).
    demo = settings.model_copy(
        update={"policy": PolicySettings(**(SITE_POLICY if args.site else DEMO_POLICY))}
    )
    demo.site_directory()
    if not fresh_topics:  # the embedded broker
        configured = demo.worker.model_fields_set & {"session_timeout_ms", "heartbeat_interval_ms"}
        if not configured:
            worker = demo.worker.model_copy(update={"session_timeout_ms": EMBEDDED_SESSION_MS})
            demo = demo.model_copy(update={"worker": worker})
    return demo


async def _demo(args: argparse.Namespace, bootstrap: str, console: Console, *, fresh_topics: bool) -> int:
    settings = _demo_settings(args, bootstrap, fresh_topics)
    ticks = load_ticks(args.file or sample_path(SITE_SAMPLE if args.site else SAMPLE))
    await prepare_topics(settings)
    worker = Worker(settings)
    worker_task = asyncio.create_task(worker.run())
    seen: deque[BatteryAction] = deque(maxlen=14)
    actions: list[BatteryAction] = []
    read_to: dict[TopicPartition, int] = {}
    try:
        # Each record fed is handled once (applied, stale or dead-lettered); the live monitor publishes each
        # timestamp once. Waiting for as many actions as ticks hung on a stale or dead-lettered tick.
        expected = _published_by_the_monitor(ticks, settings) if args.live else len(ticks)
        watch = _watch(
            settings, expected, actions, seen, console, worker, worker_task, read_to, site=args.site
        )
        if args.live:
            await _through_the_monitor(args, settings, ticks, console, watch)
        else:
            await _fed(args, settings, ticks, console, watch)
        (_site_summary if args.site else _summary)(console, actions, worker)
        if args.follow:
            feed = (
                f"battery-worker feed FILE --site {DEMO_SITE} --bootstrap-servers {bootstrap} "
                f"--topic {settings.topics.prices}"
            )
            console.print(f"following: feed more prices with `{feed}`; Ctrl+C stops", soft_wrap=True)
            await _watch(settings, None, actions, seen, console, worker, worker_task, read_to, site=args.site)
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
    return 0


def _published_by_the_monitor(ticks: list[PriceTick], settings: Settings) -> int:
    """How many of ``ticks`` the monitor publishes: each timestamp once, none too far ahead of now."""
    ahead = datetime.now(UTC) + timedelta(seconds=settings.worker.max_tick_ahead_s)
    return len({tick.timestamp for tick in ticks if tick.timestamp <= ahead})


async def _fed(
    args: argparse.Namespace,
    settings: Settings,
    ticks: list[PriceTick],
    console: Console,
    watch: Coroutine[Any, Any, None],
) -> None:
    producer = make_producer(settings.kafka)
    await start_client(producer, settings.kafka)
    try:
        what = (
            f"{len(ticks)} ticks of {args.file.name}"
            if args.file is not None
            else f"{len(ticks)} MARA 5-minute ticks"
            if args.site
            else f"{len(ticks)} hourly ERCOT prices"
        )
        console.print(
            f"feeding {what} to '{settings.topics.prices}' at {args.rate:g}/s; "
            + (
                "policy: site (machines and battery; 24 h warm-up, then the event day's spike)"
                if args.site
                else "policy: charge < 25, discharge > 100 USD/MWh"
            ),
            soft_wrap=True,
        )
        feeding = asyncio.create_task(
            publish_ticks(producer, settings.topics.prices, ticks, site_id=DEMO_SITE, rate_per_s=args.rate)
        )
        await watch
        await feeding
    finally:
        await producer.stop()


async def _through_the_monitor(
    args: argparse.Namespace,
    settings: Settings,
    ticks: list[PriceTick],
    console: Console,
    watch: Coroutine[Any, Any, None],
) -> None:
    """``--live``: a local price API replays the file at ``--rate``; the monitor polls it into ``prices``."""
    from battery_worker.monitor.replay_api import ReplayApi
    from battery_worker.monitor.service import Monitor
    from battery_worker.settings import MonitorSettings

    with ReplayApi(ticks, rate_per_s=args.rate) as api:
        polled = MonitorSettings(url=api.url, site=DEMO_SITE, interval_s=LIVE_POLL_S, timeout_s=5.0)
        monitor = Monitor(settings.model_copy(update={"monitor": polled}))
        console.print(
            f"a local price API replays {len(ticks)} ticks at {args.rate:g}/s on {api.url}; "
            f"battery-worker monitor polls it every {LIVE_POLL_S:g} s into '{settings.topics.prices}'",
            soft_wrap=True,
        )
        monitoring = asyncio.create_task(monitor.run())
        watching = asyncio.ensure_future(watch)
        try:
            await asyncio.wait({monitoring, watching}, return_when=asyncio.FIRST_COMPLETED)
            if monitoring.done():
                monitoring.result()  # the monitor stopped early: its error, said here
            await watching
        finally:
            monitor.stop()
            watching.cancel()
            stats = await monitoring
    errors = ", ".join(f"{kind} {n}" for kind, n in sorted(stats.errors.items())) or "none"
    console.print(
        f"monitor: {stats.polls} polls of the API, {stats.published} ticks published once, errors: {errors}",
        soft_wrap=True,
    )


async def _watch(
    settings: Settings,
    expected: int | None,
    actions: list[BatteryAction],
    seen: deque[BatteryAction],
    console: Console,
    worker: Worker,
    worker_task: asyncio.Task[int],
    read_to: dict[TopicPartition, int],
    *,
    site: bool = False,
) -> None:
    """Show the actions as they come, until the worker has handled ``expected`` records and every applied
    one's action has arrived (``None``: until the worker stops, for ``--follow``). ``read_to``: where the
    previous watch stopped reading, and where this one stops."""
    counters = worker.processor.counters
    reader = make_reader(settings.kafka)
    line, table = (_site_line, _site_table) if site else (_line, _table)
    await start_client(reader, settings.kafka)
    try:
        partitions = await _partitions(reader, settings.topics.actions)
        reader.assign([TopicPartition(settings.topics.actions, p) for p in partitions])
        for tp, offset in read_to.items():
            reader.seek(tp, offset)
        live = Live(table(seen), console=console, refresh_per_second=8) if console.is_terminal else None
        with live or contextlib.nullcontext():
            while expected is None or counters.total < expected or len(actions) < counters.applied:
                if worker_task.done():
                    worker_task.result()
                    break
                batch = await reader.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        action = BatteryAction.model_validate_json(record.value or b"{}")
                        actions.append(action)
                        seen.append(action)
                        if live is None:
                            console.print(line(action), highlight=False, soft_wrap=True)
                if live is not None:
                    live.update(table(seen))
        for tp in reader.assignment():
            read_to[tp] = await reader.position(tp)
    finally:
        await reader.stop()


async def _partitions(reader: Any, topic: str) -> list[int]:
    for _ in range(50):
        await reader.topics()
        partitions = reader.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        await asyncio.sleep(0.1)
    return [0]


def _line(action: BatteryAction) -> str:
    soc = action.state_of_charge_after_mwh
    return (
        f"{action.tick_timestamp:%Y-%m-%d %H:%M}  {action.energy_price:9.2f} USD/MWh  "
        f"{action.action.value:<9} {action.power_mw:5.1f} MW  battery {soc:6.2f} MWh"
    )


def _table(seen: deque[BatteryAction]) -> Table:
    table = Table(title="battery.actions (latest)")
    for column in ("tick (UTC)", "price USD/MWh", "action", "MW", "battery MWh", "reason"):
        table.add_column(column)
    colours = {"charge": "green", "discharge": "red", "hold": "dim"}
    for action in seen:
        table.add_row(
            f"{action.tick_timestamp:%m-%d %H:%M}",
            f"{action.energy_price:,.2f}",
            f"[{colours[action.action.value]}]{action.action.value}[/]",
            f"{action.power_mw:.1f}",
            f"{action.state_of_charge_after_mwh:.2f}",
            action.reason,
        )
    return table


def _site_line(action: BatteryAction) -> str:
    plan = action.site_plan
    if plan is None:  # a version 1 action, written before the site plan
        return _line(action)
    prices = (
        f"energy {action.energy_price:5.2f} hash {action.hash_price:5.2f} token {action.token_price:5.2f}"
    )
    return (
        f"{action.tick_timestamp:%m-%d %H:%M}  {prices}  mining {plan.mining_mw:4.1f} MW  "
        f"inference {plan.inference_mw:4.1f} MW  battery {plan.battery_mw:+5.1f} MW  "
        f"grid {plan.grid_import_mw:4.1f} MW  net {plan.net:6.2f}"
    )


def _site_table(seen: deque[BatteryAction]) -> Table:
    table = Table(title="battery.actions: the site plan (latest)")
    columns = ("tick (UTC)", "energy", "hash", "token", "mining MW", "inference MW", "battery MW", "grid MW")
    for column in (*columns, "net"):
        table.add_column(column)
    for action in seen:
        plan = action.site_plan
        if plan is None:
            continue
        table.add_row(
            f"{action.tick_timestamp:%m-%d %H:%M}",
            f"{action.energy_price:.2f}",
            f"{action.hash_price:.2f}",
            f"{action.token_price:.2f}",
            f"{plan.mining_mw:.1f}",
            f"{plan.inference_mw:.1f}",
            f"{plan.battery_mw:+.1f}",
            f"{plan.grid_import_mw:.1f}",
            f"{plan.net:.2f}",
        )
    return table


def _summary(console: Console, actions: list[BatteryAction], worker: Worker) -> None:
    counts = Counter(action.action.value for action in actions)
    bought = sum(a.energy_mwh * a.energy_price for a in actions if a.action.value == "charge")
    avoided = sum(a.energy_mwh * a.energy_price for a in actions if a.action.value == "discharge")
    counters = worker.processor.counters
    console.print(
        f"summary: {len(actions)} actions ({counts['charge']} charge, {counts['discharge']} discharge, "
        f"{counts['hold']} hold); charging cost {bought:,.0f} USD, avoided cost {avoided:,.0f} USD, "
        f"net {avoided - bought:,.0f} USD; {_battery_end(actions)}; "
        f"{counters.rejected} to DLQ, {counters.stale} stale",
        soft_wrap=True,  # one line in a pipe or a log too (rich wraps at 80 columns there)
    )


def _battery_end(actions: list[BatteryAction]) -> str:
    if not actions:
        return "no tick applied, the battery untouched"
    return f"battery ends at {actions[-1].state_of_charge_after_mwh:.2f} MWh"


def _site_summary(console: Console, actions: list[BatteryAction], worker: Worker) -> None:
    plans = [action.site_plan for action in actions if action.site_plan is not None]
    net = sum(plan.net for plan in plans)
    ran = sum((plan.mining_mw + plan.inference_mw) * plan.hours for plan in plans)
    from_battery = sum(-plan.battery_mw * plan.hours for plan in plans if plan.battery_mw < 0)
    counters = worker.processor.counters
    console.print(
        f"summary: {len(actions)} ticks; machines ran {ran:,.1f} MWh, {from_battery:,.1f} MWh of it from the "
        f"battery; site net {net:,.2f} (API price units); {_battery_end(actions)}; "
        f"{counters.rejected} to DLQ, {counters.stale} stale",
        soft_wrap=True,
    )
