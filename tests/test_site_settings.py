"""The site model in the settings: defaults, TOML and environment, per-site overrides, and one clear line for
a fleet the grid connection cannot feed. The ``site`` policy is built with its site's model."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pytest

from battery_worker.battery_config import BatteryConfig
from battery_worker.errors import InvalidConfig
from battery_worker.fleet import DEFAULT_MACHINES, MachineType, SiteModel
from battery_worker.policies import BATTERY_POLICIES, POLICIES, make_policy, plans_machines
from battery_worker.policies.site import SitePolicy
from battery_worker.settings import load_settings
from battery_worker.sites import PolicyChoice, SiteDirectory, SiteOverride
from tests.workerkit import cli

TOML = """
[policy]
name = "site"
params = { horizon_hours = 12 }

[site]
import_limit_mw = 60.0
export_limit_mw = 5.0

[sites.small.site]
import_limit_mw = 30.0
machines = [
  { name = "hydro", power_kw = 5.0, output = 5000, count = 2000, paid_by = "hash", min_running = 100 },
  { name = "asic", power_kw = 15.0, output = 50000, count = 400, paid_by = "token" },
]
"""


def test_the_default_site_is_the_seeds_fleet_under_a_45_mw_limit() -> None:
    settings = load_settings()
    assert settings.site == SiteModel()
    assert settings.site.machines == DEFAULT_MACHINES
    assert settings.site.fleet_mw == pytest.approx(25.0)
    assert settings.site_directory().default.site.import_limit_mw == 45.0


def test_toml_sets_the_site_and_a_site_overrides_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(TOML)
    directory = load_settings(path).site_directory()
    default, small = directory.default, directory.setup("small")
    assert (default.site.import_limit_mw, default.site.export_limit_mw) == (60.0, 5.0)
    assert default.site.machines == DEFAULT_MACHINES
    assert small.site.import_limit_mw == 30.0
    assert small.site.export_limit_mw == 5.0, "fields the site does not set come from [site]"
    assert [m.name for m in small.site.machines] == ["hydro", "asic"]
    assert small.site.machines[0].min_running == 100
    assert isinstance(small.policy, SitePolicy)
    assert isinstance(default.policy, SitePolicy)
    assert small.policy.site == small.site
    assert default.policy.site == default.site
    assert small.policy.horizon_hours == 12
    assert small.plans_machines
    assert default.plans_machines


def test_the_environment_sets_site_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATTERY_WORKER_SITE__IMPORT_LIMIT_MW", "50")
    monkeypatch.setenv("BATTERY_WORKER_SITE__EXPORT_PRICE_FACTOR", "0.5")
    settings = load_settings()
    assert (settings.site.import_limit_mw, settings.site.export_price_factor) == (50.0, 0.5)


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("BATTERY_WORKER_SITE__MACHINES", "site.machines"),
        ("BATTERY_WORKER_SITES__A__SITE__MACHINES", "sites.a.site.machines"),
    ],
)
def test_the_environment_gives_machines_as_json(
    monkeypatch: pytest.MonkeyPatch, variable: str, field: str
) -> None:
    """As docs/site.md says; the JSON text was refused as "Input should be a valid tuple" (a review run)."""
    monkeypatch.setenv(
        variable, '[{"name": "h", "power_kw": 5, "output": 5000, "count": 100, "paid_by": "hash"}]'
    )
    site = load_settings().site_directory().setup("a").site
    assert site.machines == (MachineType("h", power_kw=5.0, output=5000.0, count=100, paid_by="hash"),)
    monkeypatch.setenv(variable, '[{"name": "h",')
    with pytest.raises(InvalidConfig, match="not JSON") as caught:
        load_settings()
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"site": {"import_limit_mw": 20.0}}, "site.machines"),
        ({"site": {"export_price_factor": 1.5}}, "site.export_price_factor"),
        ({"sites": {"x": {"site": {"import_limit_mw": 10.0}}}}, "sites.x.site.machines"),
        ({"sites": {"x": {"site": {"import_mw": 10.0}}}}, "sites.x.site"),
        ({"sites": {"x": {"site": {"machines": [{"name": "a"}]}}}}, "sites.x.site.machines.0"),
        ({"policy": {"name": "site", "params": {"site": {}}}}, "policy.params.site"),
    ],
)
def test_bad_site_settings_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        load_settings(None, overrides)
    assert caught.value.field.startswith(field)


def test_a_fleet_over_the_import_limit_is_refused_at_start_with_one_line() -> None:
    env = {**os.environ, "BATTERY_WORKER_SITE__IMPORT_LIMIT_MW": "20"}
    result = cli("run", "--bootstrap-servers", "127.0.0.1:1", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "battery-worker: error: site.machines='25 MW': "
        "the fleet draws more than the site's import limit of 20 MW"
    )


def test_site_is_registered_and_battery_tables_keep_the_battery_policies() -> None:
    assert set(POLICIES) == {*BATTERY_POLICIES, "site"}
    assert BATTERY_POLICIES == ("threshold", "adaptive", "mpc"), (
        "a policy added to policies/__init__.py: name it here too, and check that its battery table "
        "(sites.py) and docs/dispatch.md's policies say it"
    )
    assert plans_machines("site")
    assert not any(plans_machines(name) for name in BATTERY_POLICIES)
    small = SiteModel(import_limit_mw=10.0, machines=DEFAULT_MACHINES[:1])
    policy = make_policy("site", {}, site=small)
    assert isinstance(policy, SitePolicy)
    assert policy.site == small
    assert make_policy("site") == SitePolicy()
    assert make_policy("threshold", {}, site=small) == make_policy("threshold")


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("site", {"carbon_price": -5}, "policy.params.carbon_price"),
        ("mpc", {"horizon_hours": 0}, "policy.params.horizon_hours"),
    ],
)
def test_a_bad_policy_parameter_is_one_short_line_naming_it(
    name: str, params: dict[str, object], field: str
) -> None:
    """The site policy's printed its whole values, the SiteModel's 646 characters among them, with
    pydantic's 'Value error, ' before the problem (a review run)."""
    with pytest.raises(InvalidConfig) as caught:
        make_policy(name, params)
    assert caught.value.field == field
    assert "SiteModel" not in str(caught.value)
    assert "Value error" not in str(caught.value)
    assert len(str(caught.value)) < 120, str(caught.value)


