"""Settings: defaults ← TOML ← environment ← flags, per-site overrides, one clear error for bad values."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from battery_worker import BatterySystem
from battery_worker.battery_config import BatteryConfig
from battery_worker.chemistries import CHEMISTRIES, PACK_PRICE_PER_MWH
from battery_worker.cli.common import CAP
from battery_worker.errors import InvalidConfig
from battery_worker.policies import make_policy
from battery_worker.policies.threshold import ThresholdPolicy
from battery_worker.settings import load_settings

TOML = """
[kafka]
bootstrap_servers = "from-toml:9092"

[policy]
name = "threshold"
params = { charge_below = 25.0, discharge_above = 100.0 }

[battery]
capacity_mwh = 150.0

[sites.texas-1.battery]
capacity_mwh = 200.0
max_charge_rate_mw = 40.0

[sites.texas-2.policy]
name = "adaptive"
"""


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(TOML)
    return path


def test_toml_sets_values_and_per_site_overrides(toml_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    settings = load_settings(toml_file)
    assert settings.kafka.bootstrap_servers == "from-toml:9092"
    sites = settings.site_directory()
    assert sites.default.config.capacity_mwh == 150.0
    assert isinstance(sites.default.policy, ThresholdPolicy)
    assert sites.default.policy.charge_below == 25.0
    texas1 = sites.setup("texas-1")
    assert (texas1.config.capacity_mwh, texas1.config.max_charge_rate_mw) == (200.0, 40.0)
    assert texas1.config.efficiency == 0.9
    assert sites.setup("texas-2").policy.name == "adaptive"
    assert sites.setup("elsewhere") is sites.default


def test_environment_beats_toml_and_flags_beat_both(toml_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATTERY_WORKER_BATTERY__CAPACITY_MWH", "175")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    settings = load_settings(toml_file)
    assert settings.battery.capacity_mwh == 175.0
    assert settings.kafka.bootstrap_servers == "from-env:9092"
    flagged = load_settings(toml_file, {"kafka": {"bootstrap_servers": "from-flag:9092"}})
    assert flagged.kafka.bootstrap_servers == "from-flag:9092"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.kafka.bootstrap_servers = "x"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"battery": {"efficiency": 1.5}}, "battery"),
        ({"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}}, "kafka"),
        ({"policy": {"name": "nonsense"}}, "policy"),
        ({"sites": {"x": {"battery": {"capacity": 1.0}}}}, "sites.x.battery"),
        ({"worker": {"max_batch_records": 0}}, "worker.max_batch_records"),
        ({"battery_type": "lead-acid"}, "battery_type"),
        ({"sites": {"x": {"battery_type": "nope"}}}, "sites.x.battery_type"),
        ({"battery": {"cycle_cost_per_mwh": -1}}, "battery"),
        ({"sites": {"x": {"battery": {"max_cycles_per_day": 0}}}}, "sites.x.battery.max_cycles_per_day"),
        ({"battery": {"cycle_day_timezone": "Texas/Austin"}}, "battery"),
        ({"sites": {"x": {"battery": {"cycle_day_timezone": "CST"}}}}, "sites.x.battery.cycle_day_timezone"),
        # Named the [policy] table or echoed Python's TypeError before, not the site's own table.
        ({"sites": {"x": {"policy": {"name": "thresold"}}}}, "sites.x.policy"),
        ({"sites": {"x": {"policy": {"name": "threshold", "params": {"a": 1}}}}}, "sites.x.policy.params"),
        ({"sites": {"x": {"battery": {"capacity_mhw": 2.0}}}}, "sites.x.battery.capacity_mhw"),
        # Accepted before, then the group rebalanced for ever (a beat no more often than the session lasts).
        ({"worker": {"session_timeout_ms": 1000}}, "worker"),
        ({"worker": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 6000}}, "worker"),
        # Accepted before: the worker read its own actions back as prices and dead-lettered each one.
        ({"topics": {"prices": "x", "actions": "x"}}, "topics"),
        ({"topics": {"state": "battery.history"}}, "topics"),
        # Accepted before (a review run): each broke something later, or did what it should not.
        ({"topics": {"partitions": 2_000_000_000}}, "topics.partitions"),  # Tansu asked for 192 GB, died
        ({"policy": {"params": {"charge_below": True}}}, "policy.params.charge_below"),  # taken as 1.0
        ({"topics": {"replication_factor": 40_000}}, "topics.replication_factor"),  # "(a bug)" at start
        ({"battery": {"capacity_mwh": 1e308}}, "battery.capacity_mwh"),  # the charge became inf, events null
        ({"battery": {"max_discharge_rate_mw": 1e7}}, "battery.max_discharge_rate_mw"),
        ({"site": {"import_limit_mw": 1e300}}, "site.import_limit_mw"),
        ({"worker": {"poll_timeout_ms": 99_999_999_999}}, "worker.poll_timeout_ms"),  # held a stop 12 s
        ({"worker": {"session_timeout_ms": 99_999_999_999}}, "worker.session_timeout_ms"),
        ({"worker": {"metrics_host": ""}}, "worker.metrics_host"),  # listened on every interface
        ({"monitor": {"metrics_host": " "}}, "monitor.metrics_host"),
        ({"worker": {"group_instance_id": ""}}, "worker.group_instance_id"),
        ({"worker": {"backoff_initial_s": 100, "backoff_max_s": 1}}, "worker.backoff_initial_s"),
        ({"monitor": {"backoff_initial_s": 100, "backoff_max_s": 1}}, "monitor.backoff_initial_s"),
        (
            {"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": ""}},
            "kafka",  # an empty user or password passed the check and failed at connection
        ),
    ],
)
def test_bad_settings_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        load_settings(None, overrides)
    assert caught.value.field.startswith(field)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="no such file"):
        load_settings(tmp_path / "absent.toml")


def test_secrets_are_masked_when_settings_are_logged() -> None:
    settings = load_settings(
        None,
        {
            "kafka": {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "bw",
                "sasl_password": "hunter2-very-secret",
            }
        },
    )
    assert "hunter2-very-secret" not in str(settings.masked())
    assert "hunter2-very-secret" not in repr(settings)


WEAR_TOML = """
battery_type = "lfp"

