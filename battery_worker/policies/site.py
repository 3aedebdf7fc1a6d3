"""The ``site`` policy: machines and battery planned together over a horizon, from past ticks only.

The ``mpc`` policy values the battery against the energy price alone; at a mining and inference site the
energy is worth what the machines it runs earn, which is what this policy plans. At each tick it solves the
site's LP (:mod:`battery_worker.fleet.lp`) over the current step (its three prices known exactly) and the
next ``horizon_hours`` hours, each price forecast by :func:`profile_forecast` from its own hourly history.
Energy left in the battery at the horizon's end is worth ``terminal_quantile`` of the recent energy prices.

Only the battery's first step is decided here (the :class:`Decision`, as every policy gives). Which
machines run is :func:`battery_worker.fleet.plan.plan_site` of the same tick and the battery's power: a
pure function of the inputs, so the worker, replay and backtest agree. The LP respects the site's limits, so
the battery's decision fits the site's battery window.

``carbon_price`` (money per tonne, 0 by default), as in ``mpc``: the energy price it plans on, remembers
and forecasts is ``energy_price + carbon_price × carbon_intensity / 1000`` where the tick has an intensity,
its own or carried (imports then cost their emissions, exports earn them back); at 0 it is the price
itself, bit for bit. The machines of the step are still planned on the real prices
(:func:`battery_worker.fleet.plan.plan_site`).

Deterministic: a fixed horizon and HiGHS capped at ``max_iterations`` (no wall clock). If the solver gives
up the battery holds and the reason says so. Memory: three bounded :class:`HourlyHistory` (energy, hash,
token), ``history_hours`` floats each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from battery_worker.battery import Action, BatteryConfig, BatteryState, step_hours
from battery_worker.emissions import effective_price
from battery_worker.errors import InvalidConfig
from battery_worker.fleet.lp import SiteSeries, solve_site
from battery_worker.fleet.model import SiteModel
from battery_worker.fleet.plan import plan_site
from battery_worker.policies.base import Decision, JsonValue, PolicyMemory, decision, gated_by_battery, hold
from battery_worker.policies.forecast import (
    FloatArray,
    HourlyHistory,
    load_history,
    profile_forecast,
    require_fraction,
    whole_number,
)
from battery_worker.ticks import PriceTick

ENERGY_EPSILON_MWH = 1e-6
PRICES = ("energy", "hash", "token")


@dataclass(frozen=True, slots=True)
class SiteMemory:
    """One hourly history per price."""

    energy: HourlyHistory
    hash: HourlyHistory
    token: HourlyHistory

    @staticmethod
    def empty(max_hours: int) -> SiteMemory:
        return SiteMemory(HourlyHistory(max_hours), HourlyHistory(max_hours), HourlyHistory(max_hours))

    def add(self, tick: PriceTick, energy_price: float) -> SiteMemory:
        """``energy_price``: the tick's, or with its emissions priced in (``carbon_price``)."""
        at = tick.timestamp
        return SiteMemory(
            self.energy.add(at, energy_price),
            self.hash.add(at, tick.hash_price),
            self.token.add(at, tick.token_price),
        )

    def dump(self) -> JsonValue:
        return {"energy": self.energy.dump(), "hash": self.hash.dump(), "token": self.token.dump()}

    @staticmethod
    def load(data: JsonValue, max_hours: int) -> SiteMemory:
        if data is None:
            return SiteMemory.empty(max_hours)
        if not isinstance(data, dict) or sorted(data) != sorted(PRICES):
            raise InvalidConfig(
                "policy_memory", type(data).__name__, "expected energy, hash and token histories"
            )
        energy, hash_, token = (load_history(data[name], max_hours) for name in PRICES)
        return SiteMemory(energy, hash_, token)


