"""``battery-worker replay``: the auditor's command. Exit 0 when every decision is reproduced, 1 otherwise,
128 + the signal's number when stopped by SIGINT, SIGTERM or SIGHUP (no verdict)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from battery_worker.audit import Difference, Outside
from battery_worker.cli.common import (
    ISO_TIME,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    SITE_ID,
    StoppedBySignal,
    check_output_file,
    command_settings,
    counted,
    run_once,
    stdout_console,
    terminal_text,
)
from battery_worker.dispatch import DECISION_RULES
from battery_worker.errors import InvalidConfig
from battery_worker.kafka.tools.replay import Progress as ReplayProgress
from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.outputs import write_atomically

if TYPE_CHECKING:
    from battery_worker.audit import AuditReport, Divergence, SiteReport
    from battery_worker.kafka.tools.replay import ReplayResult
    from battery_worker.settings import Settings

LINE_EVERY_SECONDS = 10.0
"""Without a terminal and with ``--progress``: a line at least this often (and at every tenth done)."""


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
        "--from-time",
        type=ISO_TIME,
        help="start at the first record written at/after this ISO time (UTC if no zone): the Kafka record "
        "timestamp, when the tick was published, not the tick's own time",
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument(
        "--to-offset", type=NON_NEGATIVE_INT, help="stop every partition before this offset (not replayed)"
    )
    stop.add_argument(
        "--to-time",
        type=ISO_TIME,
        help="stop before the first record written at/after this ISO time (UTC if no zone): with the "
        "settings in force before a change, the stretch they decided",
    )
    parser.add_argument(
        "--changed-at",
        type=ISO_TIME,
        help="with --changed-config: when the workers' settings changed (ISO time, UTC if no zone); records "
        "written from then on are decided with the new settings, each site carrying its state over",
    )
    parser.add_argument(
        "--changed-config", type=Path, help="with --changed-at: the TOML settings in force from then on"
    )
    parser.add_argument("--out", type=Path, help="write the recomputed actions as JSON lines")
    parser.add_argument(
        "--report",
        type=Path,
        help="write the verdict and every figure printed as one JSON object, for a script",
    )
    parser.add_argument("--output-prefix", help="publish the recomputed events to PREFIX.<topic> topics")
    parser.add_argument(
        "--processes",
        type=POSITIVE_INT,
        default=1,
        help="replay the prices partitions in N processes (not with --out or --output-prefix)",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show progress even when not on a terminal (a line now and then)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    check_output_file("--out", args.out)
    check_output_file("--report", args.report)
    changed_settings = _changed_settings(args)
    options = ReplayOptions(
        site=args.site,
        from_offset=args.from_offset,
        from_time=args.from_time,
        to_offset=args.to_offset,
        to_time=args.to_time,
        changed_at=args.changed_at,
        changed_settings=changed_settings,
        out_file=args.out,
        output_prefix=args.output_prefix,
        processes=args.processes,
    )
    try:
        with _shown_progress(args.progress) as progress:
            result = run_once(replay(settings, options, progress))
    except StoppedBySignal as stopped:
        # Not 0, which says every decision was reproduced: a script reading the exit code must not take a
        # stopped audit for a passed one; nor one reading the report an earlier run left there.
        if args.report is not None:
            stopped_report = {"verdict": "stopped", "signal": str(stopped)}
            write_atomically(args.report, orjson.dumps(stopped_report, option=orjson.OPT_INDENT_2))
        print(f"battery-worker replay: stopped by {stopped} before it finished, no verdict", file=sys.stderr)
        return 128 + stopped.signum
    # Never wrapped (rich wraps at 80 columns where stdout is no terminal): a script greps these lines.
    report, out = result.report, stdout_console(soft_wrap=True)
    totals = report.totals()
    out.print(
        f"replayed {result.records_read:,} records in {result.seconds:.2f} s "
        f"({result.records_per_second:,.0f}/s): {result.counters.applied} applied, "
        f"{result.counters.stale} stale, {result.counters.rejected} rejected",
        highlight=False,
    )
    compared_sites = sum(1 for site in report.sites.values() if site.ticks)  # not those only pending
    out.print(
        f"compared {counted(totals.ticks, 'decision')} over {counted(compared_sites, 'site')}"
        f"{_range_said(options)}: "
        f"{totals.matched:,} identical, "
        f"{totals.diverged:,} diverged{_alike_in_the_decision(totals)}, {totals.reworded:,} reworded only, "
        f"{totals.missing:,} recorded but not recomputed, "
        f"{totals.extra:,} recomputed but not recorded",
        highlight=False,
    )
    if options.changed_at is not None:
        out.print(
            f"decided with the settings of {args.changed_config} from {options.changed_at.isoformat()} on: "
            f"{result.changed_records:,} of {result.records_read:,} records, the sites of "
            f"{counted(result.changed_partitions, 'partition')} handed over with their state at its first "
            "record written then",
            highlight=False,
        )
    if options.from_offset or options.from_time is not None:  # offset 0 is the beginning
        out.print(
            "the replay started there with a fresh battery: a site whose battery then stood otherwise "
            "(earlier ticks applied) diverges from its first tick replayed; audit a whole history from the "
            "beginning, a stretch before a settings change with --to-time (docs/replay.md)",
            highlight=False,
        )
    for kind, audited in (("", report), ("history: ", result.history)):
        if kind and audited.unverified == report.unverified:
            continue  # the history records of the same decisions: said once
        for why, sites in audited.unverified.items():
            named = ", ".join(sorted(sites)[:3]) + (f" and {len(sites) - 3:,} more" if len(sites) > 3 else "")
            advice = _UNVERIFIED_HINTS.get(why, "")
            out.print(
                terminal_text(
                    f"{kind}{counted(sum(sites.values()), 'recorded decision')} of "
                    f"{counted(len(sites), 'site')} ({named}) not verified: {why.value}{advice}"
                ),
                highlight=False,
            )
    for partition, offset in sorted(result.prices_begin.items()):
        out.print(
            f"{settings.topics.prices}[{partition}] begins at offset {offset:,}: its earlier ticks are "
            "deleted, so the replay starts there with a fresh battery, and its decisions match the record "
            "only where the battery then stood as new",
            highlight=False,
        )
    if totals.pending:
        out.print(
            f"{totals.pending:,} recomputed for ticks past the committed offsets of group "
            f"{settings.worker.group_id!r}: not yet decided by its worker, left for a later replay",
            highlight=False,
        )
    for topic in result.absent_topics:
        out.print(f"topic {topic} does not exist: nothing was recorded there to compare", highlight=False)
    history = result.history.totals()
    out.print(
        f"history: {history.ticks:,} records compared, {history.matched:,} identical, "
        f"{history.diverged + history.reworded + history.missing + history.extra:,} different"
        f"{_alike_in_the_decision(history)}",
        highlight=False,
    )
    for kind, audited in (("", report), ("history", result.history)):
        if audited.unreadable:
            shown = "; ".join(audited.unreadable[:3])
            more = f" (and {len(audited.unreadable) - 3:,} more)" if len(audited.unreadable) > 3 else ""
            topic = settings.topics.history if kind else settings.topics.actions
            out.print(
                terminal_text(f"{len(audited.unreadable):,} records of {topic} are no event: {shown}{more}"),
                highlight=False,
            )
        differing = [site.first for _, site in sorted(audited.sites.items()) if site.first is not None]
        for first in differing[:_FIRST_DIFFERENCES_SHOWN]:
            line = first.describe(kind)
            refusal = result.refused.get(first.source) if first.recomputed is None else None
            if refusal is not None:  # a version that dead-letters what the recording one applied (replay.md)
                line += f" (the recomputation dead-letters its tick: {refusal})"
            out.print(terminal_text(line), highlight=False)
        if len(differing) > _FIRST_DIFFERENCES_SHOWN:
            rest = len(differing) - _FIRST_DIFFERENCES_SHOWN
            out.print(
                f"{kind + ': ' if kind else ''}and {counted(rest, 'more site')} with a difference, each "
                "site's first in --report FILE",
                highlight=False,
            )
    hint = _policy_hint(settings, report, options.changed_settings)
    if hint:
        out.print(hint, highlight=False)
    verdict = _verdict(result)
    fingerprints = _fingerprints(settings, options.changed_settings)
    if verdict == "diverged":
        out.print(
            f"recomputed with decision settings fingerprint {' then '.join(fingerprints)}: each worker logs "
            "its own at start (battery_worker_settings_info); where the worker's differs, its settings "
            "differed from these (--config, --policy, --policy-param) or its version decided by other "
            f"rules (this one's: dispatch.DECISION_RULES {DECISION_RULES}, docs/replay.md lists the changes)",
            highlight=False,
        )
    if args.report is not None:
        report_json = {**_report(result, verdict), "decision_settings_fingerprints": fingerprints}
        write_atomically(args.report, orjson.dumps(report_json, option=orjson.OPT_INDENT_2))
    if verdict == "nothing compared":
        said = _range_said(options)
        print(f"replay compared nothing: no tick in the range replayed{said}", file=sys.stderr)
        return 1
    if verdict == "identical":
        out.print("replay identical: every recorded decision was reproduced", highlight=False)
        return 0
    if verdict == "incomplete":
        said = (
            "what was replayed is identical, but not every decision"
            if totals.ticks
            else "no recorded decision could be verified"
        )
        print(f"replay incomplete: {said}", file=sys.stderr)
        return 1
    print("replay diverged", file=sys.stderr)
    return 1


Verdict = Literal["identical", "diverged", "incomplete", "nothing compared"]


def _verdict(result: ReplayResult) -> Verdict:
    """The exit code's reason: 0 for ``identical`` alone."""
    if result.compared_nothing:
        return "nothing compared"
    if result.identical:
        return "identical"
    reports = (result.report, result.history)
    if any(r.unverified for r in reports) and all(_only_unverified(r) for r in reports):
        return "incomplete"
    return "diverged"


