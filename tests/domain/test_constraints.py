"""Scoped-grant constraints, ``agentauth/constraints.py`` (spec §2.13, §5.3, §5.4).

The examples pin the observable behaviour: §5.13's violation list, the error codes, the fail-closed
answers to every §2.13 edge case. The hypothesis properties compare ``check`` with an oracle
written here from the spec's operator table (exact rational arithmetic via ``Fraction``, its own
JSON typing), and show that ``intersect`` narrows exactly: never wider than either side, never
narrower than both together.

§8.17 (validate and execute atomically) belongs to the execute view, not to this pure module.
"""

from __future__ import annotations

import copy
import json
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentauth.capabilities import Capability
from agentauth.constraints import (
    ContradictoryConstraints,
    check,
    intersect,
    is_number,
    is_scalar,
    json_equal,
    parse,
    unknown_operators,
)
from agentauth.errors import ProtocolError

NAN = float("nan")
INF = float("inf")
HUGE = 10**400  # far beyond any float: comparisons must stay exact and must not overflow

FIELDS = ("amount", "currency", "flag")
OPERATORS = ("min", "max", "in", "not_in")


def capability(*fields: str) -> Capability:
    return Capability(
        name="t",
        description="d",
        input={"type": "object", "properties": {f: {"type": "string"} for f in fields}},
    )


TRANSFER = Capability(
    name="transfer_money",
    description="Transfer funds domestically",
    input={
        "type": "object",
        "required": ["amount", "currency", "destination_account"],
        "properties": {
            "amount": {"type": "number"},
            "currency": {"type": "string"},
            "destination_account": {"type": "string"},
        },
    },
)
SPEC_EXAMPLE = {
    "destination_account": "acc_456",
    "amount": {"min": 0, "max": 1000},
    "currency": {"in": ["USD", "EUR"]},
}


def v(field: str, constraint: Any, actual: Any) -> dict[str, Any]:
    return {"field": field, "constraint": constraint, "actual": actual}


def ok(constraint: Any, value: Any) -> bool:
    """Does a single value satisfy a single field's constraint?"""
    return check({"f": constraint}, {"f": value}) == []


# =================================================================================================
# Examples: check()
# =================================================================================================


def test_er7_violation_list_exactly() -> None:
    # spec: §5.13, §2.13 -- two violations, in constraint order, each holding just its operator
    got = check(
        {"amount": {"max": 1000}, "currency": {"in": ["USD"]}},
        {"amount": 5000, "currency": "GBP"},
    )
    assert got == [
        v("amount", {"max": 1000}, 5000),
        v("currency", {"in": ["USD"]}, "GBP"),
    ]
    # byte-for-byte the "violations" array of the §5.13 body
    assert json.dumps(got) == (
        '[{"field": "amount", "constraint": {"max": 1000}, "actual": 5000}, '
        '{"field": "currency", "constraint": {"in": ["USD"]}, "actual": "GBP"}]'
    )


def test_spec_example_grant() -> None:
    # spec: §2.13 example -- up to 1000 in USD or EUR, only to acc_456
    assert parse(SPEC_EXAMPLE, TRANSFER) == SPEC_EXAMPLE
    good = {"destination_account": "acc_456", "amount": 1000, "currency": "EUR"}
    assert check(SPEC_EXAMPLE, good) == []
    bad = {"destination_account": "acc_999", "amount": -1, "currency": "GBP"}
    assert check(SPEC_EXAMPLE, bad) == [
        v("destination_account", "acc_456", "acc_999"),  # exact: the bare value, not an object
        v("amount", {"min": 0}, -1),
        v("currency", {"in": ["USD", "EUR"]}, "GBP"),
    ]


@pytest.mark.parametrize("constraints", [None, {}])
def test_unconstrained_grant_allows_anything(constraints: Any) -> None:
    # spec: §2.13 -- constraints only restrict
    assert check(constraints, {}) == []
    assert check(constraints, {"amount": [1, 2], "x": {"y": NAN}}) == []


def test_unconstrained_fields_are_ignored() -> None:
    # spec: §2.13 -- only constrained fields are looked at
    assert check({"amount": {"max": 10}}, {"amount": 1, "memo": [1, {"a": None}]}) == []


@pytest.mark.parametrize(
    ("constraint", "value", "allowed"),
    [
        # spec: §2.13 -- max/min are inclusive
        ({"max": 1000}, 1000, True),
        ({"max": 1000}, 1000.0, True),
        ({"max": 1000}, 999.999, True),
        ({"max": 1000}, -(10**9), True),
        ({"max": 1000}, 1000.0001, False),
        ({"max": 1000}, 1001, False),
        ({"min": 0}, 0, True),
        ({"min": 0}, -0.0, True),
        ({"min": 0}, 0.0, True),
        ({"min": 0}, -1e-9, False),
        ({"min": 0}, -1, False),
        ({"min": 0.5}, 0.5, True),
        ({"min": 0.5}, 0.49999999, False),
        ({"max": -2.5}, -2.5, True),
        ({"max": -2.5}, -2, False),
        # spec: §2.13 -- combined on one field = both (inclusive at each end)
        ({"min": 0, "max": 1000}, 0, True),
        ({"min": 0, "max": 1000}, 500, True),
        ({"min": 0, "max": 1000}, 1000, True),
        ({"min": 0, "max": 1000}, -1, False),
        ({"min": 0, "max": 1000}, 1001, False),
        ({"min": 7, "max": 7}, 7.0, True),
        ({"min": 7, "max": 7}, 7.000001, False),
    ],
)
def test_bounds(constraint: Any, value: Any, allowed: bool) -> None:
    assert ok(constraint, value) is allowed


