"""What a broker given by ``KAFKA_BOOTSTRAP_SERVERS`` can do, found by doing it: a test that needs what the
broker lacks skips with the reason rather than failing (the embedded broker's gaps are known by name,
``conftest.broker_kind``; any other broker is asked)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic, RecordsToDelete
from aiokafka.errors import KafkaError, KafkaTimeoutError, RequestTimedOutError

from battery_worker.kafka.exceptions import TransactionsUnsupported
from battery_worker.kafka.transactions import require_transactions
from battery_worker.settings import KafkaSettings

_PROBE_TIMEOUT_S = 30.0


_FOUND: dict[tuple[str, str], str | None] = {}
"""Each broker's answer, asked once per session: a probe per test left a topic per test behind."""


async def lacks_transactions(bootstrap: str) -> str | None:
    key = (bootstrap, "transactions")
    if key not in _FOUND:
        try:
            await require_transactions(KafkaSettings(bootstrap_servers=bootstrap))
            _FOUND[key] = None
        except TransactionsUnsupported as refused:
            _FOUND[key] = str(refused)
    return _FOUND[key]


async def lacks_admin(bootstrap: str, api: str) -> str | None:
    """Why the broker cannot ``CreatePartitions`` or ``DeleteRecords`` (``api``), or None; its probe topic
    is deleted after."""
    key = (bootstrap, api)
    if key not in _FOUND:
        _FOUND[key] = await _probe_admin(bootstrap, api)
    return _FOUND[key]


_PROBE_ATTEMPTS = 3
_TRANSIENT = (TimeoutError, OSError, KafkaTimeoutError, RequestTimedOutError)
"""Failures that say nothing of the API (aiokafka marks its own timeout not retriable)."""


async def _probe_admin(bootstrap: str, api: str) -> str | None:
    """A refusal that says the broker cannot (an API it has no version of, a policy) is the answer; one
    that may pass (a timeout, a lost connection, a coordinator moving) is asked again, up to
    ``_PROBE_ATTEMPTS`` times: taken at once, one slow answer skipped every test needing the API for the
    whole session (a review of the suite). A topic is created afresh for each attempt, so the broker
    answers; only the API asked fails, every time."""
    for attempt in range(1, _PROBE_ATTEMPTS + 1):
        try:
            await _probe_admin_once(bootstrap, api)
            return None
        except (KafkaError, TimeoutError, OSError) as error:
            transient = isinstance(error, _TRANSIENT) or (isinstance(error, KafkaError) and error.retriable)
            if not transient:
                return f"the broker at {bootstrap} has no {api} ({type(error).__name__}: {error})"
            if attempt == _PROBE_ATTEMPTS:  # the broker answers, but never this (Tansu drops the connection)
                return (
                    f"the broker at {bootstrap} has no working {api}: {_PROBE_ATTEMPTS} attempts 2 s apart "
                    f"ended in {type(error).__name__}: {error}"
                )
            await asyncio.sleep(2.0)
    raise AssertionError("unreachable: the last attempt returns")


async def _probe_admin_once(bootstrap: str, api: str) -> None:
    topic = f"probe-{api.lower()}-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)])
    except (KafkaError, TimeoutError, OSError) as error:  # no answer about the API: an error, never a skip
        await admin.close()
        raise RuntimeError(f"the broker at {bootstrap} did not create a probe topic: {error!r}") from error
    try:
        try:
            if api == "CreatePartitions":
                await asyncio.wait_for(admin.create_partitions({topic: NewPartitions(2)}), _PROBE_TIMEOUT_S)
            else:
                deleting = admin.delete_records(
                    {TopicPartition(topic, 0): RecordsToDelete(before_offset=0)}, timeout_ms=10_000
                )
                await asyncio.wait_for(deleting, _PROBE_TIMEOUT_S)
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await admin.delete_topics([topic])
    finally:
        await admin.close()