def _only_unverified(report: AuditReport) -> bool:
    """Nothing compared differs: what keeps the report from identical is decisions it could not verify."""
    return not report.unreadable and all(site.identical for site in report.sites.values())


def _report(result: ReplayResult, verdict: Verdict) -> dict[str, Any]:
    """``--report``: what the lines say, as JSON (an auditor's script read Python reprs in text lines)."""

    def audited(report: AuditReport) -> dict[str, Any]:
        return {
            "totals": _counts(report.totals()),
            "sites": {
                site_id: {**_counts(site), "first": _first(site.first, result.refused)}
                for site_id, site in sorted(report.sites.items())
            },
            "unreadable": report.unreadable,
            "unverified": [
                {"reason": why.name.lower(), "said": why.value, "sites": dict(sorted(sites.items()))}
                for why, sites in sorted(report.unverified.items(), key=lambda item: item[0].name)
            ],
        }

    return {
        "verdict": verdict,
        "records_read": result.records_read,
        "seconds": round(result.seconds, 3),
        "applied": result.counters.applied,
        "stale": result.counters.stale,
        "rejected": result.counters.rejected,
        "absent_topics": list(result.absent_topics),
        "prices_begin": {str(p): offset for p, offset in sorted(result.prices_begin.items())},
        "actions": audited(result.report),
        "history": audited(result.history),
    }


