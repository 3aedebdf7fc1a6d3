"""Did this process stand still for longer than its group session (SIGSTOP, a paused VM, a starved CPU)?

A member whose event loop stood still sent no heartbeat meanwhile: the group has dropped it and given its
partitions to another. aiokafka says so only once a heartbeat's answer comes back after the wake, and a
checkpoint that falls due in between would store the worker's old state over the new owner's newer one
(`clients.membership_lost` catches the later cases). So the worker asks here first: a watch task notes
the loop's pulse every ``TICK_S``, and a gap longer than the session, seen by the task or measured at the
moment of asking, is a freeze until the worker has rewound to what is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

TICK_S = 0.1


class FreezeWatch:
    def __init__(self, session_s: float) -> None:
        self._session_s = session_s
        self._seen = time.monotonic()
        self._froze_for: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._seen = time.monotonic()
        self._task = asyncio.create_task(self._watch(), name="freeze-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def froze_for(self) -> float | None:
        """How long the loop stood still past the session since :meth:`clear`, or None."""
        gap = time.monotonic() - self._seen  # woken just now: the watch task has not run since
        if gap > self._session_s + TICK_S:
            return gap
        return self._froze_for

    def clear(self) -> None:
        """The worker has rewound to its stored state (or been assigned anew): a later freeze counts."""
        self._froze_for = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            if now - self._seen > self._session_s + TICK_S:
                self._froze_for = now - self._seen
            self._seen = now
