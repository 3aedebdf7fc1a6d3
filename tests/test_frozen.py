"""``fast_init`` replaces a frozen dataclass's generated ``__init__``: it must build exactly what that did."""

from __future__ import annotations

import inspect
import pickle
from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields
from typing import Any

import pytest

from battery_worker.dispatch import Outcome, SiteState
from battery_worker.emissions import Carried, EmissionsState, StepEmissions
from battery_worker.fleet.plan import SitePlan
from battery_worker.frozen import fast_init
from battery_worker.pipeline.processing import Handled, InputRecord, OutputRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class _Reference:
    a: int
    b: list[int] = field(default_factory=list)
    c: str = "c"


@dataclass(frozen=True, slots=True)
class _Mixed:
    k: str = field(kw_only=True)  # declared first, yet keyword-only: after the positional ones
    a: int
    b: tuple[int, ...] = ()
    c: list[int] = field(default_factory=list, kw_only=True)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class _Fast:
    """``_Reference`` with the fast ``__init__``."""

    a: int
    b: list[int] = field(default_factory=list)
    c: str = "c"


def test_a_fast_init_takes_the_same_arguments_and_builds_the_same_value() -> None:
    reference_signature = inspect.signature(_Reference.__init__)
    assert inspect.signature(_Fast.__init__).parameters.keys() == reference_signature.parameters.keys()
    for fast, slow in (
        (_Fast(a=1), _Reference(a=1)),
        (_Fast(a=2, b=[3], c="x"), _Reference(a=2, b=[3], c="x")),
    ):
        assert [getattr(fast, f.name) for f in fields(fast)] == [getattr(slow, f.name) for f in fields(slow)]
    assert _Fast(a=1).b is not _Fast(a=1).b, "a default factory is called per instance"
    with pytest.raises(TypeError):
        _Fast(1)  # type: ignore[call-arg]  # keyword-only stays keyword-only
    with pytest.raises(TypeError):
        _Fast()  # type: ignore[call-arg]  # a required field stays required


def test_keyword_only_fields_come_last_as_in_the_dataclass_own_init() -> None:
    def kinds(init: object) -> list[tuple[str, inspect._ParameterKind]]:
        return [(p.name, p.kind) for p in inspect.signature(init).parameters.values()]  # type: ignore[arg-type]

    generated = kinds(_Mixed.__init__)
    fast = fast_init(_Mixed)
    assert kinds(fast.__init__) == generated
    built = fast(1, (2,), c=[3], k="k")
    assert (built.k, built.a, built.b, built.c) == ("k", 1, (2,), [3])
    assert fast(1, k="k").c == []
    assert fast(1, k="k").b == ()
    untyped: Any = fast  # the calls below are wrong on purpose
    with pytest.raises(TypeError):
        untyped(1, (2,), [3], k="k")
    with pytest.raises(TypeError):
        untyped(1)


@pytest.mark.parametrize(
    "cls",
    [
        InputRecord,
        OutputRecord,
        Handled,
        SiteState,
        Outcome,
        Carried,
        StepEmissions,
        EmissionsState,
        SitePlan,
    ],
)
def test_the_hot_path_classes_take_their_fields_and_stay_frozen_equal_and_picklable(cls: type) -> None:
    """Each has the fast ``__init__``, with one parameter per field and the field's default."""
    init = cls.__dict__["__init__"]
    assert init.__module__ == cls.__module__
    assert "fast_init" in (init.__doc__ or "")
    parameters = dict(inspect.signature(init).parameters)
    del parameters["self"]
    assert list(parameters) == [f.name for f in fields(cls)]
    for f in fields(cls):
        if f.default is not MISSING:
            assert parameters[f.name].default is f.default


def test_a_value_built_fast_round_trips_and_refuses_assignment() -> None:
    value = EmissionsState(bought_kg=1.0, steps=2, carried=Carried(5.0, None))
    assert EmissionsState().carried == Carried()
    assert EmissionsState().site_kg == 0.0
    copy = pickle.loads(pickle.dumps(value))
    assert copy == value
    assert hash(copy) == hash(value)
    assert SiteState(battery=None).emissions == EmissionsState()  # type: ignore[arg-type]
    assert SiteState(battery=None).emissions is not SiteState(battery=None).emissions  # type: ignore[arg-type]
    with pytest.raises(FrozenInstanceError):
        value.steps = 3  # type: ignore[misc]


def test_fast_init_refuses_what_it_cannot_do() -> None:
    @dataclass(frozen=True, slots=True)
    class WithPostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True)
    class WithoutSlots:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    for cls in (WithPostInit, WithoutSlots, NotFrozen):
        with pytest.raises(TypeError):
            fast_init(cls)
