"""Compare recomputed decisions with recorded ones: what an auditor's replay reports. Pure.

Two events agree when their bytes are equal: the worker writes nothing that depends on the clock, so same
input and same config give the same bytes, and the bytes name the ``event_id`` (derived from the input
record). So agreed events meet as bytes, whatever order they were read in, re-emitted duplicates collapse,
and only the few that differ are parsed and paired by ``event_id``. Those are split in two: a *divergence*
changes the decision (action, power, energy, state of charge, the site plan); a *rewording* changes only
the text (e.g. a threshold named in the reason). The first divergence per site is reported, or the first
rewording when nothing diverged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Divergence:
    site_id: str
    tick_timestamp: str
    source: str
    recorded: dict[str, Any] | None
    recomputed: dict[str, Any] | None

    def describe(self) -> str:
        return (
            f"site {self.site_id}: first divergence at tick {self.tick_timestamp} ({self.source}): "
            f"recorded {_brief(self.recorded)} vs recomputed {_brief(self.recomputed)}"
        )


@dataclass(slots=True)
class SiteReport:
    ticks: int = 0
    matched: int = 0
    diverged: int = 0
    reworded: int = 0
    missing: int = 0
    extra: int = 0
    first: Divergence | None = None

    @property
    def identical(self) -> bool:
        return self.diverged == 0 and self.reworded == 0 and self.missing == 0 and self.extra == 0


@dataclass(slots=True)
class AuditReport:
    sites: dict[str, SiteReport] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return all(site.identical for site in self.sites.values())

    def totals(self) -> SiteReport:
        total = SiteReport()
        for site in self.sites.values():
            total.ticks += site.ticks
            total.matched += site.matched
            total.diverged += site.diverged
            total.reworded += site.reworded
            total.missing += site.missing
            total.extra += site.extra
        return total


@dataclass(frozen=True, slots=True)
class EventShape:
    """Where an event kind keeps its tick time, and which of its fields make the decision."""

    time_field: str
    decision_fields: tuple[str, ...]


_STEP_FIELDS = ("action", "power_mw", "requested_power_mw", "energy_mwh", "duration_hours")
"""The decision fields both event kinds name alike; they differ in how they name the state of charge."""

ACTIONS = EventShape(
    time_field="tick_timestamp",
    decision_fields=(*_STEP_FIELDS, "state_of_charge_before_mwh", "state_of_charge_after_mwh", "site_plan"),
)
HISTORY = EventShape(
    time_field="timestamp",
    decision_fields=(*_STEP_FIELDS, "charge_before_mwh", "charge_after_mwh"),
)


def _everything(event: dict[str, Any]) -> bool:
    return True


def _brief(event: dict[str, Any] | None) -> str:
    if event is None:
        return "nothing"
    keys = ("action", "power_mw", "state_of_charge_after_mwh", "charge_after_mwh", "reason")
    return "{" + ", ".join(f"{k}={event[k]!r}" for k in keys if k in event) + "}"


def compare(
    recorded: Iterable[bytes],
    recomputed: Mapping[bytes, str],
    *,
    shape: EventShape = ACTIONS,
    site_filter: str | None = None,
    in_range: Callable[[dict[str, Any]], bool] = _everything,
) -> AuditReport:
    """Compare recorded events with recomputed ones (their bytes, each with its site id).

    Events are compared as bytes first: an event's bytes name its ``event_id``, so a recorded event equal to
    a recomputed one is that event, agreed, and nothing is parsed (re-emitted duplicates are equal bytes and
    collapse). Only the events on one side alone are parsed and paired by ``event_id``; a recorded one counts
    only if ``in_range`` holds for it (its input lies in the replayed range). The first divergence per site
    is the earliest by tick time.
    """
    report = AuditReport()
    old_values = set(recorded)
    new_events = {}
    for value, site_id in recomputed.items():
        if site_filter is not None and site_id != site_filter:
            continue
        if value in old_values:
            site = report.sites.setdefault(site_id, SiteReport())
            site.ticks += 1
            site.matched += 1
        else:
            event = orjson.loads(value)
            new_events[event["event_id"]] = event
    old_events = {}
    # Sorted, not in set order (which follows the per-process hash seed): of two recorded versions of one id
    # that both differ, every run reports the same one.
    for value in sorted(old_values.difference(recomputed)):
        event = orjson.loads(value)
        if in_range(event):
            old_events[event["event_id"]] = event
    if old_events.keys() - new_events.keys():
        # Rare: a recorded event of the same id as an agreed one but other bytes (re-emitted different).
        # That tick is not agreed after all: it is counted below as the disagreement it also is.
        for value in recomputed.keys() & old_values:
            event = orjson.loads(value)
            if event["event_id"] in old_events and event["site_id"] in report.sites:
                new_events[event["event_id"]] = event
                site = report.sites[event["site_id"]]
                site.ticks -= 1
                site.matched -= 1
    firsts: dict[str, Divergence] = {}
    rewordings: dict[str, Divergence] = {}
    for event_id in old_events.keys() | new_events.keys():
        old_event, new_event = old_events.get(event_id), new_events.get(event_id)
        sample = new_event or old_event
        assert sample is not None
        site_id = sample["site_id"]
        if site_filter is not None and site_id != site_filter:
            continue
        site = report.sites.setdefault(site_id, SiteReport())
        site.ticks += 1
        reworded = False
        if old_event is None:
            site.extra += 1
        elif new_event is None:
            site.missing += 1
        elif all(old_event.get(name) == new_event.get(name) for name in shape.decision_fields):
            site.reworded += 1
            reworded = True
        else:
            site.diverged += 1
        source = sample["source"]
        divergence = Divergence(
            site_id=site_id,
            tick_timestamp=sample[shape.time_field],
            source=f"{source['topic']}[{source['partition']}]@{source['offset']}",
            recorded=old_event,
            recomputed=new_event,
        )
        earliest = rewordings if reworded else firsts
        current = earliest.get(site_id)
        if current is None or divergence.tick_timestamp < current.tick_timestamp:
            earliest[site_id] = divergence
    for site_id, site in report.sites.items():
        site.first = firsts.get(site_id) or rewordings.get(site_id)
    return report


def merge_reports(reports: list[AuditReport]) -> AuditReport:
    """One report of several replays' (e.g. of disjoint partitions): counts added; per site, the earliest
    divergence is kept, or the earliest rewording when nothing diverged (as :func:`compare` chooses)."""
    merged = AuditReport()
    firsts: dict[str, tuple[bool, str, Divergence]] = {}
    for report in reports:
        for site_id, part in report.sites.items():
            site = merged.sites.setdefault(site_id, SiteReport())
            site.ticks += part.ticks
            site.matched += part.matched
            site.diverged += part.diverged
            site.reworded += part.reworded
            site.missing += part.missing
            site.extra += part.extra
            if part.first is not None:
                reworded_only = part.diverged + part.missing + part.extra == 0
                candidate = (reworded_only, part.first.tick_timestamp, part.first)
                current = firsts.get(site_id)
                if current is None or candidate[:2] < current[:2]:
                    firsts[site_id] = candidate
    for site_id, (_, _, first) in firsts.items():
        merged.sites[site_id].first = first
    return merged
