"""Read what the worker published: the latest status per site and a site's history, for the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from aiokafka import TopicPartition
from pydantic import BaseModel, ValidationError

from battery_worker.events import BatteryStatus, HistoryRecord
from battery_worker.kafka.batching import key_partition
from battery_worker.kafka.clients import make_reader, start_client
from battery_worker.kafka.reading import read_by_site, read_to_end
from battery_worker.kafka.topics import partition_count
from battery_worker.pipeline.payloads import HISTORY_BY_SITE, key_site
from battery_worker.settings import Settings

M = TypeVar("M", bound=BaseModel)


async def read_topic(
    settings: Settings,
    topic: str,
    model: type[M],
    keep: Callable[[bytes | None], bool] | None = None,
    *,
    site: str | None = None,
    site_of: Callable[[bytes | None], str | None] = lambda key: key_site(key, history=False),
    marker: tuple[str, bytes] | None = None,
    latest_per_key: bool = False,
) -> list[M]:
    """Every readable record of ``topic`` (all partitions, start to end) parsed as ``model``; with ``site``,
    only the partition that keeps the site's events (:func:`~battery_worker.kafka.reading.read_by_site`;
    ``site_of``: the site a record's key names, by default the key itself; ``marker``: the header of the
    by-site layout, for history). ``latest_per_key``: only each key's latest record, held as bytes until
    the end and parsed then (an SRE review's ``status`` held every status parsed: 445 MB for 75,000); a key
    whose latest record is a tombstone is left out, as compaction will leave it out (a data engineer's
    review: a site retired as delivery.md says stayed listed until the cleaner ran)."""
    partitions = await partition_count(settings, topic)
    if not partitions:
        return []
    reader = make_reader(settings.kafka)
    await start_client(reader, settings.kafka)
    events: list[M] = []
    timeout_s = settings.worker.restore_timeout_s
    if site is not None:
        first = [key_partition(site.encode(), partitions)]
        batches = read_by_site(reader, topic, partitions, first, site_of, timeout_s=timeout_s, marker=marker)
    else:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        batches = read_to_end(reader, tps, timeout_s=timeout_s)
    latest: dict[bytes | None, bytes] = {}
    try:
        async for batch in batches:
            for record in batch:
                if keep is not None and not keep(record.key):
                    continue
                if latest_per_key:
                    latest.pop(record.key, None)  # in the order of each key's latest record
                    if record.value is not None:  # a tombstone deletes the key (a retired site)
                        latest[record.key] = record.value
                    continue
                if record.value is None:
                    continue
                try:
                    events.append(model.model_validate_json(record.value))
                except ValidationError:
                    continue
    finally:
        await reader.stop()
    for value in latest.values():
        try:
            events.append(model.model_validate_json(value))
        except ValidationError:
            continue
    return events


async def latest_status(settings: Settings) -> dict[str, BatteryStatus]:
    """The last status of every site: keyed by site, a site's statuses share a partition and its order. A
    site whose latest status record is not one (written by another producer) is left out."""
    statuses = await read_topic(settings, settings.topics.status, BatteryStatus, latest_per_key=True)
    return {status.site_id: status for status in statuses}


async def site_history(settings: Settings, site_id: str) -> list[HistoryRecord]:
    """The site's applied ticks, oldest first, each once (re-emitted duplicates share an event id)."""
    prefix = f"{site_id}|".encode()
    records = await read_topic(
        settings,
        settings.topics.history,
        HistoryRecord,
        keep=lambda key: key is not None and key.startswith(prefix),
        site=site_id,
        site_of=lambda key: key_site(key, history=True),
        marker=HISTORY_BY_SITE,
    )
    unique = {record.event_id: record for record in records if record.site_id == site_id}
    return sorted(unique.values(), key=lambda record: record.timestamp)
