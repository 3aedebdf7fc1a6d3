"""One tick through one site: policy decides, battery applies. The single path every runner shares.

The Kafka worker, the backtest and the audit replay all call :func:`dispatch`, so a decision recomputed
anywhere is the decision the worker made. Given the site model, it also plans the site around the battery's
step (:func:`battery_worker.fleet.plan_step`) and counts the site's emissions, so every runner that
publishes a plan gets the same one and the same running totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from battery_worker.battery import Action, BatteryState, Step, apply_tick, as_utc, initial_state
from battery_worker.battery_config import BatteryConfig
from battery_worker.emissions import DEFAULT_CARRY_HOURS, EmissionsState, StepEmissions
from battery_worker.fleet.model import SiteModel
from battery_worker.fleet.plan import SitePlan, plan_step
from battery_worker.frozen import fast_init
from battery_worker.policies.base import Decision, Policy, PolicyMemory
from battery_worker.ticks import PriceTick

DECISION_RULES = "2026-12-06T19:30Z"
"""The date (and, for a second change in a day, the UTC time) of the last change to what a tick decides or
refuses, as docs/replay.md lists them (raise it with each): part of the settings' decisions fingerprint,
so workers of two versions that decide differently during a rolling upgrade show two fingerprints."""


@fast_init
@dataclass(frozen=True, slots=True)
class SiteState:
    """Everything a site's future decisions and totals depend on: the battery, the policy's memory and the
    running emissions (with the intensity a missing one is carried from)."""

    battery: BatteryState
    policy_memory: PolicyMemory | None = None
    emissions: EmissionsState = field(default_factory=EmissionsState)

    def is_stale(self, tick: PriceTick) -> bool:
        """A tick at or before the last applied one is a duplicate or arrived out of order: not applied."""
        last = self.battery.last_tick_at
        return last is not None and tick.timestamp <= last


@fast_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """What one tick did at a site: the policy's decision, the battery's step, its emissions (with the
    intensity they used: given, carried or None), the site's new state and, when dispatched with a site
    model, the site's plan of the step (None without one)."""

    decision: Decision
    step: Step
    state: SiteState
    emissions: StepEmissions
    intensity: float | None
    plan: SitePlan | None = None


def new_site_state(config: BatteryConfig, policy: Policy) -> SiteState:
    return SiteState(battery=initial_state(config), policy_memory=policy.initial_memory())


def dispatch(
    tick: PriceTick,
    site: SiteState,
    config: BatteryConfig,
    policy: Policy,
    *,
    carry_hours: float = DEFAULT_CARRY_HOURS,
    site_model: SiteModel | None = None,
    curtail: bool = False,
) -> Outcome:
    """Decide, apply and count the step's emissions (a missing intensity carried for ``carry_hours``).

    With ``site_model``, the step's site plan too (``curtail``: the policy plans the machines, see
    :func:`plan_step`), at the intensity the emissions used, and its ``grid_import_kg`` added to the
    site's running ``site_kg``. Without it (the backtest, which plans afterwards), no plan.

    The policy sees the tick with the intensity its emissions will be counted at: a missing one carried
    (:func:`with_carried_intensity`), so a carbon price weighs a gap in the intensity feed as the totals and
    the optimum do, not as free energy.

    Raises ``TimestampNotIncreasing`` for a stale tick, leaving ``site`` as it was.
    """
    seen = with_carried_intensity(tick, site.emissions, carry_hours)
    decision, memory = policy.decide(seen, site.battery, config, site.policy_memory)
    step = apply_tick(
        config, site.battery, decision.action, decision.power_mw, tick.energy_price, tick.timestamp
    )
    found, used, totals = count_emissions(
        site.emissions, step, as_utc(tick.timestamp), tick.carbon_intensity, carry_hours
    )
    plan = None
    if site_model is not None:
        plan = plan_step(site_model, tick, step, curtail=curtail, intensity=used)
        totals = totals.add_site(plan.grid_import_kg)
    state = SiteState(battery=step.state, policy_memory=memory, emissions=totals)
    return Outcome(decision=decision, step=step, state=state, emissions=found, intensity=used, plan=plan)


def with_carried_intensity(tick: PriceTick, emissions: EmissionsState, carry_hours: float) -> PriceTick:
    """The tick as a policy sees it: without an intensity of its own, the one carried to it (if any).

    Only the policy sees the copy; the step's emissions are counted on the tick as it came, so a carried
    intensity is still counted as carried, not as given.
    """
    if tick.carbon_intensity is not None or emissions.carried.intensity is None:
        return tick
    carried, _ = emissions.carried.step(as_utc(tick.timestamp), None, carry_hours)
    if carried is None:
        return tick
    return tick.model_copy(update={"carbon_intensity": carried})


def count_emissions(
    emissions: EmissionsState, step: Step, at: datetime, intensity: float | None, carry_hours: float
) -> tuple[StepEmissions, float | None, EmissionsState]:
    """A step's emissions, the intensity they used and the totals after them (:meth:`EmissionsState.step`).

    Charging buys the step's energy from the grid, discharging spares the site as much. Every step counts,
    a decision's or a manual one (``BatterySystem.charge``), so the totals cover all energy bought.
    """
    bought = step.energy_mwh if step.action is Action.CHARGE else 0.0
    delivered = step.energy_mwh if step.action is Action.DISCHARGE else 0.0
    return emissions.step(at, intensity, bought, delivered, carry_hours)
