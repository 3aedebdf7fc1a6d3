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
  ========================  ===========================================  ==========================

  so ordinary tests need no ACLs, while ACL tests grant ``alice``/``bob`` what they need
  (:meth:`ApacheKafkaBroker.grant`);
* :meth:`ApacheKafkaBroker.stop` sends SIGTERM (SIGKILL after a timeout) and deletes the directory.

``python -m battery_worker.brokers.apache_kafka`` starts one and prints how to connect to it.

Only the standard library and aiokafka are used: a ``pip install -e .`` and a JDK are enough.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

from aiokafka import AIOKafkaClient
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.admin import CreateAclsRequest, DescribeAclsRequest

from battery_worker.brokers.launcher import LOOPBACK, Readiness, free_port, log_tail, stop_process
from battery_worker.kafka.exceptions import ApacheKafkaError, ApacheKafkaUnavailable

__all__ = [
    "ADMIN_USER",
    "DEFAULT_USERS",
    "HOME_ENV",
    "SASL_MECHANISM",
    "ApacheKafkaBroker",
    "ensure_jars",
    "find_java",
    "kafka_home",
    "kafka_version",
    "main",
]

log = logging.getLogger(__name__)

_HOST = LOOPBACK
_POLL_S = 0.05
_POM = Path(__file__).with_name("apache_kafka.pom.xml")
#: Written into the lib directory after a complete copy; holds the POM's digest (a changed POM fetches again).
_MARKER = ".battery-worker-complete"

#: Environment variable naming the cache directory (jars go to its ``lib`` subdirectory).
HOME_ENV = "BATTERY_WORKER_KAFKA_HOME"
SASL_MECHANISM = "SCRAM-SHA-512"
#: The SCRAM super user; the PLAINTEXT and SSL listeners' ``User:ANONYMOUS`` is one too.
ADMIN_USER = "admin"
#: SCRAM users without rights: ACL tests grant them what they need. Loopback test credentials, not secrets.
DEFAULT_USERS: Mapping[str, str] = {"alice": "alice-secret", "bob": "bob-secret"}
_ADMIN_PASSWORD = "admin-secret"  # noqa: S105 - a throwaway broker on loopback, printed for the user
# StorageTool's --add-scram syntax is "[name=N,password=P]": keep both free of its delimiters.
_CREDENTIAL = re.compile(r"[A-Za-z0-9._-]{1,64}")

#: Quick to start on a small machine: C1 only and the serial collector. Measured on 2 cores, start() to
#: ready: 4.2-4.6 s with these, 5.6-6.1 s without TieredStopAtLevel=1, 6.6-8.1 s with JVM defaults.
_JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Djava.awt.headless=true")
_KEYTOOL_OPTIONS = tuple(f"-J{option}" for option in _JVM_OPTIONS[:3])
_KEYTOOL_COMMANDS = frozenset({"-genkeypair", "-exportcert", "-certreq", "-gencert", "-importcert"})

# Kafka's protocol enums (org.apache.kafka.common.acl / resource), for CreateAcls and DescribeAcls.
_RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4, "transactional_id": 5}
_OPERATIONS = {
    "ALL": 2,
    "READ": 3,
    "WRITE": 4,
    "CREATE": 5,
    "DELETE": 6,
    "ALTER": 7,
    "DESCRIBE": 8,
    "CLUSTER_ACTION": 9,
    "DESCRIBE_CONFIGS": 10,
    "ALTER_CONFIGS": 11,
    "IDEMPOTENT_WRITE": 12,
}
_ANY = 1
_ALLOW = 3
_LITERAL = 3
_PREFIXED = 4

Listener = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL"]
ResourceType = Literal["topic", "group", "cluster", "transactional_id"]

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


# ---------------------------------------------------------------------------------------------- set-up


