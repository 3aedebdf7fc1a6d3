"""Read price files into ticks: the market CSVs of the shared data, MARA-format CSV and JSON, or any CSV.

Formats recognised without flags:

* market CSV (``Datetime (UTC)``, ``Price (USD/MWh)``): one energy price an hour. These files carry no hash or
  token price; the ticks get the constants ``hash_price`` and ``token_price`` passed here (0.0 by default).
* MARA CSV (``energy_price``, ``hash_price``, ``token_price``, ``timestamp``): the price API's own fields.
* MARA JSON: the API's ``GET /prices`` answer (an array of objects), a single object, or one object a line.

Any other CSV works by naming its columns. Rows are sorted by timestamp (the MARA dumps are newest first).

A carbon file (``carbon_file``) adds the grid's carbon intensity to the ticks, joined by timestamp: the
shared files' ``Datetime (UTC)`` (zone-less means UTC) and ``Carbon Intensity gCO₂eq/kWh (direct)`` are
recognised, as are ``timestamp`` and ``carbon_intensity``. A tick takes the latest row at or before its
own time within its UTC hour (carbon data is hourly or finer, prices may be finer still); a tick with none
keeps ``carbon_intensity`` None: unknown, never zero.
"""

from __future__ import annotations

import bisect
import csv
import io
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from battery_worker.battery import as_utc
from battery_worker.errors import InvalidTick
from battery_worker.ticks import EARLIEST_REAL_TIME, CarbonIntensity, PriceTick, tick_error

MARKET_TIMESTAMP = "Datetime (UTC)"
MARKET_PRICE = "Price (USD/MWh)"
MARA_FIELDS = ("energy_price", "hash_price", "token_price", "timestamp")
CARBON_TIMESTAMPS = (MARKET_TIMESTAMP, "timestamp")
CARBON_COLUMNS = ("Carbon Intensity gCO₂eq/kWh (direct)", "carbon_intensity")


NOT_UTF8 = "is not UTF-8 text (a spreadsheet's export in a Windows code page? save it as UTF-8)"

_INTENSITY: TypeAdapter[float] = TypeAdapter(CarbonIntensity)
"""A tick's rule for its intensity: a file's row the worker would dead-letter is refused here."""


class PriceFileError(InvalidTick):
    """A price file cannot be read: the message names the file, where in it (a CSV line, a JSON object) and
    the problem."""


def load_ticks(
    path: str | Path,
    *,
    timestamp_column: str | None = None,
    price_column: str | None = None,
    hash_price: float | None = None,
    token_price: float | None = None,
    site_id: str | None = None,
    carbon_file: str | Path | None = None,
    notes: list[str] | None = None,
) -> list[PriceTick]:
    """All ticks of a price file, oldest first; with ``carbon_file``, each with its carbon intensity.

    ``hash_price`` and ``token_price`` are for a market file, which has none (0 when not given); a MARA
    file carries its own, and is refused with them rather than have them ignored. ``notes`` gets a line
    for what was read as documented but may not be what the file meant: times without a UTC offset in a
    file whose format does not say they are UTC.
    """
    source = Path(path)
    if source.is_dir():
        raise PriceFileError("file", str(source), "is a directory, not a price file")
    if not source.exists():
        raise PriceFileError("file", str(source), "no such file")
    utc_by_format = True  # the MARA API's times and a market file's "Datetime (UTC)" are UTC by contract
    try:
        raw = source.read_bytes()  # read once: a pipe (/dev/stdin) cannot be read again
        if source.suffix.lower() in {".json", ".jsonl", ".ndjson"} or _starts_as_json(raw):
            _refuse_given_prices(source, hash_price, token_price)
            rows = [(f"object {n}", row) for n, row in enumerate(_json_rows(source, raw), start=1)]
        else:
            text = raw.decode("utf-8-sig")
            rows, utc_by_format = _csv_rows(
                source, text, timestamp_column, price_column, hash_price, token_price
            )
    except UnicodeDecodeError:
        raise PriceFileError("file", str(source), NOT_UTF8) from None
    except csv.Error as error:
        raise PriceFileError("file", str(source), f"is not a readable CSV file ({error})") from None
    except OSError as error:
        raise PriceFileError("file", str(source), f"cannot be read ({error.strerror})") from None
    located = [(where, row, _tick(source, where, row, site_id)) for where, row in rows]
    _refuse_two_prices_for_one_time(source, located)  # in file order: the first of two rows is named first
    if notes is not None and not utc_by_format:
        zone_less = sum(_zone_less(row.get("timestamp")) for _, row, _ in located)
        if zone_less:
            notes.append(
                f"{source.name}: {zone_less:,} of {len(located):,} times have no UTC offset and are read as "
                "UTC (a file in local time needs its offsets, e.g. +01:00)"
            )
    located.sort(key=lambda found: found[2].timestamp)
    ticks = [tick for _, _, tick in located]
    if carbon_file is not None:
        intensity = load_carbon(carbon_file, notes)
        ticks = join_carbon(ticks, intensity)
        if ticks and intensity and all(tick.carbon_intensity is None for tick in ticks):
            # another year, or local times read as UTC: figures of nothing known would hide the mistake
            raise PriceFileError(
                "carbon_file",
                str(carbon_file),
                f"gives no tick an intensity: it covers {_span(min(intensity), max(intensity))}, "
                f"the prices {_span(ticks[0].timestamp, ticks[-1].timestamp)}",
            )
    return ticks


