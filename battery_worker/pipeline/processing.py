"""From input record to output records: the data path between the Kafka loop and the domain.

``record → PriceTick (validate) → site → dispatch (policy, battery) → events``. No I/O happens here: the
Kafka worker hands records in and sends what comes out, and the audit replay runs the very same code.
Every input record ends in exactly one of four outcomes, counted in :class:`Counters`:

* ``applied``: the tick went through the policy and the battery; action, status and history are emitted.
  The action carries the site plan around the battery's step, which :func:`dispatch` made.
* ``stale``: its timestamp is at or before the site's last applied tick (a duplicate or out of order).
  Nothing is emitted; the site's ``ticks_stale`` counts it.
* ``already_applied``: the site's restored state already reflects this record (a re-read after a crash or
  rebalance). Nothing is emitted: its events were acknowledged before that state was written.
* ``rejected``: not a valid tick; the original bytes go to the dead-letter topic with the reason. Besides a
  malformed message, three valid-looking ticks are rejected so that one bad record cannot spoil a site: a
  tick on another partition than its site's home partition (:mod:`battery_worker.pipeline.partitioning`),
  a tick stamped more than ``max_tick_ahead_s`` after its record's Kafka timestamp (applied, it would
  make every later real tick of the site stale), and one stamped before
  :data:`~battery_worker.ticks.EARLIEST_REAL_TIME` (a producer's zero time, which applied would be an
  order). The rules read only the record, so the audit replay decides alike.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import ValidationError

from battery_worker.battery import BatteryState
from battery_worker.dispatch import Outcome, SiteState, dispatch, new_site_state
from battery_worker.errors import InvalidTick, InvalidValue
from battery_worker.events import BatteryStateRecord, event_name, named_event_id
from battery_worker.frozen import fast_init
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.payloads import (
    HISTORY_BY_SITE,
    Source,
    action_payload,
    dumped,
    encoded,
    history_key,
    history_payload,
    outcome_emissions,
    state_payload,
    status_payload,
)
from battery_worker.policies.base import PolicyMemory
from battery_worker.settings import DEFAULT_MAX_TICK_AHEAD_S, TopicNames
from battery_worker.sites import SiteDirectory, SiteSetup
from battery_worker.ticks import (
    DEFAULT_SITE_ID,
    EARLIEST_REAL_TIME,
    PriceTick,
    seconds_too_far_ahead,
    site_id_problem,
    tick_error,
)

log = logging.getLogger(__name__)

OutcomeKind = Literal["applied", "stale", "already_applied", "rejected"]

DLQ_MAX_VALUE_BYTES = 900_000
"""Dead letters keep the original bytes up to this size (in a record batch of its own, under Kafka's default
``message.max.bytes``, 1 MiB); a larger input is cut there and the ``dlq.truncated_from_bytes`` header
gives its real size, so one absurd message can never stop the worker."""
DLQ_MAX_KEY_BYTES = 1_000
DLQ_MAX_SOURCE_HEADER_BYTES = 64_000
"""The input's own headers are kept on its dead letter up to this many bytes as encoded (names renamed,
values, their lengths); past it the rest are left out and ``dlq.source_headers_dropped`` counts them, so
value, key and headers together stay under Kafka's default ``message.max.bytes`` (1 MiB)."""
SOURCE_HEADER_PREFIX = "source.header."
"""An input's header ``h`` is ``source.header.h`` on its dead letter: the dead letter's own headers
(``error``, ``source.offset``, …) can never be confused with, or shadowed by, a producer's."""
_HISTORY_HEADERS = (HISTORY_BY_SITE,)
NO_TIMESTAMP = -1
"""Kafka's "no timestamp" (records of the pre-0.10 format); such a record's tick time is not bounded."""


@fast_init
@dataclass(frozen=True, slots=True)
class InputRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = NO_TIMESTAMP
    headers: Sequence[tuple[str, bytes | None]] = ()
    """The producer's headers, as read: only a dead letter carries them on (prefixed)."""


@fast_init
@dataclass(frozen=True, slots=True)
class OutputRecord:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    partition_key: bytes | None = None
    """What the partition is chosen by when it is not the key (as Kafka Streams' ``StreamPartitioner``):
    a history record's key is unique per tick, but its partition follows its site, so a site's history
    lies in one partition, in order, beside the site's actions."""


@dataclass(slots=True)
class Counters:
    applied: int = 0
    stale: int = 0
    already_applied: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.applied + self.stale + self.already_applied + self.rejected