def _alike_in_the_decision(totals: SiteReport) -> str:
    """Of the divergences, those whose decision was reproduced (:class:`.audit.Difference`), where any."""
    parts = [
        f"{count:,} {kind.value}"
        for count, kind in (
            (totals.diverged_older_version, Difference.OLDER_VERSION),
            (totals.diverged_in_emissions, Difference.EMISSIONS),
        )
        if count
    ]
    return f" ({'; '.join(parts)})" if parts else ""


def _counts(site: SiteReport) -> dict[str, int]:
    return {
        "compared": site.ticks,
        "identical": site.matched,
        "diverged": site.diverged,
        "diverged_older_version": site.diverged_older_version,
        "diverged_in_emissions": site.diverged_in_emissions,
        "reworded": site.reworded,
        "recorded_not_recomputed": site.missing,
        "recomputed_not_recorded": site.extra,
        "pending": site.pending,
    }


def _first(first: Divergence | None, refused: dict[str, str]) -> dict[str, Any] | None:
    if first is None:
        return None
    return {
        "kind": "divergence" if first.diverged else "rewording",
        "difference": first.difference.name.lower(),
        "tick_timestamp": first.tick_timestamp,
        "source": first.source,
        "recorded_at": first.recorded_at or None,
        "recorded": first.recorded,
        "recomputed": first.recomputed,
        "recomputation_refused": refused.get(first.source) if first.recomputed is None else None,
    }


_UNVERIFIED_HINTS = {
    Outside.PRICES_DELETED: " (keep prices as long as audits need it: its retention.ms)",
    Outside.OTHER_PRICES_TOPIC: " (replay with the topics.prices the worker read)",
    Outside.AWAY_FROM_HOME: (
        " (prices grew after they were decided: a replay reads ticks by today's count; docs/delivery.md, "
        "'Adding partitions')"
    ),
}


