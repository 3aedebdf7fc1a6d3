"""What the commands share: settings from flags, argument types, running a one-shot command, checks.

Only the standard library is imported at module level (as in :mod:`battery_worker.cli.main`): pydantic,
aiokafka and the settings are imported by the functions that need them, after the signal handlers are set.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from battery_worker.errors import InvalidConfig

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from battery_worker.settings import Settings
    from battery_worker.ticks import PriceTick

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
T = TypeVar("T")


def counted(count: int, noun: str) -> str:
    """``1 tick``, ``2 ticks``, ``1,200 ticks``: a count and its noun in the right number."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def command_settings(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Settings:
    """Settings with this command's flags applied on top of the file and the environment.

    ``--policy-param`` without ``--policy`` changes the configured policy's parameters (the flags win
    over the file's, key by key); with ``--policy NAME`` of another policy, only the flags' parameters.
    """
    from battery_worker.settings import PolicySettings, load_settings, policy_over

    overrides: dict[str, Any] = dict(extra or {})
    if getattr(args, "bootstrap_servers", None) is not None:
        overrides.setdefault("kafka", {})["bootstrap_servers"] = args.bootstrap_servers
    if getattr(args, "group_id", None) is not None:
        overrides.setdefault("worker", {})["group_id"] = args.group_id
    # The monitor's server is its own (monitor.*): a worker and a monitor reading one file or environment
    # would otherwise both bind worker.metrics_port.
    serving = "monitor" if getattr(args, "command", None) == "monitor" else "worker"
    if getattr(args, "metrics_port", None) is not None:
        overrides.setdefault(serving, {})["metrics_port"] = args.metrics_port
    if getattr(args, "metrics_host", None) is not None:
        overrides.setdefault(serving, {})["metrics_host"] = args.metrics_host
    if getattr(args, "processing_guarantee", None) is not None:
        overrides.setdefault("worker", {})["processing_guarantee"] = args.processing_guarantee
    config = getattr(args, "config", None)
    name, pairs = getattr(args, "policy", None), getattr(args, "policy_param", None) or []
    flagged = policy_params(pairs)

    def choose(configured: PolicySettings) -> PolicySettings:
        return policy_over(configured, name, flagged)

    # Not as overrides: they are deep-merged with the file's parameters, of another policy too.
    return load_settings(config, overrides, choose_policy=choose if (name or pairs) else None)


