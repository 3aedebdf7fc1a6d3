"""Dispatch policies, selectable by name. Each is pure: past ticks and its own memory in, a decision out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from battery_worker.errors import InvalidConfig
from battery_worker.policies.base import Decision, Policy
from battery_worker.policies.threshold import ThresholdPolicy

POLICIES: dict[str, Callable[..., Policy]] = {
    "threshold": ThresholdPolicy,
}


def make_policy(name: str, params: Mapping[str, Any] | None = None) -> Policy:
    """Build the policy called ``name``; unknown names and parameters are :class:`InvalidConfig`."""
    factory = POLICIES.get(name)
    if factory is None:
        raise InvalidConfig("policy", name, f"unknown policy; choose one of {', '.join(sorted(POLICIES))}")
    try:
        return factory(**dict(params or {}))
    except TypeError as error:
        raise InvalidConfig("policy_params", dict(params or {}), str(error)) from None


__all__ = ["POLICIES", "Decision", "Policy", "ThresholdPolicy", "make_policy"]
