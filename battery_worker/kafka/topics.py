"""Create the worker's topics if missing and refuse to run on topics that would lose or misplace state.

Checked at start (as Quix Streams does): the state topic must be compacted and have exactly as many
partitions as ``prices``, because a site's state lives in the state partition numbered like the ``prices``
partition its ticks arrive on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, for_code
from aiokafka.protocol.metadata import MetadataRequest

from battery_worker.kafka.exceptions import TopicMisconfigured
from battery_worker.settings import Settings, TopicSettings

log = logging.getLogger(__name__)

COMPACT = {"cleanup.policy": "compact"}
ROLLED_HOURLY = {"segment.ms": "3600000", "segment.bytes": str(100 * 1024 * 1024)}
"""For the topics read whole (state at every restore, status by ``status``): Kafka never compacts the
active segment, 1 GiB or 7 days by default, so a restore read every record written since, not each site's
latest (a soak: 118,659 records for 300 sites in 11 minutes, restore 0.02 → 0.59 s and growing, some 40 s
after 14 h at 200 ticks/s). A segment closed each hour, or at 100 MiB, is compacted soon after."""
_AUTHORIZATION_CODES = (29, 31)  # TOPIC_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED
VISIBLE_TIMEOUT_S = 10.0
"""How long a created topic may take to appear in the broker's metadata (KRaft applies it asynchronously)."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    configs: dict[str, str]


def topic_specs(topics: TopicSettings) -> list[TopicSpec]:
    return [
        TopicSpec(topics.prices, {}),
        TopicSpec(topics.actions, {}),
        TopicSpec(topics.status, {**COMPACT, **ROLLED_HOURLY}),
        TopicSpec(topics.state, {**COMPACT, **ROLLED_HOURLY}),
        TopicSpec(topics.history, dict(COMPACT)),
        TopicSpec(topics.dlq, {}),
    ]


async def partition_counts(
    admin: AIOKafkaAdminClient, names: list[str], *, refuse_hidden: bool = True
) -> dict[str, int]:
    """Partition counts of those of ``names`` that exist.

    Asks for all topics rather than for ``names``: a metadata request naming a missing topic makes brokers
    with auto-creation on create it, with default configs (not compacted).
    """
    wanted = set(names)
    described = await admin.describe_topics(None)
    counts = {
        entry["topic"]: len(entry["partitions"])
        for entry in described
        if entry["topic"] in wanted and entry.get("error_code", 0) == 0 and entry.get("partitions")
    }
    unseen = sorted(wanted - counts.keys())
    if unseen and refuse_hidden:
        await _refuse_hidden(admin, unseen)
    return counts


