"""aiokafka clients built from the settings: one place that knows connection, security and tuning."""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from battery_worker.errors import InvalidConfig
from battery_worker.kafka.diagnose import explain
from battery_worker.settings import KafkaSettings, WorkerSettings


def connection_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Options every client shares: servers, client id, timeouts, TLS and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "request_timeout_ms": kafka.request_timeout_ms,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = tls_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        assert kafka.sasl_password is not None, "settings validation requires it"
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


def tls_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """The TLS context of the settings' files; a file that does not load is :class:`InvalidConfig` naming
    the setting (exit 2), never OpenSSL's ``[SSL] PEM lib (_ssl.c:3926)`` alone. An encrypted key without
    ``ssl_password`` is said so: OpenSSL asked for its pass phrase on the terminal and waited for good (a
    review run)."""
    cafile = None if kafka.ssl_cafile is None else str(kafka.ssl_cafile)
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=cafile)
    except (ssl.SSLError, OSError) as error:
        raise InvalidConfig(
            "kafka.ssl_cafile", cafile, f"no CA certificate loads from it ({error})"
        ) from None
    if kafka.ssl_certfile is None:
        return context
    keyfile = str(kafka.ssl_keyfile)

    def no_password() -> str:
        problem = "the key is encrypted: set kafka.ssl_password (BATTERY_WORKER_KAFKA__SSL_PASSWORD)"
        raise InvalidConfig("kafka.ssl_keyfile", keyfile, problem)

    password = no_password if kafka.ssl_password is None else kafka.ssl_password.get_secret_value()
    try:
        context.load_cert_chain(str(kafka.ssl_certfile), keyfile, password)
    except ssl.SSLError as error:
        if getattr(error, "reason", None) == "KEY_VALUES_MISMATCH":
            problem = f"is not the key of kafka.ssl_certfile {kafka.ssl_certfile}"
        elif kafka.ssl_password is not None:
            problem = (
                "does not load with kafka.ssl_certfile: the password (kafka.ssl_password) does not decrypt "
                f"it, or a file is not PEM of its kind ({error})"
            )
        else:
            problem = f"does not load with kafka.ssl_certfile: a file is not PEM of its kind ({error})"
        raise InvalidConfig("kafka.ssl_keyfile", keyfile, problem) from None
    except OSError as error:
        raise InvalidConfig(
            "kafka.ssl_certfile", str(kafka.ssl_certfile), f"cannot be read ({error})"
        ) from None
    return context


PRODUCER_BATCH_BYTES = 262_144
"""The most one record batch of the worker's producers holds (a larger record gets a batch of its own).

aiokafka hands a batch to its sender only once it is full or closed, and holds a partition's next full
batch until the one before it has been taken for the broker. With 1 MiB, a batch of 2,000 ticks spread
over the output topics' 12 partitions (each batch takes every ``prices`` partition's share since
``fair_fetch``) filled none: all its events, some 6 MB, were held encoded at once and then sent as one
request, and peak RSS at 100 sites rose from 74-77 to 92 MB (123-133 at 10,000). With 256 KiB the batches
fill as the events are encoded and go to the broker while the rest are: 66 MB at 100 sites and 87-90 at
10,000, on Tansu and Apache Kafka alike, throughput unchanged (docs/benchmarks.md, item 17)."""


def make_producer(kafka: KafkaSettings, *, linger_ms: int = 5) -> AIOKafkaProducer:
    """acks=all so an acknowledged event survives a broker failover; no idempotence (not all brokers have it).

    Duplicates from producer retries are harmless: every event has a deterministic ``event_id``.
    """
    return AIOKafkaProducer(
        **connection_options(kafka),
        acks="all",
        enable_idempotence=False,
        linger_ms=linger_ms,
        max_batch_size=PRODUCER_BATCH_BYTES,
        max_request_size=4_194_304,
    )


def make_transactional_producer(
    kafka: KafkaSettings, transactional_id: str, *, transaction_timeout_ms: int
) -> AIOKafkaProducer:
    """Exactly-once: a producer whose sends, and offsets, commit or abort together (idempotent, acks=all).

    ``linger_ms`` 0: the worker closes its batches itself (:mod:`.batching`) and commits right after.
    """
    return AIOKafkaProducer(
        **connection_options(kafka),
        transactional_id=transactional_id,
        transaction_timeout_ms=transaction_timeout_ms,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=PRODUCER_BATCH_BYTES,
        max_request_size=4_194_304,
    )


def make_idempotent_probe(kafka: KafkaSettings) -> AIOKafkaProducer:
    """A producer that asks for a producer id at start: whether the broker has transactions at all."""
    return AIOKafkaProducer(**connection_options(kafka), acks="all", enable_idempotence=True)


