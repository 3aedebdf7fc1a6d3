"""Carbon-aware dispatch: a carbon price of 0 changes nothing; a positive one trades money for emissions, in
``mpc`` and in the optimum; the backtest reports both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest

from battery_worker.backtest.carbon import carbon_inputs, optimum_figures, run_figures
from battery_worker.backtest.engine import backtest, optimum_for, optimum_inputs, run_policy
from battery_worker.battery import BatteryState
from battery_worker.battery_config import BatteryConfig
from battery_worker.cli.backtest import main
from battery_worker.dispatch import dispatch, new_site_state
from battery_worker.errors import InvalidConfig
from battery_worker.fleet.model import SiteModel
from battery_worker.fleet.optimum import site_optimum
from battery_worker.policies import make_policy
from battery_worker.policies.base import Decision, PolicyMemory
from battery_worker.policies.mpc import MpcPolicy
from battery_worker.policies.site import SitePolicy
from battery_worker.policies.threshold import ThresholdPolicy
from battery_worker.pricefiles import load_ticks
from battery_worker.ticks import PriceTick, make_tick

DATA = Path(__file__).parent / "data"
PRICES = DATA / "ercot_2023-08-01_07.csv"
CARBON = DATA / "ercot_carbon_2023-08-01_07.csv"
CONFIG = BatteryConfig()


@pytest.fixture(scope="module")
def week() -> list[PriceTick]:
    return load_ticks(PRICES, carbon_file=CARBON)


def test_a_zero_carbon_price_keeps_every_mpc_decision(week: list[PriceTick]) -> None:
    plain = run_policy(load_ticks(PRICES), CONFIG, MpcPolicy())
    priced = run_policy(week, CONFIG, MpcPolicy(carbon_price=0.0))
    assert priced.decisions == plain.decisions
    assert np.array_equal(priced.cash_flows, plain.cash_flows)


def test_a_zero_carbon_price_keeps_the_optimum(week: list[PriceTick]) -> None:
    base, zero = optimum_inputs(week, CONFIG), carbon_inputs(week, CONFIG, 0.0)
    assert zero is base or np.array_equal(zero.prices, base.prices)
    optimum = base.solve(CONFIG)
    figures = optimum_figures("optimum", optimum, week, CONFIG)
    assert figures.value == pytest.approx(optimum.value)


def test_a_carbon_price_lowers_emissions_for_some_money(week: list[PriceTick]) -> None:
    price_only = optimum_for(week, CONFIG)
    carbon = carbon_inputs(week, CONFIG, 200.0)
    assert carbon.terminal_price == optimum_inputs(week, CONFIG).terminal_price
    green = carbon.solve(CONFIG)
    before = optimum_figures("price", price_only, week, CONFIG)
    after = optimum_figures("carbon", green, week, CONFIG)
    assert after.value <= before.value + 1e-6
    assert after.emissions.net_kg < before.emissions.net_kg

    plain_run, plain = backtest(week, CONFIG, MpcPolicy(), optimum=price_only)
    green_run, green_summary = backtest(week, CONFIG, MpcPolicy(carbon_price=200.0), optimum=price_only)
    assert green_run.decisions != plain_run.decisions
    assert (
        run_figures(green_run, green_summary).emissions.net_kg
        < run_figures(plain_run, plain).emissions.net_kg
    )
    # the decisions record the real price, not the effective one
    assert [d.energy_price for d in green_run.decisions] == [t.energy_price for t in week]


def test_ticks_without_intensity_plan_on_price_alone() -> None:
    plain = load_ticks(PRICES)
    assert run_policy(plain, CONFIG, MpcPolicy(carbon_price=100.0)).decisions == (
        run_policy(plain, CONFIG, MpcPolicy()).decisions
    )


class SeeingPolicy(ThresholdPolicy):
    """The seed's threshold policy, noting the intensity of every tick it is given to decide on."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float | None] = []

    def decide(
        self, tick: PriceTick, battery: BatteryState, config: BatteryConfig, memory: PolicyMemory | None
    ) -> tuple[Decision, None]:
        self.seen.append(tick.carbon_intensity)
        return super().decide(tick, battery, config, memory)


def test_a_policy_sees_a_missing_intensity_carried_as_the_totals_count_it() -> None:
    t0 = datetime(2023, 8, 1, tzinfo=UTC)
    given = (400.0, None, None, None, None, 300.0, None)  # hours 1-3 within the 3 h carry, hour 4 past it
    ticks = [
        make_tick(50.0, 1.7, 1.0, t0 + timedelta(hours=h), carbon_intensity=intensity)
        for h, intensity in enumerate(given)
    ]
    policy = SeeingPolicy()
    site = new_site_state(CONFIG, policy)
    for tick in ticks:
        site = dispatch(tick, site, CONFIG, policy).state
    assert policy.seen == [400.0, 400.0, 400.0, 400.0, None, 300.0, 300.0]
    # the totals still count the steps as the ticks came: 2 given, 4 carried, 1 unknown
    totals = site.emissions
    assert (totals.steps, totals.known_steps, totals.carried_steps, totals.unknown_steps) == (7, 2, 4, 1)


