"""The worker's job written with Quix Streams: the peer in the benchmark. Prints one JSON line, as child.py.

    pip install -e '.[bench-quix]'     # quixstreams (librdkafka, RocksDB); not in ``dev``: CI never needs it
    python bench/quix_job.py BOOTSTRAP PRICES PREFIX GROUP COUNT

The same job as the worker, the Quix way: each site's battery lives in Quix's State store (RocksDB, with its
changelog topic), keyed by the message key; each tick is validated as the worker does
(``PriceTick.model_validate_json``), decided and applied by the same pure domain functions
(``dispatch.dispatch``, the threshold policy of ``bench/common.py``), and its action, status and history
events are produced to ``PREFIX.actions``, ``PREFIX.status`` and ``PREFIX.history`` with the worker's
payloads and ``event_id``s (so each action's bytes can be compared with the worker's, ``run.py`` does).
Quix's defaults otherwise: at-least-once, a checkpoint (producer flush, changelog, offset commit) every 5 s.

Timed from the first tick handled to the end of ``Application.run`` (the final checkpoint flushed and
committed); CPU is the process's (librdkafka's threads included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from common import create_topics, peak_rss_mb, settings_for
from quixstreams import Application, State, message_context
from quixstreams.models.serializers.json import JSONSerializer

from battery_worker.battery import BatteryState
from battery_worker.dispatch import SiteState, dispatch, new_site_state
from battery_worker.emissions import Carried, EmissionsState
from battery_worker.events import SourceRef, event_name, named_event_id
from battery_worker.pipeline.payloads import (
    action_payload,
    encoded,
    history_payload,
    outcome_emissions,
    status_payload,
)
from battery_worker.sites import SiteDirectory
from battery_worker.ticks import PriceTick

BATTERY_FIELDS = tuple(BatteryState.__dataclass_fields__)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _stored(site: SiteState, ticks_stale: int) -> dict[str, Any]:
    """The site as Quix's State keeps it (JSON: times as ISO strings, emissions as a list)."""
    battery, emissions = site.battery, site.emissions
    data = {name: getattr(battery, name) for name in BATTERY_FIELDS}
    data["last_tick_at"] = _iso(battery.last_tick_at)
    data["ticks_stale"] = ticks_stale
    data["emissions"] = [
        emissions.bought_kg,
        emissions.avoided_kg,
        emissions.steps,
        emissions.known_steps,
        emissions.carried_steps,
        emissions.carried.intensity,
        _iso(emissions.carried.at),
        emissions.site_kg,
    ]
    return data


def _site(data: dict[str, Any], memory: Any) -> SiteState:
    fields = {name: data[name] for name in BATTERY_FIELDS}
    fields["last_tick_at"] = _at(fields["last_tick_at"])
    bought, avoided, steps, known, carried_steps, intensity, at, site_kg = data["emissions"]
    carried = Carried(intensity, _at(at))
    emissions = EmissionsState(bought, avoided, steps, known, carried_steps, carried, site_kg)
    return SiteState(BatteryState(**fields), memory, emissions)


