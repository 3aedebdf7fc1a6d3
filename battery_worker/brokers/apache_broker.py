"""The local Apache Kafka broker's lifecycle: one KRaft node as a JVM child process on loopback ports.

Each :meth:`ApacheKafkaBroker.start` makes a fresh temporary directory with a new CA and server keystore
(``apache_tls.py``), ``server.properties`` and storage formatted with SCRAM users (``apache_config.py``), runs
the JVM on the jars of ``apache_jars.py`` and returns once it answers; :meth:`ApacheKafkaBroker.stop` sends
SIGTERM (SIGKILL after a timeout) and deletes the directory. Users import it from ``apache_kafka.py``.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiokafka.helpers import create_ssl_context

from battery_worker.brokers.apache_acls import ResourceType, grant
from battery_worker.brokers.apache_config import (
    ADMIN_USER,
    HOST,
    SASL_MECHANISM,
    JvmProfile,
    Listener,
    broker_command,
    format_storage,
    scram_users,
    write_config,
)
from battery_worker.brokers.apache_jars import ensure_jars, find_java, kafka_version
from battery_worker.brokers.apache_tls import CA_FILE, make_keystores
from battery_worker.brokers.launcher import BrokerProcess, Readiness, free_port, port_taken_problem
from battery_worker.kafka.exceptions import ApacheKafkaError, ApacheKafkaUnavailable

__all__ = ["ApacheKafkaBroker"]

log = logging.getLogger(__name__)

_POLL_S = 0.05


OTHER_LISTENERS = ("SASL_PLAINTEXT", "SSL", "SASL_SSL", "CONTROLLER")
"""The listeners beside PLAINTEXT, whose ports ``listener_ports`` may give."""


class ApacheKafkaBroker:
    """One Apache Kafka KRaft node (broker and controller) as a JVM child process on loopback ports.

    Use it as a context manager (``with ApacheKafkaBroker() as broker: ...``) or call :meth:`start` /
    :meth:`stop`. :meth:`start` returns once a Kafka Metadata request on the PLAINTEXT listener lists the
    broker. Everything (keystores, data, log unless ``log_path`` is given) lives in a temporary directory
    that :meth:`stop` deletes: each start is a new, empty cluster with a new CA. The JVM's output goes to a
    file (:class:`.launcher.BrokerProcess`) whose tail is part of every startup error.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        users: Mapping[str, str] | None = None,
        heap: str | None = None,
        jvm: JvmProfile = "quick-start",
        startup_timeout: float = 90.0,
        stop_timeout: float = 20.0,
        extra_properties: Mapping[str, str] | None = None,
        listener_ports: Mapping[str, int] | None = None,
    ) -> None:
        """Configure (but do not start) a broker.

        :param port: loopback port of the PLAINTEXT listener; ``None`` picks a free one at :meth:`start`.
        :param listener_ports: the other listeners' ports by name (``SASL_PLAINTEXT``, ``SSL``,
            ``SASL_SSL``, ``CONTROLLER``); one not named gets a free port. Three review runs sharing a
            machine were given port ranges the free ports fell outside of.
        :param home: jar cache directory; ``None`` means :func:`kafka_home`.
        :param log_path: file that receives the broker's output (appended, kept); ``None`` keeps it in the
            temporary directory, deleted on :meth:`stop`.
        :param users: SCRAM users without rights besides the super user ``admin`` (name → password);
            ``None`` means :data:`DEFAULT_USERS`.
        :param heap: the JVM's ``-Xmx``; ``None``: the ``jvm`` profile's (512m quick, 1G as Kafka's scripts).
        :param jvm: ``quick-start`` (C1 and the serial collector: a test suite starts brokers often) or
            ``kafka-scripts``, the options Kafka's own start scripts use (G1, the optimising compiler,
            1 GiB reserved): the broker our users run, slower to start; what the benchmark runs.
        :param startup_timeout: seconds :meth:`start` may take, the first jar fetch not included.
        :param stop_timeout: seconds :meth:`stop` waits after SIGTERM before SIGKILL.
        :param extra_properties: ``server.properties`` entries added or overriding the defaults.
        """
        if startup_timeout <= 0 or stop_timeout <= 0:
            raise ValueError("startup_timeout and stop_timeout must be > 0")
        self._users = scram_users(users)
        unknown = set(listener_ports or {}) - set(OTHER_LISTENERS)
        if unknown:
            raise ValueError(f"no such listener {sorted(unknown)}: one of {', '.join(OTHER_LISTENERS)}")
        # The ports given, by listener; the others are free ports chosen at each start.
        self._asked_ports = {
            name: number for name, number in {"PLAINTEXT": port, **(listener_ports or {})}.items() if number
        }
        by_port: dict[int, list[str]] = {}
        for name, number in self._asked_ports.items():
            if not 0 < number < 65536:
                raise ValueError(f"{name} port {number}: a port is 1 to 65535")
            by_port.setdefault(number, []).append(name)
        for number, names in by_port.items():  # Kafka's storage tool failed with a Scala trace on it
            if len(names) > 1:
                raise ValueError(f"port {number} given to {' and '.join(names)}: each listener needs its own")
        self._home = Path(home) if home is not None else None
        self._given_log = Path(log_path) if log_path is not None else None
        self._heap = heap
        self._jvm_profile: JvmProfile = jvm
        self._startup_timeout = startup_timeout
        self._extra = dict(extra_properties or {})
        self._ports: dict[str, int] = {}
        self._keystore_password = ""
        self._workdir: Path | None = None
        self._jvm = BrokerProcess("Kafka", stop_timeout, ApacheKafkaUnavailable)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ properties

    @property
    def bootstrap_servers(self) -> str:
        """PLAINTEXT listener (no authentication, super user), for aiokafka's ``bootstrap_servers``."""
        return self._address("PLAINTEXT")

    @property
    def sasl_bootstrap_servers(self) -> str:
        """SASL_PLAINTEXT listener (SCRAM-SHA-512, see :attr:`users`)."""
        return self._address("SASL_PLAINTEXT")

    @property
    def ssl_bootstrap_servers(self) -> str:
        """SSL listener (server certificate for ``127.0.0.1`` and ``localhost``, see :attr:`ssl_cafile`)."""
        return self._address("SSL")

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """SASL_SSL listener: SCRAM-SHA-512 over TLS, the certificate of :attr:`ssl_bootstrap_servers`."""
        return self._address("SASL_SSL")

    @property
    def ssl_cafile(self) -> Path:
        """PEM file of this run's CA, for clients' ``ssl_cafile`` / ``create_ssl_context(cafile=...)``."""
        self._address("SSL")
        assert self._workdir is not None
        return self._workdir / CA_FILE

    @property
    def users(self) -> dict[str, str]:
        """SCRAM users, name → password: ``admin`` (super user) and the users that need ACLs."""
        return dict(self._users)

    @property
    def port(self) -> int | None:
        """The PLAINTEXT port, or ``None`` before :meth:`start` chose one."""
        return self._ports.get("PLAINTEXT")

    @property
    def pid(self) -> int | None:
        """OS process id of the JVM (e.g. for fault tests with SIGSTOP), or ``None``."""
        return self._jvm.pid

    @property
    def running(self) -> bool:
        """True while the JVM exists and has not exited."""
        return self._jvm.running

    @property
    def log_path(self) -> Path | None:
        """File receiving the broker's output, or ``None`` when not started."""
        return self._jvm.log_path

    def log_tail(self, max_chars: int = 1500) -> str:
        """The end of the broker's output, as startup errors quote it."""
        return self._jvm.log_tail(max_chars)

    @property
    def version(self) -> str:
        """The Kafka version this broker runs."""
        return kafka_version()

    def client_options(self, listener: Listener = "PLAINTEXT", user: str = ADMIN_USER) -> dict[str, Any]:
        """Keyword arguments for an aiokafka client on ``listener`` (``user`` only matters for SASL)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self._address(listener),
            "security_protocol": listener,
        }
        if listener in ("SASL_PLAINTEXT", "SASL_SSL"):
            options.update(
                sasl_mechanism=SASL_MECHANISM,
                sasl_plain_username=user,
                sasl_plain_password=self._users[user],
            )
        if listener in ("SSL", "SASL_SSL"):
            options["ssl_context"] = create_ssl_context(cafile=str(self.ssl_cafile))
        return options

    def worker_env(self, listener: Listener = "PLAINTEXT", user: str = ADMIN_USER) -> dict[str, str]:
        """battery-worker settings (environment variables) that connect to ``listener`` as ``user``."""
        prefix = "BATTERY_WORKER_KAFKA__"
        env = {f"{prefix}BOOTSTRAP_SERVERS": self._address(listener), f"{prefix}SECURITY_PROTOCOL": listener}
        if listener in ("SASL_PLAINTEXT", "SASL_SSL"):
            env[f"{prefix}SASL_MECHANISM"] = SASL_MECHANISM
            env[f"{prefix}SASL_USERNAME"] = user
            env[f"{prefix}SASL_PASSWORD"] = self._users[user]
        if listener in ("SSL", "SASL_SSL"):
            env[f"{prefix}SSL_CAFILE"] = str(self.ssl_cafile)
        return env

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Fetch the jars if needed, prepare a fresh cluster, start the JVM and wait until it answers.

        Safe to call from inside a running event loop (the readiness probe runs on its own loop in a
        helper thread). Idempotent while running.

        :raises ApacheKafkaUnavailable: no Java 17+, or no jars and no way to fetch them.
        :raises ApacheKafkaError: preparation failed, or the broker exited or did not answer in time.
        """
        with self._lock:
            if self.running:
                return self
            java, keytool = find_java()
            for asked in self._asked_ports.values():
                taken = port_taken_problem(HOST, asked)
                if taken is not None:
                    raise ApacheKafkaError(taken)
            lib = ensure_jars(self._home)
            began = time.monotonic()
            deadline = began + self._startup_timeout
            workdir = Path(tempfile.mkdtemp(prefix="battery-worker-kafka-"))
            self._workdir = workdir
            try:
                # Retry only when we chose every port: a lost port race shows up as an early exit.
                attempts = 1 if self._asked_ports else 3
                for attempt in range(1, attempts + 1):
                    self._prepare(java, keytool, lib, first=attempt == 1)
                    self._spawn(java, lib)
                    try:
                        readiness = self._readiness()
                        # aiokafka logs an ERROR per refused connection: wait for the port before probing.
                        readiness.wait_listening(deadline, "the PLAINTEXT port")
                        readiness.probe_in_thread(deadline, "kafka-ready-probe")
                    except ApacheKafkaError:
                        exited = self._jvm.exit_code() is not None
                        self._kill()
                        if exited and attempt < attempts and time.monotonic() < deadline:
                            log.warning("Kafka exited during start (port race?); retrying with new ports")
                            continue
                        raise
                    break
            except BaseException:
                self._kill()
                self._remove_workdir()
                raise
            atexit.register(self.stop)
            log.info(
                "Apache Kafka %s pid=%s at %s (SASL %s, SSL %s, SASL_SSL %s), ready in %.1f s",
                kafka_version(),
                self.pid,
                self.bootstrap_servers,
                self.sasl_bootstrap_servers,
                self.ssl_bootstrap_servers,
                self.sasl_ssl_bootstrap_servers,
                time.monotonic() - began,
            )
            return self

    def stop(self) -> None:
        """Stop the broker (SIGTERM, SIGKILL after ``stop_timeout``) and delete its data. Idempotent."""
        with self._lock:
            atexit.unregister(self.stop)
            self._kill()
            self._remove_workdir()

    async def wait_ready(self, max_wait: float | None = None) -> None:
        """Wait, on the caller's loop, until a Metadata request on the PLAINTEXT listener succeeds.

        For fault tests that resumed a SIGSTOPped broker.

        :param max_wait: seconds to wait; ``None`` means ``startup_timeout``.
        :raises ApacheKafkaError: the broker exited or did not answer in time.
        """
        wait = max_wait if max_wait is not None else self._startup_timeout
        await self._readiness().probe(time.monotonic() + wait)

    async def grant(
        self,
        user: str,
        resource: ResourceType,
        name: str,
        operations: Iterable[str] = ("ALL",),
        *,
        prefixed: bool = False,
    ) -> None:
        """Allow SCRAM ``user`` the ``operations`` on a resource, and wait until the broker enforces it.

        Sent as the super user on the PLAINTEXT listener (:func:`.apache_acls.grant`). Example: ``await
        broker.grant("alice", "topic", "t-", ["READ", "WRITE", "DESCRIBE"], prefixed=True)``; the cluster
        resource's name is ``kafka-cluster``.

        :param operations: names such as ``READ``, ``WRITE``, ``DESCRIBE``, ``CREATE``, ``ALL``.
        :param prefixed: ``name`` is a prefix (PREFIXED pattern) rather than a literal name.
        :raises ApacheKafkaError: the broker refused an ACL or did not show it within 10 s.
        """
        await grant(self.bootstrap_servers, user, resource, name, operations, prefixed=prefixed)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"ApacheKafkaBroker(ports={self._ports}, pid={self.pid}, {state})"

    # ------------------------------------------------------------------ internals

    def _address(self, listener: str) -> str:
        if listener not in self._ports or not self._jvm.started:
            raise ApacheKafkaError("Apache Kafka broker is not started")
        return f"{HOST}:{self._ports[listener]}"

    def _prepare(self, java: str, keytool: str, lib: Path, *, first: bool) -> None:
        """Write the config and format storage; on the first attempt make the keystores meanwhile."""
        assert self._workdir is not None
        workdir = self._workdir
        shutil.rmtree(workdir / "data", ignore_errors=True)
        self._ports = {
            name: self._asked_ports.get(name) or free_port() for name in ("PLAINTEXT", *OTHER_LISTENERS)
        }
        if first:
            self._keystore_password = secrets.token_urlsafe(18)
        write_config(workdir, self._ports, self._keystore_password, self._extra)
        keystores = functools.partial(make_keystores, keytool, workdir, self._keystore_password)
        format_storage(java, lib, workdir, self._users, meanwhile=keystores if first else None)

    def _spawn(self, java: str, lib: Path) -> None:
        assert self._workdir is not None
        command = broker_command(java, lib, self._workdir, self._heap, self._jvm_profile)
        if self._given_log is not None:
            self._jvm.spawn(command, self._given_log, append=True)
        else:
            self._jvm.spawn(command, self._workdir / "kafka.log", append=False)

    def _readiness(self) -> Readiness:
        return Readiness(
            host=HOST,
            port=self._ports.get("PLAINTEXT", 0),
            error_type=ApacheKafkaError,
            check_alive=self._check_alive,
            startup_error=self._startup_error,
            client_id="battery-worker-kafka-probe",
            poll_s=_POLL_S,
        )

    def _check_alive(self) -> None:
        if not self._jvm.started:
            raise ApacheKafkaError("Apache Kafka broker is not started")
        if (code := self._jvm.exit_code()) is not None:
            raise self._startup_error(f"the broker exited with code {code}")

    def _startup_error(self, reason: str) -> ApacheKafkaError:
        message = f"Apache Kafka at {HOST}:{self._ports.get('PLAINTEXT', '?')}: {reason}"
        tail = self.log_tail()
        return ApacheKafkaError(f"{message}; log tail: {tail}" if tail else message)

    def _kill(self) -> None:
        self._jvm.kill()

    def _remove_workdir(self) -> None:
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        if self._given_log is None:
            self._jvm.log_path = None
        self._ports = {}
