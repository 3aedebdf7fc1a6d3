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

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiokafka
import aiokafka.errors as Errors
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.commit import OffsetFetchRequest

from battery_worker.kafka.records import ConsumedRecord

__all__ = ["STATE_STORED", "Positions", "Sought", "commit_metadata", "marked"]

STATE_STORED = "battery-worker:state-stored"
"""The metadata of a commit of a ``prices`` partition whose sites have state stored: the state partition of
a commit that carries it was written, so one found empty lost its records (the topic deleted, or
``topics.state`` renamed). A partition whose every tick so far was dead-lettered has no state and is
committed without it: read again from its start at every restart, its dead letters would be written again."""


def commit_metadata(partition: int, with_state: Collection[int]) -> str:
    """:data:`STATE_STORED` where the partition (a number in ``with_state``) has sites whose state is
    stored by the time its commit lands, else nothing."""
    return STATE_STORED if partition in with_state else ""


def marked(
    offsets: Mapping[TopicPartition, int], with_state: Collection[int]
) -> dict[TopicPartition, tuple[int, str]]:
    """Offsets to commit, each with its :func:`commit_metadata`."""
    return {tp: (offset, commit_metadata(tp.partition, with_state)) for tp, offset in offsets.items()}


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
    ) -> Sought:
        """Seeks ``partitions`` to their committed offsets; those whose number is in ``stateless`` (their
        state partition never written) and whose commit says their state was stored lost it: to their first
        tick, where they still hold it (beginning offset 0).

        Where retention deleted the first ticks, a partition decided again from its oldest one with new
        batteries sent every retained tick's events again, each differing under its ``event_id`` (a review
        of the diff): it goes on from the committed offset instead, where only the events re-sent since the
        last checkpoint can differ.

        ``where_needed`` (an at-least-once assignment, where the consumer positions each partition itself):
        seek only the partitions that lost their state and those the consumer put before their committed
        offset (aiokafka takes a coordinator's refusal of its offset fetch for "nothing committed", and
        starts at the beginning: :func:`_committed`); a seek of every partition of a fresh start changed
        how its first fetches were spread over them."""
        sought = Sought()
        for tp in partitions:
            position = await consumer.position(tp)  # the consumer's own positioning ends first, or it
            committed, state_stored = await _committed(consumer, tp)  # overwrites ours
            lost = tp.partition in stateless and state_stored
            if where_needed and not lost:
                if committed is None or position >= committed:  # past it: a batch fetched meanwhile,
                    continue  # waiting for the lock this assignment holds; handled next, as ever
                sought.misplaced[tp] = (position, committed)
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


_COMMITTED_ATTEMPTS = 12
"""How often an offset fetch the coordinator refuses for now (not the coordinator, loading its offsets) is
asked again, waiting 0.1 s doubled up to 2 s between (some 15 s in all), before the refusal is raised."""


async def _committed(consumer: AIOKafkaConsumer, tp: TopicPartition) -> tuple[int | None, bool]:
    """The committed offset (None: none) and whether its commit says the partition's state was stored.

    Asked of the group coordinator here, not by ``AIOKafkaConsumer.committed``: aiokafka reads an offset
    fetch's answer partition by partition and skips its top-level error, so a coordinator that refused it
    (``NOT_COORDINATOR`` with no partitions, as Apache Kafka answers for a moment after a stall, found by
    an observability review: SIGSTOP the broker 45 s) read as "nothing committed", and the worker read
    whole partitions again from offset 0, writing every dead letter a second time. Its answer lacks the
    metadata too."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None:  # not aiokafka 0.13 or 0.14 (pyproject.toml), whose coordinator this reads
        raise RuntimeError(f"aiokafka {aiokafka.__version__}: no consumer coordinator to read commits from")
    request = OffsetFetchRequest(coordinator.group_id, [(tp.topic, [tp.partition])])
    refused: Errors.KafkaError = _NoAnswer(f"no answer for {tp} in the offset fetch")
    for attempt in range(_COMMITTED_ATTEMPTS):
        await coordinator.ensure_coordinator_known()
        response = await coordinator._send_req(request)
        answer = _answer_for(response, tp)
        if isinstance(answer, tuple):
            offset, metadata = answer
            return (None, False) if offset < 0 else (offset, metadata == STATE_STORED)
        refused = answer
        if not refused.retriable:
            raise refused
        if isinstance(refused, Errors.NotCoordinatorError):
            coordinator.coordinator_dead()
        await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
    raise refused


def _answer_for(response: Any, tp: TopicPartition) -> tuple[int, str] | Errors.KafkaError:
    """``tp``'s offset and metadata in an offset fetch's answer, or the error it says instead: the top-level
    one (versions 2 and later), else the partition's own; an answer without the partition is an error too."""
    error = Errors.for_code(getattr(response, "error_code", 0))
    if error is not Errors.NoError:
        return error()
    for topic, partitions in response.topics:
        for partition, offset, metadata, code in partitions:
            if (topic, partition) == (tp.topic, tp.partition):
                error = Errors.for_code(code)
                return (int(offset), str(metadata)) if error is Errors.NoError else error()
    return _NoAnswer(f"the offset fetch's answer has no {tp}")


class _NoAnswer(Errors.KafkaError):  # type: ignore[misc]
    """An offset fetch answered without the partition asked for: asked again, as a refusal would be."""

    retriable = True
