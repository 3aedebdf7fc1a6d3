"""Which battery and policy a site uses: the defaults, overridden per site from the settings.

A site's battery is the default one, then its battery type's preset (:mod:`battery_worker.chemistries`), then
the fields set for it explicitly: the more specific wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from battery_worker.battery_config import BatteryConfig
from battery_worker.chemistries import chemistry_fields
from battery_worker.errors import InvalidConfig
from battery_worker.policies import Policy, make_policy


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    name: str = "threshold"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SiteOverride:
    battery: Mapping[str, float] = field(default_factory=dict)
    policy: PolicyChoice | None = None
    battery_type: str | None = None


@dataclass(frozen=True, slots=True)
class SiteSetup:
    config: BatteryConfig
    policy: Policy


class SiteDirectory:
    """Resolves and caches each site's setup; building one validates it, so a bad override fails early."""

    def __init__(
        self,
        battery: BatteryConfig,
        policy: PolicyChoice,
        overrides: Mapping[str, SiteOverride] | None = None,
    ) -> None:
        self._default = SiteSetup(battery, make_policy(policy.name, policy.params))
        self._policy = policy
        self._overrides = dict(overrides or {})
        self._cache: dict[str, SiteSetup] = {}
        for site in self._overrides:
            self.setup(site)

    @property
    def default(self) -> SiteSetup:
        return self._default

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
        try:
            config = replace(self._default.config, **fields)
        except TypeError as error:
            raise InvalidConfig(f"sites.{site_id}.battery", dict(override.battery), str(error)) from None
        except InvalidConfig as error:
            raise InvalidConfig(
                f"sites.{site_id}.battery.{error.field}", error.value, error.problem
            ) from None
        choice = override.policy or self._policy
        policy = self._default.policy if override.policy is None else make_policy(choice.name, choice.params)
        return SiteSetup(config, policy)
