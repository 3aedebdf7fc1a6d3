"""Wait for a condition instead of sleeping: poll it until it holds, or fail saying what did not happen.

``wait_until`` blocks (for plain tests that drive processes and HTTP); ``wait_until_async`` awaits, for
tests on the event loop. Both fail the same way: ``timed out after N s waiting for <what>``, followed by
``detail()`` when given (a log tail, the last value seen).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class _Deadline:
    def __init__(self, timeout_s: float, what: str, detail: Callable[[], str] | None) -> None:
        self.timeout_s, self.what, self.detail = timeout_s, what, detail
        self.at = time.monotonic() + timeout_s

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def failure(self) -> AssertionError:
        message = f"timed out after {self.timeout_s:.0f} s waiting for {self.what}"
        if self.detail is not None:
            message = f"{message}: {self.detail()}"
        return AssertionError(message)


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    *,
    poll_s: float = 0.2,
    detail: Callable[[], str] | None = None,
) -> None:
    """Return once ``condition()`` is true; raise AssertionError after ``timeout_s``."""
    deadline = _Deadline(timeout_s, what, detail)
    while not condition():
        if deadline.passed():
            raise deadline.failure()
        time.sleep(poll_s)


async def wait_until_async(
    condition: Callable[[], Awaitable[bool]],
    timeout_s: float,
    what: str,
    *,
    poll_s: float = 0.5,
    detail: Callable[[], str] | None = None,
) -> None:
    """Return once ``await condition()`` is true; raise AssertionError after ``timeout_s``."""
    deadline = _Deadline(timeout_s, what, detail)
    while not await condition():
        if deadline.passed():
            raise deadline.failure()
        await asyncio.sleep(poll_s)
