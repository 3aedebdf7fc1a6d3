"""The broker's JVM as a child process whose output goes to a file.

Why a file and not a pipe: a pipe nobody reads fills up and freezes the JVM. The file's tail is what every
startup error quotes (:meth:`JvmProcess.log_tail`). ``apache_broker.py`` decides what runs and when; this
module only starts the process, tells whether it still runs, and stops it (SIGTERM, SIGKILL after a timeout).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from battery_worker.brokers.launcher import log_tail, stop_process
from battery_worker.kafka.exceptions import ApacheKafkaUnavailable

__all__ = ["JvmProcess"]


class JvmProcess:
    """One JVM at a time: :meth:`spawn` it, ask :attr:`running` / :meth:`exit_code`, :meth:`kill` it."""

    def __init__(self, stop_timeout: float) -> None:
        """:param stop_timeout: seconds :meth:`kill` waits after SIGTERM before SIGKILL."""
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.log_path: Path | None = None
        """File receiving the output; kept after :meth:`kill` until the owner forgets it."""

    def spawn(self, command: Sequence[str], log_path: Path, *, append: bool) -> None:
        """Start ``command`` with its output in ``log_path`` (appended to, or truncated).

        :raises ApacheKafkaUnavailable: the executable (``command[0]``) cannot run.
        """
        self.log_path = log_path
        self._log_file = log_path.open("ab" if append else "wb")
        try:
            # argv: the JDK's java, our jar directory and generated config; no shell.
            self._proc = subprocess.Popen(  # noqa: S603
                command, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            self._close_log()
            raise ApacheKafkaUnavailable(f"cannot execute {command[0]}: {exc}") from exc

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
        """SIGTERM, SIGKILL after ``stop_timeout``; then close the log file. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, self._stop_timeout, "Kafka")
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None
