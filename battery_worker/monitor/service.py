"""The price monitor's loop: poll the API, publish each new tick once to ``prices``, keep going.

1. At start, while the broker cannot be reached (it starts after the monitor, or is down), the monitor waits
   and retries with back-off as the worker does (:class:`~battery_worker.kafka.connecting.Connector`), and a
   stop ends the wait; what waiting cannot cure (authentication, TLS, authorization) stops it with one line.
   Then the last tick already in ``prices`` for the site is read back (its home partition, start to the
   fetch high watermark), so a restarted monitor never publishes a tick twice.
2. Each poll: GET the API (:mod:`.fetching`), parse and validate (:mod:`.answers`), keep the ticks newer
   than the last published one, publish them oldest first keyed by site, and advance the last published
   timestamp only over ticks whose delivery the broker acknowledged (acks=all).
3. A failed poll (timeout, HTTP status, connection, malformed answer, publish) is one log line and one
   count of its kind, then an exponential back-off (reset by a good poll); nothing raises out of a poll.
4. :meth:`Monitor.stop` (SIGTERM, SIGINT) lets the poll in flight finish, then the producer closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError
from pydantic import ValidationError

from battery_worker.errors import BatteryWorkerError, InvalidConfig
from battery_worker.kafka.backoff import Backoff
from battery_worker.kafka.clients import make_producer, make_reader, start_client
from battery_worker.kafka.connecting import Connector, StopRequested
from battery_worker.kafka.reading import read_to_end
from battery_worker.kafka.tools.feed import tick_payload
from battery_worker.kafka.topics import partition_count
from battery_worker.monitor.answers import Rejected, Selection, latest, parse_answer, select_new
from battery_worker.monitor.fetching import FetchFailed, fetch
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.settings import Settings, shown_url
from battery_worker.ticks import PriceTick, seconds_too_far_ahead

log = logging.getLogger(__name__)

ErrorKind = Literal["timeout", "http_status", "connection", "malformed", "invalid_tick", "publish"]
ERROR_KINDS: tuple[ErrorKind, ...] = (
    "timeout",
    "http_status",
    "connection",
    "malformed",
    "invalid_tick",
    "publish",
)

CLOSE_TIMEOUT_S = 10.0
REPORTED_ITEMS_KEPT = 4096


@dataclass(slots=True)
class MonitorStats:
    polls: int = 0
    published: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """Per kind: failed polls, and for ``invalid_tick`` each bad item once (however many answers list it)."""
    last_tick_at: datetime | None = None
    """The newest tick in ``prices`` for the site: read back at start, then each one published."""
    ready: bool = False
    """The read-back is done and the producer started: polls are running."""
    last_poll_ok: bool = False
    """How the last poll that ended went (one in flight does not count: a slow answer flapped /health)."""
    good_polls: int = 0
    late: int = 0
    """Ticks the API listed only after a newer one was published (a backfill): never published, as the
    worker would take them as stale; each counted and said once."""


class Monitor:
    """Polls ``settings.monitor.url`` and publishes to ``settings.topics.prices``; ``await run()``."""

    def __init__(self, settings: Settings) -> None:
        if settings.monitor.url is None:
            raise InvalidConfig("monitor.url", None, "give --url or BATTERY_WORKER_MONITOR__URL")
        self.settings = settings
        self.config = settings.monitor
        self.url: str = settings.monitor.url
        self.shown_url = shown_url(self.url)
        """What the logs say of the URL: its query values (an API key) masked."""
        self.stats = MonitorStats()
        self.requested = asyncio.Event()
        """Set by :meth:`stop`; what the wait for the broker watches too."""
        self._reported: dict[str, None] = {}  # bad items already reported, oldest first (bounded)
        self._connector: Connector | None = None
        self._behind_said: datetime | None = None
        self._published: dict[datetime, Prices] = {}
        """The prices of the newest ticks in ``prices`` for the site, by time (bounded): read back at start,
        then each one published. A correction, and a tick listed late, are told by it."""
        self._unsure = False
        """A publish failed: its ticks may have been written all the same (the acknowledgement lost), so
        ``prices`` is read back before the next publish (a broker stall put a tick there twice)."""
        self._in_flight: list[asyncio.Future[object]] = []
        """A failed publish's sends: the read-back waits for them to end, as one still queued in the
        producer could land after it and be sent again."""
        self._late_said: set[datetime] = set()
        """Late ticks already said, within the times known published: its own memory, not the bad items'
        (a diff review's 11,293 late ticks a poll were counted again at every poll, and pushed those out)."""
        self._retry_after: float | None = None

    @property
    def connect_failure(self) -> str | None:
        """Why the broker could not be reached yet (for ``/health``); None once connected."""
        return None if self._connector is None else self._connector.failure

    @property
    def stopping(self) -> bool:
        return self.requested.is_set()

    def stop(self) -> None:
        self.requested.set()

    async def run(self, *, max_polls: int | None = None) -> MonitorStats:
        headers = self.config.headers()
        settings, kafka = self.settings, self.settings.kafka
        connector = Connector(
            settings, self, Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        )
        self._connector = connector
        producer = make_producer(kafka, linger_ms=0)
        try:
            try:
                if settings.topics.create:
                    await connector.ensure_topics(for_workers=False)
                await connector.start(producer)
            except StopRequested:
                log.info("stop requested before the broker could be reached")
                return self.stats
            # Step 1
            await self._read_back()
            self.stats.ready = True
            log.info(
                "monitoring %s every %g s for site %s; last tick in %s: %s (headers: %s)",
                self.shown_url,
                self.config.interval_s,
                self.config.site,
                settings.topics.prices,
                "none" if self.stats.last_tick_at is None else self.stats.last_tick_at.isoformat(),
                ", ".join(sorted(headers)) or "none",  # names only, never values
                extra={"site_id": self.config.site, "topic": settings.topics.prices},
            )
            backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
            while not self.stopping:
                ok = await self.poll_once(producer, headers)  # Steps 2 and 3
                if max_polls is not None and self.stats.polls >= max_polls:
                    break
                if ok:
                    backoff.reset()
                # Never sooner than the interval: a failing or rate-limiting API got 6 polls in the first
                # minute of errors (after 1, 2 and 4 s...) where it gets 1 when it answers. Nor sooner than
                # the API's Retry-After, up to the longest back-off.
                delay = self.config.interval_s if ok else max(self.config.interval_s, backoff.next_delay())
                if not ok and self._retry_after is not None:
                    longest = max(self.config.backoff_max_s, self.config.interval_s)
                    delay = max(delay, min(self._retry_after, longest))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.requested.wait(), delay)
        finally:
            # Step 4
            self.stats.ready = False
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_S)
            errors = ", ".join(f"{kind} {n}" for kind, n in sorted(self.stats.errors.items())) or "none"
            log.info(
                "monitor stopped: %d polls, %d ticks published, errors: %s",
                self.stats.polls,
                self.stats.published,
                errors,
            )
        return self.stats

    async def poll_once(self, producer: AIOKafkaProducer, headers: dict[str, str]) -> bool:
        """One poll; True when the answer was usable (all of it or some valid ticks) and published."""
        self.stats.polls += 1
        self._retry_after = None
        config = self.config
        try:
            body = await fetch(
                self.url, headers, timeout_s=config.timeout_s, max_bytes=config.max_answer_bytes
            )
        except FetchFailed as failure:
            self._retry_after = failure.retry_after_s
            return self._failed(failure.kind, failure.detail)
        answer = parse_answer(body, config.site)
        if answer.rejected and answer.rejected[0].kind == "malformed":
            return self._failed("malformed", answer.rejected[0].reason)
        fresh = self._unreported(answer.rejected)
        if fresh:
            self.stats.errors["invalid_tick"] += len(fresh)
            log.warning(
                "%s: %d of %d items rejected (invalid_tick), e.g. item %s: %s",
                self.shown_url,
                len(fresh),
                len(answer.rejected) + len(answer.ticks),
                fresh[0].index,
                fresh[0].reason,
                extra={"site_id": config.site},
            )
        if answer.rejected and not answer.ticks:
            self.stats.last_poll_ok = False
            return False
        if self._unsure:
            pending = [sent for sent in self._in_flight if not sent.done()]
            if pending:
                done, _ = await asyncio.wait(pending, timeout=config.timeout_s)
                if len(done) < len(pending):
                    return self._failed("publish", "the sends of an earlier poll are still unacknowledged")
            for sent in self._in_flight:
                if not sent.cancelled():
                    sent.exception()  # retrieved: the read-back tells what was written
            self._in_flight = []
            try:
                await self._read_back()
            except (KafkaError, BatteryWorkerError) as error:
                return self._failed("publish", f"reading back {self.settings.topics.prices}: {error}")
        now = datetime.now(UTC)
        ahead = timedelta(seconds=self.settings.worker.max_tick_ahead_s)
        selection = select_new(answer.ticks, self.stats.last_tick_at, now=now, max_ahead=ahead)
        held = self._first_seen(f"ahead {tick.timestamp.isoformat()}" for tick in selection.ahead)
        if held:  # each once, as a bad item: the API lists it at every poll until its time comes
            self.stats.errors["invalid_tick"] += len(held)
            log.warning(
                "%s: %d ticks stamped more than %g s ahead of now held back, e.g. %s",
                self.shown_url,
                len(held),
                ahead.total_seconds(),
                held[0].removeprefix("ahead "),
                extra={"site_id": config.site},
            )
        self._say_if_behind(answer.ticks, selection)
        first_listed = _first_per_time(answer.ticks)
        self._say_corrections(list(first_listed.values()))
        self._say_late(list(first_listed.values()))
        self._say_listed_twice(answer.ticks, first_listed)
        try:
            await self._publish(producer, selection.new)
        except KafkaError as error:
            self._unsure = True
            return self._failed("publish", f"{type(error).__name__}: {error}")
        if selection.new:
            log.info(
                "published %d new ticks up to %s",
                len(selection.new),
                selection.new[-1].timestamp.isoformat(),
                extra={"site_id": config.site, "topic": self.settings.topics.prices},
            )
        self.stats.last_poll_ok = True
        self.stats.good_polls += 1
        return True

    async def _read_back(self) -> None:
        """The newest ticks in ``prices`` for the site, as the last published (at start, and after a publish
        that failed: its ticks may be there all the same, and are then counted as published; a platform
        engineer's review saw "2 ticks published, errors: publish 2" for 3 ticks in ``prices``)."""
        newest, recent = await read_last_published(self.settings, self.config.site)
        last = self.stats.last_tick_at
        if self._unsure:  # ticks of the failed publish that were written all the same: published, counted
            landed = [at for at in recent if last is None or at > last]
            if landed:
                self.stats.published += len(landed)
                log.info(
                    "%d ticks of the failed publish are in %s all the same, up to %s",
                    len(landed),
                    self.settings.topics.prices,
                    max(landed).isoformat(),
                    extra={"site_id": self.config.site},
                )
        self._published.update(recent)
        while len(self._published) > REPORTED_ITEMS_KEPT:
            del self._published[next(iter(self._published))]
        if newest is not None and (last is None or newest > last):
            self.stats.last_tick_at = newest
        self._unsure = False

    def _say_late(self, ticks: Sequence[PriceTick]) -> None:
        """A tick the API lists only after a newer one was published (a backfill) is never published: the
        worker would take it as stale. It was dropped without a word (a review run's API added 00:35 after
        00:40 had gone). Each counted and said once; only within the times known published, as older
        ones cannot be told from ticks published long ago."""
        last, known = self.stats.last_tick_at, self._published
        if last is None or not known:
            return
        oldest_known = min(known)
        self._late_said = {stamp for stamp in self._late_said if stamp > oldest_known}  # the same window
        told = sorted(
            {
                tick.timestamp
                for tick in ticks
                if oldest_known < tick.timestamp < last
                and tick.timestamp not in known
                and tick.timestamp not in self._late_said
            }
        )
        if told:
            self._late_said.update(told)
            self.stats.late += len(told)
            log.warning(
                "%s: %d ticks listed after a newer one was published (a backfill), e.g. %s: not published, "
                "as the worker would take them as stale (ticks are published once each, in time order)",
                self.shown_url,
                len(told),
                told[0].isoformat(),
                extra={"site_id": self.config.site},
            )

    def _say_listed_twice(self, ticks: Sequence[PriceTick], first: dict[datetime, PriceTick]) -> None:
        """One answer listing a time twice or more with other prices: the first listed (``first``, by
        time) is taken (said once for each such time and set of prices)."""
        others: dict[datetime, list[PriceTick]] = {}
        for tick in ticks:
            if _prices_of(first[tick.timestamp]) != _prices_of(tick):
                others.setdefault(tick.timestamp, []).append(tick)
        keyed = {
            f"twice {stamp.isoformat()} {sorted(_prices_of(t) for t in left)!r}": stamp
            for stamp, left in others.items()
        }
        told = [keyed[key] for key in self._first_seen(keyed)]
        if told:
            stamp = told[0]
            left = ", ".join(f"{tick.energy_price:g}" for tick in others[stamp])
            log.warning(
                "%s: %d times listed more than once in one answer with other prices, e.g. %s: energy price "
                "%g taken (listed first), %s left",
                self.shown_url,
                len(told),
                stamp.isoformat(),
                first[stamp].energy_price,
                left,
                extra={"site_id": self.config.site},
            )

    def _say_if_behind(self, ticks: Sequence[PriceTick], selection: Selection) -> None:
        """An answer whose newest tick is older than the last published one publishes nothing, poll after
        poll, and said nothing (a tick published ahead of its time, or the API's clock gone back): said once
        for each last published tick it happens under."""
        newest, last = latest(ticks), self.stats.last_tick_at
        if selection.new or newest is None or last is None or newest >= last or self._behind_said == last:
            return
        self._behind_said = last
        log.warning(
            "%s: its newest tick, %s, is older than the last one published, %s: nothing is published until "
            "the API passes it (ticks are published once each, in time order; a tick published ahead of its "
            "time holds back every older one)",
            self.shown_url,
            newest.isoformat(),
            last.isoformat(),
            extra={"site_id": self.config.site},
        )

    def _say_corrections(self, ticks: Sequence[PriceTick]) -> None:
        """A tick already published that the API lists again with other prices (a correction) was dropped
        without a line: ticks are published once each, and the worker decided on the first prices. Said once
        for each correction (the API lists it at every poll)."""
        corrected = []
        for tick in ticks:
            sent = self._published.get(tick.timestamp)
            if sent is not None and sent != _prices_of(tick):
                corrected.append((tick, sent))
        keyed = {
            f"corrected {t.timestamp.isoformat()} {(t.energy_price, t.hash_price, t.token_price)!r}": (
                t,
                sent,
            )
            for t, sent in corrected
        }
        told = [keyed[key] for key in self._first_seen(keyed)]
        if told:
            tick, sent = told[0]
            log.warning(
                "%s: %d ticks already published listed again with other prices, e.g. %s: energy price %g, "
                "published %g (a tick is published once: the worker decided on the prices first published)",
                self.shown_url,
                len(told),
                tick.timestamp.isoformat(),
                tick.energy_price,
                sent[0],
                extra={"site_id": self.config.site},
            )

    def _unreported(self, rejected: tuple[Rejected, ...]) -> list[Rejected]:
        """The bad items not reported before: an API lists its last day or so at every poll, so one bad
        item would otherwise be a warning and a count at every poll until it scrolls out of the answer."""
        fresh = set(self._first_seen(r.item for r in rejected))
        return [r for r in rejected if r.item in fresh]

    def _first_seen(self, items: Iterable[str]) -> list[str]:
        """Of ``items``, those not reported before, now remembered as reported (the oldest forgotten)."""
        fresh = [item for item in dict.fromkeys(items) if item not in self._reported]
        for item in fresh:
            self._reported[item] = None
        while len(self._reported) > REPORTED_ITEMS_KEPT:
            del self._reported[next(iter(self._reported))]
        return fresh

    async def _publish(self, producer: AIOKafkaProducer, ticks: Sequence[PriceTick]) -> None:
        """Send in order, then advance over the acknowledged prefix only: a tick after a failed one is sent
        again by the next poll (a duplicate the worker skips) rather than a gap nobody fills."""
        if not ticks:
            return
        key = self.config.site.encode()
        topic = self.settings.topics.prices
        sends = [await producer.send(topic, tick_payload(tick), key=key) for tick in ticks]
        # Bounded as the request is (a stalled broker held a stop for the producer's 30 s and more), and
        # not cancelled: a cancelled send's record may still go out, and the read-back must wait for it.
        _, pending = await asyncio.wait(sends, timeout=self.config.timeout_s)
        if pending:
            self._in_flight = list(sends)
            raise KafkaTimeoutError(
                f"no acknowledgement from the broker within {self.config.timeout_s:g} s (monitor.timeout_s)"
            )
        for tick, sent in zip(ticks, sends, strict=True):
            failure = KafkaError("send cancelled") if sent.cancelled() else sent.exception()
            if failure is not None:
                for other in sends:
                    if not other.cancelled():
                        other.exception()  # each retrieved: none logged as "never retrieved"
                raise failure if isinstance(failure, KafkaError) else KafkaError(str(failure))
            self.stats.last_tick_at = tick.timestamp
            self.stats.published += 1
            self._published[tick.timestamp] = _prices_of(tick)
        while len(self._published) > REPORTED_ITEMS_KEPT:
            del self._published[next(iter(self._published))]

    def _failed(self, kind: ErrorKind, detail: str) -> bool:
        self.stats.last_poll_ok = False
        self.stats.errors[kind] += 1
        shown = self.shown_url
        log.warning("%s: poll failed (%s): %s", shown, kind, detail, extra={"site_id": self.config.site})
        return False