def _refuse_two_prices_for_one_time(
    source: Path, located: list[tuple[str, Mapping[str, Any], PriceTick]]
) -> None:
    """Rows of one site and time must agree: which of two prices a run takes would depend on their order in
    the file (the backtest kept the first, a worker fed both applied the first and called the second stale).
    A row repeated as it was is harmless, and left out later as not after the tick before it. Two sites of
    a MARA file (``site_id``) may share a time."""
    first: dict[tuple[str | None, datetime], tuple[str, PriceTick]] = {}
    for where, row, tick in located:
        key = (tick.site_id, tick.timestamp)
        if key not in first:
            first[key] = (where, tick)
            continue
        where_first, earlier = first[key]
        if _prices(earlier) == _prices(tick):
            continue
        problem = (
            f"{source.name} {where}: a second price for {tick.timestamp.isoformat()} ({where_first} has "
            f"{earlier.energy_price:g}, this one {tick.energy_price:g})"
        )
        if _zone_less(row.get("timestamp")):
            problem += (
                "; its times have no UTC offset, so they are read as UTC: a file in local time repeats "
                "an hour when the clocks go back (write the offsets, e.g. +01:00, or UTC times)"
            )
        raise PriceFileError("timestamp", tick.timestamp.isoformat(), problem)


def _prices(tick: PriceTick) -> tuple[float, float, float, float | None]:
    return (tick.energy_price, tick.hash_price, tick.token_price, tick.carbon_intensity)


def _zone_less(stamp: object) -> bool:
    """A row's time given without a UTC offset: a CSV's cell is parsed already, a JSON object's is text."""
    parsed = _parse_time(stamp) if isinstance(stamp, str) else stamp
    return isinstance(parsed, datetime) and parsed.tzinfo is None


def _span(first: datetime, last: datetime) -> str:
    return f"{as_utc(first):%Y-%m-%d %H:%M} to {as_utc(last):%Y-%m-%d %H:%M} UTC"


