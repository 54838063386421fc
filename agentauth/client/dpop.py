"""DPoP proofs for agent-JWT requests (spec §4.4; RFC 9449 §4.2, §7.1, §9).

The proof key is the agent's own key. RFC 9449 allows any key the client holds; this one is
already stored with the connection (and rotated with it), so nothing new must be persisted, and
``cnf.jkt`` is simply the agent's thumbprint. The binding still adds what the bare JWT lacks: a
proof is tied to one method and URL, used once, and (``ath``) to one agent JWT.

The client uses DPoP only when discovery lists ``EdDSA`` in ``dpop_signing_alg_values_supported``;
otherwise it sends plain Bearer tokens, as before.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt

from . import http
from .identity import Keypair
from .urls import origin

DPOP_TYP = "dpop+jwt"


def advertised(discovery: Mapping[str, Any]) -> bool:
    """Whether the server speaks DPoP with a key type this client has (RFC 9449 §5.1)."""
    algs = discovery.get("dpop_signing_alg_values_supported")
    return isinstance(algs, list) and "EdDSA" in algs


def htu(url: str) -> str:
    """The request URL without query and fragment (RFC 9449 §4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


def access_token_hash(token: str) -> str:
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_proof(
    key: Keypair,
    method: str,
    url: str,
    *,
    access_token: str | None = None,
    nonce: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    extra_headers: Mapping[str, Any] | None = None,
) -> str:
    """A ``dpop+jwt`` proof for one request. ``extra_*`` are merged last; ``None`` removes a
    member, so tests forge bad proofs with the same code real clients use."""
    claims: dict[str, Any] = {
        "jti": str(uuid.uuid4()),
        "htm": method.upper(),
        "htu": htu(url),
        "iat": int(time.time()),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    headers: dict[str, Any] = {"typ": DPOP_TYP, "alg": "EdDSA", "jwk": key.public_jwk}
    claims = {k: v for k, v in {**claims, **(extra_claims or {})}.items() if v is not None}
    headers = {k: v for k, v in {**headers, **(extra_headers or {})}.items() if v is not None}
    headers.setdefault("typ", None)  # PyJWT's default typ is dropped when the test removes it
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers=headers)


def cnf(key: Keypair) -> dict[str, Any]:
    """The ``cnf`` claim binding an agent JWT to ``key`` (RFC 9449 §6.1)."""
    return {"jkt": key.thumbprint}


def _wants_nonce(resp: http.Response) -> bool:
    body = resp.body
    return (
        resp.status in (400, 401)
        and isinstance(body, dict)
        and body.get("error") == "use_dpop_nonce"
        and bool(resp.headers.get("dpop-nonce"))
    )


class DPoPSession:
    """Sends agent-JWT requests with proofs and remembers the server's latest nonce per origin.

    A ``use_dpop_nonce`` answer is retried once with the nonce it carries and a freshly signed
    agent JWT (``token`` is a factory: a refused request may have spent the first one's ``jti``).
    """

    def __init__(self) -> None:
        self.nonces: dict[tuple[str, str, int], str] = {}

    def request(
        self,
        key: Keypair,
        method: str,
        url: str,
        token: Callable[[], str],
        **kwargs: Any,
    ) -> http.Response:
        where = origin(url)
        resp: http.Response | None = None
        for _attempt in range(2):
            access_token = token()
            proof = make_proof(
                key, method, url, access_token=access_token, nonce=self.nonces.get(where)
            )
            headers = {**kwargs.pop("headers", {}), "DPoP": proof}
            resp = http.request(
                method, url, token=access_token, scheme="DPoP", headers=headers, **kwargs
            )
            fresh = resp.headers.get("dpop-nonce")
            if fresh:
                self.nonces[where] = fresh
            if not _wants_nonce(resp):
                return resp
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "DPoP"}
        assert resp is not None
        return resp
