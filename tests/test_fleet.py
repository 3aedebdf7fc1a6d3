"""The site model, the one-step plan and the site optimum, on cases worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from battery_worker.battery_config import BatteryConfig
from battery_worker.errors import InvalidConfig
from battery_worker.fleet import MachineType, SiteModel, SitePlan, plan_site
from battery_worker.fleet.optimum import site_optimum
from battery_worker.settings import load_settings
from battery_worker.ticks import PriceTick, make_tick

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def hydro(count: int, min_running: int = 0) -> MachineType:
    """1 hash per W: one MW earns the hash price per hour."""
    return MachineType(
        "hydro", power_kw=5.0, output=5_000, count=count, paid_by="hash", min_running=min_running
    )


def asic(count: int) -> MachineType:
    """3⅓ tokens per W: one MW earns 3⅓ × the token price per hour."""
    return MachineType("asic", power_kw=15.0, output=50_000, count=count, paid_by="token")


def running(plan: SitePlan) -> dict[str, int]:
    return {run.name: run.running for run in plan.machines}


def test_the_default_site_is_the_seeds_15_mw_of_mining_and_10_of_inference() -> None:
    site = SiteModel()
    mining = sum(m.max_mw for m in site.machines if m.paid_by == "hash")
    inference = sum(m.max_mw for m in site.machines if m.paid_by == "token")
    assert (mining, inference) == pytest.approx((15.0, 10.0))
    assert site.export_limit_mw == 0.0


def test_a_fleet_over_the_import_limit_is_refused_with_one_clear_line() -> None:
    with pytest.raises(InvalidConfig, match="import limit of 20 MW") as caught:
        SiteModel(import_limit_mw=20.0)
    assert "\n" not in str(caught.value)
    assert caught.value.field == "machines"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"count": -1}, "count"),
        ({"power_kw": 0.0}, "power_kw"),
        ({"output": float("nan")}, "output"),
        ({"paid_by": "coins"}, "paid_by"),
        ({"min_running": 11}, "min_running"),
        ({"name": " "}, "name"),
    ],
)
def test_a_bad_machine_type_names_its_field(change: dict[str, object], field: str) -> None:
    """Named as the field alone: the settings put the machine's place before it. 'machines.hydro.' made
    site.machines.0.machines.hydro.min_running (a review run)."""
    fields: dict[str, object] = {
        "name": "hydro",
        "power_kw": 5.0,
        "output": 5_000,
        "count": 10,
        "paid_by": "hash",
    }
    with pytest.raises(InvalidConfig) as caught:
        MachineType(**{**fields, **change})  # type: ignore[arg-type]
    assert caught.value.field == field
    machine = {**fields, **change}
    with pytest.raises(InvalidConfig) as in_settings:
        load_settings(None, {"site": {"machines": [machine]}})
    assert in_settings.value.field == f"site.machines.0.{field}"


def test_bad_site_limits_and_duplicate_names_are_refused() -> None:
    with pytest.raises(InvalidConfig, match="export_price_factor"):
        SiteModel(export_price_factor=1.5)
    with pytest.raises(InvalidConfig, match="export_limit_mw"):
        SiteModel(export_limit_mw=-1.0)
    with pytest.raises(InvalidConfig, match="unique"):
        SiteModel(machines=(hydro(1), hydro(2)))


def test_a_type_is_curtailed_when_energy_costs_more_than_its_revenue_per_mw() -> None:
    site = SiteModel(import_limit_mw=1.0, machines=(hydro(100), asic(10)))
    # Hydro earns 1.0 per MWh, the ASICs 3⅓ × 0.5 = 1.67: at 1.2 only the ASICs run.
    plan = plan_site(site, energy_price=1.2, hash_price=1.0, token_price=0.5, battery_mw=0.0, hours=2.0)
    assert running(plan) == {"hydro": 0, "asic": 10}
    assert plan.inference_revenue == pytest.approx(10 * 50_000 * 0.5 / 1e6 * 2)  # 0.5
    assert plan.energy_cost == pytest.approx(0.15 * 2 * 1.2)  # 0.36
    assert plan.net == pytest.approx(0.5 - 0.36)
    # Revenue equal to the energy price is not worth running: it must exceed it.
    plan = plan_site(site, energy_price=1.0, hash_price=1.0, token_price=0.5, battery_mw=0.0, hours=1.0)
    assert running(plan) == {"hydro": 0, "asic": 10}
    plan = plan_site(site, energy_price=0.9, hash_price=1.0, token_price=0.5, battery_mw=0.0, hours=1.0)
    assert running(plan) == {"hydro": 100, "asic": 10}


def test_minimum_running_counts_run_whatever_the_price() -> None:
    site = SiteModel(import_limit_mw=1.0, machines=(hydro(100, min_running=30),))
    plan = plan_site(site, energy_price=5.0, hash_price=1.0, token_price=0.0, battery_mw=0.0, hours=1.0)
    assert running(plan) == {"hydro": 30}
    assert plan.net == pytest.approx(0.15 * (1.0 - 5.0))


def test_the_power_limit_binds_and_the_best_margin_per_mw_is_served_first() -> None:
    # 0.6 MW of ASICs (2.0 per MWh at token 0.6) and 0.4 MW of hydro (1.5 per MWh), energy 1.0, a 1 MW
    # limit, the battery charging 0.5 MW: 0.5 MW is left for machines.
    site = SiteModel(import_limit_mw=1.0, machines=(hydro(80), asic(40)))
    plan = plan_site(site, energy_price=1.0, hash_price=1.5, token_price=0.6, battery_mw=0.5, hours=1.0)
    assert running(plan) == {"hydro": 1, "asic": 33}  # 33 × 15 kW + 1 × 5 kW = 500 kW
    assert plan.grid_import_mw == pytest.approx(1.0)
    assert plan.battery_value == pytest.approx(-0.5)
    # The order follows the prices: with dear hash the miners go first.
    plan = plan_site(site, energy_price=1.0, hash_price=2.5, token_price=0.6, battery_mw=0.5, hours=1.0)
    assert running(plan) == {"hydro": 80, "asic": 6}  # 400 kW + 6 × 15 kW = 490 kW; a 7th would exceed


def test_a_discharge_the_site_cannot_export_runs_machines_on_free_energy() -> None:
    site = SiteModel(import_limit_mw=1.0, machines=(hydro(100),))
    # Energy at 2.0 is dearer than hydro's 1.0 per MWh, but 0.3 MW from the battery has nowhere else to go.
    plan = plan_site(site, energy_price=2.0, hash_price=1.0, token_price=0.0, battery_mw=-0.3, hours=1.0)
    assert running(plan) == {"hydro": 60}
    assert plan.grid_import_mw == 0.0
    assert plan.grid_export_mw == 0.0
    assert plan.spilled_mw == pytest.approx(0.0)
    assert plan.net == pytest.approx(0.3 * 1.0)  # the battery's energy turned into hashes
    # With export at the full price the battery's energy is worth more sold: the miners stay off.
    exporting = SiteModel(import_limit_mw=1.0, export_limit_mw=1.0, machines=(hydro(100),))
    plan = plan_site(exporting, energy_price=2.0, hash_price=1.0, token_price=0.0, battery_mw=-0.3, hours=1.0)
    assert running(plan) == {"hydro": 0}
    assert plan.grid_export_mw == pytest.approx(0.3)
    assert plan.net == pytest.approx(0.6)


@pytest.mark.parametrize("battery_mw", [-1.7, -0.3, 0.0, 0.4])
def test_net_is_revenue_minus_the_grid_bill(battery_mw: float) -> None:
    site = SiteModel(
        import_limit_mw=2.0, export_limit_mw=0.5, export_price_factor=0.8, machines=(hydro(100),)
    )
    plan = plan_site(
        site, energy_price=1.1, hash_price=1.3, token_price=0.0, battery_mw=battery_mw, hours=0.5
    )
    bill = (plan.grid_import_mw - 0.8 * plan.grid_export_mw) * 0.5 * 1.1
    assert plan.net == pytest.approx(plan.mining_revenue + plan.inference_revenue - bill)
    assert plan.grid_import_mw <= 2.0
    assert plan.grid_export_mw <= 0.5
    assert orjson.loads(orjson.dumps(plan.to_json())) == plan.to_json()


def test_the_battery_is_clamped_to_what_the_site_can_take() -> None:
    site = SiteModel(import_limit_mw=1.0, machines=(hydro(100, min_running=40),))
    assert site.battery_window_mw() == pytest.approx((0.8, 0.5))
    plan = plan_site(site, energy_price=1.0, hash_price=0.0, token_price=0.0, battery_mw=5.0, hours=1.0)
    assert plan.battery_mw == pytest.approx(0.8)
    assert plan.grid_import_mw == pytest.approx(1.0)


def two_hours(energy: tuple[float, float], hash_price: float) -> list[PriceTick]:
    return [make_tick(price, hash_price, 0.0, T0 + timedelta(hours=h)) for h, price in enumerate(energy)]


LOSSLESS_EMPTY = BatteryConfig(
    capacity_mwh=10, max_charge_rate_mw=10, max_discharge_rate_mw=10, efficiency=1.0, initial_charge_percent=0
)
"""A lossless battery starting empty: with ``end_at_start`` it also ends empty."""


def two_carbon_hours(energy: tuple[float, float], intensities: tuple[float | None, ...]) -> list[PriceTick]:
    """Two hours of 1 MW of hydro earning 1.5 per MWh, each with its carbon intensity (None: unknown)."""
    return [
        make_tick(price, 1.5, 0.0, T0 + timedelta(hours=h), carbon_intensity=intensity)
        for h, (price, intensity) in enumerate(zip(energy, intensities, strict=True))
    ]


@pytest.mark.parametrize(
    ("intensities", "expected_kg"),
    [
        ((400.0, 100.0), 2.0 * 400.0),  # hour 1 imports 2 MW (miners and the battery's 1 MWh), hour 2 none
        ((400.0, None), 2.0 * 400.0),  # hour 2's carried from hour 1: it imports nothing anyway
        ((None, 100.0), 0.0),  # hour 1 unknown, left out; hour 2 known and nothing imported: 0, not None
        ((None, None), None),
    ],
)
def test_the_optimums_site_emissions_are_its_grid_import_times_the_intensity(
    intensities: tuple[float | None, float | None], expected_kg: float | None
) -> None:
    site = SiteModel(import_limit_mw=10.0, machines=(hydro(200),))
    optimum = site_optimum(site, LOSSLESS_EMPTY, two_carbon_hours((1.0, 3.0), intensities), end_at_start=True)
    assert optimum.solution.import_mw.tolist() == pytest.approx([2.0, 0.0])
    assert optimum.grid_import_kg == (None if expected_kg is None else pytest.approx(expected_kg))


def test_the_optimum_carries_a_missing_intensity_for_carry_hours_as_the_runs_do() -> None:
    # Energy at 3 then 1: the miners (1.5 per MWh) run in hour 2 only, on 1 MW from the grid.
    site = SiteModel(import_limit_mw=10.0, machines=(hydro(200),))
    ticks = two_carbon_hours((3.0, 1.0), (400.0, None))
    carried = site_optimum(site, LOSSLESS_EMPTY, ticks, end_at_start=True)
    assert carried.solution.import_mw.tolist() == pytest.approx([0.0, 1.0])
    assert carried.grid_import_kg == pytest.approx(400.0)
    not_carried = site_optimum(site, LOSSLESS_EMPTY, ticks, end_at_start=True, carry_hours=0.0)
    assert not_carried.grid_import_kg == 0.0  # hour 1 known and nothing imported; hour 2 unknown


def test_the_optimum_on_two_steps_solved_by_hand() -> None:
    # 1 MW of hydro earning 1.5 per MWh; energy at 1 then 3. A lossless battery starting and ending empty.
    config = BatteryConfig(
        capacity_mwh=10,
        max_charge_rate_mw=10,
        max_discharge_rate_mw=10,
        efficiency=1.0,
        initial_charge_percent=0,
    )
    ticks = two_hours((1.0, 3.0), 1.5)
    site = SiteModel(import_limit_mw=10.0, machines=(hydro(200),))
    # Without export: buy 1 MWh at 1 to run the miners in hour 2 (1.5); hour 1 they earn 0.5 on their own.
    optimum = site_optimum(site, config, ticks, end_at_start=True)
    assert optimum.profit == pytest.approx(0.5 - 1.0 + 1.5)
    assert optimum.solution.machines_mw[0].tolist() == pytest.approx([1.0, 1.0])
    # With 5 MW of export at the full price: also buy 5 MWh at 1 and sell them at 3.
    exporting = SiteModel(import_limit_mw=10.0, export_limit_mw=5.0, machines=(hydro(200),))
    optimum = site_optimum(exporting, config, ticks, end_at_start=True)
    assert optimum.profit == pytest.approx(0.5 - 6.0 + 1.5 + 15.0)
    assert optimum.solution.state_of_charge_mwh.tolist() == pytest.approx([6.0, 0.0])
    # The backtest's end rule: energy left is worth the mean price (2.0), so fill up at 1 and keep 9 MWh.
    optimum = site_optimum(site, config, ticks)
    assert optimum.profit == pytest.approx(0.5 - 10.0 + 1.5 + 9 * 2.0)
