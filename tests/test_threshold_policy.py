"""The seed's threshold policy: 1.7 / 2.0, power from site demand, full/empty gating, no disagreement."""

from __future__ import annotations

from dataclasses import replace

import pytest

from battery_worker.battery import Action, initial_state
from battery_worker.battery_config import BatteryConfig
from battery_worker.errors import InvalidConfig
from battery_worker.policies import ThresholdPolicy, make_policy
from battery_worker.ticks import make_tick

CONFIG = BatteryConfig()
POLICY = ThresholdPolicy()


def decide(price: float, config: BatteryConfig = CONFIG, soc: float | None = None):  # type: ignore[no-untyped-def]
    battery = initial_state(config)
    if soc is not None:
        battery = replace(battery, state_of_charge_mwh=soc)
    decision, _ = POLICY.decide(make_tick(price, 1.1, 0.9, "2025-06-21T12:00:00"), battery, config, None)
    return decision


def test_seed_thresholds_are_1_7_and_2_0() -> None:
    assert (POLICY.charge_below, POLICY.discharge_above) == (1.7, 2.0)
    assert decide(1.69).action is Action.CHARGE
    assert decide(1.7).action is Action.HOLD
    assert decide(2.0).action is Action.HOLD
    assert decide(2.01).action is Action.DISCHARGE


def test_reasons_read_like_the_seed() -> None:
    assert decide(1.8).reason == "Energy price (1.80) within normal range"
    assert decide(1.5).reason == "Energy price (1.50) below charge threshold (1.70)"
    assert decide(2.5).reason == "Energy price (2.50) above discharge threshold (2.00)"


def test_power_is_site_demand_capped_by_the_rate_limit() -> None:
    assert POLICY.site_demand_mw == 25.0
    assert decide(1.0).power_mw == 20.0
    big = BatteryConfig(max_charge_rate_mw=50.0, max_discharge_rate_mw=50.0)
    assert decide(1.0, big).power_mw == 25.0
    assert decide(3.0, big).power_mw == 25.0


def test_decision_carries_the_three_prices() -> None:
    decision = decide(2.5)
    assert (decision.energy_price, decision.hash_price, decision.token_price) == (2.5, 1.1, 0.9)


def test_full_battery_holds_instead_of_charging_and_empty_instead_of_discharging() -> None:
    full = decide(1.0, soc=100.0)
    assert full.action is Action.HOLD
    assert full.reason.endswith("but battery is full")
    empty = decide(3.0, soc=0.0)
    assert empty.action is Action.HOLD
    assert empty.reason.endswith("but battery is empty")
    assert decide(1.0, soc=99.99).action is Action.CHARGE


def test_negative_and_zero_prices_are_valid_and_charge() -> None:
    assert decide(0.0).action is Action.CHARGE
    assert decide(-19.0).action is Action.CHARGE


def test_thresholds_that_disagree_are_refused() -> None:
    with pytest.raises(InvalidConfig, match="charge_below"):
        ThresholdPolicy(charge_below=2.5, discharge_above=2.0)


@pytest.mark.parametrize(
    "name", ["charge_below", "discharge_above", "mining_demand_mw", "inference_demand_mw"]
)
def test_a_bool_is_not_a_threshold_or_a_demand(name: str) -> None:
    with pytest.raises(InvalidConfig, match=f"{name}=True: must be a finite number"):
        ThresholdPolicy(**{name: True})


def test_policies_are_chosen_by_name() -> None:
    policy = make_policy("threshold", {"charge_below": 20.0, "discharge_above": 60.0})
    assert policy.name == "threshold"
    with pytest.raises(InvalidConfig, match="unknown policy"):
        make_policy("nope")
    with pytest.raises(InvalidConfig):
        make_policy("threshold", {"no_such_param": 1})
