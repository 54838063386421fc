"""Hosts: pre-registration (spec §2.8), linking and unlinking (§2.9, §2.10), revocation with its
cascade (§5.10) and key rotation (§5.9)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import agents, audit, keys, signals
from .capabilities import registry
from .conf import app_settings
from .errors import ProtocolError, invalid_jwt, invalid_request
from .models import (
    LIVE_GRANT_STATES,
    NON_TERMINAL_AGENT_STATES,
    Agent,
    AgentMode,
    AgentStatus,
    AuditEvent,
    CapabilityGrant,
    GrantStatus,
    Host,
    HostStatus,
)


def validate_defaults(names: Any) -> list[str]:
    """A host's ``default_capabilities``: a list of registered capability names (spec §3.1)."""
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise invalid_request("default_capabilities must be a list of capability names")
    defaults = list(dict.fromkeys(names))
    if not all(isinstance(n, str) for n in defaults):
        raise invalid_request("default_capabilities must be a list of capability names")
    unknown = [n for n in defaults if n not in registry]
    if unknown:
        raise ProtocolError(
            "invalid_capabilities",
            "One or more requested capability names don't exist",
            invalid_capabilities=unknown,
        )
    return defaults


def create_host(
    jwk: Any,
    *,
    name: str = "",
    user: Any = None,
    default_capabilities: Iterable[str] = (),
    actor_type: str = "staff",
) -> Host:
    """Create an active host for a known public key; link it to ``user`` when given."""
    public_key = keys.validate_public_jwk(jwk)
    defaults = validate_defaults(default_capabilities)
    tp = keys.thumbprint(public_key)
    with transaction.atomic():
        if Host.objects.filter(thumbprint=tp).exists():
            raise invalid_request("A host with this key already exists")
        host = Host.objects.create(
            name=name,
            thumbprint=tp,
            public_key=public_key,
            default_capabilities=defaults,
            status=HostStatus.ACTIVE,
            activated_at=timezone.now(),
        )
        audit.record("host.created", actor_type=actor_type, host=host, preregistered=True)
        if user is not None:
            link_host(host, user, actor_type=actor_type)
    return host


def link(host: Host, user: Any, *, actor_type: str = "staff") -> list[str]:
    """Server-side linking (spec §2.9): the host now acts for ``user``; its autonomous agents are
    claimed. A host already linked to someone else must be unlinked first."""
    with transaction.atomic():
        locked = Host.objects.select_for_update().get(pk=host.pk)
        if locked.status in (HostStatus.REVOKED, HostStatus.REJECTED):
            raise agents.host_refusal(locked)
        return link_host(locked, user, actor_type=actor_type)


def revoke_host(host: Host, *, actor_type: str, actor_id: str = "") -> int:
    """Revoke a host and cascade to every agent under it (spec §5.10, §8.5).

    Returns how many agents moved to ``revoked`` in this call (§5.7).
    """
    now = timezone.now()
    with transaction.atomic():
        Host.objects.select_for_update().filter(pk=host.pk).first()  # lock order: host first
        changed = (
            Host.objects.filter(pk=host.pk)
            .exclude(status=HostStatus.REVOKED)
            .update(status=HostStatus.REVOKED, revoked_at=now, updated_at=now)
        )
        if not changed:
            # Already revoked, and its agents with it: nothing happens, nothing is recorded.
            host.refresh_from_db()
            return 0
        agent_ids = agents.revoke_agents_of(host, now, "host_revoked")
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
        raise ProtocolError("unauthorized", "The host is already linked to another user")
    now = timezone.now()
    host.user = user
    host.save(update_fields=["user", "updated_at"])
    # Claim every non-terminal autonomous agent (§2.10): their grants end, their
    # history now belongs to the user.
    claimed_qs = Agent.objects.filter(
        host=host, mode=AgentMode.AUTONOMOUS, status__in=NON_TERMINAL_AGENT_STATES
    )
    claimed = list(claimed_qs.values_list("pk", flat=True))
    if claimed:
        Agent.objects.filter(pk__in=claimed).update(
            status=AgentStatus.CLAIMED, user=user, updated_at=now
        )
        CapabilityGrant.objects.filter(agent_id__in=claimed, status__in=LIVE_GRANT_STATES).update(
            status=GrantStatus.REVOKED, updated_at=now
        )
        agents.close_pending_approvals(claimed, now)
        AuditEvent.objects.filter(agent_id__in=claimed, user_id="").update(user_id=str(user.pk))
    audit.record("host.linked", actor_type=actor_type, host=host, user_id=user.pk, claimed=claimed)
    transaction.on_commit(
        lambda: signals.host_linked.send(sender=Host, host=host, user=user, claimed=claimed)
    )
    return claimed


