"""Request-body validation shared by the protocol endpoints.

Bodies are strict: unknown members, wrong JSON types and over-long strings are ``400
invalid_request`` with a message naming the field, so a client learns exactly what to fix and a
typo never silently changes behaviour.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from . import constraints as constraint_rules
from .capabilities import Capability, registry
from .conf import app_settings
from .errors import ProtocolError, invalid_request

_TAG = re.compile(r"<[^>]*>")

NAME_MAX = 128
MESSAGE_MAX = 256
REASON_MAX = 1000


def check_fields(body: Mapping[str, Any], allowed: Collection[str]) -> None:
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise invalid_request(f"Unknown field(s): {', '.join(unknown)}", unknown_fields=unknown)


def display_text(value: Any, field: str, *, max_length: int, required: bool = False) -> str:
    """Sanitise attacker-controlled display text (spec §8.10, §8): strip markup and control
    characters, collapse whitespace, enforce a length limit. Templates still autoescape."""
    if value is None:
        if required:
            raise invalid_request(f"'{field}' is required")
        return ""
    if not isinstance(value, str):
        raise invalid_request(f"'{field}' must be a string")
    text = _TAG.sub("", value)
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text
    )
    text = " ".join(text.split())
    if required and not text:
        raise invalid_request(f"'{field}' must not be empty")
    if len(text) > max_length:
        raise invalid_request(f"'{field}' is longer than {max_length} characters")
    return text


def optional_choice(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise invalid_request(f"'{field}' must be a short string")
    return value


@dataclass(frozen=True)
class RequestedCapability:
    capability: Capability
    constraints: dict[str, Any] | None

    @property
    def name(self) -> str:
        return self.capability.name


def requested_capabilities(raw: Any, *, required: bool = False) -> list[RequestedCapability]:
    """Parse ``capabilities``: names or ``{"name", "constraints"}`` objects (spec §5.3).

    Unknown names are reported together (``invalid_capabilities``); unknown constraint operators
    likewise (``unknown_operators``). Non-public capabilities are requestable: listing is what
    hides them, not requesting.
    """
    if raw is None:
        if required:
            raise invalid_request("'capabilities' is required")
        return []
    if not isinstance(raw, list):
        raise invalid_request("'capabilities' must be an array")
    if required and not raw:
        raise invalid_request("'capabilities' must not be empty")
    if len(raw) > app_settings.MAX_CAPABILITIES_PER_REQUEST:
        raise invalid_request(
            f"At most {app_settings.MAX_CAPABILITIES_PER_REQUEST} capabilities per request"
        )
    entries: list[tuple[str, Any]] = []
    for item in raw:
        if isinstance(item, str):
            entries.append((item, None))
        elif isinstance(item, dict):
            check_fields(item, ("name", "constraints"))
            name = item.get("name")
            if not isinstance(name, str):
                raise invalid_request("Each capability object needs a string 'name'")
            entries.append((name, item.get("constraints")))
        else:
            raise invalid_request("Each capability must be a name or an object with 'name'")
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise invalid_request("A capability is requested more than once")
    invalid = [name for name in names if registry.get(name) is None]
    if invalid:
        raise ProtocolError(
            "invalid_capabilities",
            "One or more requested capability names don't exist",
            invalid_capabilities=invalid,
        )
    unknown_ops = sorted({op for _, c in entries for op in constraint_rules.unknown_operators(c)})
    if unknown_ops:
        raise ProtocolError(
            "unknown_constraint_operator",
            f"Unknown constraint operator(s): {', '.join(unknown_ops)}",
            unknown_operators=unknown_ops,
        )
    result = []
    for name, raw_constraints in entries:
        cap = registry.get(name)
        assert cap is not None
        requested = constraint_rules.parse(raw_constraints, cap)
        try:
            # Server-imposed constraints always apply; the agent can only narrow them (§2.13).
            effective = constraint_rules.intersect(requested, dict(cap.constraints or {}) or None)
        except constraint_rules.ContradictoryConstraints as exc:
            raise invalid_request(f"Constraints for '{name}' admit no value: {exc}") from None
        result.append(RequestedCapability(cap, effective))
    return result
