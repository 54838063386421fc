"""DPoP proof of possession for agent-JWT requests (spec §4.4, §4.5 step 9, §8.14; RFC 9449).

Implemented from RFC 9449: §4.2 (proof syntax), §4.3 (checking a proof), §6.1 (``cnf.jkt``),
§7.1 (the ``DPoP`` scheme and ``WWW-Authenticate`` errors), §9 (server nonces), §11.1 (proof
replay). Proofs are EdDSA only, like every other token here (spec §4).

The hook is one setting read when ``AGENTAUTH_DPOP`` is ``"off"``. Otherwise the order is chosen
so that a retry costs nothing: the scheme and the nonce are checked *before* the agent JWT is
verified (a ``use_dpop_nonce`` answer does not spend the JWT's ``jti``); the proof's signature,
binding and its own ``jti`` after, so only a valid agent JWT can make us write a replay record.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from django.http import HttpRequest
from django.utils.crypto import salted_hmac

from . import jws, keys, replay
from .capabilities import Capability
from .conf import app_settings
from .errors import ProtocolError
from .tokens import VerifiedAgent, bearer_token, verify_agent_jwt

DPOP_TYP = "dpop+jwt"
ALGORITHMS = ("EdDSA",)
_NONCE_SALT = "agentauth.dpop.nonce"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def discovery_fields() -> dict[str, Any]:
    """Members for the discovery document, named as in RFC 9449 §5.1 and RFC 9728 §2."""
    if app_settings.DPOP == "off":
        return {}
    return {
        "dpop_signing_alg_values_supported": list(ALGORITHMS),
        "dpop_bound_access_tokens_required": app_settings.DPOP == "required",
    }


def _error(code: str, message: str) -> ProtocolError:
    """A §5.13 body plus the RFC 9449 §7.1 challenge (and a fresh nonce when one is asked)."""
    description = message.replace('"', "'").replace("\\", "/")
    challenge = f'DPoP error="{code}", error_description="{description}", algs="EdDSA"'
    headers = {"WWW-Authenticate": challenge}
    if code == "use_dpop_nonce" or app_settings.DPOP_NONCE:
        headers["DPoP-Nonce"] = issue_nonce()
    return ProtocolError(code, message, headers=headers)


def invalid(message: str) -> ProtocolError:
    return _error("invalid_dpop_proof", message)


# -- nonces (RFC 9449 §9): stateless, so every worker accepts every other worker's nonce --------


def _nonce_mac(issued: int) -> str:
    return keys.b64url_encode(salted_hmac(_NONCE_SALT, str(issued)).digest()[:18])


def issue_nonce() -> str:
    issued = int(time.time())
    return f"{issued}.{_nonce_mac(issued)}"


def nonce_is_fresh(nonce: Any) -> bool:
    if not isinstance(nonce, str) or len(nonce) > 64:
        return False
    issued_text, _, mac = nonce.partition(".")
    if not issued_text.isdigit() or len(issued_text) > 12:
        return False
    issued = int(issued_text)
    age = time.time() - issued
    if age > app_settings.DPOP_NONCE_LIFETIME or age < -app_settings.CLOCK_SKEW:
        return False
    return hmac.compare_digest(mac.encode(), _nonce_mac(issued).encode())


# -- the request side -------------------------------------------------------------------------


def _access_token(request: HttpRequest) -> tuple[str, bool]:
    """The agent JWT, and whether it came under the ``DPoP`` scheme (RFC 9449 §7.1)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if header and scheme.lower() == "dpop" and token.strip():
        return token.strip(), True
    return bearer_token(request), False


def access_token(request: HttpRequest) -> str:
    """The token under ``Bearer``, or also ``DPoP`` when DPoP is on (for optional auth)."""
    if app_settings.DPOP == "off":
        return bearer_token(request)
    return _access_token(request)[0]


def _parse(proof: str) -> jws.ParsedJWS:
    try:
        parsed = jws.parse(proof)  # EdDSA only, no crit, strict JSON (RFC 9449 §4.3 3-5)
    except ProtocolError as exc:
        raise invalid(f"DPoP proof: {exc.message}") from None
    if not jws.typ_matches(parsed.header, DPOP_TYP):
        raise invalid("DPoP proof typ must be dpop+jwt")
    return parsed


