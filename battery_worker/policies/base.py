"""The small interface every dispatch policy implements.

A policy is a pure function of the current tick, the battery and its own memory of past ticks. It returns a
decision and its new memory; it never mutates the memory it was given. The memory is what makes adaptive and
predictive policies restartable: the worker stores ``dump_memory`` beside the battery state and hands
``load_memory`` of it back after a restart, so a restarted worker decides exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from battery_worker.battery import Action, BatteryConfig, BatteryState
from battery_worker.ticks import PriceTick

JsonValue = Any
"""A value orjson can serialize: None, bool, int, float, str, list, dict."""


@dataclass(frozen=True, slots=True)
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

    def initial_memory(self) -> object: ...

    def decide(
        self, tick: PriceTick, battery: BatteryState, config: BatteryConfig, memory: object
    ) -> tuple[Decision, object]: ...

    def dump_memory(self, memory: object) -> JsonValue: ...

    def load_memory(self, data: JsonValue) -> object: ...


def hold(tick: PriceTick, reason: str) -> Decision:
    return Decision(Action.HOLD, 0.0, reason, tick.energy_price, tick.hash_price, tick.token_price)


def decision(tick: PriceTick, action: Action, power_mw: float, reason: str) -> Decision:
    return Decision(action, power_mw, reason, tick.energy_price, tick.hash_price, tick.token_price)


def gated_by_battery(
    tick: PriceTick, wanted: Decision, battery: BatteryState, config: BatteryConfig
) -> Decision:
    """Turn a charge into a hold when the battery is full, a discharge into a hold when it is empty.

    This is what the seed's ``can_charge``/``can_discharge`` meant, without its flaw of refusing any charge
    unless a whole hour at the maximum rate still fitted.
    """
    soc = battery.state_of_charge_mwh
    if wanted.action is Action.CHARGE and (soc >= config.max_energy_mwh or config.max_charge_rate_mw == 0):
        return hold(tick, f"{wanted.reason} but battery is full")
    if wanted.action is Action.DISCHARGE and (
        soc <= config.min_energy_mwh or config.max_discharge_rate_mw == 0
    ):
        return hold(tick, f"{wanted.reason} but battery is empty")
    return wanted
