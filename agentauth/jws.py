"""Strict parsing of compact JWS tokens signed with EdDSA (spec §4).

We parse and verify by hand rather than through a general JWT library so that every rule is
visible and testable here: only ``alg: EdDSA``, no ``crit`` headers, no duplicate JSON members,
no non-finite numbers, unpadded base64url, a 64-byte signature. Anything else is ``invalid_jwt``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import ProtocolError, invalid_jwt
from .keys import b64url_decode

MAX_TOKEN_LENGTH = 8192
#: Deepest nesting of arrays and objects accepted anywhere (bodies, JWT segments, guarded views):
#: far beyond any real argument, far below what recursive code (schema validation, equality,
#: serialisation) can walk without a RecursionError.
MAX_JSON_DEPTH = 64


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _check_depth(value: Any) -> None:
    """Iterative, so the check itself cannot recurse too deeply."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def strict_json_loads(data: bytes | str) -> Any:
    """``json.loads`` that refuses duplicate members, NaN/Infinity, lone surrogates and nesting
    deeper than ``MAX_JSON_DEPTH``; a nesting the parser itself cannot follow is a ValueError too.
    """
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    _check_depth(value)
    # A lone UTF-16 surrogate ("\ud800", or its raw bytes) is accepted by json.loads but is not
    # Unicode text: it cannot be stored, hashed or logged as UTF-8 (RFC 8259 §8.2, RFC 7493
    # §2.1). Re-encoding raises UnicodeEncodeError, a ValueError like any other bad JSON.
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


@dataclass(frozen=True)
class ParsedJWS:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    def verify(self, key: Ed25519PublicKey) -> None:
        try:
            key.verify(self.signature, self.signing_input)
        except InvalidSignature:
            raise invalid_jwt() from None


def _segment(text: str, what: str) -> bytes:
    try:
        return b64url_decode(text)
    except ValueError:
        raise invalid_jwt(f"JWT {what} is not base64url") from None


def parse(token: Any) -> ParsedJWS:
    """Split and decode a compact JWS without verifying it; the caller verifies."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise invalid_jwt("Malformed JWT")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise invalid_jwt("Malformed JWT: expected three dot-separated segments")
    try:
        header = strict_json_loads(_segment(parts[0], "header"))
        claims = strict_json_loads(_segment(parts[1], "payload"))
    except ProtocolError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise invalid_jwt("Malformed JWT: header and payload must be JSON objects") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise invalid_jwt("Malformed JWT: header and payload must be JSON objects")
    if header.get("alg") != "EdDSA":
        # Algorithm confusion defence (§4.1): only EdDSA, never "none" or HMAC.
        raise invalid_jwt("JWT alg must be EdDSA")
    if "crit" in header:
        raise invalid_jwt("JWT carries critical header parameters this server does not support")
    signature = _segment(parts[2], "signature")
    if len(signature) != 64:
        raise invalid_jwt("JWT signature has the wrong length for Ed25519")
    return ParsedJWS(
        header=header,
        claims=claims,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=signature,
    )


def typ_matches(header: dict[str, Any], expected: str) -> bool:
    """``typ`` is a media type: case-insensitive, optional ``application/`` prefix (§4.2)."""
    typ = header.get("typ")
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    if typ.startswith("application/"):
        typ = typ[len("application/") :]
    return typ == expected
