"""``BatterySystem``: the seed project's Python API, kept as a thin, thread-safe façade over the pure domain.

Everything the seed README shows runs as written (with ``battery.battery_system`` replaced by
``battery_worker``). What the seed got wrong is not kept: ``make_decision`` steps the battery by the time
since the previous decision (the seed always assumed one hour), the battery charges to exactly full, and the
charge threshold is the 1.7 the seed specified (its "1.5" was a typo).

``make_decision`` without a ``timestamp`` uses the clock (``clock`` argument, UTC now by default) to measure
the step; pass timestamps to get fully reproducible results. Its answer carries ``site_plan``, the machines
to run beside the battery's step and the step's money (:func:`battery_worker.fleet.plan_step`, made by
:func:`dispatch` as for the worker), exactly what the worker publishes in ``battery.actions``, and
``emissions``, the step's and the running totals (``get_status()["emissions"]``, with the whole site's
``total_site_kg``) counted as the worker counts them.
"""

from __future__ import annotations

import numbers
import os
import threading
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from battery_worker.battery import Action, Limit, Step, apply_for, as_utc
from battery_worker.battery_config import BatteryConfig, require_finite
from battery_worker.chemistries import chemistry_fields
from battery_worker.dispatch import SiteState, count_emissions, dispatch, new_site_state
from battery_worker.emissions import DEFAULT_CARRY_HOURS, EmissionsState
from battery_worker.errors import InvalidConfig, InvalidInput, TimestampNotIncreasing
from battery_worker.events import status_fields
from battery_worker.fleet.model import SiteModel
from battery_worker.outputs import write_atomically
from battery_worker.pipeline.payloads import emissions_payload, outcome_emissions
from battery_worker.policies import make_policy, plans_machines
from battery_worker.policies.base import Policy
from battery_worker.policies.threshold import ThresholdPolicy
from battery_worker.sites import SiteSetup
from battery_worker.ticks import CarbonIntensity, make_tick

_INTENSITY: TypeAdapter[float | None] = TypeAdapter(CarbonIntensity | None)


class ImportLimitWarning(UserWarning):
    """The site plans may report an import above the site's limit (:meth:`SiteSetup.import_limit_warning`)."""


