"""Where the worker reads from after an assignment or a rewind: the group's committed offsets, exactly."""

from __future__ import annotations

from collections.abc import Callable

import aiokafka.errors as Errors
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.commit import OffsetFetchResponse_v3
from aiokafka.structs import OffsetAndMetadata

from battery_worker.kafka.clients import make_group_consumer
from battery_worker.kafka.committed import read_answer
from battery_worker.kafka.positions import STATE_STORED, Positions
from tests.waiting import wait_until_async
from tests.workerkit import ercot_week, feed, make_settings

TP = TopicPartition("prices", 1)


def _response(error: int, partitions: list[tuple[int, int, str, int]]) -> OffsetFetchResponse_v3:
    topics = [("prices", partitions)] if partitions else []
    return OffsetFetchResponse_v3(throttle_time_ms=0, topics=topics, error_code=error)


def test_an_offset_fetch_refused_as_a_whole_is_an_error_not_nothing_committed() -> None:
    """An observability review froze Apache Kafka for 45 s: for a moment after, its coordinator answered
    offset fetches ``NOT_COORDINATOR`` with no partitions, which aiokafka reads as "nothing committed"
    (it checks each partition's error, never the answer's): the worker read whole partitions again from
    offset 0, and wrote every dead letter there a second time."""
    refused = read_answer(_response(16, []), [TP])
    assert isinstance(refused, Errors.NotCoordinatorError)
    assert refused.retriable
    assert isinstance(read_answer(_response(14, []), [TP]), Errors.CoordinatorLoadInProgressError)
    assert read_answer(_response(0, [(1, 1205, STATE_STORED, 0)]), [TP]) == {TP: (1205, STATE_STORED)}
    assert read_answer(_response(0, [(1, -1, "", 0)]), [TP]) == {TP: (None, "")}, "nothing committed, said so"
    of_the_partition = read_answer(_response(0, [(1, -1, "", 14)]), [TP])
    assert isinstance(of_the_partition, Errors.GroupLoadInProgressError)
    absent = read_answer(_response(0, [(0, 5, "", 0)]), [TP])
    assert isinstance(absent, Errors.KafkaError)
    assert absent.retriable, "an answer without the partition is asked again, not taken for no commit"


@pytest.mark.broker
async def test_a_partition_with_a_commit_is_sought_to_it_wherever_the_consumer_put_it(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """aiokafka positions an at-least-once assignment itself, at the beginning when its offset fetch was
    refused; the worker seeks every partition with a commit to it (a batch fetched from the wrong place
    meanwhile is dropped) and says where it lay before it; one with nothing committed stays where the
    consumer put it (a seek of every partition of a fresh start changed how its first fetches were spread)."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    await feed(settings, ercot_week()[:40], "solo")
    consumer = make_group_consumer(settings.kafka, settings.worker)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topics.prices, 0)
        consumer.subscribe([settings.topics.prices])
        await wait_until_async(lambda: _assigned(consumer, tp), 30, "the partition assigned")
        positions = Positions()
        assert (await positions.seek_to_committed(consumer, [tp], where_needed=True)).misplaced == {}
        assert positions.stamp() == {}, "nothing committed: where the consumer put it, not sought"
        await consumer.commit({tp: OffsetAndMetadata(25, "")})
        consumer.seek(tp, 0)  # as aiokafka resets a partition whose offset fetch it took for no commit
        sought = await positions.seek_to_committed(consumer, [tp], where_needed=True)
        assert sought.misplaced == {tp: (0, 25)}
        assert await consumer.position(tp) == 25
        assert positions.stamp() == {tp: 1}, "counted, so a batch fetched from offset 0 is dropped"
        # A review of the diff: a batch fetched from offset 0 while the assignment held the lock moved the
        # position past the commit, and the partition was left there, its batch handled again.
        consumer.seek(tp, 0)
        fetched = positions.stamp()
        batch = await consumer.getmany(tp, timeout_ms=5000, max_records=40)
        assert await consumer.position(tp) == 40
        sought = await positions.seek_to_committed(consumer, [tp], where_needed=True)
        assert sought.misplaced == {}, "past its commit: not said, but sought all the same"
        assert await consumer.position(tp) == 25
        assert positions.still_current(fetched, batch) == {}, "the batch from offset 0 is dropped"
    finally:
        await consumer.stop()


async def _assigned(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    if tp in consumer.assignment():
        return True
    await consumer.getmany(timeout_ms=200, max_records=1)
    return tp in consumer.assignment()
