"""Agent and host lifecycle: clocks, revocation, cascades, linking (spec §2.3-§2.11).

Every transition is a conditional ``UPDATE ... WHERE status IN (...)`` so that two racing
callers cannot both win, and so that a revoked agent can never be brought back by a stale read.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import audit, signals
from .conf import app_settings
from .models import (
    TERMINAL_AGENT_STATES,
    Agent,
    AgentMode,
    AgentStatus,
    ApprovalRequest,
    ApprovalStatus,
    CapabilityGrant,
    GrantStatus,
    Host,
    HostStatus,
)

REASON_ABSOLUTE_LIFETIME = "absolute_lifetime"
NON_TERMINAL_AGENT_STATES = (AgentStatus.ACTIVE, AgentStatus.PENDING, AgentStatus.EXPIRED)


def session_expires_at(agent: Agent) -> datetime | None:
    """When the agent's session ends if it stays idle (checklist L8, Q13)."""
    deadlines: list[datetime] = []
    anchor = agent.activated_at or agent.created_at
    if app_settings.SESSION_TTL:
        last = agent.last_used_at or anchor
        deadlines.append(last + timedelta(seconds=app_settings.SESSION_TTL))
    if app_settings.MAX_LIFETIME:
        deadlines.append(anchor + timedelta(seconds=app_settings.MAX_LIFETIME))
    if app_settings.ABSOLUTE_LIFETIME:
        deadlines.append(agent.created_at + timedelta(seconds=app_settings.ABSOLUTE_LIFETIME))
    return min(deadlines) if deadlines else None


def _absolute_deadline(agent: Agent) -> datetime | None:
    if not app_settings.ABSOLUTE_LIFETIME:
        return None
    return agent.created_at + timedelta(seconds=app_settings.ABSOLUTE_LIFETIME)


def evaluate_clocks(agent: Agent, now: datetime | None = None) -> None:
    """Apply the lifetime clocks to ``agent`` now, persisting any transition (checklist L7).

    Runs on every authenticated request so an overdue agent is refused even if no sweep ran.
    """
    now = now or timezone.now()
    if agent.status in TERMINAL_AGENT_STATES:
        return
    absolute = _absolute_deadline(agent)
    if absolute is not None and now >= absolute:
        revoke_agent(agent, actor_type="system", reason=REASON_ABSOLUTE_LIFETIME)
        return
    if agent.status != AgentStatus.ACTIVE:
        return
    deadline = session_expires_at(agent)
    if deadline is not None and now >= deadline:
        Agent.objects.filter(pk=agent.pk, status=AgentStatus.ACTIVE).update(
            status=AgentStatus.EXPIRED, expires_at=deadline, updated_at=now
        )
        agent.status = AgentStatus.EXPIRED
        audit.record("agent.expired", actor_type="system", agent=agent)


def touch(agent: Agent, now: datetime | None = None) -> None:
    """Record an authenticated agent request: slides the session TTL (checklist Q14).

    The write is skipped while the last one is fresher than a tenth of the TTL (at most 30 s):
    the session still slides, and a busy agent costs one write per window, not per call.
    """
    now = now or timezone.now()
    ttl = app_settings.SESSION_TTL or 300
    if agent.last_used_at is not None and (now - agent.last_used_at).total_seconds() < min(
        30, ttl / 10
    ):
        return
    agent.last_used_at = now
    agent.expires_at = session_expires_at(agent)
    Agent.objects.filter(pk=agent.pk, status=AgentStatus.ACTIVE).update(
        last_used_at=now, expires_at=agent.expires_at
    )


def _close_pending_approvals(agent_ids: Any, now: datetime) -> None:
    ApprovalRequest.objects.filter(agent_id__in=agent_ids, status=ApprovalStatus.PENDING).update(
        status=ApprovalStatus.EXPIRED, decided_at=now, updated_at=now
    )


