"""The virtual battery: configuration, state and the physics of one step. Pure and deterministic.

The model, in one place (the README repeats it):

* ``efficiency`` is the round-trip efficiency η. It is split evenly between the two sides: charging stores
  ``√η`` of the energy bought from the grid, discharging delivers ``√η`` of the energy drawn from the cells.
  A full cycle therefore returns η of what was bought.
* ``power_mw`` is always measured on the site side of the inverter: for a charge it is the power bought from
  the grid, for a discharge the power delivered to the site. Rate limits apply to that power.
* A step lasts from the previous tick to this one. The first tick, and any gap longer than
  ``max_step_hours``, use ``default_step_hours`` instead; such a gap is reported in the step.
* Power is clamped to the rate limit and to the room (or energy) left within the state-of-charge bounds, so
  the battery can reach exactly full and exactly empty.
* Money is the tick's energy price times energy on the site side: buying costs ``bought × price``,
  delivering avoids ``delivered × price``. Negative prices are valid: charging then earns money.
* Wear: ``cycle_cost_per_mwh`` prices each MWh delivered (:meth:`BatteryState.wear_cost`); it is accounted,
  never enforced. ``max_cycles_per_day`` is enforced: a discharge is clamped so the energy delivered on one
  calendar day (the date of the tick ending the step in ``cycle_day_timezone``, UTC by default) stays within
  that many usable windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from battery_worker.battery_config import PRICE_LIMIT

# Re-exported while callers move to battery_config (policies/ still import it from here).
from battery_worker.battery_config import BatteryConfig as BatteryConfig
from battery_worker.battery_config import require_finite as require_finite
from battery_worker.errors import InvalidInput, TimestampNotIncreasing
from battery_worker.frozen import slot_setters


class Action(StrEnum):
    CHARGE = "charge"
    DISCHARGE = "discharge"
    HOLD = "hold"


class Limit(StrEnum):
    """What held a step below the power asked for; events carry it as the plain string."""

    RATE = "rate"
    FULL = "full"
    EMPTY = "empty"
    CYCLES = "cycles"


# A member read through its enum class costs ~60 ns (EnumType's attribute lookup), a module name ~10: the
# hot path reads these.
CHARGE, DISCHARGE, HOLD = Action.CHARGE, Action.DISCHARGE, Action.HOLD
_RATE, _FULL, _EMPTY, _CYCLES = Limit.RATE, Limit.FULL, Limit.EMPTY, Limit.CYCLES


@dataclass(frozen=True, slots=True, kw_only=True)
class BatteryState:
    """The battery as it stands after some steps. Running totals are in MWh and in price units × MWh."""

    state_of_charge_mwh: float
    last_tick_at: datetime | None = None
    ticks_applied: int = 0
    energy_bought_mwh: float = 0.0
    energy_stored_mwh: float = 0.0
    energy_drawn_mwh: float = 0.0
    energy_delivered_mwh: float = 0.0
    charging_cost: float = 0.0
    avoided_cost: float = 0.0
    # Energy delivered on the cycle day of ``last_tick_at`` (``BatteryConfig.cycle_day``): what
    # ``max_cycles_per_day`` counts. Kept only while a cap is set (0 otherwise), so a battery without a cap
    # carries nothing new.
    delivered_today_mwh: float = 0.0

    @property
    def energy_lost_mwh(self) -> float:
        return (self.energy_bought_mwh - self.energy_stored_mwh) + (
            self.energy_drawn_mwh - self.energy_delivered_mwh
        )

    @property
    def net_value(self) -> float:
        """Avoided cost minus charging cost: what the battery earned, energy left in it not counted."""
        return self.avoided_cost - self.charging_cost

    def wear_cost(self, config: BatteryConfig) -> float:
        """What the energy delivered so far cost in wear, at ``config.cycle_cost_per_mwh``."""
        return self.energy_delivered_mwh * config.cycle_cost_per_mwh

    def net_value_after_wear(self, config: BatteryConfig) -> float:
        """:attr:`net_value` minus :meth:`wear_cost`: what the battery earned once its wear is paid."""
        return self.net_value - self.wear_cost(config)

    def full_equivalent_cycles(self, config: BatteryConfig) -> float:
        """Energy drawn from the cells over the capacity: one full discharge is one cycle."""
        return self.energy_drawn_mwh / config.capacity_mwh

    def charge_percent(self, config: BatteryConfig) -> float:
        return 100.0 * self.state_of_charge_mwh / config.capacity_mwh

    def can_charge(self, config: BatteryConfig) -> bool:
        """Room is left below the maximum charge and the battery may charge at all (rate above zero)."""
        return self.state_of_charge_mwh < config.max_energy_mwh and config.max_charge_rate_mw > 0

    def can_discharge(self, config: BatteryConfig) -> bool:
        """Energy is left above the minimum charge and the battery may discharge at all (rate above zero)."""
        return self.state_of_charge_mwh > config.min_energy_mwh and config.max_discharge_rate_mw > 0

    def cycle_cap_reached(self, config: BatteryConfig, at: datetime | None) -> bool:
        """The cycle day of ``at`` has delivered all ``max_cycles_per_day`` allows: a discharge there moves
        nothing."""
        cap = config.daily_delivery_cap_mwh
        return cap is not None and delivered_today(config, self, at) >= cap


_new = object.__new__
_SOC, _AT, _TICKS, _BOUGHT, _STORED, _DRAWN, _DELIVERED, _COST, _AVOIDED, _TODAY = slot_setters(BatteryState)


def _battery_state(
    soc: float,
    at: datetime | None,
    ticks: int,
    bought: float,
    stored: float,
    drawn: float,
    delivered: float,
    charging_cost: float,
    avoided_cost: float,
    today: float,
) -> BatteryState:
    """``BatteryState(...)`` by field order, 2.5× faster than its ``__init__`` (one per tick)."""
    state: BatteryState = _new(BatteryState)
    _SOC(state, soc)
    _AT(state, at)
    _TICKS(state, ticks)
    _BOUGHT(state, bought)
    _STORED(state, stored)
    _DRAWN(state, drawn)
    _DELIVERED(state, delivered)
    _COST(state, charging_cost)
    _AVOIDED(state, avoided_cost)
    _TODAY(state, today)
    return state


def initial_state(config: BatteryConfig) -> BatteryState:
    return BatteryState(state_of_charge_mwh=config.initial_energy_mwh)


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What one application of an action did. ``power_mw`` and ``energy_mwh`` are site-side figures."""

    action: Action
    requested_power_mw: float
    power_mw: float
    duration_hours: float
    energy_mwh: float
    state_of_charge_before_mwh: float
    state_of_charge_after_mwh: float
    limited_by: Limit | None
    gap_hours: float | None
    state: BatteryState


