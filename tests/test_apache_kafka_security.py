"""Authentication, TLS and ACLs against a real Apache Kafka (the launcher's: SASL/SCRAM-SHA-512, SSL, ACLs).

Every test takes ``apache_kafka`` and is skipped, with the reason, on any other broker. Run them with::

    BATTERY_WORKER_TEST_BROKER=apache .venv/bin/pytest tests/test_apache_kafka_security.py

The CLI runs as a subprocess with its settings in ``BATTERY_WORKER_*`` variables, as in production. Each
test has its own topic prefix and group, so the ACLs one test grants ``alice`` or ``bob`` (prefixed on its
topics, literal on its group) never help another. Checks (offsets, published events) read through the
PLAINTEXT listener as the super user.

What aiokafka 0.14 raises on Kafka 4.1 (measured here), and what ``diagnose.py`` makes of it:

* wrong SCRAM password, unknown user: "Unable to bootstrap", whose probe connection gets
  ``SaslAuthenticationFailed`` [58] "... invalid credentials with SASL mechanism SCRAM-SHA-512" (the same
  for both: Kafka does not tell a missing user from a wrong password) → ``AuthenticationFailed``;
* a CA that did not sign the broker's certificate: ``ssl.SSLCertVerificationError`` "self-signed certificate
  in certificate chain"; an address not in its SANs: the same error, "Hostname mismatch" →
  ``TlsHandshakeFailed``;
* no WRITE on an output topic: ``TopicAuthorizationFailedError`` [29] from the producer's batch future
  (not retriable, so aiokafka does not retry it) → ``NotAuthorized``, raised by the worker's loop;
* no READ on the group: ``GroupAuthorizationFailedError`` [30] from ``getmany`` at the first poll (the
  coordinator lookup) → ``NotAuthorized``;
* no CREATE (topics missing): CreateTopics answers error 29 "Authorization failed." per topic; no
  DESCRIBE_CONFIGS: DescribeConfigs answers error 29 for the resource (and no configs, which the worker
  used to read as ``cleanup.policy=delete``) → ``NotAuthorized`` (``topics.py``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from battery_worker.brokers.apache_kafka import ApacheKafkaBroker, Listener
from battery_worker.brokers.launcher import free_port
from battery_worker.dispatch import SiteState
from battery_worker.kafka.tools.inspect import latest_status
from battery_worker.kafka.topics import prepare_topics
from battery_worker.pricefiles import load_ticks
from battery_worker.settings import Settings
from battery_worker.ticks import PriceTick
from tests.test_security import self_signed
from tests.workerkit import (
    DATA,
    committed_offsets,
    feed,
    list_offsets_end,
    make_settings,
    read_published,
    reference,
    settings_env,
    trace_of,
)

pytestmark = pytest.mark.broker

PRICES = DATA / "ercot_2023-08-01_07.csv"
SITES = ("site-a", "site-b")
TICKS = 36
ERROR = "battery-worker: error: "
#: Everything the worker needs, on its topics (a prefixed ACL) and on its group.
WORKER_TOPIC_OPERATIONS = ("READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS", "CREATE")
WORKER_GROUP_OPERATIONS = ("READ",)


# ----------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def settings(
    apache_kafka: ApacheKafkaBroker, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> Settings:
    """This test's own topics (one prefix) and group, on the session's Apache Kafka (PLAINTEXT listener)."""
    return make_settings(apache_kafka.bootstrap_servers, new_topic_name(), new_group_id())


def ticks() -> list[PriceTick]:
    return load_ticks(PRICES)[:TICKS]


def broker_env(
    apache: ApacheKafkaBroker,
    settings: Settings,
    listener: Listener,
    user: str = "admin",
    **overrides: str,
) -> dict[str, str]:
    """``settings`` (topics, group, policy) as environment variables, on ``listener`` as ``user``."""
    env = settings_env(settings)
    env.update(apache.worker_env(listener, user))
    env.update({f"BATTERY_WORKER_KAFKA__{key.upper()}": value for key, value in overrides.items()})
    env["BATTERY_WORKER_LOG_FORMAT"] = "json"
    return env


def cli_run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "battery_worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``battery-worker ARGS`` in a thread, so the session's event loop (and its clients) stay responsive."""
    return await asyncio.to_thread(cli_run, env, *args)


def spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "battery_worker.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def the_error_line(stderr: str) -> str:
    """The one ``battery-worker: error:`` line of a failed command (and no traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def http_get(port: int, path: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()
    except OSError:
        return None


async def grant_worker(
    apache: ApacheKafkaBroker,
    user: str,
    settings: Settings,
    topic_operations: Sequence[str] = WORKER_TOPIC_OPERATIONS,
    group_operations: Sequence[str] = WORKER_GROUP_OPERATIONS,
) -> None:
    """ACLs on this test's topics (one prefixed ACL: ``<prefix>.``) and its group."""
    prefix = settings.topics.prices.rsplit(".", 1)[0] + "."
    if topic_operations:
        await apache.grant(user, "topic", prefix, topic_operations, prefixed=True)
    if group_operations:
        await apache.grant(user, "group", settings.worker.group_id, group_operations)


async def records_in(settings: Settings, topic: str) -> int:
    """How many records ``topic`` (its three partitions) ever received: the sum of its end offsets."""
    return sum((await list_offsets_end(settings, [TopicPartition(topic, p) for p in range(3)])).values())


async def assert_actions_are_the_domain_s(settings: Settings) -> SiteState:
    """Every site's published actions equal a straight run of the domain; returns its final state."""
    expected, final = reference(settings, ticks())
    published = await read_published(settings)
    for site in SITES:
        assert trace_of(published.actions, site) == expected, site
    return final


async def feed_sites(settings: Settings) -> None:
    for site in SITES:
        await feed(settings, ticks(), site)


