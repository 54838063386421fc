"""Host and agent JWTs (spec §4.2, §4.3), built the way the official TypeScript SDK builds them.

Both signers accept ``extra_claims`` / ``extra_headers`` that are merged last. A value of ``None``
removes the member. That is deliberate: the server's security tests forge expired, replayed,
mistyped or key-less tokens with the very helper real clients use, so a forged token differs from
a good one in exactly the member under test and nothing else.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import jwt

from .identity import Keypair

HOST_JWT_TYP = "host+jwt"
AGENT_JWT_TYP = "agent+jwt"
#: §4.3, §8.2: JWTs SHOULD expire within 60 seconds.
DEFAULT_LIFETIME = 60


def _merge(base: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = {**base, **(extra or {})}
    return {k: v for k, v in merged.items() if v is not None}


def _encode(
    key: Keypair,
    claims: dict[str, Any],
    headers: dict[str, Any],
) -> str:
    # PyJWT adds ``typ: JWT`` unless told otherwise; a falsy typ makes it drop the member, so a
    # test that removed ``typ`` really gets a token without one.
    headers.setdefault("typ", None)
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers=headers)


def _time_claims(lifetime: int) -> dict[str, Any]:
    now = int(time.time())
    return {"iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4())}


def sign_host_jwt(
    host: Keypair,
    *,
    audience: str,
    agent_public_key: Mapping[str, Any] | Keypair | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    extra_headers: Mapping[str, Any] | None = None,
    lifetime: int = DEFAULT_LIFETIME,
    include_host_key: bool = True,
) -> str:
    """Sign a ``host+jwt`` for host-authenticated endpoints (register, status, revoke...).

    ``iss`` (and ``sub``, as the SDK sends it) is the host key's thumbprint, because the server
    identifies inline-key hosts by that value (§4.2). ``host_public_key`` is always sent by default
    so an unknown host can be registered dynamically; ``agent_public_key`` only for registration.
    Both keys carry ``kid`` = their thumbprint, as the JWT headers do.
    """
    tp = host.thumbprint
    claims: dict[str, Any] = {"iss": tp, "sub": tp, "aud": audience, **_time_claims(lifetime)}
    if include_host_key:
        claims["host_public_key"] = host.wire_jwk
    if agent_public_key is not None:
        claims["agent_public_key"] = (
            agent_public_key.wire_jwk
            if isinstance(agent_public_key, Keypair)
            else dict(agent_public_key)
        )
    headers = _merge({"alg": "EdDSA", "typ": HOST_JWT_TYP, "kid": tp}, extra_headers)
    return _encode(host, _merge(claims, extra_claims), headers)


def sign_agent_jwt(
    agent: Keypair,
    *,
    agent_id: str,
    audience: str,
    host_thumbprint: str | None = None,
    capabilities: Iterable[str] | None = None,
    lifetime: int = DEFAULT_LIFETIME,
    extra_claims: Mapping[str, Any] | None = None,
    extra_headers: Mapping[str, Any] | None = None,
) -> str:
    """Sign an ``agent+jwt`` (§4.3).

    ``aud`` is the caller's choice because it differs per use: the issuer for auth-server calls,
    the resolved location for execution. ``iss`` is included only when ``host_thumbprint`` is
    given (any host identifier the server expects: its thumbprint, or the ``host_id`` some
    servers want); the TypeScript SDK omits it, and servers must cope with both.
    ``capabilities`` narrows the token; an empty or absent list means "all granted
    capabilities", so it is then omitted.
    """
    claims: dict[str, Any] = {"sub": agent_id, "aud": audience, **_time_claims(lifetime)}
    if host_thumbprint is not None:
        claims["iss"] = host_thumbprint
    caps = list(capabilities or ())
    if caps:
        claims["capabilities"] = caps
    headers = _merge({"alg": "EdDSA", "typ": AGENT_JWT_TYP, "kid": agent.thumbprint}, extra_headers)
    return _encode(agent, _merge(claims, extra_claims), headers)
