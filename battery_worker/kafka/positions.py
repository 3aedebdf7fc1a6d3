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

from aiokafka import AIOKafkaConsumer, TopicPartition

from battery_worker.kafka.records import ConsumedRecord

__all__ = ["Positions"]

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
    ) -> dict[TopicPartition, tuple[int, int]]:
        """Seeks ``partitions`` to their committed offsets; those whose number is in ``stateless`` (their
        state partition never written) to their beginning instead when offsets were committed past it:
        returns those, each with (committed, beginning)."""
        rebuilt: dict[TopicPartition, tuple[int, int]] = {}
        for tp in partitions:
            await consumer.position(tp)  # the consumer's own positioning ends first, or it overwrites ours
            committed = await consumer.committed(tp)
            if committed is None or tp.partition in stateless:
                beginning = (await consumer.beginning_offsets([tp]))[tp]
                if committed is not None and committed > beginning:
                    rebuilt[tp] = (committed, beginning)
                committed = beginning
            consumer.seek(tp, committed)
            self._seeks[tp] = self._seeks.get(tp, 0) + 1
        return rebuilt
