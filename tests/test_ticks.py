"""The input contract: what the price monitor sends is accepted, anything else is a typed error."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from battery_worker.errors import InvalidTick
from battery_worker.ticks import PriceTick, make_tick


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
