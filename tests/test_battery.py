"""The battery's physics: step length from timestamps, clamping, efficiency, totals and input errors."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from battery_worker.battery import Action, BatteryState, Limit, apply_for, apply_tick, initial_state
from battery_worker.battery_config import BatteryConfig, BatteryFields
from battery_worker.errors import InvalidConfig, InvalidInput, TimestampNotIncreasing

T0 = datetime(2023, 1, 1, tzinfo=UTC)
T_DST = datetime(2023, 3, 10, tzinfo=UTC)  # two days before Chicago's clocks go forward
CONFIG = BatteryConfig()
KEEP = math.sqrt(0.9)


def test_defaults_match_the_seed() -> None:
    config = BatteryConfig()
    assert (config.capacity_mwh, config.max_charge_rate_mw, config.max_discharge_rate_mw) == (100, 20, 20)
    assert config.efficiency == 0.9
    assert initial_state(config).state_of_charge_mwh == 50.0


def test_step_length_comes_from_tick_spacing() -> None:
    first = apply_tick(CONFIG, initial_state(CONFIG), Action.CHARGE, 12.0, 30.0, T0)
    assert first.duration_hours == CONFIG.default_step_hours
    second = apply_tick(CONFIG, first.state, Action.CHARGE, 12.0, 30.0, T0 + timedelta(minutes=5))
    assert second.duration_hours == pytest.approx(5 / 60)
    assert second.energy_mwh == pytest.approx(12.0 * 5 / 60)
    assert second.gap_hours is None


def test_a_gap_longer_than_the_maximum_uses_the_default_step_and_is_reported() -> None:
    first = apply_tick(CONFIG, initial_state(CONFIG), Action.HOLD, 0.0, 30.0, T0)
    late = apply_tick(CONFIG, first.state, Action.CHARGE, 10.0, 30.0, T0 + timedelta(hours=7))
    assert late.duration_hours == CONFIG.default_step_hours
    assert late.gap_hours == pytest.approx(7.0)
    assert late.energy_mwh == pytest.approx(10.0)


def test_efficiency_is_split_evenly_so_a_round_trip_returns_eta() -> None:
    config = BatteryConfig(initial_charge_percent=0.0)
    charged = apply_for(config, initial_state(config), Action.CHARGE, 10.0, 1.0, 1.0)
    assert charged.state.energy_stored_mwh == pytest.approx(10.0 * KEEP)
    drained = apply_for(config, charged.state, Action.DISCHARGE, 20.0, 5.0, 1.0)
    assert drained.state.state_of_charge_mwh == 0.0
    assert drained.state.energy_delivered_mwh == pytest.approx(10.0 * 0.9)
    assert drained.state.energy_lost_mwh == pytest.approx(1.0)


def test_charges_to_exactly_full_even_when_a_full_hour_at_max_rate_does_not_fit() -> None:
    config = BatteryConfig(initial_charge_percent=95.0)
    step = apply_for(config, initial_state(config), Action.CHARGE, 20.0, 1.0, 10.0)
    assert step.state.state_of_charge_mwh == 100.0
    assert step.limited_by is Limit.FULL
    assert step.energy_mwh == pytest.approx(5.0 / KEEP)
    assert step.power_mw == pytest.approx(5.0 / KEEP)


def test_discharges_to_exactly_empty() -> None:
    config = BatteryConfig(initial_charge_percent=3.0)
    step = apply_for(config, initial_state(config), Action.DISCHARGE, 20.0, 1.0, 10.0)
    assert step.state.state_of_charge_mwh == 0.0
    assert step.limited_by is Limit.EMPTY
    assert step.energy_mwh == pytest.approx(3.0 * KEEP)


def test_power_is_clamped_to_the_rate_limits() -> None:
    step = apply_for(CONFIG, initial_state(CONFIG), Action.CHARGE, 25.0, 0.5, 10.0)
    assert step.power_mw == 20.0
    assert step.limited_by is Limit.RATE
    plain: str = step.limited_by  # a StrEnum: equal to the plain string events carry
    assert plain == "rate"
    out = apply_for(CONFIG, initial_state(CONFIG), Action.DISCHARGE, 25.0, 0.5, 10.0)
    assert out.power_mw == 20.0


def test_each_direction_is_clamped_to_its_own_rate() -> None:
    """The rates are equal by default, so the test-suite review's discharge clamped to the charge rate
    passed every test: the policies ask for no more than the rate, and the battery's own limit never bit."""
    config = replace(CONFIG, max_charge_rate_mw=30.0, max_discharge_rate_mw=10.0)
    charge = apply_for(config, initial_state(config), Action.CHARGE, 25.0, 0.5, 10.0)
    assert (charge.power_mw, charge.limited_by) == (25.0, None)
    discharge = apply_for(config, initial_state(config), Action.DISCHARGE, 25.0, 0.5, 10.0)
    assert (discharge.power_mw, discharge.limited_by) == (10.0, Limit.RATE)
    assert apply_for(config, initial_state(config), Action.CHARGE, 40.0, 0.5, 10.0).power_mw == 30.0


