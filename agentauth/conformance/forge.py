"""Tokens no honest client makes: unsigned, wrongly signed, or HMAC'd with a public key."""

from __future__ import annotations

import json

import jwt

from agentauth.keys import b64url_decode, b64url_encode


def _segment(obj: dict[str, object]) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":")).encode())


def _parts(token: str) -> tuple[dict[str, object], dict[str, object]]:
    header_b64, payload_b64, _ = token.split(".")
    return json.loads(b64url_decode(header_b64)), json.loads(b64url_decode(payload_b64))


def unsigned(token: str) -> str:
    """The same claims with ``alg: none`` and no signature (RFC 7519 §6)."""
    header, payload = _parts(token)
    return f"{_segment({**header, 'alg': 'none'})}.{_segment(payload)}."


def hmac_with_public_key(token: str, public_x: str) -> str:
    """The same claims HS256-signed with the public key's bytes: the algorithm-confusion attack."""
    header, payload = _parts(token)
    rest = {k: v for k, v in header.items() if k != "alg"}
    return jwt.encode(payload, b64url_decode(public_x), algorithm="HS256", headers=rest)


def bad_signature(token: str) -> str:
    """The token with its signature's bytes flipped."""
    head, payload, sig = token.split(".")
    raw = bytes(b ^ 0xFF for b in b64url_decode(sig))
    return f"{head}.{payload}.{b64url_encode(raw)}"