[battery]
capacity_mwh = 150.0
efficiency = 0.9

[sites.plain]
battery = { capacity_mwh = 50.0 }

[sites.nmc-1]
battery_type = "nmc"
battery = { cycle_cost_per_mwh = 40.0 }
"""


def test_battery_types_fill_what_is_not_set_explicitly(tmp_path: Path) -> None:
    path = tmp_path / "wear.toml"
    path.write_text(WEAR_TOML)
    lfp, nmc = CHEMISTRIES["lfp"], CHEMISTRIES["nmc"]
    sites = load_settings(path).site_directory()
    default = sites.default.config
    # The preset under the battery table: the table's efficiency wins, the rest is LFP's.
    assert (default.capacity_mwh, default.efficiency) == (150.0, 0.9)
    assert (default.min_charge_percent, default.max_charge_percent) == (5.0, 95.0)
    assert default.cycle_cost_per_mwh == lfp.cycle_cost_per_mwh > 0
    assert default.max_cycles_per_day == lfp.max_cycles_per_day
    assert sites.setup("plain").config == replace(default, capacity_mwh=50.0)
    site = sites.setup("nmc-1").config
    assert (site.efficiency, site.min_charge_percent, site.max_charge_percent) == (nmc.efficiency, 10.0, 90.0)
    assert site.max_cycles_per_day == nmc.max_cycles_per_day
    assert site.cycle_cost_per_mwh == 40.0
    assert site.capacity_mwh == 150.0


def test_wear_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATTERY_WORKER_BATTERY__CYCLE_COST_PER_MWH", "12.5")
    monkeypatch.setenv("BATTERY_WORKER_BATTERY__MAX_CYCLES_PER_DAY", "1.5")
    battery = load_settings().battery
    assert (battery.cycle_cost_per_mwh, battery.max_cycles_per_day) == (12.5, 1.5)
    assert BatteryConfig().cycle_cost_per_mwh == 0.0
    assert BatteryConfig().max_cycles_per_day is None


def test_a_presets_wear_cost_is_the_pack_price_over_its_lifetime_delivery() -> None:
    lfp = CHEMISTRIES["lfp"]
    lifetime = lfp.cycle_life * 0.90 * lfp.efficiency**0.5  # MWh delivered per MWh of capacity
    assert lfp.cycle_cost_per_mwh == round(PACK_PRICE_PER_MWH / lifetime)
    assert CHEMISTRIES["nmc"].cycle_cost_per_mwh > lfp.cycle_cost_per_mwh


def test_the_cycle_day_zone_per_site_from_toml_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "zones.toml"
    path.write_text(
        '[battery]\nmax_cycles_per_day = 1.0\ncycle_day_timezone = "America/Chicago"\n\n'
        '[sites.sydney.battery]\ncycle_day_timezone = "Australia/Sydney"\ncapacity_mwh = 80\n'
    )
    monkeypatch.setenv("BATTERY_WORKER_SITES__BERLIN__BATTERY__CYCLE_DAY_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("BATTERY_WORKER_SITES__BERLIN__BATTERY__CAPACITY_MWH", "50")  # still a number
    sites = load_settings(path).site_directory()
    assert sites.default.config.cycle_day_timezone == "America/Chicago"
    sydney = sites.setup("sydney").config
    assert (sydney.cycle_day_timezone, sydney.capacity_mwh, sydney.max_cycles_per_day) == (
        "Australia/Sydney",
        80,
        1,
    )
    berlin = sites.setup("berlin").config
    assert (berlin.cycle_day_timezone, berlin.capacity_mwh) == ("Europe/Berlin", 50.0)
    assert sites.setup("elsewhere").config.cycle_day_timezone == "America/Chicago"
    assert BatteryConfig().cycle_day_timezone == "UTC"


def test_a_variable_of_a_section_that_does_not_exist_is_refused_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BATTERY_WORKER_WORKR__GROUP_ID was ignored without a word (a mistyped field was already refused)."""
    monkeypatch.setenv("BATTERY_WORKER_KAFAK__SASL_PASSWORD", "s3cret")
    with pytest.raises(InvalidConfig, match="no such section") as caught:
        load_settings()
    assert caught.value.field == "BATTERY_WORKER_KAFAK__SASL_PASSWORD"
    assert "s3cret" not in str(caught.value)
    monkeypatch.delenv("BATTERY_WORKER_KAFAK__SASL_PASSWORD")
    monkeypatch.setenv("BATTERY_WORKER_LOG_FORMAT", "json")  # not a section: the CLI's own variables pass
    monkeypatch.setenv("BATTERY_WORKER_WORKER__GROUP_ID", "g")
    assert load_settings().worker.group_id == "g"


