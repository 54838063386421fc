"""Approval requests and decisions (spec §7).

:func:`decide` is the one place where a person's (or an operator's) decision changes grants and
agent state; the admin, the management command and the approval pages all call it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import agents, audit, clocks, hosts, policy, signals
from . import constraints as constraint_rules
from .capabilities import registry
from .conf import app_settings
from .errors import ProtocolError, invalid_request
from .models import (
    NON_TERMINAL_AGENT_STATES,
    Agent,
    AgentMode,
    AgentStatus,
    ApprovalMethod,
    ApprovalRequest,
    ApprovalStatus,
    CapabilityGrant,
    GrantStatus,
    Host,
    HostStatus,
)

#: RFC 8628 §6.1: base-20 consonants, no vowels (no words), no look-alikes.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8


def generate_user_code() -> str:
    raw = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalize_user_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch in USER_CODE_ALPHABET)


def hash_user_code(code: str) -> str:
    return hashlib.sha256(normalize_user_code(code).encode("ascii")).hexdigest()


@dataclass
class IssuedApproval:
    """An open approval request, with the user code that exists only in this response."""

    request: ApprovalRequest
    user_code: str | None = None


def find_hinted_user(login_hint: str) -> Any:
    """The user a CIBA ``login_hint`` names, or ``None``. Always one query, found or not."""
    if not login_hint:
        return None
    from django.contrib.auth import get_user_model
    from django.db.models import Q

    condition = Q()
    for field_name in app_settings.CIBA_LOGIN_HINT_FIELDS:
        condition |= Q(**{f"{field_name}__iexact": login_hint})
    matches = list(get_user_model().objects.filter(condition, is_active=True)[:2])
    return matches[0] if len(matches) == 1 else None


def choose_method(agent: Agent, preferred: str | None, login_hint: str) -> tuple[str, Any]:
    """Server-side method choice (spec §7.5): CIBA when asked for and a person can be named
    (the linked user, or a ``login_hint``); device authorization otherwise.

    With a hint, CIBA is chosen whether or not the hint matches anyone, so the response never
    tells a caller which accounts exist (spec §7.2, CIBA Core §14).
    """
    if preferred != ApprovalMethod.CIBA or "ciba" not in app_settings.APPROVAL_METHODS:
        return ApprovalMethod.DEVICE_AUTHORIZATION, None
    linked = agent.host.user if agent.host.user_id is not None else None
    if linked is not None:
        return ApprovalMethod.CIBA, linked
    if login_hint:
        return ApprovalMethod.CIBA, find_hinted_user(login_hint)
    return ApprovalMethod.DEVICE_AUTHORIZATION, None


def open_request(
    agent: Agent,
    grants: Iterable[CapabilityGrant],
    *,
    reason: str = "",
    binding_message: str = "",
    login_hint: str = "",
    preferred_method: str | None = None,
) -> IssuedApproval:
    """Create an approval request for ``grants`` (and the agent itself if pending).

    Any earlier pending request of the agent is superseded: its user code stops working, so
    only the newest one is ever live (spec §5.3 "refreshed approval flow").
    """
    now = timezone.now()
    ApprovalRequest.objects.filter(agent=agent, status=ApprovalStatus.PENDING).update(
        status=ApprovalStatus.EXPIRED, decided_at=now, updated_at=now
    )
    method, target = choose_method(agent, preferred_method, login_hint)
    code = generate_user_code() if method == ApprovalMethod.DEVICE_AUTHORIZATION else None
    req = ApprovalRequest.objects.create(
        agent=agent,
        method=method,
        user=target,
        user_code_hash=hash_user_code(code) if code else None,
        binding_message=binding_message,
        login_hint=login_hint,
        reason=reason,
        interval=app_settings.APPROVAL_INTERVAL,
        expires_at=now + timedelta(seconds=app_settings.APPROVAL_EXPIRES_IN),
    )
    CapabilityGrant.objects.filter(pk__in=[g.pk for g in grants]).update(approval=req)
    if method == ApprovalMethod.CIBA:
        from .queueing import enqueue_on_commit
        from .tasks import send_ciba_notification

        # Enqueued whether or not the hint matched anyone: same work, same response.
        enqueue_on_commit(send_ciba_notification.s(req.pk))
    return IssuedApproval(req, code)


# --- who may approve, and how fresh ---------------------------------------------------------

FRESH_AUTH_KEY = "agentauth_authenticated_at"
STRENGTH_ORDER = {"none": 0, "session": 1, "webauthn": 2}


def mark_authenticated(session: Any) -> None:
    """Record that the person just proved who they are (sign-in or re-authentication)."""
    session[FRESH_AUTH_KEY] = time.time()


def is_fresh(session: Any) -> bool:
    """Spec §8.11 / S25: a long-lived session cookie alone is not enough to approve."""
    at = session.get(FRESH_AUTH_KEY)
    return isinstance(at, int | float) and time.time() - at <= app_settings.FRESH_AUTH_SECONDS


def required_strength(names: Iterable[str]) -> str:
    strengths = [
        (cap.approval_strength if (cap := registry.get(n)) is not None else "webauthn")
        for n in names
    ]
    return max(strengths, key=STRENGTH_ORDER.__getitem__, default="none")


def approver_may_see(approval: ApprovalRequest, user: Any, session: Any) -> bool:
    """CIBA requests belong to their named user; a device request to whoever proved the code
    in this session (the code is what ties the browser to the agent's screen)."""
    if approval.method == ApprovalMethod.CIBA:
        return approval.user_id is not None and approval.user_id == user.pk
    return approval.pk in session.get(CODE_OK_KEY, [])


CODE_OK_KEY = "agentauth_codes_ok"


def enter_user_code(user: Any, session: Any, code: str) -> ApprovalRequest | None:
    """Check a typed user code, with a per-user lock-out after repeated failures (RFC 8628
    §5.1). The same "not found" answer covers wrong, expired and locked."""
    from django.core.cache import cache

    key = f"agentauth:code-attempts:{user.pk}"
    attempts = cache.get(key, 0)
    if attempts >= app_settings.USER_CODE_MAX_ATTEMPTS:
        return None
    approval = find_by_user_code(code)
    if approval is None:
        cache.set(key, attempts + 1, app_settings.USER_CODE_LOCKOUT_SECONDS)
        ApprovalRequest.objects.filter(
            user_code_hash=hash_user_code(code) if isinstance(code, str) else None
        ).update(failed_attempts=F("failed_attempts") + 1)
        return None
    allowed = list(session.get(CODE_OK_KEY, []))[-9:]
    session[CODE_OK_KEY] = [*allowed, approval.pk]
    return approval


def check_approver(
    session: Any, user: Any, approval: ApprovalRequest, names: Iterable[str]
) -> None:
    """Refuse an approval the person has not earned in this session (spec §8.11)."""
    if not is_fresh(session):
        raise ProtocolError("fresh_auth_required", "Confirm it is you before approving", status=403)
    if required_strength(names) == "webauthn":
        from .webauthn import stepup_verified

        if not stepup_verified(session, user, approval.pk):
            raise ProtocolError(
                "webauthn_required",
                "Approving this needs your passkey or security key",
                status=403,
            )


def find_by_user_code(code: str) -> ApprovalRequest | None:
    """Live request for a user code. The lookup is by SHA-256 of the code, so response time does
    not depend on how much of a guess was right."""
    if not isinstance(code, str) or len(normalize_user_code(code)) != USER_CODE_LENGTH:
        return None
    return (
        ApprovalRequest.objects.select_related("agent", "agent__host")
        .filter(
            user_code_hash=hash_user_code(code),
            status=ApprovalStatus.PENDING,
            expires_at__gt=timezone.now(),
        )
        .first()
    )


@dataclass
class Decision:
    agent: Agent
    approved: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    rejected: bool = False


def decide(
    agent: Agent,
    *,
    approver: Any,
    approve: Iterable[str] | None = None,
    reject: bool = False,
    reason: str = "",
    constraints: dict[str, dict[str, Any]] | None = None,
    actor_type: str = "user",
) -> Decision:
    """Apply a person's decision on everything ``agent`` is waiting for.

    ``approve``: capability names to grant (``None`` = every pending one); the other pending
    grants are denied. ``reject``: deny the connection itself (spec §7.1 ``access_denied``), which
    rejects a pending agent and, if the host was never approved, the host too (checklist Q8).
    ``constraints``: per-capability constraints that replace the requested ones; they may only
    narrow (enforced by the constraint engine when present).
    """
    now = timezone.now()
    with transaction.atomic():
        # Lock order is host, then agent, everywhere (registration and revocation too), so a
        # decision racing a host revocation serialises instead of deadlocking.
        host, agent = agents.lock(agent)
        if agent.status not in (AgentStatus.PENDING, AgentStatus.ACTIVE):
            raise ProtocolError(
                "invalid_request", f"Agent is {agent.status}; there is nothing to approve"
            )
        pending = list(agent.grants.filter(status=GrantStatus.PENDING))
        if agent.status == AgentStatus.ACTIVE and not pending:
            raise invalid_request("Agent has no pending capability requests")
        pending_names = {g.capability for g in pending}
        chosen = set(pending_names if approve is None else approve)
        if not chosen <= pending_names:
            unknown = sorted(chosen - pending_names)
            raise invalid_request(f"Not pending for this agent: {', '.join(unknown)}")
        if (
            agent.mode == AgentMode.AUTONOMOUS
            and actor_type != "staff"
            and not approver.has_perm("agentauth.change_agent")
        ):
            # Spec §2.2.2: autonomous agents act for nobody; an administrator decides for them.
            raise ProtocolError("unauthorized", "Only an administrator can decide for this agent")
        if (
            agent.mode == AgentMode.DELEGATED
            and host.user_id is not None
            and host.user_id != approver.pk
            and actor_type != "staff"
        ):
            raise ProtocolError("unauthorized", "This host is linked to another user")

        decision = Decision(agent=agent, rejected=reject)
        if reject:
            chosen = set()
        replaced = [g.capability for g in pending if g.capability in chosen]
        if replaced:
            # A re-request with new constraints replaces the active grant once approved (Q29).
            CapabilityGrant.objects.filter(
                agent=agent, capability__in=replaced, status=GrantStatus.ACTIVE
            ).update(status=GrantStatus.REVOKED, updated_at=now)
        for g in pending:
            if g.capability in chosen:
                g.status = GrantStatus.ACTIVE
                g.granted_by = approver
                g.expires_at = policy.grant_expiry(g.capability, agent, now)
                if constraints and g.capability in constraints:
                    g.constraints = _narrow(g, constraints[g.capability])
                decision.approved.append(g.capability)
            else:
                g.status = GrantStatus.DENIED
                g.denied_by = approver
                # The grant's reason was the agent's justification; a denial states its own.
                g.reason = reason or "Denied by the approver"
                decision.denied.append(g.capability)
            g.updated_at = now
        CapabilityGrant.objects.bulk_update(
            pending,
            [
                "status",
                "granted_by",
                "denied_by",
                "reason",
                "constraints",
                "expires_at",
                "updated_at",
            ],
        )
        ApprovalRequest.objects.filter(agent=agent, status=ApprovalStatus.PENDING).update(
            status=ApprovalStatus.DENIED if reject else ApprovalStatus.APPROVED,
            user=approver,
            decided_at=now,
            updated_at=now,
        )

        if reject and agent.status == AgentStatus.PENDING:
            agent.status = AgentStatus.REJECTED
            agent.save(update_fields=["status", "updated_at"])
            if host.status == HostStatus.PENDING:
                _reject_host(host, now)
        elif agent.status == AgentStatus.PENDING:
            _activate(agent, host, approver, actor_type, now)

        audit.record(
            "approval.decided",
            actor_type=actor_type,
            actor_id=str(approver.pk),
            agent=agent,
            user_id=approver.pk,
            approved=decision.approved,
            denied=decision.denied,
            rejected=reject,
        )
        transaction.on_commit(
            lambda: signals.approval_decided.send(
                sender=Agent,
                agent=agent,
                approved=decision.approved,
                denied=decision.denied,
                rejected=reject,
                actor=approver,
            )
        )
    return decision


def _narrow(grant: CapabilityGrant, approver_constraints: Any) -> dict[str, Any] | None:
    """The approver may narrow what the agent asked for, never widen it (spec §2.13)."""
    cap = registry.get(grant.capability)
    if cap is None:
        raise invalid_request(f"Capability '{grant.capability}' no longer exists")
    parsed = constraint_rules.parse(approver_constraints, cap)
    try:
        return constraint_rules.intersect(grant.constraints, parsed)
    except constraint_rules.ContradictoryConstraints as exc:
        message = f"Constraints for {grant.capability!r} admit no value: {exc}"
        raise invalid_request(message) from None


def _activate(agent: Agent, host: Host, approver: Any, actor_type: str, now: Any) -> None:
    if host.status == HostStatus.PENDING:
        host.status = HostStatus.ACTIVE
        host.activated_at = now
        host.save(update_fields=["status", "activated_at", "updated_at"])
    if agent.mode == AgentMode.DELEGATED:
        if host.user_id is None:
            # Approving a delegated registration links the host to the approver (spec §2.9).
            hosts.link_host(host, approver, actor_type=actor_type)
        agent.user_id = host.user_id
    clocks.activate(agent, now)
    agent.save(
        update_fields=["status", "user", "activated_at", "last_used_at", "expires_at", "updated_at"]
    )


def _reject_host(host: Host, now: Any) -> None:
    """A host whose first connection was denied is rejected, with its agents (spec §2.11)."""
    host.status = HostStatus.REJECTED
    host.save(update_fields=["status", "updated_at"])
    Agent.objects.filter(host=host, status__in=NON_TERMINAL_AGENT_STATES).update(
        status=AgentStatus.REJECTED, updated_at=now
    )
    ApprovalRequest.objects.filter(agent__host=host, status=ApprovalStatus.PENDING).update(
        status=ApprovalStatus.DENIED, decided_at=now, updated_at=now
    )


def pace_polling(agent: Agent) -> None:
    """RFC 8628 §3.5 ``slow_down`` (checklist Q46): while a person is being asked, status polls
    come no faster than the ``interval`` we gave (one second of slack for clock jitter)."""
    from django.core.cache import cache

    live = (
        ApprovalRequest.objects.filter(agent=agent, status=ApprovalStatus.PENDING)
        .values_list("interval", flat=True)
        .first()
    )
    if not live or live <= 1:
        return
    if not cache.add(f"agentauth:poll:{agent.pk}", 1, live - 1):
        raise ProtocolError(
            "slow_down",
            f"Poll at most every {live} seconds",
            status=429,
            headers={"Retry-After": str(live)},
        )


def ensure_staff_may_approve(agent: Agent) -> None:
    """Staff never approve a delegated agent of an unlinked host: approving links the host to
    the approver (spec §2.9), which must be the person the agent acts for."""
    if (
        agent.mode == AgentMode.DELEGATED
        and agent.status == AgentStatus.PENDING
        and agent.host.user_id is None
    ):
        raise ProtocolError(
            "unauthorized",
            "Its host is not linked to a user; the user it acts for must approve it (device "
            "page or agentauth_approve --user).",
        )
