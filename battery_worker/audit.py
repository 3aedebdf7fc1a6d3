"""Compare recomputed decisions with recorded ones: what an auditor's replay reports. Pure.

Two events agree when their bytes are equal: the worker writes nothing that depends on the clock, so same
input and same config give the same bytes, and the bytes name the ``event_id`` (derived from the input
record). So agreed events meet as bytes, whatever order they were read in, re-emitted duplicates collapse,
and only the few that differ are parsed and paired by ``event_id``. Those are split in two: a *divergence*
changes the decision (action, power, energy, state of charge, the site plan); a *rewording* changes only
the text (e.g. a threshold named in the reason). The first divergence per site is reported, or the first
rewording when nothing diverged.

Neither side is held whole (:class:`Comparison`): the recorded events are indexed first as their event id
and a 16-byte fingerprint of their bytes, the recomputed ones are then met one at a time and kept only when
they disagree, and the recorded events left unmet are read again for their bytes (and for any recorded
since, beside a live worker, that meet a recomputed event left alone). A replay of a long log
holds about 0.4 KB a tick (two recorded events' ids and fingerprints), where both sides' bytes took 4.6.
"""

from __future__ import annotations

import hashlib
import re
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
    pending: int = 0
    """Recomputed for ticks the worker had not yet committed (so not yet decided, or not for sure): not
    compared, and no difference. Not in ``ticks``."""
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
            total.pending += site.pending
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


def _nothing(event: dict[str, Any]) -> bool:
    return False


def _brief(event: dict[str, Any] | None) -> str:
    if event is None:
        return "nothing"
    keys = ("action", "power_mw", "state_of_charge_after_mwh", "charge_after_mwh", "reason")
    return "{" + ", ".join(f"{k}={event[k]!r}" for k in keys if k in event) + "}"


_EVENT_ID = re.compile(rb'\{(?:"schema_version":[0-9]+,)?"event_id":"([0-9a-f-]{36})"')
"""Where the worker writes an event's id: the first field, or the second after ``schema_version``."""


def _event_key(value: bytes) -> bytes | None:
    """The event id an event's bytes name: read where the worker writes it, else parsed (None: none)."""
    found = _EVENT_ID.match(value)
    if found is not None:
        return found.group(1)
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    event_id = event.get("event_id") if isinstance(event, dict) else None
    return event_id.encode() if isinstance(event_id, str) else None


def _fingerprint(value: bytes) -> bytes:
    """Which version of an event these bytes are: SHA-256, cut to 128 bits. Only versions of one event id
    are told apart by it, and no recorded bytes can be made to match a recomputed event's without a
    second preimage of SHA-256."""
    return hashlib.sha256(value).digest()[:16]


