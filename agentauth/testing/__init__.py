"""Helpers for tests: create hosts and agents directly, and sign their tokens.

Projects use these to test their own ``@requires_capability`` views without running the whole
registration and approval dance::

    host, host_key = make_host(user=alice, default_capabilities=["ticket.read"])
    agent, agent_key = make_agent(host, grants=["ticket.read"])
    token = agent_token(agent, agent_key)
    client.get("/tickets/1", HTTP_AUTHORIZATION=f"Bearer {token}")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.utils import timezone

from agentauth import clocks, keys
from agentauth.client.identity import Keypair
from agentauth.client.tokens import sign_agent_jwt, sign_host_jwt
from agentauth.conf import app_settings
from agentauth.models import (
    Agent,
    AgentMode,
    AgentStatus,
    CapabilityGrant,
    GrantStatus,
    Host,
    HostStatus,
)

__all__ = [
    "Keypair",
    "agent_token",
    "host_token",
    "make_agent",
    "make_host",
]


def make_host(
    *,
    user: Any = None,
    status: str = HostStatus.ACTIVE,
    default_capabilities: Iterable[str] = (),
    name: str = "Test host",
    key: Keypair | None = None,
) -> tuple[Host, Keypair]:
    key = key or Keypair.generate()
    host = Host.objects.create(
        name=name,
        thumbprint=key.thumbprint,
        public_key=key.public_jwk,
        user=user,
        status=status,
        default_capabilities=list(default_capabilities),
        activated_at=timezone.now() if status == HostStatus.ACTIVE else None,
    )
    return host, key


def make_agent(
    host: Host,
    *,
    status: str = AgentStatus.ACTIVE,
    mode: str = AgentMode.DELEGATED,
    grants: Iterable[str] | Mapping[str, Mapping[str, Any] | None] = (),
    name: str = "Test agent",
    key: Keypair | None = None,
) -> tuple[Agent, Keypair]:
    """An agent under ``host`` with active grants (a mapping gives each grant's constraints)."""
    key = key or Keypair.generate()
    now = timezone.now()
    agent = Agent(
        host=host,
        user_id=host.user_id if mode == AgentMode.DELEGATED else None,
        name=name,
        mode=mode,
        status=status,
        public_key=key.public_jwk,
        thumbprint=keys.thumbprint(key.public_jwk),
        created_at=now,
        activated_at=now if status == AgentStatus.ACTIVE else None,
    )
    clocks.set_absolute_deadline(agent)
    agent.expires_at = clocks.session_expires_at(agent) if agent.activated_at else None
    agent.save(force_insert=True)
    items = grants.items() if isinstance(grants, Mapping) else ((g, None) for g in grants)
    CapabilityGrant.objects.bulk_create(
        CapabilityGrant(
            agent=agent,
            capability=name_,
            status=GrantStatus.ACTIVE,
            constraints=dict(c) if c else None,
            granted_by_id=host.user_id,
        )
        for name_, c in items
    )
    return agent, key


def host_token(key: Keypair, **kwargs: Any) -> str:
    """A host JWT for this server (``aud`` = issuer unless given)."""
    kwargs.setdefault("audience", app_settings.ISSUER)
    return sign_host_jwt(key, **kwargs)


def agent_token(agent: Agent, key: Keypair, **kwargs: Any) -> str:
    """An agent JWT for ``agent`` (``aud`` = issuer unless given; ``iss`` = its host)."""
    kwargs.setdefault("audience", app_settings.ISSUER)
    kwargs.setdefault("host_thumbprint", agent.host.thumbprint)
    return sign_agent_jwt(key, agent_id=agent.pk, **kwargs)