def load_carbon(path: str | Path, notes: list[str] | None = None) -> dict[datetime, float]:
    """Carbon intensity (kgCO₂eq/MWh) by UTC timestamp; rows with an empty intensity are left out. Times
    without a UTC offset are read as UTC, noted in ``notes`` unless the column says so (``Datetime (UTC)``):
    a file in local standard time shifted every row by the offset and still matched nearly every tick, so
    a net of −1,253 t came out as +2,406 t without a word (a sustainability analyst's review)."""
    source = Path(path)
    if source.is_dir():
        raise PriceFileError("carbon_file", str(source), "is a directory, not a carbon file")
    if not source.is_file():
        raise PriceFileError("carbon_file", str(source), "no such file")
    try:
        with source.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            ts_col = next((name for name in CARBON_TIMESTAMPS if name in header), None)
            value_col = next((name for name in CARBON_COLUMNS if name in header), None)
            if ts_col is None or value_col is None:
                raise PriceFileError(
                    "columns", header, f"{source.name}: no timestamp and carbon intensity columns"
                )
            rows = [(reader.line_num, row[ts_col], row[value_col]) for row in reader]
    except UnicodeDecodeError:
        raise PriceFileError("carbon_file", str(source), NOT_UTF8) from None
    except (csv.Error, OSError) as error:
        raise PriceFileError("carbon_file", str(source), f"cannot be read ({error})") from None
    intensity: dict[datetime, float] = {}
    first_row: dict[datetime, int] = {}
    zone_less = 0
    for number, stamp, text in rows:
        if text is None or not text.strip():
            continue
        where = f"{source.name} line {number}"
        try:
            written = datetime.fromisoformat((stamp or "").strip())
        except ValueError:
            raise PriceFileError(ts_col, stamp, f"{where}: not a timestamp") from None
        zone_less += written.tzinfo is None
        at = as_utc(written)
        try:
            value = _INTENSITY.validate_python(float(text))
        except ValueError as error:  # float()'s, or the bound a tick's intensity has (ValidationError)
            problem = error.errors()[0]["msg"] if isinstance(error, ValidationError) else "not a number"
            raise PriceFileError("carbon_intensity", text, f"{where}: {problem}") from None
        if at in first_row:
            problem = f"{where}: a second intensity for {at.isoformat()} (line {first_row[at]} has one)"
            raise PriceFileError(ts_col, stamp, problem)
        intensity[at] = value
        first_row[at] = number
    if zone_less and ts_col != MARKET_TIMESTAMP and notes is not None:
        notes.append(
            f"{source.name}: {zone_less:,} of {len(intensity):,} carbon intensity times have no UTC offset "
            "and are read as UTC (a file in local time needs its offsets, e.g. -06:00)"
        )
    return intensity


def join_carbon(ticks: list[PriceTick], intensity: Mapping[datetime, float]) -> list[PriceTick]:
    """Each tick with the intensity of the latest row at or before its time within its UTC hour, else None.

    A row stamped at the tick's time or at its hour's start is what an hourly file gives; a finer file's
    15-minute rows gave a 5-minute tick at 00:20 the row of 00:00, not of 00:15, at a coverage of 100 %
    (a sustainability analyst's review)."""
    stamps = sorted(intensity)
    joined: list[PriceTick] = []
    for tick in ticks:
        at = as_utc(tick.timestamp)
        hour = at.replace(minute=0, second=0, microsecond=0)
        found = bisect.bisect_right(stamps, at) - 1
        value = intensity[stamps[found]] if found >= 0 and stamps[found] >= hour else None
        joined.append(tick if value is None else tick.model_copy(update={"carbon_intensity": value}))
    return joined


def _tick(source: Path, where: str, row: Mapping[str, Any], site_id: str | None) -> PriceTick:
    data = dict(row)
    if site_id is not None:
        data["site_id"] = site_id
    try:
        tick = PriceTick.model_validate(data)
    except ValidationError as error:
        problem = tick_error(error)
        text = f"{source.name} {where}: {problem.problem}"
        if _decimal_comma(problem.value):
            text += " (a decimal comma? write numbers with a decimal point)"
        raise PriceFileError(problem.field, problem.value, text) from None
    stamp = data.get("timestamp")
    if _is_number(stamp) and tick.timestamp < EARLIEST_REAL_TIME:
        problem_text = (
            f"{source.name} {where}: a time written as a number is seconds since 1970-01-01 UTC "
            f"(milliseconds above 2e10), so {stamp} is {tick.timestamp.isoformat()}, before "
            f"{EARLIEST_REAL_TIME.year}: a spreadsheet's day number? write ISO 8601 times "
            "(2023-08-01T00:00:00Z)"
        )
        raise PriceFileError("timestamp", stamp, problem_text)
    return tick


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and _NUMBER.fullmatch(value.strip()) is not None


