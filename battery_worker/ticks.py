"""The price tick: exactly what the price monitor publishes, validated once at the edge.

The MARA price API sends ``{"energy_price", "hash_price", "token_price", "timestamp"}``; timestamps come with
or without a zone and zone-less ones are UTC. ``site_id`` is optional: the Kafka key usually names the site.
Prices may be zero or negative (real markets go there); they may not be NaN or infinite.
``carbon_intensity`` (kgCO₂eq/MWh, which equals gCO₂eq/kWh) is optional: producers that do not know the
grid's intensity omit it, and it is None; when given it is finite and not negative.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from battery_worker.battery import as_utc
from battery_worker.battery_config import PRICE_LIMIT
from battery_worker.errors import InvalidTick

DEFAULT_SITE_ID = "default"
EARLIEST_REAL_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""No market published its prices before this as a live feed or as seconds since 1970: a live tick stamped
earlier is a producer's zero or default time (``0001-01-01``, ``1970-01-01``), which applied made a real
order of a discharge (a producer review); a price file's time written as a number that reads as earlier is
a spreadsheet's day number (45139 for 2023-08-01) read as seconds. A backtest of a price file in ISO text
takes any year."""
MAX_SITE_ID_BYTES = 200
"""A site id is a Kafka message key, so it is measured in bytes of UTF-8, wherever one is taken."""


def site_id_problem(site_id: str) -> str | None:
    """What makes ``site_id`` no site id, or None: the one rule for a tick's key and body, the settings and
    the command line (each kept its own: characters here, bytes there, blank allowed in one)."""
    if not site_id.strip():
        return "a site id is not blank"
    size = len(site_id.encode("utf-8", "surrogatepass"))
    if size > MAX_SITE_ID_BYTES:
        return f"a site id has at most {MAX_SITE_ID_BYTES} bytes of UTF-8, not {size}"
    return None


def _valid_site_id(site_id: str) -> str:
    problem = site_id_problem(site_id)
    if problem is not None:
        raise PydanticCustomError("site_id", problem)  # the problem as it is, no "Value error, " before it
    return site_id


SiteId = Annotated[
    str,
    AfterValidator(_valid_site_id),
    Field(
        description=f"not blank, at most {MAX_SITE_ID_BYTES} bytes of UTF-8",
        # What a schema can say of it: maxLength counts characters, so 150 × "é" (300 bytes) passes it.
        json_schema_extra={"minLength": 1, "maxLength": MAX_SITE_ID_BYTES, "pattern": "\\S"},
    ),
]

WIRE_TIMESTAMP_PATTERN = (
    "^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt _]([01][0-9]|2[0-3]):[0-5][0-9]"
    "(:[0-5][0-9]([.,][0-9]+)?)?([Zz]|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])?(?![\\s\\S])"
)
"""A tick's time on the wire, as the published schema says it: a date and a time of day, ISO 8601 / RFC
3339 text, the zone optional. What the worker takes, but for what a pattern cannot tell: a day its month
has not (``02-30``), and a time that leaves the years 1 to 9999 once in UTC (``0001-01-01T00:00+01:00``).
It only began with a date and a time of day until 2026-12-06, and a review run found leap seconds,
``24:00``, ``+02`` and trailing text taken by the schema that the worker dead-letters. It ends with "no
character follows", not ``$``, which Python's validators let match before a final newline."""


def _text_on_the_wire(value: Any, info: ValidationInfo) -> Any:
    """A tick read from JSON gives its time as text with a date and a time of day. A number's unit is a
    guess (pydantic reads 1690922800 as seconds and 1690922800000 as milliseconds), and a date alone is
    midnight by accident; the published schema says text, so the worker takes what the schema says. A tick
    built in Python (the library, price files, the monitor's parsed answers) may still give epoch seconds.

    :data:`WIRE_TIMESTAMP_PATTERN` checked by index, not by the regular expression (a third of the time, on
    every tick); its digits are pydantic's to check as it parses."""
    text = type(value) is str and len(value) >= 16
    if text and value[4] == "-" and value[10] in "Tt _" and value[13] == ":":
        return value
    if info.mode == "json":
        raise PydanticCustomError(
            "timestamp",
            "a tick's timestamp is a date and a time of day as text (ISO 8601, such as "
            "2025-06-21T16:15:00Z; without a zone it is UTC), not a number or a date alone",
        )
    return value


