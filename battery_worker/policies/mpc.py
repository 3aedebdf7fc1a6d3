"""Model-predictive dispatch: a receding-horizon LP over a forecast built only from past ticks.

At each tick the policy solves a small LP (:mod:`battery_worker.policies.plan_lp`): the first step is the
current tick, whose price and step length are known exactly (the battery applies this decision to the step
ending now, at this price); on sub-hourly ticks the ticks still to come in the current hour follow at the
tick interval, priced from the daily profile's value for this hour, the level (how far recent ticks stood
from the profile, exponentially weighted with a time constant of ``level_minutes``; or the last tick's own
departure where that has predicted the next tick better, ``IntraHour.estimate``) and the learned
intra-hour shape (:mod:`battery_worker.policies.intra_hour`); then the next ``horizon_hours`` hours get
prices from the daily profile (:func:`daily_profile`: the shape of the last days, tracking yesterday, spikes
capped) plus today's departure from it, fading by ``level_decay`` per hour: on hourly ticks the current
hour's price less its profile value, on sub-hourly ticks that same estimate. The next day of that forecast is
then blended with what followed the ``analog_neighbours`` past days most like today's last
``analog_window_hours`` (:func:`analog_forecast`, over ``analog_days`` days), weighing ``analog_weight``
times how much nearer they are than a typical past day. Only the first
step's action is applied; the LP is solved again at the next tick. On hourly ticks there are no near-term
steps and the plan is the hourly one. ``sub_hourly=False`` plans hourly on any tick rate.

The plan pays what the battery pays: wear per MWh delivered, and under a cycle cap no day of the plan (the
battery's cycle day) delivers more than the cap (the current day only what is left of it).

Energy left at the horizon's end is worth ``terminal_quantile`` of the recent prices per MWh in the cells,
so the LP does not empty the battery at the end of every horizon and keeps a reserve for prices it cannot
foresee. Under wear, what it ends with above its charge now is worth that less the wear of delivering it:
energy bought now must pay its wear to be worth buying, while the charge it has is not sold for less than
it would cost again (valued all alike, it sold its charge whenever a price topped the wear and never
bought again: below doing nothing where the spread never pays the wear).

Before ``warmup_hours`` of prices there is no daily shape to repeat, but holding for a day throws away runs
shorter than that (the 9-hour MARA event file). From ``plan_from_hours`` on, the LP plans on a flat future
at the median of what is known (:func:`flat_forecast`), valuing the energy left at that median too.

The time budget is deterministic, not wall-clock: the horizon is fixed (at most 49 + 11 steps, ≈180
variables) and HiGHS' dual simplex is capped at ``max_iterations``. A wall-clock limit would make decisions
depend on machine speed and break exact replay; this cap always binds at the same point. With the defaults a
solve takes a few milliseconds (``bench/policy_speed.py``). If the solver fails or hits the cap, the policy
falls back to the adaptive policy on the same history, and says so in the decision's reason.

``carbon_price`` (money per tonne, 0 by default) plans on the price with the tick's emissions priced in,
``energy_price + carbon_price × carbon_intensity / 1000`` (:func:`battery_worker.emissions.effective_price`):
that effective price goes into the history, the forecast and the plan, so replay stays exact (it is a
function of the ticks). A tick without an intensity of its own comes with the one carried to it
(:func:`battery_worker.dispatch.with_carried_intensity`, as the emissions count it); past ``carry_hours`` it
has none and is planned on its price alone. At 0 the price is used as it is, bit for bit.

Memory: one :class:`IntraHour`: a bounded :class:`HourlyHistory` of :attr:`MpcPolicy.memory_hours` floats
(696 by default: the analogs' 28 days and a window; the profile, the terminal value and the fallback read
the last ``history_hours`` of them), plus 42 numbers: the current hour, the intra-hour shape, the level,
and whether it or the last tick is the better estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from battery_worker.battery import Action, BatteryConfig, BatteryState, as_utc, delivered_today, step_hours
from battery_worker.emissions import effective_price
from battery_worker.errors import InvalidConfig
from battery_worker.policies.adaptive import AdaptivePolicy
from battery_worker.policies.base import Decision, JsonValue, PolicyMemory, decision, gated_by_battery, hold
from battery_worker.policies.forecast import (
    HOURS_PER_DAY,
    FloatArray,
    analog_forecast,
    daily_profile,
    departed,
    flat_forecast,
    require_fraction,
    whole_number,
)
from battery_worker.policies.intra_hour import IntraHour, as_intra_hour, load_intra_hour
from battery_worker.policies.plan_lp import PlanSteps, solve_plan
from battery_worker.ticks import PriceTick

ENERGY_EPSILON_MWH = 1e-6


@dataclass(frozen=True, slots=True)
class MpcPolicy:
    horizon_hours: int = 48
    history_hours: int = 168
    warmup_hours: int = 24
    plan_from_hours: int = 2
    profile_days: int = 7
    recent_weight: float = 0.5
    spike_quantile: float = 0.98
    level_decay: float = 0.97
    terminal_quantile: float = 0.5
    max_iterations: int = 2000
    sub_hourly: bool = True
    shape_decay: float = 0.95
    level_minutes: float = 60.0
    fallback: AdaptivePolicy = field(default_factory=AdaptivePolicy)
    carbon_price: float = 0.0
    analog_weight: float = 1.0
    analog_days: int = 28
    analog_neighbours: int = 5
    analog_window_hours: int = 24

    def __post_init__(self) -> None:
        minimums = (
            ("horizon_hours", 1),
            ("history_hours", 2),
            ("profile_days", 1),
            ("max_iterations", 1),
            ("analog_days", 1),
            ("analog_neighbours", 1),
            ("analog_window_hours", 1),
        )
        for name, low in minimums:
            object.__setattr__(self, name, whole_number(name, getattr(self, name), low))
        object.__setattr__(self, "warmup_hours", whole_number("warmup_hours", self.warmup_hours, 1))
        object.__setattr__(self, "plan_from_hours", whole_number("plan_from_hours", self.plan_from_hours, 1))
        if self.warmup_hours > self.history_hours:
            raise InvalidConfig("warmup_hours", self.warmup_hours, "must not exceed history_hours")
        if self.analog_neighbours > self.analog_days:
            raise InvalidConfig("analog_neighbours", self.analog_neighbours, "must not exceed analog_days")
        names = ("recent_weight", "spike_quantile", "level_decay", "terminal_quantile", "shape_decay")
        for name in (*names, "analog_weight"):
            require_fraction(name, getattr(self, name))
        if not isinstance(self.sub_hourly, bool):
            raise InvalidConfig("sub_hourly", self.sub_hourly, "must be true or false")
        minutes = self.level_minutes
        is_number = isinstance(minutes, int | float) and not isinstance(minutes, bool)
        if not is_number or not 0 < minutes < float("inf"):
            raise InvalidConfig("level_minutes", minutes, "must be a finite number > 0 (minutes)")
        object.__setattr__(self, "level_minutes", float(minutes))
        carbon = self.carbon_price
        if isinstance(carbon, bool) or not isinstance(carbon, int | float) or not 0 <= carbon < float("inf"):
            raise InvalidConfig("carbon_price", carbon, "must be a finite number >= 0 (money per tonne)")
        object.__setattr__(self, "carbon_price", float(carbon))
        if not isinstance(self.fallback, AdaptivePolicy):
            raise InvalidConfig("fallback", self.fallback, "must be an AdaptivePolicy")
        if self.fallback.window_hours > self.history_hours:
            raise InvalidConfig("history_hours", self.history_hours, "must cover the fallback's window_hours")

    @property
    def name(self) -> str:
        return "mpc"

    @property
    def memory_hours(self) -> int:
        """Hours of prices kept: ``history_hours`` for the profile, the terminal value and the fallback, and
        with analogs on, enough for ``analog_days`` past days and their window."""
        if self.analog_weight == 0:
            return self.history_hours
        return max(self.history_hours, HOURS_PER_DAY * self.analog_days + self.analog_window_hours)

    def initial_memory(self) -> IntraHour:
        return as_intra_hour(None, self.memory_hours)

    def decide(
        self, tick: PriceTick, battery: BatteryState, config: BatteryConfig, memory: PolicyMemory | None
    ) -> tuple[Decision, IntraHour]:
        price = effective_price(tick.energy_price, tick.carbon_intensity, self.carbon_price)
        planned = tick if price == tick.energy_price else tick.model_copy(update={"energy_price": price})
        seen = as_intra_hour(memory, self.memory_hours).add(tick.timestamp, price, self.shape_decay)
        kept = seen.history.known()
        known = kept[-self.history_hours :]
        profile = self._profile(known)
        expected = float(np.median(known)) if profile is None else float(profile[0])
        seen = seen.with_level(price, expected, 60.0 * self.level_minutes)
        if known.size < min(self.plan_from_hours, self.warmup_hours):
            return hold(tick, f"warming up ({known.size}/{self.plan_from_hours} h of prices)"), seen
        first_hours, _gap = step_hours(config, battery.last_tick_at, tick.timestamp)
        if known.size < self.warmup_hours:
            end_value = float(np.median(known))  # what the flat forecast of _steps plans on
        else:
            end_value = float(np.quantile(known, self.terminal_quantile))
        steps = self._steps(planned, seen, known, kept, profile, expected, config, first_hours)
        today = delivered_today(config, battery, tick.timestamp)
        plan = solve_plan(config, battery.state_of_charge_mwh, steps, end_value, today, self.max_iterations)
        if plan is None:
            fallback = self.fallback.decide_on(planned, seen.history, battery, config)
            reason = f"mpc fallback ({fallback.reason})"
            return replace(fallback, reason=reason, energy_price=tick.energy_price), seen
        bought, delivered = plan
        if bought > delivered and bought > ENERGY_EPSILON_MWH:
            wanted = decision(tick, Action.CHARGE, bought / first_hours, f"mpc plan: charge {bought:.3f} MWh")
        elif delivered > ENERGY_EPSILON_MWH:
            wanted = decision(
                tick, Action.DISCHARGE, delivered / first_hours, f"mpc plan: discharge {delivered:.3f} MWh"
            )
        else:
            return hold(tick, "mpc plan: hold"), seen
        return gated_by_battery(tick, wanted, battery, config), seen

    def _profile(self, known: FloatArray) -> FloatArray | None:
        """The daily profile from the current hour on; None while too short for a daily shape."""
        if known.size < self.warmup_hours:
            return None
        return daily_profile(
            known,
            self.horizon_hours,
            days=self.profile_days,
            recent_weight=self.recent_weight,
            spike_quantile=self.spike_quantile,
        )

    def _steps(
        self,
        tick: PriceTick,
        seen: IntraHour,
        known: FloatArray,
        kept: FloatArray,
        profile: FloatArray | None,
        expected: float,
        config: BatteryConfig,
        first_hours: float,
    ) -> PlanSteps:
        """The current step, the rest of this hour at the tick interval (sub-hourly ticks), then hours.

        ``known`` is the last ``history_hours`` of prices, ``kept`` all of them (the analogs' past days)."""
        near = seen.near_term(3600.0 * config.max_step_hours, expected) if self.sub_hourly else None
        if profile is None:
            # Too short for a daily shape: plan on what is known, a flat future at its median.
            forecast = flat_forecast(known, self.horizon_hours)
        else:
            if near is None or seen.estimate is None:
                forecast = departed(profile, float(known[-1]) - profile[0], self.level_decay)
            else:
                forecast = departed(profile, seen.estimate, self.level_decay)
            forecast = analog_forecast(
                kept,
                forecast,
                days=self.analog_days,
                neighbours=self.analog_neighbours,
                window_hours=self.analog_window_hours,
                weight=self.analog_weight,
            )
        now = as_utc(tick.timestamp).timestamp()
        hour_starts = (now // 3600 + np.arange(1, self.horizon_hours + 1)) * 3600
        if near is None:
            prices = np.concatenate([[tick.energy_price], forecast])
            hours = np.concatenate([[first_hours], np.ones(self.horizon_hours)])
            ends = np.concatenate([[now], hour_starts])
        else:
            prices = np.concatenate([[tick.energy_price], near.prices, forecast])
            hours = np.concatenate([[first_hours], near.hours, np.ones(self.horizon_hours)])
            ends = np.concatenate([[now], near.ends, hour_starts])
        days = None  # only a cycle cap reads them: no per-step day lookups on every tick without one
        if config.daily_delivery_cap_mwh is not None:
            days = np.fromiter((config.cycle_day(end) for end in ends), dtype=np.int64, count=ends.size)
        return PlanSteps(prices=prices, hours=hours, days=days)

    def dump_memory(self, memory: PolicyMemory | None) -> JsonValue:
        return as_intra_hour(memory, self.memory_hours).dump()

    def load_memory(self, data: JsonValue) -> IntraHour:
        """A stored memory, its history widened to :attr:`memory_hours` if it was kept shorter (a state
        written before the analogs, or with them off): the hours it has are kept, and more accumulate."""
        memory = load_intra_hour(data, self.memory_hours)
        if memory.history.max_hours < self.memory_hours:
            memory = replace(memory, history=replace(memory.history, max_hours=self.memory_hours))
        return memory