def _changed_settings(args: argparse.Namespace) -> Settings | None:
    """The settings after a change (``--changed-config``, read as the worker reads a file: the environment
    over it), given with the time it took effect; one flag without the other is refused."""
    from battery_worker.settings import load_settings

    if args.changed_config is None and args.changed_at is not None:
        raise InvalidConfig("--changed-at", args.changed_at.isoformat(), "needs --changed-config too")
    if args.changed_config is None:
        return None
    if args.changed_at is None:
        raise InvalidConfig("--changed-config", str(args.changed_config), "needs --changed-at too")

    return load_settings(args.changed_config)


_FIRST_DIFFERENCES_SHOWN = 20
"""Sites whose first difference is printed, per topic: a replay with other settings over 10,000 sites
printed 20,000 lines (a review run)."""


def _range_said(options: ReplayOptions) -> str:
    said = [f"of site {options.site!r}"] if options.site is not None else []
    if options.from_offset is not None:
        said.append(f"from offset {options.from_offset:,}")
    if options.from_time is not None:
        said.append(f"written from {options.from_time.isoformat()}")
    if options.to_offset is not None:
        said.append(f"up to offset {options.to_offset:,}")
    if options.to_time is not None:
        said.append(f"written before {options.to_time.isoformat()}")
    return f" ({', '.join(said)})" if said else ""


def _fingerprints(settings: Settings, changed: Settings | None) -> list[str]:
    """The decision settings fingerprints the replay decided with (a second from ``--changed-at`` on): the
    worker logs its own, so a replay with other settings is told from a worker that decided otherwise (an
    auditor's review replayed with another parameter and nothing said the settings differed)."""
    return list(
        dict.fromkeys(
            [settings.decisions_fingerprint()]
            + ([] if changed is None else [changed.decisions_fingerprint()])
        )
    )


def _policy_hint(settings: Settings, report: AuditReport, changed: Settings | None = None) -> str | None:
    """When a difference was recorded under another policy than the replay's: the likeliest cause is the
    replay's settings, not the worker (the worker ran with --policy, the replay without). Through a
    settings change (``changed``) a site is replayed with either settings' policy, so only a policy in
    neither is named (it named the policy before the change for a tick decided after it)."""
    directories = [settings.site_directory()] + ([] if changed is None else [changed.site_directory()])
    for site_id, site in sorted(report.sites.items()):
        policy = (site.first.recorded or {}).get("policy") if site.first is not None else None
        replayed = [directory.setup(site_id).policy.name for directory in directories]
        if isinstance(policy, str) and policy not in replayed:
            names = " and ".join(repr(name) for name in dict.fromkeys(replayed))
            flags = "--config, --policy, --policy-param" + (", --changed-config" if changed else "")
            return (
                f"site {site_id} was recorded under policy {policy!r} and replayed with {names}: "
                f"replay with the worker's settings ({flags}) to audit it"
            )
    return None


@contextmanager
def _shown_progress(requested: bool) -> Iterator[ReplayProgress | None]:
    """Progress on stderr: a bar with the share done and the time left on a terminal; elsewhere, with
    ``--progress``, a plain line now and then (a redrawn bar in a log is nothing or a wall of escape codes,
    as for ``backtest``); else nothing."""
    console = Console(stderr=True)
    if console.is_terminal:
        columns = (BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), *columns, console=console, transient=True
        ) as bar:
            task = bar.add_task("reading the recorded events", total=None)

            def advance(read: int, total: int | None) -> None:
                bar.update(task, completed=read, total=total, description=f"replayed {read:,} records")

            yield advance
    elif requested:
        shown: dict[str, float] = {}  # the first call's time (the record read, prices next), the last line's

        def line(read: int, total: int | None) -> None:
            now = time.monotonic()
            started = shown.setdefault("started", now)
            tenths = 0 if not total else min(10, 10 * read // total)
            if tenths > shown.get("tenths", 0) or now - shown.get("at", started) >= LINE_EVERY_SECONDS:
                shown.update(at=now, tenths=tenths)
                print(progress_line(read, total, now - started), file=sys.stderr, flush=True)

        yield line
    else:
        yield None


def progress_line(read: int, total: int | None, seconds: float) -> str:
    """``replay: 45% (1,234,567 of about 2,740,000 records, 18,200/s, about 83 s left)``."""
    rate = read / seconds if seconds > 0 else 0.0
    if not total:
        return f"replay: {read:,} records ({rate:,.0f}/s)"
    left = f", about {max(0, total - read) / rate:,.0f} s left" if rate > 0 and read < total else ""
    return (
        f"replay: {min(100, 100 * read // total)}% ({read:,} of about {total:,} records, {rate:,.0f}/s{left})"
    )
