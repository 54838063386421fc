"""Agent registration (spec §5.3): host creation or lookup, idempotent retries, initial statuses.

Auto-approval is deliberately narrow: only capabilities whose ``approval_strength`` is
``"none"``, and only within the host's ``default_capabilities`` (linked host, delegated agent) or
the configured autonomous policy (§2.8). Everything else waits for a person.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import agents, audit, clocks, jwks, keys, policy, prepared, signals
from .approvals import IssuedApproval, open_request
from .conf import app_settings
from .errors import ProtocolError, invalid_request
from .models import Agent, AgentMode, AgentStatus, CapabilityGrant, GrantStatus, Host, HostStatus
from .tokens import VerifiedHost
from .validation import (
    MESSAGE_MAX,
    NAME_MAX,
    REASON_MAX,
    RequestedCapability,
    check_fields,
    display_text,
    optional_choice,
    requested_capabilities,
)

REGISTER_FIELDS = (
    "name",
    "host_name",
    "capabilities",
    "mode",
    "reason",
    "preferred_method",
    "login_hint",
    "binding_message",
    # Sent by the official TypeScript client: asks that nothing be auto-approved.
    "force_approval",
)


@dataclass(frozen=True)
class RegistrationRequest:
    name: str
    host_name: str
    mode: str
    capabilities: list[RequestedCapability]
    reason: str
    preferred_method: str | None
    login_hint: str
    binding_message: str
    force_approval: bool

    @classmethod
    def parse(cls, body: dict[str, Any]) -> RegistrationRequest:
        check_fields(body, REGISTER_FIELDS)
        mode = body.get("mode", AgentMode.DELEGATED)
        if not isinstance(mode, str) or mode not in app_settings.MODES or mode not in AgentMode:
            raise ProtocolError(
                "unsupported_mode",
                f"Mode {mode!r} is not supported. Supported: {', '.join(app_settings.MODES)}",
            )
        force = body.get("force_approval", False)
        if not isinstance(force, bool):
            raise invalid_request("'force_approval' must be a boolean")
        return cls(
            name=display_text(body.get("name"), "name", max_length=NAME_MAX, required=True),
            host_name=display_text(body.get("host_name"), "host_name", max_length=NAME_MAX),
            mode=mode,
            capabilities=requested_capabilities(body.get("capabilities")),
            reason=display_text(body.get("reason"), "reason", max_length=REASON_MAX),
            preferred_method=optional_choice(body, "preferred_method"),
            login_hint=display_text(body.get("login_hint"), "login_hint", max_length=MESSAGE_MAX),
            binding_message=display_text(
                body.get("binding_message"), "binding_message", max_length=MESSAGE_MAX
            ),
            force_approval=force,
        )


@dataclass(frozen=True)
class AgentKey:
    """How the new agent proves itself: an inline key, or a ``kid`` at a JWKS URL."""

    thumbprint: str  # registration idempotency key within the host (spec §5.3)
    public_key: dict[str, str] | None = None
    jwks_url: str | None = None
    kid: str | None = None


def agent_key_from_claims(verified: VerifiedHost) -> AgentKey:
    """The agent key carried in the host JWT (spec §4.2, §5.3)."""
    claims = verified.claims
    if "agent_jwks_url" in claims:
        if "agent_public_key" in claims:
            raise invalid_request("Send agent_public_key or agent_jwks_url, not both")
        url = jwks.normalize_url(claims["agent_jwks_url"], "agent_jwks_url")
        kid = claims.get("agent_kid")
        if not jwks.valid_kid(kid):
            raise invalid_request("agent_kid is required with agent_jwks_url (spec §4.2)")
        if url == verified.jwks_url:
            raise invalid_request("Host and agent JWKS URLs must differ (spec §4.2)")
        # Fetched now: an agent whose key cannot be found would never authenticate.
        if keys.thumbprint(jwks.get_key(url, kid)) == verified.thumbprint:
            raise invalid_request("The agent key must differ from the host key")
        return AgentKey(thumbprint=jwks.agent_identity(url, kid), jwks_url=url, kid=kid)
    if "agent_kid" in claims:
        raise invalid_request("agent_kid is only meaningful with agent_jwks_url")
    if "agent_public_key" not in claims:
        raise invalid_request(
            "The host JWT must carry agent_public_key or agent_jwks_url for registration"
        )
    jwk = keys.validate_public_jwk(claims["agent_public_key"], field="agent_public_key")
    if keys.thumbprint(jwk) == verified.thumbprint:
        raise invalid_request("The agent key must differ from the host key")
    return AgentKey(thumbprint=keys.thumbprint(jwk), public_key=jwk)


def _get_or_create_host(verified: VerifiedHost, host_name: str) -> tuple[Host, bool]:
    if verified.host is not None:
        host = Host.objects.select_for_update().get(pk=verified.host.pk)
        # A concurrent revoke may have landed since the JWT was verified.
        if host.status in (HostStatus.REVOKED, HostStatus.REJECTED):
            raise agents.host_refusal(host)
        if host_name and host_name != host.name:
            host.name = host_name  # informational only (spec §5.3)
            host.save(update_fields=["name", "updated_at"])
        return host, False
    if not app_settings.ALLOW_DYNAMIC_HOST_REGISTRATION:
        raise ProtocolError("dynamic_host_registration_disabled")
    try:
        with transaction.atomic():
            host = Host.objects.create(
                name=host_name,
                thumbprint=verified.thumbprint,
                # Exactly one delivery mode, fixed from now on (spec §8.7).
                public_key=None if verified.jwks_url else verified.public_key,
                jwks_url=verified.jwks_url,
                status=HostStatus.PENDING,
                # Defaults only: nothing is granted until policy or a person allows (§8.10).
                default_capabilities=list(app_settings.DEFAULT_HOST_CAPABILITIES),
            )
        return host, True
    except IntegrityError:
        # Another first registration of the same host won the race; use its row.
        raced = Host.objects.select_for_update().filter(thumbprint=verified.thumbprint).first()
        if raced is None and verified.jwks_url is not None:
            raced = Host.objects.select_for_update().filter(jwks_url=verified.jwks_url).first()
        if raced is None:
            raise
        return raced, False


def initial_statuses(
    host: Host, req: RegistrationRequest
) -> tuple[AgentStatus, dict[str, GrantStatus], bool]:
    """Decide the agent status, each grant's status, and whether the host is activated."""
    pending = {rc.name: GrantStatus.PENDING for rc in req.capabilities}
    if req.mode == AgentMode.DELEGATED:
        if host.status != HostStatus.ACTIVE or host.user_id is None:
            # Unknown, pending or unlinked host: a person must approve first (spec §8.10).
            return AgentStatus.PENDING, pending, False
        return AgentStatus.ACTIVE, _auto(req, host), False
    # Autonomous.
    if host.user_id is not None:
        raise ProtocolError(
            "unsupported_mode",
            "Autonomous agents cannot register under a host linked to a user",
        )
    if app_settings.AUTONOMOUS_AUTO_APPROVE is None:
        return AgentStatus.PENDING, pending, False
    return AgentStatus.ACTIVE, _auto(req, host), host.status == HostStatus.PENDING


