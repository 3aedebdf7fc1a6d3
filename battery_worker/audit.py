"""Compare recomputed decisions with recorded ones: what an auditor's replay reports. Pure.

Two events agree when their bytes are equal: the worker writes nothing that depends on the clock, so same
input and same config give the same bytes, and the bytes name the ``event_id`` (derived from the input
record). So agreed events meet as bytes, whatever order they were read in, re-emitted duplicates collapse,
and only the few that differ are parsed and paired by the input record they name (``source``), as the
first passes meet them, not by the ``event_id``: an event recorded before the id took the site and the tick
time in (2026-12-05) pairs with its recomputed twin as a rewording of its id, not as one event missing and
another extra, and a record that misstates its site or tick time diverges. Those are split in two: a
*rewording* changes only the text (the reason, e.g. a threshold named in it, the policy's name, the id); a
*divergence* changes anything else (the decision, the site plan, a price or the tick time the record gives
for its input). The first divergence per site is reported, or the first rewording when nothing diverged;
a recorded record that is no event (not JSON, or without its id, site, input or tick time) is a difference
of its own, named by where it was read.

Neither side is held whole (:class:`Comparison`): the recorded events are indexed first by their input (the
``source`` each names, from which its event id is made) as a 16-byte fingerprint of their bytes, in arrays
by input partition and offset; the recomputed ones are then met one at a time and kept only when they
disagree, and the recorded events left unmet are read again for their bytes (and for any recorded since,
beside a live worker, that meet a recomputed event left alone). A replay of a long log holds some 40 bytes
a tick (two recorded events' fingerprints), where a dict of their ids and fingerprints took 0.4 KB and both
sides' bytes 4.6.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Divergence:
    site_id: str
    tick_timestamp: str
    source: str
    recorded: dict[str, Any] | None
    recomputed: dict[str, Any] | None
    recorded_at: str = ""
    """Where the recorded version was read (``battery.actions[0]@4166``): a forged or altered record is
    found there, not at the input's coordinates (``source``), which any copy of the event names."""
    difference: Difference = field(init=False)
    """How the two sides differ, judged once (:func:`difference`): the counts, the order of the shown
    difference and its line all read it."""

    def __post_init__(self) -> None:
        if self.recorded is None or self.recomputed is None:
            judged = Difference.DECISION
        else:
            judged = difference(self.recorded, self.recomputed)
        object.__setattr__(self, "difference", judged)

    def describe(self, kind: str = "") -> str:
        """One line: where, and the fields that differ on each side (the decision's when one side has
        nothing). ``kind`` names the record (``history``) when not the actions."""
        fields = _differing(self.recorded, self.recomputed)
        what = "divergence" if self.diverged else "rewording"
        if self.difference in _ALIKE_IN_THE_DECISION:
            what += f" ({self.difference.value})"
        at = f" at {self.recorded_at}" if self.recorded_at else ""
        return (
            f"site {self.site_id}: first {kind + ' ' if kind else ''}{what} at tick {self.tick_timestamp} "
            f"({self.source}): recorded{at} {_brief(self.recorded, fields)} vs recomputed "
            f"{_brief(self.recomputed, fields)}"
        )

    @property
    def diverged(self) -> bool:
        return self.difference is not Difference.REWORDED


class Difference(Enum):
    """How two versions of one event differ, the first that fits: a divergence of the decision, in what
    an older version records, or in the emissions alone; or a rewording. All fail the audit (its bytes
    are not reproduced); the split says where (an upgrade review saw 7,200 of 7,200 decisions 'diverged'
    whose action, power and charge were all reproduced)."""

    DECISION = "in the decision"
    OLDER_VERSION = "of an older schema_version, alike in every field it records"
    EMISSIONS = "in the emissions accounting alone"
    REWORDED = "reworded only"

    @property
    def rank(self) -> int:
        """Which difference a site's report shows first: the decision's before the others."""
        return 0 if self is Difference.DECISION else 2 if self is Difference.REWORDED else 1