@dataclass(frozen=True, slots=True)
class SitePolicy:
    site: SiteModel = field(default_factory=SiteModel)
    horizon_hours: int = 24
    history_hours: int = 168
    warmup_hours: int = 24
    profile_days: int = 7
    recent_weight: float = 0.5
    spike_quantile: float = 0.98
    level_decay: float = 0.97
    terminal_quantile: float = 0.5
    max_iterations: int = 5000
    carbon_price: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.site, SiteModel):
            raise InvalidConfig("site", type(self.site).__name__, "must be a SiteModel")
        minimums = (("horizon_hours", 1), ("history_hours", 2), ("profile_days", 1), ("max_iterations", 1))
        for name, low in minimums:
            object.__setattr__(self, name, whole_number(name, getattr(self, name), low))
        object.__setattr__(self, "warmup_hours", whole_number("warmup_hours", self.warmup_hours, 1))
        if self.warmup_hours > self.history_hours:
            raise InvalidConfig("warmup_hours", self.warmup_hours, "must not exceed history_hours")
        for name in ("recent_weight", "spike_quantile", "level_decay", "terminal_quantile"):
            require_fraction(name, getattr(self, name))
        carbon = self.carbon_price
        if isinstance(carbon, bool) or not isinstance(carbon, int | float) or not 0 <= carbon < float("inf"):
            raise InvalidConfig("carbon_price", carbon, "must be a finite number >= 0 (money per tonne)")
        object.__setattr__(self, "carbon_price", float(carbon))

    @property
    def name(self) -> str:
        return "site"

    def initial_memory(self) -> SiteMemory:
        return SiteMemory.empty(self.history_hours)

    def decide(
        self, tick: PriceTick, battery: BatteryState, config: BatteryConfig, memory: PolicyMemory | None
    ) -> tuple[Decision, SiteMemory]:
        energy_price = effective_price(tick.energy_price, tick.carbon_intensity, self.carbon_price)
        memory = self._as_memory(memory).add(tick, energy_price)
        known = memory.energy.known()
        if known.size < self.warmup_hours:
            return hold(tick, f"warming up ({known.size}/{self.warmup_hours} h of prices)"), memory
        first_hours, _gap = step_hours(config, battery.last_tick_at, tick.timestamp)
        series = SiteSeries(
            energy=self._prices(energy_price, known),
            hash=self._prices(tick.hash_price, memory.hash.known()),
            token=self._prices(tick.token_price, memory.token.known()),
            hours=np.concatenate([[first_hours], np.ones(self.horizon_hours)]),
        )
        end_value = float(np.quantile(known, self.terminal_quantile))
        plan = solve_site(
            self.site,
            config,
            series,
            battery.state_of_charge_mwh,
            end_value=end_value,
            max_iterations=self.max_iterations,
        )
        if plan is None:
            return hold(tick, "site plan: solver gave up, battery holds"), memory
        bought, delivered = float(plan.bought_mwh[0]), float(plan.delivered_mwh[0])
        max_charge, max_discharge = self.site.battery_window_mw()
        if bought > delivered and bought > ENERGY_EPSILON_MWH and max_charge > 0:
            power = min(bought / first_hours, max_charge)
            wanted = decision(tick, Action.CHARGE, power, f"site plan: charge {bought:.3f} MWh")
        elif delivered > ENERGY_EPSILON_MWH and max_discharge > 0:
            power = self._absorbed(tick, min(delivered / first_hours, max_discharge), first_hours)
            if power * first_hours <= ENERGY_EPSILON_MWH:
                reason = f"site plan: discharge {delivered:.3f} MWh, but no machine earns its energy now"
                return hold(tick, reason + " and nothing is exported: battery holds"), memory
            wanted = decision(tick, Action.DISCHARGE, power, f"site plan: discharge {delivered:.3f} MWh")
        else:
            return hold(tick, "site plan: hold"), memory
        return gated_by_battery(tick, wanted, battery, config), memory

    def _absorbed(self, tick: PriceTick, power_mw: float, hours: float) -> float:
        """The part of a discharge of ``power_mw`` the site takes this step: what the machines worth running
        on it draw plus the export. The LP's machines are continuous and may run at no revenue to take the
        battery's energy (to make room for a cheaper or negative price ahead), but the step's machines are
        :func:`plan_site`'s whole ones, which do not run for nothing: the rest would be spilled, discharged
        into nothing (a review found 452 MWh of DE-LU's May so, with hash and token at 0)."""
        plan = plan_site(self.site, tick.energy_price, tick.hash_price, tick.token_price, -power_mw, hours)
        return max(0.0, power_mw - plan.spilled_mw)

    def _prices(self, now: float, history: FloatArray) -> FloatArray:
        """The current price, then the forecast of the horizon's hours from the hourly history."""
        forecast = profile_forecast(
            history,
            self.horizon_hours,
            days=self.profile_days,
            recent_weight=self.recent_weight,
            spike_quantile=self.spike_quantile,
            level_decay=self.level_decay,
        )
        return np.concatenate([[now], forecast])

    def _as_memory(self, memory: PolicyMemory | None) -> SiteMemory:
        if memory is None:
            return self.initial_memory()
        if not isinstance(memory, SiteMemory):
            raise InvalidConfig("policy_memory", type(memory).__name__, "expected a SiteMemory")
        return memory

    def dump_memory(self, memory: PolicyMemory | None) -> JsonValue:
        return self._as_memory(memory).dump()

    def load_memory(self, data: JsonValue) -> SiteMemory:
        return SiteMemory.load(data, self.history_hours)