#: Unlinking revokes only the agents that acted for the person; autonomous ones stay.
_UNLINK_CASCADE = {"mode": AgentMode.DELEGATED}


def agents_reached(host: Host, *, unlink: bool = False) -> int:
    """How many agents revoking (or unlinking) ``host`` would revoke now: what a confirmation
    page may promise."""
    return agents.cascade_of(host, **(_UNLINK_CASCADE if unlink else {})).count()


def unlink_host(host: Host, *, actor_type: str, actor_id: str = "") -> list[str]:
    """Unlink a host from its user: its delegated agents are revoked (spec §2.9, §2.7)."""
    now = timezone.now()
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        user_id = host.user_id
        revoked = agents.revoke_agents_of(host, now, "host_unlinked", **_UNLINK_CASCADE)
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


def rotate_host_key(host: Host, new_jwk: Any) -> Host:
    """Replace an inline host key in place (§5.9, §4.2, §8.7).

    Agent JWTs may still carry the old thumbprint as ``iss`` for a short grace window; host JWTs
    signed with the old key are refused at once.
    """
    public_key = keys.validate_public_jwk(new_jwk)
    thumbprint = keys.thumbprint(public_key)
    now = timezone.now()
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.status != HostStatus.ACTIVE:
            raise agents.host_refusal(host)
        if host.public_key is None:
            raise invalid_request("Only hosts with an inline key rotate through this endpoint")
        if thumbprint == host.thumbprint:
            raise invalid_request("The new key is the current key")
        if Host.objects.filter(thumbprint=thumbprint).exists():
            raise ProtocolError("host_exists", "That key already identifies a host", status=409)
        if Agent.objects.filter(host=host, thumbprint=thumbprint).exists():
            raise invalid_request("That key belongs to one of this host's agents")
        old = host.thumbprint
        host.previous_thumbprint = old
        host.previous_thumbprint_until = now + timedelta(seconds=app_settings.HOST_ROTATION_GRACE)
        host.public_key, host.thumbprint = public_key, thumbprint
        host.save(
            update_fields=[
                "public_key",
                "thumbprint",
                "previous_thumbprint",
                "previous_thumbprint_until",
                "updated_at",
            ]
        )
        _key_rotated(host, old, thumbprint)
    return host


def _key_rotated(host: Host, old: str | None, new: str, **data: Any) -> None:
    """In the rotating transaction: the audit row now, ``signals.key_rotated`` after commit."""
    audit.record(
        "host.key_rotated",
        actor_type="host",
        actor_id=host.pk,
        host=host,
        old_thumbprint=old,
        new_thumbprint=new,
        **data,
    )
    transaction.on_commit(
        lambda: signals.key_rotated.send(sender=Host, agent=None, host=host, actor_type="host")
    )


def adopt_jwks_key(host: Host, iss: str) -> Host:
    """A JWKS host signed with a new key (found by URL, signature verified): ``iss`` becomes
    its identifier; the old one serves agent JWTs for one JWKS refresh interval (spec §8.7)."""
    until = timezone.now() + timedelta(seconds=app_settings.JWKS_REFRESH_INTERVAL)
    old = host.thumbprint
    try:
        with transaction.atomic():
            moved = Host.objects.filter(pk=host.pk, thumbprint=old).update(
                thumbprint=iss, previous_thumbprint=old, previous_thumbprint_until=until
            )
            if moved:
                _key_rotated(host, old, iss, via="jwks")
    except IntegrityError:  # the new key already identifies another host
        raise invalid_jwt("That key already identifies another host") from None
    host.refresh_from_db()
    return host
