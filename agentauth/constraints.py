"""Scoped-grant constraints (spec §2.13).

A constraint maps a top-level input field to an exact value or to an operator object built from
``min``, ``max``, ``in`` and ``not_in``. Everything the spec leaves open (checklist Q28) fails
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
    """A JSON number: ``bool`` is an ``int`` in Python but never a number here (CN10)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


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
