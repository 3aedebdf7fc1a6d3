"""``battery-worker backtest FILE``: a policy over a price file, against the perfect-foresight optimum.

The run goes through :func:`battery_worker.dispatch.dispatch` (the worker's own path). It prints the value,
the share of the optimum, cycles and energy lost (per month with ``--months``), writes a PNG (``--png``) and,
with ``--summary OUT.json``, a JSON summary whose top level is the first policy's ``policy``, ``value``,
``optimum_value`` and ``capture_ratio`` (with ``--compare``, every policy is listed under ``policies``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from battery_worker.backtest.engine import BacktestRun, BacktestSummary, backtest, optimum_for
from battery_worker.backtest.report import month_table, summary_table, write_png
from battery_worker.battery import BatteryConfig
from battery_worker.cli.common import NUMBER, policy_value, refuse_directory
from battery_worker.errors import BatteryWorkerError, InvalidConfig
from battery_worker.policies import POLICIES, make_policy
from battery_worker.pricefiles import load_ticks


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backtest",
        help="run a policy over a price file and compare it with the perfect-foresight optimum",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="price file: MARA JSON/CSV or a CSV with timestamp and price")
    parser.add_argument("--timestamp-column", help="CSV column holding the timestamp")
    parser.add_argument("--price-column", help="CSV column holding the energy price")
    parser.add_argument(
        "--policy", default="mpc", help=f"policy: {', '.join(sorted(POLICIES))} (default mpc)"
    )
    parser.add_argument(
        "--policy-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="policy parameter (repeatable); with --compare, POLICY.KEY=VALUE sets one policy's",
    )
    parser.add_argument(
        "--compare",
        nargs="?",
        const=",".join(POLICIES),
        metavar="NAMES",
        help="run several policies side by side: comma-separated names (all when given without names)",
    )
    battery = BatteryConfig()
    parser.add_argument("--capacity-mwh", type=NUMBER, default=battery.capacity_mwh)
    parser.add_argument("--max-rate-mw", type=NUMBER, default=battery.max_charge_rate_mw, help="both ways")
    parser.add_argument("--efficiency", type=NUMBER, default=battery.efficiency, help="round trip, 0-1")
    parser.add_argument("--initial-charge-percent", type=NUMBER, default=battery.initial_charge_percent)
    parser.add_argument("--png", type=Path, default=Path("backtest.png"), help="chart (default backtest.png)")
    parser.add_argument("--no-png", action="store_true", help="do not draw the chart")
    parser.add_argument("--summary", type=Path, metavar="OUT.json", help="write a JSON summary here")
    parser.add_argument("--months", action="store_true", help="print per-month figures")
    parser.add_argument("--progress", action="store_true", help="show a progress bar even when not a tty")
    parser.set_defaults(func=run)


def parse_params(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``KEY=VALUE`` pairs into params per policy (``""`` for unqualified keys); values as for ``run``."""
    params: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidConfig("--policy-param", pair, "expected KEY=VALUE")
        owner, _dot, name = key.strip().rpartition(".")
        params.setdefault(owner, {})[name] = policy_value(pair, text)
    return params


def run(args: argparse.Namespace) -> int:
    refuse_directory("--png", None if args.no_png else args.png)
    refuse_directory("--summary", args.summary)
    names = [n.strip() for n in args.compare.split(",") if n.strip()] if args.compare else [args.policy]
    params = parse_params(args.policy_param)
    for owner in params:
        if owner and owner not in names:
            raise InvalidConfig("--policy-param", owner, f"not among the policies run ({', '.join(names)})")
    policies = [make_policy(name, {**params.get("", {}), **params.get(name, {})}) for name in names]
    config = BatteryConfig(
        capacity_mwh=args.capacity_mwh,
        max_charge_rate_mw=args.max_rate_mw,
        max_discharge_rate_mw=args.max_rate_mw,
        efficiency=args.efficiency,
        initial_charge_percent=args.initial_charge_percent,
    )
    ticks = load_ticks(args.file, timestamp_column=args.timestamp_column, price_column=args.price_column)
    if not ticks:
        raise InvalidConfig("file", str(args.file), "holds no price ticks")
    optimum = optimum_for(ticks, config)
    runs: list[BacktestRun] = []
    summaries: list[BacktestSummary] = []
    show = args.progress or sys.stderr.isatty()
    for policy in policies:
        with _progress(show, f"{policy.name}", len(ticks)) as advance:
            run_, summary = backtest(ticks, config, policy, optimum=optimum, on_tick=advance)
        runs.append(run_)
        summaries.append(summary)
    print(f"{args.file.name}: {summaries[0].ticks} ticks, {summaries[0].start} .. {summaries[0].end}")
    print(summary_table(summaries))
    if args.months:
        for summary in summaries:
            print()
            print(month_table(summary))
    if not args.no_png:
        write_png(args.png, runs, optimum, config, title=f"{args.file.name}: policies against the optimum")
        print(f"chart: {args.png}")
    if args.summary is not None:
        data = summaries[0].to_json()
        data["file"] = str(args.file)
        if len(summaries) > 1:
            data["policies"] = [s.to_json() for s in summaries]
        args.summary.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"summary: {args.summary}")
    return 0


class _progress:
    """A rich progress bar on stderr when ``show``, else a no-op; yields the per-tick callback."""

    def __init__(self, show: bool, label: str, total: int) -> None:
        self._show, self._label, self._total = show, label, total
        self._bar: Any = None

    def __enter__(self) -> Callable[[], None] | None:
        if not self._show:
            return None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task(self._label, total=self._total)
        bar = self._bar
        return lambda: bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m battery_worker.cli.backtest``); errors are one line."""
    parser = argparse.ArgumentParser(prog="battery-worker")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["backtest", *(sys.argv[1:] if argv is None else argv)])
    try:
        code: int = args.func(args)
    except BatteryWorkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
