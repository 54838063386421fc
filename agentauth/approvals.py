"""Approval requests and decisions (spec §7).

:func:`decide` is the one place where a person's (or an operator's) decision changes grants and
agent state; the approval pages (device and CIBA), the admin and ``agentauth_approve`` all call it,
and the rules it applies (who may decide, fresh sign-in, approval strength, binding to what was
shown) live beside it. See docs/security.md (approval authority).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import salted_hmac

from . import agents, audit, clocks, hosts, outbox, policy, signals
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
    OutboxKind,
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


def find_hinted_user(login_hint: str, *, must_be_administrator: bool = False) -> Any:
    """The user a CIBA ``login_hint`` names who could decide the request, or ``None``.

    Always exactly one query, whether the hint matches someone or not, and whether they could
    decide or not: the database work never tells which accounts exist (spec §7.2, CIBA Core
    §14). ``must_be_administrator``: for an autonomous agent only an administrator decides
    (spec §2.2.2, :func:`is_administrator`), so only a hinted user holding
    ``ADMIN_PERMISSION`` (directly, through a group, or as a superuser) is asked; everyone else
    is never notified.
    """
    if not login_hint:
        return None
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission, PermissionsMixin
    from django.db.models import Exists, OuterRef, Q

    user_model = get_user_model()
    condition = Q()
    for field_name in app_settings.CIBA_LOGIN_HINT_FIELDS:
        condition |= Q(**{f"{field_name}__iexact": login_hint})
    users = user_model.objects.filter(condition, is_active=True)
    if must_be_administrator:
        if not issubclass(user_model, PermissionsMixin):
            users = users.filter(pk__in=[])  # no permissions model: nobody may decide
        else:
            app_label, codename = ADMIN_PERMISSION.split(".", 1)
            perm = Q(content_type__app_label=app_label, codename=codename)
            users = users.filter(
                Q(is_superuser=True)
                | Exists(Permission.objects.filter(perm, user=OuterRef("pk")))
                | Exists(Permission.objects.filter(perm, group__user=OuterRef("pk")))
            )
    matches = list(users[:2])
    return matches[0] if len(matches) == 1 else None


def choose_method(agent: Agent, preferred: str | None, login_hint: str) -> tuple[str, Any]:
    """Server-side method choice (spec §7.5): CIBA when asked for and a person can be named
    (the linked user, or a ``login_hint``); device authorization otherwise.

    With a hint, CIBA is chosen whether or not the hint matches anyone, so the response never
    tells a caller which accounts exist (spec §7.2, CIBA Core §14). The person named is only
    someone who could decide the request: the linked user of a delegated agent's host (if still
    active), or the hinted user (for an autonomous agent, only an administrator). Nobody else
    is ever notified (spec §7.2: notification fatigue).
    """
    if preferred != ApprovalMethod.CIBA or "ciba" not in app_settings.APPROVAL_METHODS:
        return ApprovalMethod.DEVICE_AUTHORIZATION, None
    linked = agent.host.user if agent.host.user_id is not None else None
    if linked is not None:
        return ApprovalMethod.CIBA, linked if linked.is_active else None
    if login_hint:
        admin_only = agent.mode == AgentMode.AUTONOMOUS
        return ApprovalMethod.CIBA, find_hinted_user(login_hint, must_be_administrator=admin_only)
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
        # Recorded whether or not the hint matched anyone: same work, same response. The
        # outbox row commits with the request, so a down broker delays the mail, never loses it.
        outbox.enqueue(OutboxKind.NOTIFICATION, req.pk)
    return IssuedApproval(req, code)


# --- the approval authority (spec §2.2, §7, §8.10, §8.11) ----------------------------------
#
# Every decision, from the approval page (device and CIBA), the admin or agentauth_approve,
# goes through decide(); the rules it applies are the functions in this section and nowhere else.

FRESH_AUTH_KEY = "agentauth_authenticated_at"
CODE_OK_KEY = "agentauth_codes_ok"
STRENGTH_ORDER = {"none": 0, "session": 1, "webauthn": 2}
#: Spec §2.2.2 "administrator approval": who may decide for an autonomous agent.
ADMIN_PERMISSION = "agentauth.approve_agent"
_SHOWN_SALT = "agentauth.approvals.shown"


def mark_authenticated(session: Any) -> None:
    """Record that the person just proved who they are (sign-in or re-authentication)."""
    session[FRESH_AUTH_KEY] = time.time()


def is_fresh(session: Any) -> bool:
    """Spec §8.11: a long-lived session cookie alone is not enough to approve."""
    at = session.get(FRESH_AUTH_KEY)
    return isinstance(at, int | float) and time.time() - at <= app_settings.FRESH_AUTH_SECONDS


def strength_of(name: str) -> str:
    """The approval ``name`` needs; an unknown capability needs the most."""
    cap = registry.get(name)
    return cap.approval_strength if cap is not None else "webauthn"


def required_strength(names: Iterable[str]) -> str:
    """The strongest approval any of ``names`` needs."""
    return max(map(strength_of, names), key=STRENGTH_ORDER.__getitem__, default="none")


def is_administrator(user: Any) -> bool:
    """An active user holding ``agentauth.approve_agent`` (superusers hold every permission)."""
    return bool(getattr(user, "is_active", False) and user.has_perm(ADMIN_PERMISSION))


@dataclass(frozen=True)
class Approver:
    """Who decides, and what vouches for them.

    A person deciding in a browser brings the session that holds their fresh sign-in, the user
    code they entered and their WebAuthn step-up. An operator at the shell (only
    ``agentauth_approve`` builds one) brings no session: shell access to the deployment already
    outranks every browser check, so the decision is recorded as ``actor_type="operator"`` under
    the operator's name instead.
    """

    user: Any
    session: Any = None
    operator_name: str = ""

    @classmethod
    def in_session(cls, user: Any, session: Any) -> Approver:
        return cls(user=user, session=session)

    @classmethod
    def operator(cls, user: Any, *, name: str) -> Approver:
        """The command line deciding in ``user``'s name; ``name`` says who ran it."""
        if not name:
            raise ValueError("an operator decision must name the operator")
        return cls(user=user, operator_name=name)


