"""One step of a site: which machines run beside a given battery power, and the step's money. Pure.

Why a function of the battery power: the policy decides the battery, the state machine clamps it, and the
machines are then the best use of the step's known prices around what the battery really did. The worker,
the replay and the Python API call :func:`plan_step` through ``dispatch`` (given the site model), the
backtest :func:`plan_applied`, with the same inputs, so they agree.

The rule: machines at their minimum count always run; then types in order of revenue per MW (best first,
declared order on ties) run whole machines while a machine earns more than the energy it draws costs. The
energy's cost per MW rises with the load: while the battery's discharge is more than the site can use or
export, extra load costs nothing (the energy would be spilled); while it is exported, extra load costs the
export price (``export_price_factor`` × energy_price); beyond, it is imported at the energy price, up to
the import limit. For prices >= 0 those costs only rise, so the greedy fill is optimal but for the
last, partial machine of a type (counts are whole).

Money of the step (``hours`` long, units in :mod:`battery_worker.fleet.model`): ``energy_cost`` is the
loads' energy at the energy price, ``battery_value`` what the battery adds (−battery MWh × price, less
energy spilled and export paid below the price), and ``net = mining + inference − energy_cost +
battery_value``, which equals the revenues minus the grid's bill (imports less exports).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from battery_worker.battery import Action, Step
from battery_worker.fleet.model import MachineType, SiteModel
from battery_worker.frozen import fast_init
from battery_worker.ticks import PriceTick

EPSILON_MW = 1e-9
MAX_CACHED_FLEETS = 4096
"""Entries of each per-tick cache below; cleared when full (a day of 5-minute ticks has 288 prices)."""


@dataclass(frozen=True, slots=True)
class MachineRun:
    name: str
    running: int
    mw: float


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class SitePlan:
    """A step's plan. Battery MW is signed: + charging, − discharging (site side, after the site's window)."""

    hours: float
    machines: tuple[MachineRun, ...]
    mining_mw: float
    inference_mw: float
    battery_mw: float
    grid_import_mw: float
    grid_export_mw: float
    spilled_mw: float
    energy_cost: float
    mining_revenue: float
    inference_revenue: float
    battery_value: float
    net: float
    # The site's emissions of the step: grid import × the step's carbon intensity (None: unknown).
    grid_import_kg: float | None = None

    def to_json(self, machines: object = None) -> dict[str, object]:
        """Plain JSON in the field order of ``events.SitePlanEvent``: counts ints, every other number a float
        (a sum over no machines is the int 0, which the event would write as 0.0). The machines are copied
        from a cache per runs tuple, so a caller may change what it gets; or ``machines`` stands for them
        (the worker's events pass them encoded once per runs tuple, not copied and encoded per tick)."""
        return {
            "hours": float(self.hours),
            "machines": [dict(machine) for machine in machines_json(self.machines)]
            if machines is None
            else machines,
            "mining_mw": float(self.mining_mw),
            "inference_mw": float(self.inference_mw),
            "battery_mw": float(self.battery_mw),
            "grid_import_mw": float(self.grid_import_mw),
            "grid_export_mw": float(self.grid_export_mw),
            "spilled_mw": float(self.spilled_mw),
            "energy_cost": float(self.energy_cost),
            "mining_revenue": float(self.mining_revenue),
            "inference_revenue": float(self.inference_revenue),
            "battery_value": float(self.battery_value),
            "net": float(self.net),
            "grid_import_kg": None if self.grid_import_kg is None else float(self.grid_import_kg),
        }

    def with_intensity(self, intensity: float | None) -> SitePlan:
        """The plan with its grid import's emissions at ``intensity`` (kg/MWh; None: unknown)."""
        if intensity is None:
            return self
        return replace(self, grid_import_kg=self.grid_import_mw * self.hours * intensity)


_machines_json_cache: dict[int, tuple[tuple[MachineRun, ...], list[dict[str, object]]]] = {}


def machines_json(runs: tuple[MachineRun, ...]) -> list[dict[str, object]]:
    """The runs as JSON, remembered per runs tuple (the fleet cache hands out the same tuple each tick);
    shared, so not to be changed: :meth:`SitePlan.to_json` hands out copies."""
    hit = _machines_json_cache.get(id(runs))
    if hit is not None and hit[0] is runs:
        return hit[1]
    data: list[dict[str, object]] = [
        {"name": run.name, "running": int(run.running), "mw": float(run.mw)} for run in runs
    ]
    if len(_machines_json_cache) >= MAX_CACHED_FLEETS:
        _machines_json_cache.clear()
    _machines_json_cache[id(runs)] = (runs, data)
    return data


def signed_battery_mw(action: Action, power_mw: float) -> float:
    """A battery step's power as the plan takes it: + charging, − discharging, 0 holding."""
    return power_mw if action is Action.CHARGE else -power_mw if action is Action.DISCHARGE else 0.0


def plan_tick(site: SiteModel, tick: PriceTick, battery_mw: float, hours: float) -> SitePlan:
    return plan_site(site, tick.energy_price, tick.hash_price, tick.token_price, battery_mw, hours)


def plan_step(
    site: SiteModel, tick: PriceTick, step: Step, *, curtail: bool, intensity: float | None = None
) -> SitePlan:
    """The plan of an applied tick, as every runner publishes it (worker, replay, Python API).

    ``curtail``: the policy plans the machines (``site``), so they are :func:`plan_site` of the tick
    around the battery's real power. Otherwise (``threshold``, ``adaptive``, ``mpc``) every machine runs,
    as before the site model existed, and the plan only accounts for the step. ``intensity`` is the
    step's carbon intensity as the emissions counted it (given or carried): the whole site's emissions.
    """
    battery_mw = signed_battery_mw(step.action, step.power_mw)
    hours = float(step.duration_hours)
    plan = plan_applied(
        site, tick.energy_price, tick.hash_price, tick.token_price, battery_mw, hours, curtail=curtail
    )
    return plan.with_intensity(intensity)


def plan_applied(
    site: SiteModel,
    energy_price: float,
    hash_price: float,
    token_price: float,
    battery_mw: float,
    hours: float,
    *,
    curtail: bool,
) -> SitePlan:
    """:func:`plan_step` from the prices and the battery's signed power: what the backtest holds."""
    if curtail:
        return plan_site(site, energy_price, hash_price, token_price, battery_mw, hours)
    return _money(site, _all_running(site, hash_price, token_price), energy_price, battery_mw, hours)


def plan_site(
    site: SiteModel,
    energy_price: float,
    hash_price: float,
    token_price: float,
    battery_mw: float,
    hours: float,
) -> SitePlan:
    """The machines to run for ``hours`` beside ``battery_mw`` (clamped to the site's battery window)."""
    max_charge, max_discharge = site.battery_window_mw()
    battery = min(max(battery_mw, -max_discharge), max_charge)
    cost = _EnergyCost(site, energy_price, battery)
    running = {machine.name: machine.min_running for machine in site.machines}
    load = site.min_load_mw
    ranked = sorted(
        enumerate(site.machines),
        key=lambda item: (-item[1].revenue_per_mwh(hash_price, token_price), item[0]),
    )
    for _, machine in ranked:
        added, load = _fill(machine, machine.count - machine.min_running, load, cost, hash_price, token_price)
        running[machine.name] += added
    return account(site, energy_price, hash_price, token_price, running, battery, hours)


def account(
    site: SiteModel,
    energy_price: float,
    hash_price: float,
    token_price: float,
    running: dict[str, int],
    battery_mw: float,
    hours: float,
) -> SitePlan:
    """The plan and money of a step with ``running`` machines per type (e.g. all of them: no curtailment)."""
    return _money(site, _fleet(site, hash_price, token_price, running), energy_price, battery_mw, hours)


@dataclass(frozen=True, slots=True)
class _Fleet:
    """The machines' side of a step, per hour: what depends on the running counts and the two output prices
    only, not on the energy price, the battery or the step's length."""

    runs: tuple[MachineRun, ...]
    mining_mw: float
    inference_mw: float
    mining_revenue_per_hour: float
    inference_revenue_per_hour: float


def _fleet(site: SiteModel, hash_price: float, token_price: float, running: dict[str, int]) -> _Fleet:
    """One pass over the types; sums in the types' order."""
    runs = []
    mining_mw = inference_mw = mining_revenue = inference_revenue = 0.0
    for m in site.machines:
        count = running[m.name]
        mw = count * m.machine_mw
        runs.append(MachineRun(m.name, count, mw))
        if m.paid_by == "hash":
            mining_mw += mw
            mining_revenue += count * m.machine_revenue_per_hour(hash_price, token_price)
        else:
            inference_mw += mw
            inference_revenue += count * m.machine_revenue_per_hour(hash_price, token_price)
    return _Fleet(tuple(runs), mining_mw, inference_mw, mining_revenue, inference_revenue)


_all_running_cache: dict[tuple[int, float, float], tuple[SiteModel, _Fleet]] = {}


def _all_running(site: SiteModel, hash_price: float, token_price: float) -> _Fleet:
    """:func:`_fleet` with every machine running, remembered per site model and output prices.

    Every applied tick of a policy that does not plan the machines needs it, and hash and token prices
    change far less often than ticks arrive; the same inputs give the same floats, cached or not. Keyed
    by the model's identity (a model is immutable; the entry keeps it alive, so the id stays its own).
    """
    key = (id(site), hash_price, token_price)
    hit = _all_running_cache.get(key)
    if hit is not None and hit[0] is site:
        return hit[1]
    fleet = _fleet(site, hash_price, token_price, {m.name: m.count for m in site.machines})
    if len(_all_running_cache) >= MAX_CACHED_FLEETS:
        _all_running_cache.clear()
    _all_running_cache[key] = (site, fleet)
    return fleet


def _money(site: SiteModel, fleet: _Fleet, energy_price: float, battery_mw: float, hours: float) -> SitePlan:
    mining_revenue = fleet.mining_revenue_per_hour * hours
    inference_revenue = fleet.inference_revenue_per_hour * hours
    mining_mw, inference_mw = fleet.mining_mw, fleet.inference_mw
    load = mining_mw + inference_mw
    net_mw = load + battery_mw
    export = min(max(-net_mw, 0.0), site.export_limit_mw)
    spilled = max(-net_mw - site.export_limit_mw, 0.0)
    energy_cost = load * hours * energy_price
    below_price = (1.0 - site.export_price_factor) * export
    battery_value = -(battery_mw + spilled + below_price) * hours * energy_price
    return SitePlan(
        hours=hours,
        machines=fleet.runs,
        mining_mw=mining_mw,
        inference_mw=inference_mw,
        battery_mw=battery_mw,
        grid_import_mw=max(net_mw, 0.0),
        grid_export_mw=export,
        spilled_mw=spilled,
        energy_cost=energy_cost,
        mining_revenue=mining_revenue,
        inference_revenue=inference_revenue,
        battery_value=battery_value,
        net=mining_revenue + inference_revenue - energy_cost + battery_value,
    )


class _EnergyCost:
    """What extra load costs per MW at each site load: 0 while spilling, export price, then import price."""

    def __init__(self, site: SiteModel, energy_price: float, battery_mw: float) -> None:
        spill_end = max(0.0, -site.export_limit_mw - battery_mw)
        export_end = max(0.0, -battery_mw)
        self.segments = (
            (spill_end, 0.0),
            (export_end, site.export_price_factor * energy_price),
            (math.inf, energy_price),
        )
        self.cap_mw = site.import_limit_mw - battery_mw

    def marginal(self, load: float) -> tuple[float, float]:
        """Cost per MW at ``load`` and the load where that cost ends."""
        for end, price in self.segments:
            if load + EPSILON_MW < end:
                return price, end
        return self.segments[-1][1], math.inf

    def between(self, low: float, high: float) -> float:
        """Cost per hour of the load from ``low`` to ``high`` MW."""
        total, start = 0.0, 0.0
        for end, price in self.segments:
            overlap = min(high, end) - max(low, start)
            if overlap > 0:
                total += overlap * price
            start = end
        return total


def _fill(
    machine: MachineType, spare: int, load: float, cost: _EnergyCost, hash_price: float, token_price: float
) -> tuple[int, float]:
    """Machines of ``machine`` worth running above ``load`` (at most ``spare``), and the load after them."""
    width = machine.machine_mw
    revenue = machine.machine_revenue_per_hour(hash_price, token_price)
    per_mw = machine.revenue_per_mwh(hash_price, token_price)
    added = 0
    while added < spare and load + width <= cost.cap_mw + EPSILON_MW:
        price, end = cost.marginal(load)
        whole = min(spare - added, math.floor((min(end, cost.cap_mw) - load) / width + EPSILON_MW))
        if whole >= 1:
            if per_mw <= price:
                break
            added, load = added + whole, load + whole * width
            continue
        # The next machine straddles a change of cost: run it if it earns more than its energy costs.
        if revenue <= cost.between(load, load + width):
            break
        added, load = added + 1, load + width
    return added, load
