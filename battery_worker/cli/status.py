"""``status`` and ``history export``: what the worker published, read back from its topics.

Only the standard library is imported at module level (as in :mod:`battery_worker.cli.main`): rich, pydantic
and aiokafka are imported by the commands, after the signal handlers are set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from battery_worker.cli.common import (
    check_output_file,
    command_settings,
    run_once,
    stdout_console,
    terminal_text,
)
from battery_worker.errors import InvalidConfig

if TYPE_CHECKING:
    from battery_worker.events import BatteryStatus


def money_text(value: float | None) -> str:
    """Money as the table shows it; "-" for a status written before wear was published (version 2)."""
    return "-" if value is None else f"{value:,.2f}"


def emissions_text(status: BatteryStatus) -> str:
    """Net tonnes CO2eq and the coverage; "-" for a version 1 status (no emissions counted) and where no
    step had an intensity: unknown, not zero."""
    counted = status.emissions
    if counted is None or counted.steps == 0 or counted.coverage == 0:
        return "-"
    return f"{counted.total_net_kg / 1000:+,.2f} ({100 * counted.coverage:.0f}%)"


def site_emissions_text(status: BatteryStatus) -> str:
    """The whole site's tonnes CO2eq (its grid import), over the same steps as the net; "-" as above."""
    counted = status.emissions
    if counted is None or counted.steps == 0 or counted.coverage == 0:
        return "-"
    return f"{counted.total_site_kg / 1000:,.2f}"


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from battery_worker.kafka.tools.inspect import latest_status

    settings = command_settings(args)
    statuses = run_once(latest_status(settings))
    missing: list[str] = []
    if args.site:  # a fleet's status, one site or a few (a fleet review: 20 sites were 60 wrapped lines)
        missing = [site for site in dict.fromkeys(args.site) if site not in statuses]
        statuses = {site: status for site, status in statuses.items() if site in args.site}
        for site in missing:
            print(
                f"battery-worker status: no status of site {site!r} in {settings.topics.status}",
                file=sys.stderr,
            )
    code = 1 if missing else 0
    if args.site and not statuses and not args.json:  # each said missing: not "no status published yet"
        return code
    if args.json:
        import orjson

        # Dumped as the worker dumps its events (orjson: "+00:00", not pydantic's "Z"), so a warehouse that
        # joins these rows to the topic's by string finds them (a data engineer's review).
        sys.stdout.buffer.write(orjson.dumps({site: s.model_dump() for site, s in sorted(statuses.items())}))
        sys.stdout.write("\n")
        return code
    from datetime import UTC, datetime

    from battery_worker.kafka.tools.overview import age_text, group_lag, last_actions

    async def overview() -> tuple[dict[str, Any], dict[int, Any]]:
        actions = await last_actions(settings, args.actions_tail)
        lags = await group_lag(settings, settings.worker.group_id)
        return actions, {lag.partition: lag for lag in lags}

    actions, lags = run_once(overview())
    now = datetime.now(UTC)
    title = f"battery status ({settings.topics.status}, group {settings.worker.group_id})"
    columns = (
        "site",
        "charge %",
        "energy MWh",
        "capacity MWh",
        "last action",
        "power MW",
        "last tick",
        "tick age",
    )
    worn = any(status.wear_cost for status in statuses.values())  # a wear cost priced: say what it took
    value = ("net value", "wear", "after wear") if worn else ("net value",)
    more = ("partition", "lag", "ticks", "stale", *value, "net tCO2 (cov.)", "site tCO2", "policy")
    rows = []
    for site, status in sorted(statuses.items()):
        action = actions.get(site)
        lag = None if action is None else lags.get(action.source.partition)
        rows.append(
            (
                site,
                f"{status.charge_level_percent:.1f}",
                f"{status.available_energy_mwh:.2f}",
                f"{status.capacity_mwh:.2f}",
                "-" if action is None else action.action.value,
                "-" if action is None else f"{action.power_mw:.2f}",
                "-" if status.last_tick_at is None else status.last_tick_at.isoformat(),
                "-" if status.last_tick_at is None else age_text((now - status.last_tick_at).total_seconds()),
                "-" if action is None else str(action.source.partition),
                "-" if lag is None else str(lag.lag),
                str(status.ticks_applied),
                str(status.ticks_stale),
                f"{status.net_value:,.2f}",
                *((money_text(status.wear_cost), money_text(status.net_value_after_wear)) if worn else ()),
                emissions_text(status),
                site_emissions_text(status),
                status.policy,
            )
        )
    table = Table(*columns, *more, title=title)
    for row in rows:
        table.add_row(*(terminal_text(cell) for cell in row))
    console = stdout_console()
    width = Console(width=100_000).measure(table).maximum
    if not console.is_terminal:  # a pipe, a file: each row on one line, however wide
        console = stdout_console(width=max(80, width), soft_wrap=True)
    if not statuses:
        console.print("no status published yet")
    elif width <= console.width:
        console.print(table)
    else:  # a terminal narrower than the table: a site a paragraph, every field named, nothing cut
        console.print(title, highlight=False)
        names = (*columns, *more)[1:]
        for row in rows:
            fields = "; ".join(f"{name} {value}" for name, value in zip(names, row[1:], strict=True))
            console.print(
                terminal_text(row[0], "bold"), terminal_text(f": {fields}"), sep="", highlight=False
            )
    if lags:
        total = sum(lag.lag for lag in lags.values())
        parts = ", ".join(f"{p}: {lag.lag}" for p, lag in sorted(lags.items()))
        group = settings.worker.group_id
        lag_line = f"lag of group {group} on {settings.topics.prices}: {total} ({parts})"
        if all(lag.committed is None for lag in lags.values()):  # a typo read as the whole topic's lag
            lag_line += (
                f" (group {group} has committed nothing on {settings.topics.prices}: is it the workers'?)"
            )
        console.print(lag_line, soft_wrap=True, highlight=False)
    return code


def cmd_history_export(args: argparse.Namespace) -> int:
    import orjson

    from battery_worker.kafka.tools.inspect import site_history
    from battery_worker.outputs import write_atomically

    settings = command_settings(args)
    check_output_file("--out", args.out)
    if args.out.suffix.lower() not in ("", ".json"):  # hist.csv was written as JSON, said "wrote" and 0
        raise InvalidConfig("--out", str(args.out), "history export writes a JSON array; name the file .json")
    if not args.out.absolute().parent.is_dir():
        raise InvalidConfig("--out", str(args.out), "its folder does not exist")
    records = run_once(site_history(settings, args.site))
    entries = [record.model_dump() for record in records]  # dumped below as the worker dumps its events
    if not entries:  # a mistyped site id, or another topic: a script given an empty file and 0 went on
        print(
            f"battery-worker history: no history of site {args.site!r} in {settings.topics.history}; "
            f"{args.out} not written",
            file=sys.stderr,
        )
        return 1
    write_atomically(Path(args.out), orjson.dumps(entries, option=orjson.OPT_INDENT_2))
    entries_text = f"{len(entries):,} history {'entry' if len(entries) == 1 else 'entries'}"
    print(f"wrote {entries_text} of site {args.site} to {args.out}")
    return 0