def test_sites_whose_plans_may_import_beyond_the_limit_are_named_for_the_worker_to_warn() -> None:
    settings = load_settings(
        None,
        {
            "battery": {"max_charge_rate_mw": 30.0},
            "sites": {
                "small": {"battery": {"max_charge_rate_mw": 10.0}},
                "planned": {"policy": {"name": "site"}},
            },
        },
    )
    warnings = settings.site_directory().warnings()
    assert sorted(warnings) == [""], "the site policy ('planned') keeps to the limit; 'small' fits"
    assert "import 55 MW" in warnings[""][0]


def test_a_window_written_as_fractions_is_named_for_the_worker_to_warn() -> None:
    """A fleet review wrote 0.1 / 0.9 / 0.5 meaning 10 / 90 / 50 %: accepted, the battery ran in a window
    of 0.8 % of its capacity, and nothing was said."""
    fractions = {"min_charge_percent": 0.1, "max_charge_percent": 0.9, "initial_charge_percent": 0.5}
    settings = load_settings(None, {"sites": {"a": {"battery": fractions}, "b": {}}})
    assert settings.site_directory().warnings() == {
        "a": [
            "its state-of-charge window is 0.1–0.9 % of 100 MWh: the *_charge_percent settings are percents "
            "(0–100), not fractions"
        ]
    }


def test_a_window_top_written_as_a_fraction_alone_is_refused_saying_percents() -> None:
    """A docs review set max_charge_percent = 1 (meaning 100 %) alone: the refusal named the default
    initial_charge_percent it never touched, without the hint the warning gives."""
    with pytest.raises(InvalidConfig) as refused:
        load_settings(None, {"battery": {"max_charge_percent": 0.9}})
    assert str(refused.value) == (
        "battery.initial_charge_percent=50.0: must be within min/max charge (0.0-0.9): the *_charge_percent "
        "settings are percents (0–100), not fractions"
    )


