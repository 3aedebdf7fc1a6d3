"""Did this process stand still for longer than its group session (SIGSTOP, a paused VM, a starved CPU)?

A member whose event loop stood still sent no heartbeat meanwhile: the group has dropped it and given its
partitions to another. aiokafka says so only once a heartbeat's answer comes back after the wake, and a
checkpoint that falls due in between would store the worker's old state over the new owner's newer one
(`clients.membership_lost` catches the later cases). So the worker asks here first: a watch task notes
the loop's pulse every ``TICK_S``, and a gap longer than the session, seen by the task or measured at the
moment of asking, is a freeze until the worker has rewound to what is stored.

A gap the worker spent computing (a long batch of ``mpc`` ticks) is no freeze: the process used the CPU
meanwhile, where a stopped or starved one did not (under half of the gap). Such a batch still keeps the
heartbeats waiting, as before; its state is stored, so a worker the group drops for it goes on from there
rather than redo the batch for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

TICK_S = 0.1


_RUNNING_SHARE = 0.5
"""Of a gap's wall time, the CPU time above which the process was working, not stopped or starved."""


class FreezeWatch:
    def __init__(self, session_s: float) -> None:
        self._session_s = session_s
        self._seen = time.monotonic()
        self._seen_cpu = time.process_time()
        self._froze_for: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._seen, self._seen_cpu = time.monotonic(), time.process_time()
        self._task = asyncio.create_task(self._watch(), name="freeze-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def froze_for(self) -> float | None:
        """How long the loop stood still past the session since :meth:`clear`, or None."""
        gap = self._frozen_gap()  # woken just now: the watch task has not run since
        return gap if gap is not None else self._froze_for

    def clear(self) -> None:
        """The worker has rewound to its stored state (or been assigned anew): a later freeze counts."""
        self._froze_for = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            gap = self._frozen_gap()
            if gap is not None:
                self._froze_for = gap
            self._seen, self._seen_cpu = time.monotonic(), time.process_time()

    def _frozen_gap(self) -> float | None:
        """The wall time since the last pulse, if longer than the session and mostly not spent running."""
        gap = time.monotonic() - self._seen
        if gap <= self._session_s + TICK_S:
            return None
        ran = time.process_time() - self._seen_cpu
        return gap if ran < _RUNNING_SHARE * gap else None
