"""One tick through one site: policy decides, battery applies. The single path every runner shares.

The Kafka worker, the backtest and the audit replay all call :func:`dispatch`, so a decision recomputed
anywhere is the decision the worker made.
"""

from __future__ import annotations

from dataclasses import dataclass

from battery_worker.battery import BatteryState, Step, apply_tick, initial_state
from battery_worker.battery_config import BatteryConfig
from battery_worker.policies.base import Decision, Policy, PolicyMemory
from battery_worker.ticks import PriceTick


@dataclass(frozen=True, slots=True)
class SiteState:
    """Everything a site's future decisions depend on: the battery and the policy's memory."""

    battery: BatteryState
    policy_memory: PolicyMemory | None = None

    def is_stale(self, tick: PriceTick) -> bool:
        """A tick at or before the last applied one is a duplicate or arrived out of order: not applied."""
        last = self.battery.last_tick_at
        return last is not None and tick.timestamp <= last


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one tick did at a site: the policy's decision, the battery's step and the site's new state."""

    decision: Decision
    step: Step
    state: SiteState


def new_site_state(config: BatteryConfig, policy: Policy) -> SiteState:
    return SiteState(battery=initial_state(config), policy_memory=policy.initial_memory())


def dispatch(tick: PriceTick, site: SiteState, config: BatteryConfig, policy: Policy) -> Outcome:
    """Decide and apply. Raises ``TimestampNotIncreasing`` for a stale tick, leaving ``site`` as it was."""
    decision, memory = policy.decide(tick, site.battery, config, site.policy_memory)
    step = apply_tick(
        config, site.battery, decision.action, decision.power_mw, tick.energy_price, tick.timestamp
    )
    return Outcome(decision=decision, step=step, state=SiteState(battery=step.state, policy_memory=memory))
