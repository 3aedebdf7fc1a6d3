"""The seed README's Python API, run as its README writes it (battery.battery_system → battery_worker)."""

from __future__ import annotations

import copy
import json
import pickle
import threading
import warnings
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from battery_worker import BatteryConfig, BatterySystem, InvalidConfig, InvalidInput, InvalidTick
from battery_worker.chemistries import chemistry_fields
from battery_worker.errors import TimestampNotIncreasing
from battery_worker.fleet.model import SiteModel
from battery_worker.policies import make_policy
from battery_worker.seed_api import ImportLimitWarning

T0 = datetime(2025, 6, 21, 12, 0, tzinfo=UTC)


def test_basic_usage_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    battery = BatterySystem(
        capacity_mwh=100.0,
        max_charge_rate_mw=20.0,
        max_discharge_rate_mw=20.0,
        efficiency=0.9,
        initial_charge=50.0,
    )
    status = battery.get_status()
    print(f"Charge Level: {status['charge_level_percent']}%")
    decision = battery.make_decision(energy_price=1.8, hash_price=1.7, token_price=1.0)
    print(f"Action: {decision['action']}")
    assert capsys.readouterr().out == "Charge Level: 50.0%\nAction: hold\n"


def test_make_decision_returns_the_documented_shape() -> None:
    decision = BatterySystem().make_decision(1.8, 1.7, 1.0)
    assert decision["action"] == "hold"
    assert decision["reason"] == "Energy price (1.80) within normal range"
    assert decision["result"]["success"] is True


def test_get_status_has_every_field_the_seed_lists() -> None:
    status = BatterySystem(initial_charge=75.5).get_status()
    assert status["charge_level_percent"] == 75.5
    assert status["available_energy_mwh"] == 75.5
    assert status["capacity_mwh"] == 100.0
    assert status["can_charge"] is True
    assert status["can_discharge"] is True
    for field in (
        "max_charge_rate_mw",
        "max_discharge_rate_mw",
        "efficiency",
        "last_updated",
        "total_energy_stored_mwh",
        "total_energy_used_mwh",
    ):
        assert field in status


def test_charge_and_discharge_examples() -> None:
    battery = BatterySystem(initial_charge=0.0)
    charged = battery.charge(10.0, 2.0)
    assert charged["success"] is True
    assert charged["energy_mwh"] == pytest.approx(20.0)
    assert battery.get_status()["total_energy_stored_mwh"] == pytest.approx(20.0 * 0.9**0.5)
    used = battery.discharge(15.0, 1.0)
    assert used["success"] is True
    assert battery.get_status()["total_energy_used_mwh"] == pytest.approx(15.0)


def test_the_battery_charges_to_exactly_full() -> None:
    battery = BatterySystem(initial_charge=99.0)
    result = battery.charge(20.0, 1.0)
    assert result["success"] is True
    assert battery.get_status()["charge_level_percent"] == 100.0
    assert battery.get_status()["can_charge"] is False
    assert battery.charge(5.0, 1.0)["success"] is False


def test_a_step_that_moves_nothing_says_why() -> None:
    """Before, every one said "battery is full" (or "empty"), of a battery at 50 % too."""
    half = BatterySystem()
    assert half.charge(10.0, 0.0)["error"] == "nothing to do in 0 hours (duration_hours is 0)"
    assert half.discharge(0.0, 1.0)["error"] == "nothing to do at 0 MW (power_mw is 0)"
    stuck = BatterySystem(max_charge_rate_mw=0.0, max_discharge_rate_mw=0.0)
    assert stuck.charge(10.0, 1.0)["error"] == "the battery may not charge (its maximum rate is 0 MW)"
    assert stuck.discharge(10.0, 1.0)["error"] == "the battery may not discharge (its maximum rate is 0 MW)"
    reason = stuck.make_decision(1.0, 1.0, 1.0)["reason"]
    assert reason.endswith("but the battery may not charge (max_charge_rate_mw 0)")
    assert BatterySystem(initial_charge=100.0).charge(10.0, 1.0)["error"] == "battery is full"
    assert BatterySystem(initial_charge=0.0).discharge(10.0, 1.0)["error"] == "battery is empty"
    assert half.get_status()["charge_level_percent"] == 50.0


