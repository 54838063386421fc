"""Ed25519 JWKs: strict validation, canonical form and RFC 7638 thumbprints (spec §4.1, §4.2).

Imports nothing from Django: the agent-side client uses the same functions, so the two sides
cannot disagree on what a thumbprint is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import ProtocolError

_B64URL = re.compile(r"[A-Za-z0-9_-]+")

SUPPORTED_ALGORITHMS = ("Ed25519",)
#: JWK members we understand on a public key. Anything else is refused rather than ignored, so a
#: key never carries data the server silently drops (``d`` in particular, spec §4.1).
_ALLOWED_MEMBERS = frozenset({"kty", "crv", "x", "kid", "alg", "use", "key_ops"})


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or not text or len(text) > 16384:
        raise ValueError("not a base64url string")
    if not _B64URL.fullmatch(text):
        # The standard decoder skips characters outside the alphabet; we refuse them, so one
        # value never has two spellings.
        raise ValueError("not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a base64url string") from exc
    if b64url_encode(raw) != text:
        # Non-zero unused bits in the last character (RFC 4648 §3.5) would be a second spelling
        # of the same bytes, e.g. of a JWS signature.
        raise ValueError("not canonical base64url")
    return raw


def validate_public_jwk(jwk: Any, *, field: str = "public_key") -> dict[str, str]:
    """Check that ``jwk`` is an Ed25519 public JWK and return its canonical form.

    Raises ``unsupported_algorithm`` for a well-formed key of another type (spec §5.3, §5.8) and
    ``invalid_request`` for anything malformed or carrying private material (§4.1, §5.13).
    """
    if not isinstance(jwk, Mapping):
        raise ProtocolError("invalid_request", f"{field} must be a JWK object")
    if "d" in jwk:
        raise ProtocolError("invalid_request", f"{field} must not contain private key material")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if not isinstance(kty, str) or (crv is not None and not isinstance(crv, str)):
        raise ProtocolError("invalid_request", f"{field} needs string 'kty' and 'crv' members")
    if kty != "OKP" or crv != "Ed25519":
        raise ProtocolError(
            "unsupported_algorithm",
            f"Key type {kty}/{crv} is not allowed. Accepted: Ed25519",
        )
    unknown = sorted(str(k) for k in jwk if k not in _ALLOWED_MEMBERS)
    if unknown:
        raise ProtocolError("invalid_request", f"{field} has unsupported members: {unknown}")
    alg = jwk.get("alg")
    if alg is not None and alg not in ("EdDSA", "Ed25519"):
        raise ProtocolError("unsupported_algorithm", f"{field} alg {alg!r} is not EdDSA")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise ProtocolError("invalid_request", f"{field}.x must be a base64url string")
    try:
        raw = b64url_decode(x)
    except ValueError:
        raise ProtocolError("invalid_request", f"{field}.x is not base64url") from None
    if len(raw) != 32:
        raise ProtocolError("invalid_request", f"{field}.x must encode 32 bytes")
    # Re-encode so two spellings of one key can never become two identities.
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def public_key_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    if type(jwk) is dict and all(type(k) is str and type(v) is str for k, v in jwk.items()):
        # Every agent call loads its agent's key: the same few keys again and again.
        return _key_of(tuple(sorted(jwk.items())))
    return _key(jwk)


@lru_cache(maxsize=2048)
def _key_of(items: tuple[tuple[str, str], ...]) -> Ed25519PublicKey:
    # Only valid keys are remembered: a refusal raises, and lru_cache keeps no exception.
    return _key(dict(items))


def _key(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    canonical = validate_public_jwk(jwk)
    return Ed25519PublicKey.from_public_bytes(b64url_decode(canonical["x"]))


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of an Ed25519 JWK (43 base64url characters, spec §4.2)."""
    canonical = validate_public_jwk(jwk)
    members = json.dumps(
        {"crv": canonical["crv"], "kty": canonical["kty"], "x": canonical["x"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url_encode(hashlib.sha256(members.encode("ascii")).digest())


def public_jwk(key: Ed25519PublicKey | Ed25519PrivateKey) -> dict[str, str]:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()