@functools.cache
def kafka_version() -> str:
    """The Kafka version the POM pins (its ``kafka.version`` property)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", _POM.read_text(encoding="utf-8"))
    if match is None:  # pragma: no cover - the POM ships with the package
        raise ApacheKafkaUnavailable(f"{_POM} names no kafka.version")
    return match.group(1).strip()


def kafka_home() -> Path:
    """Cache directory of the jars: ``$BATTERY_WORKER_KAFKA_HOME`` or ``~/.cache/battery-worker/...``."""
    configured = os.environ.get(HOME_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "battery-worker" / f"apache-kafka-{kafka_version()}"


def find_java() -> tuple[str, str]:
    """Return ``(java, keytool)`` from ``PATH``, checking that Java is 17 or newer (Kafka 4 needs it).

    :raises ApacheKafkaUnavailable: no ``java``/``keytool``, or a Java older than 17.
    """
    java = shutil.which("java")
    if java is None:
        raise ApacheKafkaUnavailable(
            "no `java` on PATH; install a JDK 17 or newer (e.g. apt-get install openjdk-17-jdk-headless)"
        )
    beside = Path(java).resolve().with_name("keytool")
    keytool = str(beside) if beside.is_file() else shutil.which("keytool")
    if keytool is None:
        raise ApacheKafkaUnavailable(f"no `keytool` beside {java} or on PATH; install a full JDK 17+")
    try:
        # argv is the java found on PATH and a fixed flag.
        probe = subprocess.run(  # noqa: S603
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApacheKafkaUnavailable(f"cannot run {java} -version: {exc}") from exc
    found = re.search(r'version "(\d+)(?:\.(\d+))?', probe.stderr + probe.stdout)
    if found is None:
        raise ApacheKafkaUnavailable(f"cannot tell the version of {java}: {probe.stderr.strip()[:200]!r}")
    major = int(found.group(1))
    if major == 1 and found.group(2):  # "1.8.0_x" is Java 8
        major = int(found.group(2))
    if major < 17:
        raise ApacheKafkaUnavailable(f"{java} is Java {major}; Kafka {kafka_version()} needs Java 17+")
    return java, keytool


def _jars_complete(lib: Path, digest: str) -> bool:
    with contextlib.suppress(OSError):
        return (lib / _MARKER).read_text(encoding="utf-8").strip() == digest
    return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock``, so two processes never fetch into the same cache at once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(home: Path | None = None, *, timeout: float = 900.0) -> Path:
    """Return the directory of the broker's jars, fetching them with Maven the first time.

    Later calls only read a marker file: no Maven, no network. A changed POM fetches again.

    :param home: cache directory; ``None`` means :func:`kafka_home`.
    :raises ApacheKafkaUnavailable: no ``mvn`` for a needed fetch, or the fetch failed.
    """
    home = home if home is not None else kafka_home()
    lib = home / "lib"
    pom_bytes = _POM.read_bytes()
    digest = hashlib.sha256(pom_bytes).hexdigest()
    if _jars_complete(lib, digest):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ApacheKafkaUnavailable(
            f"no `mvn` on PATH to fetch the Kafka {kafka_version()} jars once into {lib} "
            "(install Maven, e.g. apt-get install maven, or set "
            f"{HOME_ENV} to a directory whose lib/ was filled before)"
        )
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ApacheKafkaUnavailable(f"cannot create the jar cache {home}: {exc}") from exc
    with _locked(home / ".fetch.lock"):
        if _jars_complete(lib, digest):  # another process fetched while we waited
            return lib
        # Maven runs on a copy of the POM, so an installed (maybe read-only) package is never written to.
        pom = home / "pom.xml"
        pom.write_bytes(pom_bytes)
        partial = home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        log.info("fetching the Apache Kafka %s jars into %s (once)", kafka_version(), lib)
        command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
        command.append(f"-DoutputDirectory={partial}")
        try:
            # argv: the mvn found on PATH and fixed arguments.
            fetched = subprocess.run(  # noqa: S603
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ApacheKafkaUnavailable(
                f"Maven did not fetch the Kafka jars within {timeout:.0f} s"
            ) from exc
        except OSError as exc:
            raise ApacheKafkaUnavailable(f"cannot run {mvn}: {exc}") from exc
        main_jar = partial / f"kafka_2.13-{kafka_version()}.jar"
        if fetched.returncode != 0 or not main_jar.is_file():
            output = " | ".join((fetched.stdout + fetched.stderr).strip().splitlines()[-6:])
            raise ApacheKafkaUnavailable(
                f"fetching the Kafka {kafka_version()} jars with Maven failed "
                f"(exit {fetched.returncode}; is Maven Central reachable?): {output[-600:]}"
            )
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        (lib / _MARKER).write_text(digest + "\n", encoding="utf-8")
    return lib


def _cluster_id() -> str:
    """A Kafka cluster id (URL-safe base64 of a UUID); never starting with ``-``, which reads as an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


