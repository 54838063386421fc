"""The constraint engine (spec §2.13, §5.3, §5.4): examples and properties.

The properties compare ``check`` with an oracle written here from the spec's table, so a change
in the engine's semantics shows up as a counterexample, and prove that narrowing never widens.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentauth.capabilities import Capability
from agentauth.constraints import ContradictoryConstraints, check, intersect, parse
from agentauth.errors import ProtocolError

FIELDS = ["a", "b", "c"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-50, max_value=50),
    st.floats(min_value=-50, max_value=50, allow_nan=False),
    st.sampled_from(["x", "y", "USD", ""]),
)
numbers = st.one_of(
    st.integers(min_value=-50, max_value=50), st.floats(min_value=-50, max_value=50)
)


@st.composite
def operator_specs(draw: Any) -> dict[str, Any]:
    ops = draw(st.sets(st.sampled_from(["min", "max", "in", "not_in"]), min_size=1))
    spec: dict[str, Any] = {}
    for op in ops:
        spec[op] = draw(numbers) if op in ("min", "max") else draw(st.lists(scalars, max_size=4))
    if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        spec["min"], spec["max"] = spec["max"], spec["min"]
    return spec


constraint_sets = st.dictionaries(
    st.sampled_from(FIELDS), st.one_of(scalars, operator_specs()), max_size=3
)
argument_sets = st.dictionaries(
    st.sampled_from(FIELDS), st.one_of(scalars, st.lists(scalars, max_size=2)), max_size=3
)


def number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if number(a) and number(b):
        return bool(a == b)
    return type(a) is type(b) and a == b and not isinstance(a, list | dict)


def oracle(constraints: dict[str, Any], arguments: dict[str, Any]) -> bool:
    """The spec's table, written independently of the engine."""
    for field, spec in constraints.items():
        if field not in arguments:
            return False
        value = arguments[field]
        if not isinstance(spec, dict):
            if not same(value, spec):
                return False
            continue
        scalar = value is None or isinstance(value, str | bool) or number(value)
        for op, bound in spec.items():
            if op == "max" and not (number(value) and value <= bound):
                return False
            if op == "min" and not (number(value) and value >= bound):
                return False
            if op == "in" and not (scalar and any(same(value, x) for x in bound)):
                return False
            if op == "not_in" and not (scalar and not any(same(value, x) for x in bound)):
                return False
    return True


@given(constraint_sets, argument_sets)
def test_check_agrees_with_the_spec(constraints: Any, arguments: Any) -> None:
    # §9.1 + §9.2: soundness and completeness against the oracle.
    assert (check(constraints, arguments) == []) == oracle(constraints, arguments)


@given(constraint_sets, constraint_sets, argument_sets)
def test_narrowing_never_widens(a: Any, b: Any, arguments: Any) -> None:
    # §5.3, §2.13: what the intersection accepts, both sides accept.
    try:
        both = intersect(a, b)
    except ContradictoryConstraints:
        return
    if check(both, arguments) == []:
        assert check(a, arguments) == [] and check(b, arguments) == []


@given(constraint_sets, constraint_sets, argument_sets)
def test_intersection_keeps_what_both_allow(a: Any, b: Any, arguments: Any) -> None:
    # The intersection is exact: it refuses nothing both sides would accept.
    if check(a, arguments) == [] and check(b, arguments) == []:
        assert check(intersect(a, b), arguments) == []


@given(constraint_sets, st.dictionaries(st.text(max_size=3), st.from_type(object), max_size=3))
def test_check_never_raises_on_any_arguments(constraints: Any, arguments: Any) -> None:
    assert isinstance(check(constraints, arguments), list)


# --- examples ---------------------------------------------------------------------------------


def test_spec_example() -> None:
    # spec §5.11, §5.13
    constraints = {"amount": {"max": 1000}, "currency": {"in": ["USD"]}}
    assert check(constraints, {"amount": 5000, "currency": "GBP"}) == [
        {"field": "amount", "constraint": {"max": 1000}, "actual": 5000},
        {"field": "currency", "constraint": {"in": ["USD"]}, "actual": "GBP"},
    ]


