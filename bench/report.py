"""Render benchmark results (the JSON that ``run.py`` writes) as a table and as ``docs/benchmarks.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGETS = {
    "ratio": (0.5, ">="),
    "p99_ms": (20.0, "<"),
    "rss_mb": (150.0, "<"),
    "restore_s": (2.0, "<"),
    "eos_ratio": (0.7, ">="),
    "quix_ratio": (1.5, ">="),
    "cpu_us": (35.0, "<="),
    "rss_vs_quix": (1.0, "<="),
    "replay": (50_000.0, ">="),
}
EXACTLY_ONCE = "exactly-once"
"""The first word of every exactly-once row's label: a broker that skipped them shows "skipped" there."""


def _met(name: str, value: float) -> str:
    limit, op = TARGETS[name]
    ok = value >= limit if op == ">=" else value <= limit if op == "<=" else value < limit
    return "met" if ok else "NOT met"


def _row(figure: str, stat: dict[str, Any], fmt: str, target: str = "", met: str = "") -> list[str]:
    return [
        figure,
        format(stat["median"], fmt),
        format(stat["min"], fmt),
        format(stat["max"], fmt),
        target,
        met,
    ]


def rows(doc: dict[str, Any]) -> list[list[str]]:
    out: list[list[str]] = []
    for entry in doc["throughput"]:
        sites = f"{entry['sites']:,} site{'s' if entry['sites'] > 1 else ''}"
        out.append(
            _row(f"ceiling: aiokafka passthrough, ticks/s ({sites})", entry["ceiling_ticks_per_s"], ",.0f")
        )
        out.append(_row(f"worker, ticks/s ({sites})", entry["worker_ticks_per_s"], ",.0f"))
        if "worker_cpu_share" in entry:
            out.append(_row("  worker process CPU, share of one core", entry["worker_cpu_share"], ".2f"))
        if "worker_cpu_us_per_tick" in entry:
            cpu_us = entry["worker_cpu_us_per_tick"]
            target = ("≤ 35", _met("cpu_us", cpu_us["median"])) if entry["sites"] == 100 else ("", "")
            out.append(_row("  worker process CPU per tick, µs", cpu_us, ".1f", *target))
        ratio = entry["ratio"]
        out.append(_row(f"worker / ceiling ({sites})", ratio, ".2f", "≥ 0.5", _met("ratio", ratio["median"])))
        out.extend(quix_rows(entry, sites))
    lat = doc["latency"]
    rate = f"{lat['rate_per_s']:,} ticks/s"
    out.append(_row(f"latency tick→action p50, ms ({rate})", lat["p50_ms"], ".1f"))
    out.append(
        _row(
            f"latency tick→action p99, ms ({rate})",
            lat["p99_ms"],
            ".1f",
            "< 20",
            _met("p99_ms", lat["p99_ms"]["median"]),
        )
    )
    out.append(_row(f"latency tick→action max, ms ({rate})", lat["max_ms"], ".1f"))
    if "floor" in lat:
        floor = lat["floor"]
        out.append(_row(f"  floor: aiokafka pass-through, p50, ms ({rate})", floor["p50_ms"], ".1f"))
        out.append(_row(f"  floor: aiokafka pass-through, p99, ms ({rate})", floor["p99_ms"], ".1f"))
    out.extend(exactly_once_rows(doc))
    big = next(e for e in doc["throughput"] if e["sites"] == 10_000)
    out.append(
        _row(
            "worker peak RSS, MB (10,000 sites)",
            big["peak_rss_mb"],
            ".0f",
            "< 150",
            _met("rss_mb", big["peak_rss_mb"]["median"]),
        )
    )
    out.append(_row("  of which after imports, before any work, MB", big["rss_after_imports_mb"], ".0f"))
    restore = doc["restore"]
    out.append(
        _row(
            f"restore of {restore['sites']:,} sites, s",
            restore["seconds"],
            ".3f",
            "< 2",
            _met("restore_s", restore["seconds"]["median"]),
        )
    )
    rep = doc["replay"]
    out.append(_row("replay: TickProcessor, fresh state, ticks/s", rep["processor_ticks_per_s"], ",.0f"))
    audit = rep["audit_replay_ticks_per_s"]
    out.append(_row("replay: audit replay (kafka.replay.replay), ticks/s", audit, ",.0f"))
    if "audit_replay_in_processes_ticks_per_s" in rep:
        parallel = rep["audit_replay_in_processes_ticks_per_s"]
        label = f"replay: audit replay in {rep['audit_replay_processes']} processes (--processes), ticks/s"
        out.append(_row(label, parallel, ",.0f", "≥ 50,000", _met("replay", parallel["median"])))
    return out


