"""Every response body the protocol defines (spec §5, §7), built from domain results.

Domain functions return models and results; views hand them here. Names are the spec's, exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from . import jobs
from .approvals import IssuedApproval
from .capabilities import registry
from .conf import app_settings
from .models import (
    Agent,
    ApprovalMethod,
    CapabilityGrant,
    Execution,
    ExecutionStatus,
    GrantStatus,
    Host,
)


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
    """Grants that exist on the wire: revoked rows are internal history (§3.3)."""
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


def approval(issued: IssuedApproval) -> dict[str, Any]:
    """The approval object of spec §7 (§7)."""
    req = issued.request
    expires_in = max(0, int((req.expires_at - timezone.now()).total_seconds()))
    data: dict[str, Any] = {"method": req.method}
    if req.method == ApprovalMethod.DEVICE_AUTHORIZATION and issued.user_code:
        uri = app_settings.VERIFICATION_URI
        data["verification_uri"] = uri
        data["verification_uri_complete"] = f"{uri}?{urlencode({'code': issued.user_code})}"
        data["user_code"] = issued.user_code
    if req.binding_message:
        data["binding_message"] = req.binding_message
    data["expires_in"] = expires_in
    data["interval"] = req.interval
    if app_settings.APPROVAL_EVENTS:
        data["notification_url"] = notification_url(req.agent_id)
    return data


def notification_url(agent_id: str) -> str:
    """The §10.10.2 SSE URL for ``agent_id``: the issuer plus the route's path below the app's
    mount, derived as discovery derives its endpoint paths."""
    mount = reverse("agentauth:discovery").removesuffix("/.well-known/agent-configuration")
    path = reverse("agentauth:approval_events", kwargs={"agent_id": agent_id})
    return app_settings.ISSUER + path.removeprefix(mount)


def _with_approval(data: dict[str, Any], issued: IssuedApproval | None) -> dict[str, Any]:
    if issued is not None:
        data["approval"] = approval(issued)
    return data


def registration(
    agent: Agent, agent_grants: Iterable[CapabilityGrant], issued: IssuedApproval | None
) -> dict[str, Any]:
    """``POST /agent/register`` (spec §5.3)."""
    data: dict[str, Any] = {
        "agent_id": agent.pk,
        "host_id": agent.host_id,
        "name": agent.name,
        "mode": agent.mode,
        "status": agent.status,
        "agent_capability_grants": grants(agent_grants, include_granted_by=False),
    }
    return _with_approval(data, issued)


def capability_request(
    agent: Agent, agent_grants: Iterable[CapabilityGrant], issued: IssuedApproval | None
) -> dict[str, Any]:
    """``POST /agent/request-capability`` (spec §5.4)."""
    data: dict[str, Any] = {
        "agent_id": agent.pk,
        "agent_capability_grants": grants(agent_grants, include_granted_by=False),
    }
    return _with_approval(data, issued)


def reactivation(
    agent: Agent, agent_grants: Iterable[CapabilityGrant], issued: IssuedApproval | None
) -> dict[str, Any]:
    """``POST /agent/reactivate`` (spec §5.6): the status view, plus an approval if one waits."""
    return _with_approval(agent_status(agent, agent_grants), issued)


def agent_revoked(agent: Agent) -> dict[str, Any]:
    """``POST /agent/revoke`` (spec §5.7)."""
    return {"agent_id": agent.pk, "status": "revoked"}


def agent_key_rotated(agent: Agent) -> dict[str, Any]:
    """``POST /agent/rotate-key`` (spec §5.8)."""
    return {"agent_id": agent.pk, "status": agent.status}


def host_revoked(host: Host, agents_revoked: int) -> dict[str, Any]:
    """``POST /host/revoke`` (spec §5.10)."""
    return {"host_id": host.pk, "status": "revoked", "agents_revoked": agents_revoked}


def host_key_rotated(host: Host) -> dict[str, Any]:
    """``POST /host/rotate-key`` (spec §5.9)."""
    return {"host_id": host.pk, "status": host.status}


def introspection(
    agent: Agent, names: Iterable[str], claim: Iterable[str] | None, *, disclose_user: bool
) -> dict[str, Any]:
    """An active token (spec §5.12): the effective grants, narrowed by the JWT's claim. The
    user an agent acts for is told only to an authenticated resource server."""
    effective = set(names)
    if claim is not None:
        effective &= set(claim)
    body: dict[str, Any] = {
        "active": True,
        "agent_id": agent.pk,
        "host_id": agent.host_id,
        "agent_capability_grants": [
            {"capability": name, "status": "active"} for name in sorted(effective)
        ],
        "mode": agent.mode,
    }
    if agent.user_id is not None and disclose_user:
        body["user_id"] = str(agent.user_id)
    if agent.expires_at is not None:
        body["expires_at"] = iso(agent.expires_at)
    return body


def inactive() -> dict[str, Any]:
    """Any token that is not valid now, whatever the reason (spec §5.12)."""
    return {"active": False}


def job(row: Execution) -> dict[str, Any]:
    """The async response shapes of spec §5.11, mutually exclusive."""
    if row.status == ExecutionStatus.COMPLETED:
        return {"status": "completed", "result": row.result}
    if row.status == ExecutionStatus.FAILED:
        return {"status": "failed", "error": row.error}
    return {"status": "pending", "status_url": jobs.status_url(row)}


def sync_result(data: Any) -> dict[str, Any]:
    """A sync execution (spec §5.11)."""
    return {"data": data}