def test_a_step_of_exactly_max_step_hours_is_no_gap() -> None:
    first = apply_tick(CONFIG, initial_state(CONFIG), Action.HOLD, 0.0, 30.0, T0)
    at_max = T0 + timedelta(hours=CONFIG.max_step_hours)
    step = apply_tick(CONFIG, first.state, Action.CHARGE, 10.0, 30.0, at_max)
    assert (step.duration_hours, step.gap_hours) == (CONFIG.max_step_hours, None)
    past = apply_tick(CONFIG, first.state, Action.CHARGE, 10.0, 30.0, at_max + timedelta(seconds=1))
    assert past.duration_hours == CONFIG.default_step_hours
    assert past.gap_hours is not None


def test_can_charge_and_discharge_need_room_and_a_rate_above_zero() -> None:
    config = BatteryConfig(min_charge_percent=10.0, max_charge_percent=90.0)
    state = initial_state(config)
    assert state.can_charge(config)
    assert state.can_discharge(config)
    assert not replace(state, state_of_charge_mwh=90.0).can_charge(config)
    assert not replace(state, state_of_charge_mwh=10.0).can_discharge(config)
    assert not state.can_charge(replace(config, max_charge_rate_mw=0.0))
    assert not state.can_discharge(replace(config, max_discharge_rate_mw=0.0))


def test_min_and_max_charge_bounds_are_respected() -> None:
    config = BatteryConfig(min_charge_percent=10.0, max_charge_percent=90.0)
    full = apply_for(config, initial_state(config), Action.CHARGE, 20.0, 10.0, 1.0)
    assert full.state.state_of_charge_mwh == 90.0
    empty = apply_for(config, full.state, Action.DISCHARGE, 20.0, 10.0, 1.0)
    assert empty.state.state_of_charge_mwh == 10.0


def test_money_totals_use_the_tick_price_including_negative_prices() -> None:
    first = apply_tick(CONFIG, initial_state(CONFIG), Action.CHARGE, 10.0, -5.0, T0)
    assert first.state.charging_cost == pytest.approx(-50.0)
    second = apply_tick(CONFIG, first.state, Action.DISCHARGE, 10.0, 100.0, T0 + timedelta(hours=1))
    assert second.state.avoided_cost == pytest.approx(1000.0)
    assert second.state.net_value == pytest.approx(1050.0)
    assert second.state.full_equivalent_cycles(CONFIG) == pytest.approx(10.0 / KEEP / 100.0)
    assert second.state.ticks_applied == 2


def test_hold_changes_nothing_but_the_clock() -> None:
    step = apply_tick(CONFIG, initial_state(CONFIG), Action.HOLD, 0.0, 40.0, T0)
    assert step.state.state_of_charge_mwh == 50.0
    assert step.state.last_tick_at == T0
    assert step.energy_mwh == 0.0


def test_zone_less_timestamps_are_utc() -> None:
    step = apply_tick(CONFIG, initial_state(CONFIG), Action.HOLD, 0.0, 40.0, datetime(2023, 1, 1))
    assert step.state.last_tick_at == T0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("efficiency", 0.0),
        ("efficiency", 1.2),
        ("efficiency", math.nan),
        ("capacity_mwh", -1.0),
        ("capacity_mwh", math.inf),
        ("initial_charge_percent", 101.0),
        ("initial_charge_percent", -1.0),
        ("max_charge_rate_mw", -5.0),
        ("default_step_hours", 0.0),
    ],
)
def test_invalid_config_names_the_field_and_value(field: str, value: float) -> None:
    fields: BatteryFields = {field: value}
    with pytest.raises(InvalidConfig) as caught:
        BatteryConfig(**fields)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)
    assert field in str(caught.value)


def test_initial_charge_must_sit_inside_the_min_max_bounds() -> None:
    with pytest.raises(InvalidConfig, match="initial_charge_percent"):
        BatteryConfig(initial_charge_percent=5.0, min_charge_percent=10.0)