class Job:
    """One tick: validate, read the site's state, decide and apply, write the state, three events."""

    def __init__(self, directory: SiteDirectory, actions: str, status: str, history: str) -> None:
        self.directory = directory
        self.topics = (actions, status, history)
        self.first: tuple[float, float] | None = None  # (wall, CPU) at the first tick

    def step(
        self, value: bytes, key: bytes, timestamp: int, headers: Any, state: State[str, dict[str, Any]]
    ) -> Any:
        if self.first is None:
            self.first = (time.perf_counter(), time.process_time())
        tick = PriceTick.model_validate_json(value)
        context = message_context()
        site_id = key.decode()
        setup = self.directory.setup(site_id)
        stored = state.get("battery")
        if stored is None:
            site, ticks_stale = new_site_state(setup.config, setup.policy), 0
        else:
            site = _site(stored, setup.policy.load_memory(stored["policy_memory"]))
            ticks_stale = stored["ticks_stale"]
        if site.is_stale(tick):
            return []
        outcome = dispatch(
            tick,
            site,
            setup.config,
            setup.policy,
            carry_hours=setup.carry_hours,
            site_model=setup.site,
            curtail=setup.plans_machines,
        )
        policy = setup.policy
        record = _stored(outcome.state, ticks_stale)
        record["policy_memory"] = policy.dump_memory(outcome.state.policy_memory)
        state.set("battery", record)
        tick_at = tick.timestamp.isoformat()
        coords = (context.topic, context.partition, context.offset, site_id, tick_at)
        source = SourceRef.model_construct(topic=coords[0], partition=coords[1], offset=coords[2])
        name = event_name(*coords)
        plan = outcome.plan
        assert plan is not None, "dispatched with the site model"
        emissions = encoded(outcome_emissions(tick, outcome))
        battery = outcome.state.battery
        actions, status, history = self.topics
        key = site_id.encode()
        history_key = f"{site_id}|{tick_at}".encode()
        return [
            (
                actions,
                key,
                action_payload(
                    named_event_id("action", name),
                    site_id,
                    tick,
                    outcome,
                    policy.name,
                    source,
                    plan,
                    emissions,
                ),
            ),
            (
                status,
                key,
                status_payload(
                    named_event_id("status", name),
                    site_id,
                    battery,
                    ticks_stale,
                    setup.config,
                    policy.name,
                    emissions,
                ),
            ),
            (
                history,
                history_key,
                history_payload(named_event_id("history", name), site_id, tick, outcome, source, emissions),
            ),
        ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_for(args.bootstrap, args.prices, args.prefix, args.group)
    names = settings.topics.names()
    asyncio.run(create_topics(args.bootstrap, [names.actions, names.status, names.history]))
    handled = 0
    marks: dict[str, float] = {}

    def processed(topic: str, partition: int, offset: int) -> None:
        nonlocal handled
        handled += 1
        if handled >= args.count:
            marks["last_processed"] = time.perf_counter()
            app.stop()

    state_dir = Path(tempfile.mkdtemp(prefix="quix-state-"))
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        on_message_processed=processed,
    )
    # An event is (topic, key, payload); the worker's encoding of the payload, so bytes are comparable.
    serializer = JSONSerializer(dumps=lambda event: orjson.dumps(event[2]))
    prices = app.topic(args.prices, key_deserializer="bytes", value_deserializer="bytes")
    outputs = {
        name: app.topic(name, key_serializer="bytes", value_serializer=serializer)
        for name in (names.actions, names.status, names.history)
    }
    job = Job(settings.site_directory(), names.actions, names.status, names.history)
    # One stateful step emits its three events (expand), each routed to its topic by the topic callable;
    # no branches, which would copy every value (Quix copies a value per branch with pickle).
    sdf = app.dataframe(prices).apply(job.step, stateful=True, metadata=True, expand=True)
    sdf.to_topic(lambda event, key, timestamp, headers: outputs[event[0]], key=lambda event: event[1])
    app.run(count=0, timeout=120, collect=False)
    last, cpu_last = time.perf_counter(), time.process_time()
    assert job.first is not None
    seconds = last - job.first[0]
    return {
        "handled": handled,
        "applied": handled,
        "seconds": seconds,
        "ticks_per_s": handled / seconds,
        "cpu_share": (cpu_last - job.first[1]) / seconds,
        "cpu_us_per_tick": (cpu_last - job.first[1]) / handled * 1e6,
        "peak_rss_mb": peak_rss_mb(),
        "to_last_processed_s": marks["last_processed"] - job.first[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("prices")
    parser.add_argument("prefix", help="output topics: PREFIX.actions, PREFIX.status, PREFIX.history")
    parser.add_argument("group")
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    rss_after_imports = peak_rss_mb()
    print(json.dumps({**run(args), "rss_after_imports_mb": rss_after_imports}), flush=True)


if __name__ == "__main__":
    main()
