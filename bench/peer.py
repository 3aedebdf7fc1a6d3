"""The Quix Streams peer in ``run.py``: is it installed, and did it decide what the worker decided?

The peer (``quix_job.py``) runs only where the ``bench-quix`` extra is installed; without it the benchmark
says so and leaves its rows out. Its decisions are checked against the worker's run on the same ``prices``
topic: every action read back from both ``actions`` topics, keyed by (site, tick time), must name the
same action; the payloads are compared byte for byte too (same domain code, same encoding, same
``event_id`` from the same input coordinates), which is reported beside it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import orjson
from aiokafka import TopicPartition
from common import PARTITIONS, settings_for

from battery_worker.kafka.clients import make_reader
from battery_worker.kafka.reading import read_to_end

QUIX_MISSING = "quixstreams is not installed (pip install -e '.[bench-quix]')"


def quix_missing() -> str | None:
    """Why the peer cannot run here, or None."""
    return None if importlib.util.find_spec("quixstreams") is not None else QUIX_MISSING


async def read_actions(bootstrap: str, topic: str) -> dict[tuple[bytes, str], bytes]:
    """Every action of ``topic``: (site key, tick time) → the record's value."""
    settings = settings_for(bootstrap, "unused", "unused", "unused")
    reader = make_reader(settings.kafka)
    await reader.start()
    actions: dict[tuple[bytes, str], bytes] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        async for batch in read_to_end(reader, tps, timeout_s=120):
            for message in batch:
                key, value = message.key, message.value
                assert key is not None, "an action is keyed by its site"
                assert value is not None, "an action is never a tombstone"
                tick_at = orjson.loads(value)["tick_timestamp"]
                actions[(key, tick_at)] = value
    finally:
        await reader.stop()
    return actions


async def compare_actions(bootstrap: str, worker_actions: str, quix_actions: str) -> dict[str, Any]:
    """The worker's and the peer's actions, tick by tick: same decision, and same bytes."""
    worker = await read_actions(bootstrap, worker_actions)
    quix = await read_actions(bootstrap, quix_actions)
    same_decision = same_bytes = 0
    for key, value in worker.items():
        other = quix.get(key)
        if other is None:
            continue
        same_bytes += other == value
        same_decision += orjson.loads(other)["action"] == orjson.loads(value)["action"]
    return {
        "worker_actions": len(worker),
        "quix_actions": len(quix),
        "same_decision": same_decision,
        "same_bytes": same_bytes,
        "equal": len(worker) == len(quix) == same_decision,
    }
