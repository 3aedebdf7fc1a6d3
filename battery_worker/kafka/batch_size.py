"""How many records a batch may take, so that handling it keeps the event loop free well within the session.

Why: a batch's records are handled in one stretch of the event loop (step 2 of :mod:`.worker`), and the
consumer's heartbeats wait for it. At the default 2,000 records, a backlog of ``site`` policy ticks (a few
ms each, more on a busy machine) held the loop past ``worker.session_timeout_ms``: the group dropped the
worker, which rewound and emitted the whole backlog again (a review run: 3,204 of 3,204 actions twice).
The batch is sized from what records have cost so far, so a stretch lasts about a fifth of the session
(less where heartbeats are far apart for the session: a heartbeat due just as a stretch starts goes out
after it); a cheap policy still takes ``worker.max_batch_records`` at a time. Time is measured here, never
in the domain.
"""

from __future__ import annotations

__all__ = ["BatchSize"]

FIRST_BATCH_RECORDS = 10
"""Before any record has been timed: small enough for the dearest policy, and the next batch is sized."""
SESSION_SHARE = 0.2
"""The share of the session one batch's handling may take: heartbeats still go out, with room for a
machine several times slower than the last batches were."""
GROWTH = 2
"""A batch takes at most this many times the last one's limit: a run of cheap records (re-read after a
restart, stale, dead-lettered) says little of what the next applied ticks cost."""
_WEIGHT = 0.5
"""How much the latest stretch weighs in the cost per record: the policy mix changes, a stretch is noisy."""


class BatchSize:
    """The records the next batch may take, from the cost per applied tick of the stretches handled so far."""

    def __init__(self, session_timeout_s: float, heartbeat_interval_s: float, most: int) -> None:
        # A heartbeat held by a stretch goes out up to a heartbeat interval plus the stretch after the last.
        gap_left_s = session_timeout_s - heartbeat_interval_s
        self._budget_s = min(session_timeout_s * SESSION_SHARE, gap_left_s / 2)
        self._most = most
        self._seconds_per_record: float | None = None
        self._last = min(most, FIRST_BATCH_RECORDS)

    def limit(self) -> int:
        """At most ``most`` and twice the last limit; fewer when the ticks applied so far say a batch that
        long would take longer than the budget."""
        if self._seconds_per_record is None:
            return self._last
        fits = self._most if self._seconds_per_record <= 0 else int(self._budget_s / self._seconds_per_record)
        self._last = max(1, min(self._most, GROWTH * self._last, fits))
        return self._last

    def handled(self, applied: int, seconds: float) -> None:
        """``applied`` ticks were applied in a stretch of ``seconds`` (with whatever else it handled: a
        stretch that applied none says nothing of what a tick costs)."""
        if applied <= 0:
            return
        latest = max(seconds, 0.0) / applied
        before = self._seconds_per_record
        self._seconds_per_record = latest if before is None else _WEIGHT * latest + (1 - _WEIGHT) * before
