"""The battery's effect on grid emissions, step by step. Pure.

Intensity is kgCO₂eq per MWh (= gCO₂eq/kWh). Per step, on the site side:

* ``bought_kg``: the energy bought from the grid to charge × the intensity: emissions the battery causes;
* ``avoided_kg``: the energy delivered × the intensity: grid energy the site did not have to buy;
* ``net_kg = bought_kg − avoided_kg``: the battery's net effect (negative: it lowered emissions).

Losses make ``bought > delivered`` over a cycle, so a battery that buys and delivers at the same intensity
raises emissions by the lost energy; it lowers them only by charging in cleaner hours than it delivers in.

A missing intensity is not zero: the last known value is carried for at most ``carry_hours`` after the tick
it came with, then the step's emissions are unknown and left out of the totals. ``coverage`` says which
share of the steps had an intensity (known or carried), so a total over half the year reads as such.

``carbon_price`` (money per tonne) turns intensity into a cost per MWh: a policy or the optimum that
optimises ``price + carbon_price × intensity / 1000`` trades money for emissions
(:func:`effective_prices`); where the intensity is unknown, the price alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from battery_worker.battery import as_utc
from battery_worker.errors import InvalidInput
from battery_worker.frozen import fast_init

DEFAULT_CARRY_HOURS = 3.0
KG_PER_TONNE = 1000.0


@fast_init
@dataclass(frozen=True, slots=True)
class Carried:
    """The last known intensity and when it was known: what a missing one is carried from."""

    intensity: float | None = None
    at: datetime | None = None

    def step(
        self, at: datetime, intensity: float | None, carry_hours: float = DEFAULT_CARRY_HOURS
    ) -> tuple[float | None, Carried]:
        """The intensity of the step at ``at`` (given, carried, or None: unknown) and the state after it."""
        if intensity is not None:
            return intensity, Carried(intensity, at)
        if self.intensity is None or self.at is None:
            return None, self
        age_hours = (as_utc(at) - as_utc(self.at)).total_seconds() / 3600.0
        return (self.intensity if age_hours <= carry_hours else None), self


def carried_intensities(
    timestamps: Sequence[datetime],
    intensities: Sequence[float | None],
    carry_hours: float = DEFAULT_CARRY_HOURS,
) -> list[float | None]:
    """Each step's intensity, a missing one carried from the last known for at most ``carry_hours``."""
    if len(timestamps) != len(intensities):
        raise InvalidInput("intensities", len(intensities), f"must have one per step ({len(timestamps)})")
    _check_carry_hours(carry_hours)
    state = Carried()
    out: list[float | None] = []
    for at, intensity in zip(timestamps, intensities, strict=True):
        value, state = state.step(at, intensity, carry_hours)
        out.append(value)
    return out


def effective_price(price: float, intensity: float | None, carbon_price: float) -> float:
    """What one MWh costs with its emissions priced in; the price itself when the intensity is unknown or
    the carbon price is 0 (exactly the price, so a zero carbon price changes no decision)."""
    if intensity is None or carbon_price == 0.0:
        return price
    return price + carbon_price * intensity / KG_PER_TONNE


def effective_prices(
    prices: Sequence[float], intensities: Sequence[float | None], carbon_price: float
) -> list[float]:
    """:func:`effective_price` per step (``intensities`` already carried)."""
    return [effective_price(p, i, carbon_price) for p, i in zip(prices, intensities, strict=True)]


@fast_init
@dataclass(frozen=True, slots=True)
class StepEmissions:
    """One step's emissions in kg; all None when the intensity is unknown."""

    bought_kg: float | None
    avoided_kg: float | None
    net_kg: float | None


def step_emissions(bought_mwh: float, delivered_mwh: float, intensity: float | None) -> StepEmissions:
    if intensity is None:
        return StepEmissions(None, None, None)
    bought, avoided = bought_mwh * intensity, delivered_mwh * intensity
    return StepEmissions(bought, avoided, bought - avoided)


@dataclass(frozen=True, slots=True)
class Emissions:
    """Totals over the steps whose intensity was known or carried; ``coverage`` is their share."""

    bought_kg: float
    avoided_kg: float
    net_kg: float
    steps: int
    known_steps: int
    carried_steps: int

    @property
    def coverage(self) -> float:
        return (self.known_steps + self.carried_steps) / self.steps if self.steps else 0.0

    @property
    def net_tonnes(self) -> float:
        return self.net_kg / KG_PER_TONNE