@pytest.mark.parametrize(
    ("power", "hours", "price", "field"),
    [
        (-1.0, 1.0, 1.0, "power_mw"),
        (math.nan, 1.0, 1.0, "power_mw"),
        (math.inf, 1.0, 1.0, "power_mw"),
        (1.0, -1.0, 1.0, "duration_hours"),
        (1.0, math.nan, 1.0, "duration_hours"),
        (1.0, 1.0, math.nan, "energy_price"),
    ],
)
def test_bad_inputs_raise_and_leave_the_state_untouched(
    power: float, hours: float, price: float, field: str
) -> None:
    state = initial_state(CONFIG)
    before = BatteryState(**{name: getattr(state, name) for name in BatteryState.__slots__})
    with pytest.raises(InvalidInput) as caught:
        apply_for(CONFIG, state, Action.CHARGE, power, hours, price)
    assert caught.value.field == field
    assert state == before


def test_timestamps_going_backwards_are_refused() -> None:
    step = apply_tick(CONFIG, initial_state(CONFIG), Action.CHARGE, 10.0, 1.0, T0)
    with pytest.raises(TimestampNotIncreasing) as caught:
        apply_tick(CONFIG, step.state, Action.CHARGE, 10.0, 1.0, T0 - timedelta(minutes=1))
    assert caught.value.field == "timestamp"
    with pytest.raises(TimestampNotIncreasing):
        apply_tick(CONFIG, step.state, Action.CHARGE, 10.0, 1.0, T0)


def test_wear_is_accounted_per_mwh_delivered_and_never_changes_the_physics() -> None:
    worn = BatteryConfig(cycle_cost_per_mwh=12.0)
    step = apply_for(worn, initial_state(worn), Action.DISCHARGE, 20.0, 1.0, 100.0)
    plain = apply_for(CONFIG, initial_state(CONFIG), Action.DISCHARGE, 20.0, 1.0, 100.0)
    assert step.state.state_of_charge_mwh == plain.state.state_of_charge_mwh
    assert step.state.net_value == pytest.approx(2000.0)
    assert step.state.wear_cost(worn) == pytest.approx(20.0 * 12.0)
    assert step.state.net_value_after_wear(worn) == pytest.approx(2000.0 - 240.0)
    assert plain.state.wear_cost(CONFIG) == 0.0


HALF_A_CYCLE_A_DAY = BatteryConfig(
    capacity_mwh=10.0,
    max_discharge_rate_mw=10.0,
    efficiency=1.0,
    initial_charge_percent=100.0,
    max_cycles_per_day=0.5,
)
"""10 MWh, window 0-100%, full: half a cycle a day is 5 MWh delivered (site side)."""


def test_the_daily_cycle_cap_clamps_discharge_until_the_next_utc_day() -> None:
    config = HALF_A_CYCLE_A_DAY
    assert config.daily_delivery_cap_mwh == 5.0
    first = apply_tick(config, initial_state(config), Action.DISCHARGE, 3.0, 50.0, T0)
    assert (first.energy_mwh, first.limited_by) == (3.0, None)
    second = apply_tick(config, first.state, Action.DISCHARGE, 10.0, 50.0, T0 + timedelta(hours=1))
    assert second.energy_mwh == pytest.approx(2.0)
    assert second.limited_by is Limit.CYCLES
    assert second.state.state_of_charge_mwh == pytest.approx(5.0)
    spent = apply_tick(config, second.state, Action.DISCHARGE, 10.0, 50.0, T0 + timedelta(hours=2))
    assert spent.energy_mwh == 0.0
    held = apply_tick(config, spent.state, Action.HOLD, 0.0, 50.0, T0 + timedelta(hours=24))
    assert held.state.delivered_today_mwh == 0.0  # a new day, even on a hold
    next_day = apply_tick(config, held.state, Action.DISCHARGE, 4.0, 50.0, T0 + timedelta(hours=25))
    assert (next_day.energy_mwh, next_day.limited_by) == (4.0, None)


def test_without_a_cap_nothing_new_is_carried() -> None:
    step = apply_tick(CONFIG, initial_state(CONFIG), Action.DISCHARGE, 20.0, 50.0, T0)
    assert step.state.delivered_today_mwh == 0.0
    assert step.limited_by is None