def test_a_policy_is_named_or_made_and_what_cannot_work_is_refused_when_built() -> None:
    """Before, ``policy="mpc"`` failed with AttributeError, and ``site="x"`` or ``carry_hours=-1`` were
    taken and failed (or not) at the first decision."""
    assert BatterySystem(policy="mpc").policy.name == "mpc"
    own = SiteModel(import_limit_mw=30.0)
    assert BatterySystem(policy="site", site=own).policy.site == own  # type: ignore[attr-defined]
    refused: list[tuple[dict[str, object], str]] = [
        ({"policy": "nope"}, "policy='nope': unknown policy"),
        ({"policy": 3}, "policy='3': must be a policy name"),
        ({"site": "x"}, "site=\"'x'\": must be a SiteModel"),
        ({"carry_hours": float("nan")}, "carry_hours=nan"),
        ({"carry_hours": -1.0}, "carry_hours=-1.0: must be >= 0"),
        ({"carry_hours": "abc"}, "carry_hours='abc'"),
        ({"site": own, "policy": make_policy("site")}, "differs from the policy's own site model"),
    ]
    for kwargs, message in refused:
        with pytest.raises(InvalidConfig) as raised:
            BatterySystem(**kwargs)  # type: ignore[arg-type]
        assert message in str(raised.value), kwargs


def test_a_manual_steps_intensity_that_is_not_finite_is_said_so() -> None:
    """Before: NaN was "Input should be less than or equal to 1000000"."""
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match=r"carbon_intensity=.*: Input should be a finite number"):
            BatterySystem().charge(1.0, 1.0, carbon_intensity=bad)


def test_a_manual_step_given_a_price_counts_its_money_and_without_one_moves_energy_only() -> None:
    """Before, a manual charge could not be paid for: the energy it bought cost nothing, and a later
    discharge's avoided cost made a profit of it."""
    priced = BatterySystem(initial_charge=0.0)
    priced.charge(20.0, 5.0, energy_price=30.0)
    priced.discharge(18.0, 1.0, energy_price=100.0)
    status = priced.get_status()
    assert status["charging_cost"] == pytest.approx(100.0 * 30.0)
    assert status["avoided_cost"] == pytest.approx(18.0 * 100.0)
    assert status["net_value"] == pytest.approx(18.0 * 100.0 - 100.0 * 30.0)
    assert [entry["energy_price"] for entry in priced.history] == [30.0, 100.0]
    unpriced = BatterySystem(initial_charge=0.0)
    unpriced.charge(20.0, 5.0)
    assert unpriced.get_status()["charging_cost"] == 0.0
    with pytest.raises(InvalidInput, match="energy_price=nan"):
        unpriced.discharge(1.0, 1.0, energy_price=float("nan"))


def test_decisions_step_by_the_time_between_ticks_not_a_fixed_hour() -> None:
    battery = BatterySystem(initial_charge=0.0)
    battery.make_decision(1.0, 1.0, 1.0, timestamp=T0)
    after_first = battery.get_status()["total_energy_stored_mwh"]
    battery.make_decision(1.0, 1.0, 1.0, timestamp=T0 + timedelta(minutes=5))
    step = battery.get_status()["total_energy_stored_mwh"] - after_first
    assert step == pytest.approx(20.0 * 5 / 60 * 0.9**0.5)


def test_without_a_timestamp_the_clock_measures_the_step() -> None:
    now = [T0]
    battery = BatterySystem(initial_charge=0.0, clock=lambda: now[0])
    battery.make_decision(1.0, 1.0, 1.0)
    now[0] = T0 + timedelta(minutes=30)
    result = battery.make_decision(1.0, 1.0, 1.0)
    assert result["result"]["duration_hours"] == pytest.approx(0.5)