async def _refuse_hidden(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """A topic this principal may not DESCRIBE is left out of the list of all topics, so it looked
    missing: ``status`` said 'no status published yet' and exited 0, ``replay`` 'topic not found', and
    the worker tried to create it and asked for CREATE. Asked by name (without auto-creation), the broker
    says which are hidden rather than absent."""
    request = MetadataRequest(names, allow_auto_topic_creation=False)
    response = await admin._send_request(request)  # describe_topics cannot refuse auto-creation
    hidden = [
        entry["topic"]
        for entry in response.to_object()["topics"]
        if entry.get("error_code", 0) in _AUTHORIZATION_CODES
    ]
    if hidden:
        which = f"topic {hidden[0]}: this principal may not DESCRIBE it"
        if len(hidden) > 1:
            which = f"topics {', '.join(hidden)}: this principal may not DESCRIBE them"
        raise for_code(29)(f"cannot see {which} (Kafka answers so whether a topic exists or not)")


async def ensure_topics(
    admin: AIOKafkaAdminClient, topics: TopicSettings, *, for_workers: bool = True
) -> dict[str, int]:
    """Create what is missing (when allowed), then verify; returns each topic's partition count.

    ``for_workers=False`` (``feed``, the monitor): a state topic missing beside an existing ``prices`` is
    left for the workers to create. It was deleted, and a worker creating it finds which partitions lost
    their sites' state (their commits say it was stored); created by a feed while the workers still ran,
    their next state records landed in it, a partition with one record counted as written, and its other
    sites started from empty batteries without a word (an on-call review).

    The state topic is created last, with the partition count ``prices`` really has: a ``prices`` topic
    created a moment ago (by an operator, another worker) may not be in the metadata yet, and its count is
    only known once it is.

    :raises aiokafka.errors.TopicAuthorizationFailedError: the principal may not create or describe a topic
        (:func:`battery_worker.kafka.diagnose.typed` makes it ``NotAuthorized``).
    """
    specs = topic_specs(topics)
    names = [spec.name for spec in specs]
    existing = existing_before = await partition_counts(admin, names)
    missing = [spec for spec in specs if spec.name not in existing]
    left = not for_workers and topics.state not in existing and topics.prices in existing
    if left:
        log.warning(
            "%s exists but %s does not: not created here, but by the workers at their start, which rebuild "
            'what it held (docs/operations.md, "State topic lost")',
            topics.prices,
            topics.state,
        )
        missing = [spec for spec in missing if spec.name != topics.state]
        names = [name for name in names if name != topics.state]
    if missing and not topics.create:
        raise TopicMisconfigured(
            f"topics missing and topics.create is off: {', '.join(s.name for s in missing)}"
        )
    if topics.state in existing:  # refused before anything is created, not after
        stored = existing[topics.state]
        if topics.prices in existing:
            _check_partitions(topics, existing[topics.prices], stored)
        elif stored != topics.partitions:
            raise TopicMisconfigured(
                f"state topic {topics.state} has {stored} partitions but {topics.prices}, missing, would be "
                f"created with topics.partitions={topics.partitions}: they must match (set it to {stored})"
            )
        await _check_state_configs(admin, topics.state)
    await _warn_of_cleanup(admin, topics, existing)
    _warn_if_fewer_partitions(topics, existing)
    first = [spec for spec in missing if spec.name != topics.state]
    if first:
        await _create(admin, first, topics, topics.partitions)
        existing = await _visible(admin, names if len(first) == len(missing) else [topics.prices])
    if len(first) < len(missing):
        state = next(spec for spec in missing if spec.name == topics.state)
        await _create(admin, [state], topics, existing.get(topics.prices, topics.partitions))
        existing = await _visible(admin, names)
    if missing:
        log.info("created topics %s", ", ".join(spec.name for spec in missing))
    # An existing state topic's configs were checked above, before anything was created.
    if not left:
        await verify_state_topic(admin, topics, existing, check_configs=topics.state not in existing_before)
    return existing


async def _create(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], topics: TopicSettings, partitions: int
) -> None:
    new = [NewTopic(s.name, partitions, topics.replication_factor, topic_configs=s.configs) for s in specs]
    response = await admin.create_topics(new)
    for name, code, message in _topic_errors(response):
        if code in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (another worker won the race)
            continue
        if code in _AUTHORIZATION_CODES:
            raise for_code(code)(f"cannot create topic {name}: {message} (needs CREATE on it or the cluster)")
        raise TopicMisconfigured(f"cannot create topic {name}: error {code} {message}")