def _decimal_comma(value: object) -> bool:
    """A price written ``55,0`` (a European export quoted in a comma-separated file)."""
    text = str(value).strip("'\" ")
    whole, comma, fraction = text.lstrip("+-").partition(",")
    return bool(comma) and whole.isdigit() and fraction.isdigit() and len(fraction) != 3


def _starts_as_json(raw: bytes) -> bool:
    """A MARA API answer saved under another name (``prices.txt``) is JSON: no CSV header opens with a
    bracket or a brace."""
    start = raw[:256].lstrip(b"\xef\xbb\xbf \t\r\n")
    return start[:1] in (b"[", b"{")


def _json_rows(source: Path, raw: bytes) -> list[Mapping[str, Any]]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            data = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
        except orjson.JSONDecodeError as error:
            raise PriceFileError("file", source.name, f"not JSON: {error}") from None
    if isinstance(data, dict) and "energy_price" not in data:
        if "prices" not in data:
            found = f"an object of {', '.join(sorted(map(str, data))[:5])}" if data else "an empty object"
            expected = 'a price tick (energy_price, timestamp, ...), an array of them, or them under "prices"'
            raise PriceFileError("file", source.name, f"{found}: expected {expected}")
        data = data["prices"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise PriceFileError("file", source.name, "expected a JSON object or an array of objects")
    return data


def _refuse_given_prices(source: Path, hash_price: float | None, token_price: float | None) -> None:
    for field, given in (("hash_price", hash_price), ("token_price", token_price)):
        if given is not None:
            raise PriceFileError(field, given, f"{source.name} carries its own hash and token prices")


def _csv_rows(
    source: Path,
    text: str,
    timestamp_column: str | None,
    price_column: str | None,
    hash_price: float | None,
    token_price: float | None,
) -> tuple[list[tuple[str, Mapping[str, Any]]], bool]:
    """Each row with where it is: ``line N`` of the file, as an editor counts (the header is line 1); and
    whether the file's format says its times are UTC: the MARA API's (its zone-less times are UTC) or a
    market file's ``Datetime (UTC)``. Another file's zone-less times are noted."""
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle, restkey=_EXTRA)
        header = reader.fieldnames or []
        mara = all(f in header for f in MARA_FIELDS)
        if timestamp_column is None and price_column is None and mara:
            _refuse_given_prices(source, hash_price, token_price)
            rows = _whole_rows(reader, source, MARA_FIELDS)
            return [
                (
                    where,
                    {**{name: _number(row[name]) for name in MARA_FIELDS[:3]}, "timestamp": row["timestamp"]},
                )
                for where, row in rows
            ], True
        for flag, named in (("--timestamp-column", timestamp_column), ("--price-column", price_column)):
            if named is not None and named not in header:
                raise PriceFileError(
                    flag, named, f"{source.name} has no such column (its columns: {', '.join(header)})"
                )
        ts_col = timestamp_column or _first_in(header, MARKET_TIMESTAMP, MARA_FIELDS[3])
        price_col = price_column or _first_in(header, MARKET_PRICE, MARA_FIELDS[0])
        if ts_col is None or price_col is None or ts_col not in header or price_col not in header:
            problem = _columns_problem(header, ts_col is None, price_col is None)
            raise PriceFileError("columns", header, f"{source.name}: {problem}")
        rows = _whole_rows(reader, source, (ts_col, price_col))
        utc = ts_col == MARKET_TIMESTAMP or (ts_col == MARA_FIELDS[3] and mara)
        return [
            (
                where,
                {
                    "energy_price": _number(row[price_col]),
                    "hash_price": 0.0 if hash_price is None else hash_price,
                    "token_price": 0.0 if token_price is None else token_price,
                    "timestamp": _parse_time(row[ts_col]),
                },
            )
            for where, row in rows
        ], utc