_ALIKE_IN_THE_DECISION = (Difference.OLDER_VERSION, Difference.EMISSIONS)


def difference(recorded: dict[str, Any], recomputed: dict[str, Any]) -> Difference:
    """How two versions of one event differ (:class:`Difference`). An event of an older version lacks
    the fields later versions added (``emissions``, ``site_plan.grid_import_kg``); one written after an
    upgrade across the state record's version 2 counts its emissions from the upgrade, where a replay
    from the first tick counts from there (docs/operations.md, 'Upgrading and rolling back')."""
    if _reworded_only(recorded, recomputed):
        return Difference.REWORDED
    older = recorded.get("schema_version")
    newer = recomputed.get("schema_version")
    if isinstance(older, int) and isinstance(newer, int) and older < newer:  # the fields it records
        skip = _WORDING_FIELDS | {"schema_version"}
        if _alike_where_recorded(recorded, recomputed, skip):
            return Difference.OLDER_VERSION
        if _alike_where_recorded(recorded, recomputed, skip | {"emissions"}):
            return Difference.EMISSIONS
        return Difference.DECISION
    skip = _WORDING_FIELDS | {"emissions"}
    names = recorded.keys() | recomputed.keys()
    if all(recorded.get(name) == recomputed.get(name) for name in names if name not in skip):
        return Difference.EMISSIONS
    return Difference.DECISION


def _alike_where_recorded(recorded: Any, recomputed: Any, skip: frozenset[str] = frozenset()) -> bool:
    """Every field ``recorded`` has (nested too) is ``recomputed``'s, but those in ``skip``."""
    if isinstance(recorded, dict) and isinstance(recomputed, dict):
        return all(
            name in recomputed and _alike_where_recorded(value, recomputed[name])
            for name, value in recorded.items()
            if name not in skip
        )
    return bool(recorded == recomputed)


class Outside(Enum):
    """Where a recorded event's input lies when it is not in what was replayed."""

    BEFORE_START = "before the replay's start"
    AFTER_STOP = "at or after the replay's stop"
    AFTER_END = "recorded since the replay began"
    PRICES_DELETED = "their prices are deleted (retention, or records deleted)"
    OTHER_PRICES_TOPIC = "their ticks came from another prices topic"
    AWAY_FROM_HOME = (
        "their ticks lie on another prices partition than their site's home under its partition count now"
    )

    @property
    def unverified(self) -> bool:
        """A decision an audit of the whole log should have checked and could not: counted and said, and
        the replay does not pass (before, 500 decisions whose prices retention had deleted were left out
        and the replay said every recorded decision was reproduced). One before a start asked for, or
        recorded since the replay began, is out of range by choice."""
        return self in (Outside.PRICES_DELETED, Outside.OTHER_PRICES_TOPIC, Outside.AWAY_FROM_HOME)


Placement = Callable[[dict[str, Any]], Outside | None]
"""Where a recorded event's input lies: None when in what was replayed."""