def test_manual_steps_count_their_emissions_as_decisions_do() -> None:
    now = [T0]
    battery = BatterySystem(initial_charge=0.0, clock=lambda: now[0])
    battery.make_decision(1.0, 1.0, 1.0, timestamp=T0, carbon_intensity=400.0)  # charges 20 MWh
    now[0] = T0 + timedelta(minutes=30)  # within carry_hours (3) of the decision's intensity
    carried = battery.charge(10.0, 1.0)["emissions"]
    assert (carried["carbon_intensity"], carried["intensity_carried"]) == (400.0, True)
    assert carried["bought_kg"] == pytest.approx(10.0 * 400.0)
    given = battery.charge(10.0, 1.0, carbon_intensity=300.0)["emissions"]
    assert (given["carbon_intensity"], given["intensity_carried"]) == (300.0, False)
    assert given["bought_kg"] == pytest.approx(10.0 * 300.0)
    now[0] = T0 + timedelta(minutes=40)
    spared = battery.discharge(5.0, 1.0)["emissions"]  # the 300 of the manual step is the last known now
    assert (spared["avoided_kg"], spared["net_kg"]) == (pytest.approx(1500.0), pytest.approx(-1500.0))
    now[0] = T0 + timedelta(hours=5)  # nothing known for more than carry_hours: unknown, not zero
    unknown = battery.discharge(5.0, 1.0)["emissions"]
    assert unknown["bought_kg"] is None
    assert unknown["carbon_intensity"] is None
    totals = battery.get_status()["emissions"]
    assert totals["total_bought_kg"] == pytest.approx(20.0 * 400.0 + 4000.0 + 3000.0)
    assert totals["total_avoided_kg"] == pytest.approx(1500.0)
    assert (totals["steps"], totals["unknown_steps"], totals["coverage"]) == (5, 1, 0.8)
    # The answer's running totals are the status's, under the same names (it said bought_kg for a total).
    assert {key: unknown[key] for key in totals} == totals
    with pytest.raises(InvalidInput, match="carbon_intensity"):
        battery.charge(1.0, 1.0, carbon_intensity=-1.0)
    assert battery.get_status()["emissions"] == totals  # refused before anything was applied


def test_update_thresholds_changes_decisions_and_refuses_disagreement() -> None:
    battery = BatterySystem()
    battery.update_thresholds(charge_threshold=1.9)
    assert battery.make_decision(1.8, 1.0, 1.0, timestamp=T0)["action"] == "charge"
    with pytest.raises(InvalidConfig):
        battery.update_thresholds(charge_threshold=2.5)
    assert battery.get_status()["charge_threshold"] == 1.9


def test_display_status_prints_the_seed_block(capsys: pytest.CaptureFixture[str]) -> None:
    BatterySystem(initial_charge=75.5).display_status()
    out = capsys.readouterr().out
    assert out.startswith(
        "🔋 Battery System Status:\n   Charge Level: 75.5%\n   Available Energy: 75.50 MWh\n"
    )


def test_save_history_writes_json_atomically(tmp_path: Path) -> None:
    battery = BatterySystem()
    battery.make_decision(1.5, 1.0, 1.0, timestamp=T0)
    battery.make_decision(2.5, 1.0, 1.0, timestamp=T0 + timedelta(hours=1))
    target = battery.save_history(tmp_path / "battery_history.json")
    history = json.loads(target.read_text())
    assert [entry["action"] for entry in history] == ["charge", "discharge"]
    assert history[0]["energy_price"] == 1.5
    assert list(tmp_path.iterdir()) == [target]


def test_bad_input_is_a_value_error_and_changes_nothing() -> None:
    battery = BatterySystem()
    before = battery.get_status()
    with pytest.raises(InvalidTick):
        battery.make_decision(float("nan"), 1.0, 1.0, timestamp=T0)
    with pytest.raises(InvalidInput):
        battery.charge(-1.0, 1.0)
    with pytest.raises(ValueError, match="efficiency"):
        BatterySystem(efficiency=1.5)
    assert battery.get_status() == before
    assert battery.history == []


def test_concurrent_use_from_threads_keeps_the_books_balanced() -> None:
    battery = BatterySystem(initial_charge=50.0)

    def work() -> None:
        for _ in range(200):
            battery.charge(1.0, 0.01)
            battery.discharge(1.0, 0.01)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = battery.get_status()
    assert len(battery.history) == 8 * 200 * 2
    expected = 50.0 + status["total_energy_stored_mwh"] - status["total_energy_used_mwh"] / 0.9**0.5
    assert status["available_energy_mwh"] == pytest.approx(expected, abs=1e-6)


def test_a_battery_type_and_its_wear_are_chosen_by_name_and_given_fields_win() -> None:
    """The seed's 'multiple battery types': the presets existed for the settings and the CLI only."""
    lfp = BatterySystem(battery_type="lfp", capacity_mwh=200.0, cycle_cost_per_mwh=12.0)
    preset = chemistry_fields("lfp")
    assert lfp.config.efficiency == preset["efficiency"]
    assert lfp.config.max_cycles_per_day == preset["max_cycles_per_day"]
    assert (lfp.config.capacity_mwh, lfp.config.cycle_cost_per_mwh) == (200.0, 12.0)
    assert BatterySystem().config == BatteryConfig(), "nothing given: the defaults, as before"
    with pytest.raises(InvalidConfig, match="battery_type"):
        BatterySystem(battery_type="lead-acid")


