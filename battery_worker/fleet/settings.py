"""A site model from settings: the ``[site]`` table, and a site's own ``sites.<id>.site`` fields over it.

A site's model is the default one with the fields its override sets replaced (``machines`` as a whole: a
fleet is listed, not patched), as a site's battery is the default battery with its own fields. Validation
is :class:`SiteModel`'s own, so a fleet drawing more than the import limit is one :class:`InvalidConfig`
naming the site.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from pydantic import TypeAdapter, ValidationError

from battery_worker.errors import InvalidConfig, InvalidValue
from battery_worker.fleet.model import SiteModel
from battery_worker.strict_numbers import refuse_bool_for_number

_SITE_MODEL: TypeAdapter[SiteModel] = TypeAdapter(SiteModel)


def site_model_with(base: SiteModel, fields: Mapping[str, Any], where: str) -> SiteModel:
    """``base`` with ``fields`` replaced; :class:`InvalidConfig` under ``where`` (e.g. ``sites.a.site``)."""
    if not fields:
        return base
    unknown = sorted(set(fields) - set(SiteModel.__dataclass_fields__))
    if unknown:
        raise InvalidConfig(where, unknown, "unknown site fields")
    refuse_bool_for_number(SiteModel, fields, where)
    try:
        return _SITE_MODEL.validate_python({**asdict(base), **fields})
    except ValidationError as error:
        raise config_error(where, error) from None


def config_error(where: str, error: ValidationError) -> InvalidConfig:
    """The first problem of ``error`` as one :class:`InvalidConfig`, its field path under ``where``.

    A model's own check (the fleet against the import limit) reaches pydantic as a ``ValueError`` of ours:
    its field, value and problem are kept, rather than pydantic's echo of the whole table.
    """
    first = error.errors(include_url=False)[0]
    path = ".".join([where, *(str(part) for part in first["loc"])]).strip(".")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, InvalidValue):
        return InvalidConfig(f"{path}.{cause.field}".strip("."), cause.value, cause.problem)
    problem = first["msg"].removeprefix("Value error, ")  # pydantic's prefix to a check's own ValueError
    return InvalidConfig(path or "settings", first.get("input"), problem)
