"""Dispatch policies, selectable by name. Each is pure: past ticks and its own memory in, a decision out.

``BATTERY_POLICIES`` dispatch the battery alone while every machine of the site runs; ``site`` plans the
machines and the battery together and is built with the site's model (``make_policy(..., site=)``). Tables
comparing batteries list only the battery policies.

Policies are imported when first chosen: ``adaptive`` needs numpy (11 MB of a worker's memory), ``mpc``
numpy and HiGHS (``highspy``, 4 MB more) and ``site`` scipy (about 55 MB), which a worker running the
threshold policy should not carry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError

from battery_worker.errors import InvalidConfig
from battery_worker.fleet.model import SiteModel
from battery_worker.fleet.settings import config_error
from battery_worker.policies.base import Decision, Policy
from battery_worker.policies.threshold import ThresholdPolicy

POLICIES: dict[str, str] = {
    "threshold": "battery_worker.policies.threshold:ThresholdPolicy",
    "adaptive": "battery_worker.policies.adaptive:AdaptivePolicy",
    "mpc": "battery_worker.policies.mpc:MpcPolicy",
    "site": "battery_worker.policies.site:SitePolicy",
}
"""Policy name → ``module:class``, imported on first use."""

BATTERY_POLICIES: tuple[str, ...] = ("threshold", "adaptive", "mpc")
"""The policies that dispatch the battery alone, the machines all running: what battery tables compare."""


def plans_machines(name: str) -> bool:
    """Whether the policy called ``name`` chooses which machines run (otherwise all of them run)."""
    return name in POLICIES and name not in BATTERY_POLICIES


def policy_class(name: str) -> Callable[..., Policy]:
    """The class of the policy called ``name``; :class:`InvalidConfig` for an unknown name."""
    path = POLICIES.get(name)
    if path is None:
        raise InvalidConfig("policy", name, f"unknown policy; choose one of {', '.join(sorted(POLICIES))}")
    module, _, attribute = path.partition(":")
    factory: Callable[..., Policy] = getattr(importlib.import_module(module), attribute)
    return factory


def make_policy(
    name: str, params: Mapping[str, Any] | None = None, *, site: SiteModel | None = None
) -> Policy:
    """Build the policy called ``name``; unknown names and parameters are :class:`InvalidConfig`.

    A policy that plans the machines gets ``site`` (the default site when None); its model comes from the
    ``site`` settings, never from the policy's parameters.
    """
    factory = policy_class(name)
    fields = set(getattr(factory, "__dataclass_fields__", params or {}))
    if "site" in (params or {}) and "site" in fields:
        raise InvalidConfig("policy.params.site", "...", "the site model is set in the [site] table")
    unknown = sorted(set(params or {}) - fields)
    if unknown:
        known = sorted(fields - {"site"})
        taken = f"it takes {', '.join(known)}" if known else "it takes none"
        hint = ""
        if name == "threshold" and {"charge_threshold", "discharge_threshold"} & set(unknown):
            hint = (
                " (BatterySystem's charge_threshold and discharge_threshold are its charge_below and "
                "discharge_above)"
            )
        raise InvalidConfig(
            "policy.params", unknown, f"unknown parameters for policy {name!r}: {taken}{hint}"
        )
    values = dict(params or {})
    declared = getattr(factory, "__dataclass_fields__", {})
    for key, value in values.items():  # lax validation took true for 1.0: a number's place takes no bool
        kind = str(getattr(declared.get(key), "type", ""))
        if isinstance(value, bool) and "bool" not in kind and ("float" in kind or "int" in kind):
            raise InvalidConfig(f"policy.params.{key}", value, "must be a number, not true or false")
    if "site" in fields:
        values["site"] = SiteModel() if site is None else site
    try:
        policy: Policy = TypeAdapter(cast(Any, factory)).validate_python(values)
    except ValidationError as error:  # the field, its value and the problem; not the values' echo
        raise config_error("policy.params", error) from None
    return policy


__all__ = [
    "BATTERY_POLICIES",
    "POLICIES",
    "Decision",
    "Policy",
    "ThresholdPolicy",
    "make_policy",
    "plans_machines",
    "policy_class",
]
