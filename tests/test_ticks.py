"""The input contract: what the price monitor sends is accepted, anything else is a typed error."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import orjson
import pytest
from pydantic import ValidationError

from battery_worker.errors import InvalidTick
from battery_worker.ticks import WIRE_TIMESTAMP_PATTERN, PriceTick, make_tick, site_id_problem, tick_error


def test_the_mara_api_object_is_a_tick_and_zone_less_means_utc() -> None:
    tick = PriceTick.model_validate_json(
        b'{"energy_price": 1.8, "hash_price": 1.7, "token_price": 1.0, "timestamp": "2025-06-21T12:00:00"}'
    )
    assert tick.timestamp == datetime(2025, 6, 21, 12, tzinfo=UTC)
    assert tick.site_id is None


def test_zoned_timestamps_are_converted_to_utc_and_unknown_fields_ignored() -> None:
    tick = PriceTick.model_validate(
        {
            "energy_price": -5,
            "hash_price": 0,
            "token_price": 0,
            "timestamp": "2023-01-01T02:00:00+02:00",
            "x": 1,
        }
    )
    assert tick.timestamp == datetime(2023, 1, 1, tzinfo=UTC)
    assert tick.energy_price == -5.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("energy_price", float("nan")),
        ("hash_price", float("inf")),
        ("energy_price", 1e300),
        ("token_price", "x"),
    ],
)
def test_bad_prices_are_invalid_ticks_naming_the_field(field: str, value: object) -> None:
    values: dict[str, object] = {"energy_price": 1.0, "hash_price": 1.0, "token_price": 1.0, field: value}
    with pytest.raises(InvalidTick) as caught:
        make_tick(timestamp="2023-01-01T00:00:00", **values)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_site_id_of_200_bytes_is_one_and_of_201_is_not() -> None:
    """The limit at its edge: only 300-byte ids were tried, so a limit off by one passed every test."""
    assert site_id_problem("s" * 200) is None
    assert site_id_problem("é" * 100) is None  # 200 bytes of UTF-8
    assert site_id_problem("s" * 201) == "a site id has at most 200 bytes of UTF-8, not 201"
    assert site_id_problem("s" * 199 + "é") == "a site id has at most 200 bytes of UTF-8, not 201"


def test_a_missing_field_is_named_without_the_whole_message_as_its_value() -> None:
    """A review run as the scheduler team: a dead letter's error read ``hash_price={'timestamp': ...,
    'energy_price': 1.0, 'token_price': 1.0}: Field required``, the whole tick given as the field's value."""
    raw = b'{"timestamp": "2025-06-21T16:35:00", "energy_price": 1.0, "token_price": 1.0}'
    with pytest.raises(ValidationError) as caught:
        PriceTick.model_validate_json(raw)
    problem = tick_error(caught.value)
    assert problem.field == "hash_price"
    assert str(problem) == "hash_price=(absent): Field required"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"1690922800", None),  # a unit guessed: seconds here, milliseconds from 2e10
        (b"1690922800000", None),
        (b'"1690922800"', None),
        (b'"2023-08-01"', None),  # a date alone: midnight by accident
        (b"0", None),
        (b'"2023-08-01 20:46"', datetime(2023, 8, 1, 20, 46, tzinfo=UTC)),
        (b'"2023-08-01T20:46:00.5Z"', datetime(2023, 8, 1, 20, 46, 0, 500000, tzinfo=UTC)),
        (b'"2023-08-01T22:46:00+02:00"', datetime(2023, 8, 1, 20, 46, tzinfo=UTC)),
    ],
)
def test_a_tick_on_the_wire_gives_its_time_as_text_with_a_time_of_day(
    raw: bytes, expected: datetime | None
) -> None:
    """The schema said a date-time string; the worker took numbers, numeric text and a date alone."""
    body = b'{"energy_price": 1.8, "hash_price": 1.7, "token_price": 1.0, "timestamp": ' + raw + b"}"
    if expected is not None:
        assert PriceTick.model_validate_json(body).timestamp == expected
        assert re.match(WIRE_TIMESTAMP_PATTERN, orjson.loads(raw))  # the schema's pattern takes it too
        return
    given = orjson.loads(raw)
    assert not (isinstance(given, str) and re.match(WIRE_TIMESTAMP_PATTERN, given)), "the schema refuses it"
    with pytest.raises(ValidationError) as caught:
        PriceTick.model_validate_json(body)
    assert tick_error(caught.value).field == "timestamp"
    assert "not a number or a date alone" in str(caught.value)


