"""URL rules the client applies before it sends a JWT anywhere (spec §5.1, §8.12).

Kept apart from the HTTP code because they are policy, not transport: which discovery endpoint
values are trusted, which ``status_url`` may receive an agent JWT, and when plain ``http://`` is
tolerated (only on loopback, unless the caller opts in, so local development and test servers work
without weakening real deployments).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .errors import ClientError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` with the default port filled in, as §8.12 compares origins."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        raise ClientError("untrusted_url", f"URL has an invalid port: {url!r}") from None
    return scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme, 0)


def same_origin(a: str, b: str) -> bool:
    return origin(a) == origin(b)


def is_absolute(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() in _DEFAULT_PORTS and bool(parts.netloc)


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_transport(url: str, *, allow_insecure_http: bool = False) -> str:
    """Refuse URLs that are not absolute ``https`` (plain ``http`` only on loopback or opt-in)."""
    if not is_absolute(url):
        raise ClientError("untrusted_url", f"not an absolute http(s) URL: {url!r}")
    scheme = urlsplit(url).scheme.lower()
    if scheme != "https" and not (allow_insecure_http or is_loopback(url)):
        raise ClientError("untrusted_url", f"refusing non-HTTPS URL: {url!r}")
    return url


def resolve_endpoint(issuer: str, value: str) -> str:
    """Resolve a discovery ``endpoints`` value.

    §5.1 says the values are paths relative to ``issuer`` (joined by plain concatenation, as in
    ``{issuer}{endpoints.execute}``); deployed servers also publish absolute URLs. Both work.
    """
    if is_absolute(value):
        return value
    if not value.startswith("/"):
        value = "/" + value
    return issuer.rstrip("/") + value


def require_same_origin(url: str, issuer: str, *, what: str = "status_url") -> str:
    """§8.12: a server-returned polling URL must share the issuer's origin.

    Otherwise a malicious or compromised server could make the client send fresh agent JWTs to
    a third party or probe the client's own network.
    """
    if not is_absolute(url):
        raise ClientError("untrusted_url", f"{what} must be an absolute URL: {url!r}")
    if not same_origin(url, issuer):
        raise ClientError(
            "untrusted_url",
            f"{what} {url!r} is not on the issuer's origin {issuer!r}; refusing to poll it",
        )
    return url
