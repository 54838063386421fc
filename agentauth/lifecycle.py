"""Agent and host lifecycle: clocks, revocation, cascades, linking (spec §2.3-§2.11).

Every transition is a conditional ``UPDATE ... WHERE status IN (...)`` so that two racing
callers cannot both win, and a revoked agent can never be brought back by a stale read. Locks
are always taken host first, then agent.

Clocks (spec §2.4) are stored on the agent when they are set: ``absolute_expires_at`` at
creation, ``expires_at`` at activation and on use. The per-request check and the periodic sweep
read the same stored deadlines, so they can never disagree about an agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from . import audit, signals
from .conf import app_settings
from .models import (
    TERMINAL_AGENT_STATES,
    Agent,
    AgentMode,
    AgentStatus,
    ApprovalRequest,
    ApprovalStatus,
    AuditEvent,
    CapabilityGrant,
    GrantStatus,
    Host,
    HostStatus,
)

REASON_ABSOLUTE_LIFETIME = "absolute_lifetime"
NON_TERMINAL_AGENT_STATES = (AgentStatus.ACTIVE, AgentStatus.PENDING, AgentStatus.EXPIRED)


@dataclass(frozen=True)
class Clocks:
    session_ttl: int | None
    max_lifetime: int | None
    absolute_lifetime: int | None


def clocks_for(agent: Agent) -> Clocks:
    """The three clocks for this agent: settings, then the ``AGENTAUTH_AGENT_CLOCKS`` hook."""
    values: dict[str, int | None] = {
        "session_ttl": app_settings.SESSION_TTL,
        "max_lifetime": app_settings.MAX_LIFETIME,
        "absolute_lifetime": app_settings.ABSOLUTE_LIFETIME,
    }
    if app_settings.AGENT_CLOCKS:
        overrides = import_string(app_settings.AGENT_CLOCKS)(agent) or {}
        values.update({k: v for k, v in overrides.items() if k in values})
    return Clocks(**{k: (int(v) if v else None) for k, v in values.items()})


def set_absolute_deadline(agent: Agent) -> None:
    """Fix the absolute end at creation (spec §2.4: counted from creation, never reset)."""
    absolute = clocks_for(agent).absolute_lifetime
    agent.absolute_expires_at = agent.created_at + timedelta(seconds=absolute) if absolute else None


def session_expires_at(agent: Agent) -> datetime | None:
    """When the session ends if the agent stays idle (checklist L8, Q13)."""
    clocks = clocks_for(agent)
    anchor = agent.activated_at or agent.created_at
    deadlines = [d for d in (agent.absolute_expires_at,) if d is not None]
    if clocks.session_ttl:
        deadlines.append((agent.last_used_at or anchor) + timedelta(seconds=clocks.session_ttl))
    if clocks.max_lifetime:
        deadlines.append(anchor + timedelta(seconds=clocks.max_lifetime))
    return min(deadlines) if deadlines else None


def evaluate_clocks(agent: Agent, now: datetime | None = None) -> None:
    """Apply the clocks to ``agent`` now, persisting any transition (checklist L7).

    Runs on every authenticated request so an overdue agent is refused even if no sweep ran.
    """
    now = now or timezone.now()
    if agent.status in TERMINAL_AGENT_STATES:
        return
    if agent.absolute_expires_at is not None and now >= agent.absolute_expires_at:
        revoke_agent(agent, actor_type="system", reason=REASON_ABSOLUTE_LIFETIME)
        return
    if agent.status == AgentStatus.ACTIVE and agent.expires_at and now >= agent.expires_at:
        changed = Agent.objects.filter(pk=agent.pk, status=AgentStatus.ACTIVE).update(
            status=AgentStatus.EXPIRED, updated_at=now
        )
        agent.status = AgentStatus.EXPIRED
        if changed:
            audit.record("agent.expired", actor_type="system", agent=agent)
            transaction.on_commit(lambda: signals.agent_expired.send(sender=Agent, agent=agent))


def touch(agent: Agent, now: datetime | None = None) -> None:
    """Record an authenticated agent request: slides the session TTL (checklist Q14).

    The write is skipped while the last one is fresher than a tenth of the TTL (at most 30 s):
    the session still slides, and a busy agent costs one write per window, not per call.
    """
    now = now or timezone.now()
    ttl = clocks_for(agent).session_ttl or 300
    if agent.last_used_at is not None and (now - agent.last_used_at).total_seconds() < min(
        30, ttl / 10
    ):
        return
    agent.last_used_at = now
    agent.expires_at = session_expires_at(agent)
    Agent.objects.filter(pk=agent.pk, status=AgentStatus.ACTIVE).update(
        last_used_at=now, expires_at=agent.expires_at
    )


def activate(agent: Agent, now: datetime) -> None:
    """Start (or restart) the session and max-lifetime clocks; never the absolute one."""
    agent.status = AgentStatus.ACTIVE
    agent.activated_at = now
    agent.last_used_at = None
    agent.expires_at = session_expires_at(agent)


def close_pending_approvals(agent_ids: Any, now: datetime) -> None:
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
    """Revoke permanently (spec §2.6). Returns False if the agent was already revoked."""
    now = timezone.now()
    with transaction.atomic():
        Host.objects.select_for_update().filter(pk=agent.host_id).first()  # lock order
        changed = (
            Agent.objects.filter(pk=agent.pk)
            .exclude(status=AgentStatus.REVOKED)
            .update(
                status=AgentStatus.REVOKED,
                revoked_at=now,
                revocation_reason=reason,
                updated_at=now,
            )
        )
        if changed:
            close_pending_approvals([agent.pk], now)
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


def _revoke_agents_of(host: Host, now: datetime, reason: str, **filters: Any) -> list[str]:
    agent_ids = list(
        Agent.objects.filter(
            host=host, status__in=NON_TERMINAL_AGENT_STATES, **filters
        ).values_list("pk", flat=True)
    )
    Agent.objects.filter(pk__in=agent_ids, status__in=NON_TERMINAL_AGENT_STATES).update(
        status=AgentStatus.REVOKED, revoked_at=now, revocation_reason=reason, updated_at=now
    )
    close_pending_approvals(agent_ids, now)
    return agent_ids


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
        agent_ids = _revoke_agents_of(host, now, "host_revoked")
        count = len(agent_ids)
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
    if host.user_id is not None and host.user_id != user.pk:
        from .errors import ProtocolError

        raise ProtocolError("unauthorized", "The host is already linked to another user")
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
            agent_id__in=claimed, status__in=[GrantStatus.ACTIVE, GrantStatus.PENDING]
        ).update(status=GrantStatus.REVOKED, updated_at=now)
        close_pending_approvals(claimed, now)
        AuditEvent.objects.filter(agent_id__in=claimed, user_id="").update(user_id=str(user.pk))
    audit.record("host.linked", actor_type=actor_type, host=host, user_id=user.pk, claimed=claimed)
    transaction.on_commit(
        lambda: signals.host_linked.send(sender=Host, host=host, user=user, claimed=claimed)
    )
    return claimed


def unlink_host(host: Host, *, actor_type: str, actor_id: str = "") -> list[str]:
    """Unlink a host from its user: its delegated agents are revoked (spec §2.9, H5)."""
    now = timezone.now()
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        user_id = host.user_id
        revoked = _revoke_agents_of(host, now, "host_unlinked", mode=AgentMode.DELEGATED)
        host.user = None
        host.save(update_fields=["user", "updated_at"])
        audit.record(
            "host.unlinked",
            actor_type=actor_type,
            actor_id=actor_id,
            host=host,
            user_id=user_id,
            agents_revoked=revoked,
        )
        transaction.on_commit(
            lambda: signals.host_unlinked.send(sender=Host, host=host, agents_revoked=revoked)
        )
    return revoked


def user_deleted(user: Any) -> int:
    """Spec §2.6: deleting a user revokes every host linked to them, with cascade (H7)."""
    total = 0
    for host in Host.objects.filter(user=user).exclude(status=HostStatus.REVOKED):
        total += revoke_host(host, actor_type="system", actor_id=f"user-deleted:{user.pk}")
    now = timezone.now()
    stray = list(
        Agent.objects.filter(user=user, status__in=NON_TERMINAL_AGENT_STATES).values_list(
            "pk", flat=True
        )
    )
    Agent.objects.filter(pk__in=stray).update(
        status=AgentStatus.REVOKED, revoked_at=now, revocation_reason="user_deleted"
    )
    close_pending_approvals(stray, now)
    return total + len(stray)