def test_a_tick_built_in_python_may_still_give_epoch_seconds() -> None:
    assert make_tick(1.0, 1.0, 1.0, 1690922800).timestamp == datetime(2023, 8, 1, 20, 46, 40, tzinfo=UTC)


def test_a_bad_timestamp_is_an_invalid_tick() -> None:
    with pytest.raises(InvalidTick) as caught:
        make_tick(1.0, 1.0, 1.0, "yesterday")
    assert caught.value.field == "timestamp"


def test_carbon_intensity_is_optional_and_none_when_omitted() -> None:
    plain = PriceTick.model_validate_json(
        b'{"energy_price": 1.8, "hash_price": 1.7, "token_price": 1.0, "timestamp": "2025-06-21T12:00:00"}'
    )
    assert plain.carbon_intensity is None
    given = PriceTick.model_validate_json(
        b'{"energy_price": 1.8, "hash_price": 0, "token_price": 0, "timestamp": "2025-06-21T12:00:00",'
        b' "carbon_intensity": 412.5}'
    )
    assert given.carbon_intensity == 412.5
    assert make_tick(1, 0, 0, "2023-01-01T00:00:00", carbon_intensity=0).carbon_intensity == 0.0


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "300", True])
def test_a_bad_carbon_intensity_is_an_invalid_tick(value: object) -> None:
    with pytest.raises(InvalidTick) as caught:
        make_tick(1.0, 0.0, 0.0, "2023-01-01T00:00:00", carbon_intensity=value)  # type: ignore[arg-type]
    assert caught.value.field == "carbon_intensity"


_ACCEPTED_STAMPS = [
    "2026-12-05T10:00:00Z",
    "2026-12-05t10:00:00z",
    "2026-12-05 10:00",
    "2026-12-05_10:00:00",
    "2026-12-05T10:00:00.5Z",
    "2026-12-05T10:00:00,5Z",
    "2026-12-05T10:00:00.123456789Z",
    "2026-12-05T10:00:00+02:00",
    "2026-12-05T10:00:00+0200",
    "2026-12-05T10:00:00-05:30",
    "2026-12-05T23:59:59",
]
_REFUSED_STAMPS = [
    "2026-12-05T23:59:60Z",  # a leap second: RFC 3339 has it, Python does not
    "2026-12-05T24:00:00Z",
    "2026-12-05T10:00:99Z",
    "2026-13-05T10:00:00Z",
    "2026-12-32T10:00:00Z",
    "2026-12-05T10:00:00Zjunk",
    "2026-12-05T10:00 garbage",
    "2026-12-05T10:00:00+02",
    "2026-12-05T10:00:00+24:00",
    "2026-12-05",
    "1764928800",
    "0000-06-21T16:15:00Z",
    "2026-12-05T10:00:00+02:00\n",  # $ matched before a final newline (a review of the diff)
]


@pytest.mark.parametrize("stamp", _ACCEPTED_STAMPS + _REFUSED_STAMPS)
def test_the_published_schema_takes_a_timestamp_exactly_when_the_worker_does(stamp: str) -> None:
    """A review run found seven timestamps the schema took and the worker dead-lettered. What a pattern
    cannot tell is left: a day its month has not (``02-30``), a time outside the years 1 to 9999 in UTC."""
    body = {"energy_price": 1.0, "hash_price": 1.0, "token_price": 1.0, "timestamp": stamp}
    assert _schema_takes(body) == _worker_takes(body) == (stamp in _ACCEPTED_STAMPS)


@pytest.mark.parametrize(
    ("site_id", "worker_takes"),
    [("north-1", True), ("  ", False), ("\t", False), ("é" * 100, True), ("x" * 201, False)],
)
def test_the_published_schema_refuses_a_blank_site_id_as_the_worker_does(
    site_id: str, worker_takes: bool
) -> None:
    body = {"energy_price": 1.0, "hash_price": 1.0, "token_price": 1.0, "timestamp": "2026-12-05T10:00:00Z"}
    body["site_id"] = site_id
    assert _worker_takes(body) == worker_takes
    assert _schema_takes(body) == worker_takes


def _schema_takes(body: dict[str, object]) -> bool:
    schema = orjson.loads(
        (Path(__file__).resolve().parent.parent / "schemas" / "price_tick.schema.json").read_bytes()
    )
    return not list(jsonschema.Draft202012Validator(schema).iter_errors(body))


def _worker_takes(body: dict[str, object]) -> bool:
    try:
        PriceTick.model_validate_json(orjson.dumps(body))
    except ValidationError:
        return False
    return True