def test_a_fleet_s_start_says_each_kind_of_warning_once_and_shows_a_few_sites() -> None:
    """A review run as the operator of 2,000 sites: every start of every worker logged 3,252 WARNING lines,
    two per site, and the settings as one line of 324 KB."""
    fleet = {
        f"site-{n:04d}": {"battery": {"capacity_mwh": 200, "max_charge_rate_mw": 40}} for n in range(2000)
    }
    few = {**{f"site-{n}": {"battery": {"max_charge_rate_mw": 40 + n}} for n in range(2)}, "fits": {}}
    lines = load_settings(None, {"sites": fleet}).site_directory().warning_lines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "site site-0000: every machine (25 MW) and a full-rate charge (40 MW) import 65"
    )
    assert lines[0].endswith(
        "; the same holds, each by its own figures, for 1,999 more sites: "
        + ", ".join(f"site-{n:04d}" for n in range(1, 11))
        + " and 1,989 more"
    )
    assert load_settings(None, {"sites": few}).site_directory().warning_lines() == [
        f"site site-{n}: every machine (25 MW) and a full-rate charge ({40 + n} MW) import {65 + n} MW, "
        "above the site's import limit of 45 MW: under threshold the site plans report such an import as it "
        "is (the site policy and the optimum keep to the limit)"
        for n in range(2)
    ]
    shown = load_settings(None, {"sites": fleet}).masked()["sites"]
    assert list(shown)[:10] == [f"site-{n:04d}" for n in range(10)]
    assert shown["..."] == "and 1,990 more sites (not shown)"
    assert len(str(shown)) < 5000


@pytest.mark.parametrize("variable", ["BATTERY_WORKER_KAFKA__SASL_PASWORD", "BATTERY_WORKER_WORKER__GROUPID"])
def test_a_mistyped_variable_is_named_without_its_value(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """'kafka.sasl_pasword='hunter2': Extra inputs are not permitted' showed a password (a review run)."""
    monkeypatch.setenv(variable, "hunter2")
    with pytest.raises(InvalidConfig, match="no such field") as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BATTERY_WORKER_MONITOR__HEADERS_FROM_ENV", "not json"), ("BATTERY_WORKER_KAFKA", "x")],
)
def test_a_variable_that_is_not_the_json_it_must_be_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """pydantic-settings' SettingsError escaped as 'unexpected SettingsError ... (a bug)', exit 1."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidConfig, match="not JSON") as caught:
        load_settings()
    assert caught.value.value == variable


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[battery]\ncapacity_mwh = true", "battery.capacity_mwh"),
        ("[kafka]\nrequest_timeout_ms = false", "kafka.request_timeout_ms"),
        ("[emissions]\ncarry_hours = true", "emissions.carry_hours"),
        ("[sites.s1.battery]\nmax_charge_rate_mw = false", "sites.s1.battery.max_charge_rate_mw"),
        ("[sites.s1.site]\nimport_limit_mw = true", "sites.s1.site.import_limit_mw"),
        (
            '[site]\nmachines = [{name="x", power_kw=3.0, output=1.0, count=true, paid_by="hash"}]',
            "site.machines.0.count",
        ),
    ],
)
def test_true_or_false_for_a_number_is_refused_not_read_as_one_or_zero(
    tmp_path: Path, toml: str, field: str
) -> None:
    path = tmp_path / "battery-worker.toml"
    path.write_text(toml + "\n")
    with pytest.raises(InvalidConfig, match=r"must be a number, not true or false") as raised:
        load_settings(config_file=path).site_directory()
    assert raised.value.field == field


def test_machines_from_the_environment_refuse_true_for_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    machines = '[{"name": "x", "power_kw": 3.0, "output": 1.0, "count": true, "paid_by": "hash"}]'
    monkeypatch.setenv("BATTERY_WORKER_SITE__MACHINES", machines)
    with pytest.raises(InvalidConfig, match=r"site\.machines\.0\.count=True: must be a number"):
        load_settings()


def test_true_and_false_still_set_the_switches(tmp_path: Path) -> None:
    path = tmp_path / "battery-worker.toml"
    path.write_text("[topics]\ncreate = false\n")
    assert load_settings(config_file=path).topics.create is False


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("BATTERY_WORKER_KAFKA_BOOTSTRAP_SERVERS", "BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS"),
        ("BATTERY_WORKER_WORKER_GROUP_ID", "BATTERY_WORKER_WORKER__GROUP_ID"),
        ("BATTERY_WORKER_BATTERY_CAPACITY_MWH", "BATTERY_WORKER_BATTERY__CAPACITY_MWH"),
        ("BATTERY_WORKER_SITE_IMPORT_LIMIT_MW", "BATTERY_WORKER_SITE__IMPORT_LIMIT_MW"),
    ],
)
def test_a_section_field_given_with_one_underscore_is_refused_with_the_name_meant(
    monkeypatch: pytest.MonkeyPatch, variable: str, meant: str
) -> None:
    """BATTERY_WORKER_KAFKA_BOOTSTRAP_SERVERS was ignored: the worker went to localhost:9092 unwarned."""
    monkeypatch.setenv(variable, "s3cret")
    with pytest.raises(InvalidConfig, match=f"two underscores: {meant}$") as caught:
        load_settings()
    assert caught.value.field == variable
    assert "s3cret" not in str(caught.value)


def test_other_names_under_the_prefix_without_two_underscores_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's own variables, a monitor header's secret, and the top-level fields are not refused."""
    for name, value in {
        "BATTERY_WORKER_LOG_LEVEL": "DEBUG",
        "BATTERY_WORKER_MARA_API_KEY": "k",
        "BATTERY_WORKER_KAFKA_HOME": "/tmp",
        "BATTERY_WORKER_TEST_BROKER": "embedded",
        "BATTERY_WORKER_BATTERY_TYPE": "lfp",
        "BATTERY_WORKER_URL": "https://prices.example",  # a field of one section alone: no mistake
        "BATTERY_WORKER_GROUP_ID": "g",
    }.items():
        monkeypatch.setenv(name, value)
    assert load_settings().battery_type == "lfp"