def _auto(req: RegistrationRequest, host: Host) -> dict[str, GrantStatus]:
    """One rule for every entry point: ``policy.auto_approvable`` (spec §8.10)."""
    return {
        rc.name: (
            GrantStatus.ACTIVE
            if not req.force_approval and policy.auto_approvable(host, req.mode, rc.capability)
            else GrantStatus.PENDING
        )
        for rc in req.capabilities
    }


Registered = tuple[Agent, list[CapabilityGrant], IssuedApproval | None]


def register(verified: VerifiedHost, req: RegistrationRequest) -> Registered:
    """Register an agent under the calling host, creating the host on first contact (spec §5.3).

    Returns the agent, its grants and the approval request opened for a person, if any.
    """
    agent_key = agent_key_from_claims(verified)
    try:
        return _register(verified, req, agent_key)
    except IntegrityError:
        # A concurrent registration of the same host and agent key committed its agent first
        # (the unique key refused ours and the transaction rolled back, with nothing written).
        # Run again: this time the agent is there and the request is answered as a retry. No
        # savepoint around the insert, so the common case saves two round trips.
        return _register(verified, req, agent_key)


def _register(verified: VerifiedHost, req: RegistrationRequest, agent_key: AgentKey) -> Registered:
    agent_tp = agent_key.thumbprint
    now = timezone.now()
    with transaction.atomic():
        host, created_host = _get_or_create_host(verified, req.host_name)
        existing = Agent.objects.select_for_update().filter(host=host, thumbprint=agent_tp).first()
        if existing is not None:
            return _retry(existing, req)
        agent_status, grant_statuses, activate_host = initial_statuses(host, req)
        if activate_host:
            host.status = HostStatus.ACTIVE
            host.activated_at = now
            host.save(update_fields=["status", "activated_at", "updated_at"])
        agent, grants = new_agent(host, req, agent_key, agent_status, grant_statuses, now)
        prepared.insert([agent])
        prepared.insert(grants)
        approval = _approval_if_needed(agent, grants, req)
        registered(agent, host, req, grants, created_host=created_host)
    return agent, grants, approval


