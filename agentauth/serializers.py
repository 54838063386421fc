"""Wire shapes of protocol responses (spec §5.3, §5.5, §7). Names are the spec's, exactly."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from .capabilities import registry
from .models import Agent, CapabilityGrant, GrantStatus


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` suffix, as in the spec's examples."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def grant(g: CapabilityGrant, *, include_granted_by: bool = True) -> dict[str, Any]:
    """One grant object with the §5.3 conditional rules (active: full details; pending: name and
    status; denied: plus reason)."""
    data: dict[str, Any] = {"capability": g.capability, "status": g.status}
    if g.status == GrantStatus.ACTIVE:
        cap = registry.get(g.capability)
        if cap is not None:
            data["description"] = cap.description
            if cap.input is not None:
                data["input"] = dict(cap.input)
            if cap.output is not None:
                data["output"] = dict(cap.output)
            if cap.location:
                data["location"] = cap.url
        if g.constraints:
            data["constraints"] = g.constraints
        if include_granted_by and g.granted_by_id is not None:
            data["granted_by"] = str(g.granted_by_id)
        if g.expires_at is not None:
            data["expires_at"] = iso(g.expires_at)
    elif g.status == GrantStatus.DENIED and g.reason:
        data["reason"] = g.reason
    return data


def visible_grants(grants: Iterable[CapabilityGrant]) -> list[CapabilityGrant]:
    """Grants that exist on the wire: revoked rows are internal history (checklist Q9)."""
    now = timezone.now()
    return [
        g
        for g in grants
        if g.status not in (GrantStatus.REVOKED, GrantStatus.EXPIRED)
        and not (g.status == GrantStatus.ACTIVE and not g.is_effective(now))
    ]


def grants(items: Iterable[CapabilityGrant], **kwargs: Any) -> list[dict[str, Any]]:
    return [grant(g, **kwargs) for g in visible_grants(items)]


def agent_status(agent: Agent, agent_grants: Iterable[CapabilityGrant]) -> dict[str, Any]:
    """The comprehensive agent view of ``GET /agent/status`` (spec §5.5)."""
    data: dict[str, Any] = {
        "agent_id": agent.pk,
        "host_id": agent.host_id,
        "name": agent.name,
        "status": agent.status,
        "mode": agent.mode,
        "agent_capability_grants": grants(agent_grants),
        "created_at": iso(agent.created_at),
    }
    if agent.user_id is not None:
        data["user_id"] = str(agent.user_id)
    for field in ("activated_at", "last_used_at", "expires_at"):
        value = getattr(agent, field)
        if value is not None:
            data[field] = iso(value)
    return data