def assert_refused_cleanly(result: subprocess.CompletedProcess[str], elapsed: float, *needles: str) -> str:
    """Exit 1 within 30 s, one error line holding every needle, and no retry storm in the log."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert elapsed < 30, f"took {elapsed:.1f} s"
    line = the_error_line(result.stderr)
    for needle in needles:
        assert needle in line, line
    retries = [line for line in result.stderr.splitlines() if "rewinding" in line or "retrying in" in line]
    assert not retries, retries
    return line


async def timed_cli(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = await cli(env, *args)
    return result, time.monotonic() - started


# ----------------------------------------------------------------------------------------------- SASL


async def test_every_command_works_over_sasl_scram_as_a_user_with_the_worker_acls(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """feed, run (with /metrics), status, history export and replay as alice, who has only the ACLs
    the worker needs: the results equal the domain's, and her password is in no output."""
    await grant_worker(apache_kafka, "alice", settings)
    env = broker_env(apache_kafka, settings, "SASL_PLAINTEXT", "alice")
    password = apache_kafka.users["alice"]
    outputs: list[str] = []

    for site in SITES:
        fed = await cli(env, "feed", str(PRICES), "--site", site, "--limit", str(TICKS))
        assert fed.returncode == 0, fed.stderr[-2000:]
        assert f"published {TICKS} ticks" in fed.stdout
        outputs += [fed.stdout, fed.stderr]

    port, log = free_port(), tmp_path / "worker.log"
    worker = spawn(env, log, "run", "--metrics-port", str(port))
    try:
        deadline = time.monotonic() + 60
        while True:
            statuses = await latest_status(settings)
            if all(s in statuses and statuses[s].ticks_applied == TICKS for s in SITES):
                break
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker did not apply every tick within 60 s"
            await asyncio.sleep(0.3)
        for path in ("/metrics", "/health", "/ready"):
            answer = await asyncio.to_thread(http_get, port, path)
            assert answer is not None, path
            assert answer[0] == 200, (path, answer)
            outputs.append(answer[1])
        assert 'battery_worker_ticks_total{outcome="applied"} 72.0' in outputs[-3]
    finally:
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 30)
    assert code == 0, log.read_text()[-3000:]
    outputs.append(log.read_text())

    final = await assert_actions_are_the_domain_s(settings)

    status = await cli(env, "status", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    shown = json.loads(status.stdout)
    assert {site: shown[site]["available_energy_mwh"] for site in SITES} == dict.fromkeys(
        SITES, final.battery.state_of_charge_mwh
    )
    table = await cli(env, "status")
    assert table.returncode == 0, table.stderr[-2000:]
    assert f"lag of group {settings.worker.group_id}" in table.stdout
    assert ": 0 (" in table.stdout  # everything applied is committed
    out = tmp_path / "history.json"
    exported = await cli(env, "history", "export", "--site", "site-a", "--out", str(out))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert len(json.loads(out.read_text())) == TICKS
    replayed = await cli(env, "replay")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr[-2000:]
    assert f"{2 * TICKS:,} identical" in replayed.stdout
    outputs += [r.stdout + r.stderr for r in (status, table, exported, replayed)]

    assert all(password not in text for text in outputs)


@pytest.mark.parametrize("who", ["wrong password", "unknown user"])
async def test_refused_credentials_are_one_line_naming_authentication_and_the_secret_is_nowhere(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
    tmp_path: Path,
    who: str,
) -> None:
    secret = f"not-the-password-{secrets.token_hex(6)}"
    user = "alice" if who == "wrong password" else f"nobody-{secrets.token_hex(3)}"
    env = broker_env(
        apache_kafka, settings, "SASL_PLAINTEXT", "alice", sasl_username=user, sasl_password=secret
    )
    expected = f"authentication to Kafka at {apache_kafka.sasl_bootstrap_servers} failed"
    seen: list[str] = []

    # run, with the ops server up and DEBUG logs: scraped while it lives (it may be gone before a scrape).
    port, log = free_port(), tmp_path / "worker.log"
    started = time.monotonic()
    worker = spawn(env, log, "--log-level", "DEBUG", "run", "--metrics-port", str(port))
    try:
        while worker.poll() is None and time.monotonic() - started < 30:
            for path in ("/metrics", "/health"):
                answer = await asyncio.to_thread(http_get, port, path)
                if answer is not None:
                    seen.append(answer[1])
            await asyncio.sleep(0.05)
        code = worker.wait(1)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    elapsed = time.monotonic() - started
    stderr = log.read_text()
    assert code == 1, stderr[-3000:]
    assert elapsed < 30
    line = the_error_line(stderr)
    assert line.startswith(ERROR + expected), line
    assert f"user '{user}'" in line, line
    assert "SaslAuthenticationFailed" in line, line
    seen.append(stderr)

    for args in (("status",), ("status", "--json"), ("history", "export", "--site", "x", "--out", "h.json")):
        result, took = await timed_cli(env, *args)
        assert_refused_cleanly(result, took, expected)
        seen += [result.stdout, result.stderr]
    fed, took = await timed_cli(env, "feed", str(PRICES), "--limit", "1")
    assert_refused_cleanly(fed, took, expected)
    seen += [fed.stdout, fed.stderr]

    assert all(secret not in text for text in seen)


async def test_a_mechanism_the_listener_does_not_enable_is_one_line_saying_so(
    apache_kafka: ApacheKafkaBroker, settings: Settings
) -> None:
    """A security review: '[Error 33] UnsupportedSaslMechanismError' alone left the fix to guess."""
    env = broker_env(apache_kafka, settings, "SASL_PLAINTEXT", "alice", sasl_mechanism="PLAIN")
    result, took = await timed_cli(env, "status")
    line = assert_refused_cleanly(result, took, "UnsupportedSaslMechanismError")
    assert "the listener does not enable PLAIN: set kafka.sasl_mechanism" in line, line


# ----------------------------------------------------------------------------------------------- TLS


@pytest.mark.parametrize("listener", ["SSL", "SASL_SSL"])
async def test_the_worker_over_tls_with_the_ca_file_processes_ticks(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
    listener: Listener,
) -> None:
    """TLS alone, and SCRAM over TLS as alice with the worker's ACLs: SASL_SSL, what configuration.md
    recommends for production, was never run against a broker (a review run)."""
    await feed_sites(settings)
    user = "alice" if listener == "SASL_SSL" else "admin"
    if listener == "SASL_SSL":
        await grant_worker(apache_kafka, user, settings)
    env = broker_env(apache_kafka, settings, listener, user)
    assert env["BATTERY_WORKER_KAFKA__SSL_CAFILE"] == str(apache_kafka.ssl_cafile)
    run = await cli(env, "run", "--max-messages", str(len(SITES) * TICKS), "--idle-timeout", "20")
    assert run.returncode == 0, run.stderr[-3000:]
    await assert_actions_are_the_domain_s(settings)
    status = await cli(env, "status", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    assert set(json.loads(status.stdout)) == set(SITES)


async def test_a_ca_that_did_not_sign_the_broker_s_certificate_is_one_tls_line(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
    tmp_path: Path,
) -> None:
    other_ca, _key = self_signed(tmp_path, "another-ca")
    env = broker_env(apache_kafka, settings, "SSL", ssl_cafile=str(other_ca))
    for args in (("run",), ("status",)):
        result, took = await timed_cli(env, *args)
        line = assert_refused_cleanly(
            result, took, "TLS handshake with Kafka at", "certificate verify failed"
        )
        assert "self-signed certificate in certificate chain" in line, line


@pytest.mark.parametrize(
    ("protocol", "listener", "needles"),
    [
        ("PLAINTEXT", "SSL", ("closed (the broker closes the connection", "is the listener TLS?")),
        ("SSL", "PLAINTEXT", ("is the listener plain (no TLS)? kafka.security_protocol is SSL",)),
        ("SASL_PLAINTEXT", "PLAINTEXT", ("the listener does not take SASL: check kafka.security_protocol",)),
    ],
)
async def test_a_client_of_another_protocol_than_the_listener_is_told_to_check_the_protocol(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
    protocol: Listener,
    listener: Listener,
    needles: tuple[str, ...],
) -> None:
    """A plain client at the TLS listener, or a TLS one at the plain listener, was retried as an outage,
    forever, and the SASL one was told 'IllegalSaslStateError': nothing pointed at the protocol."""
    env = broker_env(apache_kafka, settings, protocol)
    address = apache_kafka.worker_env(listener)["BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS"]
    env["BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS"] = address
    result = await cli(env, "status")
    assert result.returncode == 1, result.stderr[-3000:]
    line = the_error_line(result.stderr)
    for needle in needles:
        assert needle in line, line


def _names_not_in_the_certificate() -> list[str]:
    """Addresses of the SSL listener (127.0.0.1) that its certificate (SANs 127.0.0.1, localhost) lacks.

    ``127.1`` is 127.0.0.1 to the resolver but not an IP address to TLS; the machine's host name too,
    when it resolves to 127.0.0.1 (as on this CI machine).
    """
    names = ["127.1"]
    host = socket.gethostname()
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET)}
    except OSError:
        resolved = set()
    if host not in ("localhost", "127.0.0.1") and resolved == {"127.0.0.1"}:
        names.append(host)
    return names