def _normalize_url(url: str) -> tuple[str, str, int | None, str]:
    """Scheme, host, port and path (RFC 3986 §6.2.2-6.2.3); query and fragment dropped."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # e.g. "http://[::1" or a port out of range: matches nothing
        return "", "", -1, ""
    scheme = parts.scheme.lower()
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return scheme, (parts.hostname or "").lower(), port, unquote(parts.path or "/")


def _check_claims(request: HttpRequest, claims: dict[str, Any], token: str) -> float:
    """``htm``, ``htu``, ``iat``, ``jti`` and ``ath`` (RFC 9449 §4.3 8-12); returns ``iat``."""
    if claims.get("htm") != request.method:
        raise invalid("DPoP proof htm does not match the request method")
    htu = claims.get("htu")
    expected = app_settings.ORIGIN + request.path  # never the Host header (spec §8.18)
    if (
        not isinstance(htu, str)
        or len(htu) > 2048
        or (_normalize_url(htu) != _normalize_url(expected))
    ):
        raise invalid("DPoP proof htu does not match the request URL")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise invalid("DPoP proof iat is missing or not a number")
    now = time.time()
    if iat > now + app_settings.CLOCK_SKEW or iat < now - app_settings.DPOP_PROOF_MAX_AGE:
        raise invalid("DPoP proof iat is outside the accepted window")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 256 or "\x00" in jti:
        raise invalid("DPoP proof jti is missing or not a string")
    if "ath" in claims:
        ath = keys.b64url_encode(hashlib.sha256(token.encode("ascii")).digest())
        if not isinstance(claims["ath"], str) or not hmac.compare_digest(
            claims["ath"].encode(), ath.encode()
        ):
            raise invalid("DPoP proof ath does not match the access token")
    return float(iat)


def authenticate(request: HttpRequest, audiences: Collection[str], mode: str) -> VerifiedAgent:
    """Verify the agent JWT and its DPoP proof; ``mode`` is ``AGENTAUTH_DPOP`` (not off)."""
    token, dpop_scheme = _access_token(request)
    # Repeated DPoP headers arrive comma-joined, which no compact JWS parses (RFC 9449 §4.3 1).
    proof = request.META.get("HTTP_DPOP")
    parsed = None if proof is None else _parse(proof)
    if parsed is None and (mode == "required" or dpop_scheme):
        raise invalid("This request needs a DPoP proof")
    if (
        parsed is not None
        and app_settings.DPOP_NONCE
        and not nonce_is_fresh(parsed.claims.get("nonce"))
    ):
        raise _error("use_dpop_nonce", "Retry with the nonce from the DPoP-Nonce header")

    verified = verify_agent_jwt(token, audiences=audiences)

    cnf = verified.claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if parsed is None:
        if cnf is not None:
            # A bound token without its proof is exactly the stolen-token case (RFC 9449 §7.1).
            raise invalid("This agent JWT is DPoP-bound (cnf) and needs a DPoP proof")
        return verified
    if not isinstance(jkt, str):
        raise invalid("An agent JWT used with DPoP must carry cnf.jkt (spec §4.4)")
    try:
        proof_jwk = keys.validate_public_jwk(parsed.header.get("jwk"), field="DPoP jwk")
        parsed.verify(keys.public_key_from_jwk(proof_jwk))
    except ProtocolError as exc:  # includes private members (RFC 9449 §4.3 7)
        raise invalid(f"DPoP proof: {exc.message}") from None
    thumbprint = keys.thumbprint(proof_jwk)
    if not hmac.compare_digest(jkt.encode(), thumbprint.encode()):
        raise invalid("The DPoP proof key does not match the agent JWT's cnf.jkt")
    iat = _check_claims(request, parsed.claims, token)
    _consume(thumbprint, parsed.claims["jti"], iat)
    verified.dpop_jkt = thumbprint
    return verified


def _consume(thumbprint: str, jti: str, iat: float) -> None:
    """Each proof once, in the shared replay store, partitioned by type and key (§11.1)."""
    until = datetime.fromtimestamp(
        iat + app_settings.DPOP_PROOF_MAX_AGE + app_settings.CLOCK_SKEW, tz=UTC
    )
    try:
        replay.consume(DPOP_TYP, thumbprint, jti, until, issued_at=iat)
    except ProtocolError as exc:
        if exc.code == "invalid_jwt":
            raise invalid("DPoP proof has already been used (jti replay)") from None
        raise


def require_for(cap: Capability | None, verified: VerifiedAgent) -> None:
    """A capability declared with ``require_dpop`` refuses calls not proven with DPoP."""
    if cap is not None and cap.require_dpop and verified.dpop_jkt is None:
        raise invalid(f"Capability '{cap.name}' requires a DPoP proof")