def _reached(approval: ApprovalRequest, user: Any, session: Any) -> bool:
    """Did this request reach this person? A CIBA request reaches its named user; a device
    request the session that entered its code (the code ties the browser to the agent's screen)."""
    if approval.method == ApprovalMethod.CIBA:
        return approval.user_id is not None and approval.user_id == user.pk
    return approval.pk in session.get(CODE_OK_KEY, [])


def may_view(approval: ApprovalRequest, user: Any, session: Any) -> bool:
    """Who may open a request's approval page: whom it reached, and administrators for an
    autonomous agent (they are the ones who decide for it, spec §2.2.2)."""
    if approval.agent.mode == AgentMode.AUTONOMOUS and is_administrator(user):
        return True
    return _reached(approval, user, session)


def shown_digest(approval: ApprovalRequest, agent_status: str, pending: Iterable[Any]) -> str:
    """What a person was shown, as an HMAC: the request, its state, and each pending capability
    with its constraints in canonical JSON. A decision carries it back so that it applies to
    exactly what was on the screen."""
    payload = json.dumps(
        {
            "approval": approval.pk,
            "status": approval.status,
            "agent_status": agent_status,
            "grants": sorted(([g.capability, g.constraints] for g in pending), key=lambda x: x[0]),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return salted_hmac(_SHOWN_SALT, payload, algorithm="sha256").hexdigest()


def digest_of(approval: ApprovalRequest) -> str:
    """The digest of ``approval`` as a page displays it now."""
    agent = approval.agent
    return shown_digest(approval, agent.status, agent.grants.filter(status=GrantStatus.PENDING))


def _acts_for_someone_else(agent: Agent, host: Host, user: Any) -> bool:
    return bool(
        agent.mode == AgentMode.DELEGATED and host.user_id is not None and host.user_id != user.pk
    )


def _person_may_decide(
    approval: ApprovalRequest, agent: Agent, host: Host, user: Any, session: Any, reject: bool
) -> str:
    """Who, in a browser, may decide (spec §2.2): the audit actor type, or ``unauthorized``.
    Freshness and step-up are checked after this, by :func:`_authorize`."""
    if session is None or not getattr(user, "is_active", False):
        raise ProtocolError("unauthorized", "Only a signed-in person can decide", status=403)
    if agent.mode == AgentMode.AUTONOMOUS or (reject and is_administrator(user)):
        if not is_administrator(user):
            raise ProtocolError(
                "unauthorized", "Only an administrator can decide for this agent", status=403
            )
        return "staff"
    if _acts_for_someone_else(agent, host, user) or not _reached(approval, user, session):
        raise ProtocolError(
            "unauthorized", "Only the person this agent acts for can approve it", status=403
        )
    return "user"


def may_decide(approval: ApprovalRequest, user: Any, session: Any, *, reject: bool = False) -> bool:
    """Whether the approval page should offer this person the decision at all: the same rule
    :func:`decide` applies (read without locks, so ``decide`` still has the last word)."""
    agent = approval.agent
    try:
        _person_may_decide(approval, agent, agent.host, user, session, reject)
    except ProtocolError:
        return False
    return True


def _authorize(
    approval: ApprovalRequest,
    agent: Agent,
    host: Host,
    approver: Approver,
    chosen: set[str],
    reject: bool,
) -> str:
    """Who may decide this, with what proof (spec §2.2, §8.11). Returns the audit actor type.

    - a delegated agent: the person it acts for (the host's user; for an unlinked host, whom
      the request reached, who then becomes the host's user, §2.9);
    - an autonomous agent: an administrator (:func:`is_administrator`, §2.2.2);
    - refusing: also any administrator, who may revoke any agent anyway (§2.6);
    - the operator path: in the name of the person a delegated agent acts for, or anyone's for
      an autonomous agent.
    Approving in a browser needs a fresh sign-in, and a ``webauthn`` capability a step-up for
    this very request (§8.11).
    """
    user = approver.user
    if approver.operator_name:
        if _acts_for_someone_else(agent, host, user):
            raise ProtocolError(
                "unauthorized", "This agent acts for another user; decide in that user's name"
            )
        return "operator"
    session = approver.session
    actor_type = _person_may_decide(approval, agent, host, user, session, reject)
    if reject:
        return actor_type
    if not is_fresh(session):
        raise ProtocolError("fresh_auth_required", "Confirm it is you before approving", status=403)
    if required_strength(chosen) == "webauthn":
        from .webauthn import stepup_verified

        if not stepup_verified(session, user, approval.pk):
            raise ProtocolError(
                "webauthn_required",
                "Approving this needs your passkey or security key",
                status=403,
            )
    return actor_type


def enter_user_code(user: Any, session: Any, code: str) -> ApprovalRequest | None:
    """Check a typed user code, with a per-user lock-out after repeated failures (RFC 8628
    §5.1). The same "not found" answer covers wrong, expired and locked.

    Each attempt takes its place in the count atomically *before* the code is looked up, and a
    right code gives its place back: however many attempts arrive at once, no more than
    ``USER_CODE_MAX_ATTEMPTS`` wrong guesses are ever looked up in a lock-out window.
    """
    key = f"agentauth:code-attempts:{user.pk}"
    if _take_attempt(key) > app_settings.USER_CODE_MAX_ATTEMPTS:
        return None
    approval = find_by_user_code(code)
    if approval is None:
        ApprovalRequest.objects.filter(
            user_code_hash=hash_user_code(code) if isinstance(code, str) else None
        ).update(failed_attempts=F("failed_attempts") + 1)
        return None
    _give_back_attempt(key)
    _remember_code(session, approval.pk)
    return approval


def _remember_code(session: Any, approval_id: str) -> None:
    allowed = list(session.get(CODE_OK_KEY, []))[-9:]
    session[CODE_OK_KEY] = [*allowed, approval_id]


def _take_attempt(key: str) -> int:
    """Count one attempt with ``add`` + ``incr`` (atomic in every shared cache backend); the
    count starts its lock-out window at the first attempt. Fails closed."""
    from django.core.cache import cache

    timeout = app_settings.USER_CODE_LOCKOUT_SECONDS
    try:
        cache.add(key, 0, timeout)
        try:
            return int(cache.incr(key))
        except ValueError:  # the window ended between add and incr: start a new one
            cache.add(key, 0, timeout)
            return int(cache.incr(key))
    except Exception as exc:
        raise ProtocolError(
            "temporarily_unavailable", "The attempt counter is unavailable"
        ) from exc


def _give_back_attempt(key: str) -> None:
    from django.core.cache import cache

    with contextlib.suppress(Exception):  # the window ended: nothing to give back
        cache.decr(key)


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


def _live(queryset: Any) -> Any:
    return queryset.filter(status=ApprovalStatus.PENDING, expires_at__gt=timezone.now())


def live_request(agent: Agent) -> ApprovalRequest:
    """The request a decision about ``agent`` applies to now, or why there is none."""
    if agent.status not in (AgentStatus.PENDING, AgentStatus.ACTIVE):
        raise invalid_request(f"Agent is {agent.status}; there is nothing to approve")
    if (
        agent.status == AgentStatus.ACTIVE
        and not agent.grants.filter(status=GrantStatus.PENDING).exists()
    ):
        raise invalid_request("Agent has no pending capability requests")
    approval = (
        _live(ApprovalRequest.objects.filter(agent=agent))
        .select_related("agent", "agent__host")
        .order_by("-created_at")
        .first()
    )
    if approval is None:
        raise invalid_request("The approval request expired; the agent must ask again")
    return approval


def successor(approval: ApprovalRequest, user: Any, session: Any) -> ApprovalRequest | None:
    """The request that replaced ``approval`` when its agent asked again (spec §5.3, §5.4), if
    this person may see it.

    A device request replaced by another device request of the same agent stays open to the
    session that entered the first code: the code proved this browser is looking at this agent.
    """
    newer = (
        _live(ApprovalRequest.objects.filter(agent_id=approval.agent_id))
        .exclude(pk=approval.pk)
        .select_related("agent", "agent__host")
        .order_by("-created_at")
        .first()
    )
    if newer is None:
        return None
    if (
        approval.method == newer.method == ApprovalMethod.DEVICE_AUTHORIZATION
        and approval.pk in session.get(CODE_OK_KEY, [])
    ):
        _remember_code(session, newer.pk)
    return newer if may_view(newer, user, session) else None


@dataclass
class Decision:
    agent: Agent
    approved: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    rejected: bool = False


def decide(
    approval: ApprovalRequest,
    *,
    approver: Approver,
    shown: str | None = None,
    approve: Iterable[str] | None = None,
    reject: bool = False,
    reason: str = "",
    constraints: dict[str, dict[str, Any]] | None = None,
) -> Decision:
    """Apply a decision on everything the agent of ``approval`` is waiting for.

    ``shown``: :func:`digest_of` the request as displayed; required for a person's approval
    (an operator and a plain refusal grant nothing they were not told about). If the request
    changed since, nothing is decided (``request_changed``).
    ``approve``: capability names to grant (``None`` = every pending one); the other pending
    grants are denied. ``reject``: deny the connection itself (spec §7.1 ``access_denied``), which
    rejects a pending agent and, if the host was never approved, the host too (§7.1).
    ``constraints``: per-capability constraints that replace the requested ones; they may only
    narrow (enforced by the constraint engine when present).
    """
    now = timezone.now()
    with transaction.atomic():
        # Lock order is host, then agent, everywhere (registration and revocation too), so a
        # decision racing a host revocation serialises instead of deadlocking; the request and
        # grants are read under those locks, so what is checked is what is changed.
        host, agent = agents.lock(approval.agent)
        approval = ApprovalRequest.objects.select_for_update().get(pk=approval.pk)
        approval.agent = agent
        if agent.status not in (AgentStatus.PENDING, AgentStatus.ACTIVE):
            raise ProtocolError(
                "invalid_request", f"Agent is {agent.status}; there is nothing to approve"
            )
        pending = list(agent.grants.filter(status=GrantStatus.PENDING))
        if agent.status == AgentStatus.ACTIVE and not pending:
            raise invalid_request("Agent has no pending capability requests")
        if approval.status != ApprovalStatus.PENDING or approval.expires_at <= now:
            raise ProtocolError(
                "request_changed",
                "The request changed after it was shown (the agent asked again, or it expired)",
                status=409,
            )
        if shown is None and not (reject or approver.operator_name):
            raise ProtocolError(
                "request_changed", "An approval must say what was shown", status=409
            )
        if shown is not None and not hmac.compare_digest(
            shown.encode(), shown_digest(approval, agent.status, pending).encode()
        ):
            raise ProtocolError(
                "request_changed",
                "The request changed after it was shown; check it again",
                status=409,
            )
        pending_names = {g.capability for g in pending}
        chosen = set() if reject else set(pending_names if approve is None else approve)
        if not chosen <= pending_names:
            unknown = sorted(chosen - pending_names)
            raise invalid_request(f"Not pending for this agent: {', '.join(unknown)}")
        actor_type = _authorize(approval, agent, host, approver, chosen, reject)
        person = approver.user
        actor_id = approver.operator_name or str(person.pk)

        decision = Decision(agent=agent, rejected=reject)
        replaced = [g.capability for g in pending if g.capability in chosen]
        if replaced:
            # A re-request with new constraints replaces the active grant once approved (§5.4).
            CapabilityGrant.objects.filter(
                agent=agent, capability__in=replaced, status=GrantStatus.ACTIVE
            ).update(status=GrantStatus.REVOKED, updated_at=now)
        for g in pending:
            if g.capability in chosen:
                g.status = GrantStatus.ACTIVE
                g.granted_by = person
                g.expires_at = policy.grant_expiry(g.capability, agent, now)
                if constraints and g.capability in constraints:
                    g.constraints = _narrow(g, constraints[g.capability])
                decision.approved.append(g.capability)
            else:
                g.status = GrantStatus.DENIED
                g.denied_by = person
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
            user=person,
            decided_at=now,
            updated_at=now,
        )

        if reject and agent.status == AgentStatus.PENDING:
            agent.status = AgentStatus.REJECTED
            agent.save(update_fields=["status", "updated_at"])
            if host.status == HostStatus.PENDING:
                _reject_host(host, now)
        elif agent.status == AgentStatus.PENDING:
            _activate(agent, host, person, actor_type, now)

        audit.record(
            "approval.decided",
            actor_type=actor_type,
            actor_id=actor_id,
            agent=agent,
            user_id=person.pk,
            approval=approval.pk,
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
                actor=person,
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
    """RFC 8628 §3.5 ``slow_down`` (§7.1): while a person is being asked, status polls
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