def test_numbers_of_any_real_type_are_taken_as_a_decisions_prices_are() -> None:
    """np.int64(100) was refused by the constructor ('must be a finite number') and charge()."""
    numpy_types: dict[str, Any] = {"capacity_mwh": np.int64(100), "efficiency": np.float32(0.9)}
    battery = BatterySystem(**numpy_types)
    assert battery.config.capacity_mwh == 100.0
    assert type(battery.config.capacity_mwh) is float
    power: Any = np.float32(5)
    assert battery.charge(power, np.int64(1))["energy_mwh"] == pytest.approx(5.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="power_mw"):
        battery.charge("5", 1)  # type: ignore[arg-type]


def test_a_manual_price_is_bounded_as_a_ticks_is() -> None:
    """Two charges at 1e308 made charging_cost inf and net_value -inf for good."""
    battery = BatterySystem(capacity_mwh=1000)
    with pytest.raises(InvalidInput, match=r"energy_price=1e\+308: beyond"):
        battery.charge(20, 1, energy_price=1e308)
    assert battery.get_status()["charging_cost"] == 0.0


def test_a_battery_can_be_pickled_and_resumed_where_it_stood() -> None:
    """pickle and deepcopy failed on the lock: a library user could not save a battery and resume it."""
    battery = BatterySystem(policy="mpc")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for hour, price in enumerate([30.0, 20.0, 90.0]):
        battery.make_decision(price, 1, 1, timestamp=start + timedelta(hours=hour))
    resumed = pickle.loads(pickle.dumps(battery))
    copied = copy.deepcopy(battery)
    later = start + timedelta(hours=3)
    expected = battery.make_decision(60.0, 1, 1, timestamp=later)
    assert resumed.make_decision(60.0, 1, 1, timestamp=later) == expected
    assert copied.make_decision(60.0, 1, 1, timestamp=later) == expected
    assert resumed.history == battery.history


def test_a_default_step_longer_than_the_longest_step_is_refused() -> None:
    """A 1.5 h gap with default 3 h and max 1 h counted as 3 h of charging."""
    with pytest.raises(InvalidConfig, match="default_step_hours"):
        BatterySystem(default_step_hours=3, max_step_hours=1)


def test_last_updated_is_utc_from_the_start() -> None:
    """With a Tokyo clock the first status said +09:00 (a naive clock: no offset), UTC after any step."""
    tokyo = datetime(2025, 1, 1, 9, tzinfo=timezone(timedelta(hours=9)))
    assert BatterySystem(clock=lambda: tokyo).get_status()["last_updated"] == "2025-01-01T00:00:00+00:00"
    naive = datetime(2025, 1, 1)
    assert BatterySystem(clock=lambda: naive).get_status()["last_updated"] == "2025-01-01T00:00:00+00:00"


def test_the_timestamp_error_and_the_checked_tick_builder_are_public_names() -> None:
    import battery_worker

    assert issubclass(battery_worker.TimestampNotIncreasing, InvalidTick)
    with pytest.raises(InvalidTick, match="energy_price"):  # PriceTick(...) raises pydantic's error
        battery_worker.make_tick(float("nan"), 1.0, 1.0, "2025-01-01T00:00:00Z")


def test_a_plan_that_may_import_beyond_the_sites_limit_is_said() -> None:
    """With a 30 MW charge rate every machine (25 MW) and the charge imported 55 MW against the default
    limit of 45, in every site plan, without a word; the site policy plans within it."""
    with pytest.warns(ImportLimitWarning, match="import 55 MW, above the site's import limit of 45 MW"):
        battery = BatterySystem(max_charge_rate_mw=30.0)
    plan = battery.make_decision(1.0, 1.0, 1.0, timestamp="2025-01-01T00:00:00Z")["site_plan"]
    assert plan["grid_import_mw"] == pytest.approx(50.0), "its 25 MW charge beside 25 MW, reported as it is"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BatterySystem()  # 25 + 20 = 45: at the limit
        BatterySystem(max_charge_rate_mw=30.0, policy="site")


def test_a_step_that_moves_nothing_says_why_when_neither_full_nor_empty() -> None:
    """'battery is full' at 50 % for a charge too small to move energy, and 'battery is empty' at 99 %
    for a discharge the day's cycle cap had used up."""
    assert BatterySystem().charge(5e-324, 0.5)["error"].endswith("moves no energy")
    capped = BatterySystem(max_cycles_per_day=0.01, initial_charge=100.0)
    assert capped.discharge(20.0, 1.0)["limited_by"] == "cycles"
    assert capped.discharge(20.0, 1.0)["error"] == "the day's cycle cap is reached (max_cycles_per_day)"
    assert BatterySystem(initial_charge=100.0).charge(5.0, 1.0)["error"] == "battery is full"