_ACTION, _ASKED, _POWER, _DURATION, _ENERGY, _BEFORE, _AFTER, _LIMITED_BY, _GAP, _STATE = slot_setters(Step)


def _step(
    action: Action,
    requested_power_mw: float,
    power_mw: float,
    duration_hours: float,
    energy_mwh: float,
    before_mwh: float,
    after_mwh: float,
    limited_by: Limit | None,
    gap_hours: float | None,
    state: BatteryState,
) -> Step:
    """``Step(...)`` by field order, as :func:`_battery_state`."""
    step: Step = _new(Step)
    _ACTION(step, action)
    _ASKED(step, requested_power_mw)
    _POWER(step, power_mw)
    _DURATION(step, duration_hours)
    _ENERGY(step, energy_mwh)
    _BEFORE(step, before_mwh)
    _AFTER(step, after_mwh)
    _LIMITED_BY(step, limited_by)
    _GAP(step, gap_hours)
    _STATE(step, state)
    return step


def as_utc(at: datetime) -> datetime:
    """Zone-less timestamps are UTC by contract (the price monitor sends them so).

    A time whose UTC falls outside the years 1 to 9999 (``0001-01-01T00:00:00+01:00``) is a ``ValueError``,
    as any other invalid time: Python's ``OverflowError`` escaped validation, so one such tick stopped the
    worker at every restart, and the replay and the monitor with it (a review run)."""
    zone = at.tzinfo
    if zone is UTC:
        return at  # what astimezone(UTC) returns too, without the call: every tick is here already
    if zone is None:
        return at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{at.isoformat()} lies outside the years 1 to 9999 in UTC") from None