def test_a_refused_setting_names_the_variable_or_the_file_it_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """'kafka.sasl_pasword: no such field' left the operator to search the environment, the file and the
    flags for where it was given."""
    monkeypatch.setenv("BATTERY_WORKER_KAFKA__SASL_PASWORD", "s3cret")
    with pytest.raises(InvalidConfig) as caught:
        load_settings()
    assert caught.value.problem == (
        "no such field (given by BATTERY_WORKER_KAFKA__SASL_PASWORD; its value is not shown)"
    )
    assert "s3cret" not in str(caught.value)
    monkeypatch.delenv("BATTERY_WORKER_KAFKA__SASL_PASWORD")
    config = tmp_path / "worker.toml"
    config.write_text('[worker]\ngroupid = "g"\n')
    with pytest.raises(InvalidConfig, match=re.escape(f"no such field (in {config}; its value")):
        load_settings(config)
    config.write_text("[worker]\nsession_timeout_ms = '10s'\n")
    with pytest.raises(InvalidConfig, match=re.escape(f"(in {config})")):
        load_settings(config)
    monkeypatch.setenv("BATTERY_WORKER_WORKER__SESSION_TIMEOUT_MS", "ten")
    with pytest.raises(
        InvalidConfig, match=re.escape("(given by BATTERY_WORKER_WORKER__SESSION_TIMEOUT_MS)")
    ):
        load_settings(config)
    flag = {
        "worker": {"session_timeout_ms": "abc"}
    }  # flags win over both: the diff review saw the file named
    with pytest.raises(InvalidConfig, match=re.escape("(given by a flag)")):
        load_settings(config, flag)