class SpillWarning(UserWarning):
    """A discharge may be more than the site takes, the rest spilled (:meth:`SiteSetup.spill_warning`)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class BatterySystem:
    """A virtual battery that decides from prices and keeps a history of what it did.

    ``site`` is the site around it (grid limits and fleet; the default site when None, or the ``site``
    policy's own model): every decision's ``site_plan`` is planned on it. ``policy`` is a policy's name
    (built with its defaults, on ``site``) or a policy made by ``make_policy``; the thresholds and demands
    are the default ``threshold`` policy's.
    """

    def __init__(
        self,
        capacity_mwh: float | None = None,
        max_charge_rate_mw: float | None = None,
        max_discharge_rate_mw: float | None = None,
        efficiency: float | None = None,
        initial_charge: float | None = None,
        *,
        charge_threshold: float | None = None,
        discharge_threshold: float | None = None,
        mining_demand_mw: float | None = None,
        inference_demand_mw: float | None = None,
        min_charge_percent: float | None = None,
        max_charge_percent: float | None = None,
        default_step_hours: float | None = None,
        max_step_hours: float | None = None,
        battery_type: str | None = None,
        cycle_cost_per_mwh: float | None = None,
        max_cycles_per_day: float | None = None,
        cycle_day_timezone: str | None = None,
        policy: Policy | str | None = None,
        site: SiteModel | None = None,
        carry_hours: float = DEFAULT_CARRY_HOURS,
        clock: Callable[[], datetime] = _utc_now,
        max_history: int | None = None,
    ) -> None:
        """A field left at None is :class:`BatteryConfig`'s (100 MWh, 20 MW each way, 90 %, 50 %
        charged, ...) or the threshold policy's (1.7 / 2.0, 15 + 10 MW), where ``battery_type`` (``lfp``,
        ``nmc``: :mod:`battery_worker.chemistries`) does not set it: the preset fills what is not given,
        as the settings' ``battery_type`` does."""
        given = {
            "capacity_mwh": capacity_mwh,
            "max_charge_rate_mw": max_charge_rate_mw,
            "max_discharge_rate_mw": max_discharge_rate_mw,
            "efficiency": efficiency,
            "initial_charge_percent": initial_charge,
            "min_charge_percent": min_charge_percent,
            "max_charge_percent": max_charge_percent,
            "default_step_hours": default_step_hours,
            "max_step_hours": max_step_hours,
            "cycle_cost_per_mwh": cycle_cost_per_mwh,
            "max_cycles_per_day": max_cycles_per_day,
            "cycle_day_timezone": cycle_day_timezone,
        }
        explicit = {name: _plain(value) for name, value in given.items() if value is not None}
        self._config = BatteryConfig(**{**chemistry_fields(battery_type), **explicit})
        if site is not None and not isinstance(site, SiteModel):
            raise InvalidConfig("site", repr(site)[:80], "must be a SiteModel (battery_worker.fleet.model)")
        require_finite("carry_hours", carry_hours, InvalidConfig)
        if carry_hours < 0:
            raise InvalidConfig("carry_hours", carry_hours, "must be >= 0 hours")
        arguments = {
            "charge_threshold": charge_threshold,
            "discharge_threshold": discharge_threshold,
            "mining_demand_mw": mining_demand_mw,
            "inference_demand_mw": inference_demand_mw,
        }
        thresholds = {
            _THRESHOLD_PARAMETERS[argument]: _plain(value)
            for argument, value in arguments.items()
            if value is not None
        }
        if policy == "threshold":
            policy = None  # the named threshold policy: built with the thresholds given, as by default
        if isinstance(policy, str):
            policy = make_policy(policy, site=site)
        elif policy is not None and not callable(getattr(policy, "decide", None)):
            raise InvalidConfig(
                "policy", repr(policy)[:80], "must be a policy name (threshold, mpc, ...) or a Policy"
            )
        stray = [(argument, value) for argument, value in arguments.items() if value is not None]
        if policy is not None and stray:  # they were dropped without a word: BatterySystem(policy="mpc", ...)
            problem = f"is the threshold policy's, not taken with policy {policy.name!r} (its own parameters)"
            raise InvalidConfig(stray[0][0], stray[0][1], problem)
        self._policy: Policy = policy or ThresholdPolicy(**thresholds)
        policy_site = getattr(self._policy, "site", None)
        if site is not None and isinstance(policy_site, SiteModel) and policy_site != site:
            raise InvalidConfig(
                "site", "SiteModel(...)", "differs from the policy's own site model; give one"
            )
        self._site_model = site or (policy_site if isinstance(policy_site, SiteModel) else SiteModel())
        categories = {"import_limit": ImportLimitWarning, "spill": SpillWarning}
        for kind, said in SiteSetup(self._config, self._policy, self._site_model).warnings().items():
            warnings.warn(said, categories.get(kind, UserWarning), stacklevel=2)
        self._site: SiteState = new_site_state(self._config, self._policy)
        self._carry_hours = carry_hours
        if not callable(clock):
            raise InvalidConfig("clock", clock, "must be a function that returns the time (a datetime)")
        self._clock = clock
        self._last_updated: datetime = self._now()  # UTC as every later one (a step's time) is
        if max_history is not None and (isinstance(max_history, bool) or not isinstance(max_history, int)):
            raise InvalidConfig("max_history", max_history, "must be a whole number of entries, or None")
        if max_history is not None and max_history < 0:
            raise InvalidConfig("max_history", max_history, "must be >= 0 entries")
        # All of it by default, as the seed kept; a loop deciding every minute for a year keeps 525,600
        # entries (about 1 KB each), so a long-running one keeps the newest ``max_history``.
        self._history: deque[dict[str, Any]] = deque(maxlen=max_history)
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled and copied as its state, without the lock (a lock cannot be): a battery can be saved
        and resumed. The clock goes too, so it must be picklable (the default is)."""
        with self._lock:
            state = self.__dict__.copy()
            # Its own copy, taken under the lock: the live log, walked by deepcopy or pickle after the lock
            # is let go, grew meanwhile in other threads, and the copy's history disagreed with its state.
            state["_history"] = deque(self._history, maxlen=self._history.maxlen)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if not isinstance(self._history, deque):  # pickled before max_history: a list, kept whole
            self._history = deque(self._history)
        self._lock = threading.RLock()

    @property
    def config(self) -> BatteryConfig:
        return self._config

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def site(self) -> SiteModel:
        return self._site_model

    @property
    def history(self) -> list[dict[str, Any]]:
        """A copy of the operation log, oldest first."""
        with self._lock:
            return [dict(entry) for entry in self._history]

    def get_status(self) -> dict[str, Any]:
        """The seed's status fields (``charge_level_percent``, ``available_energy_mwh``, ``capacity_mwh``,
        the rates, ``efficiency``, ``total_energy_stored_mwh``, ``total_energy_used_mwh``, ``can_charge``,
        ``can_discharge``, ``last_updated``), the money and energy totals of the status event (``net_value``
        before wear, ``wear_cost``, ``net_value_after_wear``), ``policy``, the thresholds under
        ``threshold``, and ``emissions`` (the running totals, named as in the
        events)."""
        with self._lock:
            status: dict[str, Any] = {
                **status_fields(self._site.battery, self._config, self._last_updated),
                "policy": self._policy.name,
            }
            status["charge_level_percent"] = round(status["charge_level_percent"], 4)
            status["available_energy_mwh"] = round(status["available_energy_mwh"], 6)
            status["last_updated"] = self._last_updated.isoformat()
            if isinstance(self._policy, ThresholdPolicy):
                status["charge_threshold"] = self._policy.charge_below
                status["discharge_threshold"] = self._policy.discharge_above
            status["emissions"] = emissions_totals(self._site.emissions)
            return status

    def make_decision(
        self,
        energy_price: float,
        hash_price: float,
        token_price: float,
        timestamp: datetime | str | float | None = None,
        carbon_intensity: float | None = None,
    ) -> dict[str, Any]:
        """Decide from the prices and apply the decision for the time since the previous decision.

        ``timestamp`` is the tick's time: a datetime, ISO 8601 text, or seconds since the Unix epoch (as
        pydantic reads a number, above 2e10 as milliseconds); None is the clock's now.

        Returns ``action`` (charge, discharge, hold), ``reason``, ``result`` (``success``, ``power_mw``,
        ``duration_hours``, ``energy_mwh``, ``charge_level_percent``, and ``limited_by``, ``gap_hours`` or
        ``error`` when they apply), ``site_plan`` (as in ``battery.actions``) and ``emissions``.

        ``carbon_intensity`` (kgCO₂eq/MWh) counts the step's emissions, as the worker does; without it the
        last known one is carried for ``carry_hours``, then the step's emissions are unknown.
        """
        with self._lock:
            at = self._now() if timestamp is None else timestamp
            tick = make_tick(energy_price, hash_price, token_price, at, carbon_intensity=carbon_intensity)
            try:
                outcome = dispatch(
                    tick,
                    self._site,
                    self._config,
                    self._policy,
                    carry_hours=self._carry_hours,
                    site_model=self._site_model,
                    curtail=plans_machines(self._policy.name),
                )
            except TimestampNotIncreasing as error:
                if timestamp is not None:
                    raise
                raise TimestampNotIncreasing(  # it named a timestamp the caller never gave
                    "timestamp",
                    tick.timestamp.isoformat(),
                    f"{error.problem}: no timestamp was given, so "
                    "this is the clock's now (a clock set back, or an earlier call's timestamp ahead of it); "
                    "give each call its timestamp, or none",
                ) from None
            self._site = outcome.state
            self._last_updated = tick.timestamp
            result = self._result(outcome.step)
            self._record(  # the tick's floats: np.float32 or Decimal kept raw made save_history fail
                outcome.step,
                outcome.decision.reason,
                tick.timestamp,
                tick.energy_price,
                tick.hash_price,
                tick.token_price,
            )
            plan = outcome.plan
            assert plan is not None, "dispatched with the site model"
            return {
                "action": outcome.decision.action.value,
                "reason": outcome.decision.reason,
                "result": result,
                "site_plan": plan.to_json(),
                "emissions": outcome_emissions(tick, outcome),
            }

    def charge(
        self,
        power_mw: float,
        duration_hours: float,
        carbon_intensity: float | None = None,
        *,
        energy_price: float | None = None,
    ) -> dict[str, Any]:
        """Charge at ``power_mw`` (bought from the grid) for ``duration_hours``, clamped to rate and room.

        With ``energy_price`` the energy bought is paid for in ``charging_cost`` as a decision's is; without
        it (the seed's call) the step moves energy and no money, so a later discharge's avoided cost counts
        energy that cost nothing. The energy bought counts in the emissions as a decision's does: at
        ``carbon_intensity`` (kgCO₂eq/MWh), else at the last known one for ``carry_hours`` after the
        decision that gave it (the clock says when this step is), else unknown. The answer carries the
        step's ``emissions``.
        """
        return self._manual(Action.CHARGE, power_mw, duration_hours, carbon_intensity, energy_price)

    def discharge(
        self,
        power_mw: float,
        duration_hours: float,
        carbon_intensity: float | None = None,
        *,
        energy_price: float | None = None,
    ) -> dict[str, Any]:
        """Deliver ``power_mw`` to the site for ``duration_hours``, clamped to rate and energy left.

        With ``energy_price`` the grid energy this spares counts in ``avoided_cost``; the grid energy it
        spares counts as avoided emissions, with the intensity chosen as for :meth:`charge`.
        """
        return self._manual(Action.DISCHARGE, power_mw, duration_hours, carbon_intensity, energy_price)

    def _now(self) -> datetime:
        """The clock's time in UTC; a clock that gives no datetime is a configuration error, not an
        ``AttributeError`` at the first decision (a library review)."""
        now = self._clock()
        if not isinstance(now, datetime):
            raise InvalidConfig("clock", self._clock, f"returned {now!r}, not a datetime")
        return as_utc(now)

    def update_thresholds(
        self, charge_threshold: float | None = None, discharge_threshold: float | None = None
    ) -> None:
        """Change the threshold policy's prices; the pair is validated together, so it cannot disagree."""
        with self._lock:
            if not isinstance(self._policy, ThresholdPolicy):  # as the constructor refuses a misuse
                needs = "update_thresholds needs the threshold policy"
                raise InvalidConfig("policy", self._policy.name, needs)
            changes: dict[str, float] = {}
            if charge_threshold is not None:
                changes["charge_below"] = charge_threshold
            if discharge_threshold is not None:
                changes["discharge_above"] = discharge_threshold
            self._policy = replace(self._policy, **changes)

    def display_status(self) -> None:
        """Print the status as the seed did, for a person at a terminal (:meth:`get_status` for code)."""
        status = self.get_status()
        print("🔋 Battery System Status:")
        print(f"   Charge Level: {status['charge_level_percent']:.1f}%")
        print(f"   Available Energy: {status['available_energy_mwh']:.2f} MWh")
        print(f"   Capacity: {status['capacity_mwh']:.2f} MWh")
        print(f"   Max Charge Rate: {status['max_charge_rate_mw']:.2f} MW")
        print(f"   Max Discharge Rate: {status['max_discharge_rate_mw']:.2f} MW")
        print(f"   Efficiency: {status['efficiency'] * 100:.1f}%")
        print(f"   Total Energy Stored: {status['total_energy_stored_mwh']:.2f} MWh")
        print(f"   Total Energy Used: {status['total_energy_used_mwh']:.2f} MWh")
        print(f"   Can Charge: {'Yes' if status['can_charge'] else 'No'}")
        print(f"   Can Discharge: {'Yes' if status['can_discharge'] else 'No'}")
        print(f"   Last Updated: {status['last_updated']}")

    def save_history(self, filename: str | os.PathLike[str]) -> Path:
        """Write the operation log as JSON atomically: readers see the old file or the new one, never half.

        Encoded by orjson straight from the log: ``json.dumps`` of a copy of it took four times the log's
        memory at its peak (200,000 entries: 182 MB before, 809 MB while saving). It encodes under the lock,
        so other threads' decisions wait for it (100,000 entries: 0.17 s): a consistent file for that."""
        with self._lock:
            payload = orjson.dumps(list(self._history), option=orjson.OPT_INDENT_2)
        return write_atomically(Path(filename), payload)

    def _manual(
        self,
        action: Action,
        power_mw: float,
        duration_hours: float,
        carbon_intensity: float | None,
        energy_price: float | None,
    ) -> dict[str, Any]:
        intensity = _checked_intensity(carbon_intensity)
        power_mw, duration_hours = _plain(power_mw), _plain(duration_hours)
        energy_price = _plain(energy_price)
        with self._lock:
            battery = self._site.battery
            step = apply_for(self._config, battery, action, power_mw, duration_hours, energy_price)
            # The clock's now, or the last decision's time if that is later (decisions given timestamps
            # ahead of the clock): a manual step after a decision stamped 2030 set last_updated back to now.
            at = max(self._now(), self._last_updated)
            emissions = self._site.emissions
            found, used, totals = count_emissions(emissions, step, at, intensity, self._carry_hours)
            self._site = replace(self._site, battery=step.state, emissions=totals)
            self._last_updated = at
            self._record(step, f"manual {action.value}", at, energy_price, None, None)
            result = self._result(step)
            carried = intensity is None and used is not None
            result["emissions"] = emissions_payload(found, used, carried, totals)
            return result

    def _result(self, step: Step) -> dict[str, Any]:
        success = step.action is Action.HOLD or step.energy_mwh > 0
        result: dict[str, Any] = {
            "success": success,
            "power_mw": step.power_mw,
            "duration_hours": step.duration_hours,
            "energy_mwh": step.energy_mwh,
            "charge_level_percent": step.state.charge_percent(self._config),
        }
        if step.limited_by is not None:
            result["limited_by"] = step.limited_by.value
        if step.gap_hours is not None:
            result["gap_hours"] = step.gap_hours
        if not success:
            result["error"] = _why_nothing_moved(step)
        return result

    def _record(
        self,
        step: Step,
        reason: str,
        at: datetime,
        energy_price: float | None,
        hash_price: float | None,
        token_price: float | None,
    ) -> None:
        self._history.append(
            {
                "timestamp": at.isoformat(),
                "action": step.action.value,
                "reason": reason,
                "requested_power_mw": step.requested_power_mw,
                "power_mw": step.power_mw,
                "duration_hours": step.duration_hours,
                "energy_mwh": step.energy_mwh,
                "charge_before_mwh": step.state_of_charge_before_mwh,
                "charge_after_mwh": step.state_of_charge_after_mwh,
                "energy_price": energy_price,
                "hash_price": hash_price,
                "token_price": token_price,
            }
        )


_THRESHOLD_PARAMETERS = {
    "charge_threshold": "charge_below",
    "discharge_threshold": "discharge_above",
    "mining_demand_mw": "mining_demand_mw",
    "inference_demand_mw": "inference_demand_mw",
}
"""The seed's threshold arguments, by the threshold policy's parameter each sets."""


def _plain(value: Any) -> Any:
    """A number of any real type (numpy's) as the float the domain checks and stores: a
    ``make_decision`` price took them while the constructor refused ``np.int64(100)`` as "not a finite
    number". Anything else is left for the domain's check to refuse by name."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool | float):
        return float(value)
    return value


def _checked_intensity(value: float | None) -> float | None:
    """A manual step's intensity, held to the same rule as a tick's ``carbon_intensity``."""
    try:
        checked: float | None = _INTENSITY.validate_python(value)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]["msg"]
        raise InvalidInput("carbon_intensity", value, problem) from None
    return checked


def emissions_totals(totals: EmissionsState) -> dict[str, Any]:
    """The running emissions as ``get_status`` gives them: the running part of the events' ``emissions``,
    under the same names (``total_bought_kg``, ...; it said ``bought_kg`` for a total, the name a decision's
    answer gives the step's figure)."""
    payload = emissions_payload(None, None, False, totals)
    return {key: value for key, value in payload.items() if key.startswith("total_") or key in _COUNTS}


_COUNTS = ("steps", "unknown_steps", "coverage")


def _why_nothing_moved(step: Step) -> str:
    """The seed's error of a charge or discharge that moved no energy, for the reason it did not: "battery
    is full" said of a battery at 50 % asked for zero hours, or with a charge rate of 0, sends its caller
    the wrong way."""
    charging = step.action is Action.CHARGE
    if step.duration_hours <= 0:
        return "nothing to do in 0 hours (duration_hours is 0)"
    if step.requested_power_mw <= 0:
        return "nothing to do at 0 MW (power_mw is 0)"
    if step.limited_by is Limit.RATE:
        return f"the battery may not {'charge' if charging else 'discharge'} (its maximum rate is 0 MW)"
    if step.limited_by is Limit.CYCLES:
        return "the day's cycle cap is reached (max_cycles_per_day)"
    if step.limited_by is None:  # nothing held it back: what was asked is too small to move any energy
        return f"{step.requested_power_mw:g} MW for {step.duration_hours:g} h moves no energy"
    return "battery is full" if charging else "battery is empty"