def quix_rows(entry: dict[str, Any], sites: str) -> list[list[str]]:
    """The same job in Quix Streams (``quix_job.py``), in the same run; none where it was not installed."""
    quix = entry.get("quix")
    if quix is None:
        return []
    ratio = quix["worker_ratio"]
    decisions = quix["decisions"]
    agreed = f"{decisions['same_decision']:,} of {decisions['worker_actions']:,}"
    out = [
        _row(f"Quix Streams, ticks/s ({sites})", quix["ticks_per_s"], ",.0f"),
        _row("  Quix Streams process CPU, share of one core", quix["cpu_share"], ".2f"),
        _row("  Quix Streams process CPU per tick, µs", quix["cpu_us_per_tick"], ".1f"),
        _row(
            f"worker / Quix Streams, ticks/s ({sites})",
            ratio,
            ".2f",
            "≥ 1.5",
            _met("quix_ratio", ratio["median"]),
        ),
        [
            f"  Quix Streams' actions equal the worker's ({sites})",
            agreed,
            "",
            "",
            "all",
            "met" if decisions["equal"] else "NOT met",
        ],
    ]
    rss = entry["peak_rss_mb"]
    out.append(_row(f"  worker peak RSS, MB ({sites})", rss, ".0f"))
    out.append(_row(f"  Quix Streams peak RSS, MB ({sites})", quix["peak_rss_mb"], ".0f"))
    if entry["sites"] == 100:
        over = {
            "median": rss["median"] / quix["peak_rss_mb"]["median"],
            "min": rss["min"] / quix["peak_rss_mb"]["max"],
            "max": rss["max"] / quix["peak_rss_mb"]["min"],
        }
        out.append(
            _row(
                f"worker / Quix Streams peak RSS ({sites})",
                over,
                ".2f",
                "≤ 1",
                _met("rss_vs_quix", over["median"]),
            )
        )
    return out


def exactly_once_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Exactly-once, measured in the same run as the at-least-once rows above; none if it was skipped."""
    eos = doc.get("exactly_once")
    if eos is None or "skipped" in eos:
        return []
    out: list[list[str]] = []
    for entry in doc["throughput"]:
        figures = entry.get("exactly_once")
        if figures is None:
            continue
        sites = f"{entry['sites']:,} site{'s' if entry['sites'] > 1 else ''}"
        out.append(_row(f"{EXACTLY_ONCE} worker, ticks/s ({sites})", figures["ticks_per_s"], ",.0f"))
        ratio = figures["ratio"]
        out.append(
            _row(
                f"{EXACTLY_ONCE} / at-least-once worker, ticks/s ({sites})",
                ratio,
                ".2f",
                "≥ 0.7",
                _met("eos_ratio", ratio["median"]),
            )
        )
        details = (
            ("transactions committed/s", "transactions_per_s", ",.1f"),
            ("ticks per transaction", "ticks_per_transaction", ",.0f"),
            ("worker process CPU, share of one core", "cpu_share", ".2f"),
        )
        for figure, key, fmt in details:
            out.append(_row(f"  {EXACTLY_ONCE}: {figure} ({sites})", figures[key], fmt))
    lat = eos["latency"]
    rate = f"{lat['rate_per_s']:,} ticks/s, read_committed"
    for stat in ("p50", "p99", "max"):
        out.append(_row(f"{EXACTLY_ONCE} latency tick→action {stat}, ms ({rate})", lat[f"{stat}_ms"], ".1f"))
    return out


def skipped_note(doc: dict[str, Any]) -> str | None:
    notes = []
    eos = doc.get("exactly_once")
    if eos is not None and "skipped" in eos:
        notes.append(f"{EXACTLY_ONCE} rows skipped: {eos['skipped']}")
    if doc.get("quix_skipped"):
        notes.append(f"Quix Streams rows skipped: {doc['quix_skipped']}")
    return "; ".join(notes) or None


HEADER = ["figure", "median", "min", "max", "target", ""]


def render_table(doc: dict[str, Any]) -> str:
    table = [HEADER, *rows(doc)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    lines = []
    for index, r in enumerate(table):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    note = skipped_note(doc)
    if note is not None:
        lines.append(note)
    return "\n".join(lines)


Key = tuple[str, int]
"""A row's label and which occurrence of it (the CPU rows of the site counts share one label)."""


