"""Scoped-grant constraints (spec §2.13).

A constraint maps a top-level input field to an exact value or to an operator object built from
``min``, ``max``, ``in`` and ``not_in``. Everything the spec leaves open (§2.13) fails
closed: unknown operators are rejected with their names, operator values must have the right
JSON type, and exact values must be JSON scalars.
"""

from __future__ import annotations

import math
from typing import Any

from .capabilities import Capability
from .errors import ProtocolError, invalid_request

OPERATORS = frozenset({"min", "max", "in", "not_in"})
Constraints = dict[str, Any]


def is_number(value: Any) -> bool:
    """A JSON number: ``bool`` is an ``int`` in Python but never a number here (§2.13)."""
    if isinstance(value, bool):
        return False
    # Python ints are exact and finite at any size (math.isfinite would overflow on huge ones).
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool) or is_number(value)


def unknown_operators(raw: Any) -> list[str]:
    if not isinstance(raw, dict):
        return []
    found = {
        str(op)
        for spec in raw.values()
        if isinstance(spec, dict)
        for op in spec
        if op not in OPERATORS
    }
    return sorted(found)


def parse(raw: Any, capability: Capability) -> Constraints | None:
    """Validate agent-proposed constraints for ``capability``; return them or ``None``.

    Raises ``unknown_constraint_operator`` (with ``unknown_operators``) before any other check,
    so a client always learns every operator the server does not understand (spec §2.13).
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid_request(f"constraints for '{capability.name}' must be an object")
    unknown = unknown_operators(raw)
    if unknown:
        raise ProtocolError(
            "unknown_constraint_operator",
            f"Unknown constraint operator(s): {', '.join(unknown)}",
            unknown_operators=unknown,
        )
    fields = capability.input_properties()
    result: Constraints = {}
    for field, spec in raw.items():
        if field not in fields:
            raise invalid_request(
                f"Constraint field '{field}' is not a top-level input of '{capability.name}'"
            )
        if isinstance(spec, dict):
            result[field] = _parse_operators(capability.name, field, spec)
        elif is_scalar(spec):
            result[field] = spec
        else:
            raise invalid_request(
                f"Constraint on '{field}' must be a JSON scalar or an operator object"
            )
    return result or None


def _parse_operators(cap: str, field: str, spec: dict[str, Any]) -> dict[str, Any]:
    if not spec:
        raise invalid_request(f"Constraint on '{cap}.{field}' has no operators")
    for op in ("min", "max"):
        if op in spec and not is_number(spec[op]):
            raise invalid_request(f"Constraint '{field}.{op}' must be a finite number")
    for op in ("in", "not_in"):
        if op in spec:
            items = spec[op]
            if not isinstance(items, list) or not all(is_scalar(i) for i in items):
                raise invalid_request(f"Constraint '{field}.{op}' must be an array of scalars")
            if len(items) > 1000:
                raise invalid_request(f"Constraint '{field}.{op}' has too many items")
    if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        raise invalid_request(f"Constraint on '{field}' has min greater than max")
    return dict(spec)


# --- evaluation ----------------------------------------------------------------------------------


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: ``true`` is not ``1``; ``1`` and ``1.0`` are the same number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if is_number(a) and is_number(b):
        return bool(a == b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False  # arrays, objects, NaN: never equal to a constraint value (fail closed)


def _violates(op: str, bound: Any, actual: Any) -> bool:
    # A stored bound of the wrong type (a hand-edited grant) admits nothing: fail closed.
    if op in ("min", "max") and not is_number(bound):
        return True
    if op in ("in", "not_in") and not isinstance(bound, list):
        return True
    if op == "max":
        return not (is_number(actual) and actual <= bound)
    if op == "min":
        return not (is_number(actual) and actual >= bound)
    if op == "in":
        return not (is_scalar(actual) and _member(actual, bound))
    if op == "not_in":
        return not (is_scalar(actual) and not _member(actual, bound))
    return True  # unreachable after the unknown-operator check; fail closed all the same


_MISSING = object()


def check(constraints: Constraints | None, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the violations of ``arguments`` against a grant's ``constraints`` (spec §5.11).

    One entry per violated operator (§2.13), shaped ``{"field", "constraint",
    "actual"}``. A constrained field that is absent violates its constraint (§2.13). Raises
    ``unknown_constraint_operator`` if the stored constraints hold an operator we do not know.
    """
    if not constraints:
        return []
    unknown = unknown_operators(constraints)
    if unknown:
        raise ProtocolError(
            "unknown_constraint_operator",
            f"The grant holds unknown constraint operator(s): {', '.join(unknown)}",
            unknown_operators=unknown,
        )
    violations: list[dict[str, Any]] = []
    for field, spec in constraints.items():
        actual = arguments.get(field, _MISSING)
        shown = None if actual is _MISSING else actual
        if isinstance(spec, dict):
            for op, bound in spec.items():
                if actual is _MISSING or _violates(op, bound, actual):
                    violations.append({"field": field, "constraint": {op: bound}, "actual": shown})
        elif actual is _MISSING or not json_equal(actual, spec):
            violations.append({"field": field, "constraint": spec, "actual": shown})
    return violations


