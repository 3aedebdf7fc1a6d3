"""Connecting to the broker: retry with back-off while it cannot be reached, stop on what waiting cannot cure.

Why apart from the loop (``worker.py``): the batch protocol starts once the clients are up; how long and why
the worker waits before that is a question of its own. Authentication, authorization and TLS failures stop
the worker with one line naming the cause (:mod:`.diagnose`); a stop requested meanwhile ends the wait
quietly (:class:`StopRequested`: exit 0, nothing in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from battery_worker.kafka.backoff import Backoff
from battery_worker.kafka.clients import connection_options, make_admin
from battery_worker.kafka.diagnose import explain
from battery_worker.kafka.exceptions import BrokerUnavailable
from battery_worker.kafka.topics import ensure_topics
from battery_worker.settings import Settings

__all__ = ["Connector", "StopRequested", "StopSignal", "pause"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MIN_ATTEMPT_S = 10.0
"""How long a bounded run (``--idle-timeout``) lets an attempt take at the least: creating the topics on
Apache Kafka took longer than a test's 0.2 s idle timeout."""

SLOW_ANSWER_S = 10.0
"""How long a connection attempt goes unanswered before the worker says it is waiting (and again after as
long again)."""


class StopRequested(Exception):
    """A stop was asked for while the worker still waited for the broker: leave quietly (exit 0)."""


class _Startable(Protocol):
    async def start(self) -> None: ...


class StopSignal(Protocol):
    """What a wait for the broker watches: the event a stop request sets (the worker's
    :class:`~battery_worker.kafka.shutdown.BoundedStop`, the monitor)."""

    @property
    def requested(self) -> asyncio.Event: ...


async def pause(stop: StopSignal, seconds: float) -> None:
    """Sleep ``seconds``, or less if a stop is requested meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.requested.wait(), seconds)


class Connector:
    """Waits for the broker with the worker's back-off; remembers why the last attempt failed."""

    def __init__(self, settings: Settings, stop: StopSignal, backoff: Backoff) -> None:
        self._settings = settings
        self._stop = stop
        self._backoff = backoff
        self.failure: str | None = None
        """Why the last connection attempt failed (for ``/health``); None once connected."""
        self.give_up_after_s: float | None = None
        """How long to wait for the broker at most: ``run --idle-timeout`` (a bounded job against a wrong
        address waited forever, then 'succeeded' when stopped); None waits as long as waiting can help."""
        self._waiting_since: float | None = None

    async def ensure_topics(self, *, for_workers: bool = True) -> dict[str, int]:
        """Check or create the topics (:func:`.topics.ensure_topics`); their partition counts by name."""
        while True:
            try:
                admin = make_admin(self._settings.kafka)
                try:
                    return await self._until_stopped(self._topics_checked(admin, for_workers))
                finally:
                    await admin.close()
            except KafkaError as error:
                await self._wait_for_broker(error)

    async def start(self, client: _Startable) -> None:
        """Start an aiokafka client, waiting for the broker as long as waiting can help."""
        while True:
            try:
                await self._until_stopped(client.start())
                return
            except KafkaError as error:
                await self._wait_for_broker(error)

    async def _topics_checked(self, admin: AIOKafkaAdminClient, for_workers: bool) -> dict[str, int]:
        await admin.start()
        return await ensure_topics(admin, self._settings.topics, for_workers=for_workers)

    async def _until_stopped(self, attempt: Coroutine[Any, Any, T]) -> T:
        """``attempt``, said when slow (:meth:`_said_if_slow`) and given up when a stop is requested: a
        SIGTERM while a stalled broker held the attempt waited for the shutdown's bound (12 s of 20) and
        then spoke of an in-flight batch abandoned, where there was none (a platform engineer's review)."""
        now = asyncio.get_running_loop().time()
        self._waiting_since = self._waiting_since or now  # the first attempt's start: a wait's whole length
        bound = None
        if self.give_up_after_s is not None:  # an unanswered attempt outlasted --idle-timeout 3 by 40 s
            left = self.give_up_after_s - (now - self._waiting_since)
            bound = max(MIN_ATTEMPT_S, left)  # a tiny idle timeout still lets topics be created
        async with self._said_if_slow():
            attempting = asyncio.ensure_future(attempt)
            stopping = asyncio.ensure_future(self._stop.requested.wait())
            try:
                await asyncio.wait({attempting, stopping}, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if attempting.done():
                return attempting.result()
            attempting.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await attempting
            if self._stop.requested.is_set():
                raise StopRequested
            waited = asyncio.get_running_loop().time() - self._waiting_since
            bootstrap = self._settings.kafka.bootstrap_servers
            raise BrokerUnavailable(
                f"Kafka at {bootstrap} has not answered; gave up after {waited:.0f} s (--idle-timeout)"
            )

    @contextlib.asynccontextmanager
    async def _said_if_slow(self) -> AsyncIterator[None]:
        """Say so when an attempt has had no answer for :data:`SLOW_ANSWER_S`, and every as long again.

        A broker that accepts connections but does not answer (stopped with SIGSTOP, overloaded, a proxy
        holding the connection) fails an attempt only when its request times out, some 40 s: a worker
        started then logged nothing after its settings for that long (a platform engineer's review)."""
        bootstrap = self._settings.kafka.bootstrap_servers

        async def say() -> None:
            waited = 0.0
            while True:
                await asyncio.sleep(SLOW_ANSWER_S)
                waited += SLOW_ANSWER_S
                log.warning(
                    "Kafka at %s has not answered for %.0f s (a broker stalled or overloaded?): still "
                    "waiting",
                    bootstrap,
                    waited,
                )

        saying = asyncio.create_task(say())
        try:
            yield
        finally:
            saying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saying

    def connected(self) -> None:
        self._backoff.reset()
        self.failure = None
        self._waiting_since = None

    async def _wait_for_broker(self, error: KafkaError) -> None:
        """Back off after a failed connection, unless its cause is one that waiting cannot cure."""
        if self._stop.requested.is_set():
            raise StopRequested
        cause = await explain(error, self._settings.kafka, connection_options(self._settings.kafka))
        if not cause.retriable:
            raise cause
        now = asyncio.get_running_loop().time()
        waited = now - (self._waiting_since or now)
        self._waiting_since = self._waiting_since or now
        if self.give_up_after_s is not None and waited >= self.give_up_after_s:
            raise BrokerUnavailable(f"{cause}; gave up after {waited:.0f} s (--idle-timeout)") from error
        delay = self._backoff.next_delay()
        if self.give_up_after_s is not None:
            delay = min(delay, max(0.1, self.give_up_after_s - waited))
        log.warning("%s; retrying in %.1f s", cause, delay)
        self.failure = str(cause)
        await pause(self._stop, delay)
        if self._stop.requested.is_set():
            raise StopRequested
