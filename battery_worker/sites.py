"""Which battery, site model and policy a site uses: the defaults, overridden per site from the settings.

A site's battery is the default one, then its battery type's preset (:mod:`battery_worker.chemistries`), then
the fields set for it explicitly: the more specific wins. Its site model (grid limits and fleet,
:mod:`battery_worker.fleet.model`) is the default one with its own fields replaced. A policy that plans the
machines (``site``) is built with the site's model. ``carry_hours`` (how long a missing carbon intensity is
carried, :mod:`battery_worker.emissions`) is the same for every site.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from battery_worker.battery_config import (
    FRACTIONS_BELOW,
    PERCENTS_NOT_FRACTIONS,
    BatteryConfig,
    BatteryFields,
)
from battery_worker.chemistries import chemistry_fields
from battery_worker.emissions import DEFAULT_CARRY_HOURS
from battery_worker.errors import InvalidConfig
from battery_worker.fleet.model import SiteModel
from battery_worker.fleet.settings import site_model_with
from battery_worker.policies import Policy, make_policy, plans_machines
from battery_worker.policies.threshold import ThresholdPolicy


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    name: str = "threshold"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SiteOverride:
    battery: BatteryFields = field(default_factory=dict)
    policy: PolicyChoice | None = None
    battery_type: str | None = None
    site: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SiteSetup:
    config: BatteryConfig
    policy: Policy
    site: SiteModel = field(default_factory=SiteModel)
    carry_hours: float = DEFAULT_CARRY_HOURS

    @property
    def plans_machines(self) -> bool:
        """Whether the policy chose the machines (``site``) or every machine runs, as before (the rest)."""
        return plans_machines(self.policy.name)

    def import_limit_warning(self) -> str | None:
        """Why the site plans may import more than the site's limit, or None.

        A policy that runs every machine charges the battery at its own rate beside them: the plan reports
        that import as it is. Said, not refused: the battery's decisions do not depend on the site.
        """
        if self.plans_machines:
            return None
        peak = self.site.fleet_mw + self.config.max_charge_rate_mw
        if peak <= self.site.import_limit_mw:
            return None
        return (
            f"every machine ({self.site.fleet_mw:g} MW) and a full-rate charge "
            f"({self.config.max_charge_rate_mw:g} MW) import {peak:g} MW, above the site's import limit of "
            f"{self.site.import_limit_mw:g} MW: under {self.policy.name} the site plans report such an "
            "import as it is (the site policy and the optimum keep to the limit)"
        )

    def spill_warning(self) -> str | None:
        """Why a discharge may be partly spilled, or None.

        Under a policy that runs every machine the battery discharges at its own rate; what the machines
        and the export limit cannot take is spilled (the site plan's ``spilled_mw``, paid as lost), while
        the battery's emissions count all it delivered as avoided. Said, not refused: a site may be built so.
        ``threshold`` discharges no more than its site demand (25 MW by default): at a larger rate it
        spills nothing, and was warned of (a library review).
        """
        if self.plans_machines:
            return None
        takes = self.site.fleet_mw + self.site.export_limit_mw
        rate = self.config.max_discharge_rate_mw
        if isinstance(self.policy, ThresholdPolicy):  # it discharges no more than its site demand
            rate = min(rate, self.policy.site_demand_mw)
        if rate <= takes:
            return None
        return (
            f"a full-rate discharge ({rate:g} MW) is more than the site takes (every machine "
            f"{self.site.fleet_mw:g} MW and an export limit of {self.site.export_limit_mw:g} MW): under "
            f"{self.policy.name} the rest is spilled, paid as lost in the site plan, while the battery's "
            "emissions count it as avoided"
        )

    def window_warning(self) -> str | None:
        """Why the state-of-charge window looks written as fractions, or None.

        ``max_charge_percent = 0.9`` meant as 90 % passed (a fleet review): the battery ran in a window of
        under 1 % of its capacity. Said, not refused: nothing forbids a battery so used."""
        config = self.config
        if config.max_charge_percent > FRACTIONS_BELOW:
            return None
        return (
            f"its state-of-charge window is {config.min_charge_percent:g}–{config.max_charge_percent:g} % "
            f"of {config.capacity_mwh:g} MWh: {PERCENTS_NOT_FRACTIONS}"
        )

    def described(self) -> str:
        """The battery and policy in one line, for the start's log."""
        c = self.config
        cap = (
            "none"
            if c.max_cycles_per_day is None
            else f"{c.max_cycles_per_day:g} a day ({c.cycle_day_timezone})"
        )
        return (
            f"battery {c.capacity_mwh:g} MWh, charge {c.max_charge_rate_mw:g} MW, discharge "
            f"{c.max_discharge_rate_mw:g} MW, efficiency {c.efficiency:g}, window {c.min_charge_percent:g}–"
            f"{c.max_charge_percent:g} %, wear {c.cycle_cost_per_mwh:g} per MWh, cycle cap {cap}; policy "
            f"{self.policy.name}"
        )

    def warnings(self) -> dict[str, str]:
        """What the worker says at start and :class:`BatterySystem` warns of about this setup, by kind
        (``import_limit``, ``spill``, ``window``)."""
        found = {
            "import_limit": self.import_limit_warning(),
            "spill": self.spill_warning(),
            "window": self.window_warning(),
        }
        return {kind: text for kind, text in found.items() if text is not None}


_NAMED = 10
"""Sites named in a line that stands for many."""


def _whose(site_key: str) -> str:
    return f"site {site_key}" if site_key else "sites without an override"


class SiteDirectory:
    """Resolves and caches each site's setup; building one validates it, so a bad override fails early."""

    def __init__(
        self,
        battery: BatteryConfig,
        policy: PolicyChoice,
        overrides: Mapping[str, SiteOverride] | None = None,
        *,
        site: SiteModel | None = None,
        carry_hours: float = DEFAULT_CARRY_HOURS,
        accept_unknown: bool = True,
    ) -> None:
        model = SiteModel() if site is None else site
        policy_built = make_policy(policy.name, policy.params, site=model)
        self._default = SiteSetup(battery, policy_built, model, carry_hours)
        self._policy = policy
        self._overrides = dict(overrides or {})
        self.accept_unknown = accept_unknown
        """False: only the sites configured (``[sites.<id>]``) have a battery; the others' ticks are refused.
        With it true (the default, as the seed), a typo in a key made a site no scheduler knew of."""
        self._cache: dict[str, SiteSetup] = {}
        for site_id in self._overrides:
            self.setup(site_id)

    @property
    def default(self) -> SiteSetup:
        return self._default

    def refusal(self, site_id: str) -> str | None:
        """Why a tick of ``site_id`` is refused by the configuration, or None (the rule reads nothing but the
        id and the settings, so the audit replay refuses the same ticks)."""
        if self.accept_unknown or site_id in self._overrides:
            return None
        return "not a configured site (worker.accept_unknown_sites is false): add it under [sites.<id>]"

    def warnings(self) -> dict[str, list[str]]:
        """:meth:`SiteSetup.warnings` of the default (key ``""``) and of each overridden site, where any."""
        found = {key: list(setup.warnings().values()) for key, setup in self._setups().items()}
        return {key: said for key, said in found.items() if said}

    def warning_lines(self, examples: int = 3) -> list[str]:
        """:meth:`warnings` as the worker logs them at start: each site's own, or, for a kind more than
        ``examples`` sites share, one line with the first site's words and the others named. A fleet of
        2,000 overridden sites logged 3,252 WARNING lines at every start of every worker."""
        by_kind: dict[str, list[tuple[str, str]]] = {}
        for key, setup in self._setups().items():
            for kind, text in setup.warnings().items():
                by_kind.setdefault(kind, []).append((key, text))
        lines = []
        for found in by_kind.values():
            if len(found) <= examples:
                lines += [f"{_whose(key)}: {text}" for key, text in found]
                continue
            (key, text), others = found[0], [key for key, _ in found[1:]]
            named = ", ".join(others[:_NAMED])
            more = f" and {len(others) - _NAMED:,} more" if len(others) > _NAMED else ""
            lines.append(
                f"{_whose(key)}: {text}; the same holds, each by its own figures, for {len(others):,} more "
                f"sites: {named}{more}"
            )
        return lines

    def setup_lines(self, limit: int = 20) -> list[str]:
        """What each battery is, as resolved (defaults, ``[battery]``, a preset, a site's own fields): the
        default's line and each configured site's, up to ``limit`` of them. The start logged the settings
        as written, before presets, so a site moved from one preset to another showed its new window, wear
        and cycle cap nowhere (a fleet operator's review)."""
        setups = list(self._setups().items())
        lines = [f"{_whose(key)}: {setup.described()}" for key, setup in setups[: limit + 1]]
        if len(setups) > limit + 1:
            lines.append(f"and {len(setups) - limit - 1:,} more configured sites (sites.<id>)")
        return lines

    def _setups(self) -> dict[str, SiteSetup]:
        """The default setup (key ``""``) and each overridden site's."""
        return {"": self._default, **{site_id: self.setup(site_id) for site_id in self._overrides}}

    @property
    def configured(self) -> frozenset[str]:
        """The ids of the sites configured one by one (``[sites.<id>]``)."""
        return frozenset(self._overrides)

    def setup(self, site_id: str) -> SiteSetup:
        cached = self._cache.get(site_id)
        if cached is not None:
            return cached
        override = self._overrides.get(site_id)
        setup = self._default if override is None else self._build(site_id, override)
        self._cache[site_id] = setup
        return setup

    def _build(self, site_id: str, override: SiteOverride) -> SiteSetup:
        try:
            preset = chemistry_fields(override.battery_type)
        except InvalidConfig as error:
            raise InvalidConfig(f"sites.{site_id}.battery_type", error.value, error.problem) from None
        fields = {**preset, **override.battery}
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(BatteryConfig)})
        if unknown:  # replace() would say "BatteryConfig.__init__() got an unexpected keyword argument"
            raise InvalidConfig(f"sites.{site_id}.battery.{unknown[0]}", fields[unknown[0]], "no such field")
        try:
            config = replace(self._default.config, **fields)
        except InvalidConfig as error:
            problem = error.problem
            if error.field in preset and error.field not in override.battery:
                # The preset's value, not one the operator wrote: said so, with what they can change (a fleet
                # operator's review: max_charge_percent=8 under nmc blamed min_charge_percent=10.0 alone).
                preset_name = override.battery_type
                problem += f" ({error.field} is the {preset_name} preset's; set it beside the other)"
            raise InvalidConfig(f"sites.{site_id}.battery.{error.field}", error.value, problem) from None
        site = site_model_with(self._default.site, override.site, f"sites.{site_id}.site")
        choice = override.policy or self._policy
        if override.policy is None and site == self._default.site:
            policy = self._default.policy
        else:
            try:
                policy = make_policy(choice.name, choice.params, site=site)
            except InvalidConfig as error:  # the site's own table, not the [policy] one an operator reads
                raise InvalidConfig(f"sites.{site_id}.{error.field}", error.value, error.problem) from None
        return SiteSetup(config, policy, site, self._default.carry_hours)
