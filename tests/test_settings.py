"""Settings: defaults ← TOML ← environment ← flags, per-site overrides, one clear error for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from battery_worker.errors import InvalidConfig
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
        settings.kafka.bootstrap_servers = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"battery": {"efficiency": 1.5}}, "battery"),
        ({"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}}, "kafka"),
        ({"policy": {"name": "nonsense"}}, "policy"),
        ({"sites": {"x": {"battery": {"capacity": 1.0}}}}, "sites.x.battery"),
        ({"worker": {"max_batch_records": 0}}, "worker.max_batch_records"),
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
