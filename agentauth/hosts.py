"""Host administration: pre-registration (spec §2.8) and server-side linking (spec §2.9)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import audit, keys, lifecycle
from .capabilities import registry
from .errors import ProtocolError, invalid_request
from .models import Host, HostStatus


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
            lifecycle.link_host(host, user, actor_type=actor_type)
    return host


def link(host: Host, user: Any, *, actor_type: str = "staff") -> list[str]:
    """Server-side linking (spec §2.9): the host now acts for ``user``; its autonomous agents are
    claimed. A host already linked to someone else must be unlinked first."""
    with transaction.atomic():
        locked = Host.objects.select_for_update().get(pk=host.pk)
        if locked.status in (HostStatus.REVOKED, HostStatus.REJECTED):
            raise ProtocolError("host_revoked", "A revoked or rejected host cannot be linked")
        return lifecycle.link_host(locked, user, actor_type=actor_type)
