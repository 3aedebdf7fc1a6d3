"""The audit replay: re-read ``prices`` with a fresh state, recompute every decision, compare with the record.

It runs the worker's own data path (:class:`TickProcessor`) over the input log, so with the same settings it
must reproduce the recorded ``battery.actions`` byte for byte. It never writes to the live topics: the
recomputed stream goes to a file or to topics under another prefix, for what-if analysis.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from battery_worker.audit import (
    ACTIONS,
    HISTORY,
    AuditReport,
    Comparison,
    Outside,
    Placement,
    merge_reports,
    nothing_pending,
)
from battery_worker.errors import InvalidConfig
from battery_worker.events import BatteryStateRecord
from battery_worker.kafka.batching import key_partition, send_and_wait
from battery_worker.kafka.clients import make_admin, make_producer, make_reader, start_client
from battery_worker.kafka.exceptions import ReplayProcessFailed
from battery_worker.kafka.reading import partition_ends, read_by_site, read_to_end
from battery_worker.kafka.records import ConsumedRecord, input_record
from battery_worker.kafka.tools.overview import committed_offsets
from battery_worker.kafka.topics import partition_counts
from battery_worker.outputs import write_atomically
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.payloads import HISTORY_BY_SITE, key_site
from battery_worker.pipeline.processing import Counters, OutputRecord, TickProcessor, merge_counters
from battery_worker.settings import Settings, TopicNames, topic_name_problem

Progress = Callable[[int, int | None], None]
"""Called as records are replayed: how many so far, and about how many in all (from the partitions' start
and end offsets; None while unknown)."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    site: str | None = None
    from_offset: int | None = None
    from_time: datetime | None = None
    to_offset: int | None = None
    """Replay each partition up to this offset, not including it: the stretch before a settings change,
    audited with the settings in force then."""
    to_time: datetime | None = None
    """Replay each partition up to its first record written at or after this time (not including it)."""
    changed_at: datetime | None = None
    """With ``changed_settings``: the time the workers' settings changed (records written at or after it
    are decided with the new ones). Each partition's sites are handed over at its first such record, their
    state carried as a restarted worker restores it."""
    changed_settings: Settings | None = None
    """The settings in force from ``changed_at`` on (their sites, batteries and policies; the topics are
    the replay's own)."""
    out_file: Path | None = None
    output_prefix: str | None = None
    processes: int = 1
    """Replay the ``prices`` partitions in this many processes (at most one per partition; one with
    ``site``, whose ticks are all on one): a site's ticks, state and events all belong to its home
    partition, so partitions replay independently."""
    partitions: tuple[int, ...] | None = None
    """Only these ``prices`` partitions (what each of the processes replays); None: all."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    report: AuditReport
    history: AuditReport
    records_read: int
    seconds: float
    counters: Counters
    absent_topics: tuple[str, ...] = ()
    """Topics of the record (actions, history) that do not exist: nothing can have been recorded there."""
    changed_records: int = 0
    """Records decided with the settings after a change (``changed_at``), of ``records_read``."""
    changed_partitions: int = 0
    """Partitions whose sites were handed over to the settings after a change."""
    prices_begin: dict[int, int] = field(default_factory=dict)
    """``prices`` partitions replayed from their beginning whose first offset is not 0, with it: their
    earlier ticks are deleted, and the replay starts there with a fresh battery."""
    refused: dict[str, str] = field(default_factory=dict)
    """Input records the recomputation dead-lettered, by coordinates (``prices[1]@0``, as a divergence's
    ``source``), with why; the first :data:`REFUSALS_KEPT`. A decision recorded for one of them is "vs
    recomputed nothing": an upgrade review could not tell why (a version that dead-letters what the
    recording one applied)."""

    @property
    def identical(self) -> bool:
        return self.report.identical and self.history.identical and not self.compared_nothing

    @property
    def compared_nothing(self) -> bool:
        """No decision in the range, recorded or recomputed, pending or not: an audit of nothing (a site id
        mistyped, an offset past the end) proves nothing, so it does not pass. Recorded decisions that could
        not be verified (their prices deleted) are something: that is the verdict, not the range."""
        reports = (self.report, self.history)
        return all(
            not r.unreadable and not r.unverified and r.totals().ticks == 0 and r.totals().pending == 0
            for r in reports
        )

    @property
    def records_per_second(self) -> float:
        return self.records_read / self.seconds if self.seconds > 0 else float("inf")


def check_range(options: ReplayOptions) -> None:
    """A stop at or before the start asks for nothing: refused, not replayed as an audit of nothing."""
    start, stop = options.from_offset, options.to_offset
    if start is not None and stop is not None and stop <= start:
        problem = f"must be above --from-offset {start}: the range holds no offset"
        raise InvalidConfig("--to-offset", stop, problem)
    since, until = options.from_time, options.to_time
    if since is not None and until is not None and until <= since:
        problem = f"must be after --from-time {since.isoformat()}: the range holds no time"
        raise InvalidConfig("--to-time", until.isoformat(), problem)


def check_output_prefix(prefix: str, names: TopicNames) -> None:
    """Refuse a ``--output-prefix`` whose topics are no valid names or would be one of the live topics."""
    if not prefix.strip("."):
        raise InvalidConfig("--output-prefix", prefix, "is empty: name the topics' prefix")
    live = {names.actions, names.status, names.history, names.state, names.dlq, names.prices}
    # Every topic _publish may write: the processor's outputs, renamed.
    written = [f"{prefix}.{topic}" for topic in (names.actions, names.status, names.history, names.dlq)]
    clash = sorted(live.intersection(written))
    if clash:
        raise InvalidConfig("--output-prefix", prefix, f"would write to the live topic {clash[0]}")
    for topic in written:
        problem = topic_name_problem(topic)
        if problem is not None:
            raise InvalidConfig("--output-prefix", prefix, problem)


async def replay(
    settings: Settings, options: ReplayOptions, progress: Progress | None = None
) -> ReplayResult:
    names = settings.topics.names()
    check_range(options)
    if options.output_prefix is not None:
        check_output_prefix(options.output_prefix, names)
    started = time.perf_counter()
    admin = make_admin(settings.kafka)
    await start_client(admin, settings.kafka)
    try:
        counts = await partition_counts(admin, [names.prices, names.actions, names.history])
    finally:
        await admin.close()
    if names.prices not in counts:
        raise InvalidConfig("topics.prices", names.prices, "topic not found")
    # Not an error: a what-if replay to a file or topics may run where no worker ever recorded.
    absent = tuple(topic for topic in (names.actions, names.history) if topic not in counts)
    if options.processes > 1 and counts[names.prices] > 1 and options.site is None:
        result = await _in_processes(settings, options, counts[names.prices], started, progress)
        return replace(result, absent_topics=absent)
    # A site's decisions come only from its home partition (its ticks elsewhere are dead-lettered).
    home = None if options.site is None else home_partition(options.site, counts[names.prices])
    prices = [
        TopicPartition(names.prices, p)
        for p in range(counts[names.prices])
        if (options.partitions is None or p in options.partitions) and home in (None, p)
    ]

    reader = make_reader(settings.kafka)
    await start_client(reader, settings.kafka)

    def recomputing(decided_by: Settings) -> TickProcessor:
        return TickProcessor(
            decided_by.site_directory(),
            names,
            prices_partitions=counts[names.prices],
            max_message_bytes=decided_by.worker.max_message_bytes,
            max_tick_ahead_s=decided_by.worker.max_tick_ahead_s,
            emit_status=options.output_prefix is not None,  # compared: actions and history; published: all
        )

    processor = recomputing(settings)
    change = _Change.asked(options, lambda: recomputing(options.changed_settings or settings))
    # Neither side is held whole (audit.Comparison): the recorded events are indexed first, each recomputed
    # event is met as it is made, and only the recorded events left unmet are read again for their bytes.
    comparisons = {names.actions: Comparison(options.site), names.history: Comparison(options.site)}
    outputs: list[OutputRecord] = []
    first_offsets: dict[int, int] = {}
    refused: dict[str, str] = {}
    read = 0
    owned = _owned_sites(options, counts[names.prices])

    async def read_recorded(topics: list[str], keep: Callable[[str], Callable[[bytes, str], None]]) -> None:
        for topic in topics:
            partitions = counts.get(topic, 0)
            await _recorded(
                reader,
                topic,
                partitions,
                _site_partitions(options, counts[names.prices], partitions),
                owned,
                keep(topic),
                comparisons[topic].add_elsewhere,
                history=topic == names.history,
            )

    try:
        # For the progress's total; asked first, while no fetch is outstanding: a broker answers a
        # connection's requests in order, so after a read this waits behind a fetch held open at an end.
        log_starts = await reader.beginning_offsets(prices)
        # The ticks replayed are those written before the record is read, so a replay beside a running
        # worker recomputes no tick whose events came after that read (they would count as extra).
        ends = await partition_ends(reader, prices, timeout_s=60)
        await read_recorded(list(comparisons), lambda topic: comparisons[topic].add_recorded)
        stops = await _stop_offsets(reader, prices, options, ends)
        starts = await _start_offsets(reader, prices, options)
        # An offset past a partition's end reads nothing there: sought as given, it was out of range, and the
        # reader's reset to the earliest record replayed the whole partition.
        starts = {tp: None if start is None else min(start, stops[tp]) for tp, start in starts.items()}
        total = sum(
            max(0, stops[tp] - (log_starts[tp] if start is None else start)) for tp, start in starts.items()
        )  # about: transaction markers take offsets too
        if progress is not None:
            progress(read, total)  # the total known before the first batch, or if there is none
        async for batch in read_to_end(
            reader,
            [tp for tp in prices if tp in starts],
            timeout_s=3600,
            start_offsets=_known(starts),
            stop_offsets=stops,
        ):
            for at in range(0, len(batch), _RECORDS_BETWEEN_YIELDS):
                for message in batch[at : at + _RECORDS_BETWEEN_YIELDS]:
                    first_offsets.setdefault(message.partition, message.offset)
                    deciding = processor if change is None else change.processor(processor, message)
                    handled = deciding.handle(input_record(message), message.timestamp)
                    if handled.error is not None and len(refused) < REFUSALS_KEPT:
                        coordinates = f"{message.topic}[{message.partition}]@{message.offset}"
                        refused[coordinates] = str(handled.error)[:REFUSAL_CHARS]
                    for output in handled.outputs:
                        comparison = comparisons.get(output.topic)
                        if comparison is not None and handled.site_id is not None:
                            where = (message.topic, message.partition, message.offset)
                            comparison.add_recomputed(output.value, handled.site_id, where)
                    writing = options.output_prefix is not None or options.out_file is not None
                    if writing and options.site in (None, handled.site_id):
                        outputs.extend(handled.outputs)
                read += len(batch[at : at + _RECORDS_BETWEEN_YIELDS])
                if progress is not None:
                    progress(read, total)
                await asyncio.sleep(0)  # a stop signal's cancellation comes in here, not after the fetch

        by_time = options.from_time is not None
        count = counts[names.prices]
        outside = _placement(
            names.prices,
            starts,
            log_starts,
            first_offsets,
            ends,
            by_time=by_time,
            partitions=count,
            stops=stops,
        )

        unmet = [topic for topic, comparison in comparisons.items() if comparison.unmet]
        undecided: dict[str, Callable[[dict[str, Any]], bool]] = dict.fromkeys(comparisons, nothing_pending)
        if unmet:
            # Before the record's second read: a tick below an offset committed now has its events in it.
            all_prices = [TopicPartition(names.prices, p) for p in range(counts[names.prices])]
            committed = await committed_offsets(settings.kafka, settings.worker.group_id, all_prices)
            for topic, comparison in comparisons.items():
                recorded_up_to = {
                    tp.partition: comparison.last_recorded(tp.topic, tp.partition) for tp in all_prices
                }
                undecided[topic] = _undecided_by(committed, recorded_up_to)
        await read_recorded(unmet, lambda topic: partial(_add_unmet, comparisons[topic], outside))
    finally:
        await reader.stop()

    report = comparisons[names.actions].report(ACTIONS, outside, undecided[names.actions])
    history = comparisons[names.history].report(HISTORY, outside, undecided[names.history])
    begin = {
        tp.partition: log_starts[tp]
        for tp, start in starts.items()
        if start is None and first_offsets.get(tp.partition, log_starts[tp]) > 0
    }
    if options.out_file is not None:
        lines = b"".join(o.value + b"\n" for o in outputs if o.topic == names.actions)
        write_atomically(options.out_file, lines)
    if options.output_prefix is not None:
        await _publish(settings, options.output_prefix, outputs)
    seconds = time.perf_counter() - started
    if change is None:
        return ReplayResult(
            report, history, read, seconds, processor.counters, absent, prices_begin=begin, refused=refused
        )
    return ReplayResult(
        report,
        history,
        read,
        seconds,
        merge_counters(change.counters(processor)),
        absent,
        changed_records=change.records_after,
        changed_partitions=change.partitions_handed_over,
        prices_begin=begin,
        refused=refused,
    )


class _Change:
    """The hand-over at a settings change: each partition's sites go from the processor deciding with the
    settings before to one deciding with those after, at the partition's first record written at or after
    the change, with their state as a worker restarted with the new settings restores it (its battery,
    totals and emissions; its policy's memory, or a fresh one for another policy)."""

    def __init__(self, at_ms: int, make_after: Callable[[], TickProcessor]) -> None:
        self._at_ms = at_ms
        self._make_after = make_after
        self._after: TickProcessor | None = None
        self._handed_over: set[int] = set()
        self.records_after = 0

    @property
    def partitions_handed_over(self) -> int:
        return len(self._handed_over)

    @staticmethod
    def asked(options: ReplayOptions, make_after: Callable[[], TickProcessor]) -> _Change | None:
        if options.changed_at is None or options.changed_settings is None:
            return None
        return _Change(int(options.changed_at.timestamp() * 1000), make_after)

    def processor(self, before: TickProcessor, message: ConsumedRecord) -> TickProcessor:
        partition = message.partition
        if partition not in self._handed_over:
            if message.timestamp < self._at_ms:
                return before
            if self._after is None:
                self._after = self._make_after()
            stored = before.state_records_of(partition)
            self._after.restore(BatteryStateRecord.model_validate_json(record.value) for record in stored)
            before.drop_partitions([partition])
            self._handed_over.add(partition)
        assert self._after is not None
        self.records_after += 1
        return self._after

    def counters(self, before: TickProcessor) -> list[Counters]:
        return [before.counters] + ([] if self._after is None else [self._after.counters])


_RECORDS_BETWEEN_YIELDS = 100
"""Records recomputed between two returns to the event loop: a fetch holds up to 50,000, which under
``mpc`` or ``site`` took 15 s and more to recompute, so a stop signal waited that long (at 270 ticks/s,
100 take under half a second)."""
REFUSALS_KEPT = 10_000
"""How many dead-lettered input records a replay keeps the reason of (:attr:`ReplayResult.refused`), per
process: a reason is shown only beside a recorded decision, so a log of poison records costs no more."""
REFUSAL_CHARS = 300
"""A kept reason's length at most: it names the field and value, which may be a whole record."""


def _placement(
    prices: str,
    starts: dict[TopicPartition, int | None],
    log_starts: dict[TopicPartition, int],
    first_offsets: dict[int, int],
    ends: dict[TopicPartition, int],
    *,
    by_time: bool = False,
    partitions: int | None = None,
    stops: dict[TopicPartition, int] | None = None,
) -> Placement:
    """Where a recorded event's input lies against what was replayed: from its partition's first offset
    replayed to where the partition ended as the replay began (a live worker records later ticks meanwhile).

    A partition's ticks from the start asked for (its beginning, an offset, a time) to the first one read
    are deleted (retention, or deleted records: the first offset read, as the broker's log start may be
    answered wrongly), and a partition with nothing left to read has them all deleted below its log start.
    An event naming another ``prices`` topic was made from ticks this replay cannot read. A time asked for
    that finds a partition's first record left asks, as far as can be told, for the deleted ones before it
    too (when they were published is deleted with them).

    With ``partitions`` (the count of ``prices``), an event whose tick lies away from its site's home under
    that count was decided under another count: ``prices`` grew since. This replay rejects such a tick (as a
    worker now would), and in several processes the site's owner does not read its partition: its recorded
    decisions were left out of every count (a review run grew ``prices`` from 3 to 6 partitions, and 192,000
    recorded decisions went unsaid).

    ``stops``: where a stop asked for (``to_offset``, ``to_time``) ends a partition before its end; an
    event of a tick at or after it is out of range by choice.
    """
    asked_stops = {tp.partition: offset for tp, offset in (stops or {}).items()}
    stops = {tp.partition: offset for tp, offset in ends.items()}
    log_start = {tp.partition: offset for tp, offset in log_starts.items()}
    asked = {
        tp.partition: 0 if start is None or (by_time and start <= log_start.get(tp.partition, 0)) else start
        for tp, start in starts.items()
    }
    if by_time:  # a partition with nothing left has no record at any time: its deleted ones may be after it
        asked.update(
            {tp.partition: 0 for tp, end in ends.items() if tp not in starts and log_starts[tp] >= end}
        )

    def outside(event: dict[str, Any]) -> Outside | None:
        source = event["source"]
        if source["topic"] != prices:
            return Outside.OTHER_PRICES_TOPIC
        partition, offset = source["partition"], source["offset"]
        if partitions is not None and home_partition(str(event["site_id"]), partitions) != partition:
            return Outside.AWAY_FROM_HOME
        stop = stops.get(partition)
        if stop is None:
            return Outside.BEFORE_START  # a partition this replay does not read (another process's)
        first = first_offsets.get(partition, min(stop, log_start.get(partition, stop)))
        if offset >= stop:
            return Outside.AFTER_END
        if offset >= asked_stops.get(partition, stop):
            return Outside.AFTER_STOP
        if offset < first:  # at or after the start asked for (0: the beginning), yet not read: deleted
            start = asked.get(partition)
            return Outside.PRICES_DELETED if start is not None and offset >= start else Outside.BEFORE_START
        if partition not in first_offsets:
            return Outside.BEFORE_START  # a start past every tick of the partition
        return None

    return outside


async def _in_processes(
    settings: Settings, options: ReplayOptions, partitions: int, started: float, progress: Progress | None
) -> ReplayResult:
    """Each process replays a share of the partitions (round robin); their reports are merged.

    Sites do not span partitions (each has one home partition; ticks elsewhere are rejected and emit no
    action or history), so the merged report is the one a single process gives. Each process writes its
    progress to its own two slots of a shared array, which this one sums for ``progress``. Cancelled (a
    stop signal), this one terminates them: a pool would wait for their whole replay before stopping.
    """
    if options.out_file is not None or options.output_prefix is not None:
        raise InvalidConfig("--processes", options.processes, "replays in one process when it writes output")
    count = min(options.processes, partitions)
    groups = [tuple(range(first, partitions, count)) for first in range(count)]
    portable = _picklable(settings)
    if options.changed_settings is not None:
        options = replace(options, changed_settings=_picklable(options.changed_settings))
    context = multiprocessing.get_context("spawn")
    shared = context.RawArray("q", [0, _UNKNOWN] * count)
    pipes = [context.Pipe(duplex=False) for _ in groups]
    shares = [
        context.Process(
            target=_replay_share,
            args=(portable, replace(options, processes=1, partitions=group), share, shared, sender),
            name=f"battery-worker replay {share + 1}/{count}",
            daemon=True,
        )
        for share, (group, (_, sender)) in enumerate(zip(groups, pipes, strict=True))
    ]
    results: dict[int, ReplayResult] = {}
    try:
        for process in shares:
            process.start()
        for _, sender in pipes:
            sender.close()  # the children hold theirs: a child that dies closes its pipe, and recv says so
        while len(results) < count:
            await asyncio.sleep(0.25)
            for share, (receiver, _) in enumerate(pipes):
                if share not in results and receiver.poll():
                    results[share] = _share_result(receiver, shares[share])
            if progress is not None:
                totals = shared[1::2]
                progress(sum(shared[0::2]), None if _UNKNOWN in totals else sum(totals))
    finally:
        started_shares = [process for process in shares if process.pid is not None]
        for process in started_shares:
            if process.is_alive():
                process.terminate()
        for process in started_shares:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
    merged = [results[share] for share in range(count)]
    return ReplayResult(
        merge_reports([r.report for r in merged]),
        merge_reports([r.history for r in merged]),
        sum(r.records_read for r in merged),
        time.perf_counter() - started,
        merge_counters([r.counters for r in merged]),
        changed_records=sum(r.changed_records for r in merged),
        changed_partitions=sum(r.changed_partitions for r in merged),
        prices_begin={p: o for r in merged for p, o in r.prices_begin.items()},
        refused={at: why for r in merged for at, why in r.refused.items()},
    )


def _picklable(settings: Settings) -> Settings:
    """The same settings as a plain Settings (the loaded one's class is local to load_settings: not
    picklable, and the processes are spawned)."""
    return Settings.model_construct(_fields_set=settings.model_fields_set, **dict(settings))


def _share_result(receiver: Connection, process: BaseProcess) -> ReplayResult:
    """A share's report, or its failure raised here."""
    try:
        done, value = receiver.recv()
    except EOFError:
        process.join(5)
        raise ReplayProcessFailed(
            f"{process.name} ended (exit code {process.exitcode}) before sending its report"
        ) from None
    if not done:
        raise value
    result: ReplayResult = value
    return result


_UNKNOWN = -1
"""A share's total before its process has learnt it."""


def _replay_share(
    settings: Settings, options: ReplayOptions, share: int, shared: Any, results: Connection
) -> None:
    """One process's share (the process's target): its report, or its failure, sent to the parent."""
    # A terminal's Ctrl-C reaches the whole process group: the parent stops the shares, which just end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def report(read: int, total: int | None) -> None:
        shared[2 * share] = read
        shared[2 * share + 1] = _UNKNOWN if total is None else total

    try:
        outcome: tuple[bool, Any] = (True, asyncio.run(replay(settings, options, report)))
    except Exception as error:
        outcome = (False, _portable(error))
    results.send(outcome)
    results.close()


def _portable(error: Exception) -> Exception:
    """The error itself if it survives pickling (an error whose ``__init__`` takes other arguments than
    it passes on does not), else one that names it."""
    try:
        pickle.loads(pickle.dumps(error))  # noqa: S301 (the bytes just made here)
    except Exception:
        return ReplayProcessFailed(f"{type(error).__name__}: {error}")
    return error


def _undecided_by(
    committed: dict[TopicPartition, int | None], recorded_up_to: dict[int, int] | None = None
) -> Callable[[dict[str, Any]], bool]:
    """Whether a recomputed event's tick lies past what the worker group is known to have recorded on its
    partition: its committed offset, and the latest tick an event of the same topic names.

    The worker commits a tick's offset only once its events are acknowledged, so a tick below the committed
    offset has its events in the record, and one at or past it may not have been decided yet: a worker
    behind (a backlog, a stop) is not a difference. But an event of a later tick in the same topic proves
    the tick's event recorded, whatever the commit says (a partition's ticks are handled, and their events
    to one topic sent, in order): an auditor's review deleted 30,000 actions and moved the group's offset
    back, and the replay passed them as "not yet decided". Another topic's events prove nothing of this
    one's: a batch's topics are written at once, and a worker killed between their acknowledgements left
    history without actions, which its restart completes (a review of the diff).
    A partition the group has committed nothing on is all undecided, unless the group has committed
    nowhere: then no worker of this group is known to have run (a what-if, another group id) and every
    tick counts.
    """
    if all(offset is None for offset in committed.values()):
        return nothing_pending
    decided = {
        tp.partition: max(offset or 0, (recorded_up_to or {}).get(tp.partition, -1) + 1)
        for tp, offset in committed.items()
    }

    def undecided(event: dict[str, Any]) -> bool:
        source = event["source"]
        return bool(source["offset"] >= decided.get(source["partition"], 0))

    return undecided


def _known(starts: dict[TopicPartition, int | None]) -> dict[TopicPartition, int]:
    return {tp: offset for tp, offset in starts.items() if offset is not None}


async def _stop_offsets(
    reader: AIOKafkaConsumer,
    prices: list[TopicPartition],
    options: ReplayOptions,
    ends: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Where each partition's replay stops (excluded): its end as the replay began, or before it the stop
    asked for (an offset, or the first record at or after a time; a time past every record is the end)."""
    if options.to_offset is not None:
        return {tp: min(end, options.to_offset) for tp, end in ends.items()}
    if options.to_time is not None:  # a partition with no record at or after the time: to its end
        found = await _first_offsets_at(reader, prices, options.to_time)
        return {tp: min(end, found.get(tp, end)) for tp, end in ends.items()}
    return dict(ends)


async def _start_offsets(
    reader: AIOKafkaConsumer, prices: list[TopicPartition], options: ReplayOptions
) -> dict[TopicPartition, int | None]:
    """Where each partition starts: the beginning (None), an offset, or the first record at a time."""
    if options.from_offset is not None:
        return {tp: options.from_offset for tp in prices}
    if options.from_time is not None:
        return dict(await _first_offsets_at(reader, prices, options.from_time))
    return dict.fromkeys(prices)


async def _first_offsets_at(
    reader: AIOKafkaConsumer, prices: list[TopicPartition], at: datetime
) -> dict[TopicPartition, int]:
    """Each partition's first record written at or after ``at``; a partition with none is left out.

    A hit stamped before the time asked is none: the embedded broker answers offset 0 with timestamp -1
    for a time past every record, which replayed the whole log."""
    wanted = int(at.timestamp() * 1000)
    found = await reader.offsets_for_times(dict.fromkeys(prices, wanted))
    return {tp: hit.offset for tp, hit in found.items() if hit is not None and hit.timestamp >= wanted}


def _owned_sites(options: ReplayOptions, partitions: int) -> Callable[[str], bool] | None:
    """Which sites' recorded events this replay compares, judged from the record key (None: every one).

    One process of several replays some partitions; the events of sites homed elsewhere are another
    process's to compare, and are skipped here without parsing them.
    """
    if options.site is None and options.partitions is None:
        return None
    chosen = options.partitions
    homes: dict[str, bool] = {}

    def owned(site_id: str) -> bool:
        known = homes.get(site_id)
        if known is None:
            home = home_partition(site_id, partitions)
            known = homes[site_id] = (options.site is None or site_id == options.site) and (
                chosen is None or home in chosen
            )
        return known

    return owned


def _site_partitions(options: ReplayOptions, prices: int, partitions: int) -> list[int]:
    """The partitions of an event topic that keep the events this replay compares.

    Events are partitioned by their site (actions by their key, history by its ``partition_key``), so one
    site's are all on one partition, and a topic with as many partitions as ``prices`` keeps each site's
    events on the site's home partition: a process of several reads only its own share.
    """
    if options.site is not None:
        return [key_partition(options.site.encode(), partitions)] if partitions else []
    if options.partitions is not None and partitions == prices:
        return [p for p in range(partitions) if p in options.partitions]
    return list(range(partitions))


async def _recorded(
    reader: AIOKafkaConsumer,
    topic: str,
    partitions: int,
    first: list[int],
    owned: Callable[[str], bool] | None,
    keep: Callable[[bytes, str], None],
    elsewhere: Callable[[str, str, int], None],
    *,
    history: bool,
) -> None:
    """Hand ``keep`` the recorded events of a topic, less those of sites another replay owns; of those,
    one read away from its site's partition (by the layout by site) goes to ``elsewhere``: the replay that
    owns the site reads only the site's partition, so it would be compared by none.

    A record whose key names no site is kept: the comparison judges it by its content.
    """

    def site_of(key: bytes | None) -> str | None:
        return key_site(key, history=history)

    marker = HISTORY_BY_SITE if history else None
    async for batch in read_by_site(reader, topic, partitions, first, site_of, timeout_s=3600, marker=marker):
        for message in batch:
            if message.value is None:
                continue
            site_id = site_of(message.key)
            where = f"{topic}[{message.partition}]@{message.offset}"
            if owned is not None and site_id is not None and not owned(site_id):
                home = key_partition(site_id.encode(), partitions)
                if home != message.partition and (marker is None or marker in message.headers):
                    elsewhere(where, site_id, home)
                continue
            keep(message.value, where)


def _add_unmet(comparison: Comparison, outside: Placement, value: bytes, where: str) -> None:
    comparison.add_unmet(value, outside, where)


async def _publish(settings: Settings, prefix: str, outputs: list[OutputRecord]) -> None:
    producer = make_producer(settings.kafka)
    await start_client(producer, settings.kafka)
    try:
        renamed = (replace(o, topic=f"{prefix}.{o.topic}", partition=None) for o in outputs)
        await send_and_wait(producer, renamed)
    finally:
        await producer.stop()