@dataclass(slots=True)
class SiteReport:
    ticks: int = 0
    matched: int = 0
    diverged: int = 0
    diverged_older_version: int = 0
    """Of ``diverged``: events of an older ``schema_version``, alike in every field they record."""
    diverged_in_emissions: int = 0
    """Of ``diverged``: events that differ in their ``emissions`` alone (:class:`Difference`)."""
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

    def add_counts(self, other: SiteReport) -> None:
        """Adds ``other``'s counts to these (its ``first`` is not a count: the caller chooses it)."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_COUNTS = tuple(f.name for f in fields(SiteReport) if f.type in ("int", int))
"""The counts of a :class:`SiteReport`, which totals and merges add."""


@dataclass(slots=True)
class AuditReport:
    sites: dict[str, SiteReport] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    """Recorded records that are no event of this kind (not JSON, or without its id, site, input or tick
    time), each as ``where: why``: a difference no site can be given, never a crash of the audit."""
    unverified: dict[Outside, dict[str, int]] = field(default_factory=dict)
    """Recorded decisions whose input could not be replayed, by why (:attr:`Outside.unverified`) and site."""

    @property
    def identical(self) -> bool:
        return (
            not self.unreadable
            and not self.unverified
            and all(site.identical for site in self.sites.values())
        )

    def totals(self) -> SiteReport:
        total = SiteReport()
        for site in self.sites.values():
            total.add_counts(site)
        return total


@dataclass(frozen=True, slots=True)
class EventShape:
    """Where an event kind keeps its tick time."""

    time_field: str


ACTIONS = EventShape(time_field="tick_timestamp")
HISTORY = EventShape(time_field="timestamp")


def _everything(event: dict[str, Any]) -> Outside | None:
    return None


def nothing_pending(event: dict[str, Any]) -> bool:
    """The default of ``pending``: every recomputed event without a record is a difference."""
    return False


_DECISION_BRIEF = ("action", "power_mw", "state_of_charge_after_mwh", "charge_after_mwh", "reason")
_WORDING_FIELDS = frozenset(("reason", "policy", "event_id"))
"""What two versions of one event may differ in and still make the same decision: the reason's text, the
policy's name (a what-if under another policy that decides alike) and the id (recorded before the id took
the site and the tick time in, 2026-12-05). Any other field (a price, the tick
time, the emissions) is a record that does not describe its input: a divergence."""
_SHOWN_FIELDS = 5


def _differing(recorded: dict[str, Any] | None, recomputed: dict[str, Any] | None) -> tuple[str, ...]:
    if recorded is None or recomputed is None:
        return _DECISION_BRIEF
    names = [
        k for k in {**recorded, **recomputed} if k != "event_id" and recorded.get(k) != recomputed.get(k)
    ]
    return tuple(names[:_SHOWN_FIELDS])


def _reworded_only(recorded: dict[str, Any], recomputed: dict[str, Any]) -> bool:
    return all(
        recorded.get(name) == recomputed.get(name)
        for name in recorded.keys() | recomputed.keys()
        if name not in _WORDING_FIELDS
    )


def _brief(event: dict[str, Any] | None, keys: tuple[str, ...] = _DECISION_BRIEF) -> str:
    if event is None:
        return "nothing"
    return "{" + ", ".join(f"{k}={event[k]!r}" for k in keys if k in event) + "}"


def _readable(value: bytes, time_field: str | None = None) -> tuple[dict[str, Any] | None, str]:
    """The event ``value`` holds, or None and why it holds none: the fields the comparison reads."""
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, "not JSON"
    if not isinstance(event, dict):
        return None, "not a JSON object"
    for name in ("event_id", "site_id", *(() if time_field is None else (time_field,))):
        if not isinstance(event.get(name), str):
            return None, f"no {name}"
    source = event.get("source")
    if not (
        isinstance(source, dict)
        and isinstance(source.get("topic"), str)
        and all(type(source.get(name)) is int for name in ("partition", "offset"))
    ):
        return None, "no source (topic, partition, offset)"
    return event, ""


Key = tuple[bytes, int]
"""An event's input as its bytes name it (``source``): its topic and partition as one string, and its
offset. With the site and the tick time, what the ``event_id`` is made from, so two events with one key
are versions of one event (or of two sites' ticks at one offset of a ``prices`` topic created again)."""

_SOURCE = b'"source":{"topic":"'
_REST_OF_SOURCE = re.compile(rb'([^"\\]*","partition":[0-9]+),"offset":([0-9]+)\}')


def _event_key(value: bytes) -> Key | None:
    """The input an event's bytes name: read where the worker writes it (``"source":{"topic":"T",
    "partition":P,"offset":O}``, the event's last such object), else parsed (None: none). Found from the
    end, then matched: a regular expression's search from the start took half as long again, four times a
    tick."""
    at = value.rfind(_SOURCE)
    found = None if at < 0 else _REST_OF_SOURCE.match(value, at + len(_SOURCE))
    if found is not None:
        return found.group(1), int(found.group(2))
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    source = event.get("source") if isinstance(event, dict) else None
    if not isinstance(source, dict):
        return None
    topic, partition, offset = source.get("topic"), source.get("partition"), source.get("offset")
    if isinstance(topic, str) and type(partition) is int and type(offset) is int:
        return _named_partition(topic, partition), offset
    return None


def _where_named(value: bytes) -> str:
    """Where a recorded version came from, as far as its bytes tell: the input they name, if any."""
    key = _event_key(value)
    if key is None:
        return "a recorded record"
    topic_partition, offset = key
    return f"the event of input {topic_partition.decode(errors='replace')}@{offset}"


def _named_partition(topic: str, partition: int) -> bytes:
    """A key's first part, as the worker's bytes spell it: ``T","partition":P``."""
    return orjson.dumps(topic)[1:] + b',"partition":' + str(partition).encode()


def _fingerprint(value: bytes) -> bytes:
    """Which version of an event these bytes are: SHA-256, cut to 128 bits, the last bit set (an empty slot
    of :class:`_Column` is 16 zero bytes). Only versions of one event are told apart by it, and no recorded
    bytes can be made to match a recomputed event's without a second preimage of SHA-256 (127 bits)."""
    digest = hashlib.sha256(value).digest()
    return digest[:15] + _LAST_BYTE[digest[15]]


_LAST_BYTE = [bytes((b | 1,)) for b in range(256)]


class _Fingerprints:
    """The recorded versions by input, compactly: per input partition, the 16-byte fingerprints in one
    buffer by offset (one version an event: nearly every one), and a dict for the rest (an event recorded in
    versions that differ, an offset far from its partition's others). About 16 to 24 bytes an event, where
    a dict of ids and fingerprints took some 180: a replay of a year of 5-minute ticks for 1,000 sites (105 M
    ticks, two compared events each) needs a few GB, not 40. :meth:`add` and :meth:`pop` run four times a
    tick, so their common case (an event's one version, the next offset of its partition) is written out."""

    def __init__(self) -> None:
        self._columns: dict[bytes, _Column] = {}
        self._loose: dict[Key, bytes | frozenset[bytes]] = {}
        self._in_columns = 0

    def __bool__(self) -> bool:
        return self._in_columns > 0 or bool(self._loose)

    def get(self, key: Key) -> bytes | frozenset[bytes] | None:
        if self._loose:
            loose = self._loose.get(key)
            if loose is not None:
                return loose
        column = self._columns.get(key[0])
        return None if column is None else column.get(key[1])

    def pop(self, key: Key) -> bytes | frozenset[bytes] | None:
        if self._loose:
            loose = self._loose.pop(key, None)
            if loose is not None:
                return loose
        column = self._columns.get(key[0])
        if column is None:
            return None
        at = (key[1] - column.base) * _WIDTH
        slots = column.slots
        if at < 0 or at >= len(slots):
            return None
        found = slots[at : at + _WIDTH]
        if found == _EMPTY:
            return None
        slots[at : at + _WIDTH] = _EMPTY
        column.held -= 1
        self._in_columns -= 1
        return bytes(found)

    def add(self, key: Key, version: bytes) -> None:
        column = self._columns.get(key[0])
        if column is not None and not (self._loose and key in self._loose):
            at = (key[1] - column.base) * _WIDTH
            slots = column.slots
            if at == len(slots):  # the next offset: nearly every event of a log read in order
                slots += version
                column.held += 1
                self._in_columns += 1
                return
            if 0 <= at < len(slots) and slots[at : at + _WIDTH] in (_EMPTY, version):
                if slots[at : at + _WIDTH] == _EMPTY:
                    slots[at : at + _WIDTH] = version
                    column.held += 1
                    self._in_columns += 1
                return  # the same version again: a re-emitted duplicate
        self._add_otherwise(key, version)

    def _add_otherwise(self, key: Key, version: bytes) -> None:
        known = self.get(key)
        if known is None:
            column = self._columns.get(key[0])
            if column is None:
                column = self._columns[key[0]] = _Column(key[1])
            placed = column.put(key[1], version)
            if not placed and column.held <= _REBASE_AT_MOST:
                # The few offsets held are the outliers (the partition's first event recorded was a stray):
                # they go to the dict, and the buffer starts again here.
                for offset, kept in column.items():
                    self._loose[(key[0], offset)] = kept
                self._in_columns -= column.held
                column = self._columns[key[0]] = _Column(key[1])
                placed = column.put(key[1], version)
            if placed:
                self._in_columns += 1
            else:
                self._loose[key] = version
        elif isinstance(known, bytes):
            if known != version:
                self.pop(key)
                self._loose[key] = frozenset((known, version))
        else:
            self._loose[key] = known | {version}


_WIDTH = 16
_EMPTY = bytes(_WIDTH)
_GROWTH_ROOM = 4096
"""Slots a buffer may hold beyond four per version in it before an outlying offset goes to the dict
instead: a stray offset (a record of far offsets, a corrupt one) cannot make a buffer of billions of slots."""
_REBASE_AT_MOST = 16
"""A buffer holding at most this many versions when an offset lies too far from them starts again there."""


class _Column:
    """One input partition's fingerprints: 16 bytes at slot ``offset - base`` of a growing buffer (zeros:
    none). A bytearray, not an array of objects: a slot costs its 16 bytes."""

    __slots__ = ("base", "held", "slots")

    def __init__(self, first: int) -> None:
        self.base = first
        self.slots = bytearray()
        self.held = 0

    def items(self) -> list[tuple[int, bytes]]:
        found = []
        for index in range(len(self.slots) // _WIDTH):
            kept = bytes(self.slots[index * _WIDTH : (index + 1) * _WIDTH])
            if kept != _EMPTY:
                found.append((self.base + index, kept))
        return found

    def get(self, offset: int) -> bytes | None:
        at = (offset - self.base) * _WIDTH
        if at < 0 or at >= len(self.slots):
            return None
        found = self.slots[at : at + _WIDTH]
        return None if found == _EMPTY else bytes(found)

    def put(self, offset: int, version: bytes) -> bool:
        """Keep a version of an offset with none yet; False when the offset lies too far out to grow to."""
        size = len(self.slots) // _WIDTH
        low, high = min(self.base, offset), max(self.base + size, offset + 1)
        if high - low > size:
            if high - low > 4 * (self.held + 1) + _GROWTH_ROOM:
                return False
            if offset < self.base:  # below: room for as many again below, as re-emits go back
                new_base = max(0, min(offset, self.base - size // 2))
                self.slots[0:0] = bytes((self.base - new_base) * _WIDTH)
                self.base = new_base
            else:  # above: the bytearray's own growth (amortised)
                self.slots.extend(bytes((offset + 1 - self.base - size) * _WIDTH))
        at = (offset - self.base) * _WIDTH
        self.slots[at : at + _WIDTH] = version
        self.held += 1
        return True


class Comparison:
    """One event kind's comparison, fed in three passes so that neither side is held whole.

    1. :meth:`add_recorded` with every recorded event (re-emitted duplicates collapse): each is kept as the
       fingerprints of its versions, by its input.
    2. :meth:`add_recomputed` with every recomputed event: one whose bytes are its event's only recorded
       version agrees and is counted, nothing more; any other is kept whole, and its event's other
       recorded versions are noted as :attr:`unmet`.
    3. If :attr:`unmet`, :meth:`add_unmet` with every recorded event again: the unmet versions' bytes are
       kept, and so are the versions of events first recorded since pass 1 that a recomputed event met nothing
       for (a live worker records a tick it was deciding as the replay began). Then :meth:`report`.
    """

    def __init__(self, site_filter: str | None = None) -> None:
        self._site_filter = site_filter
        self._recorded = _Fingerprints()
        """Input -> the fingerprint of its event's recorded version (a frozenset of them if they differ)."""
        self._disagreed: dict[Key, frozenset[bytes]] = {}
        """Events met by a recomputed one that their recorded versions disagree with: those versions."""
        self._unkeyed: dict[bytes, str] = {}
        """Recorded events that name no input, with where they were read: always one-sided, so kept whole."""
        self._agreed: dict[str, int] = {}
        self._recomputed_alone: dict[bytes, str] = {}
        self._recorded_alone: dict[bytes, str] = {}
        """Recorded versions no recomputed event agreed with, with where they were read."""
        self._alone_by_key: dict[Key, bytes] = {}
        """Recomputed events no recorded version met in pass 1, by input: pass 3 may find them recorded."""
        self._late: dict[Key, set[bytes]] = {}
        """Those events' versions recorded since pass 1 (seen in pass 3)."""
        self._named: dict[tuple[str, int], bytes] = {}
        self._unverified: dict[Outside, dict[str, int]] = {}
        self._last_recorded: dict[bytes, int] = {}
        """Per input partition (as :func:`_named_partition` spells it), the latest input a recorded event
        names: the worker had recorded this topic's event of every tick of the partition up to there."""
        self._elsewhere: dict[str, str] = {}
        """Records of sites another replay compares, found away from their site's partition: where -> why."""

    def add_elsewhere(self, where: str, site_id: str, home: int) -> None:
        """A recorded event of a site this replay does not compare, read away from the site's partition
        (``home``), where a worker never writes it: the replay that compares the site reads only that
        partition, so no one would compare it (an auditor's review forged an action there, unseen by
        ``--processes 3``). Reported as a record that is no event of this replay; read twice, said once."""
        self._elsewhere[where] = (
            f"an event of site {site_id!r} away from its site's partition ({home}), so compared by no "
            "process of a replay split by partition: replay with --processes 1 to compare it"
        )

    def add_recorded(self, value: bytes, where: str = "") -> None:
        """``where``: the record's coordinates (``topic[partition]@offset``), for the report's line on a
        record that is no event."""
        key = _event_key(value)
        if key is None:
            self._unkeyed[value] = where
            return
        self._recorded.add(key, _fingerprint(value))
        partition, offset = key
        if offset > self._last_recorded.get(partition, -1):
            self._last_recorded[partition] = offset

    def last_recorded(self, topic: str, partition: int) -> int:
        """The latest offset of the input partition that a recorded event names (-1: none does). A
        worker handles a partition's ticks in order and sends their events to a topic in order, so it had
        recorded this topic's event of every tick up to there."""
        return self._last_recorded.get(_named_partition(topic, partition), -1)

    def add_recomputed(self, value: bytes, site_id: str, source: tuple[str, int, int] | None = None) -> None:
        """``source``: the input record the event was made from (topic, partition, offset), which its bytes
        name; given, they are not searched for it."""
        key = _event_key(value) if source is None else self._source_key(*source)
        known = None if key is None else self._recorded.pop(key)
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
            self._alone_by_key[key] = value
        self._recomputed_alone[value] = site_id

    def _source_key(self, topic: str, partition: int, offset: int) -> Key:
        named = self._named.get((topic, partition))
        if named is None:
            named = self._named[(topic, partition)] = _named_partition(topic, partition)
        return named, offset

    @property
    def unmet(self) -> bool:
        """Whether the record is read again: some recorded versions met no recomputed event (their bytes are
        wanted), or some recomputed events met no recorded one (they may have been recorded since)."""
        return bool(self._recorded) or any(self._disagreed.values()) or bool(self._alone_by_key)

    def add_unmet(self, value: bytes, outside: Placement = _everything, where: str = "") -> None:
        """Keep the bytes of an unmet recorded version if its input lies in the replayed range (``outside``
        says None; checked here too, so a replay from an offset does not keep every recorded event before
        it), or of a version recorded since pass 1 of an event only recomputed so far. One whose input could
        not be replayed (:attr:`Outside.unverified`) is counted, once whatever its versions."""
        key = _event_key(value)
        if key is None:
            return
        versions = self._recorded.get(key)
        if versions is None:
            versions = self._disagreed.get(key)
            if versions is None:
                if key in self._alone_by_key:
                    self._late.setdefault(key, set()).add(value)
                return
        version = _fingerprint(value)
        wanted = version == versions or (isinstance(versions, frozenset) and version in versions)
        if not wanted:
            return
        event, _ = _readable(value)
        placed = (
            None if event is None else outside(event)
        )  # one that is no event: reported whatever its range
        if placed is None:
            self._recorded_alone[value] = where
        elif placed.unverified and event is not None:
            self._recorded.pop(key)  # its versions' fingerprints: counted once, the later copies not kept
            site_id = str(event["site_id"])
            if self._site_filter in (None, site_id):
                by_site = self._unverified.setdefault(placed, {})
                by_site[site_id] = by_site.get(site_id, 0) + 1

    def report(
        self,
        shape: EventShape = ACTIONS,
        outside: Placement = _everything,
        pending: Callable[[dict[str, Any]], bool] = nothing_pending,
    ) -> AuditReport:
        """The report: agreed events counted; the others paired (:func:`_pairing`), a recorded one only if
        its input lies in the replayed range (``outside`` says None). A recomputed event with no recorded
        version is *pending* rather than a difference if ``pending`` holds for it (the worker had not yet
        committed its tick). The first divergence per site is the earliest by tick time."""
        self._meet_late()
        report = AuditReport(unverified={why: dict(sites) for why, sites in self._unverified.items()})
        for site_id, agreed in self._agreed.items():
            report.sites[site_id] = SiteReport(ticks=agreed, matched=agreed)
        # Events are parsed a pair at a time: held parsed, as they were, the events of a what-if replay
        # (each one differs) took 13-16 KB apiece, 4.9 GB for 300,000 ticks (an auditor's review).
        old_events: dict[Pairing, tuple[bytes, str]] = {}
        # Sorted, not in set order (which follows the per-process hash seed): of two recorded versions of
        # one id that both differ, every run reports the same one.
        for value, where in sorted({**self._recorded_alone, **self._unkeyed}.items()):
            event, why = _readable(value, shape.time_field)
            if event is None:
                report.unreadable.append(f"{where or _where_named(value)}: {why}")
            elif outside(event) is None:
                old_events[_pairing(event)] = (value, where)
        report.unreadable.extend(f"{where}: {why}" for where, why in self._elsewhere.items())
        report.unreadable.sort()
        pairs = _Pairs(report, shape, self._site_filter, pending)
        for value in self._recomputed_alone:
            new_event = orjson.loads(value)
            recorded = old_events.pop(_pairing(new_event), None)
            if recorded is None:
                pairs.add(None, new_event)
            else:
                pairs.add(orjson.loads(recorded[0]), new_event, recorded[1])
        for value, where in old_events.values():
            pairs.add(orjson.loads(value), None, where)
        pairs.close()
        return report

    def _meet_late(self) -> None:
        """Met as in pass 2, the recorded versions pass 3 found of events only recomputed in pass 2: agreed
        when the recomputed bytes are the only version, else the other versions are kept to pair with it.
        Their input was replayed (the recomputed event comes from it), so no range applies."""
        for key, versions in self._late.items():
            value = self._alone_by_key.pop(key)
            if versions == {value}:
                site_id = self._recomputed_alone.pop(value)
                self._agreed[site_id] = self._agreed.get(site_id, 0) + 1
            else:
                self._recorded_alone.update(dict.fromkeys(versions - {value}, ""))
        self._late.clear()


def compare(
    recorded: Iterable[bytes],
    recomputed: Mapping[bytes, str],
    *,
    shape: EventShape = ACTIONS,
    site_filter: str | None = None,
    outside: Placement = _everything,
    pending: Callable[[dict[str, Any]], bool] = nothing_pending,
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
            comparison.add_unmet(value, outside)
    return comparison.report(shape, outside, pending)


Pairing = tuple[str, int, int]
"""The input record an event names (``source``: topic, partition, offset): what its two versions share."""


def _pairing(event: dict[str, Any]) -> Pairing:
    source = event["source"]
    return (source["topic"], source["partition"], source["offset"])


class _Pairs:
    """The events found on one side alone, fed a pair at a time (paired by the input they name) and
    counted into ``report``; a site's first difference is kept, the rest of each pair dropped."""

    def __init__(
        self,
        report: AuditReport,
        shape: EventShape,
        site_filter: str | None,
        pending: Callable[[dict[str, Any]], bool] = nothing_pending,
    ) -> None:
        self._report, self._shape, self._site_filter, self._pending = report, shape, site_filter, pending
        self._firsts: dict[str, Divergence] = {}

    def add(
        self, old_event: dict[str, Any] | None, new_event: dict[str, Any] | None, recorded_at: str = ""
    ) -> None:
        sample = new_event or old_event
        assert sample is not None
        site_id = sample["site_id"]
        if self._site_filter is not None and site_id != self._site_filter:
            return
        site = self._report.sites.setdefault(site_id, SiteReport())
        if old_event is None and self._pending(sample):
            site.pending += 1
            return
        site.ticks += 1
        source = sample["source"]
        divergence = Divergence(
            site_id=site_id,
            tick_timestamp=sample[self._shape.time_field],
            source=f"{source['topic']}[{source['partition']}]@{source['offset']}",
            recorded=old_event,
            recomputed=new_event,
            recorded_at=recorded_at,
        )
        if old_event is None:
            site.extra += 1
        elif new_event is None:
            site.missing += 1
        else:
            _count(site, divergence.difference)
        current = self._firsts.get(site_id)
        if current is None or _shown_before(divergence, current):
            self._firsts[site_id] = divergence

    def close(self) -> None:
        for site_id, site in self._report.sites.items():
            site.first = self._firsts.get(site_id)


def _count(site: SiteReport, kind: Difference) -> None:
    if kind is Difference.REWORDED:
        site.reworded += 1
        return
    site.diverged += 1
    if kind is Difference.OLDER_VERSION:
        site.diverged_older_version += 1
    elif kind is Difference.EMISSIONS:
        site.diverged_in_emissions += 1


def _shown_before(one: Divergence, other: Divergence) -> bool:
    """A site's report shows its first difference of the decision, else its first of the others."""
    return (one.difference.rank, one.tick_timestamp) < (other.difference.rank, other.tick_timestamp)


def merge_reports(reports: list[AuditReport]) -> AuditReport:
    """One report of several replays' (e.g. of disjoint partitions): counts added; per site, the first
    difference shown is chosen as :func:`compare` chooses it (:func:`_shown_before`)."""
    merged = AuditReport()
    firsts: dict[str, Divergence] = {}
    for report in reports:
        merged.unreadable.extend(report.unreadable)
        for why, sites in report.unverified.items():
            by_site = merged.unverified.setdefault(why, {})
            for site_id, count in sites.items():
                by_site[site_id] = by_site.get(site_id, 0) + count
        for site_id, part in report.sites.items():
            site = merged.sites.setdefault(site_id, SiteReport())
            site.add_counts(part)
            if part.first is not None:
                current = firsts.get(site_id)
                if current is None or _shown_before(part.first, current):
                    firsts[site_id] = part.first
    for site_id, first in firsts.items():
        merged.sites[site_id].first = first
    # A record away from its site's partition is said by each replay that read its partition.
    merged.unreadable = sorted(set(merged.unreadable))
    return merged
