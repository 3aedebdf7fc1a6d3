"""The site beside its battery: its grid connection, its mining and inference fleet, and their economics.

``model`` (what a site is, validated), ``plan`` (one step: which machines run and the money), ``lp`` (the
site's linear programme) and ``optimum`` (perfect foresight over a series). Pure: no Kafka, no asyncio.
"""

from battery_worker.fleet.model import DEFAULT_MACHINES, MachineType, SiteModel
from battery_worker.fleet.plan import (
    SitePlan,
    plan_applied,
    plan_site,
    plan_step,
    plan_tick,
    signed_battery_mw,
)

__all__ = [
    "DEFAULT_MACHINES",
    "MachineType",
    "SiteModel",
    "SitePlan",
    "plan_applied",
    "plan_site",
    "plan_step",
    "plan_tick",
    "signed_battery_mw",
]
