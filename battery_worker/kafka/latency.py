"""Per-batch timing for the metrics: a fixed-bucket histogram filled once per batch, never per record.

Two figures, both cumulative histograms in seconds (Prometheus ``le`` buckets):

* ``processing``: from ``getmany`` returning a batch to its events acknowledged (its state records and
  commit follow while the next batch is processed).
* ``tick_age``: for each partition of a batch, its oldest record's Kafka timestamp to that same moment:
  how long the slowest tick of the batch waited between the price monitor and an acknowledged action.
  One observation per partition and batch, an upper bound for every record of that batch.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from battery_worker.kafka.records import ConsumedRecord

BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (the last slot is +Inf) and their sum: what a Prometheus histogram needs (its
    count is the +Inf bucket's cumulative count)."""

    buckets: tuple[float, ...] = BUCKETS_S
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs, ``le`` as Prometheus writes it, ending with ``+Inf``."""
        pairs: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


@dataclass(slots=True)
class BatchLatency:
    processing: Histogram = field(default_factory=Histogram)
    tick_age: Histogram = field(default_factory=Histogram)

    def observe_batch(
        self, batch: Mapping[object, Sequence[ConsumedRecord]], started_monotonic: float
    ) -> None:
        """Record one batch whose events are acknowledged (``batch``: aiokafka's ``getmany`` result)."""
        self.processing.observe(time.monotonic() - started_monotonic)
        now_ms = time.time() * 1000
        for records in batch.values():
            if records:
                timestamp_ms = records[0].timestamp
                if timestamp_ms and timestamp_ms > 0:
                    self.tick_age.observe(max(0.0, (now_ms - timestamp_ms) / 1000))