def test_combined_bounds_report_each_violated_operator() -> None:
    # spec: §2.13 -- one entry per violated operator, holding just that operator
    c = {"amount": {"min": 0, "max": 1000}}
    assert check(c, {"amount": -1}) == [v("amount", {"min": 0}, -1)]
    assert check(c, {"amount": 1001}) == [v("amount", {"max": 1000}, 1001)]
    assert check(c, {"amount": "500"}) == [
        v("amount", {"min": 0}, "500"),
        v("amount", {"max": 1000}, "500"),
    ]


def test_one_violation_per_operator_in_constraint_order() -> None:
    # spec: §2.13
    c = {"n": {"not_in": ["x"], "min": 0, "in": [1, 2], "max": 10}}
    assert check(c, {"n": "x"}) == [
        v("n", {"not_in": ["x"]}, "x"),
        v("n", {"min": 0}, "x"),
        v("n", {"in": [1, 2]}, "x"),
        v("n", {"max": 10}, "x"),
    ]
    assert check(c, {"n": 11}) == [v("n", {"in": [1, 2]}, 11), v("n", {"max": 10}, 11)]
    assert check(c, {"n": 2.0}) == []


@pytest.mark.parametrize(
    ("exact", "value", "allowed"),
    [
        # spec: §2.13 -- exact value, §2.13/Q28d -- type-strict JSON equality
        ("acc_456", "acc_456", True),
        ("acc_456", "acc_457", False),
        ("acc_456", "ACC_456", False),
        ("", "", True),
        ("", None, False),
        (1, 1, True),
        (1, 1.0, True),  # one JSON number
        (1.0, 1, True),
        (0, -0.0, True),
        (1, True, False),  # a JSON boolean is never a number
        (0, False, False),
        (True, True, True),
        (True, 1, False),
        (True, 1.0, False),
        (False, 0, False),
        (False, None, False),
        (None, None, True),
        (None, 0, False),
        (None, "", False),
        (None, False, False),
        (5, "5", False),
        ("5", 5, False),
        (0.1 + 0.2, 0.3, False),  # exact float equality, no tolerance
        (2.5, 2.5, True),
    ],
)
def test_exact_values(exact: Any, value: Any, allowed: bool) -> None:
    assert ok(exact, value) is allowed


def test_exact_violation_shows_the_bare_value() -> None:
    # spec: §2.13 -- an exact constraint is reported as itself, not wrapped
    assert check({"flag": True}, {"flag": 1}) == [v("flag", True, 1)]
    assert check({"flag": None}, {"flag": 0}) == [v("flag", None, 0)]


@pytest.mark.parametrize(
    ("constraint", "value", "allowed"),
    [
        # spec: §2.13 -- in / not_in with JSON equality
        ({"in": ["USD", "EUR"]}, "USD", True),
        ({"in": ["USD", "EUR"]}, "EUR", True),
        ({"in": ["USD", "EUR"]}, "usd", False),
        ({"in": ["USD", "EUR"]}, "GBP", False),
        ({"in": [1, 2]}, 1.0, True),
        ({"in": [1, 2]}, True, False),
        ({"in": [True]}, 1, False),
        ({"in": [True]}, True, True),
        ({"in": [0]}, False, False),
        ({"in": [None]}, None, True),
        ({"in": [None]}, "", False),
        ({"in": ["1"]}, 1, False),
        ({"in": []}, "anything", False),
        ({"in": []}, None, False),
        ({"not_in": ["GBP"]}, "USD", True),
        ({"not_in": ["GBP"]}, "GBP", False),
        ({"not_in": [1]}, True, True),  # true is not 1
        ({"not_in": [1]}, 1.0, False),
        ({"not_in": [True]}, 1, True),
        ({"not_in": [None]}, None, False),
        ({"not_in": [None]}, 0, True),
        ({"not_in": []}, "x", True),
        ({"not_in": []}, None, True),
        # §2.13 -- in and not_in together
        ({"in": ["a", "b"], "not_in": ["b"]}, "a", True),
        ({"in": ["a", "b"], "not_in": ["b"]}, "b", False),
    ],
)
def test_in_and_not_in(constraint: Any, value: Any, allowed: bool) -> None:
    assert ok(constraint, value) is allowed


@pytest.mark.parametrize(
    "constraint",
    [
        "x",
        None,
        0,
        False,
        {"max": 10},
        {"min": 0},
        {"in": ["x"]},
        {"not_in": []},
        {"min": 0, "max": 10},
    ],
)
def test_missing_field_violates(constraint: Any) -> None:
    # §2.13 -- a constrained field absent from arguments fails closed
    got = check({"f": constraint}, {"other": 1})
    ops = list(constraint) if isinstance(constraint, dict) else [None]
    assert len(got) == len(ops)  # one per operator (§2.13)
    for entry, op in zip(got, ops, strict=True):
        expected = constraint if op is None else {op: constraint[op]}
        assert entry == v("f", expected, None)


@pytest.mark.parametrize(
    "constraint",
    [
        {"max": 10},
        {"min": 0},
        {"min": 0, "max": 10},
        {"max": 1},
        {"min": 1},
    ],
)
@pytest.mark.parametrize("value", [True, False])
def test_booleans_never_satisfy_numeric_bounds(constraint: Any, value: bool) -> None:
    # §2.13 -- Python bool is an int, a JSON boolean is not a number
    assert not ok(constraint, value)


@pytest.mark.parametrize(
    ("constraint", "value"),
    [
        ({"max": 10}, "5"),  # §2.13/Q28c -- "string vs max"
        ({"min": 0}, "5"),
        ({"max": 10}, ""),
        ({"max": 10}, None),
        ({"min": -1}, None),
        ({"max": 10}, [5]),
        ({"max": 10}, {"n": 5}),
    ],
)
def test_wrong_types_violate_bounds(constraint: Any, value: Any) -> None:
    assert check({"f": constraint}, {"f": value}) == [v("f", constraint, value)]


