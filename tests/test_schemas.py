"""The checked-in JSON Schemas are exactly what the models generate, and events validate against them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import pytest

from battery_worker.cli import schemas
from battery_worker.cli.schemas import DEFAULT_DIR, main, out_of_sync, render
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.processing import InputRecord
from tests.test_hardening import NOW_MS, processor, tick_bytes

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


def fields_shape(node: object, path: str = "") -> list[str]:
    """Every name, type, bound and allowed value of a schema, without its words (descriptions, titles)."""
    if isinstance(node, dict):
        return [
            line
            for key, value in sorted(node.items())
            if key not in ("description", "title")
            for line in fields_shape(value, f"{path}/{key}")
        ]
    if isinstance(node, list):
        return [line for n, value in enumerate(node) for line in fields_shape(value, f"{path}[{n}]")]
    return [f"{path}={node!r}"]


FIELDS_OF_VERSION = {
    "battery_action": (3, "0504327920c3"),
    "battery_status": (3, "b1b9159ea532"),
    "battery_history": (2, "a8cea7b4108a"),
    "battery_state": (2, "e9f5e3a6720c"),
}
"""Each output schema's version and a digest of its fields' shape at that version."""


@pytest.mark.parametrize("name", sorted(FIELDS_OF_VERSION))
def test_a_version_names_one_set_of_fields(name: str) -> None:
    """A review run as the downstream team: ``limited_by`` gained ``cycles`` and the state record
    ``delivered_today_mwh`` within version 1, and the totals of version 2/3 came after those versions were
    written; a consumer cannot tell such events apart by their ``schema_version``. Changing fields,
    their types or allowed values fails here until the version is raised (and delivery.md's table says
    what it adds)."""
    schema = json.loads(render()[f"{name}.schema.json"])
    version = schema["properties"]["schema_version"]["default"]
    digest = hashlib.sha256("\n".join(fields_shape(schema)).encode()).hexdigest()[:12]
    known_version, known_digest = FIELDS_OF_VERSION[name]
    assert (version, digest) == (known_version, known_digest), (
        f"{name}: the fields changed at schema_version {version}; raise the version (events.py), add a "
        f"row to docs/delivery.md's table of versions, then record ({version}, {digest!r}) here"
        if version == known_version
        else f"{name}: version {version} now: record ({version}, {digest!r}) here"
    )


def test_a_newer_version_validates_against_an_older_schema() -> None:
    """The shipped schemas said ``additionalProperties: false``: a consumer validating with them rejected
    the next version's events, though a version only adds fields."""
    home = home_partition("default", 3)
    handled = processor().handle(InputRecord("prices", home, 0, None, tick_bytes(0), NOW_MS))
    validated: list[str] = []
    for output in handled.outputs:
        name = {"battery.status": "battery_status", "battery.actions": "battery_action"}.get(output.topic)
        if name is None:
            continue
        validated.append(name)
        schema = json.loads(render()[f"{name}.schema.json"])
        event = json.loads(output.value or b"")
        jsonschema.Draft202012Validator(schema).validate(event)
        event["schema_version"] += 1
        event["a_field_of_the_next_version"] = {"anything": 1}
        if "emissions" in event:
            event["emissions"]["a_nested_field_too"] = 1
        jsonschema.Draft202012Validator(schema).validate(event)
    assert sorted(validated) == ["battery_action", "battery_status"]
