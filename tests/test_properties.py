"""Property tests: over random configs and tick streams the physics stays in bounds, balanced, repeatable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from battery_worker.battery import Action, apply_for
from battery_worker.battery_config import BatteryConfig
from battery_worker.dispatch import SiteState, dispatch, new_site_state
from battery_worker.policies import ThresholdPolicy
from battery_worker.ticks import PriceTick, make_tick

T0 = datetime(2023, 1, 1, tzinfo=UTC)
EPS = 1e-9

configs = st.builds(
    lambda capacity, charge, discharge, eta, lo, span, start: BatteryConfig(
        capacity_mwh=capacity,
        max_charge_rate_mw=charge,
        max_discharge_rate_mw=discharge,
        efficiency=eta,
        min_charge_percent=lo,
        max_charge_percent=lo + span,
        initial_charge_percent=lo + span * start,
    ),
    st.floats(0.5, 1000),
    st.floats(0, 200),
    st.floats(0, 200),
    st.floats(0.05, 1.0),
    st.floats(0, 50),
    st.floats(0, 50),
    st.floats(0, 1),
)
prices = st.floats(-100, 5000, allow_nan=False)
gaps = st.integers(1, 6 * 3600)
tick_streams = st.lists(st.tuples(prices, gaps), min_size=1, max_size=60)
policies = st.builds(
    lambda lo, width: ThresholdPolicy(charge_below=lo, discharge_above=lo + width),
    st.floats(-50, 200),
    st.floats(0, 200),
)


def ticks_from(stream: list[tuple[float, int]]) -> list[PriceTick]:
    at, ticks = T0, []
    for price, gap in stream:
        at += timedelta(seconds=gap)
        ticks.append(make_tick(price, 1.0, 1.0, at))
    return ticks


def run(config: BatteryConfig, policy: ThresholdPolicy, ticks: list[PriceTick]) -> list[object]:
    site: SiteState = new_site_state(config, policy)
    trace: list[object] = []
    for tick in ticks:
        outcome = dispatch(tick, site, config, policy)
        site = outcome.state
        trace.append((outcome.decision, outcome.step))
    return trace


@settings(max_examples=200, deadline=None)
@given(configs, policies, tick_streams)
def test_state_of_charge_stays_within_bounds_and_power_within_limits(
    config: BatteryConfig, policy: ThresholdPolicy, stream: list[tuple[float, int]]
) -> None:
    site = new_site_state(config, policy)
    for tick in ticks_from(stream):
        outcome = dispatch(tick, site, config, policy)
        step, site = outcome.step, outcome.state
        soc = site.battery.state_of_charge_mwh
        assert config.min_energy_mwh - EPS <= soc <= config.max_energy_mwh + EPS
        limit = config.max_charge_rate_mw if step.action is Action.CHARGE else config.max_discharge_rate_mw
        assert 0 <= step.power_mw <= limit + EPS
        assert step.energy_mwh <= step.power_mw * step.duration_hours + EPS


@settings(max_examples=200, deadline=None)
@given(configs, policies, tick_streams)
def test_energy_balance_holds(
    config: BatteryConfig, policy: ThresholdPolicy, stream: list[tuple[float, int]]
) -> None:
    site = new_site_state(config, policy)
    for tick in ticks_from(stream):
        site = dispatch(tick, site, config, policy).state
    battery, keep = site.battery, config.one_way_efficiency
    scale = max(1.0, battery.energy_bought_mwh, battery.energy_drawn_mwh)
    assert abs(battery.energy_stored_mwh - battery.energy_bought_mwh * keep) <= EPS * scale
    assert abs(battery.energy_delivered_mwh - battery.energy_drawn_mwh * keep) <= EPS * scale
    expected_soc = config.initial_energy_mwh + battery.energy_stored_mwh - battery.energy_drawn_mwh
    assert abs(battery.state_of_charge_mwh - expected_soc) <= EPS * max(scale, config.capacity_mwh)


@settings(max_examples=100, deadline=None)
@given(configs, policies, tick_streams)
def test_the_same_ticks_always_give_the_same_decisions_and_state(
    config: BatteryConfig, policy: ThresholdPolicy, stream: list[tuple[float, int]]
) -> None:
    ticks = ticks_from(stream)
    assert run(config, policy, ticks) == run(config, policy, list(ticks))


@settings(max_examples=200, deadline=None)
@given(
    configs,
    st.lists(
        st.tuples(st.sampled_from([Action.CHARGE, Action.DISCHARGE]), st.floats(0, 300), st.floats(0, 10)),
        max_size=40,
    ),
)
def test_manual_operations_keep_bounds_and_balance(
    config: BatteryConfig, operations: list[tuple[Action, float, float]]
) -> None:
    state = new_site_state(config, ThresholdPolicy()).battery
    for action, power, hours in operations:
        state = apply_for(config, state, action, power, hours, 10.0).state
        assert config.min_energy_mwh - EPS <= state.state_of_charge_mwh <= config.max_energy_mwh + EPS
    keep = config.one_way_efficiency
    scale = max(1.0, state.energy_bought_mwh, state.energy_drawn_mwh)
    assert abs(state.energy_stored_mwh - state.energy_bought_mwh * keep) <= EPS * scale
    assert abs(state.energy_delivered_mwh - state.energy_drawn_mwh * keep) <= EPS * scale