def _keyed(table: list[list[str]]) -> dict[Key, list[str]]:
    seen: dict[str, int] = {}
    keyed: dict[Key, list[str]] = {}
    for row in table:
        seen[row[0]] = seen.get(row[0], -1) + 1
        keyed[(row[0], seen[row[0]])] = row
    return keyed


def _keys_in_order(tables: list[dict[Key, list[str]]]) -> list[Key]:
    """Every figure of every broker, each after the figure it follows in its own table."""
    order: list[Key] = []
    for table in tables:
        previous: Key | None = None
        for key in table:
            if key not in order:
                order.insert(0 if previous is None else order.index(previous) + 1, key)
            previous = key
    return order


def render_markdown_table(doc: dict[str, Any]) -> str:
    """One row per figure, a column per broker (median, then min–max), the target, and whether it is met.

    A figure one broker lacks (exactly-once on a broker without transactions) reads "skipped" there, and
    the reason follows the table.
    """
    brokers = doc["brokers"]
    tables = [_keyed(rows(run)) for run in brokers]
    names = [run["broker"] for run in brokers]
    header = [
        "figure",
        *(f"{name}: median (min–max)" for name in names),
        "target",
        *(f"met: {n}" for n in names),
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "--:|" * len(names) + "---|" + "---|" * len(names)]
    for key in _keys_in_order(tables):
        label = key[0]
        present = [t.get(key) for t in tables]
        first = next(r for r in present if r is not None)
        missing = "skipped" if label.lstrip().startswith(EXACTLY_ONCE) else "—"
        cells = [missing if r is None else f"{r[1]} ({r[2]}–{r[3]})" for r in present]
        met = ["" if r is None else r[5] for r in present]
        lines.append("| " + " | ".join([label, *cells, first[4], *met]) + " |")
    notes = [f"- {run['broker']}: {skipped_note(run)}" for run in brokers if skipped_note(run) is not None]
    if notes:
        lines.extend(["", *notes])
    return "\n".join(lines)


def _exactly_once_bullet(doc: dict[str, Any]) -> list[str]:
    counts = sorted({e["sites"] for run in doc["brokers"] for e in run["throughput"] if "exactly_once" in e})
    if not counts:
        return []
    sites = " and ".join(f"{n:,} sites" for n in counts)
    return [
        "- **Exactly-once** (`worker.processing_guarantee=exactly-once`; Apache Kafka only, the embedded",
        f"  broker has no transactions): in the same run, each throughput run of {sites} is followed",
        "  by an exactly-once worker on the same `prices` topic (fresh group and outputs), and each latency",
        "  run by an exactly-once one. The worker commits one transaction per input partition per batch:",
        "  events, state records and the input offset, all or nothing; ticks/s run to the last batch's",
        "  transactions committed (at-least-once: to its events acknowledged). *exactly-once /",
        "  at-least-once* is the ratio of each run's two workers (target ≥ 0.7); *transactions",
        "  committed/s* is the worker's committed transactions (`WorkerStats.transactions`) over the same",
        "  seconds. Its latency is read by a `read_committed` consumer: an action counts when its",
        "  transaction commits, not when it is written.",
    ]