def new_agent(
    host: Host,
    req: RegistrationRequest,
    agent_key: AgentKey,
    agent_status: AgentStatus,
    grant_statuses: dict[str, GrantStatus],
    now: Any,
) -> tuple[Agent, list[CapabilityGrant]]:
    """The new agent and its grants, not yet saved (shared with ``agentauth.fastregister``)."""
    agent = Agent(
        host=host,
        user_id=host.user_id if req.mode == AgentMode.DELEGATED else None,
        name=req.name,
        mode=req.mode,
        status=agent_status,
        public_key=agent_key.public_key,
        thumbprint=agent_key.thumbprint,
        jwks_url=agent_key.jwks_url,
        kid=agent_key.kid,
        created_at=now,
    )
    clocks.set_absolute_deadline(agent)
    if agent_status == AgentStatus.ACTIVE:
        clocks.activate(agent, now)
    grants = []
    for rc in req.capabilities:
        active = grant_statuses[rc.name] == GrantStatus.ACTIVE
        grants.append(
            CapabilityGrant(
                agent=agent,
                capability=rc.name,
                status=grant_statuses[rc.name],
                constraints=rc.constraints,
                granted_by_id=host.user_id if active else None,
                reason=req.reason,
                expires_at=policy.grant_expiry(rc.name, agent, now) if active else None,
            )
        )
    return agent, grants


def registered(
    agent: Agent,
    host: Host,
    req: RegistrationRequest,
    grants: list[CapabilityGrant],
    *,
    created_host: bool,
) -> None:
    """Audit the registration and, once committed, tell the receivers (in its transaction)."""
    if created_host:
        audit.record("host.created", actor_type="host", actor_id=host.pk, host=host)
    audit.record(
        "agent.registered",
        actor_type="host",
        actor_id=host.pk,
        agent=agent,
        status=agent.status,
        mode=agent.mode,
        capabilities=[rc.name for rc in req.capabilities],
        auto_approved=[g.capability for g in grants if g.status == GrantStatus.ACTIVE],
    )
    transaction.on_commit(
        lambda: signals.agent_registered.send(
            sender=Agent, agent=agent, host=host, created_host=created_host
        )
    )


def _approval_if_needed(
    agent: Agent, grants: list[CapabilityGrant], req: RegistrationRequest
) -> IssuedApproval | None:
    pending = [g for g in grants if g.status == GrantStatus.PENDING]
    # Present whenever the agent or any grant waits for a person (§5.3).
    if agent.status != AgentStatus.PENDING and not pending:
        return None
    return open_request(
        agent,
        pending,
        reason=req.reason,
        binding_message=req.binding_message,
        login_hint=req.login_hint,
        preferred_method=req.preferred_method,
    )


def _retry(agent: Agent, req: RegistrationRequest) -> Registered:
    """Same host + agent key again (spec §5.3 idempotency)."""
    if agent.status != AgentStatus.PENDING:
        raise ProtocolError(
            "agent_exists",
            f"An agent with this public key is already registered under this host "
            f"(status {agent.status}); generate a new agent key"
            + ("; use reactivate" if agent.status == AgentStatus.EXPIRED else ""),
        )
    grants = list(agent.grants.all())
    approval = open_request(
        agent,
        [g for g in grants if g.status == GrantStatus.PENDING],
        reason=req.reason,
        binding_message=req.binding_message,
        login_hint=req.login_hint,
        preferred_method=req.preferred_method,
    )
    return agent, grants, approval