@pytest.mark.parametrize(
    ("constraint", "value"),
    [
        # §2.13 -- arrays/objects as arguments never satisfy in / not_in / exact
        ({"in": [1]}, [1]),
        ({"in": ["x"]}, ["x"]),
        ({"in": [None]}, []),
        ({"not_in": ["x"]}, ["y"]),
        ({"not_in": []}, []),
        ({"not_in": []}, {}),
        ({"not_in": [1]}, {"a": 1}),
        ({"in": ["a"]}, {"a": "a"}),
        ("x", ["x"]),
        ("x", {"x": "x"}),
        (None, []),
        (None, {}),
        (1, [1]),
    ],
)
def test_arrays_and_objects_violate(constraint: Any, value: Any) -> None:
    assert check({"f": constraint}, {"f": value}) == [v("f", constraint, value)]


@pytest.mark.parametrize("value", [NAN, INF, -INF])
@pytest.mark.parametrize(
    "constraint",
    [
        {"max": 10},
        {"min": 0},
        {"min": -(10**9), "max": 10**9},
        {"not_in": []},
        {"not_in": [1]},
        {"in": [1, 2.5]},
        0,
        1.5,
    ],
)
def test_non_finite_actual_values_fail_closed(constraint: Any, value: float) -> None:
    # §2.13 -- JSON cannot carry NaN/Infinity, but Python callers can: never admit them
    # (-inf <= 10 and inf >= 0 are True in Python; the engine must not take that at face value)
    got = check({"f": constraint}, {"f": value})
    assert got
    assert all(entry["actual"] is value for entry in got)


@pytest.mark.parametrize(
    ("constraint", "value", "allowed"),
    [
        # huge ints compare exactly with each other and with floats, without OverflowError
        ({"max": 1000}, HUGE, False),
        ({"max": 1e308}, HUGE, False),
        ({"max": 0}, -HUGE, True),
        ({"min": 0}, -HUGE, False),
        ({"min": 0}, HUGE, True),
        ({"min": 1e308}, HUGE, True),
        ({"max": HUGE}, HUGE, True),
        ({"max": HUGE}, HUGE + 1, False),
        ({"max": HUGE}, 1e308, True),
        ({"min": HUGE}, 1e308, False),
        ({"max": float(2**53)}, 2**53 + 1, False),  # a float conversion would say "equal"
        ({"min": 2**53 + 1}, float(2**53), False),
        (HUGE, HUGE, True),
        (HUGE, HUGE + 1, False),
        (1e308, HUGE, False),
        (10**20, 1e20, True),  # 1e20 is exactly 10**20
        (2**53 + 1, float(2**53), False),
        ({"in": [HUGE]}, HUGE, True),
        ({"not_in": [HUGE]}, 1e308, True),
    ],
)
def test_huge_integers(constraint: Any, value: Any, allowed: bool) -> None:
    assert ok(constraint, value) is allowed


def test_unknown_operator_in_a_stored_grant() -> None:
    # spec: §2.13 -- never ignored at execution; 400 unknown_constraint_operator with the names
    stored = {"amount": {"max": 5, "lt": 3}, "currency": {"regex": ".*", "gt": 1, "lt": 0}}
    for arguments in ({"amount": 1, "currency": "USD"}, {}, {"amount": 99}):
        with pytest.raises(ProtocolError) as caught:
            check(stored, arguments)
        assert caught.value.code == "unknown_constraint_operator"
        assert caught.value.status == 400
        assert caught.value.extra["unknown_operators"] == ["gt", "lt", "regex"]
        assert caught.value.body()["unknown_operators"] == ["gt", "lt", "regex"]


def test_object_valued_exact_constraint_is_an_operator_object() -> None:
    # §2.13 -- a JSON-object value is an operator object; its keys are operators
    with pytest.raises(ProtocolError) as caught:
        check({"addr": {"country": "US"}}, {"addr": {"country": "US"}})
    assert caught.value.code == "unknown_constraint_operator"
    assert caught.value.extra["unknown_operators"] == ["country"]


def test_unknown_operators_helper() -> None:
    assert unknown_operators(None) == []
    assert unknown_operators(["max"]) == []
    assert unknown_operators({"a": 1, "b": {"max": 1}}) == []
    assert unknown_operators({"a": {"z": 1, "max": 1}, "b": {"a": 1, "z": 2}}) == ["a", "z"]


# =================================================================================================
# Examples: parse() -- grant-time validation
# =================================================================================================

CAP = capability("amount", "currency", "flag", "address")


@pytest.mark.parametrize("raw", [None, {}])
def test_parse_nothing_is_unconstrained(raw: Any) -> None:
    # spec: §2.13
    assert parse(raw, CAP) is None


@pytest.mark.parametrize(
    "raw",
    [
        {"amount": 5},
        {"amount": 2.5},
        {"amount": HUGE},
        {"currency": ""},
        {"flag": False},
        {"flag": None},
        {"amount": {"max": 1000}},
        {"amount": {"min": -1.5}},
        {"amount": {"min": 3, "max": 3}},
        {"amount": {"min": HUGE, "max": HUGE}},
        {"currency": {"in": []}},
        {"currency": {"not_in": []}},
        {"currency": {"in": ["USD", 1, 2.5, True, None, ""]}},
        {"currency": {"in": ["a", "b"], "not_in": ["b"]}},  # §2.13
        {"amount": {"min": 0, "max": 10, "in": [1, 2], "not_in": [3]}},
        {"currency": {"in": ["x"] * 1000}},
        {"amount": 1, "currency": {"in": ["USD"]}, "flag": True},
    ],
)
def test_parse_accepts_valid_constraints(raw: Any) -> None:
    # spec: §2.13
    assert parse(raw, CAP) == raw