_EXTRA = "\x00extra"
"""Where ``csv.DictReader`` puts the fields of a row beyond the header's."""


def _whole_rows(
    reader: csv.DictReader[str], source: Path, needed: Sequence[str]
) -> list[tuple[str, dict[str, Any]]]:
    """Each row with its line, refused when it has values beyond the header's columns, or lacks a column
    the file is read by: a short row was blamed on a flag nobody gave (``--token-price=None``), and a row
    with a value too many was taken. Empty fields past the end (a spreadsheet's trailing comma) pass, and
    so does a row short of a column nothing reads."""
    header = list(reader.fieldnames or [])
    named = ", ".join(header)
    rows = []
    for row in reader:
        where = f"line {reader.line_num}"
        extra = row.get(_EXTRA)
        if isinstance(extra, list) and any(str(value).strip() for value in extra):
            problem = (
                f"{where} has {len(header) + len(extra)} fields where the header has {len(header)} ({named})"
            )
            raise PriceFileError("file", source.name, problem)
        missing = [column for column in needed if row.get(column) is None]
        if missing:
            problem = (
                f"{where} has no {', '.join(missing)}: fewer fields than the header's {len(header)} ({named})"
            )
            raise PriceFileError("file", source.name, problem)
        rows.append((where, row))
    return rows


def _first_in(header: Sequence[str], *names: str) -> str | None:
    """The first of ``names`` the header has: a market file's own column, else the MARA API's name for it
    (a ``timestamp,energy_price`` file was not recognised)."""
    return next((name for name in names if name in header), None)


def _columns_problem(header: Sequence[str], no_time: bool, no_price: bool) -> str:
    """Why the columns are not found: a file not separated by commas says so, where flags cannot help;
    else the column not found and the names it is looked for under (``timestamp,price`` said only that
    neither could be told)."""
    if not header:
        return "is empty: no header line of columns"
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
        separator = "semicolons" if ";" in header[0] else "tabs"
        return (
            f"its columns are separated by {separator}, not commas (a spreadsheet's regional export?): "
            "save it as CSV with commas, decimal points and ISO times (2023-06-05T19:45:00+02:00)"
        )
    looked_for = [
        f"the {what} column ({market!r} or {mara!r}; else name it with {flag})"
        for what, market, mara, flag, missing in (
            ("timestamp", MARKET_TIMESTAMP, MARA_FIELDS[3], "--timestamp-column", no_time),
            ("price", MARKET_PRICE, MARA_FIELDS[0], "--price-column", no_price),
        )
        if missing
    ]
    return f"cannot tell {' nor '.join(looked_for)}"


def _parse_time(text: str | None) -> datetime | str | None:
    """Market CSVs write ``2023-01-01 00:00:00+00:00``; pydantic wants the ``T``, so normalise it. A number
    is a number of seconds since 1970 (milliseconds above 2e10, as pydantic reads it), never ISO text:
    ``fromisoformat`` read ``1691020800000`` as 1691-02-08 (a backtest review: 7 rows of 72 in the 17th
    century, the rest in 2023). A row short of the column (None) stays None, so validation names the row
    and field."""
    if text is None:
        return None
    if _is_number(text) and not _COMPACT_DATE.fullmatch(text.strip()):
        return text.strip()  # as written: pydantic reads it as seconds, or milliseconds above 2e10
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return text


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A number as a time cell writes it: digits, a point, an exponent (``float()`` also takes ``1_000``)."""
_COMPACT_DATE = re.compile(r"(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")
"""``20230801``: ISO 8601's basic date, not 20,230,801 seconds (1970-08-23) read as a spreadsheet's day."""


def _number(text: str | None) -> float | str | None:
    """CSV cells are text; a price that does not parse stays text, so validation names the row and field."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text