def test_a_sites_own_policy_table_changes_the_default_policys_parameters_key_by_key(tmp_path: Path) -> None:
    """A fleet review: ``[policy]`` threshold 25 / 100 and a site's ``discharge_above = 150`` gave that site
    the code's ``charge_below = 1.7``, not the file's 25 (and ``charge_below = 40`` alone was refused as
    above the code's ``discharge_above`` of 2.0). Another policy has its own parameters only."""
    config = tmp_path / "fleet.toml"
    config.write_text(
        "[policy]\nname = 'threshold'\nparams = { charge_below = 25.0, discharge_above = 100.0 }\n"
        "[sites.x.policy]\nparams = { discharge_above = 150.0 }\n"
        "[sites.y.policy]\nparams = { charge_below = 40.0 }\n"
        "[sites.z.policy]\nname = 'adaptive'\n"
    )
    sites = load_settings(config).site_directory()
    x, y = sites.setup("x").policy, sites.setup("y").policy
    assert isinstance(x, ThresholdPolicy)
    assert isinstance(y, ThresholdPolicy)
    assert (x.charge_below, x.discharge_above) == (25.0, 150.0)
    assert (y.charge_below, y.discharge_above) == (40.0, 100.0)
    assert sites.setup("z").policy == make_policy("adaptive", {})


def test_a_refused_setting_of_a_site_names_the_file_or_the_variable_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A fleet review: a site's own mistakes ('sites.a.battery.capacty_mwh=200.0: no such field') named no
    source, where the same mistake in [battery] did, in other words ('Unexpected keyword argument')."""
    config = tmp_path / "fleet.toml"
    config.write_text("[sites.a.battery]\ncapacty_mwh = 200.0\n")
    with pytest.raises(InvalidConfig) as caught:
        load_settings(config)
    assert str(caught.value) == f"sites.a.battery.capacty_mwh=200.0: no such field (in {config})"
    config.write_text("[sites.a.battery]\nefficiency = 90.0\n")
    with pytest.raises(InvalidConfig, match=re.escape(f"efficiency=90.0: must be in (0, 1] (in {config})")):
        load_settings(config)
    config.write_text("[battery]\ncapacty_mwh = 5.0\n")  # said as a site's is (a review of the diff)
    with pytest.raises(InvalidConfig) as caught:
        load_settings(config)
    assert str(caught.value) == f"battery.capacty_mwh=5.0: no such field (in {config})"
    # A parameter of [policy] under a site's own, refused there: [policy] is named, not the site's table.
    config.write_text(
        "[policy]\nparams = { charge_below = 25.0, discharge_above = 100.0 }\n"
        "[sites.west]\npolicy = { name = 'threshold', params = { discharge_above = 20.0 } }\n"
    )
    with pytest.raises(InvalidConfig) as caught:
        load_settings(config)
    assert caught.value.field == "sites.west.policy.params.charge_below"
    assert caught.value.problem.endswith(
        f"(charge_below from [policy], in {config}, under the site's own parameters)"
    )
    monkeypatch.setenv("BATTERY_WORKER_SITES__SITE-07__BATTERY__MAX_CHARGE_RATE", "20")
    with pytest.raises(InvalidConfig) as caught:
        load_settings()
    assert (
        caught.value.problem
        == "no such field (given by BATTERY_WORKER_SITES__SITE-07__BATTERY__MAX_CHARGE_RATE)"
    )
    monkeypatch.delenv("BATTERY_WORKER_SITES__SITE-07__BATTERY__MAX_CHARGE_RATE")
    monkeypatch.setenv("BATTERY_WORKER_SITES", '{"east": {"battery": {"capacity_mwh": -1}}}')  # as JSON
    with pytest.raises(InvalidConfig, match=re.escape("must be > 0 (given by BATTERY_WORKER_SITES)")):
        load_settings()


def test_a_presets_cycle_cap_is_lifted_by_infinity_in_a_file_the_environment_or_the_library(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """None means 'not given', so the preset filled it, inf was 'must be a finite number' and 'none' not a
    number: nothing could lift the LFP preset's two cycles a day."""
    config = tmp_path / "worker.toml"
    config.write_text('battery_type = "lfp"\n[battery]\nmax_cycles_per_day = inf\n')
    assert load_settings(config).battery.max_cycles_per_day is None
    assert load_settings(None, {"battery_type": "lfp"}).battery.max_cycles_per_day == 2.0
    monkeypatch.setenv("BATTERY_WORKER_BATTERY_TYPE", "lfp")
    monkeypatch.setenv("BATTERY_WORKER_BATTERY__MAX_CYCLES_PER_DAY", "inf")
    assert load_settings().battery.max_cycles_per_day is None
    assert BatterySystem(battery_type="lfp", max_cycles_per_day=math.inf).config.max_cycles_per_day is None
    assert CAP("none") == math.inf
    assert CAP("1.5") == 1.5