def make_group_consumer(kafka: KafkaSettings, worker: WorkerSettings) -> AIOKafkaConsumer:
    """The ``prices`` consumer: manual commits only, from the earliest record for a new group.

    ``fetch_max_wait_ms`` is short because some brokers (Tansu) hold an empty fetch for the whole wait
    even when records arrive meanwhile: with the default 500 ms, a tick waited ~150 ms before the worker
    saw it (``docs/benchmarks.md``). On Kafka it only makes idle fetches more frequent.

    ``metadata_max_age_ms`` is 30 s, not the client's 5 min: the group's leader assigns the partitions its
    own metadata knows, so after ``prices`` grew the new partitions had no owner for up to 5 minutes, even
    when a worker joined (a review run), while their ticks waited.

    ``read_committed``: a tick of an aborted transaction of a transactional price producer was applied,
    while the audit replay, which reads committed records only, never saw it and diverged (a review run).
    On ticks written without transactions it changes nothing.
    """
    return AIOKafkaConsumer(
        **connection_options(kafka),
        group_id=worker.group_id,
        isolation_level="read_committed",
        group_instance_id=worker.group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=worker.session_timeout_ms,
        heartbeat_interval_ms=worker.heartbeat_interval_ms,
        max_poll_interval_ms=worker.max_poll_interval_ms,
        max_partition_fetch_bytes=4_194_304,
        fetch_max_bytes=16_777_216,
        fetch_max_wait_ms=10,
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )


METADATA_MAX_AGE_MS = 30_000
"""How old the group consumer's metadata may grow: how soon a grown ``prices`` is assigned whole."""


def membership_lost(consumer: AIOKafkaConsumer) -> bool:
    """True once the group has dropped this member: a pause past the session, or past
    ``max_poll_interval_ms``, and the group gave its partitions to another.

    aiokafka has no ``onPartitionsLost`` (Java's callback for this case): it resets the generation, then
    calls ``on_partitions_revoked`` as for any rebalance, and a commit made meanwhile goes out without a
    generation, which the broker accepts from an empty group (a simple consumer's commit), moving the
    group's offsets back. So the worker asks the coordinator's generation before it stores or commits.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    generation = getattr(coordinator, "generation", None)
    return isinstance(generation, int) and generation < 0


def leave_group_at_stop(consumer: AIOKafkaConsumer) -> None:
    """Make the coming ``stop()`` leave the group from a first generation numbered 0 too.

    aiokafka leaves the group at stop only from a generation above 0: Kafka numbers a group's first
    generation 1, the embedded broker (Tansu) 0. So a worker stopped there stayed a member until the
    broker dropped it, and the next worker to join the group (a restart, a replay's worker, the next
    ``run``) waited 8-11 s longer for its partitions. LeaveGroup carries no generation, so the number is
    raised only to pass aiokafka's check, just before ``stop()``: a heartbeat sent in between with it is at
    worst refused, which resets the generation and the stop leaves nothing, as before.
    """
    coordinator = getattr(consumer, "_coordinator", None)  # a group-less reader's has no generation
    if getattr(coordinator, "generation", None) == 0 and getattr(coordinator, "member_id", ""):
        setattr(coordinator, "generation", 1)  # noqa: B010 (aiokafka's private attribute)


READER_FETCH_WAIT_MS = 50
"""How long the broker may hold a reader's fetch that finds nothing new (aiokafka's default is 500 ms).

A broker answers one connection's requests in order, and a reader's offset lookups share the connection
with its fetches: reading an empty partition, each lookup waited behind the fetch held there, 0.5 s or
more a partition on both brokers. A restore reads the state partitions one by one, so a worker's start
with three never-written ones took 2.5 s (``docs/embedded-broker.md``)."""


def make_reader(kafka: KafkaSettings, *, committed_only: bool = True) -> AIOKafkaConsumer:
    """A group-less consumer for reading topics end to end (restore, status, history export, replay).

    ``read_committed`` by default: output of an aborted transaction (exactly-once mode) is never read, and
    on a topic written without transactions it changes nothing. ``committed_only=False`` reads everything.
    Fetches are Kafka's default size per partition (1 MiB) and 1 MiB in all: a restore holds what it
    fetches on top of the sites it builds. The embedded broker fills a fetch to its total size even from
    one partition, so with 4 MiB in all a restore held some 500 state records a fetch (4.7 MiB, and as
    much again decoded): restoring 10,000 ``mpc`` sites peaked at 150-153 MiB, 143-145 with 1 MiB, and a
    one-process replay of 120,000 ticks at 135 MiB, 107 with 1 MiB, at the same speed
    (``bench/state_memory.py``, ``bench/replay_speed.py``). 8 / 32 MiB added 6 MiB more, no faster.
    """
    return AIOKafkaConsumer(
        **connection_options(kafka),
        group_id=None,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1_048_576,
        fetch_max_bytes=1_048_576,
        fetch_max_wait_ms=READER_FETCH_WAIT_MS,
    )


def make_admin(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**connection_options(kafka))


async def start_client(
    client: AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient, kafka: KafkaSettings
) -> None:
    """Start a client of a one-shot command; a failure is closed and raised as one typed error.

    The error names the cause (:func:`battery_worker.kafka.diagnose.explain`): broker unreachable,
    authentication, authorization or TLS, instead of aiokafka's "Unable to bootstrap".
    """
    try:
        await client.start()
    except KafkaError as error:
        with contextlib.suppress(Exception):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise await explain(error, kafka, connection_options(kafka)) from None
