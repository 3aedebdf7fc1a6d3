"""Emissions where the worker shows them: the metrics, the ``carry_hours`` setting, ``get_status`` and the
``status`` command's column. Events, state and replay: test_event_encoding.py, test_emissions_broker.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client import generate_latest

from battery_worker import BatterySystem
from battery_worker.cli.status import emissions_text, site_emissions_text
from battery_worker.events import BatteryStatus
from battery_worker.kafka.worker import Worker
from battery_worker.ops.metrics import WorkerCollector, build_registry
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.processing import InputRecord
from battery_worker.settings import load_settings
from tests.test_operations import samples
from tests.workerkit import make_settings

T0 = datetime(2023, 8, 1, tzinfo=UTC)
# charge at 10 (400 kg/MWh, then carried), deliver at 500 (300, carried for 3 h, then unknown)
HOURS = [
    (10.0, 400.0),
    (10.0, None),
    (500.0, 300.0),
    (500.0, None),
    (500.0, None),
    (500.0, None),
    (500.0, None),
]


def _record(offset: int, price: float, intensity: float | None) -> InputRecord:
    value: dict[str, object] = {
        "energy_price": price,
        "hash_price": 0,
        "token_price": 0,
        "timestamp": (T0 + timedelta(hours=offset)).isoformat(),
    }
    if intensity is not None:
        value["carbon_intensity"] = intensity
    return InputRecord("prices", home_partition("s", 3), offset, b"s", orjson.dumps(value))


def test_metrics_give_bought_and_avoided_as_counters_and_net_as_a_gauge() -> None:
    worker = Worker(make_settings("127.0.0.1:1", "never", "never"))
    for offset, (price, intensity) in enumerate(HOURS):
        worker.processor.handle(_record(offset, price, intensity))
    found = samples(generate_latest(build_registry(WorkerCollector(worker))).decode())
    totals = worker.processor.sites()["s"].emissions
    bought = found[("battery_worker_emissions_kg_total", (("kind", "bought"), ("site_id", "s")))]
    avoided = found[("battery_worker_emissions_kg_total", (("kind", "avoided"), ("site_id", "s")))]
    site = found[("battery_worker_emissions_kg_total", (("kind", "site"), ("site_id", "s")))]
    assert (bought, avoided, site) == (totals.bought_kg, totals.avoided_kg, totals.site_kg)
    # charging: the default fleet's 25 MW and the battery's 20 MW imported, two hours at 400 kg/MWh
    assert site > (25.0 + 20.0) * 2 * 400.0
    assert bought == pytest.approx(2 * 20.0 * 400.0)  # two hours charging at 20 MW, the second carried
    assert avoided > 0
    assert found[("battery_worker_emissions_net_kg", (("site_id", "s"),))] == pytest.approx(bought - avoided)
    assert found[("battery_worker_emissions_unknown_steps_total", (("site_id", "s"),))] == 1
    assert found[("battery_worker_emissions_coverage_ratio", (("site_id", "s"),))] == pytest.approx(6 / 7)


def test_carry_hours_comes_from_toml_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().emissions.carry_hours == 3.0
    config = tmp_path / "worker.toml"
    config.write_text("[emissions]\ncarry_hours = 1.5\n")
    assert load_settings(config).site_directory().default.carry_hours == 1.5
    monkeypatch.setenv("BATTERY_WORKER_EMISSIONS__CARRY_HOURS", "0")
    assert load_settings(config).site_directory().default.carry_hours == 0.0
    monkeypatch.setenv("BATTERY_WORKER_EMISSIONS__CARRY_HOURS", "-1")
    with pytest.raises(ValueError, match=r"emissions\.carry_hours"):
        load_settings(config)


def test_a_shorter_carry_leaves_more_steps_unknown() -> None:
    worker = Worker(make_settings("127.0.0.1:1", "never", "never", emissions={"carry_hours": 0.0}))
    for offset, (price, intensity) in enumerate(HOURS):
        worker.processor.handle(_record(offset, price, intensity))
    assert worker.processor.sites()["s"].emissions.unknown_steps == 5


def test_get_status_and_the_status_column_give_the_running_totals() -> None:
    api = BatterySystem(charge_threshold=25.0, discharge_threshold=100.0)
    assert api.get_status()["emissions"] == {
        "total_bought_kg": 0.0,
        "total_avoided_kg": 0.0,
        "total_net_kg": 0.0,
        "total_site_kg": 0.0,
        "steps": 0,
        "unknown_steps": 0,
        "coverage": 0.0,
    }
    for offset, (price, intensity) in enumerate(HOURS):
        answer = api.make_decision(
            price, 0, 0, timestamp=T0 + timedelta(hours=offset), carbon_intensity=intensity
        )
    assert answer["emissions"]["net_kg"] is None, "the last hour is unknown, not zero"
    totals = api.get_status()["emissions"]
    assert totals["total_bought_kg"] == pytest.approx(16_000.0)
    assert (totals["steps"], totals["unknown_steps"]) == (7, 1)
    assert emissions_text(_status_with(None)) == "-"
    shown = emissions_text(_status_with(answer["emissions"]))
    assert shown == f"{totals['total_net_kg'] / 1000:+,.2f} (86%)"
    assert totals["total_site_kg"] > totals["total_bought_kg"], "the site imports for its machines too"
    assert site_emissions_text(_status_with(None)) == "-"
    assert site_emissions_text(_status_with(answer["emissions"])) == f"{totals['total_site_kg'] / 1000:,.2f}"
    never_known = {**answer["emissions"], "total_net_kg": 0.0, "total_site_kg": 0.0, "coverage": 0.0}
    assert emissions_text(_status_with(never_known)) == "-", "no step had an intensity: unknown, not 0"
    assert site_emissions_text(_status_with(never_known)) == "-"


def _status_with(emissions: dict[str, object] | None) -> BatteryStatus:
    api = BatterySystem()
    fields = {k: v for k, v in api.get_status().items() if k in BatteryStatus.model_fields}
    return BatteryStatus.model_validate(
        fields
        | {"event_id": "e", "site_id": "s", "last_tick_at": None, "ticks_applied": 7, "ticks_stale": 0}
        | {"emissions": emissions}
    )
