"""Grants: which are effective, and ``POST /agent/request-capability`` (spec §3.3, §5.4).

Auto-approval follows the same narrow policy as registration (``policy.auto_approvable``):
only ``approval_strength="none"`` capabilities within the host's defaults (linked host) or the
autonomous policy. Everything else is a pending grant and an approval request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from . import agents, approvals, audit
from .errors import ProtocolError
from .models import LIVE_GRANT_STATES, Agent, CapabilityGrant, GrantStatus
from .policy import auto_approvable, grant_expiry
from .validation import (
    MESSAGE_MAX,
    REASON_MAX,
    RequestedCapability,
    check_fields,
    display_text,
    optional_choice,
    requested_capabilities,
)

REQUEST_FIELDS = ("capabilities", "reason", "preferred_method", "login_hint", "binding_message")


def effective_names(agent: Agent) -> set[str]:
    now = timezone.now()
    return set(
        CapabilityGrant.objects.filter(agent=agent, status=GrantStatus.ACTIVE)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .values_list("capability", flat=True)
    )


@dataclass(frozen=True)
class CapabilityRequest:
    """A parsed ``POST /agent/request-capability`` body (spec §5.4)."""

    capabilities: list[RequestedCapability]
    reason: str
    preferred_method: str | None
    login_hint: str
    binding_message: str

    @classmethod
    def parse(cls, body: dict[str, Any]) -> CapabilityRequest:
        check_fields(body, REQUEST_FIELDS)
        return cls(
            capabilities=requested_capabilities(body.get("capabilities"), required=True),
            reason=display_text(body.get("reason"), "reason", max_length=REASON_MAX),
            preferred_method=optional_choice(body, "preferred_method"),
            login_hint=display_text(body.get("login_hint"), "login_hint", max_length=MESSAGE_MAX),
            binding_message=display_text(
                body.get("binding_message"), "binding_message", max_length=MESSAGE_MAX
            ),
        )


def request_capabilities(
    agent: Agent, req: CapabilityRequest
) -> tuple[Agent, list[CapabilityGrant], approvals.IssuedApproval | None]:
    """Ask for more capabilities (spec §5.4) with the §5.4 rules.

    - already active with the same effective constraints: nothing to do (409 if that is all);
    - already pending: the pending grant is returned again, with a fresh approval;
    - denied before, or active with other constraints: a new pending request (approval of it
      replaces the active grant).
    """
    wanted, reason = req.capabilities, req.reason
    now = timezone.now()
    with transaction.atomic():
        host, agent = agents.lock(agent)
        existing = {
            (g.capability, g.status): g
            for g in agent.grants.filter(
                capability__in=[rc.name for rc in wanted],
                status__in=LIVE_GRANT_STATES,
            )
        }
        result: list[CapabilityGrant] = []
        created: list[CapabilityGrant] = []
        for rc in wanted:
            active = existing.get((rc.name, GrantStatus.ACTIVE))
            pending = existing.get((rc.name, GrantStatus.PENDING))
            same = active is not None and active.constraints == rc.constraints
            if same and active is not None and active.is_effective(now):
                continue
            if pending is not None:
                pending.constraints, pending.reason = rc.constraints, reason or pending.reason
                pending.save(update_fields=["constraints", "reason", "updated_at"])
                result.append(pending)
                continue
            auto = auto_approvable(host, agent.mode, rc.capability) and active is None
            grant = CapabilityGrant(
                agent=agent,
                capability=rc.name,
                status=GrantStatus.ACTIVE if auto else GrantStatus.PENDING,
                constraints=rc.constraints,
                granted_by_id=host.user_id if auto else None,
                reason=reason,
                expires_at=grant_expiry(rc.name, agent, now) if auto else None,
            )
            created.append(grant)
            result.append(grant)
        if not result:
            raise ProtocolError("already_granted")
        try:
            with transaction.atomic():
                CapabilityGrant.objects.bulk_create(created)
        except IntegrityError:
            raise ProtocolError(
                "invalid_request", "A concurrent request changed these grants; retry"
            ) from None
        pending_grants = [g for g in result if g.status == GrantStatus.PENDING]
        approval = (
            approvals.open_request(
                agent,
                pending_grants,
                reason=reason,
                binding_message=req.binding_message,
                login_hint=req.login_hint,
                preferred_method=req.preferred_method,
            )
            if pending_grants
            else None
        )
        audit.record(
            "capability.requested",
            actor_type="agent",
            actor_id=agent.pk,
            agent=agent,
            requested=[rc.name for rc in wanted],
            auto_approved=[g.capability for g in result if g.status == GrantStatus.ACTIVE],
        )
    return agent, result, approval


def revoke_grant(grant: CapabilityGrant, *, actor_type: str, actor_id: str = "") -> bool:
    """End one live grant (the agent keeps its others). Returns False if it was not live."""
    now = timezone.now()
    with transaction.atomic():
        changed = CapabilityGrant.objects.filter(pk=grant.pk, status__in=LIVE_GRANT_STATES).update(
            status=GrantStatus.REVOKED, updated_at=now
        )
        if changed:
            audit.record(
                "grant.revoked",
                actor_type=actor_type,
                actor_id=actor_id,
                agent=grant.agent,
                capability=grant.capability,
            )
    return bool(changed)