@settings(max_examples=200, deadline=None)
@given(
    cap=st.floats(0.05, 3.0),
    zone=st.sampled_from(["UTC", "America/Chicago", "Australia/Sydney", "Asia/Kolkata"]),
    steps=st.lists(
        st.tuples(st.sampled_from(list(Action)), st.floats(0, 50), st.integers(60, 3 * 3600)), max_size=80
    ),
)
def test_energy_delivered_per_cycle_day_never_exceeds_the_cap(
    cap: float, zone: str, steps: list[tuple[Action, float, int]]
) -> None:
    config = BatteryConfig(
        max_cycles_per_day=cap, min_charge_percent=10.0, max_charge_percent=90.0, cycle_day_timezone=zone
    )
    state, at = initial_state(config), T_DST
    per_day: defaultdict[date, float] = defaultdict(float)
    for action, power, seconds in steps:
        at += timedelta(seconds=seconds)
        step = apply_tick(config, state, action, power, 50.0, at)
        if step.action is Action.DISCHARGE:
            per_day[at.astimezone(ZoneInfo(zone)).date()] += step.energy_mwh
        state = step.state
    assert all(delivered <= cap * config.usable_energy_mwh + 1e-9 for delivered in per_day.values())


def test_the_cycle_day_is_the_sites_calendar_day() -> None:
    """Capped per UTC day, a Texas battery's day turns at 18:00 (CST), inside the evening peak: a cycle before
    it and another after. In the site's zone the evening is one day."""
    config = HALF_A_CYCLE_A_DAY
    five_pm = datetime(2023, 1, 10, 23, tzinfo=UTC)  # 17:00 in Chicago (UTC-6)
    seven_pm = five_pm + timedelta(hours=2)  # 19:00 there, 01:00 the next UTC day
    for zone, second_mwh in (("UTC", 5.0), ("America/Chicago", 0.0)):
        local = replace(config, cycle_day_timezone=zone)
        state = replace(initial_state(local), last_tick_at=five_pm - timedelta(hours=1))
        first = apply_tick(local, state, Action.DISCHARGE, 10.0, 90.0, five_pm)
        assert first.energy_mwh == pytest.approx(5.0)
        second = apply_tick(local, first.state, Action.DISCHARGE, 10.0, 90.0, seven_pm)
        assert second.energy_mwh == pytest.approx(second_mwh), zone


def test_cycle_days_follow_daylight_saving_time() -> None:
    chicago = BatteryConfig(cycle_day_timezone="America/Chicago")
    # 2023-03-12 lasts 23 hours there: its midnights are 06:00 and 05:00 UTC the next day.
    day = datetime(2023, 3, 12).toordinal()
    moments = {
        datetime(2023, 3, 12, 5, 59, tzinfo=UTC): day - 1,
        datetime(2023, 3, 12, 6, 0, tzinfo=UTC): day,
        datetime(2023, 3, 13, 4, 59, tzinfo=UTC): day,
        datetime(2023, 3, 13, 5, 0, tzinfo=UTC): day + 1,
    }
    assert {at: chicago.cycle_day(at.timestamp()) for at in moments} == moments
    assert CONFIG.cycle_day(datetime(2023, 3, 12, 23, 59, tzinfo=UTC).timestamp()) == day


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../etc/passwd"])
def test_an_unknown_cycle_day_zone_is_refused_with_its_name(zone: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        BatteryConfig(cycle_day_timezone=zone)
    assert (caught.value.field, caught.value.value) == ("cycle_day_timezone", zone)


def test_steps_and_dispatch_outcomes_are_whole_frozen_values() -> None:
    """The hot path builds these without their __init__ (``slot_setters``): every field set, still frozen."""
    from dataclasses import FrozenInstanceError, fields

    from battery_worker.dispatch import dispatch, new_site_state
    from battery_worker.policies.threshold import ThresholdPolicy
    from battery_worker.ticks import make_tick

    policy = ThresholdPolicy()
    site = new_site_state(CONFIG, policy)
    for price, hour in ((1.0, 0), (5.0, 1), (1.9, 2)):
        outcome = dispatch(make_tick(price, 1.5, 1.0, T0 + timedelta(hours=hour)), site, CONFIG, policy)
        site = outcome.state
        for value in (outcome, outcome.decision, outcome.step, outcome.step.state, outcome.state):
            as_built = {f.name: getattr(value, f.name) for f in fields(value)}
            assert value == type(value)(**as_built)
            assert repr(value) == repr(type(value)(**as_built))
            with pytest.raises(FrozenInstanceError):
                setattr(value, fields(value)[0].name, None)
    assert site.battery.ticks_applied == 3