@pytest.mark.parametrize(
    "raw",
    [
        # spec: §2.13 -- keys must be top-level input fields; no nested paths
        {"nope": 1},
        {"address.country": "US"},
        {"amount": 1, "nope": {"max": 1}},
        # spec: §2.13 -- max/min numbers (not bool), in/not_in arrays
        {"amount": {"max": "10"}},
        {"amount": {"max": True}},
        {"amount": {"min": False}},
        {"amount": {"max": None}},
        {"amount": {"max": [1]}},
        {"amount": {"max": {"v": 1}}},
        {"amount": {"max": NAN}},
        {"amount": {"max": INF}},
        {"amount": {"min": -INF}},
        {"currency": {"in": "USD"}},
        {"currency": {"in": None}},
        {"currency": {"in": {"USD": 1}}},
        {"currency": {"not_in": "x"}},
        {"currency": {"not_in": 1}},
        {"currency": {"in": [["USD"]]}},
        {"currency": {"in": [{"a": 1}]}},
        {"currency": {"not_in": [NAN]}},
        {"currency": {"in": [INF]}},
        {"currency": {"in": ["x"] * 1001}},
        # min greater than max can admit nothing
        {"amount": {"min": 10, "max": 5}},
        {"amount": {"min": 0.5, "max": 0.25}},
        # empty operator object: neither an exact value nor any operator
        {"amount": {}},
        # exact values must be JSON scalars
        {"amount": [1, 2]},
        {"amount": []},
        {"amount": NAN},
        {"amount": INF},
        {"amount": (1,)},
        # the whole thing must be an object
        ["amount"],
        "amount",
        1,
    ],
)
def test_parse_rejects_as_invalid_request(raw: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(raw, CAP)
    assert caught.value.code == "invalid_request"
    assert caught.value.status == 400


def test_parse_without_declared_input_rejects_every_field() -> None:
    # spec: §2.13 -- no input schema, no constrainable field
    bare = Capability(name="t", description="d")
    assert parse(None, bare) is None
    with pytest.raises(ProtocolError) as caught:
        parse({"amount": 1}, bare)
    assert caught.value.code == "invalid_request"


def test_parse_reports_all_unknown_operators_across_fields() -> None:
    # spec: §2.13 -- unknown_constraint_operator with every unknown name, sorted, once each
    raw = {
        "amount": {"lt": 1, "max": 2},
        "currency": {"regex": "^U", "lt": 3},
        "flag": {"gt": 0},
    }
    with pytest.raises(ProtocolError) as caught:
        parse(raw, CAP)
    assert caught.value.code == "unknown_constraint_operator"
    assert caught.value.status == 400
    assert caught.value.extra["unknown_operators"] == ["gt", "lt", "regex"]


@pytest.mark.parametrize(
    "raw",
    [
        {"nope": {"gt": 1}},  # unknown field too
        {"amount": {"min": 10, "max": 1, "gte": 1}},  # min > max too
        {"amount": {"max": "x", "eq": 1}},  # wrong operator type too
        {"amount": [1], "currency": {"eq": 1}},  # non-scalar exact too
    ],
)
def test_parse_unknown_operators_win_over_other_errors(raw: Any) -> None:
    # parse() docstring: unknown operators are reported before any other check, so a client
    # always learns every operator the server does not understand
    with pytest.raises(ProtocolError) as caught:
        parse(raw, CAP)
    assert caught.value.code == "unknown_constraint_operator"


def test_parse_object_exact_value_is_an_unknown_operator() -> None:
    # §2.13
    with pytest.raises(ProtocolError) as caught:
        parse({"address": {"country": "US", "city": "X"}}, CAP)
    assert caught.value.code == "unknown_constraint_operator"
    assert caught.value.extra["unknown_operators"] == ["city", "country"]


# =================================================================================================
# Examples: helpers
# =================================================================================================


@pytest.mark.parametrize(
    ("value", "number", "scalar"),
    [
        (0, True, True),
        (-2.5, True, True),
        (HUGE, True, True),
        (True, False, True),
        (False, False, True),
        (None, False, True),
        ("1", False, True),
        (NAN, False, False),
        (INF, False, False),
        (-INF, False, False),
        ([], False, False),
        ({}, False, False),
    ],
)
def test_is_number_and_is_scalar(value: Any, number: bool, scalar: bool) -> None:
    # §2.13
    assert is_number(value) is number
    assert is_scalar(value) is scalar


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (0, -0.0, True),
        (1, True, False),
        (True, 1, False),
        (True, True, True),
        (False, False, True),
        (True, False, False),
        (None, None, True),
        (None, False, False),
        ("a", "a", True),
        ("1", 1, False),
        (HUGE, HUGE, True),
        (HUGE, 1e308, False),
        (NAN, NAN, False),
        (INF, INF, False),
        ([1], [1], False),
        ({}, {}, False),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    # §2.13
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal


# =================================================================================================
# Examples: intersect() -- combining agent-proposed and server-imposed constraints
# =================================================================================================


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # spec: §2.13 -- max = min(maxes), min = max(mins)
        ({"f": {"max": 10}}, {"f": {"max": 5}}, {"f": {"max": 5}}),
        ({"f": {"max": 5}}, {"f": {"max": 10}}, {"f": {"max": 5}}),
        ({"f": {"min": 1}}, {"f": {"min": 4.5}}, {"f": {"min": 4.5}}),
        ({"f": {"min": 0}}, {"f": {"max": 10}}, {"f": {"min": 0, "max": 10}}),
        (
            {"f": {"min": 0, "max": 100}},
            {"f": {"min": 10, "max": 1000}},
            {"f": {"min": 10, "max": 100}},
        ),
        ({"f": {"min": 3}}, {"f": {"max": 3}}, {"f": {"min": 3, "max": 3}}),
        ({"f": {"max": HUGE}}, {"f": {"max": 1e308}}, {"f": {"max": 1e308}}),
        # exact ∧ operators: the exact value survives when the operators admit it
        ({"f": 5}, {"f": {"in": [1, 5]}}, {"f": 5}),
        ({"f": {"in": [1, 5]}}, {"f": 5}, {"f": 5}),
        ({"f": 5}, {"f": {"max": 10}}, {"f": 5}),
        ({"f": "a"}, {"f": {"not_in": ["b"]}}, {"f": "a"}),
        ({"f": None}, {"f": {"in": [None]}}, {"f": None}),
        # exact ∧ same exact
        ({"f": "x"}, {"f": "x"}, {"f": "x"}),
        ({"f": None}, {"f": None}, {"f": None}),
        ({"f": False}, {"f": False}, {"f": False}),
        # different fields: both kept
        ({"a": 1}, {"b": {"max": 2}}, {"a": 1, "b": {"max": 2}}),
        # spec: §5.3 -- a server cap narrows an agent proposal, never widens it
        ({"amount": {"max": 50000}}, {"amount": {"max": 10000}}, {"amount": {"max": 10000}}),
        ({"amount": {"max": 500}}, {"amount": {"max": 10000}}, {"amount": {"max": 500}}),
    ],
)
def test_intersect_examples(a: Any, b: Any, expected: Any) -> None:
    assert intersect(a, b) == expected


