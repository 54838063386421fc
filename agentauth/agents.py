"""Agents: revocation, reactivation, key rotation and the user-deletion cascade (spec §2.3-§2.11).

Every transition is a conditional ``UPDATE ... WHERE status IN (...)`` so that two racing
callers cannot both win, and a revoked agent can never be brought back by a stale read. Locks
are always taken host first, then agent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import approvals, audit, clocks, hosts, keys, policy, signals
from .capabilities import registry
from .conf import app_settings
from .errors import ProtocolError, invalid_request
from .models import (
    LIVE_GRANT_STATES,
    NON_TERMINAL_AGENT_STATES,
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
from .validation import RequestedCapability

_AGENT_REFUSALS = {
    AgentStatus.PENDING: "agent_pending",
    AgentStatus.EXPIRED: "agent_expired",
    AgentStatus.REVOKED: "agent_revoked",
    AgentStatus.REJECTED: "agent_rejected",
    AgentStatus.CLAIMED: "agent_claimed",
}
_HOST_REFUSALS = {
    HostStatus.PENDING: "host_pending",
    HostStatus.REVOKED: "host_revoked",
    HostStatus.REJECTED: "host_rejected",
}


def agent_refusal(agent: Agent) -> ProtocolError:
    """The error for an agent that may not act, named for its state (spec §2.3, §5.13), so every
    endpoint and every late re-check gives the same answer."""
    if (
        agent.status == AgentStatus.REVOKED
        and agent.revocation_reason == clocks.REASON_ABSOLUTE_LIFETIME
    ):
        return ProtocolError("absolute_lifetime_exceeded")
    return ProtocolError(_AGENT_REFUSALS.get(AgentStatus(agent.status), "unauthorized"))


def host_refusal(host: Host) -> ProtocolError:
    """The error for a host that may not act, named for its state (spec §2.11, §5.13)."""
    return ProtocolError(_HOST_REFUSALS.get(HostStatus(host.status), "unauthorized"))


def lock(agent: Agent) -> tuple[Host, Agent]:
    """Lock the agent's host, then the agent, and return both fresh.

    Every writer takes this order, so a decision racing a revocation waits instead of
    deadlocking, and what it checks is what it changes.
    """
    host = Host.objects.select_for_update().get(pk=agent.host_id)
    locked = Agent.objects.select_for_update().get(pk=agent.pk)
    locked.host = host
    return host, locked


def close_pending_approvals(agent_ids: Any, now: datetime) -> None:
    """An agent that can no longer be approved must not leave a person a live approval page."""
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
        lock(agent)
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
            # Active grants end too: an execute that authenticated before this commit waits on
            # the grant row it locks and then finds nothing to run (spec §8.17).
            CapabilityGrant.objects.filter(agent=agent, status__in=LIVE_GRANT_STATES).update(
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


def cascade_of(host: Host, **filters: Any) -> QuerySet[Agent]:
    """The agents a host cascade would revoke now (its live agents, narrowed by ``filters``)."""
    return Agent.objects.filter(host=host, status__in=NON_TERMINAL_AGENT_STATES, **filters)


def revoke_agents_of(host: Host, now: datetime, reason: str, **filters: Any) -> list[str]:
    """A host cascade in one statement (the caller holds the host lock and writes one audit row
    naming the ids, not one per agent)."""
    agent_ids = list(cascade_of(host, **filters).values_list("pk", flat=True))
    Agent.objects.filter(pk__in=agent_ids, status__in=NON_TERMINAL_AGENT_STATES).update(
        status=AgentStatus.REVOKED, revoked_at=now, revocation_reason=reason, updated_at=now
    )
    CapabilityGrant.objects.filter(agent_id__in=agent_ids, status__in=LIVE_GRANT_STATES).update(
        status=GrantStatus.REVOKED, updated_at=now
    )
    close_pending_approvals(agent_ids, now)
    return agent_ids


def user_deleted(user: Any) -> int:
    """Spec §2.6: deleting a user revokes every host linked to them, with cascade (§2.7), and any
    other agent acting for them, each with its audit row and signal."""
    total = 0
    for host in Host.objects.filter(user=user).exclude(status=HostStatus.REVOKED):
        total += hosts.revoke_host(host, actor_type="system", actor_id=f"user-deleted:{user.pk}")
    for agent in Agent.objects.filter(user=user, status__in=NON_TERMINAL_AGENT_STATES):
        total += revoke_agent(
            agent, actor_type="system", actor_id=f"user-deleted:{user.pk}", reason="user_deleted"
        )
    return total


def rotate_agent_key(agent: Agent, new_jwk: Any, *, actor_id: str) -> Agent:
    """Replace an agent's key (§5.8): non-terminal agents only, and the new
    key may not identify another agent of the same host (it is the registration key)."""
    public_key = keys.validate_public_jwk(new_jwk)
    thumbprint = keys.thumbprint(public_key)
    with transaction.atomic():
        host, agent = lock(agent)
        if agent.status not in NON_TERMINAL_AGENT_STATES:
            raise agent_refusal(agent)
        if agent.jwks_url is not None:
            # Its key lives at its JWKS URL: it rotates there (§4.2).
            raise invalid_request("This agent's key is served by its JWKS URL; rotate it there")
        if thumbprint == host.thumbprint:
            raise invalid_request("The agent key must differ from the host key")
        if thumbprint == agent.thumbprint:
            raise invalid_request("The new key is the current key")
        if Agent.objects.filter(host=host, thumbprint=thumbprint).exists():
            raise ProtocolError("agent_exists", "Another agent of this host uses that key")
        old = agent.thumbprint
        agent.public_key, agent.thumbprint = public_key, thumbprint
        agent.save(update_fields=["public_key", "thumbprint", "updated_at"])
        audit.record(
            "agent.key_rotated",
            actor_type="host",
            actor_id=actor_id,
            agent=agent,
            old_thumbprint=old,
            new_thumbprint=thumbprint,
        )
        transaction.on_commit(
            lambda: signals.key_rotated.send(
                sender=Agent, agent=agent, host=None, actor_type="host"
            )
        )
    return agent


def reactivate(
    agent: Agent, *, actor_id: str
) -> tuple[Agent, list[CapabilityGrant], approvals.IssuedApproval | None]:
    """``POST /agent/reactivate`` (spec §2.5, §5.6): a security checkpoint, not a resume button.

    Escalated grants are dropped; the host's current defaults are granted again under the same
    policy as registration; the session and max-lifetime clocks restart; the absolute one never
    does.
    """
    now = timezone.now()
    with transaction.atomic():
        host, agent = lock(agent)
        clocks.evaluate_clocks(agent, now)
        if agent.status == AgentStatus.ACTIVE:
            return agent, list(agent.grants.all()), None  # a no-op (spec §5.6)
        if agent.status != AgentStatus.EXPIRED:
            raise agent_refusal(agent)
        if host.status != HostStatus.ACTIVE:
            raise host_refusal(host)

        # Step 3: every existing grant ends (kept as history, never shown, §3.3).
        ended = agent.grants.filter(status__in=LIVE_GRANT_STATES).update(
            status=GrantStatus.REVOKED, updated_at=now
        )
        close_pending_approvals([agent.pk], now)
        # Step 4: the host's current defaults, with server-imposed constraints re-applied (§2.5).
        defaults = [
            RequestedCapability(cap, dict(cap.constraints) if cap.constraints else None)
            for cap in (registry.get(n) for n in (host.default_capabilities or []))
            if cap is not None
        ]
        needs_person = agent.mode == AgentMode.DELEGATED and host.user_id is None
        if agent.mode == AgentMode.AUTONOMOUS and not _autonomous_allowed():
            needs_person = True
        if ended and not defaults:
            # Nothing to fall back to: an agent that lost every grant is not handed back active
            # and empty without a word; a person decides (step 6: "pending if approval is
            # required"), and the agent re-requests what it needs (§5.4).
            needs_person = True
        new = [
            CapabilityGrant(
                agent=agent,
                capability=rc.name,
                constraints=rc.constraints,
                status=(
                    GrantStatus.ACTIVE
                    if not needs_person and policy.auto_approvable(host, agent.mode, rc.capability)
                    else GrantStatus.PENDING
                ),
                granted_by_id=host.user_id if agent.mode == AgentMode.DELEGATED else None,
                reason="Reactivation: host default capability",
            )
            for rc in defaults
        ]
        for g in new:
            if g.status == GrantStatus.ACTIVE:
                g.expires_at = policy.grant_expiry(g.capability, agent, now)
            else:
                g.granted_by_id = None
        CapabilityGrant.objects.bulk_create(new)
        # Step 5-6: clocks restart (never the absolute one); active, or pending for a person.
        if needs_person:
            agent.status = AgentStatus.PENDING
            agent.expires_at = None
        else:
            clocks.activate(agent, now)
        agent.save(update_fields=["status", "activated_at", "last_used_at", "expires_at"])
        pending = [g for g in new if g.status == GrantStatus.PENDING]
        approval = approvals.open_request(agent, pending) if pending or needs_person else None
        audit.record(
            "agent.reactivated",
            actor_type="host",
            actor_id=actor_id,
            agent=agent,
            status=agent.status,
            granted=[g.capability for g in new if g.status == GrantStatus.ACTIVE],
            pending=[g.capability for g in pending],
        )
        transaction.on_commit(
            lambda: signals.agent_reactivated.send(sender=Agent, agent=agent, status=agent.status)
        )
    return agent, new, approval


def _autonomous_allowed() -> bool:
    return app_settings.AUTONOMOUS_AUTO_APPROVE is not None
