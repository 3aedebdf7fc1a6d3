"""What the worker counts, and the assignment state that drives its loop, kept apart from the loop itself.

Why two classes: :class:`WorkerStats` are numbers for the closing summary line and the metrics, which the
loop never reads to decide; :class:`Assignment` is what the loop acts on. Failures are counted by kind where
they happen (:func:`counting_failures`), so the metrics tell a fetch problem from a produce problem.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from battery_worker.errors import BatteryWorkerError
from battery_worker.pipeline.processing import Counters

__all__ = [
    "FAILURE_KINDS",
    "TRANSACTION_OUTCOMES",
    "Assignment",
    "FailureKind",
    "WorkerStats",
    "counting_failures",
    "summary",
]

FailureKind = Literal["fetch", "produce", "commit", "restore"]
"""What failed: fetching input (step 1), sending events or state records (steps 3 and 4), committing
offsets (step 5), or restoring state (on assignment or in a rewind). A retriable failure leads to a rewind."""

FAILURE_KINDS: tuple[FailureKind, ...] = ("fetch", "produce", "commit", "restore")

TransactionOutcome = Literal["committed", "aborted", "fenced"]
"""Exactly-once: how a partition's transaction ended (fenced: refused, another worker owns the partition)."""

TRANSACTION_OUTCOMES: tuple[TransactionOutcome, ...] = ("committed", "aborted", "fenced")


@dataclass(slots=True)
class WorkerStats:
    """Numbers for the closing summary line and the metrics; the loop never reads them to decide."""

    batches: int = 0
    """Batches whose events are acknowledged (steps 1 to 3; exactly-once: committed)."""
    checkpoints: int = 0
    """At-least-once: tails started (state records and offsets of the batches since the last one)."""
    rebalances: int = 0
    restores: int = 0
    sites_restored: int = 0
    last_restore_seconds: float = 0.0
    batch_started_at: float | None = None
    """``time.monotonic()`` when the batch in hand began to be processed (after any restore a rebalance ran
    first), None between batches: a batch whose sends hang (a topic deleted under the worker), or the
    checkpoint it waits for, showed on no metric and no probe until they failed, 30 s on."""
    commit_failures: int = 0
    """Commits refused after a rebalance: logged, nothing lost, no rewind."""
    rewinds: int = 0
    read_again: int = 0
    """Records this worker handled a second time, read again after a rewind: in the counts by outcome
    twice (a producer review could not reconcile "applied" with the ticks it sent)."""
    errors: dict[FailureKind, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))
    """Failed fetches, sends, commits and restores, counted where they failed."""
    transactions: dict[TransactionOutcome, int] = field(
        default_factory=lambda: dict.fromkeys(TRANSACTION_OUTCOMES, 0)
    )
    """Exactly-once only: partition transactions by outcome."""


@dataclass(slots=True)
class Assignment:
    """The ``prices`` partitions this worker owns, and whether their state is restored: what the loop
    acts on (which records to handle, what to restore, when idle means done, readiness)."""

    partitions: set[TopicPartition] = field(default_factory=set)
    restored: bool = False
    assigned_at: float = 0.0
    """When partitions were last assigned (monotonic): a bounded run's idle clock starts no earlier, so a
    join that waits out another member's session is not idle time."""


@contextlib.contextmanager
def counting_failures(stats: WorkerStats, kind: FailureKind) -> Iterator[None]:
    """Count a Kafka or restore failure under ``kind`` where it happens; it goes on to the loop."""
    try:
        yield
    except (KafkaError, BatteryWorkerError):
        stats.errors[kind] += 1
        raise


def summary(counters: Counters, stats: WorkerStats, sites_in_memory: int) -> str:
    """The closing line's numbers: records by outcome, batches, checkpoints, rebalances, rewinds, sites."""
    return (
        f"{counters.total} records ({counters.applied} applied, {counters.stale} stale, "
        f"{counters.already_applied} already applied, {counters.rejected} to DLQ), {stats.batches} batches, "
        f"{stats.checkpoints} checkpoints, {stats.rebalances} rebalances, {stats.rewinds} rewinds"
        f"{f' ({stats.read_again} records read again)' if stats.read_again else ''}, "
        f"{sites_in_memory} sites in memory"
    )
