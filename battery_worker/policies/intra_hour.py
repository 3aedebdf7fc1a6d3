"""The MPC's memory: the hourly history plus what sub-hourly ticks teach about the hour they fall in. Pure.

On 5-minute ticks (the MARA API, real-time markets) an hourly plan cannot see a spread inside the hour. This
memory keeps, besides the :class:`HourlyHistory`, five bounded things learned from past ticks only:

* the last tick's time and the last gap between ticks: the tick interval the near-term plan steps at;
* this hour's price sums and counts per 5-minute slot of the hour (12 each);
* the intra-hour shape: per slot, how far prices sit above the mean of their hour, an exponentially weighted
  mean over past complete hours (``shape_decay`` per hour). Prices that only wobble at random learn a shape
  near zero; a market that is dear at every hour's end learns that;
* the level: how far prices stand now from what the daily profile expects, an exponentially weighted mean
  over past ticks of each tick's price less its slot's shape and the profile's value for its hour. A tick
  ``gap`` seconds after the last one weighs ``1 − exp(−gap / level_seconds)``;
* which predicts the next tick's departure better, that level or the last tick's own departure: the share
  of ticks the level came closer, weighted over a day (``WINS_SECONDS``; a weighted sum and its weight).
  Where prices wobble from tick to tick (the MARA 5-minute files) the smoothed level does; where a tick's
  price holds until the next or moves smoothly (15- and 30-minute markets, or hourly prices at a finer
  tick) the last departure does, and the level lags every move by its time constant (a review run: 87.6 %
  of the optimum on DE-LU hourly prices held over 15 minutes against 89.8 % planning hourly).
  :attr:`IntraHour.estimate` is the better of the two.
  A share, not the errors' size: squared errors let the MARA event's first hour, a fall from 3.00 after a
  month within 0.65-1.35, outweigh the month, and the estimate followed the last tick down (81.5 % against
  91.7 %).

From them :meth:`IntraHour.near_term` prices the ticks still to come in the current hour: the profile's
value for the hour, plus the estimate, plus the shape of the slot each tick falls in; and the mpc's hourly
forecast departs from the profile by that same estimate. Why a level that slides across hours and is measured
from the profile: the mean of the current hour's ticks so far, which this used before, lags an hour that
moves (the MARA event's first hour falls from 3.00 to 2.07 while its mean still says 2.56) and starts each
hour from one noisy tick; measured from the profile, the daily cycle is not mistaken for a departure.
Memory is 2 + 12 + 12 + 12 + 4 numbers beside the history, whatever the tick rate; it dumps to plain JSON and
loads back to an equal value. The shape and the slot sums are kept as packed doubles, as the history is
(``HourlyHistory.packed_means``): as tuples of float objects they took 850 bytes a site, packed 260, the
same values (a worker holds 10,000 sites, ``bench/state_memory.py``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypedDict, cast

import numpy as np

from battery_worker.battery import as_utc
from battery_worker.errors import InvalidConfig
from battery_worker.policies.base import JsonValue, PolicyMemory
from battery_worker.policies.forecast import FloatArray, HourlyHistory

SLOT_SECONDS = 300
SLOTS_PER_HOUR = 3600 // SLOT_SECONDS
ZEROS = (0.0,) * SLOTS_PER_HOUR
NONE_SEEN = (0,) * SLOTS_PER_HOUR
_SLOTS = struct.Struct(f"{SLOTS_PER_HOUR}d")
PACKED_ZEROS = _SLOTS.pack(*ZEROS)
WINS_SECONDS = 86_400.0
"""The time constant of the level's share of wins: a day of ticks, so a market's character, not the last
hour's moves, picks the estimate."""


def pack_slots(values: tuple[float, ...] | list[float]) -> bytes:
    """One number per slot as packed native doubles (what :class:`IntraHour` keeps)."""
    return _SLOTS.pack(*values)


class IntraHourDump(TypedDict):
    """:meth:`IntraHour.dump` as stored in the state topic."""

    history: JsonValue
    last_at: float | None
    gap_seconds: float | None
    shape: list[float]
    slot_sums: list[float]
    slot_counts: list[int]
    level: float | None
    last_departure: float | None
    level_wins: float | None
    wins_weight: float | None


