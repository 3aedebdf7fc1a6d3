"""A worker that stood still past its session stores no checkpoint (``kafka/freezes.py``); one that was busy
computing does, as before: a long batch of ``mpc`` ticks must not rewind and redo itself for ever."""

from __future__ import annotations

import asyncio
import time

from battery_worker.kafka.freezes import FreezeWatch


async def test_a_stand_still_is_a_freeze_and_a_busy_stretch_is_not() -> None:
    watch = FreezeWatch(session_s=0.3)
    watch.start()
    try:
        await asyncio.sleep(0.25)
        started = time.monotonic()
        while time.monotonic() - started < 0.8:  # computing: the CPU used all along
            pass
        assert watch.froze_for() is None
        await asyncio.sleep(0.25)
        time.sleep(0.8)  # a stand-still, as SIGSTOP makes it: no CPU used  # noqa: ASYNC251
        froze = watch.froze_for()  # asked before the watch task runs again, as a checkpoint on waking is
        assert froze is not None
        assert froze >= 0.8
        await asyncio.sleep(0.25)
        assert watch.froze_for() is not None, "said until cleared"
        watch.clear()
        assert watch.froze_for() is None
    finally:
        await watch.stop()
