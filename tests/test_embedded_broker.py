"""Broker behaviour the worker relies on, checked against the session broker (Tansu in CI).

These pin down the Tansu quirks we work around (see docs/embedded-broker.md) so that a Tansu
upgrade that breaks them, or a test broker that behaves differently, fails loudly here first.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from battery_worker.brokers.embedded import EmbeddedBroker
from battery_worker.kafka.exceptions import EmbeddedBrokerError
from tests.waiting import wait_until

pytestmark = pytest.mark.broker

# Group joins on Tansu take about session_timeout/2 (measured), so keep the session short.
GROUP_TIMEOUTS = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "rebalance_timeout_ms": 6000,
}


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def create_topic(
    admin: AIOKafkaAdminClient, name: str, partitions: int = 1, configs: dict[str, str] | None = None
) -> None:
    """Create a topic and fail on any per-topic error (aiokafka returns them, it does not raise)."""
    response = await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
    errors = [(topic, code, msg) for topic, code, msg in response.topic_errors if code != 0]
    assert errors == [], errors


async def read_to_highwater(
    bootstrap: str, tp: TopicPartition, deadline_s: float = 30.0
) -> tuple[list[bytes], int]:
    """Read ``tp`` from the beginning up to the fetch high watermark.

    The high watermark comes from fetch responses; ``end_offsets()`` (ListOffsets) is wrong on
    Tansu for batch-written topics, so it must not be used to decide when we are done.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            batches = await consumer.getmany(tp, timeout_ms=500)
            values += [r.value for records in batches.values() for r in records if r.value]
            highwater = consumer.highwater(tp)
            if highwater is not None and await consumer.position(tp) >= highwater:
                return values, highwater
        raise AssertionError(f"did not reach the high watermark of {tp} in {deadline_s}s")
    finally:
        await consumer.stop()


async def test_highwater_counts_every_record_of_a_batch_written_topic(
    kafka_bootstrap: str, admin: AIOKafkaAdminClient, new_topic_name: Callable[[], str]
) -> None:
    topic = new_topic_name()
    await create_topic(admin, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        for start in range(0, 5000, 1000):  # 5 explicit batches of 1000 records
            batch = producer.create_batch()
            for i in range(start, start + 1000):
                assert batch.append(key=None, value=str(i).encode(), timestamp=None) is not None
            await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()

    values, highwater = await asyncio.wait_for(
        read_to_highwater(kafka_bootstrap, TopicPartition(topic, 0)), 60
    )

    assert highwater == 5000
    assert [int(v) for v in values] == list(range(5000))


async def test_compacted_topic_is_accepted_and_keeps_its_config(
    kafka_bootstrap: str, admin: AIOKafkaAdminClient, new_topic_name: Callable[[], str]
) -> None:
    topic = new_topic_name()
    await create_topic(admin, topic, configs={"cleanup.policy": "compact"})

    described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    # Tansu returns only explicitly set configs, Kafka returns all; both include this one.
    entries = {
        entry[0]: entry[1]
        for response in described
        for resource in response.resources
        if resource[3] == topic
        for entry in resource[4]
    }
    assert entries.get("cleanup.policy") == "compact"

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for version in range(3):
            await producer.send_and_wait(topic, key=b"battery-1", value=str(version).encode())
    finally:
        await producer.stop()
    values, _ = await asyncio.wait_for(read_to_highwater(kafka_bootstrap, TopicPartition(topic, 0)), 60)
    # Compaction may or may not have run (it never does on Tansu); the latest value must be last.
    assert values[-1] == b"2"


async def test_group_resumes_from_manually_committed_offset_after_restart(
    kafka_bootstrap: str,
    admin: AIOKafkaAdminClient,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
) -> None:
    topic, group = new_topic_name(), new_group_id()
    tp = TopicPartition(topic, 0)
    await create_topic(admin, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(10):
            await producer.send(topic, str(i).encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()

    async def consume(count: int, commit: bool) -> list[int]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **GROUP_TIMEOUTS,
        )
        await consumer.start()
        try:
            seen: list[int] = []
            while len(seen) < count:
                record = await consumer.getone()
                seen.append(int(record.value or b"-1"))
            if commit:
                await consumer.commit({tp: record.offset + 1})
                assert await consumer.committed(tp) == record.offset + 1
            return seen
        finally:
            await consumer.stop()

    first = await asyncio.wait_for(consume(4, commit=True), 60)
    second = await asyncio.wait_for(consume(6, commit=False), 60)

    assert first == [0, 1, 2, 3]
    assert second == [4, 5, 6, 7, 8, 9]


async def test_embedded_broker_lifecycle_and_restart_loses_data() -> None:
    """:class:`EmbeddedBroker` answers right after start(), and a restart starts from scratch."""
    broker = EmbeddedBroker(startup_timeout=20, stop_timeout=5)
    with pytest.raises(EmbeddedBrokerError):
        _ = broker.bootstrap_servers

    async def produce_and_list_topics() -> tuple[int, list[str]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            offset = (await producer.send_and_wait("probe", b"x", partition=0)).offset
        finally:
            await producer.stop()
        client = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await client.start()
        try:
            return offset, list(await client.list_topics())
        finally:
            await client.close()

    try:
        broker.start()  # blocks briefly (tens of ms); fine in a test
        first_pid = broker.pid
        assert broker.running
        assert first_pid is not None
        assert await asyncio.wait_for(produce_and_list_topics(), 30) == (0, ["probe"])

        broker.stop()
        assert not broker.running
        assert broker.pid is None
        broker.start()
        await broker.wait_ready(max_wait=10)
        assert broker.pid != first_pid
        async with asyncio.timeout(30):
            client = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
            await client.start()
            try:
                assert await client.list_topics() == []  # memory storage: all gone
            finally:
                await client.close()
    finally:
        broker.stop()
    assert not broker.running


OWNER = """
import time
from battery_worker.brokers.embedded import EmbeddedBroker

with EmbeddedBroker() as broker:
    print(broker.pid, flush=True)
    time.sleep(120)
"""


def _process_state(pid: int) -> str:
    """The kernel's one-letter state of ``pid`` (Z: dead, not yet reaped), or 'gone'."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_broker_ends_with_its_owner_killed_by_a_signal() -> None:
    """An owner ended by SIGTERM runs no ``with`` exit: the broker ran on with init as its parent (a review
    run found a 1 GiB JVM left so, and the launcher's orphans had to be killed by hand before benchmarks)."""
    with subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True) as owner:
        assert owner.stdout is not None
        broker = int(owner.stdout.readline())
        owner.send_signal(signal.SIGTERM)
        owner.wait(timeout=10)
    try:
        wait_until(lambda: _process_state(broker) in ("Z", "gone"), 5.0, "the broker to end with its owner")
    finally:
        if _process_state(broker) not in ("Z", "gone"):
            os.kill(broker, signal.SIGKILL)