def step_hours(
    config: BatteryConfig, previous_at: datetime | None, at: datetime
) -> tuple[float, float | None]:
    """Length of the step ending at ``at`` and, when the default replaced a too-long gap, that gap.

    Raises :class:`TimestampNotIncreasing` if ``at`` is not after ``previous_at``.
    """
    if previous_at is None:
        return config.default_step_hours, None
    elapsed = (at - previous_at).total_seconds() / 3600.0
    if elapsed <= 0:
        raise TimestampNotIncreasing(
            "timestamp", at.isoformat(), f"not after the previous tick {previous_at.isoformat()}"
        )
    if elapsed > config.max_step_hours:
        return config.default_step_hours, elapsed
    return elapsed, None


def apply_tick(
    config: BatteryConfig,
    state: BatteryState,
    action: Action,
    power_mw: float,
    energy_price: float,
    at: datetime,
) -> Step:
    """Apply ``action`` for the time since the previous tick, at the tick's ``energy_price``."""
    at = as_utc(at)
    _check_request(action, power_mw, energy_price)
    duration, gap = step_hours(config, state.last_tick_at, at)
    return _apply(config, state, action, power_mw, duration, energy_price, at, state.ticks_applied + 1, gap)


def _check_request(action: Action, power_mw: float, energy_price: float | None) -> None:
    if not isinstance(action, Action):
        raise InvalidInput("action", action, "must be charge, discharge or hold")
    require_finite("power_mw", power_mw, InvalidInput)
    if power_mw < 0:
        raise InvalidInput("power_mw", power_mw, "must be >= 0")
    if energy_price is not None:
        require_finite("energy_price", energy_price, InvalidInput)
        if not -PRICE_LIMIT <= energy_price <= PRICE_LIMIT:  # a tick's price is held to it when read
            raise InvalidInput("energy_price", energy_price, f"beyond ±{PRICE_LIMIT:g}")


def apply_for(
    config: BatteryConfig,
    state: BatteryState,
    action: Action,
    power_mw: float,
    duration_hours: float,
    energy_price: float | None = None,
) -> Step:
    """Apply ``action`` at ``power_mw`` for ``duration_hours``; without a price, money totals stay put.

    Everything is checked before anything is computed, so an error leaves no half-applied state (the
    state is immutable anyway: the caller keeps the old one).
    """
    _check_request(action, power_mw, energy_price)
    require_finite("duration_hours", duration_hours, InvalidInput)
    if duration_hours < 0:
        raise InvalidInput("duration_hours", duration_hours, "must be >= 0")
    at, ticks = state.last_tick_at, state.ticks_applied
    return _apply(config, state, action, power_mw, duration_hours, energy_price, at, ticks, None)


def delivered_today(config: BatteryConfig, state: BatteryState, at: datetime | None) -> float:
    """Energy already delivered on the cycle day of ``at`` (:meth:`BatteryConfig.cycle_day`): the state's
    count, or 0 on a new day (or with no cap)."""
    if config.max_cycles_per_day is None:
        return 0.0
    last = state.last_tick_at
    if (
        last is not None
        and at is not None
        and config.cycle_day(as_utc(last).timestamp()) != config.cycle_day(as_utc(at).timestamp())
    ):
        return 0.0
    return state.delivered_today_mwh


# The hot path of the worker: ``at``, ``ticks`` and ``gap`` are what a step sets besides the physics (the
# tick time, the tick count and the gap it reports); one Step and one BatteryState are built per call.


