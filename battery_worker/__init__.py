"""battery-worker: dispatch a virtual battery against live energy prices, from Python or over Kafka."""

from battery_worker.battery import Action, BatteryConfig, BatteryState
from battery_worker.errors import BatteryWorkerError, InvalidConfig, InvalidInput, InvalidTick
from battery_worker.seed_api import BatterySystem
from battery_worker.ticks import PriceTick

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
]
