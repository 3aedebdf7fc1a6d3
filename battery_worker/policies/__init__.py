"""Dispatch policies, selectable by name. Each is pure: past ticks and its own memory in, a decision out.

Policies are imported when first chosen: ``adaptive`` and ``mpc`` need numpy and scipy (about 55 MB of a
worker's memory), which a worker running the threshold policy should not carry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError

from battery_worker.errors import InvalidConfig
from battery_worker.policies.base import Decision, Policy
from battery_worker.policies.threshold import ThresholdPolicy

POLICIES: dict[str, str] = {
    "threshold": "battery_worker.policies.threshold:ThresholdPolicy",
    "adaptive": "battery_worker.policies.adaptive:AdaptivePolicy",
    "mpc": "battery_worker.policies.mpc:MpcPolicy",
}
"""Policy name → ``module:class``, imported on first use."""


def policy_class(name: str) -> Callable[..., Policy]:
    """The class of the policy called ``name``; :class:`InvalidConfig` for an unknown name."""
    path = POLICIES.get(name)
    if path is None:
        raise InvalidConfig("policy", name, f"unknown policy; choose one of {', '.join(sorted(POLICIES))}")
    module, _, attribute = path.partition(":")
    factory: Callable[..., Policy] = getattr(importlib.import_module(module), attribute)
    return factory


def make_policy(name: str, params: Mapping[str, Any] | None = None) -> Policy:
    """Build the policy called ``name``; unknown names and parameters are :class:`InvalidConfig`."""
    factory = policy_class(name)
    unknown = sorted(set(params or {}) - set(getattr(factory, "__dataclass_fields__", params or {})))
    if unknown:
        raise InvalidConfig("policy.params", unknown, f"unknown parameters for policy {name!r}")
    try:
        policy: Policy = TypeAdapter(cast(Any, factory)).validate_python(dict(params or {}))
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(["policy.params", *(str(part) for part in first["loc"])])
        raise InvalidConfig(field, first.get("input"), first["msg"]) from None
    return policy


__all__ = ["POLICIES", "Decision", "Policy", "ThresholdPolicy", "make_policy", "policy_class"]