def _wire_timestamp_schema(schema: dict[str, Any]) -> None:
    schema.pop("format", None)  # RFC 3339's date-time needs a zone; a zone-less time is UTC here
    schema["pattern"] = WIRE_TIMESTAMP_PATTERN
    schema["description"] = (
        "a date and a time of day as text, ISO 8601 (such as 2025-06-21T16:15:00Z or "
        "2025-06-21T16:15:00+02:00); without a zone it is UTC; not a number"
    )


WireDatetime = Annotated[
    datetime,
    BeforeValidator(_text_on_the_wire),
    AfterValidator(as_utc),
    Field(json_schema_extra=_wire_timestamp_schema),
]
"""A tick's time: text on the wire (JSON), any datetime, ISO text or epoch seconds from Python; UTC after."""
Price = Annotated[float, Field(ge=-PRICE_LIMIT, le=PRICE_LIMIT, strict=True)]
"""Strict: a price is a JSON number; true, "1.5" or null are not prices."""
CarbonIntensity = Annotated[float, Field(ge=0.0, le=PRICE_LIMIT, strict=True, allow_inf_nan=False)]
"""kgCO₂eq per MWh bought from the grid; real grids stay under ~1,200, so ±1e6 bounds only absurd values."""


class PriceTick(BaseModel):
    """One price observation. Unknown fields are ignored so the monitor can add fields without breaking us.

    A pydantic model: built directly, a bad field raises pydantic's ``ValidationError`` (a ``ValueError``);
    :func:`make_tick` builds one and raises the project's :class:`InvalidTick` naming the field instead.
    """

    model_config = ConfigDict(frozen=True, allow_inf_nan=False, extra="ignore")

    energy_price: Price
    hash_price: Price
    token_price: Price
    timestamp: WireDatetime
    site_id: SiteId | None = None
    carbon_intensity: CarbonIntensity | None = None


class _Absent:
    """The value of a field the tick does not have. Pydantic gives the whole message as the input of a
    missing field, so a dead letter's error read ``hash_price={'timestamp': ..., ...}: Field required``."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


def tick_error(error: ValidationError) -> InvalidTick:
    """The first problem of a pydantic error as a typed :class:`InvalidTick` naming the field and value."""
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "message"
    value = ABSENT if first["type"] == "missing" else first.get("input")
    return InvalidTick(field, value, first["msg"])


def make_tick(
    energy_price: float,
    hash_price: float,
    token_price: float,
    timestamp: datetime | str | float,
    site_id: str | None = None,
    carbon_intensity: float | None = None,
) -> PriceTick:
    """Build a tick from Python values; :class:`InvalidTick` (a ``ValueError``) when it is malformed."""
    try:
        return PriceTick.model_validate(
            {
                "energy_price": energy_price,
                "hash_price": hash_price,
                "token_price": token_price,
                "timestamp": timestamp,
                "site_id": site_id,
                "carbon_intensity": carbon_intensity,
            }
        )
    except ValidationError as error:
        raise tick_error(error) from None


def seconds_too_far_ahead(tick_time: datetime, published_ms: int, max_ahead_s: float) -> float | None:
    """How far a tick lies after its publishing (its record's Kafka timestamp, ms), when that is more than
    ``max_ahead_s``; else None (so too for a record without a timestamp, -1).

    The worker dead-letters such a tick: applied, it would stand as the site's newest and turn every tick
    published after it, in its time, into a stale one. The monitor's read-back and ``feed`` hold to the same
    rule, so none of them takes for published what the worker refused.
    """
    if published_ms < 0:
        return None
    ahead_s = tick_time.timestamp() - published_ms / 1000
    return ahead_s if ahead_s > max_ahead_s else None
