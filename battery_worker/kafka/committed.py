"""A group's committed offsets and their metadata, asked of its coordinator and read whole.

Not by ``AIOKafkaConsumer.committed``: aiokafka reads an offset fetch's answer partition by partition and
skips its top-level error, so a coordinator that refused it (``NOT_COORDINATOR`` with no partitions, as
Apache Kafka answers for a moment after a stall; found by an observability review that froze the broker for
45 s) read as "nothing committed", and the worker read whole partitions again from offset 0, writing every
dead letter there a second time. Its answer lacks the commit's metadata too, which says whether a
partition's state was stored (``positions.STATE_STORED``).

The request goes through the consumer's own coordinator (aiokafka 0.13 and 0.14, ``pyproject.toml``), so it
finds the group's coordinator as the consumer does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import aiokafka
import aiokafka.errors as Errors
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.commit import OffsetFetchRequest

__all__ = ["ATTEMPTS", "Committed", "committed_offsets", "read_answer"]

Committed = tuple[int | None, str]
"""A partition's committed offset (None: nothing committed) and the commit's metadata."""

ATTEMPTS = 12
"""How often an offset fetch is sent again after a retriable failure (the coordinator refusing it for now:
not the coordinator, loading its offsets; or the request lost: a timeout, a dropped connection), waiting
0.1 s doubled up to 2 s between, some 17 s in all, before the failure is raised (the worker rewinds)."""


async def committed_offsets(
    consumer: AIOKafkaConsumer, partitions: Collection[TopicPartition]
) -> dict[TopicPartition, Committed]:
    """The committed offset and metadata of each of ``partitions`` for ``consumer``'s group: one request."""
    if not partitions:
        return {}
    coordinator = _coordinator(consumer)
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    request = OffsetFetchRequest(coordinator.group_id, list(by_topic.items()))
    failure: Errors.KafkaError = _NoAnswer("no offset fetch sent")
    for attempt in range(ATTEMPTS):
        try:
            await coordinator.ensure_coordinator_known()
            answer = read_answer(await coordinator._send_req(request), partitions)
        except Errors.KafkaError as error:  # the request itself failed (aiokafka marks the coordinator dead)
            answer = error
        if isinstance(answer, dict):
            return answer
        failure = answer
        if not failure.retriable:
            raise failure
        if isinstance(failure, Errors.NotCoordinatorError):
            coordinator.coordinator_dead()
        if attempt + 1 < ATTEMPTS:
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
    raise failure


def read_answer(
    response: Any, partitions: Collection[TopicPartition]
) -> dict[TopicPartition, Committed] | Errors.KafkaError:
    """Each partition's offset and metadata in an offset fetch's answer, or the error it says instead: the
    top-level one (versions 2 and later), else the first partition's own; an answer that lacks a partition
    asked for is an error too, as retriable as a refusal."""
    error = Errors.for_code(getattr(response, "error_code", 0))
    if error is not Errors.NoError:
        return error()
    found: dict[TopicPartition, Committed] = {}
    for topic, answered in response.topics:
        for partition, offset, metadata, code in answered:
            error = Errors.for_code(code)
            if error is not Errors.NoError:
                return error()
            found[TopicPartition(topic, partition)] = (
                None if offset < 0 else int(offset),
                str(metadata or ""),
            )
    missing = [tp for tp in partitions if tp not in found]
    if missing:
        return _NoAnswer(f"the offset fetch's answer has no {missing}")
    return {tp: found[tp] for tp in partitions}


def _coordinator(consumer: AIOKafkaConsumer) -> Any:
    coordinator = getattr(consumer, "_coordinator", None)
    missing = [
        name
        for name in ("group_id", "_send_req", "ensure_coordinator_known", "coordinator_dead")
        if not hasattr(coordinator, name)
    ]
    if (
        coordinator is None or missing
    ):  # not aiokafka 0.13 or 0.14 (pyproject.toml), whose coordinator this is
        raise RuntimeError(f"aiokafka {aiokafka.__version__}: no consumer coordinator to read commits from")
    return coordinator


class _NoAnswer(Errors.KafkaError):  # type: ignore[misc]
    """An offset fetch answered without a partition asked for: asked again, as a refusal would be."""

    retriable = True
