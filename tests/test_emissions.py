"""Emissions of the battery's steps, missing intensity carried for a bounded time, and carbon files joined
to price files: hand-computed cases."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from battery_worker.backtest.carbon import CarbonFigures, carbon_table
from battery_worker.battery_config import BatteryConfig
from battery_worker.dispatch import dispatch, new_site_state
from battery_worker.emissions import (
    Emissions,
    EmissionsState,
    carried_intensities,
    effective_price,
    effective_prices,
    emissions,
    step_emissions,
)
from battery_worker.errors import InvalidInput
from battery_worker.fleet import SiteModel, plan_step
from battery_worker.kafka.tools.feed import tick_payload
from battery_worker.policies.threshold import ThresholdPolicy
from battery_worker.pricefiles import PriceFileError, load_ticks
from battery_worker.ticks import PriceTick, make_tick

DATA = Path(__file__).parent / "data"
T0 = datetime(2023, 8, 1, tzinfo=UTC)


def hours(n: int) -> list[datetime]:
    return [T0 + timedelta(hours=h) for h in range(n)]


def test_a_step_emits_what_it_buys_and_avoids_what_it_delivers() -> None:
    step = step_emissions(2.0, 0.0, 400.0)
    assert (step.bought_kg, step.avoided_kg, step.net_kg) == (800.0, 0.0, 800.0)
    step = step_emissions(0.0, 1.5, 300.0)
    assert (step.bought_kg, step.avoided_kg, step.net_kg) == (0.0, 450.0, -450.0)
    assert step_emissions(1.0, 0.0, None).net_kg is None


def test_missing_intensity_is_carried_for_carry_hours_then_unknown() -> None:
    given = [100.0, None, None, None, None, 50.0, None]
    expected = [100.0, 100.0, 100.0, 100.0, None, 50.0, 50.0]
    assert carried_intensities(hours(7), given, carry_hours=3.0) == expected
    assert carried_intensities(hours(3), [None, 10.0, None], carry_hours=0.0) == [None, 10.0, None]


def test_totals_skip_unknown_steps_and_report_coverage() -> None:
    # charge 2 MWh at 400, then 2 h missing (carried for 1 h only), then deliver 1.6 MWh at 200
    given = [400.0, None, None, 200.0]
    bought = [2.0, 1.0, 1.0, 0.0]
    delivered = [0.0, 0.0, 0.0, 1.6]
    result = emissions(hours(4), given, bought, delivered, carry_hours=1.0)
    # bought: 2×400 + 1×400 (carried) = 1200; step 3 unknown; avoided 1.6×200 = 320
    assert result.bought_kg == pytest.approx(1200.0)
    assert result.avoided_kg == pytest.approx(320.0)
    assert result.net_kg == pytest.approx(880.0)
    assert result.net_tonnes == pytest.approx(0.88)
    assert (result.steps, result.known_steps, result.carried_steps) == (4, 2, 1)
    assert result.coverage == pytest.approx(0.75)


def test_no_intensity_at_all_is_unknown_not_zero() -> None:
    result = emissions(hours(2), [None, None], [1.0, 0.0], [0.0, 1.0])
    assert result.coverage == 0.0
    assert result.known_steps == result.carried_steps == 0


def test_site_emissions_add_a_known_step_and_nothing_for_an_unknown_one() -> None:
    totals = EmissionsState(bought_kg=10.0, avoided_kg=4.0, steps=2, known_steps=2).add_site(1500.0)
    assert totals == EmissionsState(10.0, 4.0, 2, 2, site_kg=1500.0)
    assert totals.add_site(None) is totals, "an unknown intensity is not zero: nothing is added"
    assert totals.add_site(0.0).site_kg == 1500.0
    # a battery step (known, carried or unknown) keeps the site's total as it is
    _, _, after = totals.step(T0, 400.0, 1.0, 0.0)
    assert (after.site_kg, after.bought_kg) == (1500.0, 410.0)
    _, _, after = after.step(T0 + timedelta(hours=9), None, 1.0, 0.0)
    assert (after.site_kg, after.unknown_steps) == (1500.0, 1)


def test_dispatch_with_the_site_model_plans_the_step_and_counts_the_sites_import() -> None:
    # charge at 10 (400, then carried), deliver at 500 (300, carried for 3 h, then unknown)
    prices = [(10.0, 400.0), (10.0, None), (500.0, 300.0), (500.0, None), (500.0, None), (500.0, None)]
    prices.append((500.0, None))
    config, policy, site = BatteryConfig(), ThresholdPolicy(25.0, 100.0), SiteModel()
    with_site = without = new_site_state(config, policy)
    counted = 0.0
    for hour, (price, intensity) in enumerate(prices):
        tick = make_tick(price, 0.0, 0.0, T0 + timedelta(hours=hour), carbon_intensity=intensity)
        outcome = dispatch(tick, with_site, config, policy, site_model=site, curtail=False)
        alone = dispatch(tick, without, config, policy)
        assert outcome.plan == plan_step(site, tick, outcome.step, curtail=False, intensity=outcome.intensity)
        assert alone.plan is None
        if outcome.plan.grid_import_kg is not None:
            counted += outcome.plan.grid_import_kg
        with_site, without = outcome.state, alone.state
        assert with_site.emissions.site_kg == counted
        # the battery's own figures do not depend on the site
        assert replace(with_site, emissions=replace(with_site.emissions, site_kg=0.0)) == without
    assert outcome.plan is not None, "dispatched with the site model"
    assert outcome.plan.grid_import_kg is None, "the last hour's intensity is unknown"
    # hour 0: the whole fleet (25 MW) and the battery's 20 MW charge imported at 400 kg/MWh
    first = (site.fleet_mw + config.max_charge_rate_mw) * 400.0
    assert counted > first > 0
    assert without.emissions.site_kg == 0.0


def test_mismatched_lengths_and_bad_carry_are_refused() -> None:
    with pytest.raises(InvalidInput):
        emissions(hours(2), [1.0], [0.0, 0.0], [0.0, 0.0])
    with pytest.raises(InvalidInput):
        carried_intensities(hours(1), [1.0], carry_hours=-1.0)


def test_the_effective_price_adds_the_carbon_cost_and_is_the_price_at_zero() -> None:
    assert effective_price(30.0, 400.0, 50.0) == pytest.approx(50.0)  # 30 + 50 $/t × 0.4 t/MWh
    assert effective_price(30.0, None, 50.0) == 30.0
    assert effective_price(0.1 + 0.2, 400.0, 0.0) == 0.1 + 0.2
    assert effective_prices([1.0, 2.0], [1000.0, None], 10.0) == [11.0, 2.0]


def test_a_carbon_file_is_joined_to_prices_by_timestamp() -> None:
    plain = load_ticks(DATA / "ercot_2023-08-01_07.csv")
    ticks = load_ticks(DATA / "ercot_2023-08-01_07.csv", carbon_file=DATA / "ercot_carbon_2023-08-01_07.csv")
    assert [t.energy_price for t in ticks] == [t.energy_price for t in plain]
    assert all(t.carbon_intensity is None for t in plain)
    assert ticks[0].carbon_intensity == 400.09  # the file's first row, 2023-08-01 00:00
    assert all(t.carbon_intensity is not None for t in ticks)


def test_hours_without_a_carbon_row_get_none_and_sub_hourly_ticks_take_their_hour(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text(
        "timestamp,energy_price,hash_price,token_price\n"
        "2023-08-01T00:00:00,1,0,0\n2023-08-01T00:05:00,1,0,0\n2023-08-01T01:00:00,1,0,0\n"
        "2023-08-01T02:00:00,1,0,0\n"
    )
    carbon = tmp_path / "carbon.csv"
    carbon.write_text(
        "Datetime (UTC),Carbon Intensity gCO₂eq/kWh (direct)\n"
        "2023-08-01 00:00:00,250.5\n2023-08-01 01:00:00,\n",
        encoding="utf-8",
    )
    ticks = load_ticks(prices, carbon_file=carbon)
    assert [t.carbon_intensity for t in ticks] == [250.5, 250.5, None, None]


def test_a_finer_carbon_file_gives_each_tick_its_latest_row_and_zone_less_times_are_noted(
    tmp_path: Path,
) -> None:
    """A sustainability analyst's review: 15-minute intensities gave a tick at 00:20 the row of 00:00 (the
    start of its hour), not of 00:15, at a coverage of 100 %; and a file in local standard time without
    offsets matched nearly every tick hours off, a net of -1,253 t read as +2,406 t, unsaid."""
    prices = tmp_path / "prices.csv"
    times = ["00:00", "00:10", "00:15", "00:20", "00:35", "00:50", "01:05"]
    prices.write_text(
        "timestamp,energy_price,hash_price,token_price\n"
        + "".join(f"2023-08-01T{at}:00Z,1,0,0\n" for at in times)
    )
    carbon = tmp_path / "carbon.csv"
    carbon.write_text(
        "timestamp,carbon_intensity\n"
        + "".join(
            f"2023-08-01T{at}:00,{value}\n" for at, value in [("00:00", 100), ("00:15", 200), ("00:30", 300)]
        )
    )
    notes: list[str] = []
    ticks = load_ticks(prices, carbon_file=carbon, notes=notes)
    # 00:50 takes 00:30's row, within its hour; 01:05 none: the row of 00:30 is of the hour before
    assert [t.carbon_intensity for t in ticks] == [100.0, 100.0, 200.0, 200.0, 300.0, 300.0, None]
    assert notes == [
        "carbon.csv: 3 of 3 carbon intensity times have no UTC offset and are read as UTC (a file in local "
        "time needs its offsets, e.g. -06:00)"
    ]
    market = tmp_path / "market.csv"  # the shared files' column says UTC: nothing to note
    market.write_text("Datetime (UTC),Carbon Intensity gCO₂eq/kWh (direct)\n2023-08-01 00:00:00,250.5\n")
    notes.clear()
    load_ticks(prices, carbon_file=market, notes=notes)
    assert notes == []


def test_a_bad_carbon_file_names_the_problem(tmp_path: Path) -> None:
    carbon = tmp_path / "carbon.csv"
    carbon.write_text("timestamp,carbon_intensity\n2023-08-01T00:00:00,-3\n")
    with pytest.raises(PriceFileError, match="line 2"):
        load_ticks(DATA / "ercot_2023-08-01_07.csv", carbon_file=carbon)
    carbon.write_text("when,what\n")
    with pytest.raises(PriceFileError, match="carbon intensity columns"):
        load_ticks(DATA / "ercot_2023-08-01_07.csv", carbon_file=carbon)
    with pytest.raises(PriceFileError, match="no such file"):
        load_ticks(DATA / "ercot_2023-08-01_07.csv", carbon_file=tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("row", "field", "problem"),
    [
        ("2023-08-01 25:00:00,336.2", "Datetime (UTC)", "line 3: not a timestamp"),
        ("2023-08-01 01:00:00,2000000", "carbon_intensity", "line 3: Input should be less than or equal to"),
        ("2023-08-01 01:00:00,nan", "carbon_intensity", "line 3: Input should be a finite number"),
        ("2023-08-01 01:00:00,lots", "carbon_intensity", "line 3: not a number"),
        (
            "2023-08-01 00:00:00,999",
            "Datetime (UTC)",
            "line 3: a second intensity for 2023-08-01T00:00:00+00:00",
        ),
    ],
)
def test_a_carbon_row_a_tick_could_not_carry_is_refused_by_its_field(
    tmp_path: Path, row: str, field: str, problem: str
) -> None:
    """A bad time blamed the intensity beside it; 2e6, which the worker dead-letters, was fed and counted
    (a row of 1e9 made a backtest figure of 14.9 Mt); nan said 'must be >= 0'; a second row for an hour
    replaced the first without a word (a review run)."""
    carbon = tmp_path / "carbon.csv"
    carbon.write_text(
        f"Datetime (UTC),Carbon Intensity gCO₂eq/kWh (direct)\n2023-08-01 00:00:00,400\n{row}\n",
        encoding="utf-8",
    )
    with pytest.raises(PriceFileError, match=re.escape(problem)) as caught:
        load_ticks(DATA / "ercot_2023-08-01_07.csv", carbon_file=carbon)
    assert caught.value.field == field


def test_a_carbon_file_that_gives_no_tick_an_intensity_is_refused(tmp_path: Path) -> None:
    """Another year's file ran, its tonnes printed as +0.0 beside 0.0 % coverage (a review run)."""
    source = (DATA / "ercot_carbon_2023-08-01_07.csv").read_text(encoding="utf-8")
    carbon = tmp_path / "carbon.csv"
    carbon.write_text(source.replace("\n2023-", "\n2022-"), encoding="utf-8")
    with pytest.raises(
        PriceFileError, match="gives no tick an intensity: it covers 2022-08-01 00:00"
    ) as caught:
        load_ticks(DATA / "ercot_2023-08-01_07.csv", carbon_file=carbon)
    assert caught.value.field == "carbon_file"


def test_a_carbon_row_of_nothing_known_is_unknown_not_zero() -> None:
    """The table printed +0.0 t and the summary 0.0 kg where no step had an intensity."""
    empty = CarbonFigures("mpc", 10.0, 1.0, Emissions(0.0, 0.0, 0.0, 24, 0, 0))
    assert empty.to_json()["emissions_net_kg"] is None
    assert "| mpc | 10.00 | - | - | - | 0.0% | 1.0 |" in carbon_table([empty])


def test_a_fed_tick_carries_its_intensity_and_a_tick_without_one_is_the_apis_object() -> None:
    """What ``feed --carbon`` (and the monitor) publish: the worker reads the intensity back unchanged."""
    ticks = load_ticks(DATA / "ercot_2023-08-01_07.csv", carbon_file=DATA / "ercot_carbon_2023-08-01_07.csv")
    fed = PriceTick.model_validate(orjson.loads(tick_payload(ticks[0])))
    assert fed.carbon_intensity == ticks[0].carbon_intensity == 400.09
    plain = orjson.loads(tick_payload(load_ticks(DATA / "ercot_2023-08-01_07.csv")[0]))
    assert sorted(plain) == ["energy_price", "hash_price", "timestamp", "token_price"]
