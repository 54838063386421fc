"""Host JWT and agent JWT verification (spec §4.5, §4.5.1).

Order matters for what an unauthenticated caller can learn (checklist Q33): header and claim
shape, audience, key lookup, **signature**, times and replay come first and all fail with
``401 invalid_jwt``; only a validly signed, fresh, unreplayed token gets a state-specific 403
(``agent_revoked``, ``host_pending``...).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from . import agents, clocks, jws, keys, ratelimit, replay
from .conf import app_settings
from .errors import ProtocolError, invalid_jwt
from .models import Agent, AgentStatus, Host, HostStatus

HOST_TYP = "host+jwt"
AGENT_TYP = "agent+jwt"


@dataclass
class VerifiedHost:
    """A verified host JWT. ``host`` is ``None`` for a first-time (dynamic) registration."""

    host: Host | None
    thumbprint: str
    public_key: dict[str, str]
    claims: dict[str, Any]


@dataclass
class VerifiedAgent:
    agent: Agent
    host: Host
    claims: dict[str, Any]

    @property
    def capabilities_claim(self) -> list[str] | None:
        value = self.claims.get("capabilities")
        return list(value) if isinstance(value, list) else None


def bearer_token(request: HttpRequest) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ProtocolError("invalid_jwt", "Missing Authorization: Bearer <jwt> header")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProtocolError("invalid_jwt", "Authorization header must use the Bearer scheme")
    return token.strip()


def _string_claim(claims: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    # NUL is refused too: PostgreSQL cannot store or compare it (a DataError, so a 500).
    if not isinstance(value, str) or not value or len(value) > 256 or "\x00" in value:
        raise invalid_jwt(f"JWT claim '{name}' is missing or not a string")
    return value


def _number_claim(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_jwt(f"JWT claim '{name}' is missing or not a number")
    try:
        return float(value)
    except OverflowError:  # a JSON integer beyond float range, e.g. 10**400
        raise invalid_jwt(f"JWT claim '{name}' is out of range") from None


def _check_audience(claims: dict[str, Any], expected: Collection[str]) -> None:
    aud = claims.get("aud")
    # RFC 7519 allows an array; we accept only a single audience (checklist Q62), compared
    # exactly (§8.18) against configured absolute URLs, never the request's Host header.
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if not isinstance(aud, str) or aud not in expected:
        raise invalid_jwt("JWT audience does not match this server")


def _check_times(claims: dict[str, Any]) -> datetime:
    """Validate ``iat``/``exp``/``nbf``; return when the replay record may be forgotten."""
    now = time.time()
    skew = app_settings.CLOCK_SKEW
    iat = _number_claim(claims, "iat")
    exp = _number_claim(claims, "exp")
    if exp < iat:
        raise invalid_jwt("JWT exp is before iat")
    if exp - iat > app_settings.JWT_MAX_LIFETIME:
        raise invalid_jwt(
            f"JWT lifetime exceeds the maximum of {app_settings.JWT_MAX_LIFETIME} seconds"
        )
    if iat > now + skew:
        raise invalid_jwt("JWT iat is in the future")
    if exp + skew < now:
        raise invalid_jwt("JWT has expired")
    if "nbf" in claims and _number_claim(claims, "nbf") > now + skew:
        raise invalid_jwt("JWT is not yet valid (nbf)")
    return datetime.fromtimestamp(exp + skew, tz=UTC)


def _jti(claims: dict[str, Any]) -> str:
    jti = _string_claim(claims, "jti")
    assert jti is not None
    return jti


def _thumbprint_matches(host: Host, iss: str) -> bool:
    if host.thumbprint is not None and iss == host.thumbprint:
        return True
    return (
        host.previous_thumbprint is not None
        and iss == host.previous_thumbprint
        and host.previous_thumbprint_until is not None
        and host.previous_thumbprint_until > timezone.now()
    )


def verify_host_jwt(
    token: str,
    *,
    allow_unknown: bool = False,
    allow_pending: bool = False,
    allow_rejected: bool = False,
) -> VerifiedHost:
    """Verify a host JWT (spec §4.5.1).

    ``allow_unknown``: an unknown host is a dynamic registration (only ``/agent/register``).
    ``allow_pending``: a pending host may poll status and revoke (checklist Q4).
    ``allow_rejected``: a rejected host may still read its agents' status, so the client that
    asked learns the outcome (spec §7.1 step 4: polling ends at ``rejected``).
    """
    parsed = jws.parse(token)
    if not jws.typ_matches(parsed.header, HOST_TYP):
        raise invalid_jwt("JWT typ must be host+jwt")
    claims = parsed.claims
    iss = _string_claim(claims, "iss")
    assert iss is not None
    _check_audience(claims, {app_settings.ISSUER})
    if "host_jwks_url" in claims:
        # Key delivery by JWKS URL is not offered by this server; refusing is the fail-closed
        # answer (a host registered inline also MUST NOT switch to JWKS, spec §8.7).
        raise invalid_jwt("JWKS-based host keys are not supported by this server")

    # Host JWTs are signed by the host key itself, so only the current key's thumbprint
    # identifies the host: after a rotation the old key stops working at once (spec §5.9).
    host = Host.objects.filter(thumbprint=iss).first()
    presented = claims.get("host_public_key")
    if host is not None:
        if host.public_key is None:
            raise invalid_jwt("Host has no inline key")
        if presented is not None and keys.thumbprint(presented) != iss:
            raise invalid_jwt()
        public_key = keys.validate_public_jwk(host.public_key)
    elif allow_unknown:
        if presented is None:
            raise invalid_jwt("Unknown host: the JWT must carry host_public_key")
        public_key = keys.validate_public_jwk(presented, field="host_public_key")
        if keys.thumbprint(public_key) != iss:
            raise invalid_jwt("JWT iss is not the thumbprint of host_public_key")
    else:
        raise invalid_jwt()

    parsed.verify(keys.public_key_from_jwk(public_key))
    until = _check_times(claims)
    replay.consume(HOST_TYP, iss, _jti(claims), until)

    if host is not None:
        if (
            host.status == HostStatus.REVOKED
            or (host.status == HostStatus.REJECTED and not allow_rejected)
            or (host.status == HostStatus.PENDING and not allow_pending)
        ):
            raise agents.host_refusal(host)
        ratelimit.hit("host", host.pk)
        now = timezone.now()
        # Informational (spec §3.1): one write per half minute, not one per request.
        if host.last_used_at is None or (now - host.last_used_at).total_seconds() >= 30:
            Host.objects.filter(pk=host.pk).update(last_used_at=now)
    return VerifiedHost(host=host, thumbprint=iss, public_key=public_key, claims=claims)


def verify_agent_jwt(
    token: str, *, audiences: Collection[str], consume: bool = True
) -> VerifiedAgent:
    """Verify an agent JWT (spec §4.5) and return the active agent it names.

    ``audiences`` is the set of exact ``aud`` values this endpoint accepts (checklist Q1).
    ``consume=False`` checks the token without spending its ``jti`` (introspection, Q3).
    """
    parsed = jws.parse(token)
    if not jws.typ_matches(parsed.header, AGENT_TYP):
        raise invalid_jwt("JWT typ must be agent+jwt")
    claims = parsed.claims
    sub = _string_claim(claims, "sub")
    iss = _string_claim(claims, "iss", required=app_settings.REQUIRE_AGENT_ISS)
    _check_audience(claims, audiences)
    caps = claims.get("capabilities")
    if caps is not None and (
        not isinstance(caps, list) or not all(isinstance(c, str) for c in caps)
    ):
        raise invalid_jwt("JWT claim 'capabilities' must be an array of strings")

    agent = Agent.objects.select_related("host").filter(pk=sub).first()
    if agent is None:
        raise invalid_jwt()
    host = agent.host
    # iss, when present, must name this agent's host (current key, or the previous one within
    # the rotation grace window). Without iss the host comes from ``sub`` (spec §4.5 step 4).
    if iss is not None and not _thumbprint_matches(host, iss):
        raise invalid_jwt()
    if agent.public_key is None:
        raise invalid_jwt("Agent has no usable key")
    parsed.verify(keys.public_key_from_jwk(agent.public_key))
    until = _check_times(claims)
    jti = _jti(claims)
    if consume:
        replay.consume(AGENT_TYP, agent.pk, jti, until)

    ensure_may_act(agent, host)
    return VerifiedAgent(agent=agent, host=host, claims=claims)


def ensure_may_act(agent: Agent, host: Host) -> None:
    """Apply the clocks, then refuse unless agent and host are both active (spec §2.3, Q32),
    with the state's own code. Used at authentication and whenever work resumes later (async
    jobs, long streams), so every path gives the same answer."""
    clocks.evaluate_clocks(agent)
    if agent.status != AgentStatus.ACTIVE:
        raise agents.agent_refusal(agent)
    if host.status != HostStatus.ACTIVE:
        raise agents.host_refusal(host)
