"""The optimum solved in a child process, so whoever waits for it can stop at once.

HiGHS runs in C and does not return to Python until it is done: a signal handler in the solving process waits
for the whole solve (minutes, on a long 5-minute series). Solved in a child process (``spawn``: a fresh
interpreter, no inherited threads or locks), the parent keeps running Python while it waits: it reports the
time spent (``on_wait``), a signal handler of its own runs within ``poll_seconds``, and a stop kills the child
(SIGKILL: it holds nothing that needs cleaning up).

The child starts with SIGINT, SIGTERM and SIGHUP blocked, then ignores SIGINT and SIGHUP: a Ctrl-C sent to
the whole terminal group reaches only the parent, which decides, and the child never prints a traceback of
its own. On Linux the child also dies with its parent (``PR_SET_PDEATHSIG``), so a parent killed with -9
leaves no solver running.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from battery_worker.backtest.engine import OptimumInputs
from battery_worker.backtest.optimum import Optimum, OptimumError
from battery_worker.battery_config import BatteryConfig

_BLOCKED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
T = TypeVar("T")


def solve_in_child(
    config: BatteryConfig,
    inputs: OptimumInputs,
    *,
    on_wait: Callable[[float], None] | None = None,
    poll_seconds: float = 0.1,
) -> Optimum:
    """Solve ``inputs`` in a child process and return its :class:`Optimum`.

    ``on_wait(elapsed_seconds)`` is called about every ``poll_seconds`` while the child solves. Whatever
    ends the wait early (an exception from ``on_wait`` or from a signal handler) kills the child first.
    Raises :class:`OptimumError` when the solve fails or the child dies.
    """
    return call_in_child(_solve_inputs, (config, inputs), on_wait=on_wait, poll_seconds=poll_seconds)


def _solve_inputs(config: BatteryConfig, inputs: OptimumInputs) -> Optimum:
    return inputs.solve(config)


def call_in_child(
    function: Callable[..., T],
    args: tuple[Any, ...],
    *,
    kwargs: dict[str, Any] | None = None,
    on_wait: Callable[[float], None] | None = None,
    poll_seconds: float = 0.1,
) -> T:
    """``function(*args)`` in a child process, as :func:`solve_in_child` solves there: any solve that HiGHS
    runs (the site optimum, the carbon-priced one) stops within ``poll_seconds`` of a signal.

    ``function`` must be importable by name (a module's function: it is pickled by reference). An
    :class:`OptimumError` it raises is raised here with its problem.
    """
    context = multiprocessing.get_context("spawn")
    connection, child_end = context.Pipe()
    child = context.Process(target=_solve, args=(child_end, os.getpid()), daemon=True)
    try:
        _start(child)
        child_end.close()
        connection.send((function, args, kwargs or {}))
        outcome = _wait(connection, child, on_wait, poll_seconds)
    finally:
        if child.is_alive():
            child.kill()
        if child.pid is not None:
            child.join()
        connection.close()
    if isinstance(outcome, _Failed):
        raise OptimumError("optimum", "child", outcome.problem)
    result: T = outcome
    return result


@dataclass(frozen=True, slots=True)
class _Failed:
    """What the child sends back when the call raised (the call's own result may be any value)."""

    problem: str


def _start(child: BaseProcess) -> None:
    """Start ``child`` whole: a stop signal that arrives meanwhile is acted on once it has started.

    A handler raising while ``start`` writes the child's bootstrap would leave the child a truncated pickle
    and a traceback, so the handlers are deferred (``start`` takes milliseconds: the inputs follow on the
    pipe, where a stop may cut them short). The mask the child inherits blocks the stop signals until it has
    set its own dispositions.
    """
    # The first spawn starts multiprocessing's resource tracker, and starting it *unblocks* SIGINT and
    # SIGTERM in this thread (not restores): have it running before the mask is set.
    resource_tracker.ensure_running()
    deferred: list[int] = []
    previous_handlers = {}
    if threading.current_thread() is threading.main_thread():
        previous_handlers = {
            sig: signal.signal(sig, lambda signum, _frame: deferred.append(signum)) for sig in _BLOCKED
        }
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
    try:
        child.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        for sig, handler in previous_handlers.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for signum in deferred:
            signal.raise_signal(signum)


def _wait(
    receiver: Connection,
    child: BaseProcess,
    on_wait: Callable[[float], None] | None,
    poll_seconds: float,
) -> Any:
    started = time.monotonic()
    while not receiver.poll(poll_seconds):
        if on_wait is not None:
            on_wait(time.monotonic() - started)
    try:
        outcome = receiver.recv()
    except EOFError:
        raise OptimumError("optimum", child.exitcode, "the solving process ended without an answer") from None
    return outcome


def _solve(connection: Connection, parent: int) -> None:
    """The child's whole life: receive the call, make it, send its result (or the error's text), exit.

    A parent that stops early closes the pipe mid-way: the child then leaves quietly.
    """
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)
    _die_with_parent(parent)
    try:
        function, args, kwargs = connection.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        return
    result: Any
    try:
        result = function(*args, **kwargs)
    except OptimumError as error:
        result = _Failed(error.problem)
    except Exception as error:  # sent as text: the parent reports it in one line
        result = _Failed(f"unexpected {type(error).__name__}: {error}")
    with contextlib.suppress(OSError):
        connection.send(result)  # fails only if the parent stopped waiting
    connection.close()


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
