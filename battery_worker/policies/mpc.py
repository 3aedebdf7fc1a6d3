"""Model-predictive dispatch: a receding-horizon LP over a forecast built only from past ticks.

At each tick the policy solves a small LP: the first step is the current tick, whose price and step length
are known exactly (the battery applies this decision to the step ending now, at this price); the next
``horizon_hours`` hours get prices from :func:`profile_forecast` (daily shape of the last days, tracking
yesterday, spikes capped). Only the first step's action is applied; the LP is solved again at the next tick.

Energy left at the horizon's end is worth ``terminal_quantile`` of the recent prices per MWh in the cells, so
the LP does not empty the battery at the end of every horizon and keeps a reserve for prices it cannot
foresee.

The time budget is deterministic, not wall-clock: the horizon is fixed (≈150 variables) and HiGHS' dual
simplex is capped at ``max_iterations``. A wall-clock limit would make decisions depend on machine speed and
break exact replay; this cap always binds at the same point. With the defaults a solve takes a few
milliseconds (``bench/policy_speed.py``). If the solver fails or hits the cap, the policy falls back to the
adaptive policy on the same history, and says so in the decision's reason.

Memory: one bounded :class:`HourlyHistory` of ``history_hours`` floats, shared with the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import linprog

from battery_worker.battery import Action, BatteryConfig, BatteryState, step_hours
from battery_worker.errors import InvalidConfig
from battery_worker.policies.adaptive import AdaptivePolicy
from battery_worker.policies.base import Decision, JsonValue, PolicyMemory, decision, gated_by_battery, hold
from battery_worker.policies.forecast import (
    FloatArray,
    HourlyHistory,
    as_history,
    load_history,
    profile_forecast,
    require_fraction,
    whole_number,
)
from battery_worker.ticks import PriceTick

ENERGY_EPSILON_MWH = 1e-6


@dataclass(frozen=True, slots=True)
class MpcPolicy:
    horizon_hours: int = 48
    history_hours: int = 168
    warmup_hours: int = 24
    profile_days: int = 7
    recent_weight: float = 0.5
    spike_quantile: float = 0.98
    level_decay: float = 0.97
    terminal_quantile: float = 0.5
    max_iterations: int = 2000
    fallback: AdaptivePolicy = field(default_factory=AdaptivePolicy)

    def __post_init__(self) -> None:
        minimums = (("horizon_hours", 1), ("history_hours", 2), ("profile_days", 1), ("max_iterations", 1))
        for name, low in minimums:
            object.__setattr__(self, name, whole_number(name, getattr(self, name), low))
        object.__setattr__(self, "warmup_hours", whole_number("warmup_hours", self.warmup_hours, 1))
        if self.warmup_hours > self.history_hours:
            raise InvalidConfig("warmup_hours", self.warmup_hours, "must not exceed history_hours")
        for name in ("recent_weight", "spike_quantile", "level_decay", "terminal_quantile"):
            require_fraction(name, getattr(self, name))
        if not isinstance(self.fallback, AdaptivePolicy):
            raise InvalidConfig("fallback", self.fallback, "must be an AdaptivePolicy")
        if self.fallback.window_hours > self.history_hours:
            raise InvalidConfig("history_hours", self.history_hours, "must cover the fallback's window_hours")

    @property
    def name(self) -> str:
        return "mpc"

    def initial_memory(self) -> HourlyHistory:
        return HourlyHistory(self.history_hours)

    def decide(
        self, tick: PriceTick, battery: BatteryState, config: BatteryConfig, memory: PolicyMemory | None
    ) -> tuple[Decision, HourlyHistory]:
        history = as_history(memory, self.history_hours).add(tick.timestamp, tick.energy_price)
        known = history.known()
        if known.size < self.warmup_hours:
            return hold(tick, f"warming up ({known.size}/{self.warmup_hours} h of prices)"), history
        first_hours, _gap = step_hours(config, battery.last_tick_at, tick.timestamp)
        forecast = profile_forecast(
            known,
            self.horizon_hours,
            days=self.profile_days,
            recent_weight=self.recent_weight,
            spike_quantile=self.spike_quantile,
            level_decay=self.level_decay,
        )
        prices = np.concatenate([[tick.energy_price], forecast])
        hours = np.concatenate([[first_hours], np.ones(self.horizon_hours)])
        end_value = float(np.quantile(known, self.terminal_quantile))
        plan = self._solve(config, battery.state_of_charge_mwh, prices, hours, end_value)
        if plan is None:
            fallback = self.fallback.decide_on(tick, history, battery, config)
            return replace(fallback, reason=f"mpc fallback ({fallback.reason})"), history
        bought, delivered = plan
        if bought > delivered and bought > ENERGY_EPSILON_MWH:
            wanted = decision(tick, Action.CHARGE, bought / first_hours, f"mpc plan: charge {bought:.3f} MWh")
        elif delivered > ENERGY_EPSILON_MWH:
            wanted = decision(
                tick, Action.DISCHARGE, delivered / first_hours, f"mpc plan: discharge {delivered:.3f} MWh"
            )
        else:
            return hold(tick, "mpc plan: hold"), history
        return gated_by_battery(tick, wanted, battery, config), history

    def _solve(
        self, config: BatteryConfig, soc: float, prices: FloatArray, hours: FloatArray, end_value: float
    ) -> tuple[float, float] | None:
        """Bought and delivered MWh of the first step of the best plan, or None if the solver gave up."""
        n = prices.size
        keep = config.one_way_efficiency
        # Variables: bought c, delivered d, state of charge s (n each); s_t − s_{t−1} − √η c_t + d_t/√η = 0.
        a_eq = np.zeros((n, 3 * n))
        rows = np.arange(n)
        a_eq[rows, 2 * n + rows] = 1.0
        a_eq[rows[1:], 2 * n + rows[:-1]] = -1.0
        a_eq[rows, rows] = -keep
        a_eq[rows, n + rows] = 1.0 / keep
        b_eq = np.zeros(n)
        b_eq[0] = soc
        cost = np.concatenate([prices, -prices, np.zeros(n)])
        cost[-1] = -end_value
        bounds = np.empty((3 * n, 2))
        bounds[:n] = np.column_stack([np.zeros(n), config.max_charge_rate_mw * hours])
        bounds[n : 2 * n] = np.column_stack([np.zeros(n), config.max_discharge_rate_mw * hours])
        low, high = config.min_energy_mwh, config.max_energy_mwh
        bounds[2 * n :] = (min(low, soc), max(high, soc))
        result = linprog(
            cost,
            A_eq=a_eq,
            b_eq=b_eq,
            bounds=bounds,
            method="highs-ds",
            options={"maxiter": self.max_iterations, "presolve": True},
        )
        if result.status != 0 or result.x is None:
            return None
        return max(0.0, float(result.x[0])), max(0.0, float(result.x[n]))

    def dump_memory(self, memory: PolicyMemory | None) -> JsonValue:
        return as_history(memory, self.history_hours).dump()

    def load_memory(self, data: JsonValue) -> HourlyHistory:
        return load_history(data, self.history_hours)