def test_intersect_equal_numbers_across_types() -> None:
    # §2.13 -- 1 and 1.0 are the same JSON number: not a contradiction
    for a, b in ((1, 1.0), (1.0, 1), (0, -0.0)):
        got = intersect({"f": a}, {"f": b})
        assert got is not None
        assert json_equal(got["f"], a)


def test_intersect_in_is_set_intersection() -> None:
    # spec: §2.13
    got = intersect({"c": {"in": ["USD", "EUR", "GBP"]}}, {"c": {"in": ["JPY", "EUR", "USD"]}})
    assert got is not None
    assert set(got["c"]) == {"in"}
    assert sorted(got["c"]["in"]) == ["EUR", "USD"]


def test_intersect_in_uses_json_equality() -> None:
    # §2.13 -- true is not 1, 1 is 1.0
    got = intersect({"f": {"in": [1, True, "1"]}}, {"f": {"in": [1.0]}})
    assert got is not None
    assert ok(got["f"], 1) and ok(got["f"], 1.0)
    assert not ok(got["f"], True) and not ok(got["f"], "1")
    with pytest.raises(ContradictoryConstraints):
        intersect({"f": {"in": [True]}}, {"f": {"in": [1]}})


def test_intersect_not_in_is_union() -> None:
    # spec: §2.13
    got = intersect({"c": {"not_in": ["a"]}}, {"c": {"not_in": ["b", "a"]}})
    assert got is not None
    assert set(got["c"]) == {"not_in"}
    assert sorted(got["c"]["not_in"]) == ["a", "b"]
    for value, allowed in (("a", False), ("b", False), ("c", True)):
        assert ok(got["c"], value) is allowed


def test_intersect_empty_not_in_keeps_the_field_required() -> None:
    # §2.13 -- {"not_in": []} still demands the field; intersecting must keep that
    got = intersect({"c": {"not_in": []}}, {"c": {"not_in": []}})
    assert got is not None
    assert check(got, {}) != []
    assert check(got, {"c": "anything"}) == []


def test_intersect_in_with_not_in_and_bounds() -> None:
    # spec: §2.13
    got = intersect({"f": {"in": ["a", "b", "c"]}}, {"f": {"not_in": ["a"]}})
    assert got is not None
    assert [x for x in ("a", "b", "c") if ok(got["f"], x)] == ["b", "c"]
    got = intersect({"f": {"in": [1, 5, 20, "x", True]}}, {"f": {"max": 10}})
    assert got is not None
    assert [x for x in (1, 5, 20, "x", True) if ok(got["f"], x)] == [1, 5]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # §2.13 -- empty/contradictory intersections are refused
        ({"f": {"min": 10}}, {"f": {"max": 5}}),
        ({"f": {"min": 0, "max": 1}}, {"f": {"min": 2, "max": 3}}),
        ({"f": {"in": ["a"]}}, {"f": {"in": ["b"]}}),
        ({"f": {"in": ["a"]}}, {"f": {"not_in": ["a"]}}),
        ({"f": {"in": ["a", "b"]}}, {"f": {"not_in": ["b", "a"]}}),
        ({"f": {"in": [20]}}, {"f": {"max": 10}}),
        ({"f": {"in": ["5"]}}, {"f": {"min": 0}}),
        ({"f": {"in": []}}, {"f": {"in": []}}),
        ({"f": {"in": []}}, {"f": {"not_in": []}}),
        ({"f": 7}, {"f": {"in": [1, 5]}}),
        ({"f": 50}, {"f": {"max": 10}}),
        ({"f": True}, {"f": {"max": 10}}),
        ({"f": "a"}, {"f": {"not_in": ["a"]}}),
        ({"f": None}, {"f": {"min": 0}}),
        ({"f": "x"}, {"f": "y"}),
        ({"f": 1}, {"f": 2}),
        ({"f": 1}, {"f": True}),
        ({"f": 0}, {"f": False}),
        ({"f": None}, {"f": 0}),
        ({"f": 1}, {"f": "1"}),
        ({"ok": 1, "f": "x"}, {"ok": 1, "f": "y"}),
        # bounds pinned to a single value that not_in excludes (was returned, not refused)
        ({"f": {"min": 3}}, {"f": {"max": 3, "not_in": [3]}}),
        ({"f": {"min": 3, "max": 3.0}}, {"f": {"not_in": ["x", 3]}}),
        ({"f": {"min": -0.0, "max": 0}}, {"f": {"not_in": [0]}}),
    ],
)
def test_intersect_contradictions(a: Any, b: Any) -> None:
    with pytest.raises(ContradictoryConstraints):
        intersect(a, b)
    with pytest.raises(ContradictoryConstraints):
        intersect(b, a)


def test_intersect_pinned_value_not_excluded_is_kept() -> None:
    # §2.13 -- not_in [true] does not exclude the number 1
    got = intersect({"f": {"min": 1, "max": 1}}, {"f": {"not_in": [True, "1", 2]}})
    assert got is not None
    assert ok(got["f"], 1)
    assert not ok(got["f"], 2)


