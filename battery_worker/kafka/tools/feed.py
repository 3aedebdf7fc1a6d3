"""Publish ticks to ``prices`` the way a price monitor does: MARA-format JSON, keyed by site id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import orjson
from aiokafka import AIOKafkaProducer

from battery_worker.ticks import DEFAULT_SITE_ID, PriceTick


def tick_payload(tick: PriceTick, *, include_site: bool = False) -> bytes:
    """The price monitor's JSON object (``site_id`` only when asked: the key names the site).

    ``carbon_intensity`` only when the tick has one: a tick without it is the MARA API's object, unchanged.
    """
    body: dict[str, object] = {
        "energy_price": tick.energy_price,
        "hash_price": tick.hash_price,
        "token_price": tick.token_price,
        "timestamp": tick.timestamp.isoformat(),
    }
    if tick.carbon_intensity is not None:
        body["carbon_intensity"] = tick.carbon_intensity
    if include_site and tick.site_id is not None:
        body["site_id"] = tick.site_id
    return orjson.dumps(body)


class Acknowledged:
    """How many sends the broker has acknowledged so far: what a feed stopped or failed halfway has
    published, counted as each acknowledgement arrives."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, sent: asyncio.Future[object]) -> None:
        if not sent.cancelled() and sent.exception() is None:
            self.count += 1


async def publish_ticks(
    producer: AIOKafkaProducer,
    topic: str,
    ticks: Sequence[PriceTick],
    *,
    site_id: str | None = None,
    rate_per_s: float | None = None,
    on_sent: Callable[[int], None] | None = None,
    acknowledged: Acknowledged | None = None,
) -> int:
    """Send ``ticks`` keyed by ``site_id`` (or each tick's own site, else the default site); optionally
    paced to ``rate_per_s`` (no wait after the last). Always keyed: an unkeyed tick lands on a random
    partition, mostly not its site's.

    Returns the number sent once every send is acknowledged.
    """
    pending = []
    started = time.monotonic()
    last = len(ticks) - 1
    for index, tick in enumerate(ticks):
        site = site_id or tick.site_id or DEFAULT_SITE_ID
        sent = await producer.send(topic, tick_payload(tick), key=site.encode())
        if acknowledged is not None:
            sent.add_done_callback(acknowledged)
        pending.append(sent)
        if rate_per_s and index < last:
            due = started + (index + 1) / rate_per_s
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if on_sent is not None and (index + 1) % 500 == 0:
            on_sent(index + 1)
    await asyncio.gather(*pending)
    if on_sent is not None:
        on_sent(len(ticks))
    return len(ticks)