@pytest.mark.parametrize(
    "price", [np.float32(1.0), np.int64(1), Decimal("1.0")], ids=["float32", "int64", "Decimal"]
)
def test_a_decision_priced_in_any_real_type_keeps_a_history_that_saves(price: Any, tmp_path: Path) -> None:
    """The history kept the raw price: save_history failed with 'Object of type float32 is not JSON
    serializable', for good, after one such decision."""
    battery = BatterySystem()
    battery.make_decision(price, price, price, timestamp="2025-01-01T00:00:00Z")
    entry = battery.history[-1]
    assert [type(entry[name]) for name in ("energy_price", "hash_price", "token_price")] == [float] * 3
    saved = json.loads(battery.save_history(tmp_path / "history.json").read_text())
    assert saved[-1]["energy_price"] == 1.0


@pytest.mark.parametrize(
    "argument", ["charge_threshold", "discharge_threshold", "mining_demand_mw", "inference_demand_mw"]
)
def test_a_threshold_argument_beside_another_policy_is_refused(argument: str) -> None:
    """BatterySystem(policy="mpc", charge_threshold=1.5) was built without a word, the 1.5 dropped."""
    value = 2.5 if argument == "discharge_threshold" else 1.5  # a threshold pair the policy takes
    given: dict[str, Any] = {argument: value}
    with pytest.raises(
        InvalidConfig, match=f"^{argument}={value}: is the threshold policy's, not taken with"
    ):
        BatterySystem(policy="mpc", **given)
    with pytest.raises(InvalidConfig, match=argument):
        BatterySystem(policy=make_policy("threshold"), **given)
    assert BatterySystem(**given).policy == BatterySystem(policy="threshold", **given).policy
    assert BatterySystem(**given).policy != BatterySystem().policy, (
        "taken, whether the policy is named or not"
    )


def test_a_discharge_past_the_days_cycle_cap_is_a_hold_and_the_status_says_it_cannot() -> None:
    """A discharge of 0 MW ('success': False, limited by cycles) was the decision once the cap was reached,
    and can_discharge stayed True: the schedulers downstream were told to expect power."""
    battery = BatterySystem(max_cycles_per_day=0.3, initial_charge=100.0)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    decisions = [battery.make_decision(5.0, 1, 1, timestamp=start + timedelta(hours=h)) for h in range(4)]
    assert decisions[0]["action"] == "discharge"
    assert decisions[1]["action"] == "discharge"
    assert decisions[1]["result"]["limited_by"] == "cycles"
    assert decisions[2]["action"] == "hold"
    assert decisions[2]["reason"].endswith("but the day's cycle cap is reached")
    assert decisions[2]["result"]["success"] is True
    assert battery.get_status()["can_discharge"] is False
    next_day = battery.make_decision(5.0, 1, 1, timestamp=start + timedelta(days=1))
    assert next_day["action"] == "discharge"
    assert next_day["result"]["energy_mwh"] > 0
    assert battery.get_status()["can_discharge"] is True


def test_the_status_gives_the_wear_and_the_value_after_it() -> None:
    """net_value is before wear (as in the status event); the wear was reachable only through private
    fields, so the library's figure overstated what the backtest reports."""
    battery = BatterySystem(cycle_cost_per_mwh=20.0, initial_charge=100.0)
    battery.make_decision(5.0, 1, 1, timestamp="2025-01-01T00:00:00Z")
    battery.make_decision(5.0, 1, 1, timestamp="2025-01-01T01:00:00Z")
    status = battery.get_status()
    delivered = status["total_energy_used_mwh"]
    assert delivered > 0
    assert status["wear_cost"] == pytest.approx(20.0 * delivered)
    assert status["net_value_after_wear"] == pytest.approx(status["net_value"] - 20.0 * delivered)