def test_mpc_prices_a_gap_in_the_intensity_feed_with_the_carried_intensity(week: list[PriceTick]) -> None:
    """Every third hour without its intensity decides as if it had the hour before's (carried within 3 h):
    with a carbon price, a gap is not free energy. Run without the carry, the gaps change decisions."""
    gappy = [t if h % 3 == 0 else t.model_copy(update={"carbon_intensity": None}) for h, t in enumerate(week)]
    filled, last = [], None
    for tick in gappy:
        last = tick.carbon_intensity if tick.carbon_intensity is not None else last
        filled.append(tick.model_copy(update={"carbon_intensity": last}))
    carried = run_policy(gappy, CONFIG, MpcPolicy(carbon_price=200.0))
    assert carried.decisions == run_policy(filled, CONFIG, MpcPolicy(carbon_price=200.0)).decisions
    not_carried = run_policy(gappy, CONFIG, MpcPolicy(carbon_price=200.0), carry_hours=0.0)
    assert not_carried.decisions != carried.decisions


@pytest.mark.parametrize("bad", [-1.0, float("inf"), "x"])
def test_a_bad_carbon_price_is_refused(bad: object) -> None:
    with pytest.raises(InvalidConfig):
        make_policy("mpc", {"carbon_price": bad})


def test_cli_backtest_reports_emissions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(PRICES), "--carbon", str(CARBON), "--carbon-price", "100", "--compare", "--no-png"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("| run | value | net emissions") :].splitlines()
    names = [line.split("|")[1].strip() for line in table[2:] if line.startswith("|")]
    assert names == ["threshold", "adaptive", "mpc", "optimum (price only)", "optimum (carbon 100/t)"]
    assert all("100.0%" in line for line in table[2:7])


def test_cli_backtest_without_carbon_prints_no_emissions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(PRICES), "--no-png"]) == 0
    assert "net emissions" not in capsys.readouterr().out


def test_the_site_policy_takes_a_carbon_price_and_zero_keeps_every_decision(week: list[PriceTick]) -> None:
    plain = run_policy(load_ticks(PRICES), CONFIG, SitePolicy(horizon_hours=12))
    zero = run_policy(week, CONFIG, SitePolicy(horizon_hours=12, carbon_price=0.0))
    assert zero.decisions == plain.decisions
    assert np.array_equal(zero.cash_flows, plain.cash_flows)
    green = run_policy(week, CONFIG, make_policy("site", {"horizon_hours": 12, "carbon_price": 200.0}))
    assert green.decisions != zero.decisions
    assert green.emissions.net_kg < zero.emissions.net_kg
    with pytest.raises(InvalidConfig):
        SitePolicy(carbon_price=-1.0)


@pytest.mark.parametrize(("carry_hours", "coverage"), [(None, 167 / 168), (0.0, 164 / 168)])
def test_cli_backtest_carries_for_the_configs_carry_hours_and_writes_emissions_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], carry_hours: float | None, coverage: float
) -> None:
    lines = CARBON.read_text(encoding="utf-8").splitlines()
    gappy = tmp_path / "carbon.csv"
    gappy.write_text("\n".join(lines[:11] + lines[15:]) + "\n", encoding="utf-8")  # no hours 10-13
    args = [str(PRICES), "--carbon", str(gappy), "--no-png", "--summary", str(tmp_path / "s.json")]
    if carry_hours is not None:
        config = tmp_path / "worker.toml"
        config.write_text(f"[emissions]\ncarry_hours = {carry_hours}\n")
        args += ["--config", str(config)]
    assert main(args) == 0
    capsys.readouterr()
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["emissions_coverage"] == pytest.approx(coverage)
    assert summary["emissions_net_kg"] == pytest.approx(
        summary["emissions_bought_kg"] - summary["emissions_avoided_kg"]
    )
    # The table's rows, the optimum's among them (it was printed and never written).
    rows = {row["run"]: row for row in summary["carbon"]}
    assert sorted(rows) == ["mpc", "optimum (price only)"]
    assert rows["mpc"]["emissions_net_kg"] == pytest.approx(summary["emissions_net_kg"])
    assert rows["mpc"]["emissions_coverage"] == pytest.approx(summary["emissions_coverage"])
    assert rows["optimum (price only)"]["value"] == pytest.approx(summary["optimum_value"])


def test_cli_site_backtest_reports_the_whole_sites_emissions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], week: list[PriceTick]
) -> None:
    """Every machine on and no battery: the site imports its whole fleet (25 MW) every hour."""
    out = tmp_path / "site.json"
    zeros = ["--hash-price", "0", "--token-price", "0"]  # a market file: no machine earns, said so
    assert main([str(PRICES), "--carbon", str(CARBON), "--site", *zeros, "--summary", str(out)]) == 0
    assert "site emissions (t CO₂eq; 100.0 % of ticks with an intensity)" in capsys.readouterr().out
    runs = orjson.loads(out.read_bytes())["runs"]
    fleet_mw = SiteModel().fleet_mw
    expected = sum(fleet_mw * 1.0 * (tick.carbon_intensity or 0.0) for tick in week)
    assert runs["all_on"]["grid_import_kg"] == pytest.approx(expected)
    assert runs["site"]["grid_import_kg"] > 0
    summary = orjson.loads(out.read_bytes())
    optimum_kg = site_optimum(SiteModel(), CONFIG, week).grid_import_kg
    assert optimum_kg is not None
    assert summary["optimum_grid_import_kg"] == pytest.approx(optimum_kg)
    assert 0 < optimum_kg < runs["all_on"]["grid_import_kg"]  # the optimum leaves machines off at some prices
    assert main([str(PRICES), "--site", *zeros, "--summary", str(out)]) == 0
    assert "site emissions" not in capsys.readouterr().out
    summary = orjson.loads(out.read_bytes())
    assert "grid_import_kg" not in summary["runs"]["site"]
    assert "optimum_grid_import_kg" not in summary
