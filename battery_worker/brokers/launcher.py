"""What the two local broker launchers share: a free port, the child process, waiting until it answers.

``embedded.py`` (Tansu) and ``apache_kafka.py`` (Apache Kafka) both spawn a broker as a child process on
loopback ports with its output in a file (:class:`BrokerProcess`), wait until it accepts connections and then
answers a Kafka Metadata request (:class:`Readiness`), and stop it with SIGTERM, then SIGKILL. Only the
standard library and aiokafka are used, as in the launchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

__all__ = [
    "LOOPBACK",
    "BrokerProcess",
    "Readiness",
    "free_port",
    "log_tail",
    "port_accepts",
    "port_taken_problem",
    "stop_process",
]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: Pause between two Metadata probes.
_PROBE_RETRY_S = 0.1


def free_port(host: str = LOOPBACK) -> int:
    """Ask the kernel for a free TCP port on ``host``.

    There is a small race (another process may take it before the caller binds it); the launchers retry
    with new ports when their broker exits early, which covers it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_taken_problem(host: str, port: int) -> str | None:
    """Why a broker asked for ``host:port`` cannot listen there, or None.

    Asked before the broker starts: another broker on that port answered the readiness probe, so the
    launcher said ready while its own broker failed to bind and died seconds later, and every command
    went to the other one.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to a server
        try:
            sock.bind((host, port))
        except OSError as error:
            return f"port {port} on {host} is taken ({error.strerror}): another broker? choose another --port"
    return None


def port_accepts(host: str, port: int) -> bool:
    """True once something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


async def port_accepts_async(host: str, port: int) -> bool:
    """Non-blocking twin of :func:`port_accepts`, for use on a running event loop."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass(frozen=True)
class Readiness:
    """How to wait for one spawned broker: where it listens, how to tell it died, how to word a failure.

    ``check_alive`` raises the launcher's own error when the process is gone; ``startup_error`` makes that
    error (with the broker's log tail) from a reason. Every failure raised here is one of those, so callers
    catch only their own error type.
    """

    host: str
    port: int
    error_type: type[Exception]
    check_alive: Callable[[], None]
    startup_error: Callable[[str], Exception]
    client_id: str
    poll_s: float

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def wait_listening(self, deadline: float, what: str = "port") -> None:
        """Block until the port accepts connections, before any aiokafka probe: aiokafka logs an ERROR
        for every refused connection."""
        while not port_accepts(self.host, self.port):
            self.check_alive()
            if time.monotonic() >= deadline:
                raise self.startup_error(f"{what} never accepted connections")
            time.sleep(self.poll_s)

    async def wait_listening_async(self, deadline: float, what: str = "port") -> None:
        """:meth:`wait_listening` on the caller's event loop, without blocking it."""
        while not await port_accepts_async(self.host, self.port):
            self.check_alive()
            if time.monotonic() >= deadline:
                raise self.startup_error(f"{what} never accepted connections")
            await asyncio.sleep(self.poll_s)

    def probe_in_thread(self, deadline: float, thread_name: str) -> None:
        """Run :meth:`probe` on a private loop in a thread, so it works inside a running loop too."""
        errors: list[BaseException] = []

        def runner() -> None:
            try:
                asyncio.run(self.probe(deadline))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=runner, name=thread_name, daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()) + 5.0)
        if thread.is_alive():
            raise self.startup_error("readiness probe hung")
        if errors:
            error = errors[0]
            if isinstance(error, self.error_type):
                raise error
            raise self.startup_error(f"readiness probe failed: {error!r}") from error

    async def probe(self, deadline: float) -> None:
        """Retry a Metadata request through aiokafka until it lists a broker or time runs out."""
        last: BaseException | None = None
        while True:
            self.check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.startup_error(f"Kafka API did not answer: {last!r}")
            client = AIOKafkaClient(
                bootstrap_servers=self.bootstrap_servers,
                request_timeout_ms=max(500, int(min(remaining, 5.0) * 1000)),
                client_id=self.client_id,
            )
            try:
                await client.bootstrap()
                if client.cluster.brokers():
                    return
                last = self.error_type("metadata listed no broker")
            except (TimeoutError, KafkaError, OSError) as exc:
                last = exc
            finally:
                await client.close()
            await asyncio.sleep(_PROBE_RETRY_S)


