"""CPU per tick of the worker's data path without a broker: the figure each hot-path change is measured by.

    .venv/bin/python bench/tick_cost.py                 # 30,000 ticks over 100 sites, threshold, best of 5
    .venv/bin/python bench/tick_cost.py --sites 10000 --policy mpc

What one batch of the worker does between ``getmany`` and the network, in process: each record through
``TickProcessor.handle`` (validate, decide, apply, the three events encoded), a batch's state records,
and every output record partitioned and appended to aiokafka's record batches (``batching.send_batched``
against a producer stand-in that builds real ``BatchBuilder``s and sends nothing). Process CPU time over
ticks, best of ``--repeat`` passes: on a shared machine the best pass is the least disturbed one.
The broker's share (fetch decoding, the requests, acknowledgements) is measured by ``run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiokafka.producer.message_accumulator import BatchBuilder
from common import PARTITIONS, POLICY, settings_for, tick_messages

from battery_worker.kafka.batching import send_batched
from battery_worker.kafka.clients import PRODUCER_BATCH_BYTES
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.processing import InputRecord, OutputRecord, TickProcessor

BATCH = 2_000
"""Records per batch, as the worker's default ``max_batch_records``."""


class BuildingProducer:
    """The three producer calls ``send_batched`` makes, building real record batches and sending none."""

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(PRODUCER_BATCH_BYTES, 0, is_transactional=False)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        batch._build()  # the wire bytes, as the sender would ask for them
        return None


def records(count: int, sites: int) -> list[InputRecord]:
    """The benchmark's ``prices`` load as the worker receives it: each site on its home partition."""
    offsets = [0] * PARTITIONS
    out = []
    for key, value in tick_messages(count, sites):
        partition = home_partition(key.decode(), PARTITIONS)
        out.append(InputRecord("prices", partition, offsets[partition], key, value, 1_900_000_000_000))
        offsets[partition] += 1
    return out


def policy_of(name: str) -> dict[str, Any]:
    """The benchmark's ``threshold`` (its parameters), or another policy by name with its defaults."""
    return POLICY if name == POLICY["name"] else {"name": name, "params": {}}


def new_processor(policy: dict[str, Any]) -> TickProcessor:
    """A worker's ``TickProcessor`` with the benchmark's settings and ``policy``, no broker."""
    settings = settings_for("unused:9092", "prices", "bench", "unused")
    settings = settings.model_copy(update={"policy": settings.policy.model_copy(update=policy)})
    return TickProcessor(settings.site_directory(), settings.topics.names(), prices_partitions=PARTITIONS)


async def one_pass(inputs: list[InputRecord], policy: dict[str, Any]) -> float:
    processor = new_processor(policy)
    producer: Any = BuildingProducer()
    started = time.process_time()
    for start in range(0, len(inputs), BATCH):
        outputs: list[OutputRecord] = []
        for record in inputs[start : start + BATCH]:
            outputs.extend(processor.handle(record, 0).outputs)
        await send_batched(producer, outputs)
        await send_batched(producer, processor.take_state_records())
    return (time.process_time() - started) / len(inputs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=30_000)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--policy", default=POLICY["name"], help="threshold (the benchmark's) or mpc, ...")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    inputs = records(args.ticks, args.sites)
    passes = [asyncio.run(one_pass(inputs, policy_of(args.policy))) for _ in range(args.repeat)]
    print(
        f"{args.policy}, {args.sites:,} sites, {args.ticks:,} ticks: {min(passes):.1f} µs CPU per tick "
        f"(best of {args.repeat}; all: {', '.join(f'{p:.1f}' for p in passes)})"
    )


if __name__ == "__main__":
    main()
