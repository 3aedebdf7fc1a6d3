"""The checked-in JSON Schemas are exactly what the models generate, and events validate against them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from battery_worker.cli import schemas
from battery_worker.cli.schemas import DEFAULT_DIR, main, out_of_sync, render

ROOT = Path(__file__).resolve().parent.parent


def test_checked_in_schemas_match_the_models() -> None:
    assert DEFAULT_DIR == ROOT / "schemas"
    assert out_of_sync(ROOT / "schemas") == [], "run: python -m battery_worker.cli.schemas"


def test_outside_a_checkout_the_directory_must_be_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Installed from a wheel, the default was the directory beside site-packages, written into."""
    monkeypatch.setattr(schemas, "DEFAULT_DIR", None)
    with pytest.raises(SystemExit) as stopped:
        schemas.main(["--check"])
    assert stopped.value.code == 2
    assert "--dir names the schemas' directory" in capsys.readouterr().err


def test_a_changed_schema_is_detected(tmp_path: Path) -> None:
    assert main(["--dir", str(tmp_path)]) == 0
    assert out_of_sync(tmp_path) == []
    victim = next(tmp_path.glob("battery_action.schema.json"))
    victim.write_text(victim.read_text().replace('"power_mw"', '"power_kw"'))
    assert out_of_sync(tmp_path) == ["battery_action.schema.json"]
    assert main(["--dir", str(tmp_path), "--check"]) == 1


def test_the_price_tick_schema_accepts_the_mara_api_object() -> None:
    schema = json.loads(render()["price_tick.schema.json"])
    jsonschema.validate(
        {"energy_price": 1.8, "hash_price": 1.7, "token_price": 1.0, "timestamp": "2025-06-21T12:00:00"},
        schema,
    )


@pytest.mark.parametrize("name", ["battery_action", "battery_status", "battery_history", "battery_state"])
def test_every_output_schema_requires_its_version(name: str) -> None:
    """A review run as a downstream consumer: "every output event has schema_version", but the schemas
    left it optional, so models generated from them could not rely on it."""
    schema = json.loads(render()[f"{name}.schema.json"])
    assert schema["required"][0] == "schema_version"
    event = {field: None for field in schema["required"]}
    del event["schema_version"]
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(event)]
    assert "'schema_version' is a required property" in errors


def test_what_limited_a_step_is_one_of_four_names() -> None:
    """``limited_by`` was a bare string: the values a consumer may see were written down nowhere together."""
    schema = json.loads(render()["battery_action.schema.json"])
    assert schema["$defs"]["Limit"]["enum"] == ["rate", "full", "empty", "cycles"]
    assert "a full or an empty battery" in schema["properties"]["limited_by"]["description"]
