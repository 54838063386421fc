"""Audit trail: one row per state change or capability call (spec §11, checklist O2/O3/O7)."""

from __future__ import annotations

from typing import Any

from .models import Agent, AuditEvent, Host


def record(
    kind: str,
    *,
    actor_type: str,
    actor_id: str = "",
    agent: Agent | None = None,
    host: Host | None = None,
    user_id: Any = None,
    capability: str = "",
    outcome: str = "ok",
    error_code: str = "",
    **data: Any,
) -> AuditEvent:
    if host is None and agent is not None:
        host_id = agent.host_id
    else:
        host_id = host.id if host is not None else ""
    if user_id is None and agent is not None and agent.user_id is not None:
        user_id = agent.user_id
    return AuditEvent.objects.create(
        kind=kind,
        actor_type=actor_type,
        actor_id=str(actor_id or ""),
        agent_id=agent.id if agent is not None else "",
        host_id=host_id,
        user_id="" if user_id is None else str(user_id),
        capability=capability,
        outcome=outcome,
        error_code=error_code,
        data=data,
    )
