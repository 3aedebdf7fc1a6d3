"""The small interface every dispatch policy implements.

A policy is a pure function of the current tick, the battery and its own memory of past ticks. It returns a
decision and its new memory; it never mutates the memory it was given. The memory is what makes adaptive and
predictive policies restartable: the worker stores ``dump_memory`` beside the battery state and hands
``load_memory`` of it back after a restart, so a restarted worker decides exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias

from battery_worker.battery import CHARGE, DISCHARGE, HOLD, Action, BatteryConfig, BatteryState
from battery_worker.frozen import slot_setters
from battery_worker.ticks import PriceTick

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
"""A JSON document as Python values: what orjson writes and reads back."""
JsonObject: TypeAlias = dict[str, JsonValue]


class PolicyMemory(Protocol):
    """What a policy carries from one tick to the next (``None`` for a policy that needs nothing).

    An immutable value that writes itself as JSON: the worker stores it in the state topic beside the battery
    and the policy's ``load_memory`` reads it back after a restart.
    """

    def dump(self) -> JsonValue: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What a policy wants now. ``power_mw`` is the requested site-side power; the battery may clamp it."""

    action: Action
    power_mw: float
    reason: str
    energy_price: float
    hash_price: float
    token_price: float


class Policy(Protocol):
    """Tick + battery (+ the policy's own memory) in, decision (+ new memory) out."""

    @property
    def name(self) -> str: ...

    def initial_memory(self) -> PolicyMemory | None: ...

    def decide(
        self, tick: PriceTick, battery: BatteryState, config: BatteryConfig, memory: PolicyMemory | None
    ) -> tuple[Decision, PolicyMemory | None]: ...

    def dump_memory(self, memory: PolicyMemory | None) -> JsonValue: ...

    def load_memory(self, data: JsonValue) -> PolicyMemory | None: ...


def hold(tick: PriceTick, reason: str) -> Decision:
    return decision(tick, HOLD, 0.0, reason)


_new = object.__new__
_ACTION, _POWER, _REASON, _ENERGY_PRICE, _HASH_PRICE, _TOKEN_PRICE = slot_setters(Decision)


def decision(tick: PriceTick, action: Action, power_mw: float, reason: str) -> Decision:
    """``Decision(...)`` with the tick's prices, built as its __init__ would but faster (``slot_setters``)."""
    made: Decision = _new(Decision)
    _ACTION(made, action)
    _POWER(made, power_mw)
    _REASON(made, reason)
    _ENERGY_PRICE(made, tick.energy_price)
    _HASH_PRICE(made, tick.hash_price)
    _TOKEN_PRICE(made, tick.token_price)
    return made


def gated_by_battery(
    tick: PriceTick, wanted: Decision, battery: BatteryState, config: BatteryConfig
) -> Decision:
    """Turn a charge into a hold when the battery is full, a discharge into a hold when it is empty or the
    day's cycle cap is reached (a "discharge" of 0 MW told the schedulers downstream to expect power).

    This is what the seed's ``can_charge``/``can_discharge`` meant, without its flaw of refusing any charge
    unless a whole hour at the maximum rate still fitted.
    """
    if wanted.action is CHARGE and not battery.can_charge(config):
        if config.max_charge_rate_mw <= 0:
            return hold(tick, f"{wanted.reason} but the battery may not charge (max_charge_rate_mw 0)")
        return hold(tick, f"{wanted.reason} but battery is full")
    if wanted.action is DISCHARGE and not battery.can_discharge(config):
        if config.max_discharge_rate_mw <= 0:
            return hold(tick, f"{wanted.reason} but the battery may not discharge (max_discharge_rate_mw 0)")
        return hold(tick, f"{wanted.reason} but battery is empty")
    if wanted.action is DISCHARGE and battery.cycle_cap_reached(config, tick.timestamp):
        return hold(tick, f"{wanted.reason} but the day's cycle cap is reached")
    return wanted
