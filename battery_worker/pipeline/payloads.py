"""The output events as plain dicts, in their models' field order: what ``Model(...).model_dump()`` gives.

Building and dumping three pydantic models per tick cost more than the decision itself, so the hot path
serialises these dicts with orjson instead. ``tests/test_event_encoding.py`` holds every payload to its model
in ``events.py``, byte for byte, so the models stay the contract and the schemas stay true.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from battery_worker.battery import BatteryState
from battery_worker.battery_config import BatteryConfig
from battery_worker.dispatch import Outcome
from battery_worker.emissions import EmissionsState, StepEmissions
from battery_worker.events import ACTION_SCHEMA_VERSION, SCHEMA_VERSION, STATUS_SCHEMA_VERSION, status_fields
from battery_worker.fleet.plan import MAX_CACHED_FLEETS, MachineRun, SitePlan, machines_json
from battery_worker.policies.base import JsonValue
from battery_worker.ticks import PriceTick

EmissionsJson = dict[str, Any] | orjson.Fragment
"""The emissions object a tick's three events carry: its dict, or the dict encoded once (:func:`encoded`)."""


def encoded(part: dict[str, Any]) -> orjson.Fragment:
    """A part of the tick's events as JSON, encoded once for the three of them: orjson writes a ``Fragment``'s
    bytes as they are, so the events' bytes are the same as with the dict in each."""
    return orjson.Fragment(orjson.dumps(part))


_machines_encoded: dict[int, tuple[tuple[MachineRun, ...], orjson.Fragment]] = {}


def _plan_json(plan: SitePlan) -> dict[str, object]:
    """The plan's JSON with its machines encoded once per runs tuple (the fleet cache hands the same tuple
    to every tick with the same prices), not copied and encoded again for each action."""
    runs = plan.machines
    hit = _machines_encoded.get(id(runs))
    if hit is None or hit[0] is not runs:
        if len(_machines_encoded) >= MAX_CACHED_FLEETS:  # cleared when full, as the fleet's caches
            _machines_encoded.clear()
        hit = _machines_encoded[id(runs)] = (runs, orjson.Fragment(orjson.dumps(machines_json(runs))))
    return plan.to_json(hit[1])


def dumped(payload: dict[str, Any]) -> bytes:
    """The payload as JSON bytes that take the memory of their length and no more.

    orjson 3.12 and later return their whole growth buffer, never trimmed: 4 KiB or more for a 1 KiB event.
    A batch holds three events a tick until it is sent (2,000 ticks by default), so the worker's peak memory
    was mostly slack. The copy costs a fraction of a microsecond; the bytes are the same.
    """
    return bytes(memoryview(orjson.dumps(payload)))


class Source(Protocol):
    """Where an input record was read: a ``SourceRef`` (restored state) or the input record itself, so the
    hot path builds no model per tick to name it."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


def _source(source: Source) -> dict[str, Any]:
    return {"topic": source.topic, "partition": source.partition, "offset": source.offset}


def _kg(value: float | None) -> float | None:
    return None if value is None else float(value)


def emissions_payload(
    step: StepEmissions | None, intensity: float | None, carried: bool, totals: EmissionsState
) -> dict[str, Any]:
    """An ``EmissionsEvent``: the step's (all None without a step or an intensity) and the running totals."""
    steps = totals.steps
    return {
        "carbon_intensity": _kg(intensity),
        "intensity_carried": carried,
        "bought_kg": None if step is None else _kg(step.bought_kg),
        "avoided_kg": None if step is None else _kg(step.avoided_kg),
        "net_kg": None if step is None else _kg(step.net_kg),
        "total_bought_kg": float(totals.bought_kg),
        "total_avoided_kg": float(totals.avoided_kg),
        "total_net_kg": float(totals.net_kg),
        "total_site_kg": float(totals.site_kg),
        "steps": steps,
        "unknown_steps": totals.unknown_steps,
        "coverage": float(totals.coverage),
    }


def outcome_emissions(tick: PriceTick, outcome: Outcome) -> dict[str, Any]:
    """The emissions of an applied tick, as the action, status and history events carry them."""
    carried = tick.carbon_intensity is None and outcome.intensity is not None
    return emissions_payload(outcome.emissions, outcome.intensity, carried, outcome.state.emissions)


def action_payload(
    event: str,
    site_id: str,
    tick: PriceTick,
    outcome: Outcome,
    policy: str,
    source: Source,
    plan: SitePlan,
    emissions: EmissionsJson,
) -> dict[str, Any]:
    """A ``BatteryAction`` (version 3: with the site plan and the emissions)."""
    step, decision = outcome.step, outcome.decision
    return {
        "schema_version": ACTION_SCHEMA_VERSION,
        "event_id": event,
        "site_id": site_id,
        "tick_timestamp": tick.timestamp,
        "action": step.action,
        "power_mw": float(step.power_mw),
        "requested_power_mw": float(step.requested_power_mw),
        "energy_mwh": float(step.energy_mwh),
        "duration_hours": float(step.duration_hours),
        "reason": decision.reason,
        "energy_price": float(tick.energy_price),
        "hash_price": float(tick.hash_price),
        "token_price": float(tick.token_price),
        "state_of_charge_before_mwh": float(step.state_of_charge_before_mwh),
        "state_of_charge_after_mwh": float(step.state_of_charge_after_mwh),
        "limited_by": step.limited_by,
        "gap_hours": None if step.gap_hours is None else float(step.gap_hours),
        "policy": policy,
        "source": _source(source),
        "site_plan": _plan_json(plan),
        "emissions": emissions,
    }