class Comparison:
    """One event kind's comparison, fed in three passes so that neither side is held whole.

    1. :meth:`add_recorded` with every recorded event (re-emitted duplicates collapse): each is kept as its
       event id and the fingerprints of its versions.
    2. :meth:`add_recomputed` with every recomputed event: one whose bytes are its id's only recorded
       version agrees and is counted, nothing more; any other is kept whole, and its id's other recorded
       versions are noted as :attr:`unmet`.
    3. If :attr:`unmet`, :meth:`add_unmet` with every recorded event again: the unmet versions' bytes are
       kept, and so are the versions of ids first recorded since pass 1 that a recomputed event met nothing
       for (a live worker records a tick it was deciding as the replay began). Then :meth:`report`.
    """

    def __init__(self, site_filter: str | None = None) -> None:
        self._site_filter = site_filter
        self._recorded: dict[bytes, bytes | frozenset[bytes]] = {}
        """Event id -> the fingerprint of its recorded version (a frozenset of them if they differ)."""
        self._disagreed: dict[bytes, frozenset[bytes]] = {}
        """Ids met by a recomputed event that their recorded versions disagree with: those versions."""
        self._unkeyed: set[bytes] = set()
        """Recorded events that name no event id: always one-sided, so kept whole."""
        self._agreed: dict[str, int] = {}
        self._recomputed_alone: dict[bytes, str] = {}
        self._recorded_alone: set[bytes] = set()
        self._alone_by_id: dict[bytes, bytes] = {}
        """Recomputed events no recorded version met in pass 1, by event id: pass 3 may find them recorded."""
        self._late: dict[bytes, set[bytes]] = {}
        """Those ids' versions recorded since pass 1 (seen in pass 3)."""

    def add_recorded(self, value: bytes) -> None:
        key = _event_key(value)
        if key is None:
            self._unkeyed.add(value)
            return
        version = _fingerprint(value)
        known = self._recorded.get(key)
        if known is None:
            self._recorded[key] = version
        elif isinstance(known, bytes):
            if known != version:
                self._recorded[key] = frozenset((known, version))
        else:
            self._recorded[key] = known | {version}

    def add_recomputed(self, value: bytes, site_id: str) -> None:
        key = _event_key(value)
        known = None if key is None else self._recorded.pop(key, None)
        if self._site_filter is not None and site_id != self._site_filter:
            return
        if key is not None and known is not None:
            version = _fingerprint(value)
            if known == version:
                self._agreed[site_id] = self._agreed.get(site_id, 0) + 1
                return
            # A recorded version equal to this one among others (re-emitted otherwise) does not make the
            # tick agreed: the others disagree with it, and are what the report shows.
            others = frozenset((known,)) if isinstance(known, bytes) else known
            self._disagreed[key] = others - {version}
        elif key is not None:
            self._alone_by_id[key] = value
        self._recomputed_alone[value] = site_id

    @property
    def unmet(self) -> bool:
        """Whether the record is read again: some recorded versions met no recomputed event (their bytes are
        wanted), or some recomputed events met no recorded one (they may have been recorded since)."""
        return bool(self._recorded) or any(self._disagreed.values()) or bool(self._alone_by_id)

    def add_unmet(self, value: bytes, in_range: Callable[[dict[str, Any]], bool] = _everything) -> None:
        """Keep the bytes of an unmet recorded version, if ``in_range`` holds for it (checked here too, so a
        replay from an offset does not keep every recorded event before it), or of a version recorded since
        pass 1 of an id only recomputed so far."""
        key = _event_key(value)
        if key is None:
            return
        versions = self._recorded.get(key)
        if versions is None:
            versions = self._disagreed.get(key)
            if versions is None:
                if key in self._alone_by_id:
                    self._late.setdefault(key, set()).add(value)
                return
        version = _fingerprint(value)
        wanted = version == versions or (isinstance(versions, frozenset) and version in versions)
        if wanted and in_range(orjson.loads(value)):
            self._recorded_alone.add(value)

    def report(
        self,
        shape: EventShape = ACTIONS,
        in_range: Callable[[dict[str, Any]], bool] = _everything,
        pending: Callable[[dict[str, Any]], bool] = _nothing,
    ) -> AuditReport:
        """The report: agreed events counted; the others paired by ``event_id``, a recorded one only if
        ``in_range`` holds for it (its input lies in the replayed range). A recomputed event with no recorded
        version is *pending* rather than a difference if ``pending`` holds for it (the worker had not yet
        committed its tick). The first divergence per site is the earliest by tick time."""
        self._meet_late()
        report = AuditReport()
        for site_id, agreed in self._agreed.items():
            report.sites[site_id] = SiteReport(ticks=agreed, matched=agreed)
        new_events = {}
        for value in self._recomputed_alone:
            event = orjson.loads(value)
            new_events[event["event_id"]] = event
        old_events = {}
        # Sorted, not in set order (which follows the per-process hash seed): of two recorded versions of
        # one id that both differ, every run reports the same one.
        for value in sorted(self._recorded_alone | self._unkeyed):
            event = orjson.loads(value)
            if in_range(event):
                old_events[event["event_id"]] = event
        _pair(report, old_events, new_events, shape, self._site_filter, pending)
        return report

    def _meet_late(self) -> None:
        """Met as in pass 2, the recorded versions pass 3 found of ids only recomputed in pass 2: agreed when
        the recomputed bytes are the only version, else the other versions are kept to pair with it. Their
        input was replayed (the recomputed event comes from it), so no range applies."""
        for key, versions in self._late.items():
            value = self._alone_by_id.pop(key)
            if versions == {value}:
                site_id = self._recomputed_alone.pop(value)
                self._agreed[site_id] = self._agreed.get(site_id, 0) + 1
            else:
                self._recorded_alone |= versions - {value}
        self._late.clear()


def compare(
    recorded: Iterable[bytes],
    recomputed: Mapping[bytes, str],
    *,
    shape: EventShape = ACTIONS,
    site_filter: str | None = None,
    in_range: Callable[[dict[str, Any]], bool] = _everything,
    pending: Callable[[dict[str, Any]], bool] = _nothing,
) -> AuditReport:
    """Compare recorded events with recomputed ones (their bytes, each with its site id), all in memory:
    the three passes of :class:`Comparison`."""
    recorded = list(recorded)
    comparison = Comparison(site_filter)
    for value in recorded:
        comparison.add_recorded(value)
    for value, site_id in recomputed.items():
        comparison.add_recomputed(value, site_id)
    if comparison.unmet:
        for value in recorded:
            comparison.add_unmet(value, in_range)
    return comparison.report(shape, in_range, pending)


def _pair(
    report: AuditReport,
    old_events: dict[str, dict[str, Any]],
    new_events: dict[str, dict[str, Any]],
    shape: EventShape,
    site_filter: str | None,
    pending: Callable[[dict[str, Any]], bool] = _nothing,
) -> None:
    """Count the events found on one side alone, paired by id, into ``report``."""
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
        if old_event is None and pending(sample):
            site.pending += 1
            continue
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
            site.pending += part.pending
            if part.first is not None:
                reworded_only = part.diverged + part.missing + part.extra == 0
                candidate = (reworded_only, part.first.tick_timestamp, part.first)
                current = firsts.get(site_id)
                if current is None or candidate[:2] < current[:2]:
                    firsts[site_id] = candidate
    for site_id, (_, _, first) in firsts.items():
        merged.sites[site_id].first = first
    return merged
