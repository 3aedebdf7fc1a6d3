"""How the local Apache Kafka broker is configured: its users, ``server.properties`` and JVM command lines.

Why apart from the broker's lifecycle (``apache_broker.py``): these are the decisions about *what* runs, one
KRaft node (broker and controller) with four client listeners on loopback (the table of who may do what
on each is in ``apache_kafka.py``), and they read best in one place.
"""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from battery_worker.brokers.apache_jars import (
    JVM_OPTIONS,
    KAFKA_SCRIPTS_HEAP,
    KAFKA_SCRIPTS_JVM_OPTIONS,
    QUICK_START_HEAP,
)
from battery_worker.brokers.apache_tls import SERVER_KEYSTORE
from battery_worker.brokers.launcher import LOOPBACK
from battery_worker.kafka.exceptions import ApacheKafkaError

__all__ = [
    "ADMIN_USER",
    "DEFAULT_USERS",
    "HOST",
    "SASL_MECHANISM",
    "JvmProfile",
    "Listener",
    "broker_command",
    "format_storage",
    "scram_users",
    "write_config",
]

HOST = LOOPBACK
SASL_MECHANISM = "SCRAM-SHA-512"
#: The SCRAM super user; the PLAINTEXT and SSL listeners' ``User:ANONYMOUS`` is one too.
ADMIN_USER = "admin"
#: SCRAM users without rights: ACL tests grant them what they need. Loopback test credentials, not secrets.
DEFAULT_USERS: Mapping[str, str] = {"alice": "alice-secret", "bob": "bob-secret"}
_ADMIN_PASSWORD = "admin-secret"  # noqa: S105 - a throwaway broker on loopback, printed for the user
# StorageTool's --add-scram syntax is "[name=N,password=P]": keep both free of its delimiters.
_CREDENTIAL = re.compile(r"[A-Za-z0-9._-]{1,64}")

Listener = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"]
#: How the broker's JVM runs: ``quick-start`` (C1 only, serial collector: tests start many brokers) or
#: ``kafka-scripts`` (as Kafka's own start scripts run it: what a benchmark measures against).
JvmProfile = Literal["quick-start", "kafka-scripts"]

_PROPERTIES = "server.properties"
_LOG4J2_FILE = "log4j2.properties"
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def scram_users(users: Mapping[str, str] | None) -> dict[str, str]:
    """The SCRAM users, name → password: the super user ``admin`` and ``users`` (``None``: the defaults).

    :raises ValueError: a user is called ``admin``, or a name or password would break StorageTool's syntax.
    """
    chosen = dict(DEFAULT_USERS if users is None else users)
    if ADMIN_USER in chosen:
        raise ValueError(f"{ADMIN_USER!r} is the built-in super user; choose another user name")
    for name, password in chosen.items():
        if not (_CREDENTIAL.fullmatch(name) and _CREDENTIAL.fullmatch(password)):
            raise ValueError(f"user {name!r}: names and passwords may use only A-Z a-z 0-9 . _ -")
    return {ADMIN_USER: _ADMIN_PASSWORD, **chosen}


def write_config(
    workdir: Path, ports: Mapping[str, int], keystore_password: str, extra: Mapping[str, str]
) -> None:
    """Write ``server.properties`` and the log configuration into ``workdir``."""
    properties = _server_properties(workdir, ports, keystore_password, extra)
    (workdir / _PROPERTIES).write_text(properties, encoding="utf-8")
    (workdir / _LOG4J2_FILE).write_text(_LOG4J2, encoding="utf-8")


