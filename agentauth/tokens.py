"""Host JWT and agent JWT verification (spec §4.5, §4.5.1).

Order matters for what an unauthenticated caller can learn (§4.5): header and claim
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

from . import agents, clocks, hosts, jwks, jws, keys, prepared, ratelimit, replay
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
    #: The host's JWKS URL (normalized) when its key is delivered by URL, else ``None``.
    jwks_url: str | None = None


@dataclass
class VerifiedAgent:
    agent: Agent
    host: Host
    claims: dict[str, Any]
    #: Thumbprint of the DPoP proof key this request was proven with (``agentauth.dpop``).
    dpop_jkt: str | None = None

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
    # RFC 7519 allows an array; we accept only a single audience (§4.3), compared
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
    ``allow_pending``: a pending host may poll status and revoke (§4.5.1 step 8).
    ``allow_rejected``: a rejected host may still read its agents' status, so the client that
    asked learns the outcome (spec §7.1 step 4: polling ends at ``rejected``).
    """
    parsed, iss, presented, jwks_url = parse_host_jwt(token)
    claims = parsed.claims

    # Host JWTs are signed by the host key itself, so only the current key's thumbprint
    # identifies the host: after a rotation the old key stops working at once (spec §5.9).
    host = Host.objects.filter(thumbprint=iss).first()
    if host is None and jwks_url is not None:
        # A JWKS host is identified by its URL; a new iss there is a key rotation (§4.5.1 4).
        host = Host.objects.filter(jwks_url=jwks_url).first()
    if host is not None and host.jwks_url is not None:
        # Key delivery mode is fixed at registration (spec §8.7): checked before any fetch.
        if presented is not None:
            raise invalid_jwt("This host's key is delivered by JWKS URL, not inline")
        if jwks_url is not None and jwks_url != host.jwks_url:
            raise invalid_jwt("host_jwks_url does not match the host's registered URL")
        jwks_url = host.jwks_url
        public_key = _jwks_host_key(jwks_url, parsed.header, iss)
    elif host is not None:
        if jwks_url is not None:
            raise invalid_jwt("This host's key is inline; it cannot switch to a JWKS URL")
        if host.public_key is None:
            raise invalid_jwt("Host has no inline key")
        if presented is not None and keys.thumbprint(presented) != iss:
            raise invalid_jwt()
        public_key = keys.validate_public_jwk(host.public_key)
    elif allow_unknown and jwks_url is not None:
        public_key = _jwks_host_key(jwks_url, parsed.header, iss)
    elif allow_unknown:
        if presented is None:
            raise invalid_jwt("Unknown host: the JWT must carry host_public_key or host_jwks_url")
        public_key = keys.validate_public_jwk(presented, field="host_public_key")
        if keys.thumbprint(public_key) != iss:
            raise invalid_jwt("JWT iss is not the thumbprint of host_public_key")
    else:
        raise invalid_jwt()

    parsed.verify(keys.public_key_from_jwk(public_key))
    until = _check_times(claims)
    replay.consume(HOST_TYP, iss, _jti(claims), until, issued_at=claims["iat"])

    if host is not None:
        if (
            host.status == HostStatus.REVOKED
            or (host.status == HostStatus.REJECTED and not allow_rejected)
            or (host.status == HostStatus.PENDING and not allow_pending)
        ):
            raise agents.host_refusal(host)
        ratelimit.hit("host", host.pk)
        if host.thumbprint != iss and host.previous_thumbprint != iss:
            # (The key it rotated away from may stay published for a while, spec §8.7: using
            # it is accepted, but does not turn the identifier back.)
            host = hosts.adopt_jwks_key(host, iss)
        note_host_use(host)
    return VerifiedHost(
        host=host, thumbprint=iss, public_key=public_key, claims=claims, jwks_url=jwks_url
    )


def note_host_use(host: Host) -> None:
    """Record that the host just authenticated: informational (spec §3.1), so one write per half
    minute, not one per request."""
    now = timezone.now()
    if host.last_used_at is None or (now - host.last_used_at).total_seconds() >= 30:
        host.last_used_at = now
        prepared.update(host, "last_used_at")


def _parse_typed(token: str, typ: str) -> jws.ParsedJWS:
    parsed = jws.parse(token)
    if not jws.typ_matches(parsed.header, typ):
        raise invalid_jwt(f"JWT typ must be {typ}")
    return parsed


def parse_host_jwt(token: str) -> tuple[jws.ParsedJWS, str, Any, str | None]:
    """Shape, ``typ``, ``iss`` and audience of a host JWT, and the key it presents: inline
    (``host_public_key``, not yet validated) or the normalized ``host_jwks_url``. No key, no
    database."""
    parsed = _parse_typed(token, HOST_TYP)
    claims = parsed.claims
    iss = _string_claim(claims, "iss")
    assert iss is not None
    _check_audience(claims, {app_settings.ISSUER})
    presented = claims.get("host_public_key")
    claimed_url = claims.get("host_jwks_url")
    if presented is not None and claimed_url is not None:
        raise invalid_jwt("A host JWT carries host_public_key or host_jwks_url, not both")
    jwks_url = None if claimed_url is None else jwks.normalize_url(claimed_url, "host_jwks_url")
    return parsed, iss, presented, jwks_url


