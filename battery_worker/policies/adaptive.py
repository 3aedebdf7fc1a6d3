"""Adaptive thresholds: charge in the cheap part of recent prices, discharge in the dear part.

The thresholds are quantiles of the hourly prices of the last ``window_hours`` (the current tick included),
so the same parameters work on any market and any price unit: nothing is set per market. The charge quantile
rises and the discharge quantile falls as the battery empties or fills (``soc_tilt``), which keeps it from
sitting full through a cheap week or empty through a dear one.

Memory: a bounded :class:`HourlyHistory` (``window_hours`` floats). Until ``warmup_hours`` hours have been
seen the policy holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from battery_worker.battery import Action, BatteryConfig, BatteryState
from battery_worker.errors import InvalidConfig
from battery_worker.policies.base import Decision, JsonValue, PolicyMemory, decision, gated_by_battery, hold
from battery_worker.policies.forecast import (
    HourlyHistory,
    as_history,
    load_history,
    require_fraction,
    whole_number,
)
from battery_worker.ticks import PriceTick


@dataclass(frozen=True, slots=True)
class AdaptivePolicy:
    window_hours: int = 24
    warmup_hours: int = 24
    charge_quantile: float = 0.3
    discharge_quantile: float = 0.7
    soc_tilt: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "window_hours", whole_number("window_hours", self.window_hours, 2))
        object.__setattr__(self, "warmup_hours", whole_number("warmup_hours", self.warmup_hours, 1))
        if self.warmup_hours > self.window_hours:
            raise InvalidConfig("warmup_hours", self.warmup_hours, "must not exceed window_hours")
        for name in ("charge_quantile", "discharge_quantile", "soc_tilt"):
            require_fraction(name, getattr(self, name))
        if self.charge_quantile >= self.discharge_quantile:
            raise InvalidConfig("charge_quantile", self.charge_quantile, "must be below discharge_quantile")

    @property
    def name(self) -> str:
        return "adaptive"

    def initial_memory(self) -> HourlyHistory:
        return HourlyHistory(self.window_hours)

    def decide(
        self, tick: PriceTick, battery: BatteryState, config: BatteryConfig, memory: PolicyMemory | None
    ) -> tuple[Decision, HourlyHistory]:
        history = as_history(memory, self.window_hours).add(tick.timestamp, tick.energy_price)
        return self.decide_on(tick, history, battery, config), history

    def decide_on(
        self, tick: PriceTick, history: HourlyHistory, battery: BatteryState, config: BatteryConfig
    ) -> Decision:
        """The decision for ``tick`` given a history that already includes it (the MPC's fallback too)."""
        prices = history.known()[-self.window_hours :]
        if prices.size < self.warmup_hours:
            return hold(tick, f"warming up ({prices.size}/{self.warmup_hours} h of prices)")
        span = config.max_energy_mwh - config.min_energy_mwh
        fill = (battery.state_of_charge_mwh - config.min_energy_mwh) / span if span > 0 else 1.0
        tilt = self.soc_tilt * (0.5 - fill)
        q_low = min(max(self.charge_quantile + tilt, 0.0), 1.0)
        q_high = min(max(self.discharge_quantile + tilt, 0.0), 1.0)
        low, high = (float(v) for v in np.quantile(prices, [q_low, q_high]))
        price, wear = tick.energy_price, config.cycle_cost_per_mwh
        # Quantiles alone traded any spread: on 40 ± 0.5 a cycle through 10 % losses lost money every day,
        # and on a flat price both quantiles are the price, which counted as cheap. A MWh is bought only if
        # the dear quantile pays it back after the round trip's losses and the wear, and sold only if it
        # earns more than refilling it at the cheap quantile costs.
        if price <= low:
            resale = config.efficiency * (high - wear)
            if resale <= price:
                return hold(
                    tick,
                    f"price {price:.2f} <= q{q_low:.2f} {low:.2f}, but q{q_high:.2f} {high:.2f} after the "
                    f"round trip's losses and wear ({resale:.2f}) does not pay it back",
                )
            wanted = decision(
                tick, Action.CHARGE, config.max_charge_rate_mw, f"price {price:.2f} <= q{q_low:.2f} {low:.2f}"
            )
        elif price >= high:
            refill = low / config.efficiency + wear
            if price <= refill:
                return hold(
                    tick,
                    f"price {price:.2f} >= q{q_high:.2f} {high:.2f}, but refilling at q{q_low:.2f} {low:.2f} "
                    f"after the round trip's losses, with the wear, costs more ({refill:.2f})",
                )
            wanted = decision(
                tick,
                Action.DISCHARGE,
                config.max_discharge_rate_mw,
                f"price {price:.2f} >= q{q_high:.2f} {high:.2f}",
            )
        else:
            return hold(tick, f"price {price:.2f} between {low:.2f} and {high:.2f}")
        return gated_by_battery(tick, wanted, battery, config)

    def dump_memory(self, memory: PolicyMemory | None) -> JsonValue:
        return as_history(memory, self.window_hours).dump()

    def load_memory(self, data: JsonValue) -> HourlyHistory:
        return load_history(data, self.window_hours)