def render_doc(doc: dict[str, Any], profile_notes: Path) -> str:
    m = doc["machine"]
    first = doc["brokers"][0]
    counts = ", ".join(f"{e['ticks']:,} ticks over {e['sites']:,} sites" for e in first["throughput"])
    lat = first["latency"]
    brokers = "; ".join(f"{run['broker']} ({run['wall_seconds'] / 60:.0f} min)" for run in doc["brokers"])
    parts = [
        "# Benchmarks",
        "",
        "Generated by `bench/run.py` from `bench/results/latest.json`; do not edit the table by hand.",
        "",
        f"- **Command**: `{doc['command']}` (≈ {doc['wall_seconds'] / 60:.0f} min; `--quick`: short run)",
        f"- **Machine**: {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['platform']}",
        f"- **Brokers**, one after the other on this machine, 3 partitions per topic: {brokers}",
        f"- **Date**: {doc['date']}",
        f"- **Runs**: each figure is the median of {doc['runs']} runs, with min and max",
        "",
        render_markdown_table(doc),
        "",
        "## What is measured",
        "",
        f"- **Throughput** ({counts}): `prices` is pre-filled once per site count; then, alternately, the",
        "  ceiling and the worker each consume all of it with a fresh group, as separate processes. Ticks/s",
        "  run from the first batch consumed to the last batch's events acknowledged. The **ceiling** is a",
        "  plain aiokafka passthrough: the worker's own consumer and producer settings (`kafka/clients.py`),",
        "  `getmany` of 2,000, one `send` per record, wait for all acks, one commit per batch; no parsing.",
        "  The **worker** (`Worker`, in process `bench/child.py`) does the whole job per tick: validate,",
        "  decide, apply, and publish an action, a status and a history record, then one state record per",
        "  site and batch, all acknowledged (`acks=all`) before the commit. Every run checks that every tick",
        "  was applied. *CPU per tick* is the process's CPU time over the same span, over the ticks: less",
        "  sensitive than ticks/s to the other processes on a shared machine.",
        "- **Quix Streams** (`bench/quix_job.py`, the `bench-quix` extra; its rows are left out where it is",
        "  not installed): the same job written with Quix Streams 3.x, run in each round right after the",
        "  worker on the same `prices`: each site's battery in Quix's State (RocksDB, changelog topic), each",
        "  tick validated, decided and applied by the same domain functions, its action, status and history",
        "  produced (one stateful `apply(expand=True)`, `to_topic` routed per event). Timed from its first",
        "  tick to the end of `Application.run` (the last checkpoint flushed and committed); its CPU",
        "  includes librdkafka's threads. Its actions are read back and compared with the worker's, keyed",
        "  by (site, tick time): the same decision for every tick, and the same bytes (same payload code,",
        "  encoding and input-derived `event_id`).",
        f"- **Latency**: a fresh worker is started and ready; ticks of {lat['sites']} sites are then sent at",
        f"  a steady {lat['rate_per_s']:,}/s for {lat['seconds']:.0f} s{_warmup(lat)}.",
        "  Latency runs from just before the tick's `send` to the arrival of its action at a consumer of",
        "  `battery.actions` (same clock: the sender and the consumer share one process). Each run is",
        "  followed by the same run with the **floor** in the worker's place (`bench/child.py passthrough`):",
        "  the worker's clients moving each tick to `battery.actions` as it comes, in the worker's rhythm",
        "  (`getmany`, send, wait for the acknowledgements, a commit at most once a second) with nothing",
        "  done to it: what the broker and the client take, whatever the processing.",
        *_exactly_once_bullet(doc),
        "- **Peak RSS**: the worker process's own peak (`VmHWM` in `/proc/self/status`) after the",
        "  10,000-site throughput run.",
        "- **Restore**: 10,000 state records (one per site, as a compacted topic holds) are read back to",
        "  the high watermark and loaded by the worker's `store.restore_sites`.",
        "- **Memory with full histories** (`bench/state_memory.py`, apart from `run.py`; the embedded",
        "  broker or `--bootstrap-servers`): the throughput runs start from fresh sites, whose price",
        "  histories are short. Here one site is run through a month of hourly ticks, its state record",
        "  cloned under 10,000 site ids into a state topic, and the sites restored from it by the worker's",
        "  `store.restore_sites`; RSS before and after, the peak during, and the heap a site holds (items",
        "  11 and 12 below).",
        "- **Replay**: the 10,000-site `prices` topic recomputed with a fresh state. *TickProcessor*: the",
        "  records in memory through `TickProcessor.handle` (the audit replay's data path, no I/O). *Audit",
        "  replay*: `battery_worker.kafka.tools.replay.replay`, the public function, end to end: reading",
        "  `prices` and the recorded actions from the broker and comparing them (every run must be",
        "  identical); *in N processes*: the same with `ReplayOptions(processes=N)` (`replay --processes`),",
        "  the partitions split among spawned processes and their reports merged.",
        "",
    ]
    if profile_notes.exists():
        parts.append(profile_notes.read_text().strip())
        parts.append("")
    return "\n".join(parts)


def _warmup(lat: dict[str, Any]) -> str:
    """The warm-up sent before the measured seconds, if the run had one (earlier runs did not)."""
    warmup = lat.get("warmup_seconds")
    if not warmup:
        return ""
    return (
        f", after {warmup:.0f} s at the same rate that are not counted (the first write to each partition of"
        " the run's new topics costs the broker tens to hundreds of ms, a one-time cost a worker in service"
        " does not pay)"
    )


if __name__ == "__main__":
    import json

    here = Path(__file__).resolve().parent
    results = json.loads((here / "results" / "latest.json").read_text())
    (here.parent / "docs" / "benchmarks.md").write_text(render_doc(results, here / "PROFILE.md"))
    for run in results["brokers"]:
        print(run["broker"])
        print(render_table(run))
