"""Battery types: presets for common chemistries, selectable by name (``battery_type = "lfp"``). Pure.

A preset fills the fields a chemistry decides: round-trip efficiency, the usable state-of-charge window,
the wear cost per MWh delivered and the cycle cap. Fields given explicitly (in the settings' battery table,
per site, or as flags) override it; size and rates are never part of a preset. Where each number comes from
is in docs/dispatch.md ("Wear and battery types"): the wear cost is the pack price spread over the energy
a pack delivers in its life, ``price_per_mwh / (cycles × window × √η)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from battery_worker.battery_config import BatteryFields
from battery_worker.errors import InvalidConfig

PACK_PRICE_PER_MWH = 139_000.0
"""Lithium-ion pack price, USD per MWh of capacity (BloombergNEF's 2023 survey: 139 USD/kWh)."""


@dataclass(frozen=True, slots=True)
class Chemistry:
    name: str
    efficiency: float
    min_charge_percent: float
    max_charge_percent: float
    cycle_life: int
    max_cycles_per_day: float

    @property
    def cycle_cost_per_mwh(self) -> float:
        """The pack's price over the energy it delivers in ``cycle_life`` cycles of its window, rounded."""
        window = (self.max_charge_percent - self.min_charge_percent) / 100.0
        delivered_per_mwh = self.cycle_life * window * math.sqrt(self.efficiency)
        return float(round(PACK_PRICE_PER_MWH / delivered_per_mwh))

    def battery_fields(self) -> BatteryFields:
        """The :class:`~battery_worker.battery_config.BatteryConfig` fields this chemistry sets."""
        return {
            "efficiency": self.efficiency,
            "min_charge_percent": self.min_charge_percent,
            "max_charge_percent": self.max_charge_percent,
            "cycle_cost_per_mwh": self.cycle_cost_per_mwh,
            "max_cycles_per_day": self.max_cycles_per_day,
        }


CHEMISTRIES: dict[str, Chemistry] = {
    chemistry.name: chemistry
    for chemistry in (
        # Lithium iron phosphate: the stationary default; long cycle life, tolerates a wide window.
        Chemistry(
            "lfp",
            efficiency=0.85,
            min_charge_percent=5.0,
            max_charge_percent=95.0,
            cycle_life=6000,
            max_cycles_per_day=2.0,
        ),
        # Nickel manganese cobalt: denser, shorter-lived, kept away from the ends of its range.
        Chemistry(
            "nmc",
            efficiency=0.85,
            min_charge_percent=10.0,
            max_charge_percent=90.0,
            cycle_life=2300,
            max_cycles_per_day=1.0,
        ),
    )
}


def chemistry_fields(name: str | None) -> BatteryFields:
    """The battery fields of the chemistry called ``name`` (none for None); an unknown name is refused."""
    if name is None:
        return {}
    if not isinstance(name, str):  # a library caller's 5 was an AttributeError (a library review)
        raise InvalidConfig("battery_type", name, f"must be a name, one of {', '.join(sorted(CHEMISTRIES))}")
    chemistry = CHEMISTRIES.get(name.strip().lower())
    if chemistry is None:
        raise InvalidConfig("battery_type", name, f"unknown; one of {', '.join(sorted(CHEMISTRIES))}")
    return chemistry.battery_fields()
