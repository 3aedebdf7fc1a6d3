"""Where the group consumer reads from after an assignment or a rewind: the committed offsets, exactly.

Why it needs care with aiokafka: the consumer positions a newly assigned partition in the background, and a
``seek`` made before that ends is overwritten; ``seek_to_beginning`` is no better, it too resets later. And
a batch fetched from the old position, still waiting for the worker's lock while the rebalance callback
seeks, would be handled and then fetched again. So: wait for the consumer's own positioning, seek to an
explicit offset, and count seeks per partition so the loop drops records fetched before one.

"Fetched before" means before ``getmany`` *returned*, not before it was called: aiokafka hands out records
consistent with the position at that moment (it drains them synchronously and drops any fetched from an
older position), so a seek made while ``getmany`` waited is already reflected in what it returns. Counting
from the call instead dropped records read from the new position, and the consumer had moved past them: a
tick lost (found by the zombie test under rebalance churn).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from battery_worker.kafka.committed import committed_offsets
from battery_worker.kafka.records import ConsumedRecord

__all__ = ["STATE_STORED", "Positions", "Sought", "commit_metadata", "decided_with", "marked", "state_stored"]

STATE_STORED = "battery-worker:state-stored"
"""The metadata of a commit of a ``prices`` partition whose sites have state stored: the state partition of
a commit that carries it was written, so one found empty lost its records (the topic deleted, or
``topics.state`` renamed). A partition whose every tick so far was dead-lettered has no state and is
committed without it: read again from its start at every restart, its dead letters would be written again."""


_DECIDED_WITH = "decisions="
"""Names, in a commit's metadata, the decision settings fingerprint of the worker that committed it
(:meth:`~battery_worker.settings.Settings.decisions_fingerprint`)."""


def commit_metadata(partition: int, with_state: Collection[int], fingerprint: str = "") -> str:
    """:data:`STATE_STORED` where the partition (a number in ``with_state``) has sites whose state is
    stored by the time its commit lands, then the committing worker's decision settings fingerprint.

    The fingerprint tells the next owner whether the ticks after this commit, which a worker that did not
    stop cleanly may have decided and published, are decided again under other settings: their events are
    then re-sent under the same ``event_id`` with other content (a fleet operator's review, kill -9 and a
    restart with a new policy). A worker before 2026-12-06 compares the metadata whole with
    :data:`STATE_STORED`, so during a rolling upgrade it does not see the state a newer one stored."""
    stored = STATE_STORED if partition in with_state else ""
    named = f"{_DECIDED_WITH}{fingerprint}" if fingerprint else ""
    return " ".join(part for part in (stored, named) if part)


def state_stored(metadata: str) -> bool:
    """Whether a commit's metadata says its partition's state was stored (:func:`commit_metadata`)."""
    return metadata.split(" ", 1)[0] == STATE_STORED


def decided_with(metadata: str) -> str | None:
    """The decision settings fingerprint a commit's metadata names; None in a commit that names none."""
    for part in metadata.split(" "):
        if part.startswith(_DECIDED_WITH):
            return part[len(_DECIDED_WITH) :] or None
    return None


def marked(
    offsets: Mapping[TopicPartition, int], with_state: Collection[int], fingerprint: str = ""
) -> dict[TopicPartition, tuple[int, str]]:
    """Offsets to commit, each with its :func:`commit_metadata`."""
    return {
        tp: (offset, commit_metadata(tp.partition, with_state, fingerprint)) for tp, offset in offsets.items()
    }


Batch = Mapping[TopicPartition, Sequence[ConsumedRecord]]


class Positions:
    """Seeks to the committed offsets, and which fetched batches they made obsolete."""

    def __init__(self) -> None:
        self._seeks: dict[TopicPartition, int] = {}

    def stamp(self) -> dict[TopicPartition, int]:
        """Taken the moment ``getmany`` returns (no ``await`` between), for :meth:`still_current`."""
        return dict(self._seeks)

    def still_current(self, fetched: dict[TopicPartition, int], batch: Batch) -> Batch:
        """``batch`` without the partitions sought since it was fetched: those records come again."""
        if fetched == self._seeks:
            return batch
        return {tp: records for tp, records in batch.items() if fetched.get(tp) == self._seeks.get(tp)}

    async def seek_to_committed(
        self,
        consumer: AIOKafkaConsumer,
        partitions: Collection[TopicPartition],
        stateless: Collection[int] = (),
        *,
        where_needed: bool = False,
        fingerprint: str = "",
    ) -> Sought:
        """Seeks ``partitions`` to their committed offsets; those whose number is in ``stateless`` (their
        state partition never written) and whose commit says their state was stored lost it: to their first
        tick, where they still hold it (beginning offset 0).

        Where retention deleted the first ticks, a partition decided again from its oldest one with new
        batteries sent every retained tick's events again, each differing under its ``event_id`` (a review
        of the diff): it goes on from the committed offset instead, where only the events re-sent since the
        last checkpoint can differ.

        ``where_needed`` (an at-least-once assignment, where the consumer positions each partition itself):
        seek only the partitions that lost their state and those with a commit, where aiokafka's own
        positioning may be wrong (it takes a coordinator's refusal of its offset fetch for "nothing
        committed", and starts at the beginning: :mod:`.committed`) and a batch fetched from there may be
        waiting for the lock this assignment holds (counted as sought, it is dropped); one put before its
        commit is returned in ``misplaced``. A partition with nothing committed stays where the consumer put
        it: a seek of every partition of a fresh start changed how its first fetches were spread.

        ``fingerprint``: this worker's decision settings; a commit naming other ones is in
        ``decided_otherwise``."""
        sought = Sought()
        positions = {tp: await consumer.position(tp) for tp in partitions}  # the consumer's own first,
        commits = await committed_offsets(consumer, partitions)  # or its positioning overwrites ours
        for tp in partitions:
            committed, metadata = commits[tp]
            lost = tp.partition in stateless and state_stored(metadata)
            theirs = decided_with(metadata)
            if committed is not None and fingerprint and theirs not in (None, fingerprint):
                sought.decided_otherwise[tp] = (committed, theirs)
            if where_needed and not lost:
                if committed is None:
                    continue  # at the beginning, where the consumer put it
                if positions[tp] < committed:
                    sought.misplaced[tp] = (positions[tp], committed)
            if committed is None or lost:
                beginning = (await consumer.beginning_offsets([tp]))[tp]
                if committed is not None and committed > beginning:
                    sought.rebuilt[tp] = (committed, beginning)
                    if beginning > 0:  # its first ticks deleted: decided again from there, each would differ
                        beginning = committed
                committed = beginning
            consumer.seek(tp, committed)
            self._seeks[tp] = self._seeks.get(tp, 0) + 1
        return sought


@dataclass(slots=True)
class Sought:
    """What :meth:`Positions.seek_to_committed` found and mended."""

    rebuilt: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    """Partitions that lost their state, each with (committed, beginning): decided again from there."""
    misplaced: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    """Partitions the consumer had put before their commit, each with (position, committed)."""
    decided_otherwise: dict[TopicPartition, tuple[int, str]] = field(default_factory=dict)
    """Partitions last committed by a worker of other decision settings: (committed, its fingerprint)."""