def revoke_agent(
    agent: Agent,
    *,
    actor_type: str,
    actor_id: str = "",
    reason: str = "revoked",
) -> bool:
    """Revoke permanently (spec §2.6). Returns False if the agent was already terminal."""
    now = timezone.now()
    with transaction.atomic():
        Host.objects.select_for_update().filter(pk=agent.host_id).first()  # lock order: host first
        changed = Agent.objects.filter(pk=agent.pk, status__in=NON_TERMINAL_AGENT_STATES).update(
            status=AgentStatus.REVOKED, revoked_at=now, revocation_reason=reason, updated_at=now
        )
        if changed:
            _close_pending_approvals([agent.pk], now)
            CapabilityGrant.objects.filter(agent=agent, status=GrantStatus.PENDING).update(
                status=GrantStatus.REVOKED, updated_at=now
            )
            audit.record(
                "agent.revoked",
                actor_type=actor_type,
                actor_id=actor_id,
                agent=agent,
                reason=reason,
            )
            transaction.on_commit(
                lambda: signals.agent_revoked.send(
                    sender=Agent, agent=agent, reason=reason, actor_type=actor_type
                )
            )
    agent.refresh_from_db()
    return bool(changed)


def revoke_host(host: Host, *, actor_type: str, actor_id: str = "") -> int:
    """Revoke a host and cascade to every agent under it (spec §5.10, §8.5).

    Returns how many agents moved to ``revoked`` in this call (checklist Q49).
    """
    now = timezone.now()
    with transaction.atomic():
        Host.objects.select_for_update().filter(pk=host.pk).first()  # lock order: host first
        Host.objects.filter(pk=host.pk).exclude(status=HostStatus.REVOKED).update(
            status=HostStatus.REVOKED, revoked_at=now, updated_at=now
        )
        live = Agent.objects.filter(host=host, status__in=NON_TERMINAL_AGENT_STATES)
        agent_ids = list(live.values_list("pk", flat=True))
        count = Agent.objects.filter(pk__in=agent_ids, status__in=NON_TERMINAL_AGENT_STATES).update(
            status=AgentStatus.REVOKED,
            revoked_at=now,
            revocation_reason="host_revoked",
            updated_at=now,
        )
        _close_pending_approvals(agent_ids, now)
        audit.record(
            "host.revoked",
            actor_type=actor_type,
            actor_id=actor_id,
            host=host,
            user_id=host.user_id,
            agents_revoked=count,
            agent_ids=agent_ids,
        )
        transaction.on_commit(
            lambda: signals.host_revoked.send(
                sender=Host, host=host, agents_revoked=count, actor_type=actor_type
            )
        )
    host.refresh_from_db()
    return count


def link_host(host: Host, user: Any, *, actor_type: str) -> list[str]:
    """Bind an unlinked host to ``user`` and claim its autonomous agents (spec §2.9, §2.10).

    Must be called inside a transaction with ``host`` locked. Returns the claimed agent ids.
    """
    now = timezone.now()
    host.user = user
    host.save(update_fields=["user", "updated_at"])
    # Claim every non-terminal autonomous agent (checklist Q39): their grants end, their
    # history now belongs to the user.
    claimed_qs = Agent.objects.filter(
        host=host, mode=AgentMode.AUTONOMOUS, status__in=NON_TERMINAL_AGENT_STATES
    )
    claimed = list(claimed_qs.values_list("pk", flat=True))
    if claimed:
        Agent.objects.filter(pk__in=claimed).update(
            status=AgentStatus.CLAIMED, user=user, updated_at=now
        )
        CapabilityGrant.objects.filter(
            agent_id__in=claimed, status__in=["active", "pending"]
        ).update(status=GrantStatus.REVOKED, updated_at=now)
        _close_pending_approvals(claimed, now)
    audit.record("host.linked", actor_type=actor_type, host=host, user_id=user.pk, claimed=claimed)
    transaction.on_commit(
        lambda: signals.host_linked.send(sender=Host, host=host, user=user, claimed=claimed)
    )
    return claimed