def test_contradictory_constraints_is_a_value_error() -> None:
    assert issubclass(ContradictoryConstraints, ValueError)


def test_intersect_none_and_empty() -> None:
    # spec: §2.13 -- no constraints on either side is no constraint at all
    c = {"f": {"max": 1}}
    assert intersect(None, None) is None
    assert intersect({}, None) is None
    assert intersect(None, {}) is None
    assert intersect({}, {}) is None
    for got in (intersect(None, c), intersect(c, None), intersect({}, c), intersect(c, {})):
        assert got == c
        assert got is not c  # a new dict: storing it never aliases the caller's


def test_intersect_does_not_mutate_its_inputs() -> None:
    a = {"f": {"in": [1, 2, 3], "max": 10}, "g": {"not_in": ["x"]}, "h": 1}
    b = {"f": {"not_in": [2], "min": 0}, "g": {"not_in": ["y"]}, "i": {"in": ["z"]}}
    before = copy.deepcopy((a, b))
    intersect(a, b)
    intersect(b, a)
    assert (a, b) == before


# =================================================================================================
# Properties
# =================================================================================================

# Small pools make overlaps (and therefore satisfiable and contradictory pairs) common; the broad
# strategies keep the odd corners (huge ints, subnormal floats, unicode) in play.
numbers = st.one_of(
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([-1.5, -0.0, 0.0, 0.5, 1.0, 2.0, 2.5]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
texts = st.one_of(st.sampled_from(["", "a", "b", "USD", "1"]), st.text(max_size=3))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)


# Tiny pools for pairs of grants on one shared field: equal bounds, overlapping lists and
# single-value ranges are then common, which is where intersection bugs live.
few_numbers = st.one_of(st.integers(min_value=-2, max_value=2), st.sampled_from([-0.0, 0.5, 1.0]))
few_scalars = st.one_of(st.none(), st.booleans(), few_numbers, st.sampled_from(["", "a"]))


@st.composite
def operator_objects(
    draw: Any,
    nums: st.SearchStrategy[Any] = numbers,
    items: st.SearchStrategy[Any] = scalars,
    names: tuple[str, ...] = OPERATORS,
) -> dict[str, Any]:
    ops = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
    spec: dict[str, Any] = {}
    for op in ops:
        if op in ("min", "max"):
            spec[op] = draw(nums)
        else:
            spec[op] = draw(st.lists(items, max_size=4))
    if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        spec["min"], spec["max"] = spec["max"], spec["min"]
    return spec


@st.composite
def constraint_sets(draw: Any) -> dict[str, Any]:
    fields = draw(st.lists(st.sampled_from(FIELDS), max_size=len(FIELDS), unique=True))
    return {f: draw(st.one_of(scalars, operator_objects())) for f in fields}


close_sets = st.fixed_dictionaries(
    {
        "amount": st.one_of(
            few_scalars,
            operator_objects(few_numbers, few_scalars),
            operator_objects(few_numbers, few_scalars),
            operator_objects(few_numbers, few_numbers, ("min", "max", "not_in")),
        )
    }
)
#: two grants to intersect: unrelated, or both on one field from the tiny pools
pairs = st.one_of(
    st.tuples(constraint_sets(), constraint_sets()),
    st.tuples(close_sets, close_sets),
    st.tuples(close_sets, close_sets),
)

odd_values = st.one_of(
    st.sampled_from([NAN, INF, -INF, HUGE, -HUGE, 2**53 + 1]),
    st.lists(scalars, max_size=2),
    st.dictionaries(st.text(max_size=2), scalars, max_size=2),
)


def _hints(field: str, *sets: dict[str, Any]) -> list[Any]:
    """Values the constraints on ``field`` mention, and numbers next to its bounds.

    They satisfy those constraints often enough for the properties to test accepted arguments,
    not only rejected ones.
    """
    found: list[Any] = []
    for c in sets:
        spec = c.get(field, {})
        if not isinstance(spec, dict):
            found.append(spec)
            continue
        for op, bound in spec.items():
            if op in ("min", "max"):
                found += [bound, bound + 1, bound - 1]
            else:
                found += bound
    return found


@st.composite
def arguments_for(draw: Any, *sets: dict[str, Any]) -> dict[str, Any]:
    """Arguments over FIELDS: missing fields, hinted values, other scalars and wrong types."""
    args: dict[str, Any] = {}
    for field in FIELDS:
        hints = _hints(field, *sets)
        kinds = ["missing", "scalar", "odd"] + (["hint"] * 12 if hints else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "hint":
            args[field] = draw(st.sampled_from(hints))
        elif kind == "scalar":
            args[field] = draw(scalars)
        elif kind == "odd":
            args[field] = draw(odd_values)
    if draw(st.booleans()):
        args["memo"] = draw(scalars)
    return args


def variants(args: dict[str, Any], *sets: dict[str, Any]) -> list[dict[str, Any]]:
    """``args``, plus each single-field change to a hinted value or to absent.

    Checking a few dozen neighbours per example makes a wrong bound or a dropped list item
    show up without relying on one lucky draw.
    """
    out = [args]
    for field in FIELDS:
        out.append({k: x for k, x in args.items() if k != field})
        for hint in _hints(field, *sets):
            out.append({**args, field: hint})
    return out


# --- the oracle: the spec's table, written independently of agentauth.constraints -------------


def jkey(value: Any) -> tuple[str, Any] | None:
    """The JSON identity of a scalar, or None for anything that is not a (finite) JSON scalar.

    Numbers become exact ``Fraction``s, so int/float comparisons never round, and a ``bool``
    (Python's int subclass) is its own kind, never equal to a number.
    """
    if value is None:
        return ("null", None)
    if type(value) is bool:
        return ("boolean", value)
    if type(value) is int:
        return ("number", Fraction(value))
    if type(value) is float:
        return ("number", Fraction(value)) if math.isfinite(value) else None
    if type(value) is str:
        return ("string", value)
    return None


def operator_holds(op: str, bound: Any, value: Any) -> bool:
    key = jkey(value)
    if key is None:
        return False
    if op == "max":
        return key[0] == "number" and key[1] <= Fraction(bound)
    if op == "min":
        return key[0] == "number" and key[1] >= Fraction(bound)
    listed = [jkey(item) for item in bound]
    if op == "in":
        return key in listed
    assert op == "not_in"
    return key not in listed


def expected_violations(c: dict[str, Any], args: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for field, spec in c.items():
        present = field in args
        value = args.get(field)
        if isinstance(spec, dict):
            for op, bound in spec.items():
                if not (present and operator_holds(op, bound, value)):
                    out.append(v(field, {op: bound}, value))
        elif not (present and jkey(value) is not None and jkey(value) == jkey(spec)):
            out.append(v(field, spec, value))
    return out


def oracle_allows(c: dict[str, Any] | None, args: dict[str, Any]) -> bool:
    return not expected_violations(c or {}, args)


# --- the properties --------------------------------------------------------------------------


@given(c=constraint_sets())
def test_generated_constraints_are_valid_grants(c: dict[str, Any]) -> None:
    # the strategies produce exactly what parse() accepts (§2.13), unchanged
    assert parse(c, capability(*FIELDS)) == (c or None)


@given(c=constraint_sets(), data=st.data())
def test_p1_soundness(c: dict[str, Any], data: Any) -> None:
    # §9.1 spec: §2.13 -- an empty violation list means every
    # operator's meaning holds, recomputed here from the spec's table
    args = data.draw(arguments_for(c))
    if check(c, args) != []:
        return
    for field, spec in c.items():
        assert field in args  # §2.13
        value = args[field]
        key = jkey(value)
        assert key is not None  # a finite JSON scalar (§2.13)
        if not isinstance(spec, dict):
            assert key == jkey(spec)  # §2.13
            continue
        for op, bound in spec.items():
            if op in ("min", "max"):
                assert key[0] == "number"  # a boolean or a string never passes (§2.13)
                if op == "max":
                    assert key[1] <= Fraction(bound)  # §2.13, inclusive
                else:
                    assert key[1] >= Fraction(bound)
            elif op == "in":
                assert key in [jkey(item) for item in bound]
            else:
                assert key not in [jkey(item) for item in bound]


@given(c=constraint_sets(), data=st.data())
def test_p2_completeness(c: dict[str, Any], data: Any) -> None:
    # §9.2 spec: §2.13 -- whatever the spec's table allows, check() allows
    args = data.draw(arguments_for(c))
    if oracle_allows(c, args):
        assert check(c, args) == []


@given(c=constraint_sets(), data=st.data())
def test_violation_list_matches_the_oracle(c: dict[str, Any], data: Any) -> None:
    # spec: §2.13 -- the exact list: one entry per violated operator, in constraint order,
    # "constraint" holding just that operator (or the exact value), "actual" the argument
    args = data.draw(arguments_for(c))
    assert check(c, args) == expected_violations(c, args)


def _accepts(c: dict[str, Any] | None, args: dict[str, Any]) -> bool:
    return check(c, args) == []


@given(pair=pairs, data=st.data())
def test_p3_narrowing_never_widens(pair: Any, data: Any) -> None:
    # §9.3 spec: §2.13, §5.3 "MUST NOT widen", §2.13 -- the combination admits nothing either side
    # refuses
    a, b = pair
    try:
        both = intersect(a, b)
    except ContradictoryConstraints:
        return
    # aim at the combined grant's own values too: that is where a widened bound would show
    drawn = data.draw(arguments_for(a, b, both or {}))
    for args in variants(drawn, a, b, both or {}):
        if _accepts(both, args):
            assert _accepts(a, args), args
            assert _accepts(b, args), args


@given(pair=pairs, data=st.data())
def test_p4_intersection_is_exact(pair: Any, data: Any) -> None:
    # §9.4 spec: §2.13 -- "tightest wins", but no tighter: what both allow, the combination allows,
    # so a satisfiable pair is never refused as contradictory
    a, b = pair
    drawn = data.draw(arguments_for(a, b))
    for args in variants(drawn, a, b):
        if _accepts(a, args) and _accepts(b, args):
            both = intersect(a, b)  # must not raise
            assert _accepts(both, args), args


@st.composite
def satisfied_by(draw: Any, args: dict[str, Any]) -> dict[str, Any]:
    """A valid constraint set that ``args`` satisfies, built from the oracle's reading."""
    c: dict[str, Any] = {}
    for field in draw(st.lists(st.sampled_from(FIELDS), unique=True)):
        value = args.get(field)
        key = jkey(value)
        if field not in args or key is None:
            continue
        if draw(st.booleans()):
            c[field] = value
            continue
        usable = OPERATORS if key[0] == "number" else ("in", "not_in")
        spec: dict[str, Any] = {}
        for op in draw(st.lists(st.sampled_from(usable), min_size=1, unique=True)):
            if op == "min":
                spec[op] = value - draw(st.sampled_from([0, 1, 2]))
            elif op == "max":
                spec[op] = value + draw(st.sampled_from([0, 1, 2]))
            elif op == "in":
                spec[op] = draw(st.permutations([*draw(st.lists(scalars, max_size=3)), value]))
            else:
                spec[op] = [x for x in draw(st.lists(scalars, max_size=3)) if jkey(x) != key]
        c[field] = spec
    return c


@given(args=arguments_for(), data=st.data())
def test_p4_common_arguments_survive_intersection(args: dict[str, Any], data: Any) -> None:
    # §9.4, aimed: two grants built around the same arguments always intersect to one that
    # still admits them (§2.13: a satisfiable combination is never "contradictory")
    a = data.draw(satisfied_by(args))
    b = data.draw(satisfied_by(args))
    assert parse(a, capability(*FIELDS)) == (a or None)  # the generator makes valid grants
    assert oracle_allows(a, args) and oracle_allows(b, args)
    both = intersect(a, b)
    assert _accepts(both, args)
    assert _accepts(intersect(b, a), args)


def spec_holds(spec: Any, value: Any) -> bool:
    if isinstance(spec, dict):
        return all(operator_holds(op, bound, value) for op, bound in spec.items())
    return jkey(value) is not None and jkey(value) == jkey(spec)


def jointly_satisfiable(x: Any, y: Any) -> bool:
    """Is there any JSON value satisfying both field constraints? Decided from the spec alone."""
    specs = [x, y]
    pinned = [s for s in specs if not isinstance(s, dict)]
    listed = [i for s in specs if isinstance(s, dict) for i in s.get("in", [])]
    if pinned or any(isinstance(s, dict) and "in" in s for s in specs):
        # the value must be one of finitely many candidates
        return any(all(spec_holds(s, c) for s in specs) for c in pinned + listed)
    mins = [Fraction(s["min"]) for s in specs if "min" in s]
    maxes = [Fraction(s["max"]) for s in specs if "max" in s]
    if not mins and not maxes:
        return True  # only not_in: some fresh string is never excluded
    if mins and maxes:
        lo, hi = max(mins), min(maxes)
        if lo > hi:
            return False
        if lo == hi:  # exactly one number left: is it excluded?
            excluded = [jkey(i) for s in specs for i in s.get("not_in", [])]
            return ("number", lo) not in excluded
    return True  # infinitely many numbers in range, finitely many excluded


@given(pair=pairs)
def test_contradiction_iff_unsatisfiable(pair: Any) -> None:
    # spec: §2.13 -- intersect refuses exactly the pairs that leave some shared
    # field with no admissible value (and never a pair that some argument satisfies)
    a, b = pair
    shared = [f for f in a if f in b]
    expected = not all(jointly_satisfiable(a[f], b[f]) for f in shared)
    try:
        intersect(a, b)
        refused = False
    except ContradictoryConstraints:
        refused = True
    assert refused is expected


@given(pair=pairs, data=st.data())
def test_p5_intersection_is_symmetric(pair: Any, data: Any) -> None:
    # §9.5 spec: §2.13 -- agent ∩ server and server ∩ agent mean the same grant
    a, b = pair
    drawn = data.draw(arguments_for(a, b))

    def outcome(x: dict[str, Any], y: dict[str, Any]) -> list[bool] | None:
        try:
            both = intersect(x, y)
        except ContradictoryConstraints:
            return None
        return [_accepts(both, args) for args in variants(drawn, a, b)]

    assert outcome(a, b) == outcome(b, a)


@given(pair=pairs)
def test_intersection_is_a_valid_grant(pair: Any) -> None:
    # spec: §5.3, §2.13 -- a combined grant is itself storable: it passes grant-time
    # validation unchanged (no empty operator object, no min > max, no unknown operator)
    a, b = pair
    try:
        both = intersect(a, b)
    except ContradictoryConstraints:
        return
    assert parse(both, capability(*FIELDS)) == both
    assert set(both or {}) == set(a) | set(b)


@given(c=constraint_sets(), junk=st.dictionaries(st.sampled_from(FIELDS), scalars, min_size=1))
def test_intersection_with_itself_changes_nothing(c: dict[str, Any], junk: Any) -> None:
    # spec: §2.13 -- c ∩ c accepts exactly what c accepts (a satisfiable c is never contradictory)
    args = {**junk}
    try:
        same = intersect(c, c)
    except ContradictoryConstraints:
        # only a c that admits nothing may be self-contradictory (e.g. {"in": []})
        assert not oracle_allows(c, args)
        return
    assert _accepts(same, args) == _accepts(c, args)


json_scalars_any = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)
)  # st.floats() includes NaN and +/-inf: Python callers can pass them
json_values = st.recursive(
    json_scalars_any,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    c=constraint_sets(),
    args=st.dictionaries(
        st.one_of(st.sampled_from(FIELDS), st.text(max_size=3)), json_values, max_size=5
    ),
)
def test_p6_check_never_raises(c: dict[str, Any], args: dict[str, Any]) -> None:
    # P6 §2.13 -- any JSON-ish arguments against any valid grant: a list, no
    # exception, nothing mutated, well-formed entries only
    before = copy.deepcopy((c, args))
    got = check(c, args)
    assert isinstance(got, list)
    assert (c, args) == before
    budget = sum(len(s) if isinstance(s, dict) else 1 for s in c.values())
    assert len(got) <= budget
    for entry in got:
        assert set(entry) == {"field", "constraint", "actual"}
        assert entry["field"] in c
        assert entry["actual"] is args.get(entry["field"])
    # and the oracle agrees on the whole list, NaN, infinities and nesting included
    assert got == expected_violations(c, args)


@given(
    c=constraint_sets(),
    extra=st.dictionaries(
        st.sampled_from(FIELDS),
        st.sets(st.text(min_size=1, max_size=6).filter(lambda s: s not in OPERATORS), min_size=1),
        min_size=1,
    ),
)
def test_unknown_operators_are_all_reported(c: dict[str, Any], extra: Any) -> None:
    # spec: §2.13 -- parse() and check() both refuse, naming every unknown operator, sorted
    raw = {f: (dict(s) if isinstance(s, dict) else {}) for f, s in c.items()}
    for field, names in extra.items():
        raw.setdefault(field, {}).update(dict.fromkeys(names, 1))
    expected = sorted(set().union(*extra.values()))
    for action in (lambda: parse(raw, capability(*FIELDS)), lambda: check(raw, {})):
        with pytest.raises(ProtocolError) as caught:
            action()
        assert caught.value.code == "unknown_constraint_operator"
        assert caught.value.extra["unknown_operators"] == expected
