"""Dispatch policies, selectable by name. Each is pure: past ticks and its own memory in, a decision out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError

from battery_worker.errors import InvalidConfig
from battery_worker.policies.adaptive import AdaptivePolicy
from battery_worker.policies.base import Decision, Policy
from battery_worker.policies.mpc import MpcPolicy
from battery_worker.policies.threshold import ThresholdPolicy

POLICIES: dict[str, Callable[..., Policy]] = {
    "threshold": ThresholdPolicy,
    "adaptive": AdaptivePolicy,
    "mpc": MpcPolicy,
}


def make_policy(name: str, params: Mapping[str, Any] | None = None) -> Policy:
    """Build the policy called ``name``; unknown names and parameters are :class:`InvalidConfig`."""
    factory = POLICIES.get(name)
    if factory is None:
        raise InvalidConfig("policy", name, f"unknown policy; choose one of {', '.join(sorted(POLICIES))}")
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


__all__ = ["POLICIES", "Decision", "Policy", "ThresholdPolicy", "make_policy"]
