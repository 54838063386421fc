"""``POST /agent/reactivate`` (spec §2.5, §5.6): a security checkpoint, not a resume button.

Escalated grants are dropped; the host's current defaults are granted again under the same
policy as registration; the session and max-lifetime clocks restart; the absolute one never does.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from . import audit, lifecycle, policy, serializers, signals
from .approvals import open_request
from .capabilities import registry
from .errors import ProtocolError
from .models import Agent, AgentMode, AgentStatus, CapabilityGrant, GrantStatus, Host, HostStatus
from .validation import RequestedCapability

_REFUSALS = {
    AgentStatus.PENDING: "agent_pending",
    AgentStatus.REJECTED: "agent_rejected",
    AgentStatus.CLAIMED: "agent_claimed",
}


def reactivate(agent: Agent, *, actor_id: str) -> dict[str, Any]:
    now = timezone.now()
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=agent.host_id)
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        agent.host = host
        lifecycle.evaluate_clocks(agent, now)
        if agent.status == AgentStatus.ACTIVE:
            return serializers.agent_status(agent, agent.grants.all())  # a no-op (spec §5.6)
        if agent.status == AgentStatus.REVOKED:
            absolute = agent.revocation_reason == lifecycle.REASON_ABSOLUTE_LIFETIME
            raise ProtocolError("absolute_lifetime_exceeded" if absolute else "agent_revoked")
        if agent.status != AgentStatus.EXPIRED:
            raise ProtocolError(_REFUSALS.get(AgentStatus(agent.status), "unauthorized"))
        if host.status != HostStatus.ACTIVE:
            raise ProtocolError(
                "host_pending" if host.status == HostStatus.PENDING else "host_revoked"
            )

        # Step 3: every existing grant ends (kept as history, never shown, checklist Q9).
        agent.grants.filter(status__in=[GrantStatus.ACTIVE, GrantStatus.PENDING]).update(
            status=GrantStatus.REVOKED, updated_at=now
        )
        lifecycle.close_pending_approvals([agent.pk], now)
        # Step 4: the host's current defaults, with server-imposed constraints re-applied (Q10).
        defaults = [
            RequestedCapability(cap, dict(cap.constraints) if cap.constraints else None)
            for cap in (registry.get(n) for n in (host.default_capabilities or []))
            if cap is not None
        ]
        needs_person = agent.mode == AgentMode.DELEGATED and host.user_id is None
        if agent.mode == AgentMode.AUTONOMOUS and not _autonomous_allowed():
            needs_person = True
        new = [
            CapabilityGrant(
                agent=agent,
                capability=rc.name,
                constraints=rc.constraints,
                status=(
                    GrantStatus.ACTIVE
                    if not needs_person and policy.auto_approvable(host, agent.mode, rc)
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
            lifecycle.activate(agent, now)
        agent.save(update_fields=["status", "activated_at", "last_used_at", "expires_at"])
        pending = [g for g in new if g.status == GrantStatus.PENDING]
        approval = open_request(agent, pending) if pending or needs_person else None
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
    body = serializers.agent_status(agent, new)
    if approval is not None:
        body["approval"] = approval.to_wire()
    return body


def _autonomous_allowed() -> bool:
    from .conf import app_settings

    return app_settings.AUTONOMOUS_AUTO_APPROVE is not None