@pytest.mark.parametrize(
    "spec, value, ok",
    [
        ({"max": 10}, 10, True),  # inclusive (§2.13)
        ({"min": 0, "max": 10}, -1, False),  # combined (§2.13)
        ({"max": 10}, True, False),  # a bool is not a number (§2.13)
        ({"max": 10}, "5", False),
        ({"max": 10}, float("nan"), False),
        ({"max": 10}, float("inf"), False),
        ({"max": 10**400}, 10**399, True),
        ({"in": [1]}, 1.0, True),  # one JSON number type
        ({"in": [1]}, True, False),
        ({"in": ["a"]}, ["a"], False),  # arrays never match (§2.13)
        ({"not_in": ["a"]}, {"x": 1}, False),
        (5, 5.0, True),
        (True, 1, False),
    ],
)
def test_edge_cases(spec: Any, value: Any, ok: bool) -> None:
    # §2.13 — everything unclear fails closed.
    assert (check({"f": spec}, {"f": value}) == []) is ok


def test_missing_field_violates() -> None:
    assert check({"f": {"max": 1}}, {}) == [
        {"field": "f", "constraint": {"max": 1}, "actual": None}
    ]


def test_unknown_operator_in_a_grant_is_an_error() -> None:
    with pytest.raises(ProtocolError) as info:
        check({"f": {"max": 1, "lt": 2, "regex": "."}}, {"f": 0})
    assert info.value.code == "unknown_constraint_operator"
    assert info.value.extra["unknown_operators"] == ["lt", "regex"]


CAP = Capability(
    name="t",
    description="d",
    input={"type": "object", "properties": {"amount": {"type": "number"}, "cur": {}}},
)


@pytest.mark.parametrize(
    "raw",
    [
        {"nope": 1},  # §2.13
        {"amount": {"max": "1"}},  # §2.13
        {"amount": {"in": 3}},
        {"amount": {"min": 5, "max": 1}},
        {"amount": {}},
        {"amount": [1]},
    ],
)
def test_parse_refuses(raw: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(raw, CAP)
    assert info.value.code == "invalid_request"


def test_parse_reports_every_unknown_operator() -> None:
    with pytest.raises(ProtocolError) as info:
        parse({"amount": {"gt": 1}, "cur": {"like": "x"}}, CAP)
    assert info.value.extra["unknown_operators"] == ["gt", "like"]


def test_intersecting_empty_not_in_keeps_the_field_required() -> None:
    # Found by test_narrowing_never_widens: {} would have dropped "the field must be present".
    assert check(intersect({"a": {"not_in": []}}, {"a": {"not_in": []}}), {}) != []


def test_intersections() -> None:
    # §2.13
    assert intersect({"a": {"max": 5, "min": 0}}, {"a": {"max": 3}}) == {"a": {"max": 3, "min": 0}}
    assert intersect({"a": {"in": [1, 2, 3]}}, {"a": {"not_in": [2]}}) == {"a": {"in": [1, 3]}}
    assert intersect({"a": 2}, {"a": {"in": [1, 2]}}) == {"a": 2}
    for a, b in [
        ({"a": 2}, {"a": 3}),
        ({"a": 5}, {"a": {"max": 1}}),
        ({"a": {"in": [1]}}, {"a": {"not_in": [1]}}),
    ]:
        with pytest.raises(ContradictoryConstraints):
            intersect(a, b)
    assert intersect(None, {"a": 1}) == {"a": 1} and intersect({"a": 1}, None) == {"a": 1}


@pytest.mark.parametrize("spec", [{"max": "10"}, {"min": None}, {"in": "USD"}, {"not_in": 3}])
def test_a_mistyped_stored_bound_fails_closed(spec: Any) -> None:
    # A grant edited by hand outside parse(): never a crash, never a pass.
    assert check({"f": spec}, {"f": "U"}) != []
