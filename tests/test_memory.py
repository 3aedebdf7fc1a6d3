"""Freed heap pages go back to the system after a restore (``ops/memory.py``)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest

from battery_worker.ops.memory import release_freed_memory

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="reads the resident set from /proc/self/statm (Linux)"
)


def resident_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def test_memory_freed_below_live_objects_is_handed_back() -> None:
    # 10,000 records of 10 KB, as a restore reads them, then live objects above them on the heap: freed,
    # the records' pages stay with the process until the heap is trimmed.
    records = [bytes(10_000) + index.to_bytes(4, "little") for index in range(10_000)]
    kept = [bytes(200) + index.to_bytes(4, "little") for index in range(2_000)]
    del records
    gc.collect()
    before = resident_mb()
    if not release_freed_memory():
        pytest.skip(f"this C library has no malloc_trim ({sys.platform}, not glibc): nothing to hand back")
    after = resident_mb()
    assert before - after > 50, (before, after)
    assert len(kept) == 2_000