@fast_init
@dataclass(frozen=True, slots=True)
class EmissionsState:
    """A site's running emissions: what a restarted worker must carry on from, so it lives in the state.

    ``carried`` is the last known intensity and its time (what a missing one is carried from).
    ``steps`` counts the steps seen since the totals started, ``known_steps`` and ``carried_steps`` those
    whose intensity was given or carried; the rest were unknown and are left out of the totals.
    ``site_kg`` is the whole site's emissions (its grid import × the intensity, machines and battery
    together) over the same steps; it stays 0 where no site plan is made (:meth:`add_site`).
    """

    bought_kg: float = 0.0
    avoided_kg: float = 0.0
    steps: int = 0
    known_steps: int = 0
    carried_steps: int = 0
    carried: Carried = Carried()
    site_kg: float = 0.0

    @property
    def net_kg(self) -> float:
        return self.bought_kg - self.avoided_kg

    @property
    def unknown_steps(self) -> int:
        return self.steps - self.known_steps - self.carried_steps

    @property
    def coverage(self) -> float:
        return (self.known_steps + self.carried_steps) / self.steps if self.steps else 0.0

    def totals(self) -> Emissions:
        return Emissions(
            self.bought_kg, self.avoided_kg, self.net_kg, self.steps, self.known_steps, self.carried_steps
        )

    def step(
        self,
        at: datetime,
        intensity: float | None,
        bought_mwh: float,
        delivered_mwh: float,
        carry_hours: float = DEFAULT_CARRY_HOURS,
    ) -> tuple[StepEmissions, float | None, EmissionsState]:
        """One step: its emissions, the intensity it used (given, carried or None) and the totals after it.

        The one rule every runner applies (worker, replay, backtest, Python API), so their totals agree.
        """
        used, carried = self.carried.step(at, intensity, carry_hours)
        found = step_emissions(float(bought_mwh), float(delivered_mwh), used)
        if found.bought_kg is None or found.avoided_kg is None:
            unknown = (self.bought_kg, self.avoided_kg, self.steps + 1, self.known_steps, self.carried_steps)
            return found, used, EmissionsState(*unknown, carried, self.site_kg)
        given = intensity is not None
        after = EmissionsState(
            self.bought_kg + found.bought_kg,
            self.avoided_kg + found.avoided_kg,
            self.steps + 1,
            self.known_steps + given,
            self.carried_steps + (not given),
            carried,
            self.site_kg,
        )
        return found, used, after

    def add_site(self, site_kg: float | None) -> EmissionsState:
        """The totals with one step's site emissions added (``SitePlan.grid_import_kg`` of the step
        :meth:`step` counted; None, an unknown intensity, adds nothing and is not zero).

        The one rule the worker, the replay and the Python API apply after :meth:`step`, so a restarted
        worker's ``site_kg`` is the sum of its actions' ``grid_import_kg``.
        """
        if site_kg is None:
            return self
        counted = (self.bought_kg, self.avoided_kg, self.steps, self.known_steps, self.carried_steps)
        return EmissionsState(*counted, self.carried, self.site_kg + site_kg)


def counted_between(start: EmissionsState, end: EmissionsState) -> Emissions:
    """The totals one site counted from ``start`` to ``end`` (from a fresh site: ``end``'s, exactly)."""
    return Emissions(
        end.bought_kg - start.bought_kg,
        end.avoided_kg - start.avoided_kg,
        end.net_kg - start.net_kg,
        end.steps - start.steps,
        end.known_steps - start.known_steps,
        end.carried_steps - start.carried_steps,
    )


def emissions(
    timestamps: Sequence[datetime],
    intensities: Sequence[float | None],
    bought_mwh: Sequence[float],
    delivered_mwh: Sequence[float],
    carry_hours: float = DEFAULT_CARRY_HOURS,
) -> Emissions:
    """The totals of a run: ``intensities`` as the ticks carried them (None: missing), energies per step."""
    n = len(timestamps)
    if len(intensities) != n:
        raise InvalidInput("intensities", len(intensities), f"must have one per step ({n})")
    if len(bought_mwh) != n or len(delivered_mwh) != n:
        raise InvalidInput("energies", (len(bought_mwh), len(delivered_mwh)), f"must have one per step ({n})")
    _check_carry_hours(carry_hours)
    state = EmissionsState()
    for at, given, charged, delivered in zip(timestamps, intensities, bought_mwh, delivered_mwh, strict=True):
        _, _, state = state.step(at, given, charged, delivered, carry_hours)
    return state.totals()


def _check_carry_hours(carry_hours: float) -> None:
    if not (math.isfinite(carry_hours) and carry_hours >= 0):
        raise InvalidInput("carry_hours", carry_hours, "must be a finite number of hours >= 0")
