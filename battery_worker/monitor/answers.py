"""A price API's answer into ticks to publish: parse, validate, keep only what is new, oldest first (pure).

The MARA API (``GET /prices``) answers a JSON list of ``{"energy_price", "hash_price", "token_price",
"timestamp"}`` objects, newest first; some endpoints answer one object. Parsed with the standard library's
``json``, not orjson: it reads ``NaN`` and ``Infinity`` (which Python-served APIs do send) as numbers, so a
bad item is rejected alone by :class:`PriceTick` instead of failing the whole answer.

Nothing here raises on bad input: every problem is a :class:`Rejected` with a reason, because a monitor
keeps going through any answer and reports what it could not use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from battery_worker.ticks import PriceTick, tick_error

RejectKind = Literal["malformed", "invalid_tick"]
"""``malformed``: the answer as a whole is unusable; ``invalid_tick``: one item of it is."""


@dataclass(frozen=True, slots=True)
class Rejected:
    kind: RejectKind
    reason: str
    index: int | None = None
    """Position of the item in the answer (None: the whole answer)."""
    item: str = ""
    """The item as canonical JSON (keys sorted): what tells one bad item from another across polls."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The valid ticks of one answer in the answer's order, and what was rejected."""

    ticks: tuple[PriceTick, ...]
    rejected: tuple[Rejected, ...]


def parse_answer(body: bytes, site: str) -> Answer:
    """An HTTP body (a JSON list of ticks or one tick object) into valid ticks and rejected items.

    The monitor publishes for one ``site``: an item naming another ``site_id`` is rejected, not published
    under this site's key (a review run found another site's prices published as this site's)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return Answer((), (Rejected("malformed", f"not JSON: {_short(str(error))}{_looks_like(body)}"),))
    if isinstance(document, dict):
        items: list[Any] = [document]
    elif isinstance(document, list):
        items = document
    else:
        kind = type(document).__name__
        return Answer((), (Rejected("malformed", f"a JSON {kind}, not a list of ticks or a tick object"),))
    ticks: list[PriceTick] = []
    rejected: list[Rejected] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problem = f"a JSON {type(item).__name__}, not an object"
            rejected.append(Rejected("invalid_tick", problem, index, _canonical(item)))
            continue
        try:
            tick = PriceTick.model_validate(item)
        except ValidationError as error:
            rejected.append(Rejected("invalid_tick", _reason(error), index, _canonical(item)))
            continue
        if tick.site_id is not None and tick.site_id != site:
            problem = f"site_id={_short(repr(tick.site_id))}: another site's tick, this monitor's is {site!r}"
            rejected.append(Rejected("invalid_tick", problem, index, _canonical(item)))
            continue
        ticks.append(tick)
    return Answer(tuple(ticks), tuple(rejected))


@dataclass(frozen=True, slots=True)
class Selection:
    """What to publish (oldest first) and what was left out of an answer's valid ticks, by reason."""

    new: tuple[PriceTick, ...]
    already_published: int
    duplicates: int
    """Ticks sharing a timestamp with another tick of the same answer: the first listed is kept."""
    ahead: tuple[PriceTick, ...]
    """Stamped further ahead of ``now`` than allowed: the worker would dead-letter them, so never sent."""


def select_new(
    ticks: Iterable[PriceTick],
    last_published: datetime | None,
    *,
    now: datetime,
    max_ahead: timedelta,
) -> Selection:
    """The ticks newer than ``last_published``, each timestamp once, oldest first.

    The first tick listed for a timestamp wins: the MARA API lists newest first, so in an answer that
    repeats a timestamp with corrected prices, the correction comes first.
    """
    seen: dict[datetime, PriceTick] = {}
    duplicates = old = 0
    ahead: list[PriceTick] = []
    limit = now + max_ahead
    for tick in ticks:
        if last_published is not None and tick.timestamp <= last_published:
            old += 1
        elif tick.timestamp in seen:
            duplicates += 1
        elif tick.timestamp > limit:
            ahead.append(tick)
        else:
            seen[tick.timestamp] = tick
    new = tuple(sorted(seen.values(), key=lambda tick: tick.timestamp))
    return Selection(new, old, duplicates, tuple(ahead))


def _looks_like(body: bytes) -> str:
    """What a body that is not JSON seems to be, where it can be told (a review saw a gzip body and an HTML
    maintenance page each said as a bare decoding error)."""
    start = body[:512].lstrip()
    if start.startswith(b"\x1f\x8b"):
        return " (a gzip body: the API compressed it though the monitor asks for Accept-Encoding: identity)"
    if start[:1] == b"<":
        shown = _short(repr(start[:80].decode("utf-8", "replace")))
        return f" (markup, an error or maintenance page?: {shown})"
    return ""


def latest(ticks: Sequence[PriceTick]) -> datetime | None:
    return max((tick.timestamp for tick in ticks), default=None)


def _reason(error: ValidationError) -> str:
    if error.errors(include_url=False)[0]["type"] == "missing":
        return f"{tick_error(error).field}: missing"
    problem = tick_error(error)
    return f"{problem.field}={_short(repr(problem.value))}: {problem.problem}"


def _canonical(item: object) -> str:
    return json.dumps(item, sort_keys=True, default=str)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
