"""Where settings give true or false for a number.

Pydantic's lax mode, which the environment's strings need, takes ``true`` for 1 and ``false`` for 0: a
TOML file's ``capacity_mwh = true`` made a 1 MWh battery without a word. Walking the raw settings beside
the types they become finds such a value before pydantic converts it, in any model, dataclass, mapping or
list, so every table refuses it the same way.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from battery_worker.errors import InvalidConfig

_UNIONS = (Union, types.UnionType)


def refuse_bool_for_number(annotation: Any, value: Any, where: str = "") -> None:
    """Raise :class:`InvalidConfig` naming the field (under ``where``) of a bool given for a number."""
    path = bool_for_number(annotation, value)
    if path is not None:
        field = f"{where}.{path}".strip(".")
        raise InvalidConfig(field, _value_at(value, path), "must be a number, not true or false")


def bool_for_number(annotation: Any, value: Any, path: tuple[str, ...] = ()) -> str | None:
    """The dotted path of the first bool in ``value`` where ``annotation`` wants a number, or None."""
    annotation = _unwrapped(annotation)
    if isinstance(value, bool):
        return ".".join(path) if _number_not_bool(annotation) else None
    found: str | None = None
    if get_origin(annotation) in _UNIONS:
        for member in get_args(annotation):
            found = found or bool_for_number(member, value, path)
        return found
    if isinstance(value, Mapping):
        fields = _field_types(annotation)
        if fields is None and get_origin(annotation) in (dict, Mapping):
            fields = {key: get_args(annotation)[1] for key in value}
        for key, item in value.items():
            if fields is not None and key in fields:
                found = found or bool_for_number(fields[key], item, (*path, str(key)))
    elif isinstance(value, list | tuple) and get_origin(annotation) in (list, tuple):
        item_type = get_args(annotation)[0]
        for index, item in enumerate(value):
            found = found or bool_for_number(item_type, item, (*path, str(index)))
    return found


def _unwrapped(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _number_not_bool(annotation: Any) -> bool:
    members = get_args(annotation) if get_origin(annotation) in _UNIONS else (annotation,)
    members = tuple(_unwrapped(member) for member in members)
    return bool not in members and any(member in (int, float) for member in members)


def _field_types(annotation: Any) -> dict[str, Any] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {name: field.annotation for name, field in annotation.model_fields.items()}
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return typing.get_type_hints(annotation, include_extras=True)
    return None


def _value_at(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list | tuple) else value[part]
    return value
