"""What the metrics and health server asks of a running worker's clients; never on the hot path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError


async def consumer_lag(
    consumer: AIOKafkaConsumer | None, assigned: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """Records not yet fetched per assigned partition: fetch high watermark minus position.

    Never ``end_offsets()`` alone: on Tansu ListOffsets under-reports a batch-written partition's end.
    A partition not fetched yet has no high watermark and is left out.
    """
    if consumer is None:
        return {}
    lags: dict[TopicPartition, int] = {}
    for tp in sorted(assigned):
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        try:
            position = await asyncio.wait_for(consumer.position(tp), 2.0)
        except (KafkaError, TimeoutError):
            continue
        lags[tp] = max(0, highwater - position)
    return lags


async def broker_answers(producer: AIOKafkaProducer | None, timeout_s: float) -> bool:
    """True when a metadata request over the producer's connections answers within ``timeout_s``."""
    if producer is None:
        return False
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
    except (KafkaError, TimeoutError, OSError):
        return False
    return True