def _dying_with(owner: int) -> Callable[[], None] | None:
    """What the broker's process runs before the broker: SIGTERM when the thread that started it ends.

    An owner killed by a signal runs no ``atexit`` nor ``with`` exit, and left the broker running with init
    as its parent (a JVM of 1 GiB, its port taken). The thread, not the process (Linux's rule): brokers are
    started from the main thread (the tests' fixtures, the demo, the benchmarks), which ends with the
    process. ``prctl`` is found here, in the owner; the child only calls it (no loading between fork and
    exec), then checks its owner is still the one that forked it. None off Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with_owner() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != owner:  # it ended before the line above: nobody will send the signal
            os.kill(os.getpid(), signal.SIGTERM)

    return die_with_owner


_PR_SET_PDEATHSIG = 1


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float, name: str) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited after ``timeout_s``; nothing if it already exited."""
    if proc.poll() is not None:
        return
    # A SIGSTOPped broker (fault tests) would ignore SIGTERM until continued.
    if hasattr(signal, "SIGCONT"):  # POSIX only
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s pid=%s ignored SIGTERM for %.0f s; sending SIGKILL", name, proc.pid, timeout_s)
        proc.kill()
        proc.wait(timeout_s)


def log_tail(path: Path | None, max_chars: int) -> str:
    """The last ``max_chars`` of a broker's log on one line (``|`` between lines), for error messages."""
    if path is None:
        return ""
    with contextlib.suppress(OSError):
        data = path.read_bytes()[-max_chars:]
        return data.decode("utf-8", "replace").strip().replace("\n", " | ")
    return ""


class BrokerProcess:
    """One broker child process at a time, its output in a file: :meth:`spawn`, :attr:`running`, :meth:`kill`.

    Why a file and not a pipe: a pipe nobody reads fills up and freezes the broker. The file's tail is what
    every startup error quotes (:meth:`log_tail`). The launcher decides what runs and when; this only starts
    the process, tells whether it still runs, and stops it (SIGTERM, SIGKILL after ``stop_timeout``).
    """

    def __init__(self, name: str, stop_timeout: float, unavailable: type[Exception]) -> None:
        """:param name: the broker as log messages name it (``"Tansu"``, ``"Kafka"``).
        :param stop_timeout: seconds :meth:`kill` waits after SIGTERM before SIGKILL.
        :param unavailable: the launcher's error raised when the executable cannot run.
        """
        self._name = name
        self._stop_timeout = stop_timeout
        self._unavailable = unavailable
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._temporary = False
        self.log_path: Path | None = None
        """File receiving the output; kept after :meth:`kill` until the owner forgets it, unless temporary."""

    def spawn(self, command: Sequence[str], log_path: Path, *, append: bool, temporary: bool = False) -> None:
        """Start ``command`` with its output in ``log_path`` (appended to, or truncated).

        :param temporary: :meth:`kill` deletes ``log_path`` and forgets it.
        :raises unavailable: the executable (``command[0]``) cannot run.
        """
        self.log_path = log_path
        self._temporary = temporary
        self._log_file = log_path.open("ab" if append else "wb")
        try:
            # argv: the launcher's resolved executable, fixed flags and generated config; no shell.
            self._proc = subprocess.Popen(  # noqa: S603
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_dying_with(os.getpid()),
            )
        except OSError as exc:
            self._close_log()
            raise self._unavailable(f"cannot execute {command[0]}: {exc}") from exc

    @property
    def started(self) -> bool:
        """True from :meth:`spawn` until :meth:`kill`, even if the process has exited meanwhile."""
        return self._proc is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit code once the process has exited; ``None`` while it runs or when none was started."""
        return self._proc.poll() if self._proc is not None else None

    def log_tail(self, max_chars: int) -> str:
        return log_tail(self.log_path, max_chars)

    def kill(self) -> None:
        """SIGTERM, SIGKILL after ``stop_timeout``; close the log file, delete it if temporary. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, self._stop_timeout, self._name)
        self._close_log()
        if self._temporary and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None
