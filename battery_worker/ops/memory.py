"""Freed heap memory given back to the operating system after a restore.

A restore reads every site's latest state record before it parses them (the last record of a site wins, and
which is last is known only at the end): with ``mpc`` about 10 KB a site, 92 MiB for 10,000 sites. Once the
sites are restored those bytes are freed, but glibc's ``malloc`` keeps freed blocks of its heap for reuse
and returns pages only from the heap's top, so the worker's RSS stayed at its restore peak for good:
10,000 ``mpc`` sites, 274 MiB after the restore, 182 MiB after ``malloc_trim(0)``, which hands back every
free page of the heap (``bench/state_memory.py``; about 5 ms for 100 MB). Where there is no glibc (musl,
macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):
        return None  # a C library without it (musl)
    return trim


def release_freed_memory() -> bool:
    """Return the heap's free pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
