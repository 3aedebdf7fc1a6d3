"""What ``battery-worker backtest`` shows while it works, and how it stops.

Progress goes to stderr: a rich bar on a terminal; with ``--progress`` and no terminal (a CI log, a pipe), a
plain line now and then, since a redrawn bar there is either nothing or a wall of escape codes. Both cover
the optimum (its size, then the time it has been solving) and each policy run.

Stopping: SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread, within the 0.1 s the optimum's
wait polls at (the optimum solves in a child process: see :mod:`battery_worker.backtest.optimum_process`) or
within one tick of a policy run. Further stop signals are ignored while the command unwinds, so nothing can
interrupt the child's clean-up.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from battery_worker.backtest.optimum import Optimum

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
LINE_EVERY_SECONDS = 10.0
"""Without a terminal: how often a line says the optimum is still being solved."""


class Stopped(Exception):
    """A stop signal arrived: the command ends with one line and exit code 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, _frame: object) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signum)


@contextmanager
def stoppable() -> Iterator[None]:
    """Within the block, a stop signal raises :class:`Stopped`; the previous handlers come back after it."""
    previous = {sig: signal.signal(sig, _stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def optimum_line(optimum: Optimum, seconds: float | None = None) -> str:
    """One line on what the optimum figure is: exact, or a bound with the best schedule and the gap."""
    from battery_worker.backtest.report import amount

    took = "" if seconds is None else f" ({seconds:.1f} s)"
    if optimum.exact:
        return f"optimum: {amount(optimum.value, optimum.value)}, exact{took}"
    bound = amount(optimum.bound, optimum.bound)
    return (
        f"optimum: at most {bound} (LP bound; capture is measured against it), best schedule "
        f"found {amount(optimum.value, optimum.bound)}, gap {100 * optimum.relative_gap:.2f}%{took}"
    )


class Progress:
    """Progress on stderr: a rich bar on a terminal, plain lines with ``--progress`` elsewhere, or nothing."""

    def __init__(self, requested: bool) -> None:
        self._terminal = sys.stderr.isatty()
        self._show = requested or self._terminal

    def _say(self, line: str) -> None:
        if self._show:
            print(line, file=sys.stderr, flush=True)

    @contextmanager
    def optimum(
        self, steps: int, negative: int, what: str = "optimum"
    ) -> Iterator[Callable[[float], None] | None]:
        """Around an optimum's solve; yields the ``on_wait(elapsed_seconds)`` callback."""
        label = f"{what}: solving {steps:,} steps ({negative:,} at negative prices)"
        if not self._show:
            yield None
        elif self._terminal:
            with self._bar(label, None) as _advance:
                yield lambda _elapsed: None
        else:
            self._say(label)
            next_line = [LINE_EVERY_SECONDS]

            def on_wait(elapsed: float) -> None:
                if elapsed >= next_line[0]:
                    self._say(f"optimum: still solving, {elapsed:.0f} s")
                    next_line[0] += LINE_EVERY_SECONDS

            yield on_wait

    def solved(self, optimum: Optimum, seconds: float) -> None:
        self._say(optimum_line(optimum, seconds))

    @contextmanager
    def policy(self, name: str, total: int) -> Iterator[Callable[[], None] | None]:
        """Around one policy run; yields the per-tick callback."""
        if not self._show:
            yield None
        elif self._terminal:
            with self._bar(name, total) as advance:
                yield advance
        else:
            started, done, step = time.monotonic(), [0], max(1, total // 10)

            def tick() -> None:
                done[0] += 1
                if done[0] % step == 0 or done[0] == total:
                    seconds = time.monotonic() - started
                    self._say(
                        f"{name}: {100 * done[0] // total}% ({done[0]:,}/{total:,} ticks, {seconds:.0f} s)"
                    )

            yield tick

    @contextmanager
    def _bar(self, label: str, total: int | None) -> Iterator[Callable[[], None]]:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
        bar = Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        bar.start()
        try:
            task = bar.add_task(label, total=total)
            yield lambda: bar.advance(task)
        finally:
            bar.stop()
