"""At-least-once: when the batches handled since the last checkpoint get their tail (steps 4 and 5).

Why: writing a state record per site touched and committing after every batch costs a produce and a commit
per batch; with thousands of sites almost every tick writes a state record. Deferring both to a checkpoint
every ``worker.commit_interval_ms`` writes one state record per site touched in the interval (its latest)
and one commit (the latest offset per partition), as Kafka Streams (``commit.interval.ms``) and Quix
Streams (``commit_interval``) do. The price: a crash re-reads and re-emits, byte-identical, up to an
interval's events; the restored state and the committed offsets still agree, so no tick is applied twice.

Time is measured here, with the monotonic clock, never in the domain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from aiokafka import TopicPartition

__all__ = ["Checkpoint"]


class Checkpoint:
    """The offsets handled since the last checkpoint (the next one to commit, per partition), and when
    the next checkpoint is due."""

    def __init__(self, interval_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_ms / 1000
        self._clock = clock
        self._offsets: dict[TopicPartition, int] = {}
        self._since = clock()

    @property
    def pending(self) -> bool:
        """Records were handled since the last checkpoint: their state and offsets are not yet stored."""
        return bool(self._offsets)

    def add(self, commits: Mapping[TopicPartition, int]) -> None:
        """A batch's offsets, its events acknowledged; a later batch's offset of a partition wins."""
        self._offsets.update(commits)

    def due(self) -> bool:
        """Pending, and the interval has passed since the last checkpoint (with 0: after every batch)."""
        return self.pending and self._clock() - self._since >= self._interval_s

    def take(self) -> dict[TopicPartition, int]:
        """The offsets to commit at this checkpoint; the next interval starts now."""
        offsets, self._offsets = self._offsets, {}
        self._since = self._clock()
        return offsets

    def drop(self) -> None:
        """A rewind: memory is restored from the state topic and inputs re-read from the committed offsets,
        so what was pending is re-done, not stored."""
        self._offsets = {}
