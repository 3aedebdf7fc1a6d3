"""``battery-worker``: run the worker, try it on the embedded broker, feed prices, inspect what it did.

Every command has ``--help``. A failure is one line on stderr, never a traceback. Exit codes: 0 done (or
``run``, ``monitor`` or ``demo`` stopped by SIGTERM, SIGINT or SIGHUP; the one-shot commands, which then
have no result, exit 128 + the signal's number), 1 the job could not be done (broker unreachable,
authentication or authorization refused, a topic misconfigured, a replay that diverged), 2 bad settings,
flags or input, 130 a second Ctrl+C.

Only the standard library is imported before :func:`main` has installed its signal handlers: a SIGTERM
that arrives while pydantic and aiokafka are still loading must be a clean stop, not a kill.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, get_args

from battery_worker.cli.common import (
    NUMBER,
    PORT,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    SITE_ID,
    STOP_SIGNALS,
    TOPIC,
    StoppedBySignal,
    add_connection,
    command_settings,
    counted,
    price_file_ticks,
    run_once,
)
from battery_worker.cli.status import cmd_history_export, cmd_status
from battery_worker.errors import BatteryWorkerError, InvalidConfig, InvalidValue

if TYPE_CHECKING:
    from battery_worker.settings import Settings
    from battery_worker.ticks import PriceTick

log = logging.getLogger("battery_worker")


def _serve(main: Callable[[], Coroutine[Any, Any, int]], on_stop: Callable[[], None], finishing: str) -> int:
    """Run ``main`` on a fresh loop; the first SIGINT/SIGTERM/SIGHUP asks for a graceful stop (the log says
    what is ``finishing``), the second exits at once."""
    import asyncio

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        hits = 0

        def handle(signame: str) -> None:
            nonlocal hits
            hits += 1
            if hits > 1:
                log.error("second %s: exiting without waiting", signame)
                os._exit(130)
            log.info("%s received: finishing %s, then stopping", signame, finishing)
            on_stop()

        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, handle, sig.name)
        return await main()

    return asyncio.run(runner())


# --- commands ----------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from battery_worker.kafka.worker import Worker

    settings = command_settings(args)
    port = settings.worker.metrics_port
    activity = None
    if port is not None:
        from battery_worker.ops.metrics import SiteActivity

        activity = SiteActivity()
    worker = Worker(settings, on_handled=activity)

    async def main() -> int:
        server = None
        if port is not None:
            from battery_worker.ops.server import OpsServer

            server = await OpsServer(worker, settings.worker.metrics_host, port, activity).start()
        try:
            await worker.run(max_messages=args.max_messages, idle_timeout_s=args.idle_timeout)
        finally:
            if server is not None:
                await server.close()
        return 0

    return _serve(main, worker.stop, "the in-flight batch")


def cmd_monitor(args: argparse.Namespace) -> int:
    from battery_worker.monitor.service import Monitor

    monitor_flags: dict[str, Any] = {
        name: value
        for name, value in (
            ("url", args.url),
            ("site", args.site),
            ("interval_s", args.interval),
            ("timeout_s", args.timeout),
        )
        if value is not None
    }
    if args.header:
        monitor_flags["headers_from_env"] = dict(_header_flag(pair) for pair in args.header)
    settings = command_settings(args, {"monitor": monitor_flags} if monitor_flags else None)
    if settings.monitor.url is None:
        raise InvalidConfig("monitor.url", None, "give --url or BATTERY_WORKER_MONITOR__URL")
    settings.monitor.headers()  # a variable unset is a bad setting (exit 2), said before connecting
    monitor = Monitor(settings)
    port = settings.monitor.metrics_port
    if port is None and settings.worker.metrics_port is not None:  # the setting it read before its own
        log.warning(
            "worker.metrics_port is set and monitor.metrics_port is not: the monitor serves no metrics "
            "(set monitor.metrics_port, BATTERY_WORKER_MONITOR__METRICS_PORT or --metrics-port)"
        )

    async def main() -> int:
        server = None
        if port is not None:
            from battery_worker.ops.monitor_server import MonitorServer

            server = await MonitorServer(monitor, settings.monitor.metrics_host, port).start()
        try:
            stats = await monitor.run(max_polls=args.max_polls)
        finally:
            if server is not None:
                await server.close()
        # A bounded run (--max-polls) none of whose polls went through did not do its job (a review's
        # script saw exit 0 with the API refusing every connection).
        return 1 if args.max_polls is not None and stats.polls and not stats.good_polls else 0

    return _serve(main, monitor.stop, "the poll in flight")


def _header_flag(pair: str) -> tuple[str, str]:
    name, sep, variable = pair.partition("=")
    if not sep or not name.strip() or not variable.strip():
        raise InvalidConfig(
            "--header", pair, "expected NAME=ENVIRONMENT_VARIABLE, e.g. X-Api-Key=MARA_API_KEY"
        )
    return name.strip(), variable.strip()


def cmd_demo(args: argparse.Namespace) -> int:
    from battery_worker.cli.demo import run_demo

    return run_demo(args)


def _warn_of_unpaid_machines(args: argparse.Namespace, settings: Settings, ticks: list[PriceTick]) -> None:
    """A market file has no hash or token price, so its ticks carry 0 for both unless the flags say
    otherwise; the ``site`` policy then curtails every machine. ``backtest --site`` asks for the prices;
    ``feed`` sent the zeros to a ``site`` worker without a word (a review run as the site operator)."""
    if args.hash_price is not None or args.token_price is not None:
        return
    if any(tick.hash_price or tick.token_price for tick in ticks):
        return
    site = args.site or "default"
    if settings.site_directory().setup(site).policy.name != "site":
        return
    print(
        f"battery-worker feed: {args.file} gives no hash or token price, so every tick carries 0 for both: "
        f"under the site policy of site {site} no machine earns and every one is curtailed "
        "(give --hash-price and --token-price)",
        file=sys.stderr,
    )


def cmd_feed(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from battery_worker.kafka.clients import make_producer
    from battery_worker.kafka.tools.feed import Acknowledged, publish_ticks
    from battery_worker.kafka.topics import prepare_topics

    settings = command_settings(args)
    ticks = price_file_ticks(args, args.file, args.carbon)
    if not ticks:
        raise InvalidConfig("file", str(args.file), "holds no price rows")
    if args.limit is not None:
        ticks = ticks[: args.limit]
    _refuse_ticks_the_worker_would_dead_letter(ticks, settings.worker.max_tick_ahead_s, args.rate)
    _warn_of_unpaid_machines(args, settings, ticks)

    topic = args.topic or settings.topics.prices
    acknowledged = Acknowledged()

    async def main() -> int:
        if settings.topics.create:
            await prepare_topics(settings, for_workers=False)
        producer = make_producer(settings.kafka)
        await producer.start()
        try:
            sent = await publish_ticks(
                producer, topic, ticks, site_id=args.site, rate_per_s=args.rate, acknowledged=acknowledged
            )
        finally:
            await producer.stop()  # delivers what was handed over before a stop or a failure
        print(f"published {counted(sent, 'tick')} from {args.file} to {topic}")
        return 0

    def published() -> str:
        return f"{acknowledged.count:,} of {len(ticks):,} ticks of {args.file} published to {topic}"

    try:
        return run_once(main())
    except StoppedBySignal as stopped:
        stopped.detail = published()
        raise
    except KafkaError as error:
        raise BatteryWorkerError(f"Kafka: {type(error).__name__}: {error}; {published()}") from error


def _refuse_ticks_the_worker_would_dead_letter(
    ticks: list[PriceTick], max_ahead_s: float, rate_per_s: float | None
) -> None:
    """A row a day ahead was published (exit 0), then dead-lettered by the worker; and the monitor took it
    for the last tick published. Refused before anything is sent; with ``--rate``, each tick against when
    it will be sent (a file played in real time may lie ahead of now)."""
    from battery_worker.ticks import seconds_too_far_ahead

    now_ms = int(time.time() * 1000)
    step_ms = 0.0 if rate_per_s is None else 1000 / rate_per_s
    ahead = [
        tick
        for index, tick in enumerate(ticks)
        if seconds_too_far_ahead(tick.timestamp, int(now_ms + index * step_ms), max_ahead_s) is not None
    ]
    if ahead:
        raise InvalidConfig(
            "file",
            f"{counted(len(ahead), 'tick')} from {ahead[0].timestamp.isoformat()}",
            f"stamped more than worker.max_tick_ahead_s={max_ahead_s:g} s after they would be published: the "
            "worker dead-letters them",
        )


# --- parser ------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with its error as one line (``battery-worker run: error: …``), exit 2, no usage dump; and no
    abbreviated flags (``--idle-time`` for ``--idle-timeout``): a script or a doc using one would break, or
    change meaning, the day a new flag shares its prefix (a contributor review). The commands' parsers are
    of this class too (argparse makes them of their parent's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    # pydantic: only once the signal handlers are set
    from battery_worker.settings import MonitorSettings, ProcessingGuarantee, WorkerSettings

    group = WorkerSettings.model_fields["group_id"].default  # the defaults the help names are the settings'
    worker_host = WorkerSettings.model_fields["metrics_host"].default
    monitor_host = MonitorSettings.model_fields["metrics_host"].default

    parser = _Parser(
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
    add_connection(run)
    run.add_argument("--group-id", help=f"consumer group (default {group})")
    run.add_argument("--policy", help="policy name (threshold, ...)")
    run.add_argument("--policy-param", action="append", metavar="KEY=VALUE", help="policy parameter")
    run.add_argument("--max-messages", type=POSITIVE_INT, help="stop after this many input records")
    run.add_argument(
        "--idle-timeout",
        type=POSITIVE_NUMBER,
        metavar="SECONDS",
        help=(
            "stop after this long with no records while partitions are assigned (exit 0), or without "
            "reaching Kafka at start (exit 1); a worker given no partition waits for one"
        ),
    )
    run.add_argument(
        "--metrics-port", type=PORT, metavar="PORT", help="serve /metrics, /health, /ready and /live on PORT"
    )
    run.add_argument(
        "--metrics-host", metavar="ADDRESS", help=f"address of that server (default {worker_host})"
    )
    run.add_argument(
        "--processing-guarantee",
        choices=get_args(ProcessingGuarantee),
        help="at-least-once (default) or exactly-once (Kafka transactions; not on the embedded broker)",
    )
    run.set_defaults(func=cmd_run)

    monitor = commands.add_parser(
        "monitor", help="poll a price API (MARA format) and publish each new tick once to the prices topic"
    )
    add_connection(monitor)
    monitor.add_argument("--url", help="the price API, http(s) (default: the monitor.url setting)")
    monitor.add_argument("--site", type=SITE_ID, help="site id used as the message key (default: default)")
    monitor.add_argument("--interval", type=POSITIVE_NUMBER, metavar="SECONDS", help="between polls (60)")
    monitor.add_argument("--timeout", type=POSITIVE_NUMBER, metavar="SECONDS", help="per request (10)")
    monitor.add_argument(
        "--header",
        action="append",
        metavar="NAME=ENVVAR",
        help="send header NAME with the value of environment variable ENVVAR (never logged); repeatable",
    )
    monitor.add_argument("--max-polls", type=POSITIVE_INT, help="stop after this many polls")
    monitor.add_argument(
        "--metrics-port", type=PORT, metavar="PORT", help="serve /metrics, /health, /ready and /live on PORT"
    )
    monitor.add_argument(
        "--metrics-host", metavar="ADDRESS", help=f"address of that server (default {monitor_host})"
    )
    monitor.set_defaults(func=cmd_monitor)

    demo = commands.add_parser(
        "demo", help="start the embedded broker, feed real ERCOT prices, show the worker's decisions"
    )
    add_connection(demo, default="the embedded broker, started for the demo")
    demo.add_argument("--follow", action="store_true", help="keep running after the sample (Ctrl+C stops)")
    demo.add_argument("--rate", type=POSITIVE_NUMBER, default=60.0, help="ticks per second fed (default 60)")
    demo.add_argument("--file", type=Path, help="price file to feed instead of the bundled sample")
    demo.add_argument(
        "--site",
        action="store_true",
        help="the site policy over a MARA price spike: machines curtailed and back, per tick",
    )
    demo.add_argument(
        "--live",
        action="store_true",
        help="through the price monitor: a local price API replays the file, the monitor polls it",
    )
    demo.set_defaults(func=cmd_demo)

    feed = commands.add_parser(
        "feed",
        help="publish a price file (CSV or MARA JSON) to the prices topic",
        description="Publish a price file (CSV or MARA JSON) to the prices topic, oldest tick first. "
        "Times without a UTC offset are UTC.",
    )
    add_connection(feed)
    feed.add_argument("file", type=Path)
    feed.add_argument("--site", type=SITE_ID, help="site id used as the message key (default: default)")
    feed.add_argument("--rate", type=POSITIVE_NUMBER, help="ticks per second (default: as fast as possible)")
    feed.add_argument("--topic", type=TOPIC, help="topic (default: the prices topic of the settings)")
    feed.add_argument("--limit", type=POSITIVE_INT, help="publish only the first N ticks")
    feed.add_argument("--timestamp-column", help="CSV column of the timestamp")
    feed.add_argument("--price-column", help="CSV column of the energy price")
    feed.add_argument("--hash-price", type=NUMBER, help="hash price for a market file, which has none (0)")
    feed.add_argument("--token-price", type=NUMBER, help="token price for a market file, which has none (0)")
    feed.add_argument(
        "--carbon", type=Path, metavar="FILE", help="grid carbon intensity, joined by timestamp"
    )
    feed.set_defaults(func=cmd_feed)

    status = commands.add_parser("status", help="latest battery status per site, read from the broker")
    add_connection(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--group-id", help=f"consumer group whose lag is shown (default {group})")
    status.add_argument(
        "--actions-tail",
        type=POSITIVE_INT,
        default=10_000,
        metavar="N",
        help="records per partition of battery.actions searched for each site's last action (default 10000)",
    )
    status.add_argument(
        "--site",
        action="append",
        type=SITE_ID,
        metavar="S",
        help="only this site (again for more); exit 1 if one has no status",
    )
    status.set_defaults(func=cmd_status)

    history = commands.add_parser("history", help="a site's operation history")
    history_commands = history.add_subparsers(dest="history_command", required=True, metavar="COMMAND")
    export = history_commands.add_parser("export", help="write a site's history as JSON (save_history)")
    add_connection(export)
    export.add_argument("--site", required=True, type=SITE_ID)
    export.add_argument("--out", required=True, type=Path)
    export.set_defaults(func=cmd_history_export)

    for module in ("battery_worker.cli.backtest", "battery_worker.cli.replay"):
        try:
            extension = __import__(module, fromlist=["add_parser"])
        except ImportError:
            continue
        extension.add_parser(commands)
    _take_global_options_after_the_command(parser)
    return parser


def _take_global_options_after_the_command(
    parser: argparse.ArgumentParser, options: list[argparse.Action] | None = None
) -> None:
    """``battery-worker run --log-format json`` as well as ``battery-worker --log-format json run``: the
    first said 'unrecognized arguments'. Given after the command, the option wins; not given there, it
    leaves the one before it (or its default) alone (``SUPPRESS``)."""
    if options is None:
        options = [a for a in parser._actions if set(a.option_strings) & set(_GLOBAL_OPTIONS_WITH_VALUES)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                for option in options:
                    command.add_argument(
                        *option.option_strings,
                        choices=option.choices,
                        default=argparse.SUPPRESS,
                        help=option.help,
                    )
                _take_global_options_after_the_command(command, options)


LEAVE_NO_RESULT_WHEN_STOPPED = ("backtest", "replay", "feed", "status", "history")
"""Commands whose result is their output: stopped, they have none (or, for ``feed``, part of it), so they
exit 128 + the signal's number with one line saying so; 0 would pass a script's check. The worker, the
monitor and the demo are services: a stop is their way to end, exit 0."""
_GLOBAL_OPTIONS_WITH_VALUES = ("--log-level", "--log-format")
_stopping_leaves_no_result: str | None = None
"""The command being started, if it is one of those."""


def command_of(argv: list[str]) -> str | None:
    """The command ``argv`` names, read before the parser is built (building it imports pydantic and every
    command's module, some 0.3 s): the first word that is neither an option nor a global option's value."""
    tokens = iter(argv)
    for token in tokens:
        if token in _GLOBAL_OPTIONS_WITH_VALUES:
            next(tokens, None)
        elif not token.startswith("-"):
            return token
    return None


def _stop_before_start(signum: int, frame: object) -> None:
    """A stop signal while still starting: nothing is in flight, so leaving at once is the graceful stop,
    exit 0, or for a command that leaves no result then, 128 + the signal (a backtest stopped in its first
    0.3 s exited 0 with no output, which a script reads as done).

    ``os._exit``, not ``SystemExit``: raised inside whatever code was running (an import, the event loop
    being set up), an exception can be caught and the stop lost; the commands' own handlers, installed
    with their event loop, replace this one before anything is sent or committed."""
    sys.stderr.flush()
    if _stopping_leaves_no_result is None:
        os._exit(0)
    line = f"battery-worker {_stopping_leaves_no_result}: stopped by {signal.Signals(signum).name}\n"
    os.write(2, line.encode())
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    global _stopping_leaves_no_result
    command = command_of(sys.argv[1:] if argv is None else argv)
    _stopping_leaves_no_result = command if command in LEAVE_NO_RESULT_WHEN_STOPPED else None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_before_start)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from battery_worker.ops.logs import setup_logging

        setup_logging(args.log_level, args.log_format)
        if _stopping_leaves_no_result is not None and logging.getLogger().level > logging.DEBUG:
            # A one-shot command's failure is its one line, which names the cause; aiokafka's retries
            # before it (a stalled broker: "Unable connect to node with id 111", a line every 3 s) are
            # the worker's to log, where they tell an operator what is happening meanwhile.
            logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        code: int = args.func(args)
    except InvalidValue as error:
        return _fail(2, str(error))
    except BatteryWorkerError as error:
        return _fail(1, str(error))
    except StoppedBySignal as stopped:
        if _stopping_leaves_no_result is None:
            return 0
        detail = f": {stopped.detail}" if stopped.detail else ""
        print(f"battery-worker {_stopping_leaves_no_result}: stopped by {stopped}{detail}", file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as Unix tools do on SIGPIPE
        _discard_stdout()
        return 128 + signal.SIGPIPE
    except OSError as error:  # a file that cannot be written, a port in use: the OS's reason, one line
        return _fail(1, f"{error.strerror or error} ({error.filename or type(error).__name__})")
    except Exception as error:
        from aiokafka.errors import KafkaError

        if isinstance(error, KafkaError):
            known = _known_kafka_error(args, error)
            return _fail(1, str(known) if known else f"Kafka: {type(error).__name__}: {error}")
        log.debug("unexpected error", exc_info=True)
        where = "battery-worker --log-level DEBUG COMMAND ... shows where"
        return _fail(1, f"unexpected {type(error).__name__}: {error} (a bug; {where})")
    return code


def _known_kafka_error(args: argparse.Namespace, error: Exception) -> Exception | None:
    """A refusal a command met, worded as the worker words it: whom the broker refused, and what rights
    the worker's principal needs (``status`` said only '[Error 29] TopicAuthorizationFailedError')."""
    from battery_worker.cli.common import command_settings
    from battery_worker.kafka.diagnose import typed

    try:
        return typed(error, command_settings(args).kafka)
    except Exception:  # settings that loaded a moment ago; if they no longer do, the plain line
        return None


def _discard_stdout() -> None:
    """Point stdout at /dev/null, or Python's exit flushes the rest of it into the closed pipe and fails."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _fail(code: int, message: str) -> int:
    print(f"battery-worker: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