def merge_counters(parts: list[Counters]) -> Counters:
    """The counters of several processors (a replay split over processes) as one."""
    total = Counters()
    for part in parts:
        total.applied += part.applied
        total.stale += part.stale
        total.already_applied += part.already_applied
        total.rejected += part.rejected
        for name, count in part.rejected_by_reason.items():
            total.rejected_by_reason[name] = total.rejected_by_reason.get(name, 0) + count
        for name, count in part.actions.items():
            total.actions[name] = total.actions.get(name, 0) + count
    return total


@dataclass(frozen=True, slots=True)
class _RestoredSource:
    """Where a restored site's state was read up to, kept until its next tick. The state record's
    ``SourceRef`` is a pydantic model of about 500 bytes; this holds the same three fields in about 100,
    the topic's name shared (10,000 ``mpc`` sites: 4 MB, ``bench/state_memory.py``)."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class _Site:
    state: SiteState
    source: Source | None
    home: int
    setup: SiteSetup
    """The directory's setup of the site (it never changes for a site id), held so a tick looks it up once."""
    key: bytes
    """The site id encoded: the key of its action, status and state records."""
    plans_machines: bool
    ticks_stale: int = 0


_tick_from_json = PriceTick.__pydantic_validator__.validate_json
"""``PriceTick.model_validate_json`` without its Python frame and its checks of arguments never given: run
once per tick, 2.0 µs where that took 2.5 (timeit)."""


def _source_headers(source: Sequence[tuple[str, bytes | None]]) -> tuple[tuple[str, bytes | None], ...]:
    """An input's headers as its dead letter carries them: renamed under :data:`SOURCE_HEADER_PREFIX`,
    in order (a null value stays null), up to :data:`DLQ_MAX_SOURCE_HEADER_BYTES`."""
    kept: list[tuple[str, bytes | None]] = []
    size = 0
    for name, value in source:
        renamed = SOURCE_HEADER_PREFIX + name
        # As the record encodes it: the name renamed, the value, and their lengths' varints (a review of
        # the diff kept 10,000 empty headers as 0 bytes: a dead letter of 1,059,242 bytes).
        size += len(renamed.encode("utf-8", "replace")) + (len(value) if value else 0) + _HEADER_FRAMING_BYTES
        if size > DLQ_MAX_SOURCE_HEADER_BYTES:
            dropped = len(source) - len(kept)
            return (*kept, ("dlq.source_headers_dropped", str(dropped).encode()))
        kept.append((renamed, value))
    return tuple(kept)


_HEADER_FRAMING_BYTES = 10
"""At most the two varints of a header's name and value lengths under the bound (5 bytes each)."""


def _outside_window(energy_mwh: float, setup: SiteSetup) -> str | None:
    """How a stored energy lies outside the site's configured window, or None when within it."""
    config = setup.config
    low, high = config.min_energy_mwh, config.max_energy_mwh
    if low - 1e-9 <= energy_mwh <= high + 1e-9:
        return None
    side = "above" if energy_mwh > high else "below"
    return f"{energy_mwh:.2f} MWh, {side} {low:g}–{high:g} MWh of {config.capacity_mwh:g} MWh"


_CONFUSED = str.maketrans({"l": "1", "i": "1", "o": "0", "_": "", "-": "", ".": "", " ": ""})


def _typed_alike(site_id: str) -> str:
    """A site id with the characters a typist confuses made one: case, l/I/1, O/0, and separators."""
    return site_id.lower().translate(_CONFUSED)


def _first_few(sites: list[str]) -> str:
    """The first five of a restore's sites, for its one warning line."""
    return ", ".join(sites[:5]) + (", ..." if len(sites) > 5 else "")


def _behind(stored: datetime | None, held: datetime | None) -> bool:
    """Whether a stored state's last tick is older than the held one's (no tick yet is oldest)."""
    return held is not None and (stored is None or stored < held)


@fast_init
@dataclass(frozen=True, slots=True)
class Handled:
    kind: OutcomeKind
    site_id: str | None
    outputs: tuple[OutputRecord, ...]
    outcome: Outcome | None = None
    error: InvalidValue | None = None
    stale_at: tuple[datetime, datetime] | None = None
    """A stale tick's own time and the site's last applied tick's: what its log line says."""