def history_payload(
    event: str,
    site_id: str,
    tick: PriceTick,
    outcome: Outcome,
    source: Source,
    emissions: EmissionsJson,
) -> dict[str, Any]:
    """A ``HistoryRecord``: the seed's ``save_history`` entry of one applied tick."""
    step, decision = outcome.step, outcome.decision
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event,
        "site_id": site_id,
        "timestamp": tick.timestamp,
        "action": step.action,
        "reason": decision.reason,
        "requested_power_mw": float(step.requested_power_mw),
        "power_mw": float(step.power_mw),
        "duration_hours": float(step.duration_hours),
        "energy_mwh": float(step.energy_mwh),
        "charge_before_mwh": float(step.state_of_charge_before_mwh),
        "charge_after_mwh": float(step.state_of_charge_after_mwh),
        "energy_price": float(tick.energy_price),
        "hash_price": float(tick.hash_price),
        "token_price": float(tick.token_price),
        "source": _source(source),
        "emissions": emissions,
    }


HISTORY_BY_SITE = ("battery.partitioned-by", b"site")
"""The header of every history record partitioned by its site (``OutputRecord.partition_key``), as the
worker writes them since 2026-12-03. Before, history was partitioned by its unique key, so a site's records
could lie on any partition; a record without this header is of that layout, and a reader of one site's
history then reads the whole topic (:func:`battery_worker.kafka.reading.read_by_site`)."""


def history_key(site_id: str, tick_at: str) -> bytes:
    """A history record's key: the site and the tick time (``isoformat``), so a compacted copy keeps every
    tick of a site."""
    return f"{site_id}|{tick_at}".encode()


def key_site(key: bytes | None, *, history: bool) -> str | None:
    """The site an event record's key names, or None if it names none: known without parsing the value.

    Actions and status are keyed by the site id; history by the site id, ``|`` and the tick time (which has
    no ``|``, so the site is what comes before the last one).
    """
    if key is None:
        return None
    if history:
        key, bar, _ = key.rpartition(b"|")
        if not bar:
            return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None


def status_payload(
    event: str,
    site_id: str,
    battery: BatteryState,
    ticks_stale: int,
    config: BatteryConfig,
    policy: str,
    emissions: EmissionsJson,
) -> dict[str, Any]:
    """A ``BatteryStatus``: the seed's ``get_status`` for one site, stamped with the tick time."""
    return {
        "schema_version": STATUS_SCHEMA_VERSION,
        "event_id": event,
        "site_id": site_id,
        "last_tick_at": battery.last_tick_at,
        **status_fields(battery, config, battery.last_tick_at),
        "ticks_applied": battery.ticks_applied,
        "ticks_stale": ticks_stale,
        "policy": policy,
        "emissions": emissions,
    }


def state_payload(
    site_id: str,
    source: Source,
    battery: BatteryState,
    ticks_stale: int,
    policy: str,
    policy_memory: JsonValue,
    emissions: EmissionsState,
) -> dict[str, Any]:
    """A ``BatteryStateRecord``: everything restore needs, with the input offset it reflects."""
    return {
        "schema_version": SCHEMA_VERSION,
        "site_id": site_id,
        "source": _source(source),
        "state_of_charge_mwh": float(battery.state_of_charge_mwh),
        "last_tick_at": battery.last_tick_at,
        "ticks_applied": battery.ticks_applied,
        "ticks_stale": ticks_stale,
        "energy_bought_mwh": float(battery.energy_bought_mwh),
        "energy_stored_mwh": float(battery.energy_stored_mwh),
        "energy_drawn_mwh": float(battery.energy_drawn_mwh),
        "energy_delivered_mwh": float(battery.energy_delivered_mwh),
        "charging_cost": float(battery.charging_cost),
        "avoided_cost": float(battery.avoided_cost),
        "policy": policy,
        "policy_memory": policy_memory,
        "delivered_today_mwh": float(battery.delivered_today_mwh),
        "emissions_bought_kg": float(emissions.bought_kg),
        "emissions_avoided_kg": float(emissions.avoided_kg),
        "emissions_steps": emissions.steps,
        "emissions_known_steps": emissions.known_steps,
        "emissions_carried_steps": emissions.carried_steps,
        "emissions_site_kg": float(emissions.site_kg),
        "carried_intensity": _kg(emissions.carried.intensity),
        "carried_intensity_at": emissions.carried.at,
    }