Prices = tuple[float, float, float]


def _prices_of(tick: PriceTick) -> Prices:
    return (tick.energy_price, tick.hash_price, tick.token_price)


def _first_per_time(ticks: Sequence[PriceTick]) -> dict[datetime, PriceTick]:
    """Each time's first listing, by time: the one :func:`.answers.select_new` takes."""
    return {tick.timestamp: tick for tick in reversed(ticks)}


async def read_last_published(
    settings: Settings, site: str
) -> tuple[datetime | None, dict[datetime, Prices]]:
    """The newest valid tick keyed ``site`` in ``prices``, and the prices of its newest ticks by time (up
    to :data:`REPORTED_ITEMS_KEPT`, oldest first): its home partition read to the high watermark.

    The fetch high watermark, not ListOffsets, ends the read (:mod:`battery_worker.kafka.reading`): the
    embedded broker answers ListOffsets wrongly for partitions written in batches.
    """
    topic = settings.topics.prices
    partitions = await partition_count(settings, topic)
    if not partitions:
        return None, {}
    reader = make_reader(settings.kafka)
    await start_client(reader, settings.kafka)
    key, newest = site.encode(), None
    recent: dict[datetime, Prices] = {}
    max_ahead_s = settings.worker.max_tick_ahead_s
    refused: list[datetime] = []
    try:
        home = TopicPartition(topic, home_partition(site, partitions))
        async for batch in read_to_end(reader, [home], timeout_s=settings.worker.restore_timeout_s):
            for record in batch:
                if record.key != key or record.value is None:
                    continue
                try:
                    tick = PriceTick.model_validate_json(record.value)
                except ValidationError:
                    continue
                stamp = tick.timestamp
                if seconds_too_far_ahead(stamp, record.timestamp, max_ahead_s) is not None:
                    refused.append(stamp)  # dead-lettered by the worker: it stopped the monitor for good
                    continue
                if newest is None or stamp > newest:
                    newest = stamp
                recent.setdefault(stamp, _prices_of(tick))  # the first published: what the worker took
                if len(recent) > 2 * REPORTED_ITEMS_KEPT:
                    recent = dict(sorted(recent.items())[-REPORTED_ITEMS_KEPT:])
    finally:
        await reader.stop()
    if refused:
        log.warning(
            "%s holds %d ticks for site %s stamped more than %g s after they were published, which the "
            "worker dead-letters; not taken as published (the latest: %s)",
            topic,
            len(refused),
            site,
            max_ahead_s,
            max(refused).isoformat(),
            extra={"site_id": site, "topic": topic},
        )
    return newest, dict(sorted(recent.items())[-REPORTED_ITEMS_KEPT:])
