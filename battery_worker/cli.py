"""``battery-worker``: run the worker, try it on the embedded broker, feed prices, inspect what it did.

Every command has ``--help``. Errors are one line on stderr (exit 2 for bad settings or input, 1 for
anything else the worker raises on purpose), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from battery_worker.errors import BatteryWorkerError, InvalidValue
from battery_worker.logs import setup_logging
from battery_worker.settings import Settings, load_settings

log = logging.getLogger("battery_worker")


def _settings(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Settings:
    overrides: dict[str, Any] = dict(extra or {})
    if getattr(args, "bootstrap_servers", None):
        overrides.setdefault("kafka", {})["bootstrap_servers"] = args.bootstrap_servers
    if getattr(args, "group_id", None):
        overrides.setdefault("worker", {})["group_id"] = args.group_id
    if getattr(args, "metrics_port", None) is not None:
        overrides.setdefault("worker", {})["metrics_port"] = args.metrics_port
    if getattr(args, "metrics_host", None):
        overrides.setdefault("worker", {})["metrics_host"] = args.metrics_host
    if getattr(args, "policy", None):
        overrides["policy"] = {"name": args.policy, "params": _params(args.policy_param or [])}
    return load_settings(getattr(args, "config", None), overrides)


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidValue("--policy-param", pair, "expected key=value")
        try:
            params[key] = float(value)
        except ValueError:
            params[key] = value
    return params


def _serve(main: Callable[[], Coroutine[Any, Any, int]], on_stop: Callable[[], None]) -> int:
    """Run ``main`` on a fresh loop; the first SIGINT/SIGTERM asks for a graceful stop, the second exits."""

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        hits = 0

        def handle(signame: str) -> None:
            nonlocal hits
            hits += 1
            if hits > 1:
                log.error("second %s: exiting without waiting", signame)
                os._exit(130)
            log.info("%s received: finishing the in-flight batch, then stopping", signame)
            on_stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, handle, sig.name)
        return await main()

    return asyncio.run(runner())


# --- commands ----------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from battery_worker.kafka.worker import Worker

    settings = _settings(args)
    port = settings.worker.metrics_port
    activity = None
    if port is not None:
        from battery_worker.metrics import SiteActivity

        activity = SiteActivity()
    worker = Worker(settings, on_handled=activity)

    async def main() -> int:
        server = None
        if port is not None:
            from battery_worker.ops_server import OpsServer

            server = await OpsServer(worker, settings.worker.metrics_host, port, activity).start()
        try:
            await worker.run(max_messages=args.max_messages, idle_timeout_s=args.idle_timeout)
        finally:
            if server is not None:
                await server.close()
        return 0

    return _serve(main, worker.stop)


def cmd_demo(args: argparse.Namespace) -> int:
    from battery_worker.demo import run_demo

    return run_demo(args)


def cmd_feed(args: argparse.Namespace) -> int:
    from battery_worker.kafka.clients import make_producer
    from battery_worker.kafka.feed import publish_ticks
    from battery_worker.kafka.topics import prepare_topics
    from battery_worker.pricefiles import load_ticks

    settings = _settings(args)
    ticks = load_ticks(
        args.file,
        timestamp_column=args.timestamp_column,
        price_column=args.price_column,
        hash_price=args.hash_price,
        token_price=args.token_price,
    )
    if args.limit is not None:
        ticks = ticks[: args.limit]

    async def main() -> int:
        if settings.topics.create:
            await prepare_topics(settings)
        producer = make_producer(settings.kafka)
        await producer.start()
        try:
            sent = await publish_ticks(
                producer, args.topic or settings.topics.prices, ticks, site_id=args.site, rate_per_s=args.rate
            )
        finally:
            await producer.stop()
        print(f"published {sent} ticks from {args.file} to {args.topic or settings.topics.prices}")
        return 0

    return _serve(main, lambda: None)


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from battery_worker.kafka.inspect import latest_status

    settings = _settings(args)
    statuses = asyncio.run(latest_status(settings))
    if args.json:
        import orjson

        sys.stdout.buffer.write(
            orjson.dumps({site: s.model_dump(mode="json") for site, s in sorted(statuses.items())})
        )
        sys.stdout.write("\n")
        return 0
    from datetime import UTC, datetime

    from battery_worker.kafka.overview import age_text, group_lag, last_actions

    async def overview() -> tuple[dict[str, Any], dict[int, Any]]:
        actions = await last_actions(settings, args.actions_tail)
        lags = await group_lag(settings, settings.worker.group_id)
        return actions, {lag.partition: lag for lag in lags}

    actions, lags = asyncio.run(overview())
    now = datetime.now(UTC)
    table = Table(title=f"battery status ({settings.topics.status}, group {settings.worker.group_id})")
    columns = ("site", "charge %", "energy MWh", "last action", "power MW", "last tick", "tick age")
    for column in (*columns, "partition", "lag", "ticks", "stale", "net value", "policy"):
        table.add_column(column)
    for site, status in sorted(statuses.items()):
        action = actions.get(site)
        lag = None if action is None else lags.get(action.source.partition)
        table.add_row(
            site,
            f"{status.charge_level_percent:.1f}",
            f"{status.available_energy_mwh:.2f}",
            "-" if action is None else action.action.value,
            "-" if action is None else f"{action.power_mw:.2f}",
            "-" if status.last_tick_at is None else status.last_tick_at.isoformat(),
            "-" if status.last_tick_at is None else age_text((now - status.last_tick_at).total_seconds()),
            "-" if action is None else str(action.source.partition),
            "-" if lag is None else str(lag.lag),
            str(status.ticks_applied),
            str(status.ticks_stale),
            f"{status.net_value:,.2f}",
            status.policy,
        )
    console = Console(width=max(160, Console().width))
    console.print(table if statuses else "no status published yet")
    if lags:
        total = sum(lag.lag for lag in lags.values())
        parts = ", ".join(f"{p}: {lag.lag}" for p, lag in sorted(lags.items()))
        group = settings.worker.group_id
        console.print(f"lag of group {group} on {settings.topics.prices}: {total} ({parts})", soft_wrap=True)
    return 0


def cmd_history_export(args: argparse.Namespace) -> int:
    import json

    from battery_worker.kafka.inspect import site_history
    from battery_worker.seed_api import write_json_atomically

    settings = _settings(args)
    records = asyncio.run(site_history(settings, args.site))
    entries = [record.model_dump(mode="json") for record in records]
    write_json_atomically(Path(args.out), json.dumps(entries, indent=2))
    print(f"wrote {len(entries)} history entries of site {args.site} to {args.out}")
    return 0


# --- parser ------------------------------------------------------------------------------------------------


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: env KAFKA_BOOTSTRAP_SERVERS, then the config, then "
        "localhost:9092)",
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (see README: Configuration)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="battery-worker", description="Dispatch a virtual battery against live energy prices over Kafka."
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("BATTERY_WORKER_LOG_LEVEL", "INFO"), help="default: INFO"
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "text", "auto"),
        default=os.environ.get("BATTERY_WORKER_LOG_FORMAT", "auto"),
        help="json lines, text, or auto: text on a terminal, else json (env BATTERY_WORKER_LOG_FORMAT)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the worker: prices in, actions and status out")
    _connection(run)
    run.add_argument("--group-id", help="consumer group (default battery-worker)")
    run.add_argument("--policy", help="policy name (threshold, ...)")
    run.add_argument("--policy-param", action="append", metavar="KEY=VALUE", help="policy parameter")
    run.add_argument("--max-messages", type=int, help="stop after this many input records")
    run.add_argument("--idle-timeout", type=float, metavar="SECONDS", help="stop after this long idle")
    run.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve /metrics, /health, /ready and /live on PORT"
    )
    run.add_argument("--metrics-host", metavar="ADDRESS", help="address of that server (default 127.0.0.1)")
    run.set_defaults(func=cmd_run)

    demo = commands.add_parser(
        "demo", help="start the embedded broker, feed real ERCOT prices, show the worker's decisions"
    )
    _connection(demo)
    demo.add_argument("--follow", action="store_true", help="keep running after the sample (Ctrl+C stops)")
    demo.add_argument("--rate", type=float, default=60.0, help="ticks per second fed (default 60)")
    demo.add_argument("--file", type=Path, help="price file to feed instead of the bundled sample")
    demo.set_defaults(func=cmd_demo)

    feed = commands.add_parser("feed", help="publish a price file (CSV or MARA JSON) to the prices topic")
    _connection(feed)
    feed.add_argument("file", type=Path)
    feed.add_argument("--site", help="site id used as the message key")
    feed.add_argument("--rate", type=float, help="ticks per second (default: as fast as possible)")
    feed.add_argument("--topic", help="topic (default: the prices topic of the settings)")
    feed.add_argument("--limit", type=int, help="publish only the first N ticks")
    feed.add_argument("--timestamp-column", help="CSV column of the timestamp")
    feed.add_argument("--price-column", help="CSV column of the energy price")
    feed.add_argument("--hash-price", type=float, default=0.0, help="hash price for files without one")
    feed.add_argument("--token-price", type=float, default=0.0, help="token price for files without one")
    feed.set_defaults(func=cmd_feed)

    status = commands.add_parser("status", help="latest battery status per site, read from the broker")
    _connection(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--group-id", help="consumer group whose lag is shown (default battery-worker)")
    status.add_argument(
        "--actions-tail",
        type=int,
        default=10_000,
        metavar="N",
        help="records per partition of battery.actions searched for each site's last action (default 10000)",
    )
    status.set_defaults(func=cmd_status)

    history = commands.add_parser("history", help="a site's operation history")
    history_commands = history.add_subparsers(dest="history_command", required=True, metavar="COMMAND")
    export = history_commands.add_parser("export", help="write a site's history as JSON (save_history)")
    _connection(export)
    export.add_argument("--site", required=True)
    export.add_argument("--out", required=True, type=Path)
    export.set_defaults(func=cmd_history_export)

    for module in ("battery_worker.cli_backtest", "battery_worker.cli_replay"):
        try:
            extension = __import__(module, fromlist=["add_parser"])
        except ImportError:
            continue
        extension.add_parser(commands)
    return parser


def _stop_before_start(signum: int, frame: object) -> None:
    """SIGTERM while still starting: nothing is in flight yet, so leaving at once is the graceful stop."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_before_start)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging(args.log_level, args.log_format)
        code: int = args.func(args)
    except InvalidValue as error:
        print(f"battery-worker: error: {error}", file=sys.stderr)
        return 2
    except BatteryWorkerError as error:
        print(f"battery-worker: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