def slot_of(seconds: float) -> int:
    """The 5-minute slot of the hour (0-11) an instant, in seconds since the epoch, falls in."""
    return int(seconds % 3600 // SLOT_SECONDS)


@dataclass(frozen=True, slots=True)
class NearTerm:
    """The ticks still to come in the current hour: their prices, lengths (hours) and end times (epoch s)."""

    prices: FloatArray
    hours: FloatArray
    ends: FloatArray


@dataclass(frozen=True, slots=True)
class IntraHour:
    history: HourlyHistory
    last_at: float | None = None
    gap_seconds: float | None = None
    packed_shape: bytes = PACKED_ZEROS
    packed_sums: bytes = PACKED_ZEROS
    slot_counts: tuple[int, ...] = NONE_SEEN
    level: float | None = None
    last_departure: float | None = None
    level_wins: float | None = None
    wins_weight: float | None = None

    @property
    def level_share(self) -> float | None:
        """The share of ticks, the last day's most, whose departure the level came closer to than the last
        tick's did; None before two ticks."""
        if self.level_wins is None or not self.wins_weight:
            return None
        return self.level_wins / self.wins_weight

    @property
    def estimate(self) -> float | None:
        """How far prices stand from the profile now: the level, or the last tick's departure where that
        has come closer to the next tick's more often."""
        share = self.level_share
        return self.level if share is None or share >= 0.5 else self.last_departure

    @property
    def shape(self) -> tuple[float, ...]:
        """Per slot, how far prices sit above the mean of their hour."""
        return _SLOTS.unpack(self.packed_shape)

    @property
    def slot_sums(self) -> tuple[float, ...]:
        """This hour's price sum per slot."""
        return _SLOTS.unpack(self.packed_sums)

    def add(self, at: datetime, price: float, shape_decay: float) -> IntraHour:
        """This memory with the tick at ``at`` added; a new hour first folds the closed one into the shape."""
        seconds = as_utc(at).timestamp()
        history = self.history.add(at, price)
        gap = self.gap_seconds
        if self.last_at is not None and seconds > self.last_at:
            gap = seconds - self.last_at
        shape, sums, counts = self.packed_shape, self.slot_sums, self.slot_counts
        opened, closed = history.open_hour, self.history.open_hour
        if opened != closed:
            if opened is not None and closed is not None and opened > closed:
                shape = self._learned_shape(shape_decay)
            sums, counts = ZEROS, NONE_SEEN
        slot = slot_of(seconds)
        sums = (*sums[:slot], sums[slot] + price, *sums[slot + 1 :])
        counts = (*counts[:slot], counts[slot] + 1, *counts[slot + 1 :])
        return replace(
            self,
            history=history,
            last_at=seconds,
            gap_seconds=gap,
            packed_shape=shape,
            packed_sums=pack_slots(sums),
            slot_counts=counts,
        )

    def _learned_shape(self, decay: float) -> bytes:
        """The shape after the open hour closes; only an hour with a tick in every slot it should have counts.

        A partial hour (the worker started mid-hour, ticks were lost) would teach a slope that is not there.
        """
        gap = self.gap_seconds
        if gap is None or gap >= 3600:
            return self.packed_shape
        expected = int(3600 // max(gap, SLOT_SECONDS))
        seen = [s for s in range(SLOTS_PER_HOUR) if self.slot_counts[s]]
        if len(seen) < expected:
            return self.packed_shape
        sums = self.slot_sums
        mean = sum(sums) / sum(self.slot_counts)
        shape = list(self.shape)
        for s in seen:
            shape[s] = decay * shape[s] + (1.0 - decay) * (sums[s] / self.slot_counts[s] - mean)
        return pack_slots(shape)

    def with_level(self, price: float, expected: float, level_seconds: float) -> IntraHour:
        """The level after the tick just added at ``price``, where the profile expected ``expected``."""
        if self.last_at is None:
            return self
        departure = price - self.shape[slot_of(self.last_at)] - expected
        if self.level is None or self.gap_seconds is None:
            return replace(self, level=departure, last_departure=departure)
        weight = math.exp(-self.gap_seconds / level_seconds)
        wins, weight_of_wins = self.level_wins, self.wins_weight
        if self.last_departure is not None:  # which would have predicted this tick closer
            by_level, by_last = abs(departure - self.level), abs(departure - self.last_departure)
            won = 1.0 if by_level < by_last else 0.0 if by_last < by_level else 0.5
            # A weighted sum and its weight, not a mean started at the first result: one early tick would
            # decide for most of a day. The share is their ratio: the ticks seen so far, the last day most.
            kept = math.exp(-self.gap_seconds / WINS_SECONDS)
            wins = kept * (wins or 0.0) + (1.0 - kept) * won
            weight_of_wins = kept * (weight_of_wins or 0.0) + (1.0 - kept)
        return replace(
            self,
            level=weight * self.level + (1.0 - weight) * departure,
            last_departure=departure,
            level_wins=wins,
            wins_weight=weight_of_wins,
        )

    def near_term(self, max_gap_seconds: float, expected: float) -> NearTerm | None:
        """Prices of the ticks after the last one that still fall in its hour; None for hourly ticks.

        ``expected`` is the profile's value for the hour. Steps are the last gap between ticks (at least 5
        minutes), so nothing but past ticks decides them.
        """
        gap, now, level = self.gap_seconds, self.last_at, self.estimate
        if gap is None or now is None or level is None or gap >= min(3600.0, max_gap_seconds):
            return None
        step = max(gap, float(SLOT_SECONDS))
        hour_end = (now // 3600 + 1) * 3600
        ends = now + step * np.arange(1, int((hour_end - now) // step) + 1, dtype=np.float64)
        ends = ends[ends < hour_end]
        shape = np.asarray(self.shape, dtype=np.float64)
        prices = expected + level + shape[(ends % 3600 // SLOT_SECONDS).astype(np.int64)]
        return NearTerm(prices=prices, hours=np.full(ends.size, step / 3600.0), ends=ends)

    def dump(self) -> JsonValue:
        """The memory as an :class:`IntraHourDump`; :meth:`load` reads it back to an equal value."""
        return {
            "history": self.history.dump(),
            "last_at": self.last_at,
            "gap_seconds": self.gap_seconds,
            "shape": list(self.shape),
            "slot_sums": list(self.slot_sums),
            "slot_counts": list(self.slot_counts),
            "level": self.level,
            "last_departure": self.last_departure,
            "level_wins": self.level_wins,
            "wins_weight": self.wins_weight,
        }

    @staticmethod
    def load(data: JsonValue) -> IntraHour:
        """Read a dump back; a bare hourly history (what the mpc stored before this memory) is read too."""
        if not isinstance(data, dict):
            raise InvalidConfig("policy_memory", type(data).__name__, "expected an object")
        if "history" not in data and "means" in data:
            return IntraHour(HourlyHistory.load(data))
        fields = cast(IntraHourDump, data)  # checked field by field below: a wrong shape fails to convert
        try:
            loaded = IntraHour(
                history=HourlyHistory.load(fields["history"]),
                last_at=None if fields["last_at"] is None else float(fields["last_at"]),
                gap_seconds=None if fields["gap_seconds"] is None else float(fields["gap_seconds"]),
                packed_shape=_packed_slots(fields["shape"]),
                packed_sums=_packed_slots(fields["slot_sums"]),
                slot_counts=tuple(int(v) for v in fields["slot_counts"]),
                # Absent from what the mpc stored before the level existed: the next tick starts it.
                level=None if (level := fields.get("level")) is None else float(level),
                # Absent from what the mpc stored before the estimate chose: the level alone, as then.
                last_departure=_optional(fields.get("last_departure")),
                level_wins=_optional(fields.get("level_wins")),
                wins_weight=_optional(fields.get("wins_weight")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidConfig("policy_memory", str(error), "not an intra-hour memory") from None
        if len(loaded.slot_counts) != SLOTS_PER_HOUR:
            raise InvalidConfig("policy_memory", len(loaded.slot_counts), f"expected {SLOTS_PER_HOUR} slots")
        return loaded


def _optional(value: object) -> float | None:
    return None if value is None else float(cast(float, value))


def _packed_slots(values: list[float]) -> bytes:
    """A stored list of one number per slot, packed; a list of another length is refused."""
    if len(values) != SLOTS_PER_HOUR:
        raise ValueError(f"expected {SLOTS_PER_HOUR} slots, not {len(values)}")
    return pack_slots([float(v) for v in values])


def as_intra_hour(memory: PolicyMemory | None, max_hours: int) -> IntraHour:
    """A policy's memory as the intra-hour memory it must be; ``None`` (no tick yet) is an empty one."""
    if memory is None:
        return IntraHour(HourlyHistory(max_hours))
    if not isinstance(memory, IntraHour):
        raise InvalidConfig("policy_memory", type(memory).__name__, "expected an IntraHour memory")
    return memory


def load_intra_hour(data: JsonValue, max_hours: int) -> IntraHour:
    """A stored memory read back; ``None`` (nothing stored yet) is an empty memory of ``max_hours``."""
    return IntraHour.load(data) if data is not None else IntraHour(HourlyHistory(max_hours))