def test_a_copy_taken_while_threads_decide_agrees_with_itself() -> None:
    """A review run as a seed user: deepcopy walked the live log after the lock was let go, and 4 of 4
    copies taken beside 3 deciding threads had more history entries than their state had steps."""
    battery = BatterySystem(capacity_mwh=1e5)
    for _ in range(20_000):  # a long log: deepcopy walks it for a while
        battery.charge(1.0, 0.001)
    stop = threading.Event()

    def decide() -> None:
        while not stop.is_set():
            battery.charge(1.0, 0.001)

    threads = [threading.Thread(target=decide) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(4):
            for copied in (copy.deepcopy(battery), pickle.loads(pickle.dumps(battery))):
                history, status = copied.history, copied.get_status()
                assert len(history) == status["emissions"]["steps"]  # every step counts once
                assert history[-1]["charge_after_mwh"] == pytest.approx(status["available_energy_mwh"])
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_a_long_running_battery_may_keep_only_its_newest_history() -> None:
    """Each entry is about 1 KB and the log kept all of them: a loop deciding every minute grew by 500 MB a
    year, with no way to trim it."""
    battery = BatterySystem(max_history=3)
    for hour in range(5):
        battery.make_decision(1.5, 1.0, 1.0, timestamp=T0 + timedelta(hours=hour))
    assert [entry["timestamp"] for entry in battery.history] == [
        (T0 + timedelta(hours=hour)).isoformat() for hour in (2, 3, 4)
    ]
    assert [e["timestamp"] for e in pickle.loads(pickle.dumps(battery)).history] == [
        e["timestamp"] for e in battery.history
    ]
    with pytest.raises(InvalidConfig, match="max_history"):
        BatterySystem(max_history=-1)
    with pytest.raises(InvalidConfig, match="max_history"):
        BatterySystem(max_history=2.5)  # type: ignore[arg-type]


def test_a_clock_set_back_is_named_when_no_timestamp_was_given() -> None:
    """The error named a timestamp the caller never passed, with nothing saying it was the clock's."""
    times = iter([T0, T0 + timedelta(hours=1), T0 + timedelta(minutes=59)])
    battery = BatterySystem(clock=lambda: next(times))
    battery.make_decision(1.8, 1.0, 1.0)
    with pytest.raises(TimestampNotIncreasing) as caught:
        battery.make_decision(1.8, 1.0, 1.0)
    assert "no timestamp was given, so this is the clock's now (a clock set back" in str(caught.value)
    assert len(battery.history) == 1
    with pytest.raises(TimestampNotIncreasing) as given:
        battery.make_decision(1.8, 1.0, 1.0, timestamp=T0)
    assert "clock" not in str(given.value)


def test_a_manual_step_after_a_decision_ahead_of_the_clock_keeps_time_going_forward() -> None:
    """A seed user's review: a charge() after a decision stamped 2030 set last_updated back to the clock."""
    battery = BatterySystem()
    battery.make_decision(1.8, 1.0, 1.0, timestamp="2030-01-01T00:00:00Z")
    battery.charge(1.0, 1.0)
    assert battery.get_status()["last_updated"] == "2030-01-01T00:00:00+00:00"
    assert [entry["timestamp"] for entry in battery.history] == ["2030-01-01T00:00:00+00:00"] * 2


def test_a_battery_pickled_before_max_history_loads_with_its_whole_history() -> None:
    """Its history was a list: loaded, it is kept whole and goes on growing."""
    battery = BatterySystem()
    battery.make_decision(1.5, 1.0, 1.0, timestamp=T0)
    state = battery.__getstate__()
    state["_history"] = list(state["_history"])  # as pickled before
    old = BatterySystem.__new__(BatterySystem)
    old.__setstate__(state)
    old.make_decision(2.5, 1.0, 1.0, timestamp=T0 + timedelta(hours=1))
    assert [entry["action"] for entry in old.history] == ["charge", "discharge"]


def test_a_library_caller_s_misuse_is_one_of_the_package_s_errors_and_the_names_are_listed() -> None:
    """A library review: a misuse raised TypeError or AttributeError where the package promises errors
    under BatteryWorkerError, and dir(battery_worker) listed none of the public names."""
    import battery_worker
    from battery_worker import BatterySystem, InvalidConfig

    with pytest.raises(InvalidConfig, match="update_thresholds needs the threshold policy"):
        BatterySystem(policy="mpc").update_thresholds(charge_threshold=1.0, discharge_threshold=2.0)
    with pytest.raises(InvalidConfig, match="battery_type=5: must be a name, one of lfp, nmc"):
        BatterySystem(battery_type=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="must be a function that returns the time"):
        BatterySystem(clock="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="returned 'now', not a datetime"):
        BatterySystem(clock=lambda: "now")  # type: ignore[arg-type,return-value]
    assert set(battery_worker.__all__) <= set(dir(battery_worker))
