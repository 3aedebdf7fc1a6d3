"""``battery-worker replay``: the auditor's command. Exit 0 when every decision is reproduced, 1 otherwise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from battery_worker.cli.common import (
    ISO_TIME,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    SITE_ID,
    command_settings,
    refuse_directory,
    run_once,
)
from battery_worker.kafka.tools.replay import ReplayOptions, replay


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "replay",
        help="recompute every decision from the prices log and compare with what was recorded",
        description="Re-read prices with a fresh state and the current (or given) policy config, recompute "
        "every decision and compare it with battery.actions. Never writes to the live topics.",
    )
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="as for run")
    parser.add_argument("--config", type=Path, help="TOML settings (the policy config to replay with)")
    parser.add_argument("--policy", help="policy name to replay with (what-if)")
    parser.add_argument("--policy-param", action="append", metavar="KEY=VALUE", help="policy parameter")
    parser.add_argument(
        "--site",
        type=SITE_ID,
        help="replay and compare only this site (only its home partition of prices is read)",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=NON_NEGATIVE_INT, help="start every partition at this offset")
    start.add_argument(
        "--from-time", type=ISO_TIME, help="start at the first record at/after this ISO time (UTC if no zone)"
    )
    parser.add_argument("--out", type=Path, help="write the recomputed actions as JSON lines")
    parser.add_argument("--output-prefix", help="publish the recomputed events to PREFIX.<topic> topics")
    parser.add_argument(
        "--processes",
        type=POSITIVE_INT,
        default=1,
        help="replay the prices partitions in N processes (not with --out or --output-prefix)",
    )
    parser.add_argument("--progress", action="store_true", help="show progress even when not on a terminal")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    refuse_directory("--out", args.out)
    options = ReplayOptions(
        site=args.site,
        from_offset=args.from_offset,
        from_time=args.from_time,
        out_file=args.out,
        output_prefix=args.output_prefix,
        processes=args.processes,
    )
    console = Console(stderr=True)
    show = args.progress or console.is_terminal
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), console=console, disable=not show
    ) as bar:
        task = bar.add_task("replaying prices", total=None)

        def advance(done: int) -> None:
            bar.update(task, description=f"replayed {done:,} records")

        result = run_once(replay(settings, options, advance))
    report, out = result.report, Console()
    totals = report.totals()
    out.print(
        f"replayed {result.records_read:,} records in {result.seconds:.2f} s "
        f"({result.records_per_second:,.0f}/s): {result.counters.applied} applied, "
        f"{result.counters.stale} stale, {result.counters.rejected} rejected",
        highlight=False,
    )
    out.print(
        f"compared {totals.ticks:,} decisions over {len(report.sites)} sites: {totals.matched:,} identical, "
        f"{totals.diverged:,} diverged, {totals.reworded:,} reworded only, "
        f"{totals.missing:,} recorded but not recomputed, "
        f"{totals.extra:,} recomputed but not recorded",
        highlight=False,
    )
    for topic in result.absent_topics:
        out.print(f"topic {topic} does not exist: nothing was recorded there to compare", highlight=False)
    history = result.history.totals()
    out.print(
        f"history: {history.ticks:,} records compared, {history.matched:,} identical, "
        f"{history.diverged + history.reworded + history.missing + history.extra:,} different",
        highlight=False,
    )
    for _, site in sorted(report.sites.items()):
        if site.first is not None:
            out.print(site.first.describe(), highlight=False)
    if result.identical:
        out.print("replay identical: every recorded decision was reproduced", highlight=False)
        return 0
    print("replay diverged", file=sys.stderr)
    return 1