async def _visible(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition counts once every one of ``names`` is in the metadata, or what is there after the timeout.

    Apache Kafka (KRaft) answers CreateTopics when the controller has committed the topic; the broker's
    metadata shows it a moment later (measured: a Metadata request right after it may still miss it).
    """
    deadline = time.monotonic() + VISIBLE_TIMEOUT_S
    while True:
        existing = await partition_counts(admin, names, refuse_hidden=False)  # just created: not yet
        if set(names) <= existing.keys() or time.monotonic() > deadline:
            return existing
        await asyncio.sleep(0.05)


async def verify_state_topic(
    admin: AIOKafkaAdminClient,
    topics: TopicSettings,
    partitions: dict[str, int],
    *,
    check_configs: bool = True,
) -> None:
    prices, state = partitions.get(topics.prices), partitions.get(topics.state)
    if prices is None or state is None:
        name = topics.prices if prices is None else topics.state
        raise TopicMisconfigured(f"topic {name} not found (or this principal may not DESCRIBE it)")
    _check_partitions(topics, prices, state)
    if check_configs:
        await _check_state_configs(admin, topics.state)


_WIDER_STATE_SAID: set[tuple[str, int, int]] = set()
"""The (state topic, its count, prices' count) already warned of: checked at start and at every assignment
and rewind, the same wider state topic was otherwise said up to three times per rebalance."""


def _check_partitions(topics: TopicSettings, prices: int, state: int) -> None:
    """A site's state lies in the state partition numbered as its home in ``prices``: the state topic has at
    least as many partitions (more, while it is grown ahead of ``prices``, leave the extra ones unused)."""
    if state >= prices:
        if state > prices and (topics.state, state, prices) not in _WIDER_STATE_SAID:
            _WIDER_STATE_SAID.add((topics.state, state, prices))
            log.warning(
                "state topic %s has %d partitions, %s %d: partitions %d and up stay unused until %s grows to "
                "match",
                topics.state,
                state,
                topics.prices,
                prices,
                prices,
                topics.prices,
            )
        return
    raise TopicMisconfigured(
        f"state topic {topics.state} has {state} partitions but {topics.prices} has {prices}: a site's state "
        f"lies in the partition numbered as its home, so grow it to {prices} as well (kafka-topics --alter "
        f"--topic {topics.state} --partitions {prices}), then start the worker again; docs/delivery.md, "
        "'Adding partitions'"
    )


def check_partition_counts(topics: TopicSettings, counts: dict[str, int]) -> int:
    """The count of ``prices`` when the state topic has at least as many partitions;
    :class:`TopicMisconfigured` otherwise (also when either is missing from ``counts``)."""
    prices, state = counts.get(topics.prices), counts.get(topics.state)
    if prices is None or state is None:
        name = topics.prices if prices is None else topics.state
        raise TopicMisconfigured(f"topic {name} not found (deleted while the worker ran?)")
    _check_partitions(topics, prices, state)
    return prices


async def current_partition_counts(
    client: AIOKafkaClient, names: list[str], timeout_s: float
) -> dict[str, int]:
    """Partition counts of ``names``, asked of a broker now by name (without auto-creation): a rebalance's
    assignment may name partitions the client's cached metadata does not know yet. A topic the broker
    says is unknown is left out; a failure or no answer within ``timeout_s`` is a retriable
    :class:`KafkaError` (the caller rewinds), never an old count taken for the current one."""
    node = client.get_random_node()
    if node is None:
        raise KafkaConnectionError("no broker known to ask for the topics' partition counts")
    request = MetadataRequest(names, allow_auto_topic_creation=False)
    try:
        response = await asyncio.wait_for(client.send(node, request), timeout_s)
    except TimeoutError:
        raise KafkaTimeoutError(f"no answer in {timeout_s:g} s to a metadata request for {names}") from None
    counts = {}
    for entry in response.to_object()["topics"]:
        code = entry.get("error_code", 0)
        if code == _UNKNOWN_TOPIC:
            continue
        if code != 0:
            raise for_code(code)(f"metadata of topic {entry['topic']}")
        counts[entry["topic"]] = len(entry["partitions"])
    # The client's own cache must know them too: a producer refuses a record for a partition it has not
    # seen ("Unrecognized partition"), and the state of a site that moved is written to its new home.
    try:
        refreshed = await asyncio.wait_for(client.force_metadata_update(), timeout_s)
    except TimeoutError:
        raise KafkaTimeoutError(f"no metadata refresh in {timeout_s:g} s") from None
    behind = [
        name
        for name, count in counts.items()
        if client.cluster.partitions_for_topic(name) is not None
        and len(client.cluster.partitions_for_topic(name) or ()) < count
    ]
    if not refreshed or behind:
        raise KafkaError(f"the client's metadata is behind the broker's for {behind or names}; retried")
    return counts


_UNKNOWN_TOPIC = 3
"""UNKNOWN_TOPIC_OR_PARTITION: the broker knows no such topic."""


async def _check_state_configs(admin: AIOKafkaAdminClient, state: str) -> None:
    problem = state_configs_problem(state, await topic_configs(admin, state))
    if problem is not None:
        raise TopicMisconfigured(f"state topic {state} has {problem}")


def state_configs_problem(state: str, configs: dict[str, str]) -> str | None:
    """What in the state topic's configs would lose a site's state, or None.

    Not compacted, a site's older records would go and its latest with them. Compacted and deleted
    (``compact,delete``), retention removes the latest record of a site quiet for longer than
    ``retention.ms``, which then starts afresh from ``initial_charge_percent`` without a word.
    """
    policy = configs.get("cleanup.policy", "delete")
    parts = cleanup_policies(configs)
    fix = (
        f"kafka-configs --alter --entity-type topics --entity-name {state} --add-config "
        "cleanup.policy=compact"
    )
    if "compact" not in parts:
        return f"cleanup.policy={policy}; it must be compact ({fix})"
    retention = configs.get("retention.ms", "604800000")  # the broker's default, 7 days, where not reported
    if "delete" in parts and retention != "-1":
        return (
            f"cleanup.policy={policy} with retention.ms={retention}: a site quiet that long would lose its "
            f"state; it must be compact alone, or keep retention.ms=-1 ({fix})"
        )
    return None


def cleanup_policies(configs: dict[str, str]) -> set[str]:
    """The parts of ``cleanup.policy`` (``compact,delete`` is both); ``delete``, the default, if unsaid."""
    return {part.strip() for part in configs.get("cleanup.policy", "delete").split(",")}


def _warn_if_fewer_partitions(topics: TopicSettings, existing: dict[str, int]) -> None:
    """``prices`` found with fewer partitions than ``topics.partitions``: made by a producer before any
    worker, with the broker's ``num.partitions`` (1 by default; an SRE review's group then had one busy
    worker, the others idle, and nothing said it). Said, not refused: the count may be chosen."""
    found = existing.get(topics.prices)
    if found is not None and found < topics.partitions:
        log.warning(
            "topic %s has %d partition(s), where topics.partitions is %d (created before the worker, by a "
            "producer and the broker's num.partitions?): at most %d worker(s) of the group have work; grow "
            "it as docs/delivery.md says, 'Adding partitions'",
            topics.prices,
            found,
            topics.partitions,
            found,
        )


async def _warn_of_cleanup(
    admin: AIOKafkaAdminClient, topics: TopicSettings, existing: dict[str, int]
) -> None:
    """A log topic (prices, actions, dead letters) keyed by site and compacted keeps only each site's
    latest record: downstream loses every action but the last, the audit every price. A status topic that
    deletes loses a quiet site's status from ``status``, and a history topic that keeps less than ``prices``
    the operation log of decisions the audit can still recompute (an SRE review's 60-second retentions
    passed without a word). Said, not refused: an operator may choose either on purpose."""
    logs = [name for name in (topics.prices, topics.actions, topics.dlq) if name in existing]
    kept = [name for name in (topics.status, topics.history) if name in existing]
    if not logs and not kept:
        return
    try:
        described = await _describe_configs(admin, [*logs, *kept])
    except KafkaError as error:
        log.info("cannot check the cleanup.policy of %s (%s); carrying on", ", ".join(logs + kept), error)
        return
    for name in [*logs, *kept]:
        configs = described.get(name)
        if isinstance(configs, KafkaError):  # no DESCRIBE_CONFIGS on it: the worker needs none here
            log.info("cannot check topic %s's cleanup.policy (%s); carrying on", name, configs)
        elif configs is None:
            continue
        elif name in logs and "compact" in cleanup_policies(configs):
            log.warning(
                "topic %s has cleanup.policy=%s: keyed by site, compaction keeps only each site's latest "
                "record (downstream and the audit replay lose the rest); it is a log, delete is its policy",
                name,
                configs["cleanup.policy"],
            )
        elif name == topics.status:
            _warn_if_status_deletes(name, configs)
    history = described.get(topics.history)
    if isinstance(history, dict):
        prices = described.get(topics.prices)
        _warn_if_history_keeps_less(topics, history, prices if isinstance(prices, dict) else {})


def _retention_of(configs: dict[str, str]) -> int | None:
    """How long the topic keeps a record, in ms, as the broker reported it: None for ever (compacted alone,
    or retention.ms -1), or when not reported (Tansu's DescribeConfigs gives explicit configs only: nothing
    is said of what it did not report)."""
    if "cleanup.policy" not in configs or "delete" not in cleanup_policies(configs):
        return None
    retention = configs.get("retention.ms")
    return None if retention in (None, "-1") else int(retention)


def _warn_if_status_deletes(name: str, configs: dict[str, str]) -> None:
    """``status`` reads each site's latest status: deleted after ``retention.ms`` (``delete`` or
    ``compact,delete``), a site quiet that long drops out of it (an SRE review's 60 s passed unsaid)."""
    retention = _retention_of(configs)
    if retention is not None:
        log.warning(
            "topic %s has cleanup.policy=%s with retention.ms=%d: a site quiet that long drops out of "
            "battery-worker status; the worker creates it compacted alone (kafka-configs --alter "
            "--entity-type topics --entity-name %s --add-config cleanup.policy=compact)",
            name,
            configs["cleanup.policy"],
            retention,
            name,
        )


def _warn_if_history_keeps_less(
    topics: TopicSettings, history: dict[str, str], prices: dict[str, str]
) -> None:
    """The operation log's retention is the audit's choice (operations.md, "Storage"), but one shorter
    than ``prices``' leaves decisions the replay can still recompute without their record (an SRE review's
    60 s passed unsaid)."""
    kept = _retention_of(history)
    if kept is None:
        return
    prices_kept = _retention_of(prices) if "cleanup.policy" in prices else None
    if "cleanup.policy" in prices and (prices_kept is None or kept < prices_kept):
        log.warning(
            "topic %s keeps records %d ms (retention.ms), less than %s (%s): the operation log of decisions "
            "whose prices are still kept is deleted",
            topics.history,
            kept,
            topics.prices,
            "for ever" if prices_kept is None else f"{prices_kept} ms",
        )


async def topic_configs(admin: AIOKafkaAdminClient, name: str) -> dict[str, str]:
    """The topic's configs as the broker reports them (some brokers report only explicitly set ones)."""
    configs = (await _describe_configs(admin, [name])).get(name, {})
    if isinstance(configs, KafkaError):
        raise configs
    return configs


async def _describe_configs(
    admin: AIOKafkaAdminClient, names: list[str]
) -> dict[str, dict[str, str] | KafkaError]:
    """Each topic's configs, or the authorisation error that hid them, from one request per broker asked."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    described: dict[str, dict[str, str] | KafkaError] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object().get("resources", []):
            name = str(resource["resource_name"])
            code = resource.get("error_code", 0)
            if code in _AUTHORIZATION_CODES:  # not "no configs": that would read as cleanup.policy=delete
                message = resource.get("error_message")
                described[name] = for_code(code)(
                    f"cannot describe the configs of topic {name}: {message} (needs DESCRIBE_CONFIGS on it)"
                )
                continue
            configs: dict[str, str] = {}
            for entry in resource.get("config_entries", []):
                key = entry.get("config_names", entry.get("name"))
                value = entry.get("config_value", entry.get("value"))
                if key is not None and value is not None:
                    configs[str(key)] = str(value)
            described[name] = configs
    return described


def _topic_errors(response: Any) -> list[tuple[str, int, Any]]:
    obj = response.to_object()
    return [
        (entry.get("topic", entry.get("name")), entry.get("error_code", 0), entry.get("error_message"))
        for entry in obj.get("topic_errors", obj.get("topics", []))
    ]


async def partition_count(settings: Settings, topic: str) -> int:
    """How many partitions ``topic`` has; 0 when it does not exist (nothing published yet)."""
    from battery_worker.kafka.clients import make_admin, start_client

    admin = make_admin(settings.kafka)
    await start_client(admin, settings.kafka)
    try:
        return (await partition_counts(admin, [topic])).get(topic, 0)
    finally:
        await admin.close()


async def prepare_topics(settings: Settings, *, for_workers: bool = True) -> dict[str, int]:
    """Create and verify the topics once, e.g. before a producer could auto-create ``prices`` wrongly
    (``for_workers``: as :func:`ensure_topics`)."""
    from battery_worker.kafka.clients import make_admin, start_client
    from battery_worker.kafka.diagnose import typed

    admin = make_admin(settings.kafka)
    await start_client(admin, settings.kafka)
    try:
        return await ensure_topics(admin, settings.topics, for_workers=for_workers)
    except KafkaError as error:
        raise (typed(error, settings.kafka) or error) from None
    finally:
        await admin.close()