@pytest.mark.parametrize("machines", [DEFAULT_MACHINES[:1], ()])
def test_a_discharge_the_site_cannot_take_is_said(machines: tuple[MachineType, ...]) -> None:
    """A 3.5 MW fleet (or none) and a 20 MW discharge: 16.5 MW spilled, and the battery's emissions
    counted all 20 as avoided, without a word (a review run)."""
    from battery_worker.seed_api import BatterySystem, SpillWarning

    site = SiteModel(machines=machines)
    with pytest.warns(SpillWarning, match=r"a full-rate discharge \(20 MW\) is more than the site takes"):
        BatterySystem(site=site)
    said = (
        load_settings(None, {"site": {"machines": [asdict(m) for m in machines]}}).site_directory().warnings()
    )
    assert any("is more than the site takes" in line for line in said[""])
    planned = load_settings(
        None, {"site": {"machines": [asdict(m) for m in machines]}, "policy": {"name": "site"}}
    )
    assert planned.site_directory().warnings() == {}, "the site policy plans the battery with the machines"


def test_a_threshold_discharge_capped_by_its_site_demand_is_not_said_to_spill() -> None:
    """A library review: an 80 MW battery under threshold (which discharges no more than its 25 MW site
    demand) with every machine running was warned that 55 MW would be spilled; each discharge gave 25 MW
    to the machines and spilled nothing."""
    import warnings

    from battery_worker.seed_api import BatterySystem, SpillWarning

    site = SiteModel(import_limit_mw=200.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpillWarning)
        system = BatterySystem(max_discharge_rate_mw=80.0, capacity_mwh=200.0, site=site)
    decided = system.make_decision(500.0, 1.0, 1.0, timestamp="2023-08-01T18:00:00Z")
    assert decided["action"] == "discharge"
    assert decided["result"]["power_mw"] == 25.0
    assert decided["site_plan"]["spilled_mw"] == 0.0
    small = SiteModel(machines=DEFAULT_MACHINES[:1])
    with pytest.warns(SpillWarning, match=r"a full-rate discharge \(25 MW\) is more than the site takes"):
        BatterySystem(max_discharge_rate_mw=80.0, capacity_mwh=200.0, site=small)


def test_the_start_describes_each_battery_as_resolved_presets_included() -> None:
    """A fleet operator's review moved a site from NMC to LFP: its new window, wear and cycle cap were in no
    line of the start, which logged the settings as written (``battery_type: lfp``)."""
    overrides = {
        "nmc-1": SiteOverride(battery_type="nmc"),
        **{f"s{n}": SiteOverride(battery={"capacity_mwh": 10.0 + n}) for n in range(25)},
    }
    directory = SiteDirectory(BatteryConfig(), PolicyChoice("threshold", {}), overrides)
    lines = directory.setup_lines(limit=20)
    assert lines[0].startswith("sites without an override: battery 100 MWh, charge 20 MW, discharge 20 MW")
    nmc = next(line for line in lines if line.startswith("site nmc-1: "))
    assert "window 10–90 %, wear 82 per MWh, cycle cap 1 a day (UTC); policy threshold" in nmc
    assert len(lines) == 22
    assert lines[-1] == "and 6 more configured sites (sites.<id>)"


def test_a_presets_value_refused_beside_a_sites_own_and_a_variable_under_a_mistyped_name_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet operator's review: ``max_charge_percent = 8`` under the NMC preset was refused as
    ``min_charge_percent=10.0`` alone, a value they never wrote; and a variable setting a field under a
    mistyped name (``..._BATERY__CAPACITY_MWH``) was refused without the variable's name."""
    config = tmp_path / "worker.toml"
    config.write_text('[sites.a]\nbattery_type = "nmc"\nbattery = { max_charge_percent = 8 }\n')
    with pytest.raises(InvalidConfig) as refused:
        load_settings(config)
    assert str(refused.value) == (
        "sites.a.battery.min_charge_percent=10.0: must not exceed max_charge_percent "
        "(min_charge_percent is the nmc preset's; set it beside the other)"
    )
    monkeypatch.setenv("BATTERY_WORKER_SITES__lfp-1__BATERY__CAPACITY_MWH", "10")
    with pytest.raises(InvalidConfig) as mistyped:
        load_settings(None)
    assert str(mistyped.value).endswith(
        "no such field (given by BATTERY_WORKER_SITES__lfp-1__BATERY__CAPACITY_MWH)"
    )
