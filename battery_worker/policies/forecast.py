"""A bounded hourly price history and the forecasts built from it. Pure; only past and current ticks.

Why hourly: ticks may come every 5 minutes (the MARA API) or every hour (market files). Folding them into
hourly means gives the predictive policies one resolution to reason in, and bounds the memory to
``max_hours`` floats per site whatever the tick rate: the worker may hold 10,000 sites.

The history is a frozen value; :meth:`HourlyHistory.add` returns a new one. It dumps to plain JSON (ints,
floats, lists) and loads back to an equal value, so a restarted worker sees exactly the same history.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypedDict, cast

import numpy as np
from numpy.typing import NDArray

from battery_worker.battery import as_utc
from battery_worker.errors import InvalidConfig
from battery_worker.policies.base import JsonValue, PolicyMemory

HOURS_PER_DAY = 24
FloatArray = NDArray[np.float64]


def whole_number(name: str, value: object, low: int) -> int:
    """``value`` as an int >= ``low``; whole floats are accepted because CLI and TOML params may be floats."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidConfig(name, value, f"must be a whole number >= {low}")
    return value


def require_fraction(name: str, value: object) -> None:
    """Raise :class:`InvalidConfig` unless ``value`` is a number (not a bool) within 0-1."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise InvalidConfig(name, value, "must be within 0-1")


def hour_index(at: datetime) -> int:
    """Whole hours since the Unix epoch (UTC): the bucket a tick falls in."""
    return int(as_utc(at).timestamp() // 3600)


class HistoryDump(TypedDict):
    """:meth:`HourlyHistory.dump` as stored in the state topic."""

    max_hours: int
    means: list[float]
    open_hour: int | None
    open_sum: float
    open_count: int


_DOUBLE = struct.Struct("d")


def pack_means(means: Iterable[float]) -> bytes:
    """Hourly means as :attr:`HourlyHistory.packed_means` holds them: native doubles, 8 bytes each."""
    return np.asarray(list(means), dtype=np.float64).tobytes()


@dataclass(frozen=True, slots=True)
class HourlyHistory:
    """Means of completed hours (oldest first, the last one is ``open_hour - 1``) plus the open hour's sum.

    Hours without ticks repeat the previous hour's mean, so the series stays contiguous and hour-of-day
    positions stay aligned.
    """

    max_hours: int
    packed_means: bytes = b""
    """The completed hours' means as native doubles (:func:`pack_means`), not a tuple of floats: 8 bytes an
    hour where a tuple takes 32 (a pointer and a float object), and the worker may keep 10,000 sites of
    696 hours each for ``mpc``. Immutable like the tuple it replaces; the values are the same doubles."""
    open_hour: int | None = None
    open_sum: float = 0.0
    open_count: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_hours, int) or self.max_hours < 1:
            raise InvalidConfig("history_hours", self.max_hours, "must be an integer >= 1")

    @property
    def means(self) -> tuple[float, ...]:
        """The completed hours' means, oldest first."""
        return tuple(np.frombuffer(self.packed_means, dtype=np.float64).tolist())

    def add(self, at: datetime, price: float) -> HourlyHistory:
        hour = hour_index(at)
        if self.open_hour is None or hour < self.open_hour:
            # Earlier hours cannot reach a policy (dispatch refuses stale ticks): restart the open hour.
            return replace(self, open_hour=hour, open_sum=price, open_count=1)
        if hour == self.open_hour:
            return replace(self, open_sum=self.open_sum + price, open_count=self.open_count + 1)
        closed = _DOUBLE.pack(self.open_sum / self.open_count)
        filled = min(hour - self.open_hour, self.max_hours)
        packed = (self.packed_means + closed * filled)[-self.max_hours * _DOUBLE.size :]
        return replace(self, packed_means=packed, open_hour=hour, open_sum=price, open_count=1)

    def known(self) -> FloatArray:
        """Completed hourly means then the open hour's mean so far: everything known up to now."""
        means = np.frombuffer(self.packed_means, dtype=np.float64)
        if self.open_count:
            return np.append(means, self.open_sum / self.open_count)
        return means.copy()  # writable, as a caller may expect of an array of its own

    def dump(self) -> JsonValue:
        """The history as a :class:`HistoryDump`; :meth:`load` reads it back to an equal value."""
        return {
            "max_hours": self.max_hours,
            "means": np.frombuffer(self.packed_means, dtype=np.float64).tolist(),
            "open_hour": self.open_hour,
            "open_sum": self.open_sum,
            "open_count": self.open_count,
        }

    @staticmethod
    def load(data: JsonValue) -> HourlyHistory:
        if not isinstance(data, dict):
            raise InvalidConfig("policy_memory", type(data).__name__, "expected an object")
        fields = cast(HistoryDump, data)  # checked field by field below: a wrong shape fails to convert
        try:
            return HourlyHistory(
                max_hours=int(fields["max_hours"]),
                packed_means=pack_means(float(v) for v in fields["means"]),
                open_hour=None if fields["open_hour"] is None else int(fields["open_hour"]),
                open_sum=float(fields["open_sum"]),
                open_count=int(fields["open_count"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidConfig("policy_memory", str(error), "not a price history") from None


def as_history(memory: PolicyMemory | None, max_hours: int) -> HourlyHistory:
    """A policy's memory as the price history it must be; ``None`` (no tick yet) is an empty history."""
    if memory is None:
        return HourlyHistory(max_hours)
    if not isinstance(memory, HourlyHistory):
        raise InvalidConfig("policy_memory", type(memory).__name__, "expected an HourlyHistory")
    return memory


def load_history(data: JsonValue, max_hours: int) -> HourlyHistory:
    """A stored history read back; ``None`` (nothing stored yet) is an empty history of ``max_hours``."""
    return HourlyHistory.load(data) if data is not None else HourlyHistory(max_hours)


def flat_forecast(history: FloatArray, horizon_hours: int) -> FloatArray:
    """A flat future at the median of the history: the plan for a history shorter than a day.

    With less than a day of prices there is no daily shape to repeat; the median of what is known is the
    level prices are most likely to return to, and a spike or dip among a few hours does not move it.
    """
    level = float(np.median(history)) if history.size else 0.0
    return np.full(horizon_hours, level)


def profile_forecast(
    history: FloatArray,
    horizon_hours: int,
    *,
    days: int,
    recent_weight: float,
    spike_quantile: float,
    level_decay: float,
) -> FloatArray:
    """Prices for the next ``horizon_hours`` hours from an hourly history ending with the current hour.

    The :func:`daily_profile` ahead, plus today's departure from it (the current hour's price, the last
    entry of ``history``, minus its own profile value), fading by ``level_decay`` per hour ahead
    (:func:`departed`): prices persist from hour to hour. Kept within the prices seen (:func:`within_seen`).
    """
    if history.size == 0:
        return np.zeros(horizon_hours)
    profile = daily_profile(
        history, horizon_hours, days=days, recent_weight=recent_weight, spike_quantile=spike_quantile
    )
    return within_seen(departed(profile, float(history[-1]) - profile[0], level_decay), history)


def daily_profile(
    history: FloatArray, horizon_hours: int, *, days: int, recent_weight: float, spike_quantile: float
) -> FloatArray:
    """The daily shape at the current hour (first) and each of the next ``horizon_hours`` hours.

    Each hour gets the mean of the same hour of day over the last ``days`` days, blended with the same hour
    yesterday (weight ``recent_weight``): the daily shape, tracking the recent level. Past prices are first
    capped at their ``spike_quantile`` so that one spike does not become a forecast spike every day.
    """
    n = history.size
    if n == 0:
        return np.zeros(horizon_hours + 1)
    cap = float(np.quantile(history, spike_quantile))
    capped = np.minimum(history, cap)
    last = n - 1
    # Same hour of day, whole days back from each target hour last + k (k = 0: the current hour): the
    # first ``days`` of the ``days + 1`` days before it that are known, most recent first. Most targets
    # have all ``days`` of them, and those are computed together, as one array (the same values as
    # :func:`_profile_hour`, bit for bit, in a fifth of the time); the others (a short history, the
    # current hour of a history of whole days, a horizon beyond two days) one by one.
    ahead = np.arange(horizon_hours + 1)
    first = np.maximum(1, -(-ahead // HOURS_PER_DAY))  # the first whole day back at or before now
    back = (last + ahead)[:, None] - HOURS_PER_DAY * (first[:, None] + np.arange(days))
    whole = (first <= 2) & (back[:, -1] >= 0)  # all ``days`` within the days + 1 looked at, and known
    same_hours = capped[np.maximum(back, 0)]
    profile: FloatArray = recent_weight * same_hours[:, 0] + (1.0 - recent_weight) * same_hours.mean(axis=1)
    for k in np.flatnonzero(~whole):
        profile[k] = _profile_hour(capped, int(k), days, recent_weight)
    return profile


def _profile_hour(capped: FloatArray, k: int, days: int, recent_weight: float) -> float:
    """:func:`daily_profile` of the hour ``k`` after the last of ``capped``, from the days known before it."""
    last = capped.size - 1
    back = last + k - HOURS_PER_DAY * np.arange(1, days + 2)
    back = back[(back >= 0) & (back <= last)][:days]
    if back.size == 0:
        return float(capped[last])
    daily = float(capped[back].mean())
    return recent_weight * float(capped[back[0]]) + (1.0 - recent_weight) * daily


def within_seen(forecast: FloatArray, history: FloatArray) -> FloatArray:
    """``forecast`` kept within the lowest and highest price of ``history``.

    The departure (:func:`departed`) is today's distance from a profile that one spike may lift: a day that
    began at 645 and 741 made the next day's profile at that hour about 700, so a price of 146 there
    departed by −554 and the next 24 hours were forecast at −130 to −410 on a market whose lowest price
    seen was 17. A plan on that ran the machines for nothing and emptied the battery to charge at prices
    that never came. No past price was ever that low; a forecast outside all seen is the model's error,
    not the market's, and a market that has seen negative prices keeps them."""
    if history.size == 0:
        return forecast
    return np.clip(forecast, float(history.min()), float(history.max()))


def departed(profile: FloatArray, departure: float, level_decay: float) -> FloatArray:
    """The hours after the first of ``profile``, each plus ``departure`` faded by ``level_decay`` per hour."""
    fade: FloatArray = level_decay ** np.arange(1, profile.size, dtype=np.float64)
    result: FloatArray = profile[1:] + departure * fade
    return result


def analog_forecast(
    history: FloatArray, forecast: FloatArray, *, days: int, neighbours: int, window_hours: int, weight: float
) -> FloatArray:
    """``forecast`` (the hours after the current one) with its next day blended toward the nearest past days.

    The last ``window_hours`` of ``history``, taken relative to the current hour (its last entry), are
    compared with the same span ending at the same hour on each of the last ``days`` days (mean absolute
    difference); the ``neighbours`` closest continue: the current price plus their mean change over the next
    hours, up to 24, against ``forecast``. It weighs ``weight`` times how much nearer those days are than the
    typical (median) past day: a day like no other before (prices jumping to three times anything seen, as
    on the MARA event) has no near days, and the forecast stays as it was. Why: the profile is a mean of the
    same hour over days that may not be alike, and the departure fades the same way on every day. A day
    whose last hours look like some earlier days' often goes on as theirs did, which a mean of all days
    blurs. With fewer past days than ``neighbours``, or ``weight`` 0, ``forecast`` is returned as it is.
    """
    now = history.size - 1
    span = np.arange(1 - window_hours, 1)
    ends = now - HOURS_PER_DAY * np.arange(1, days + 1)
    ends = ends[ends + span[0] >= 0]
    if weight == 0 or ends.size < neighbours or now + span[0] < 0:
        return forecast
    today = history[now + span] - history[now]
    earlier = history[ends[:, None] + span] - history[ends][:, None]
    distance = np.abs(earlier - today).mean(axis=1)
    order = np.argsort(distance, kind="stable")[:neighbours]
    typical = float(np.median(distance))
    if typical <= 0:
        return forecast  # every past day alike: none is nearer than another
    # As much as the nearest are nearer than a typical day: none alike (today is new) weighs nothing.
    weight *= max(0.0, 1.0 - float(distance[order].mean()) / typical)
    nearest = ends[order]
    ahead = min(HOURS_PER_DAY, forecast.size)
    changes = history[nearest[:, None] + np.arange(1, ahead + 1)] - history[nearest][:, None]
    blended = forecast.copy()
    blended[:ahead] = (1 - weight) * forecast[:ahead] + weight * (history[now] + changes.mean(axis=0))
    return blended
