"""battery-worker: dispatch a virtual battery against live energy prices, from Python or over Kafka.

The public names are loaded on first use (PEP 562), so ``import battery_worker.cli.main`` stays cheap: the
command line installs its signal handlers before pydantic and aiokafka load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from battery_worker.battery import Action, BatteryState
    from battery_worker.battery_config import BatteryConfig
    from battery_worker.errors import (
        BatteryWorkerError,
        InvalidConfig,
        InvalidInput,
        InvalidTick,
        TimestampNotIncreasing,
    )
    from battery_worker.seed_api import BatterySystem
    from battery_worker.ticks import PriceTick, make_tick

_HOMES = {
    "Action": "battery_worker.battery",
    "BatteryConfig": "battery_worker.battery",
    "BatteryState": "battery_worker.battery",
    "BatterySystem": "battery_worker.seed_api",
    "BatteryWorkerError": "battery_worker.errors",
    "InvalidConfig": "battery_worker.errors",
    "InvalidInput": "battery_worker.errors",
    "InvalidTick": "battery_worker.errors",
    "TimestampNotIncreasing": "battery_worker.errors",
    "PriceTick": "battery_worker.ticks",
    "make_tick": "battery_worker.ticks",
}

__all__ = [
    "Action",
    "BatteryConfig",
    "BatteryState",
    "BatterySystem",
    "BatteryWorkerError",
    "InvalidConfig",
    "InvalidInput",
    "InvalidTick",
    "PriceTick",
    "TimestampNotIncreasing",
    "make_tick",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'battery_worker' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names too, though loaded on first use: ``dir()`` and a notebook's completion listed
    none of them (a library review)."""
    return sorted({*globals(), *__all__})