def _apply(
    config: BatteryConfig,
    state: BatteryState,
    action: Action,
    power_mw: float,
    duration_hours: float,
    energy_price: float | None,
    at: datetime | None,
    ticks: int,
    gap: float | None,
) -> Step:
    price = 0.0 if energy_price is None else energy_price
    if action is CHARGE and duration_hours > 0:
        return _charge(config, state, power_mw, duration_hours, price, at, ticks, gap)
    if action is DISCHARGE and duration_hours > 0:
        return _discharge(config, state, power_mw, duration_hours, price, at, ticks, gap)
    soc = state.state_of_charge_mwh
    held = _battery_state(
        soc,
        at,
        ticks,
        state.energy_bought_mwh,
        state.energy_stored_mwh,
        state.energy_drawn_mwh,
        state.energy_delivered_mwh,
        state.charging_cost,
        state.avoided_cost,
        delivered_today(config, state, at),
    )
    return _step(action, power_mw, 0.0, duration_hours, 0.0, soc, soc, None, gap, held)


def _charge(
    config: BatteryConfig,
    state: BatteryState,
    power_mw: float,
    hours: float,
    price: float,
    at: datetime | None,
    ticks: int,
    gap: float | None,
) -> Step:
    soc = state.state_of_charge_mwh
    keep = config.one_way_efficiency
    top = config.max_energy_mwh
    room = max(0.0, top - soc)
    power, limited_by = power_mw, None
    if power > config.max_charge_rate_mw:
        power, limited_by = config.max_charge_rate_mw, _RATE
    if power * hours * keep >= room:
        stored, soc_after, limited_by = room, top if room > 0 else soc, _FULL
        bought = stored / keep
        power = bought / hours
    else:
        bought = power * hours
        stored = bought * keep
        soc_after = min(soc + stored, top)
    new_state = _battery_state(
        soc_after,
        at,
        ticks,
        state.energy_bought_mwh + bought,
        state.energy_stored_mwh + stored,
        state.energy_drawn_mwh,
        state.energy_delivered_mwh,
        state.charging_cost + bought * price,
        state.avoided_cost,
        delivered_today(config, state, at),
    )
    return _step(CHARGE, power_mw, power, hours, bought, soc, soc_after, limited_by, gap, new_state)


def _discharge(
    config: BatteryConfig,
    state: BatteryState,
    power_mw: float,
    hours: float,
    price: float,
    at: datetime | None,
    ticks: int,
    gap: float | None,
) -> Step:
    soc = state.state_of_charge_mwh
    keep = config.one_way_efficiency
    bottom = config.min_energy_mwh
    available = max(0.0, soc - bottom)
    power, limited_by = power_mw, None
    if power > config.max_discharge_rate_mw:
        power, limited_by = config.max_discharge_rate_mw, _RATE
    if power * hours / keep >= available:
        drawn, soc_after, limited_by = available, bottom if available > 0 else soc, _EMPTY
        delivered = drawn * keep
        power = delivered / hours
    else:
        delivered = power * hours
        drawn = delivered / keep
        soc_after = max(soc - drawn, bottom)
    today = delivered_today(config, state, at)
    cap = config.daily_delivery_cap_mwh
    if cap is not None and today + delivered > cap:
        delivered, limited_by = max(0.0, cap - today), _CYCLES
        drawn = delivered / keep
        soc_after = max(soc - drawn, bottom)
        power = delivered / hours
    new_state = _battery_state(
        soc_after,
        at,
        ticks,
        state.energy_bought_mwh,
        state.energy_stored_mwh,
        state.energy_drawn_mwh + drawn,
        state.energy_delivered_mwh + delivered,
        state.charging_cost,
        state.avoided_cost + delivered * price,
        0.0 if cap is None else today + delivered,
    )
    return _step(DISCHARGE, power_mw, power, hours, delivered, soc, soc_after, limited_by, gap, new_state)