# ---------------------------------------------------------------------------------------------- broker


class ApacheKafkaBroker:
    """One Apache Kafka KRaft node (broker and controller) as a JVM child process on loopback ports.

    Use it as a context manager (``with ApacheKafkaBroker() as broker: ...``) or call :meth:`start` /
    :meth:`stop`. :meth:`start` returns once a Kafka Metadata request on the PLAINTEXT listener lists the
    broker. Everything (keystores, data, log unless ``log_path`` is given) lives in a temporary directory
    that :meth:`stop` deletes: each start is a new, empty cluster with a new CA.

    The JVM's output goes to a file, never to a pipe that could fill up and freeze it; its tail is part
    of every startup error.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        users: Mapping[str, str] | None = None,
        heap: str = "512m",
        startup_timeout: float = 90.0,
        stop_timeout: float = 20.0,
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        """Configure (but do not start) a broker.

        :param port: loopback port of the PLAINTEXT listener; ``None`` picks a free one at :meth:`start`.
            The other listeners always get free ports.
        :param home: jar cache directory; ``None`` means :func:`kafka_home`.
        :param log_path: file that receives the broker's output (appended, kept); ``None`` keeps it in the
            temporary directory, deleted on :meth:`stop`.
        :param users: SCRAM users without rights besides the super user ``admin`` (name → password);
            ``None`` means :data:`DEFAULT_USERS`.
        :param heap: the JVM's ``-Xmx``.
        :param startup_timeout: seconds :meth:`start` may take, the first jar fetch not included.
        :param stop_timeout: seconds :meth:`stop` waits after SIGTERM before SIGKILL.
        :param extra_properties: ``server.properties`` entries added or overriding the defaults.
        """
        if startup_timeout <= 0 or stop_timeout <= 0:
            raise ValueError("startup_timeout and stop_timeout must be > 0")
        chosen = dict(DEFAULT_USERS if users is None else users)
        if ADMIN_USER in chosen:
            raise ValueError(f"{ADMIN_USER!r} is the built-in super user; choose another user name")
        for name, password in chosen.items():
            if not (_CREDENTIAL.fullmatch(name) and _CREDENTIAL.fullmatch(password)):
                raise ValueError(f"user {name!r}: names and passwords may use only A-Z a-z 0-9 . _ -")
        self._users = {ADMIN_USER: _ADMIN_PASSWORD, **chosen}
        self._requested_port = port
        self._home = Path(home) if home is not None else None
        self._given_log = Path(log_path) if log_path is not None else None
        self._heap = heap
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._extra = dict(extra_properties or {})
        self._ports: dict[str, int] = {}
        self._keystore_password = ""
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_path: Path | None = None
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
    def ssl_cafile(self) -> Path:
        """PEM file of this run's CA, for clients' ``ssl_cafile`` / ``create_ssl_context(cafile=...)``."""
        self._address("SSL")
        assert self._workdir is not None
        return self._workdir / "ca.pem"

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
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the JVM exists and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        """File receiving the broker's output, or ``None`` when not started."""
        return self._log_path

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
        if listener == "SASL_PLAINTEXT":
            options.update(
                sasl_mechanism=SASL_MECHANISM,
                sasl_plain_username=user,
                sasl_plain_password=self._users[user],
            )
        elif listener == "SSL":
            options["ssl_context"] = create_ssl_context(cafile=str(self.ssl_cafile))
        return options

    def worker_env(self, listener: Listener = "PLAINTEXT", user: str = ADMIN_USER) -> dict[str, str]:
        """battery-worker settings (environment variables) that connect to ``listener`` as ``user``."""
        prefix = "BATTERY_WORKER_KAFKA__"
        env = {f"{prefix}BOOTSTRAP_SERVERS": self._address(listener), f"{prefix}SECURITY_PROTOCOL": listener}
        if listener == "SASL_PLAINTEXT":
            env[f"{prefix}SASL_MECHANISM"] = SASL_MECHANISM
            env[f"{prefix}SASL_USERNAME"] = user
            env[f"{prefix}SASL_PASSWORD"] = self._users[user]
        elif listener == "SSL":
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
            lib = ensure_jars(self._home)
            began = time.monotonic()
            deadline = began + self._startup_timeout
            workdir = Path(tempfile.mkdtemp(prefix="battery-worker-kafka-"))
            self._workdir = workdir
            try:
                # Retry only when we chose every port: a lost port race shows up as an early exit.
                attempts = 1 if self._requested_port is not None else 3
                for attempt in range(1, attempts + 1):
                    self._prepare(java, keytool, lib, first=attempt == 1)
                    self._spawn(java, lib)
                    try:
                        readiness = self._readiness()
                        # aiokafka logs an ERROR per refused connection: wait for the port before probing.
                        readiness.wait_listening(deadline, "the PLAINTEXT port")
                        readiness.probe_in_thread(deadline, "kafka-ready-probe")
                    except ApacheKafkaError:
                        exited = self._proc is not None and self._proc.poll() is not None
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
                "Apache Kafka %s pid=%s at %s (SASL %s, SSL %s), ready in %.1f s",
                kafka_version(),
                self.pid,
                self.bootstrap_servers,
                self.sasl_bootstrap_servers,
                self.ssl_bootstrap_servers,
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

        aiokafka's admin client has no ACL calls, so this sends CreateAcls itself (as the super user on
        the PLAINTEXT listener). Example: ``await broker.grant("alice", "topic", "t-", ["READ", "WRITE",
        "DESCRIBE"], prefixed=True)``; the cluster resource's name is ``kafka-cluster``.

        :param operations: names such as ``READ``, ``WRITE``, ``DESCRIBE``, ``CREATE``, ``ALL``.
        :param prefixed: ``name`` is a prefix (PREFIXED pattern) rather than a literal name.
        :raises ApacheKafkaError: the broker refused an ACL or did not show it within 10 s.
        """
        resource_type = _RESOURCE_TYPES[resource]
        codes = [_OPERATIONS[operation.upper()] for operation in operations]
        pattern = _PREFIXED if prefixed else _LITERAL
        principal = f"User:{user}"
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap_servers, client_id="battery-worker-acl")
        try:
            await client.bootstrap()
            node = client.get_random_node()
            for code in codes:
                request = CreateAclsRequest(resource_type, name, pattern, principal, "*", code, _ALLOW)
                response = await client.send(node, request)
                for error_code, message in response.creation_responses:
                    if error_code:
                        raise ApacheKafkaError(f"CreateAcls {principal} {resource} {name}: {message}")
            # CreateAcls answers once the controller committed; the broker's authorizer applies it a
            # moment later, and DescribeAcls on the broker reads that authorizer.
            deadline = time.monotonic() + 10.0
            wanted = DescribeAclsRequest(resource_type, name, pattern, principal, "*", _ANY, _ANY)
            while True:
                described = await client.send(node, wanted)
                found = {acl[2] for entry in described.resources for acl in entry[-1]}
                if set(codes) <= found:
                    return
                if time.monotonic() >= deadline:
                    raise ApacheKafkaError(f"ACLs for {principal} on {resource} {name} not visible in 10 s")
                await asyncio.sleep(_POLL_S)
        finally:
            await client.close()

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
        if listener not in self._ports or self._proc is None:
            raise ApacheKafkaError("Apache Kafka broker is not started")
        return f"{_HOST}:{self._ports[listener]}"

    def _prepare(self, java: str, keytool: str, lib: Path, *, first: bool) -> None:
        """Write the config and format storage; on the first attempt make the keystores meanwhile."""
        assert self._workdir is not None
        workdir = self._workdir
        shutil.rmtree(workdir / "data", ignore_errors=True)
        self._ports = {
            "PLAINTEXT": self._requested_port or free_port(),
            "SASL_PLAINTEXT": free_port(),
            "SSL": free_port(),
            "CONTROLLER": free_port(),
        }
        if first:
            self._keystore_password = secrets.token_urlsafe(18)
        properties = workdir / "server.properties"
        properties.write_text(self._server_properties(), encoding="utf-8")
        (workdir / "log4j2.properties").write_text(_LOG4J2, encoding="utf-8")
        scram = [
            f"{SASL_MECHANISM}=[name={name},password={password}]" for name, password in self._users.items()
        ]
        format_command = [
            java,
            "-Xmx256m",
            *_JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={workdir / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            _cluster_id(),
            "-c",
            str(properties),
            *[arg for entry in scram for arg in ("--add-scram", entry)],
        ]
        # argv: the JDK's java, our jar directory and generated values; no shell.
        formatter = subprocess.Popen(  # noqa: S603
            format_command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            if first:
                self._make_keystores(keytool, workdir)
            output, _ = formatter.communicate(timeout=120)
        finally:
            if formatter.poll() is None:
                formatter.kill()
                formatter.communicate()
        if formatter.returncode != 0:
            tail = " | ".join(output.decode("utf-8", "replace").strip().splitlines()[-5:])
            raise ApacheKafkaError(f"formatting Kafka storage failed (exit {formatter.returncode}): {tail}")

    def _make_keystores(self, keytool: str, workdir: Path) -> None:
        """A throwaway CA and a server key pair signed by it (SANs 127.0.0.1 and localhost), via keytool.

        Six keytool runs, a JVM start each, in four rounds (independent ones in pairs): about 2 s.
        """
        files = {"ca_ks": "ca.p12", "server_ks": "server.p12", "ca": "ca.pem", "csr": "server.csr"}
        files |= {"cert": "server.pem", "chain": "chain.pem"}
        paths = {key: str(workdir / name) for key, name in files.items()}
        password = self._keystore_password
        common = f"-storetype PKCS12 -storepass {password}"
        genkey = f"{common} -genkeypair -keyalg EC -groupname secp256r1 -validity 30 -keypass {password}"

        def step(template: str, *extra: str) -> list[str]:
            # Split the fixed words first, then put the paths in: a path may contain spaces.
            return [*_KEYTOOL_OPTIONS, *(word.format_map(paths) for word in template.split()), *extra]

        ca_name = ("-dname", "CN=battery-worker test CA")
        self._keytool_steps(
            keytool,
            step(f"{genkey} -alias ca -ext bc:c -keystore {{ca_ks}}", *ca_name),
            step(f"{genkey} -alias server -keystore {{server_ks}} -dname CN=localhost"),
        )
        self._keytool_steps(
            keytool,
            step(f"{common} -exportcert -rfc -alias ca -keystore {{ca_ks}} -file {{ca}}"),
            step(f"{common} -certreq -alias server -keystore {{server_ks}} -file {{csr}}"),
        )
        self._keytool_steps(
            keytool,
            step(
                f"{common} -gencert -rfc -alias ca -keystore {{ca_ks}} -validity 30 -infile {{csr}} "
                "-outfile {cert} -ext SAN=ip:127.0.0.1,dns:localhost -ext KU=digitalSignature "
                "-ext EKU=serverAuth"
            ),
        )
        # The reply with its whole chain installs without the CA being trusted in the keystore.
        chain = Path(paths["cert"]).read_text() + Path(paths["ca"]).read_text()
        Path(paths["chain"]).write_text(chain)
        self._keytool_steps(
            keytool,
            step(f"{common} -importcert -noprompt -alias server -keystore {{server_ks}} -file {{chain}}"),
        )

    @staticmethod
    def _keytool_steps(keytool: str, *steps: Sequence[str]) -> None:
        """Run keytool invocations concurrently; raise with keytool's message if one fails."""
        # argv: the JDK's keytool with generated arguments; no shell.
        procs = [
            subprocess.Popen(  # noqa: S603
                [keytool, *step], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            for step in steps
        ]
        failures = []
        for step, proc in zip(steps, procs, strict=True):
            try:
                output, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            if proc.returncode != 0:
                action = next((arg for arg in step if arg in _KEYTOOL_COMMANDS), "?")
                failures.append(f"keytool {action}: {output.decode('utf-8', 'replace').strip()[-300:]}")
        if failures:
            raise ApacheKafkaError("making the TLS keystores failed: " + "; ".join(failures))

    def _server_properties(self) -> str:
        assert self._workdir is not None
        ports = self._ports
        listeners = ",".join(f"{name}://{_HOST}:{port}" for name, port in ports.items())
        advertised = ",".join(
            f"{name}://{_HOST}:{port}" for name, port in ports.items() if name != "CONTROLLER"
        )
        settings: dict[str, str] = {
            "node.id": "1",
            "process.roles": "broker,controller",
            "controller.quorum.bootstrap.servers": f"{_HOST}:{ports['CONTROLLER']}",
            "controller.listener.names": "CONTROLLER",
            "listeners": listeners,
            "advertised.listeners": advertised,
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,CONTROLLER:PLAINTEXT"
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "sasl.enabled.mechanisms": SASL_MECHANISM,
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self._workdir / "server.p12"),
            "ssl.keystore.password": self._keystore_password,
            "ssl.key.password": self._keystore_password,
            "ssl.client.auth": "none",
            # Without a client certificate the SSL principal is User:ANONYMOUS, as on PLAINTEXT (and on
            # the controller listener, whose requests must pass the authorizer too).
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:ANONYMOUS;User:{ADMIN_USER}",
            "allow.everyone.if.no.acl.found": "false",
            "log.dirs": str(self._workdir / "data"),
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
            **self._extra,
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _spawn(self, java: str, lib: Path) -> None:
        assert self._workdir is not None
        if self._given_log is not None:
            self._log_path = self._given_log
            self._log_file = self._given_log.open("ab")
        else:
            self._log_path = self._workdir / "kafka.log"
            self._log_file = self._log_path.open("wb")
        command = [
            java,
            f"-Xmx{self._heap}",
            *_JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self._workdir / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            "kafka.Kafka",
            str(self._workdir / "server.properties"),
        ]
        try:
            # argv: the JDK's java, our jar directory and generated config; no shell.
            self._proc = subprocess.Popen(  # noqa: S603
                command, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            self._close_log()
            raise ApacheKafkaUnavailable(f"cannot execute {java}: {exc}") from exc

    def _readiness(self) -> Readiness:
        return Readiness(
            host=_HOST,
            port=self._ports.get("PLAINTEXT", 0),
            error_type=ApacheKafkaError,
            check_alive=self._check_alive,
            startup_error=self._startup_error,
            client_id="battery-worker-kafka-probe",
            poll_s=_POLL_S,
        )

    def _check_alive(self) -> None:
        if self._proc is None:
            raise ApacheKafkaError("Apache Kafka broker is not started")
        if (code := self._proc.poll()) is not None:
            raise self._startup_error(f"the broker exited with code {code}")

    def _startup_error(self, reason: str) -> ApacheKafkaError:
        message = f"Apache Kafka at {_HOST}:{self._ports.get('PLAINTEXT', '?')}: {reason}"
        tail = self._log_tail()
        return ApacheKafkaError(f"{message}; log tail: {tail}" if tail else message)

    def _log_tail(self, max_chars: int = 1500) -> str:
        return log_tail(self._log_path, max_chars)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, self._stop_timeout, "Kafka")
        self._close_log()

    def _remove_workdir(self) -> None:
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        if self._given_log is None:
            self._log_path = None
        self._ports = {}

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None


# ---------------------------------------------------------------------------------------------- CLI


def _describe(broker: ApacheKafkaBroker) -> str:
    users = broker.users
    others = ", ".join(f"{name} / {password}" for name, password in users.items() if name != ADMIN_USER)
    sasl_env = " ".join(f"{key}={value}" for key, value in broker.worker_env("SASL_PLAINTEXT").items())
    ssl_env = " ".join(f"{key}={value}" for key, value in broker.worker_env("SSL").items())
    return "\n".join(
        [
            f"Apache Kafka {broker.version} is ready (pid {broker.pid}); Ctrl+C stops it, deleting its data.",
            f"  PLAINTEXT       {broker.bootstrap_servers}   no authentication (super user)",
            f"  SASL_PLAINTEXT  {broker.sasl_bootstrap_servers}   {SASL_MECHANISM}",
            f"  SSL             {broker.ssl_bootstrap_servers}   CA file {broker.ssl_cafile}",
            f"  users: {ADMIN_USER} / {users[ADMIN_USER]} (super user); {others} (need ACLs)",
            f"  log: {broker.log_path}",
            "",
            f"  battery-worker run --bootstrap-servers {broker.bootstrap_servers}",
            f"  {sasl_env} battery-worker run",
            f"  {ssl_env} battery-worker run",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m battery_worker.brokers.apache_kafka``: run a broker until Ctrl+C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m battery_worker.brokers.apache_kafka",
        description="Run a local Apache Kafka (PLAINTEXT, SASL/SCRAM, SSL) until Ctrl+C or SIGTERM.",
    )
    parser.add_argument("--port", type=int, help="PLAINTEXT port (default: a free one)")
    parser.add_argument("--log", type=Path, help="append the broker's output to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = ApacheKafkaBroker(args.port, log_path=args.log)
    try:
        broker.start()
        print(_describe(broker), flush=True)
        while not stopping.wait(0.5):
            if not broker.running:
                print(f"Apache Kafka exited unexpectedly; log tail: {broker._log_tail()}", file=sys.stderr)
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
