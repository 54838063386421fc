"""Capabilities declared in code (spec §2.12).

A project declares capabilities in ``<app>/capabilities.py``; :func:`autodiscover` imports those
modules when the app registry is ready, the same way ``django.contrib.admin`` finds ``admin.py``.
The registry is process-wide and read-only after start-up; the system checks report bad
declarations (duplicates, names, unimportable handlers) instead of failing at the first request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from django.utils.module_loading import autodiscover_modules, import_string

from .conf import app_settings

ApprovalStrength = Literal["none", "session", "webauthn"]
APPROVAL_STRENGTHS: tuple[str, ...] = ("none", "session", "webauthn")
Mode = Literal["sync", "async", "stream"]


class CapabilityError(ValueError):
    """A capability declaration is wrong; raised at declaration time, never at request time."""


@dataclass(frozen=True)
class Capability:
    name: str
    description: str
    input: Mapping[str, Any] | None = None
    output: Mapping[str, Any] | None = None
    location: str | None = None
    approval_strength: ApprovalStrength = "session"
    public: bool = True
    mode: Mode = "sync"
    handler: Callable[..., Any] | str | None = field(default=None, compare=False)
    #: Server-imposed constraints, intersected with whatever an agent asks for (spec §2.13).
    constraints: Mapping[str, Any] | None = None
    #: Every call needs a DPoP proof bound to the agent JWT (spec §8.3, RFC 9449).
    require_dpop: bool = False

    def resolve_handler(self) -> Callable[..., Any] | None:
        if isinstance(self.handler, str):
            handler: Callable[..., Any] = import_string(self.handler)
            return handler
        return self.handler

    @property
    def url(self) -> str | None:
        """The absolute execution URL (spec §2.12 ``location``), or ``None`` for the default.

        ``location`` may be an absolute URL or a URL name (``"support:escalate"``), resolved
        against the issuer's origin when asked, so declarations need no host names.
        """
        if not self.location:
            return None
        if "://" in self.location:
            return self.location
        from django.urls import reverse

        return app_settings.ORIGIN + reverse(self.location)

    def input_properties(self) -> set[str]:
        """Top-level argument names: the only keys a constraint may name (spec §2.13)."""
        props = (self.input or {}).get("properties") or {}
        return set(props) if isinstance(props, Mapping) else set()

    def to_wire(self, *, full: bool = True) -> dict[str, Any]:
        """The capability object of spec §2.12 (``full=False``: the list entry of §5.2)."""
        data: dict[str, Any] = {"name": self.name, "description": self.description}
        if full:
            if self.location:
                data["location"] = self.url
            if self.input is not None:
                data["input"] = dict(self.input)
            if self.output is not None:
                data["output"] = dict(self.output)
        # Not a spec field; the seed article's listing shows it and clients ignore unknown fields.
        data["approval_strength"] = self.approval_strength
        return data


class Registry:
    def __init__(self) -> None:
        self._by_name: dict[str, Capability] = {}
        self.problems: list[str] = []

    def register(self, cap: Capability) -> Capability:
        pattern = app_settings.CAPABILITY_NAME_PATTERN
        if not isinstance(cap.name, str) or not re.fullmatch(pattern, cap.name):
            raise CapabilityError(
                f"Capability name {cap.name!r} does not match AGENTAUTH_CAPABILITY_NAME_PATTERN "
                f"({pattern})"
            )
        if not isinstance(cap.description, str) or not cap.description.strip():
            raise CapabilityError(f"Capability {cap.name!r} needs a description")
        if cap.mode not in ("sync", "async", "stream"):
            raise CapabilityError(f"Capability {cap.name!r}: mode must be sync, async or stream")
        if cap.approval_strength not in APPROVAL_STRENGTHS:
            raise CapabilityError(
                f"Capability {cap.name!r}: approval_strength must be one of {APPROVAL_STRENGTHS}"
            )
        if cap.name in self._by_name and self._by_name[cap.name] is not cap:
            # Recorded for the system check; the first declaration wins meanwhile.
            self.problems.append(f"Capability {cap.name!r} is declared more than once")
            return self._by_name[cap.name]
        self._by_name[cap.name] = cap
        return cap

    def unregister(self, name: str) -> None:
        self._by_name.pop(name, None)

    def get(self, name: str) -> Capability | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Capability]:
        return iter(sorted(self._by_name.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._by_name)


registry = Registry()


def register(cap: Capability) -> Capability:
    return registry.register(cap)


def capability(
    name: str,
    *,
    description: str,
    input: Mapping[str, Any] | None = None,
    output: Mapping[str, Any] | None = None,
    location: str | None = None,
    approval_strength: ApprovalStrength = "session",
    public: bool = True,
    mode: Mode = "sync",
    constraints: Mapping[str, Any] | None = None,
    require_dpop: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a capability whose handler is the decorated function.

    ``approval_strength`` defaults to ``"session"`` so that forgetting it never lets a capability
    be auto-approved; say ``"none"`` explicitly for read-only capabilities.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        register(
            Capability(
                name=name,
                description=description,
                input=input,
                output=output,
                location=location,
                approval_strength=approval_strength,
                public=public,
                mode=mode,
                handler=func,
                constraints=constraints,
                require_dpop=require_dpop,
            )
        )
        return func

    return decorate


def autodiscover() -> None:
    autodiscover_modules("capabilities")
