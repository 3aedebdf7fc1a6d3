"""What a battery is: its configuration, validated on construction. Pure.

Apart from :mod:`battery_worker.battery` (the state and the physics of a step) because the settings, the
presets, the optimum and every policy need the configuration without the state machine. The model's
conventions (efficiency split, site-side power, wear) are in :mod:`battery_worker.battery`'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from battery_worker.errors import InvalidConfig, InvalidInput

__all__ = [
    "PRICE_LIMIT",
    "SIZE_LIMIT",
    "BatteryConfig",
    "BatteryFields",
    "end_value_after_wear",
    "require_finite",
]


_NUMBER = (int, float)
PRICE_LIMIT = 1e6
"""Prices beyond ±1e6 (200× ERCOT's cap, in any unit) are refused, a tick's or a manual step's: finite but
absurd values would overflow the money totals to infinity and poison a site's state for good."""

SIZE_LIMIT = 1e6
"""MWh of capacity and MW of a rate or a grid limit at most: a thousand times the largest battery built.
A capacity of 1e308 was taken: the charge became infinite, and every event and state record carried null."""

BatteryFields = dict[str, Any]
"""Some of :class:`BatteryConfig`'s fields by name (a preset, a site's overrides): numbers but for
``cycle_day_timezone``; checked when a config is built from them."""
FRACTIONS_BELOW = 1.0
"""A state-of-charge window whose top is at most this looks written as fractions (0.9 meant as 90 %)."""
PERCENTS_NOT_FRACTIONS = "the *_charge_percent settings are percents (0–100), not fractions"
_SECONDS_PER_DAY = 86_400
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()


def require_finite(field: str, value: object, error: type[InvalidConfig] | type[InvalidInput]) -> None:
    """Raise ``error`` naming ``field`` unless ``value`` is an int or float (not a bool) and finite."""
    if type(value) is float and math.isfinite(value):
        return  # the common case first: twice per tick on the worker's hot path
    if not isinstance(value, _NUMBER) or isinstance(value, bool) or not math.isfinite(value):
        raise error(field, value, "must be a finite number")


@dataclass(frozen=True)
class BatteryConfig:
    """What the battery is. Every field is validated on construction, so a config that exists is sound.

    Without slots, so the derived figures (``cached_property``) are computed once per config instead of on
    every read: the physics and the status event read them several times per tick.
    """

    capacity_mwh: float = 100.0
    max_charge_rate_mw: float = 20.0
    max_discharge_rate_mw: float = 20.0
    efficiency: float = 0.9
    initial_charge_percent: float = 50.0
    min_charge_percent: float = 0.0
    max_charge_percent: float = 100.0
    default_step_hours: float = 1.0
    max_step_hours: float = 2.0
    # Wear. A cycle is the usable window (max - min charge) delivered once, measured on the site side.
    # ``cycle_cost_per_mwh`` is charged per MWh delivered; 0 (the default) leaves every result as before.
    # ``max_cycles_per_day`` caps delivered energy at that many windows per calendar day; None: no cap
    # (given as infinity, e.g. TOML's ``inf``, it is None: the one way to lift a chemistry preset's cap,
    # where None means "not given" and the preset fills it).
    # ``cycle_day_timezone`` (an IANA name) says where that day starts and ends: the site's or the market's.
    cycle_cost_per_mwh: float = 0.0
    max_cycles_per_day: float | None = None
    cycle_day_timezone: str = "UTC"

    def __post_init__(self) -> None:
        for name in (
            "capacity_mwh",
            "max_charge_rate_mw",
            "max_discharge_rate_mw",
            "efficiency",
            "initial_charge_percent",
            "min_charge_percent",
            "max_charge_percent",
            "default_step_hours",
            "max_step_hours",
            "cycle_cost_per_mwh",
        ):
            require_finite(name, getattr(self, name), InvalidConfig)
        if self.cycle_cost_per_mwh < 0:
            raise InvalidConfig("cycle_cost_per_mwh", self.cycle_cost_per_mwh, "must be >= 0")
        if self.max_cycles_per_day == math.inf:
            object.__setattr__(self, "max_cycles_per_day", None)
        if self.max_cycles_per_day is not None:
            require_finite("max_cycles_per_day", self.max_cycles_per_day, InvalidConfig)
            if self.max_cycles_per_day <= 0:
                problem = "must be > 0 (inf: no cap)"
                raise InvalidConfig("max_cycles_per_day", self.max_cycles_per_day, problem)
        _ = self.cycle_day_zone  # an unknown zone is refused here, not at the first capped discharge
        for name in ("capacity_mwh", "default_step_hours", "max_step_hours"):
            if getattr(self, name) <= 0:
                raise InvalidConfig(name, getattr(self, name), "must be > 0")
        if self.default_step_hours > self.max_step_hours:  # else a gap counted for more than it lasted
            raise InvalidConfig(
                "default_step_hours",
                self.default_step_hours,
                f"must not exceed max_step_hours ({self.max_step_hours})",
            )
        for name in ("max_charge_rate_mw", "max_discharge_rate_mw"):
            if getattr(self, name) < 0:
                raise InvalidConfig(name, getattr(self, name), "must be >= 0")
        for name in ("capacity_mwh", "max_charge_rate_mw", "max_discharge_rate_mw"):
            if getattr(self, name) > SIZE_LIMIT:
                raise InvalidConfig(name, getattr(self, name), f"must be at most {SIZE_LIMIT:g}")
        if not 0 < self.efficiency <= 1:
            raise InvalidConfig("efficiency", self.efficiency, "must be in (0, 1]")
        for name in ("initial_charge_percent", "min_charge_percent", "max_charge_percent"):
            if not 0 <= getattr(self, name) <= 100:
                raise InvalidConfig(name, getattr(self, name), "must be within 0-100")
        if self.min_charge_percent > self.max_charge_percent:
            raise InvalidConfig(
                "min_charge_percent", self.min_charge_percent, "must not exceed max_charge_percent"
            )
        if not self.min_charge_percent <= self.initial_charge_percent <= self.max_charge_percent:
            problem = f"must be within min/max charge ({self.min_charge_percent}-{self.max_charge_percent})"
            if self.max_charge_percent <= FRACTIONS_BELOW:  # 0.9 meant as 90 % refused the default 50
                problem += f": {PERCENTS_NOT_FRACTIONS}"
            raise InvalidConfig("initial_charge_percent", self.initial_charge_percent, problem)

    @cached_property
    def one_way_efficiency(self) -> float:
        """√η: the share kept on each side of a round trip."""
        return math.sqrt(self.efficiency)

    @cached_property
    def min_energy_mwh(self) -> float:
        return self.capacity_mwh * self.min_charge_percent / 100.0

    @cached_property
    def max_energy_mwh(self) -> float:
        return self.capacity_mwh * self.max_charge_percent / 100.0

    @cached_property
    def initial_energy_mwh(self) -> float:
        return self.capacity_mwh * self.initial_charge_percent / 100.0

    @cached_property
    def usable_energy_mwh(self) -> float:
        """One cycle: the window between the state-of-charge bounds."""
        return self.max_energy_mwh - self.min_energy_mwh

    @cached_property
    def cycle_day_zone(self) -> tzinfo:
        """The zone of ``cycle_day_timezone``; UTC needs no time zone database."""
        name = self.cycle_day_timezone
        if not isinstance(name, str) or not name:
            raise InvalidConfig(
                "cycle_day_timezone", name, "must be a time zone name such as America/Chicago"
            )
        if name == "UTC":
            return UTC
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidConfig(
                "cycle_day_timezone",
                name,
                "not a time zone the tz database knows (e.g. America/Chicago, Europe/Berlin, UTC)",
            ) from None

    def cycle_day(self, epoch_s: float) -> int:
        """The calendar day ``max_cycles_per_day`` counts a moment in (seconds since the Unix epoch), as a
        date ordinal: its date in ``cycle_day_timezone``. The one rule the battery, the mpc plan and the
        optimum share, so the day a plan budgets is the day the battery enforces.

        Why a zone: a cap per UTC day turns the day at 18:00 in Texas (19:00 in summer), inside the evening
        peak, so a battery capped at one cycle a day could discharge a cycle before then and another after.
        """
        zone = self.cycle_day_zone
        if zone is UTC:
            return int(epoch_s // _SECONDS_PER_DAY) + _EPOCH_ORDINAL
        return datetime.fromtimestamp(epoch_s, zone).toordinal()

    @cached_property
    def daily_delivery_cap_mwh(self) -> float | None:
        """Energy a calendar day may deliver under ``max_cycles_per_day`` (site side); None: no cap."""
        if self.max_cycles_per_day is None:
            return None
        return self.max_cycles_per_day * self.usable_energy_mwh


def end_value_after_wear(config: BatteryConfig, end_value: float) -> float:
    """Worth of one MWh left in the cells once the wear of delivering it later is paid (never below 0 by it):
    what the mpc plan and the site plan value an end surplus at (the charge they start from keeps
    ``end_value``).

    Delivering a cell MWh later delivers √η MWh, each paying ``cycle_cost_per_mwh``. Without wear the value
    is returned unchanged (not ``end_value − 0.0``), so the LP is the one it was before wear existed.
    """
    if config.cycle_cost_per_mwh <= 0:
        return end_value
    return max(min(end_value, 0.0), end_value - config.one_way_efficiency * config.cycle_cost_per_mwh)