async def test_an_address_the_certificate_does_not_name_is_one_tls_line(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
) -> None:
    port = apache_kafka.ssl_bootstrap_servers.rsplit(":", 1)[1]
    for name in _names_not_in_the_certificate():
        env = broker_env(apache_kafka, settings, "SSL", bootstrap_servers=f"{name}:{port}")
        result, took = await timed_cli(env, "run")
        line = assert_refused_cleanly(result, took, f"TLS handshake with Kafka at {name}:{port} failed")
        assert f"Hostname mismatch, certificate is not valid for '{name}'" in line, line


# ----------------------------------------------------------------------------------------------- ACLs


@pytest.mark.parametrize(
    ("refused", "guarantee"),
    [("actions", "at-least-once"), ("state", "at-least-once"), ("actions", "exactly-once")],
)
async def test_no_write_on_an_output_topic_stops_the_worker_and_commits_nothing(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
    refused: str,
    guarantee: str,
) -> None:
    """``actions`` is refused in the batch's own send, ``state`` in its tail (under the next batch). With
    exactly-once a security review saw 'unexpected IllegalOperation: Can't send messages while not in
    transaction (a bug ...)' and asyncio's 'Future exception was never retrieved' ERRORs instead."""
    await prepare_topics(settings)
    await feed_sites(settings)
    names = settings.topics.names()
    outputs = {"actions": names.actions, "status": names.status, "state": names.state}
    outputs |= {"history": names.history, "dlq": names.dlq}
    await grant_worker(apache_kafka, "alice", settings, ("READ", "DESCRIBE", "DESCRIBE_CONFIGS"))
    for name, topic in outputs.items():
        if name != refused:
            await apache_kafka.grant("alice", "topic", topic, ["WRITE"])
    if guarantee == "exactly-once":
        transactional = f"battery-worker.{settings.worker.group_id}."
        await apache_kafka.grant(
            "alice", "transactional_id", transactional, ["WRITE", "DESCRIBE"], prefixed=True
        )

    env = broker_env(apache_kafka, settings, "SASL_PLAINTEXT", "alice")
    env["BATTERY_WORKER_WORKER__PROCESSING_GUARANTEE"] = guarantee
    result, took = await timed_cli(env, "run")
    line = assert_refused_cleanly(result, took, "refused alice", "TopicAuthorizationFailedError")
    assert outputs[refused] in line, line
    assert "WRITE" in line, line
    assert "never retrieved" not in result.stderr, result.stderr[-3000:]
    assert await committed_offsets(settings) == {}
    assert await records_in(settings, names.state) == 0
    if refused == "actions":
        assert await records_in(settings, names.actions) == 0

    # Granted the ACL, the same group goes on from the start and gets everything right.
    await apache_kafka.grant("alice", "topic", outputs[refused], ["WRITE"])
    run = await cli(env, "run", "--max-messages", str(len(SITES) * TICKS), "--idle-timeout", "20")
    assert run.returncode == 0, run.stderr[-3000:]
    await assert_actions_are_the_domain_s(settings)