def policy_params(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` flags into policy parameters: numbers as numbers, ``true``/``false`` as booleans.

    Non-finite numbers are refused here; names and types are checked by the policy itself.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        params[_param_name(pair, key, sep)] = policy_value(pair, text)
    return params


def _param_name(pair: str, key: str, sep: str) -> str:
    if not sep or not key.strip():
        raise InvalidConfig("--policy-param", pair, "expected KEY=VALUE, e.g. charge_below=25")
    return key.strip()


def policy_value(pair: str, text: str) -> Any:
    """One parameter value: a finite number, a boolean, or else the text (the policy decides)."""
    stripped = text.strip()
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    try:
        number = float(stripped)
    except ValueError:
        return stripped
    if not math.isfinite(number):
        raise InvalidConfig("--policy-param", pair, "must be a finite number")
    return int(number) if stripped.lstrip("+-").isdigit() else number


def run_once(main: Coroutine[Any, Any, T]) -> T:
    """A one-shot command's coroutine; SIGTERM, SIGINT or SIGHUP cancels it (its clients close in their
    ``finally``) and :class:`StoppedBySignal` is raised."""
    import asyncio

    async def runner() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(main)
        stopped_by: list[int] = []

        def stop(signum: int) -> None:
            stopped_by.append(signum)
            task.cancel()

        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop, sig)
        try:
            return await task
        except asyncio.CancelledError:
            raise StoppedBySignal(stopped_by[0] if stopped_by else signal.SIGTERM) from None

    return asyncio.run(runner())


class StoppedBySignal(Exception):
    """A one-shot command was stopped by a signal: exit 128 + ``signum`` with one line (``detail``: what
    it had done), as ``cli.main.LEAVE_NO_RESULT_WHEN_STOPPED`` says."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.detail = ""


def stdout_console(**options: Any) -> Console:
    """rich's Console on stdout, whose reader leaving (``| head``) is a ``BrokenPipeError`` as for
    ``print``: rich's own answer is exit 1, which says the job failed (``status | head -1`` exited 1 where
    ``status --json | head -c 10`` exited 141); :func:`battery_worker.cli.main.main` ends it quietly with
    128 + SIGPIPE, as Unix tools do."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return _Console(**options)


_CONTROL = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff]"
)
"""C0 and C1 controls, and the invisible format characters that reorder or hide text (bidirectional
overrides and isolates, zero widths, line and paragraph separators): a right-to-left override turned
``evil\\u202etxt.exe`` around (a review of the diff)."""


def terminal_text(text: str, style: str = "") -> Text:
    """Text read from a topic (a site id, a record), shown as written: rich markup in it is not read
    (``[bold red]`` was), and control characters are shown as ``\x1b``, not sent (an escape sequence in a
    site id cleared the screen and set the window title of whoever ran ``status``: a review run). Anyone
    who may write to ``prices`` names sites."""
    from rich.text import Text

    return Text(_CONTROL.sub(_escaped, text), style=style)


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def check_output_file(flag: str, path: Path | None) -> None:
    """An output file that cannot be written is a bad flag (exit 2), said before any work is done: a
    backtest or a replay of a year finds it only at its end otherwise, its result lost.

    The file's missing folders are made when it is written, so the nearest one that exists must be a
    folder this process may write in."""
    if path is None:
        return
    if path.is_dir():
        raise InvalidConfig(flag, str(path), "is a directory; give a file name")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InvalidConfig(flag, str(path), f"{folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidConfig(flag, str(path), f"no permission to write in {folder}")


def price_file_ticks(
    args: argparse.Namespace, path: Path, carbon_file: Path | None = None
) -> list[PriceTick]:
    """A price file read with the command's column and price flags (``feed`` and ``backtest`` share them);
    what the file's reading notes (times read as UTC for want of an offset) is said on stderr."""
    from battery_worker.pricefiles import PriceFileError, load_ticks

    notes: list[str] = []
    try:
        ticks = load_ticks(
            path,
            timestamp_column=args.timestamp_column,
            price_column=args.price_column,
            hash_price=args.hash_price,
            token_price=args.token_price,
            carbon_file=carbon_file,
            notes=notes,
        )
    except PriceFileError as error:  # named by the flag that gave it, if a flag gave it
        flag = {"hash_price": "--hash-price", "token_price": "--token-price"}.get(error.field)
        if flag is None or getattr(args, error.field) is None:  # the file's own cell (a review: an empty
            raise  # hash_price cell of a MARA file was said to be '--hash-price', a flag never given)
        raise PriceFileError(flag, error.value, error.problem) from None
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return ticks


# --- argument types ----------------------------------------------------------------------------------------


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def _number(*, positive: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be above 0")
        return value

    parse.__name__ = "positive number" if positive else "number"
    return parse


def _site_id(text: str) -> str:
    from battery_worker.ticks import site_id_problem

    problem = site_id_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _iso_time(text: str) -> Any:
    from datetime import datetime

    from battery_worker.battery import as_utc

    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time such as 2023-08-01T12:00") from None


def _cap(text: str) -> float:
    """A positive number, or ``none`` (infinity: no cap, which lifts a chemistry preset's)."""
    if text.strip().lower() in ("none", "inf"):
        return float("inf")
    parsed: float = POSITIVE_NUMBER(text)
    return parsed


_cap.__name__ = "positive number or none"

POSITIVE_INT = _whole(1)
NON_NEGATIVE_INT = _whole(0)
PORT = _whole(0)
POSITIVE_NUMBER = _number(positive=True)
NUMBER = _number()
SITE_ID = _site_id
CAP = _cap


def TOPIC(text: str) -> str:
    from battery_worker.settings import topic_name_problem

    problem = topic_name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


ISO_TIME = _iso_time


def add_connection(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """``--bootstrap-servers`` and ``--config``; ``default`` says what an unset address means instead of
    the settings' (the demo's own embedded broker)."""
    from battery_worker.settings import BOOTSTRAP_VARIABLES  # pydantic: not before the signal handlers

    then = default or "the config, then localhost:9092"
    variables = ", then ".join(BOOTSTRAP_VARIABLES)
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help=f"Kafka bootstrap servers (default: env {variables}, then {then})",
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (see docs/configuration.md)")