class TickProcessor:
    """Holds the state of the sites of the assigned partitions and turns records into output records.

    ``prices_partitions`` is the partition count of the input topic: it decides each site's home partition.
    ``max_tick_ahead_s`` bounds how far a tick's own time may lie after its record's Kafka timestamp.
    ``emit_status=False`` leaves the status event out of the outputs (an applied tick then has two): the
    audit replay compares actions and history only, and the status is a fifth of a tick's cost.
    """

    def __init__(
        self,
        sites: SiteDirectory,
        topics: TopicNames,
        *,
        prices_partitions: int,
        max_message_bytes: int = 65536,
        max_tick_ahead_s: float = DEFAULT_MAX_TICK_AHEAD_S,
        emit_status: bool = True,
    ) -> None:
        self._directory = sites
        self._topics = topics
        self._max_bytes = max_message_bytes
        self._max_ahead_s = max_tick_ahead_s
        self._partitions = prices_partitions
        self._emit_status = emit_status
        self._sites: dict[str, _Site] = {}
        self._dirty: set[str] = set()
        self._warned_other_log: set[str] = set()
        self._warned_moved: set[str] = set()
        self._warned_settings: set[str] = set()
        self._warned_misspelt: set[str] = set()
        self._warned_unpaid: set[str] = set()
        self.counters = Counters()

    @property
    def prices_partitions(self) -> int:
        return self._partitions

    @prices_partitions.setter
    def prices_partitions(self, partitions: int) -> None:
        """The worker learns the real count from the broker at start and at each assignment or rewind
        (``prices`` may grow while it runs); sites in memory are re-homed."""
        if partitions != self._partitions:
            self._partitions = partitions
            for site_id, site in self._sites.items():
                site.home = home_partition(site_id, partitions)

    @property
    def site_count(self) -> int:
        return len(self._sites)

    def sites(self) -> dict[str, SiteState]:
        return {site_id: site.state for site_id, site in self._sites.items()}

    # --- state: restore, drop, snapshot -------------------------------------------------------------

    @staticmethod
    def _stored_memory(record: BatteryStateRecord, setup: SiteSetup) -> PolicyMemory | None:
        """The policy's stored memory, or a fresh one where it cannot be read.

        As an unreadable state record (``kafka/store.py``), an unreadable memory never stops the worker: the
        compacted record would stop every worker assigned its partition, at every start. The battery's own
        state is kept; only the policy starts over (its decisions may differ until its window fills again).
        """
        if record.policy != setup.policy.name:
            return setup.policy.initial_memory()
        try:
            return setup.policy.load_memory(record.policy_memory)
        except InvalidValue as error:
            log.error(
                "policy memory of site %r is unreadable, its %s policy starts afresh (battery kept): %s",
                record.site_id,
                record.policy,
                error,
            )
            return setup.policy.initial_memory()

    def restore(self, records: Iterable[BatteryStateRecord]) -> int:
        """Load stored site states; returns how many were loaded.

        The latest per site wins, unless its last tick is older than that of the state already loaded for
        the site: a late write of a worker the group had dropped, or a record stored before ``prices``
        grew, in the partition the site has left (docs/delivery.md), whatever order they are read in.
        """
        loaded = 0
        moved: list[str] = []
        outside: list[str] = []
        policy_changed: list[str] = []
        restored: list[str] = []
        for record in records:
            held = self._sites.get(record.site_id)
            if held is not None and _behind(record.last_tick_at, held.state.battery.last_tick_at):
                continue
            setup = self._directory.setup(record.site_id)
            battery = BatteryState(
                state_of_charge_mwh=record.state_of_charge_mwh,
                last_tick_at=record.last_tick_at,
                ticks_applied=record.ticks_applied,
                energy_bought_mwh=record.energy_bought_mwh,
                energy_stored_mwh=record.energy_stored_mwh,
                energy_drawn_mwh=record.energy_drawn_mwh,
                energy_delivered_mwh=record.energy_delivered_mwh,
                charging_cost=record.charging_cost,
                avoided_cost=record.avoided_cost,
                delivered_today_mwh=record.delivered_today_mwh,
            )
            source = record.source
            home = home_partition(record.site_id, self._partitions)
            if source.partition != home and record.site_id not in self._warned_moved:
                self._warned_moved.add(record.site_id)
                moved.append(f"{record.site_id} ({source.partition} → {home})")
            if record.site_id not in self._warned_settings:  # said once, not at every rebalance
                where = _outside_window(record.state_of_charge_mwh, setup)
                changed = record.policy != setup.policy.name
                if where is not None:
                    outside.append(f"{record.site_id} ({where})")
                if changed:
                    policy_changed.append(f"{record.site_id} ({record.policy} → {setup.policy.name})")
                if where is not None or changed:
                    self._warned_settings.add(record.site_id)
            memory = self._stored_memory(record, setup)
            self._sites[record.site_id] = _Site(
                SiteState(battery=battery, policy_memory=memory, emissions=record.emissions_state()),
                _RestoredSource(sys.intern(source.topic), source.partition, source.offset),
                home,
                setup,
                record.site_id.encode(),
                setup.plans_machines,
                record.ticks_stale,
            )
            self._dirty.discard(record.site_id)
            loaded += 1
            restored.append(record.site_id)
        misspelt = self._misspelt(restored)
        if moved:
            log.warning(
                "%d restored sites were stored from another prices partition than their home now (%s): the "
                "partition count of prices changed; a site's state is found only by the owner of the "
                "partition it was stored from (docs/delivery.md, 'Adding partitions')",
                len(moved),
                _first_few(moved),
            )
        if outside:
            log.warning(
                "%d restored sites hold energy outside their battery's state-of-charge window as configured "
                "now (%s): the battery settings changed (capacity, window or preset; a site taken out of "
                "sites has the default battery). The stored energy is kept: such a battery only discharges "
                "(or charges) back into its window (docs/operations.md, 'Changing settings')",
                len(outside),
                _first_few(outside),
            )
        if policy_changed:  # a site taken out of `sites` runs the default policy: said, as its battery is
            log.warning(
                "%d restored sites were stored under another policy than they run now (%s): the settings "
                "changed; each keeps its battery, and its policy starts afresh",
                len(policy_changed),
                _first_few(policy_changed),
            )
        if misspelt:
            log.warning(
                "%d restored sites are not configured under sites, each read as a configured site that has "
                "no state (%s): a misspelt id? They run the default battery and policy",
                len(misspelt),
                _first_few(misspelt),
            )
        return loaded

    def _misspelt(self, restored: Iterable[str]) -> list[str]:
        """Restored sites without a ``[sites.<id>]`` of their own whose id reads as that of a configured site
        no state is held for, once the characters a typist confuses are taken as one (case, ``l``/``1``,
        ``O``/``0``, separators): ``[sites.nmc-l]`` written for ``nmc-1`` gave that site the default battery
        (100 MWh for its 40) without a word (a fleet operator's review). Ids merely alike are not said:
        ``site-10`` beside a configured new ``site-20`` is two sites (a review of the diff)."""
        configured = self._directory.configured
        lonely: dict[str, str] = {}
        for site_id in configured:
            if site_id not in self._sites:
                lonely.setdefault(_typed_alike(site_id), site_id)
        if not lonely:
            return []
        found = []
        for site_id in restored:
            if site_id in configured or site_id in self._warned_misspelt:
                continue
            like = lonely.get(_typed_alike(site_id))
            if like is not None and like != site_id:
                self._warned_misspelt.add(site_id)
                found.append(f"{site_id} (sites.{like})")
        return found

    def _warn_unpaid(self, site_id: str) -> None:
        """A site the ``site`` policy plans given a tick whose hash and token prices are both 0, said once per
        site and process: no machine earns, so every one is curtailed. ``feed`` of a market file without
        ``--hash-price`` and ``--token-price`` sends such ticks, and feed cannot know the worker's policy (a
        site manager's review: every machine off for a month, and not a word)."""
        if site_id in self._warned_unpaid:
            return
        self._warned_unpaid.add(site_id)
        log.warning(
            "site %s: a tick with hash_price and token_price both 0 under the site policy: no machine earns, "
            "so every one is curtailed (a market file fed without --hash-price and --token-price?)",
            site_id,
        )

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the sites of partitions this worker no longer owns; returns how many were dropped."""
        gone = set(partitions)
        doomed = [site_id for site_id, site in self._sites.items() if site.home in gone]
        for site_id in doomed:
            del self._sites[site_id]
            self._dirty.discard(site_id)
        return len(doomed)

    def forget(self, site_id: str) -> None:
        """Forget one site, as a tombstone in the state topic says (it starts afresh at its next tick)."""
        self._sites.pop(site_id, None)
        self._dirty.discard(site_id)

    def drop_all(self) -> None:
        self._sites.clear()
        self._dirty.clear()

    def state_records_of(self, partition: int) -> list[OutputRecord]:
        """The state record of every site homed on ``partition``, changed or not: what a worker taking the
        partition over would restore (the audit replay's hand-over at a settings change)."""
        homed = [site_id for site_id, site in self._sites.items() if site.home == partition]
        return [self._state_record(site_id) for site_id in homed]

    def take_state_records(self) -> list[OutputRecord]:
        """State records of every site changed since the last call, to write after the events are acked."""
        records = [self._state_record(site_id) for site_id in sorted(self._dirty)]
        self._dirty.clear()
        return records

    # --- the data path ----------------------------------------------------------------------------------

    def handle(self, record: InputRecord, now_ms: int = 0) -> Handled:
        try:
            tick, site_id = self._parse(record)
        except InvalidValue as error:
            return self._reject(record, error, now_ms)
        # The attribute first: with unknown sites accepted (the default) a tick pays no call for the rule.
        if not self._directory.accept_unknown and (refused := self._directory.refusal(site_id)) is not None:
            return self._reject(record, InvalidTick("site_id", site_id, refused), now_ms)
        site = self._sites.get(site_id)
        home = home_partition(site_id, self._partitions) if site is None else site.home
        if record.partition != home:
            problem = (
                f"ticks of this site belong on partition {home} of {self._partitions} (its key's partition); "
                "key price messages by site id with a murmur2 partitioner (librdkafka's default is not: "
                "partitioner=murmur2_random), and restart a producer that has not seen prices grow"
            )
            if record.key == b"":  # hashed by its producer as a key of its own (a producer review)
                problem += "; this one's key is empty, which a producer places as a key of its own"
            return self._reject(record, InvalidTick("site_id", site_id, problem), now_ms)
        ahead_s = seconds_too_far_ahead(tick.timestamp, record.timestamp_ms, self._max_ahead_s)
        if ahead_s is not None:
            problem = (
                f"{ahead_s:.0f} s after the record's Kafka timestamp "
                f"(at most worker.max_tick_ahead_s={self._max_ahead_s:g})"
            )
            return self._reject(record, InvalidTick("timestamp", tick.timestamp.isoformat(), problem), now_ms)
        if tick.timestamp < EARLIEST_REAL_TIME:
            problem = (
                f"before {EARLIEST_REAL_TIME.isoformat()}: a producer's zero or default time? (applied, it "
                "would be decided as a real price)"
            )
            return self._reject(record, InvalidTick("timestamp", tick.timestamp.isoformat(), problem), now_ms)
        if site is None:
            setup = self._directory.setup(site_id)
            state = new_site_state(setup.config, setup.policy)
            site = _Site(state, None, home, setup, site_id.encode(), setup.plans_machines)
            self._sites[site_id] = site
        source = record  # its topic, partition and offset: the coordinates the state and events carry
        last = site.source
        if last is not None and record.partition == last.partition and record.offset <= last.offset:
            if site.state.is_stale(tick):  # the state covers it: a record read again (restart, rewind)
                self.counters.already_applied += 1
                return Handled("already_applied", site_id, ())
            # A tick newer than the state at an offset the state says it passed: not this log's offsets.
            self._warn_other_log(site_id, record, last)
        if site.state.is_stale(tick):
            last_at = site.state.battery.last_tick_at
            assert last_at is not None, "a tick is stale only after an applied one"
            site.ticks_stale += 1
            site.source = source
            self._dirty.add(site_id)
            self.counters.stale += 1
            return Handled("stale", site_id, (), stale_at=(tick.timestamp, last_at))
        setup = site.setup
        if site.plans_machines and not (tick.hash_price or tick.token_price):
            self._warn_unpaid(site_id)
        outcome = dispatch(
            tick,
            site.state,
            setup.config,
            setup.policy,
            carry_hours=setup.carry_hours,
            site_model=setup.site,
            curtail=site.plans_machines,
        )
        site.state, site.source = outcome.state, source
        self._dirty.add(site_id)
        self.counters.applied += 1
        action = outcome.step.action.value
        self.counters.actions[action] = self.counters.actions.get(action, 0) + 1
        return Handled("applied", site_id, self._events(site_id, site, tick, outcome, source), outcome)

    def _warn_other_log(self, site_id: str, record: InputRecord, last: Source) -> None:
        """Said once per site: ``prices`` deleted and created again (its offsets start over) under a kept
        state topic. Its ticks were skipped as already applied until the offsets passed the stored one."""
        if site_id in self._warned_other_log:
            return
        self._warned_other_log.add(site_id)
        log.warning(
            "site %s: tick at offset %d of %s-%d is newer than its state, which was stored at offset %d: "
            "the topic was created again under the kept state topic; applying it (a tick at or before the "
            "state's last is still stale)",
            site_id,
            record.offset,
            record.topic,
            record.partition,
            last.offset,
        )

    def _parse(self, record: InputRecord) -> tuple[PriceTick, str]:
        if record.value is None:
            raise InvalidTick("value", None, "empty message (tombstone) is not a price tick")
        if len(record.value) > self._max_bytes:
            raise InvalidTick("value", f"{len(record.value)} bytes", f"larger than {self._max_bytes} bytes")
        try:
            tick = _tick_from_json(record.value)
        except ValidationError as error:
            raise tick_error(error) from None
        key_site = None
        if record.key is not None:
            try:
                key_site = record.key.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidTick("key", repr(record.key[:50]), "message key is not UTF-8") from None
            if not key_site:
                key_site = None  # an empty key is no key: the body's site_id, else the default site
            elif key_site not in self._sites and (problem := site_id_problem(key_site)) is not None:
                raise InvalidTick("key", repr(record.key[:50]), problem)  # a known site's id passed it
        if key_site is not None and tick.site_id is not None and key_site != tick.site_id:
            raise InvalidTick("site_id", tick.site_id, f"disagrees with the message key {key_site!r}")
        return tick, key_site or tick.site_id or DEFAULT_SITE_ID

    def _reject(self, record: InputRecord, error: InvalidValue, now_ms: int) -> Handled:
        self.counters.rejected += 1
        reason = error.field
        self.counters.rejected_by_reason[reason] = self.counters.rejected_by_reason.get(reason, 0) + 1
        headers: tuple[tuple[str, bytes | None], ...] = (
            ("error", str(error).encode("utf-8", "replace")[:1000]),
            ("error.field", error.field.encode("utf-8", "replace")),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
            ("source.timestamp_ms", str(record.timestamp_ms).encode()),
            ("dlq.timestamp_ms", str(now_ms).encode()),
        )
        key, value = record.key, record.value or b""
        if len(value) > DLQ_MAX_VALUE_BYTES:
            headers += (("dlq.truncated_from_bytes", str(len(value)).encode()),)
            value = value[:DLQ_MAX_VALUE_BYTES]
        if key is not None and len(key) > DLQ_MAX_KEY_BYTES:
            headers += (("dlq.key_truncated_from_bytes", str(len(key)).encode()),)
            key = key[:DLQ_MAX_KEY_BYTES]
        if record.headers:
            headers += _source_headers(record.headers)
        dlq = OutputRecord(self._topics.dlq, key, value, None, headers)
        return Handled("rejected", None, (dlq,), error=error)

    def _events(
        self, site_id: str, site: _Site, tick: PriceTick, outcome: Outcome, source: Source
    ) -> tuple[OutputRecord, ...]:
        setup = site.setup
        tick_at = tick.timestamp.isoformat()
        name = event_name(source.topic, source.partition, source.offset, site_id, tick_at)
        policy = setup.policy.name
        key = site.key
        plan = outcome.plan
        assert plan is not None, "the processor dispatches with the site's model"
        emissions = encoded(outcome_emissions(tick, outcome))
        action = action_payload(
            named_event_id("action", name), site_id, tick, outcome, policy, source, plan, emissions
        )
        history = history_payload(named_event_id("history", name), site_id, tick, outcome, source, emissions)
        actions = OutputRecord(self._topics.actions, key, dumped(action))
        histories = OutputRecord(
            self._topics.history,
            history_key(site_id, tick_at),
            dumped(history),
            headers=_HISTORY_HEADERS,
            partition_key=key,
        )
        if not self._emit_status:
            return (actions, histories)
        status = status_payload(
            named_event_id("status", name),
            site_id,
            site.state.battery,
            site.ticks_stale,
            setup.config,
            policy,
            emissions,
        )
        return (actions, OutputRecord(self._topics.status, key, dumped(status)), histories)

    def _state_record(self, site_id: str) -> OutputRecord:
        site = self._sites[site_id]
        assert site.source is not None, "a dirty site has handled a record"
        policy = site.setup.policy
        record = state_payload(
            site_id,
            site.source,
            site.state.battery,
            site.ticks_stale,
            policy.name,
            policy.dump_memory(site.state.policy_memory),
            site.state.emissions,
        )
        return OutputRecord(self._topics.state, site.key, dumped(record), site.source.partition)