async def test_describe_configs_on_the_state_topic_alone_is_enough_to_run(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
) -> None:
    """The log topics' cleanup.policy is checked for a warning only: without DESCRIBE_CONFIGS on them the
    worker says it cannot look, and runs. The three are asked in one request, whose answer is per topic."""
    await prepare_topics(settings)
    await feed_sites(settings)
    granted = [operation for operation in WORKER_TOPIC_OPERATIONS if operation != "DESCRIBE_CONFIGS"]
    await grant_worker(apache_kafka, "alice", settings, granted)
    await apache_kafka.grant("alice", "topic", settings.topics.state, ["DESCRIBE_CONFIGS"])
    env = broker_env(apache_kafka, settings, "SASL_PLAINTEXT", "alice")
    run = await cli(env, "run", "--max-messages", str(len(SITES) * TICKS), "--idle-timeout", "20")
    assert run.returncode == 0, run.stderr[-3000:]
    names = settings.topics.names()
    for topic in (names.prices, names.actions, names.dlq):
        assert f"cannot check topic {topic}'s cleanup.policy" in run.stderr, run.stderr[-3000:]
    await assert_actions_are_the_domain_s(settings)


async def test_a_price_producer_and_an_auditor_each_need_less_than_the_worker(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """The ACLs of brokers.md's second table, exactly: a producer (``feed``, with ``topics.create`` off)
    with WRITE and DESCRIBE on ``prices``; an auditor (``status``, ``history export``, ``replay``) with
    READ and DESCRIBE on the topics and DESCRIBE on the group, writing nothing (a review run found only
    the worker's set documented)."""
    await prepare_topics(settings)
    await feed_sites(settings)
    admin = broker_env(apache_kafka, settings, "SASL_PLAINTEXT")
    run = await cli(admin, "run", "--max-messages", str(len(SITES) * TICKS), "--idle-timeout", "20")
    assert run.returncode == 0, run.stderr[-3000:]

    await apache_kafka.grant("alice", "topic", settings.topics.prices, ["WRITE", "DESCRIBE"])
    producer = broker_env(apache_kafka, settings, "SASL_PLAINTEXT", "alice")
    producer["BATTERY_WORKER_TOPICS__CREATE"] = "false"
    fed = await cli(producer, "feed", str(PRICES), "--site", "site-c", "--limit", "3")
    assert fed.returncode == 0, fed.stderr[-3000:]
    assert "published 3 ticks" in fed.stdout

    await grant_worker(apache_kafka, "bob", settings, ("READ", "DESCRIBE"), ("DESCRIBE",))
    auditor = broker_env(apache_kafka, settings, "SASL_PLAINTEXT", "bob")
    out = tmp_path / "a.json"
    for args in (
        ("status",),
        ("status", "--json"),
        ("history", "export", "--site", "site-a", "--out", str(out)),
        ("replay",),
    ):
        done = await cli(auditor, *args)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    assert len(json.loads(out.read_text())) == TICKS


@pytest.mark.parametrize("refused", ["group", "state topic"])
async def test_no_read_on_the_group_or_the_state_topic_stops_the_worker_and_commits_nothing(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
    refused: str,
) -> None:
    """No READ on the group: the first poll fails; on the state topic: the restore on assignment does."""
    await prepare_topics(settings)
    await feed_sites(settings)
    names = settings.topics.names()
    if refused == "group":
        await grant_worker(apache_kafka, "bob", settings, group_operations=())
        needles: tuple[str, ...] = ("GroupAuthorizationFailedError", settings.worker.group_id)
    else:
        await grant_worker(apache_kafka, "bob", settings, ("WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"))
        for topic in (names.prices, names.actions, names.status, names.history, names.dlq):
            await apache_kafka.grant("bob", "topic", topic, ["READ"])
        needles = ("TopicAuthorizationFailedError", names.state)
    env = broker_env(apache_kafka, settings, "SASL_PLAINTEXT", "bob")
    result, took = await timed_cli(env, "run")
    line = assert_refused_cleanly(result, took, "refused bob", *needles)
    assert "READ on its consumer group" in line, line
    assert await committed_offsets(settings) == {}
    assert await records_in(settings, names.actions) == 0


@pytest.mark.parametrize("withheld", ["CREATE", "DESCRIBE_CONFIGS"])
async def test_a_topic_operation_withheld_at_start_is_one_line(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
    withheld: str,
) -> None:
    """Without CREATE (topics missing) ``run`` and ``feed`` stop with one line; without DESCRIBE_CONFIGS
    the worker cannot check the state topic's cleanup.policy, and says so (not "not compacted")."""
    if withheld != "CREATE":
        await prepare_topics(settings)
    granted = [operation for operation in WORKER_TOPIC_OPERATIONS if operation != withheld]
    await grant_worker(apache_kafka, "alice", settings, granted)
    env = broker_env(apache_kafka, settings, "SASL_PLAINTEXT", "alice")
    needles = ("refused alice", "TopicAuthorizationFailedError", withheld)
    for args in (("run",), ("feed", str(PRICES), "--limit", "1")):
        result, took = await timed_cli(env, *args)
        line = assert_refused_cleanly(result, took, *needles)
        assert "cleanup.policy" not in line, line
    assert await committed_offsets(settings) == {}


async def test_commands_of_a_user_who_may_not_see_the_topics_say_so(
    apache_kafka: ApacheKafkaBroker,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """Kafka leaves a topic the principal may not DESCRIBE out of the list of all topics, so it looked
    missing: ``status`` said 'no status published yet' and exited 0, ``history export`` wrote an empty
    file, ``replay`` said 'topic not found' (exit 2) and ``run`` asked for CREATE (a review run)."""
    await prepare_topics(settings)
    await feed_sites(settings)
    await grant_worker(apache_kafka, "bob", settings, topic_operations=())  # the group only
    env = broker_env(apache_kafka, settings, "SASL_PLAINTEXT", "bob")
    commands = [
        ("run",),
        ("status",),
        ("history", "export", "--site", "site-a", "--out", str(tmp_path / "h.json")),
        ("replay",),
    ]
    for args in commands:
        result, took = await timed_cli(env, *args)
        line = assert_refused_cleanly(result, took, "refused bob", "may not DESCRIBE")
        assert "cannot create" not in line, line
    assert not (tmp_path / "h.json").exists()