# --- narrowing -----------------------------------------------------------------------------------


class ContradictoryConstraints(ValueError):
    """The intersection admits no value for a field (§2.13)."""


def _member(value: Any, items: list[Any]) -> bool:
    return any(json_equal(value, item) for item in items)


def _admits(spec: Any, value: Any) -> bool:
    return not check({"f": spec}, {"f": value})


def _intersect_field(field: str, a: Any, b: Any) -> Any:
    if not isinstance(a, dict) and not isinstance(b, dict):
        if json_equal(a, b):
            return a
        raise ContradictoryConstraints(f"'{field}' cannot equal both {a!r} and {b!r}")
    if not isinstance(a, dict) or not isinstance(b, dict):
        exact, ops = (a, b) if not isinstance(a, dict) else (b, a)
        if _admits(ops, exact):
            return exact
        raise ContradictoryConstraints(f"'{field}' = {exact!r} is outside {ops!r}")
    out: dict[str, Any] = {}
    maxes = [s["max"] for s in (a, b) if "max" in s]
    mins = [s["min"] for s in (a, b) if "min" in s]
    if maxes:
        out["max"] = min(maxes)
    if mins:
        out["min"] = max(mins)
    ins = [s["in"] for s in (a, b) if "in" in s]
    not_ins = [s["not_in"] for s in (a, b) if "not_in" in s]
    excluded = [item for items in not_ins for item in items]
    if ins:
        allowed = [x for x in ins[0] if all(_member(x, other) for other in ins[1:])]
        allowed = [x for x in allowed if not _member(x, excluded)]
        bounds = {k: out[k] for k in ("min", "max") if k in out}
        if bounds:
            allowed = [x for x in allowed if _admits(bounds, x)]
        if not allowed:
            raise ContradictoryConstraints(f"'{field}' has no allowed value left")
        out["in"] = allowed
    elif not_ins:  # kept even when empty: it still requires the field to be present
        unique: list[Any] = []
        for item in excluded:
            if not _member(item, unique):
                unique.append(item)
        out["not_in"] = unique
    if "min" in out and "max" in out and out["min"] > out["max"]:
        raise ContradictoryConstraints(f"'{field}' has min greater than max")
    if (
        "in" not in out  # an `in` list was already filtered by the bounds and not_in above
        and "min" in out
        and "max" in out
        and out["min"] == out["max"]
        and _member(out["min"], out.get("not_in", []))
    ):
        raise ContradictoryConstraints(f"'{field}' = {out['min']!r} is excluded by not_in")
    return out


def intersect(a: Constraints | None, b: Constraints | None) -> Constraints | None:
    """The tightest combination of two constraint sets: never wider than either (spec §2.13)."""
    if not a:
        return dict(b) if b else None
    if not b:
        return dict(a)
    result: Constraints = {}
    for field in list(a) + [f for f in b if f not in a]:
        if field in a and field in b:
            result[field] = _intersect_field(field, a[field], b[field])
        else:
            result[field] = a[field] if field in a else b[field]
    return result