def format_storage(
    java: str, lib: Path, workdir: Path, users: Mapping[str, str], meanwhile: Callable[[], None] | None
) -> None:
    """Format ``workdir``'s storage as a new cluster whose SCRAM users are ``users``, with StorageTool.

    :param meanwhile: work to do while StorageTool's JVM runs (the broker makes its keystores then).
    :raises ApacheKafkaError: StorageTool failed (with the end of its output).
    """
    # argv: the JDK's java, our jar directory and generated values; no shell.
    formatter = subprocess.Popen(  # noqa: S603
        _format_command(java, lib, workdir, users),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        if meanwhile is not None:
            meanwhile()
        output, _ = formatter.communicate(timeout=120)
    finally:
        if formatter.poll() is None:
            formatter.kill()
            formatter.communicate()
    if formatter.returncode != 0:
        tail = " | ".join(output.decode("utf-8", "replace").strip().splitlines()[-5:])
        raise ApacheKafkaError(f"formatting Kafka storage failed (exit {formatter.returncode}): {tail}")


def _format_command(java: str, lib: Path, workdir: Path, users: Mapping[str, str]) -> list[str]:
    scram = [f"{SASL_MECHANISM}=[name={name},password={password}]" for name, password in users.items()]
    return [
        java,
        "-Xmx256m",
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={workdir / _LOG4J2_FILE}",
        "-cp",
        f"{lib}/*",
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "-t",
        _cluster_id(),
        "-c",
        str(workdir / _PROPERTIES),
        *[arg for entry in scram for arg in ("--add-scram", entry)],
    ]


def broker_command(
    java: str, lib: Path, workdir: Path, heap: str | None, profile: JvmProfile = "quick-start"
) -> list[str]:
    """The broker's JVM, configured by ``workdir``'s files, with ``heap`` as its ``-Xmx``.

    ``None`` is the profile's own heap: 512 MiB for a quick start, or Kafka's scripts' 1 GiB, which they
    also reserve at once (``-Xms``), as the scripts do.
    """
    if profile == "kafka-scripts":
        size = heap or KAFKA_SCRIPTS_HEAP
        jvm = [f"-Xmx{size}", f"-Xms{size}", *KAFKA_SCRIPTS_JVM_OPTIONS]
    else:
        jvm = [f"-Xmx{heap or QUICK_START_HEAP}", *JVM_OPTIONS]
    return [
        java,
        *jvm,
        f"-Dlog4j2.configurationFile={workdir / _LOG4J2_FILE}",
        "-cp",
        f"{lib}/*",
        "kafka.Kafka",
        str(workdir / _PROPERTIES),
    ]


def _cluster_id() -> str:
    """A Kafka cluster id (URL-safe base64 of a UUID); never starting with ``-``, which reads as an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def _server_properties(
    workdir: Path, ports: Mapping[str, int], keystore_password: str, extra: Mapping[str, str]
) -> str:
    listeners = ",".join(f"{name}://{HOST}:{port}" for name, port in ports.items())
    advertised = ",".join(f"{name}://{HOST}:{port}" for name, port in ports.items() if name != "CONTROLLER")
    settings: dict[str, str] = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "controller.quorum.bootstrap.servers": f"{HOST}:{ports['CONTROLLER']}",
        "controller.listener.names": "CONTROLLER",
        "listeners": listeners,
        "advertised.listeners": advertised,
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
        ),
        "inter.broker.listener.name": "PLAINTEXT",
        "sasl.enabled.mechanisms": SASL_MECHANISM,
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        # SCRAM over TLS: what docs/configuration.md recommends for production.
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(workdir / SERVER_KEYSTORE),
        "ssl.keystore.password": keystore_password,
        "ssl.key.password": keystore_password,
        "ssl.client.auth": "none",
        # Without a client certificate the SSL principal is User:ANONYMOUS, as on PLAINTEXT (and on
        # the controller listener, whose requests must pass the authorizer too).
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:ANONYMOUS;User:{ADMIN_USER}",
        "allow.everyone.if.no.acl.found": "false",
        "log.dirs": str(workdir / "data"),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Fault tests detect a dead worker with 2 s sessions (as on Tansu); Kafka's floor is 6 s.
        "group.min.session.timeout.ms": "1000",
        # The worker's clients send and fetch records up to 4 MiB (clients.py); Kafka's default cap is
        # 1 MiB, which would refuse the oversized-input tests' 3 MB record on the prices topic.
        "message.max.bytes": str(4 * 1024 * 1024),
        # Compaction tests must see cleaning happen: a small buffer and a short pause between passes.
        "log.cleaner.dedupe.buffer.size": str(4 * 1024 * 1024),
        "log.cleaner.backoff.ms": "500",
        **extra,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())
