"""A local Apache Kafka broker as a JVM child process (no Docker), for tests and local runs.

Why this exists: the embedded Tansu broker (``embedded.py``) cannot authenticate, serve TLS, compact or run
transactions (README, "Operations"), so SASL, TLS, ACLs and Kafka's own semantics could only be tested
against a Docker stack, and many machines (CI included) have no Docker engine. This module runs the real
broker from its Maven Central jars with nothing but Java 17+, plus Maven for the first fetch:

* the jars named in ``apache_kafka.pom.xml`` are copied once into a cache outside git
  (``~/.cache/battery-worker/apache-kafka-<version>/lib``, or ``$BATTERY_WORKER_KAFKA_HOME/lib``) and
  reused afterwards without Maven or network;
* each :meth:`ApacheKafkaBroker.start` makes a fresh temporary directory with a new CA and server
  keystore (``keytool`` from the JDK), ``server.properties`` and storage formatted with SCRAM users, then
  runs one KRaft node (broker and controller) with loopback listeners on free ports:

  ========================  ===========================================  ==========================
  listener                  authentication                               authorisation
  ========================  ===========================================  ==========================
  ``PLAINTEXT``             none (principal ``User:ANONYMOUS``)          super user
  ``SASL_PLAINTEXT``        SCRAM-SHA-512: ``admin``, ``alice``, ``bob``  ``admin`` super user,
                                                                         the others need ACLs
  ``SSL``                   server certificate only (``User:ANONYMOUS``)  super user
  ``SASL_SSL``              SCRAM-SHA-512 over TLS, the same users        as ``SASL_PLAINTEXT``
  ========================  ===========================================  ==========================

  so ordinary tests need no ACLs, while ACL tests grant ``alice``/``bob`` what they need
  (:meth:`ApacheKafkaBroker.grant`);
* :meth:`ApacheKafkaBroker.stop` sends SIGTERM (SIGKILL after a timeout) and deletes the directory.

``python -m battery_worker.brokers.apache_kafka`` starts one and prints how to connect to it.

This module is the one to import; the work is done by one module per job: ``apache_jars.py`` (Java and the
jar cache), ``apache_config.py`` (users, ``server.properties``, command lines), ``apache_tls.py`` (keystores),
``apache_acls.py`` (ACL grants) and ``apache_broker.py`` (:class:`ApacheKafkaBroker`, the lifecycle; the JVM
runs in ``launcher.BrokerProcess``, as Tansu does). This one adds the command-line entry point.

Only the standard library and aiokafka are used: a ``pip install -e .`` and a JDK are enough.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from battery_worker.brokers.apache_acls import ResourceType
from battery_worker.brokers.apache_broker import OTHER_LISTENERS, ApacheKafkaBroker
from battery_worker.brokers.apache_config import (
    ADMIN_USER,
    DEFAULT_USERS,
    SASL_MECHANISM,
    JvmProfile,
    Listener,
)
from battery_worker.brokers.apache_jars import HOME_ENV, ensure_jars, find_java, kafka_home, kafka_version
from battery_worker.kafka.exceptions import ApacheKafkaError, ApacheKafkaUnavailable

__all__ = [
    "ADMIN_USER",
    "DEFAULT_USERS",
    "HOME_ENV",
    "SASL_MECHANISM",
    "ApacheKafkaBroker",
    "Listener",
    "ResourceType",
    "ensure_jars",
    "find_java",
    "kafka_home",
    "kafka_version",
    "main",
]


def _describe(broker: ApacheKafkaBroker) -> str:
    users = broker.users
    others = ", ".join(f"{name} / {password}" for name, password in users.items() if name != ADMIN_USER)
    sasl_env = " ".join(f"{key}={value}" for key, value in broker.worker_env("SASL_PLAINTEXT").items())
    ssl_env = " ".join(f"{key}={value}" for key, value in broker.worker_env("SSL").items())
    sasl_ssl_env = " ".join(f"{key}={value}" for key, value in broker.worker_env("SASL_SSL").items())
    return "\n".join(
        [
            f"Apache Kafka {broker.version} is ready (pid {broker.pid}); Ctrl+C stops it, deleting its data.",
            f"  PLAINTEXT       {broker.bootstrap_servers}   no authentication (super user)",
            f"  SASL_PLAINTEXT  {broker.sasl_bootstrap_servers}   {SASL_MECHANISM}",
            f"  SSL             {broker.ssl_bootstrap_servers}   CA file {broker.ssl_cafile}",
            f"  SASL_SSL        {broker.sasl_ssl_bootstrap_servers}   {SASL_MECHANISM} over TLS (that CA)",
            f"  users: {ADMIN_USER} / {users[ADMIN_USER]} (super user); {others} (need ACLs)",
            f"  log: {broker.log_path}",
            "",
            f"  battery-worker run --bootstrap-servers {broker.bootstrap_servers}",
            f"  {sasl_env} battery-worker run",
            f"  {ssl_env} battery-worker run",
            f"  {sasl_ssl_env} battery-worker run",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m battery_worker.brokers.apache_kafka``: run a broker until Ctrl+C or SIGTERM."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m battery_worker.brokers.apache_kafka",
        description="Run a local Apache Kafka (PLAINTEXT, SASL/SCRAM, SSL, SASL_SSL) until Ctrl+C or SIGTERM",
    )
    parser.add_argument("--port", type=int, help="PLAINTEXT port (default: a free one)")
    for listener in OTHER_LISTENERS:
        flag = "--" + listener.lower().replace("_plaintext", "").replace("_", "-") + "-port"
        parser.add_argument(
            flag, type=int, dest=listener, metavar="PORT", help=f"{listener} port (default: a free one)"
        )
    parser.add_argument("--log", type=Path, help="append the broker's output to this file")
    parser.add_argument(
        "--jvm",
        choices=get_args(JvmProfile),
        default="quick-start",
        help="the JVM's options: quick to start (default), or those of Kafka's own start scripts (G1, 1 GiB)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    ports = {name: getattr(args, name) for name in OTHER_LISTENERS if getattr(args, name) is not None}
    try:
        broker = ApacheKafkaBroker(args.port, log_path=args.log, jvm=args.jvm, listener_ports=ports)
    except ValueError as exc:  # one line, as the launcher's other refusals
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        broker.start()
        print(_describe(broker), flush=True)
        while not stopping.wait(0.5):
            if not broker.running:
                print(f"Apache Kafka exited unexpectedly; log tail: {broker.log_tail()}", file=sys.stderr)
                return 1
        return 0
    except ApacheKafkaUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ApacheKafkaError as exc:
        if stopping.is_set():  # Ctrl+C reached the JVM too while it was starting
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
