"""Create the worker's topics if missing and refuse to run on topics that would lose or misplace state.

Checked at start (as Quix Streams does): the state topic must be compacted and have exactly as many
partitions as ``prices``, because a site's state lives in the state partition numbered like the ``prices``
partition its ticks arrive on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from battery_worker.kafka.exceptions import TopicMisconfigured
from battery_worker.settings import Settings, TopicSettings

log = logging.getLogger(__name__)

COMPACT = {"cleanup.policy": "compact"}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    configs: dict[str, str]


def topic_specs(topics: TopicSettings) -> list[TopicSpec]:
    return [
        TopicSpec(topics.prices, {}),
        TopicSpec(topics.actions, {}),
        TopicSpec(topics.status, dict(COMPACT)),
        TopicSpec(topics.state, dict(COMPACT)),
        TopicSpec(topics.history, dict(COMPACT)),
        TopicSpec(topics.dlq, {}),
    ]


async def partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition counts of those of ``names`` that exist.

    Asks for all topics rather than for ``names``: a metadata request naming a missing topic makes brokers
    with auto-creation on create it, with default configs (not compacted).
    """
    wanted = set(names)
    described = await admin.describe_topics(None)
    return {
        entry["topic"]: len(entry["partitions"])
        for entry in described
        if entry["topic"] in wanted and entry.get("error_code", 0) == 0 and entry.get("partitions")
    }


async def ensure_topics(admin: AIOKafkaAdminClient, topics: TopicSettings) -> dict[str, int]:
    """Create what is missing (when allowed), then verify; returns each topic's partition count."""
    specs = topic_specs(topics)
    existing = await partition_counts(admin, [spec.name for spec in specs])
    missing = [spec for spec in specs if spec.name not in existing]
    if missing and not topics.create:
        names = ", ".join(spec.name for spec in missing)
        raise TopicMisconfigured(f"topics missing and topics.create is off: {names}")
    if missing:
        prices_partitions = existing.get(topics.prices, topics.partitions)
        new = [
            NewTopic(
                spec.name,
                prices_partitions if spec.name == topics.state else topics.partitions,
                topics.replication_factor,
                topic_configs=spec.configs,
            )
            for spec in missing
        ]
        response = await admin.create_topics(new)
        for name, code, *rest in _topic_errors(response):
            if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (another worker won the race)
                raise TopicMisconfigured(f"cannot create topic {name}: error {code} {rest}")
        log.info("created topics %s", ", ".join(spec.name for spec in missing))
        existing = await partition_counts(admin, [spec.name for spec in specs])
    await verify_state_topic(admin, topics, existing)
    return existing


async def verify_state_topic(
    admin: AIOKafkaAdminClient, topics: TopicSettings, partitions: dict[str, int]
) -> None:
    prices, state = partitions.get(topics.prices), partitions.get(topics.state)
    if prices is None or state is None:
        raise TopicMisconfigured(f"topic {topics.prices if prices is None else topics.state} not found")
    if prices != state:
        raise TopicMisconfigured(
            f"state topic {topics.state} has {state} partitions but {topics.prices} has {prices}: "
            "they must match (recreate the state topic with the same partition count)"
        )
    policy = (await topic_configs(admin, topics.state)).get("cleanup.policy", "delete")
    if "compact" not in policy:
        raise TopicMisconfigured(
            f"state topic {topics.state} has cleanup.policy={policy}; it must be compact "
            f"(kafka-configs --alter --entity-type topics --entity-name {topics.state} "
            "--add-config cleanup.policy=compact)"
        )


async def topic_configs(admin: AIOKafkaAdminClient, name: str) -> dict[str, str]:
    """The topic's configs as the broker reports them (some brokers report only explicitly set ones)."""
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    configs: dict[str, str] = {}
    for response in responses:
        for resource in response.to_object().get("resources", []):
            for entry in resource.get("config_entries", []):
                key = entry.get("config_names", entry.get("name"))
                value = entry.get("config_value", entry.get("value"))
                if key is not None and value is not None:
                    configs[str(key)] = str(value)
    return configs


def _topic_errors(response: Any) -> list[tuple[str, int, Any]]:
    obj = response.to_object()
    return [
        (entry.get("topic", entry.get("name")), entry.get("error_code", 0), entry.get("error_message"))
        for entry in obj.get("topic_errors", obj.get("topics", []))
    ]


async def prepare_topics(settings: Settings) -> dict[str, int]:
    """Create and verify the topics once, e.g. before a producer could auto-create ``prices`` wrongly."""
    from battery_worker.kafka.clients import make_admin, start_client

    admin = make_admin(settings.kafka)
    await start_client(admin, settings.kafka)
    try:
        return await ensure_topics(admin, settings.topics)
    finally:
        await admin.close()