def _jwks_host_key(url: str, header: dict[str, Any], iss: str) -> dict[str, str]:
    """The host key ``kid`` selects at ``url``; its thumbprint must be ``iss`` (spec §4.2)."""
    kid = header.get("kid")
    if not jwks.valid_kid(kid):
        raise invalid_jwt("A host JWT using host_jwks_url must name its key with a header kid")
    public_key = jwks.get_key(url, kid)
    if keys.thumbprint(public_key) != iss:
        raise invalid_jwt("JWT iss is not the thumbprint of the JWKS key its kid selects")
    return public_key


def verify_agent_jwt(
    token: str, *, audiences: Collection[str], consume: bool = True
) -> VerifiedAgent:
    """Verify an agent JWT (spec §4.5) and return the active agent it names.

    ``audiences`` is the set of exact ``aud`` values this endpoint accepts (§4.3).
    ``consume=False`` checks the token without spending its ``jti`` (introspection, §4.6).
    """
    parsed, sub, iss = parse_agent_jwt(token, audiences)
    claims = parsed.claims
    agent = Agent.objects.select_related("host").filter(pk=sub).first()
    if agent is None:
        raise invalid_jwt()
    host = agent.host
    verify_agent_signature(parsed, agent, host, iss)
    until = _check_times(claims)
    jti = _jti(claims)
    if consume:
        replay.consume(AGENT_TYP, agent.pk, jti, until, issued_at=claims["iat"])

    ensure_may_act(agent, host)
    return VerifiedAgent(agent=agent, host=host, claims=claims)


def parse_agent_jwt(
    token: str, audiences: Collection[str]
) -> tuple[jws.ParsedJWS, str, str | None]:
    """Shape, ``typ``, ``sub``, ``iss`` and audience of an agent JWT: no key, no database."""
    parsed = _parse_typed(token, AGENT_TYP)
    claims = parsed.claims
    sub = _string_claim(claims, "sub")
    assert sub is not None
    iss = _string_claim(claims, "iss", required=app_settings.REQUIRE_AGENT_ISS)
    _check_audience(claims, audiences)
    caps = claims.get("capabilities")
    if caps is not None and (
        not isinstance(caps, list) or not all(isinstance(c, str) for c in caps)
    ):
        raise invalid_jwt("JWT claim 'capabilities' must be an array of strings")
    return parsed, sub, iss


def verify_agent_signature(
    parsed: jws.ParsedJWS, agent: Agent, host: Host, iss: str | None
) -> None:
    """``iss`` names the agent's host, and the agent's key signed the token (spec §4.5)."""
    # iss, when present, must name this agent's host (current key, or the previous one within
    # the rotation grace window). Without iss the host comes from ``sub`` (spec §4.5 step 4).
    iss_known = iss is None or _thumbprint_matches(host, iss)
    if not iss_known and host.jwks_url is None:
        raise invalid_jwt()
    parsed.verify(keys.public_key_from_jwk(_agent_key(agent, parsed.header)))
    if not iss_known and not (iss is not None and jwks.has_thumbprint(host.jwks_url or "", iss)):
        # A JWKS host may have rotated before any host JWT said so (spec §8.7): iss must then
        # be the thumbprint of a key its JWKS publishes now. Checked after the signature, so
        # only an agent holding its own key can make the server look.
        raise invalid_jwt()


def check_times(claims: dict[str, Any]) -> tuple[datetime, str]:
    """``iat``/``exp``/``nbf`` and ``jti`` (spec §4.5 steps 7-8): until when the ``jti`` must be
    remembered, and the ``jti``."""
    return _check_times(claims), _jti(claims)


def _agent_key(agent: Agent, header: dict[str, Any]) -> dict[str, str]:
    if agent.jwks_url is None:
        if agent.public_key is None:
            raise invalid_jwt("Agent has no usable key")
        return dict(agent.public_key)
    # An agent whose key lives at a JWKS URL signs with the kid it registered (§4.2).
    if agent.kid is None or header.get("kid") != agent.kid:
        raise invalid_jwt("The agent JWT's header kid must be the agent_kid it registered")
    return jwks.get_key(agent.jwks_url, agent.kid)


def ensure_may_act(agent: Agent, host: Host) -> None:
    """Apply the clocks, then refuse unless agent and host are both active (spec §2.3, §4.5 step 4),
    with the state's own code. Used at authentication and whenever work resumes later (async
    jobs, long streams), so every path gives the same answer."""
    clocks.evaluate_clocks(agent)
    if agent.status != AgentStatus.ACTIVE:
        raise agents.agent_refusal(agent)
    if host.status != HostStatus.ACTIVE:
        raise agents.host_refusal(host)
