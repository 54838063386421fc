"""Key rotation (spec §5.8, §5.9, §8.7, §8.8): the old key stops working at once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import audit, keys, signals
from .conf import app_settings
from .errors import ProtocolError, invalid_request
from .lifecycle import NON_TERMINAL_AGENT_STATES
from .models import Agent, Host, HostStatus


def rotate_agent_key(agent: Agent, new_jwk: Any, *, actor_id: str) -> Agent:
    """Replace an agent's key (checklist KR1-KR6, Q50): non-terminal agents only, and the new
    key may not identify another agent of the same host (it is the registration key)."""
    public_key = keys.validate_public_jwk(new_jwk)
    thumbprint = keys.thumbprint(public_key)
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=agent.host_id)
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.status not in NON_TERMINAL_AGENT_STATES:
            raise ProtocolError(
                {"revoked": "agent_revoked", "rejected": "agent_rejected"}.get(
                    agent.status, "agent_claimed"
                )
            )
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


def rotate_host_key(host: Host, new_jwk: Any) -> Host:
    """Replace an inline host key in place (checklist HK1-HK7, Q38, Q51).

    Agent JWTs may still carry the old thumbprint as ``iss`` for a short grace window; host JWTs
    signed with the old key are refused at once.
    """
    public_key = keys.validate_public_jwk(new_jwk)
    thumbprint = keys.thumbprint(public_key)
    now = timezone.now()
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.status != HostStatus.ACTIVE:
            raise ProtocolError("host_pending" if host.status == "pending" else "host_revoked")
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
        audit.record(
            "host.key_rotated",
            actor_type="host",
            actor_id=host.pk,
            host=host,
            old_thumbprint=old,
            new_thumbprint=thumbprint,
        )
        transaction.on_commit(
            lambda: signals.key_rotated.send(sender=Host, agent=None, host=host, actor_type="host")
        )
    return host
