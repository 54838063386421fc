"""Keys by URL (spec §4.1, §4.2): fetch a JWKS through the URL-fetch guard of spec §8.12,
validate it strictly, and cache it (§10.4).

The URL comes from an unauthenticated client, so this module is the server's SSRF boundary:

- **URL shape** (:func:`normalize_url`): ``https`` only (``http`` only with ``DEBUG`` *and*
  ``AGENTAUTH_JWKS_ALLOW_HTTP``), ASCII, no credentials, no fragment.
- **Addresses** (:func:`is_public_address`): the name is resolved first and *every* address it
  resolves to must be public; one private, loopback, link-local, unique-local, multicast,
  unspecified or reserved address, or an IPv4-mapped/-compatible, 6to4 or NAT64 spelling of one,
  refuses the URL. ``AGENTAUTH_JWKS_ALLOWED_NETWORKS`` may admit named blocks (tests, dev).
- **Pinning**: the connection goes to the address that was checked, never to a second lookup;
  TLS still sends the URL's host name (SNI) and verifies the certificate for it.
- **Redirects**: at most three, each target checked like the first URL.
- **Limits**: one deadline for the whole fetch, name resolution included, enforced by a
  watchdog that shuts the socket, and a body cap read incrementally.
- **Content** (:func:`parse_jwks`): a JWK Set of at most ``JWKS_MAX_KEYS`` asymmetric public keys.
- **Cache** (:func:`get_key`): keys are reused for ``JWKS_REFRESH_INTERVAL``; a URL is fetched at
  most once per ``JWKS_MIN_REFRESH_INTERVAL`` whatever asks (an unknown ``kid`` included), so no
  caller can drive a fetch storm; stale keys serve while a refresh fails, up to
  ``JWKS_CACHE_MAX_AGE``.

Every refusal reaches the client as one ``401 invalid_jwt`` message (§5.13 resolution):
the reason is logged, not returned, or the server would tell a caller which internal names
resolve and which ports answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeGuard
from urllib.parse import urljoin, urlsplit, urlunsplit

from django.core.cache import caches
from django.utils.module_loading import import_string

from . import keys, unavailable
from .conf import app_settings
from .errors import ProtocolError, invalid_jwt, invalid_request
from .jws import strict_json_loads

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_REDIRECTS = 3
MAX_URL_LENGTH = 2048
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Required members per asymmetric key type (RFC 7518 §6); ``oct`` is never accepted (§8.12).
_KEY_TYPE_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_KID = re.compile(r"[\x21-\x7e]{1,256}")
FETCH_FAILED = "The JWKS at that URL could not be fetched or is not an acceptable key set"


class FetchError(Exception):
    """Why a fetch or a key set was refused. Logged, never sent to the client."""


# --- URLs and addresses ---------------------------------------------------------------------


def normalize_url(value: Any, field: str) -> str:
    """The canonical form of a JWKS URL, or ``invalid_request``.

    Canonical (lower-case scheme and host, no default port) so that one endpoint has one
    spelling: the host is looked up by it and host and agent URLs must differ (spec §4.2).
    """
    scheme_word = "an http(s)" if app_settings.JWKS_ALLOW_HTTP else "an https"
    message = f"{field} must be {scheme_word} URL without credentials or fragment"
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_URL_LENGTH
        or not value.isascii()
        or any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in value)
    ):
        raise invalid_request(message)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise invalid_request(message) from None
    scheme = parts.scheme.lower()
    schemes = ("https", "http") if app_settings.JWKS_ALLOW_HTTP else ("https",)
    host = parts.hostname
    if (
        scheme not in schemes
        or not host
        or parts.username is not None
        or parts.password is not None
        or "#" in value
    ):
        raise invalid_request(message)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != (443 if scheme == "https" else 80):
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address (spec §8.12 IP filtering).

    IPv6 spellings that reach an IPv4 address (mapped, 6to4, NAT64) are judged by that IPv4
    address; the deprecated IPv4-compatible block (``::/96``) is reserved, so refused.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(embedded)
        if ip.is_site_local:
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
    )


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in app_settings.JWKS_ALLOWED_NETWORKS]


def address_allowed(ip: IPAddress) -> bool:
    return is_public_address(ip) or any(ip in net for net in _allowed_networks())


def _system_resolve(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _resolver() -> Callable[[str, int], list[str]]:
    hook = app_settings.JWKS_RESOLVER
    if hook is None:
        return _system_resolve
    resolver: Callable[[str, int], list[str]] = (
        import_string(hook) if isinstance(hook, str) else hook
    )
    return resolver


#: Name lookups run here so a request waits for one only until its fetch deadline:
#: ``getaddrinfo`` takes no timeout and a slow resolver would otherwise hold the request (and
#: its worker) for as long as the system resolver retries. A lookup still running at the
#: deadline keeps its thread until it returns; with every thread taken, new lookups wait in the
#: queue and fail at their own deadline (closed, never open).
_LOOKUPS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="agentauth-jwks-dns")


def checked_addresses(host: str, port: int, deadline: float) -> list[IPAddress]:
    """Resolve ``host`` once, abandoning the lookup at ``deadline`` (``time.monotonic()``), and
    return its addresses, all of which passed the filter."""
    lookup = _LOOKUPS.submit(_resolver(), host, port)
    try:
        raw = list(lookup.result(timeout=max(0.0, deadline - time.monotonic())))
    except FutureTimeout:  # listed first: it is an OSError too
        lookup.cancel()
        raise FetchError(f"resolving {host!r} did not finish before the deadline") from None
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc}") from exc
    if not raw:
        raise FetchError(f"{host!r} resolved to no address")
    checked: list[IPAddress] = []
    for text in raw:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            ip = None
        if ip is None or getattr(ip, "scope_id", None):  # a zone index names a local link
            raise FetchError(f"{host!r} resolved to an unusable address {text!r}")
        if not address_allowed(ip):
            raise FetchError(f"{host!r} resolves to the non-public address {ip}")
        checked.append(ip)
    return list(dict.fromkeys(checked))


# --- the pinned fetch -----------------------------------------------------------------------


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address; ``Host`` still names the URL's host."""

    def __init__(self, host: str, port: int, ip: IPAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.pinned_ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self.pinned_ip), self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to the checked address and verifies the certificate for the URL's host name."""

    def __init__(
        self, host: str, port: int, ip: IPAddress, timeout: float, tls: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=tls)
        self.pinned_ip = ip
        self.tls = tls

    def connect(self) -> None:
        raw = socket.create_connection((str(self.pinned_ip), self.port), self.timeout)
        # Handshake after ``self.sock`` is set, so the watchdog can cut a stalled handshake too.
        self.sock = self.tls.wrap_socket(
            raw, server_hostname=self.host, do_handshake_on_connect=False
        )
        self.sock.do_handshake()


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=app_settings.JWKS_CA_FILE)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _cut(conn: http.client.HTTPConnection) -> None:
    """Watchdog: shut the socket down so a blocked read returns at the deadline."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _read_capped(response: http.client.HTTPResponse, deadline: float) -> bytes:
    limit = app_settings.JWKS_MAX_BYTES
    length = response.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise FetchError(f"declared body of {length} bytes exceeds {limit}")
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise FetchError(f"unrequested content encoding {encoding!r}")
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchError("deadline passed while reading the body")
        chunk = response.read1(16384)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise FetchError(f"body exceeds {limit} bytes")
        chunks.append(chunk)


def _request_once(url: str, deadline: float) -> tuple[int, str | None, bytes]:
    """One GET, pinned to a checked address: ``(status, location, body)``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    last_error: Exception | None = None
    for ip in checked_addresses(host, port, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        conn: http.client.HTTPConnection = (
            _PinnedHTTPSConnection(host, port, ip, remaining, _tls_context())
            if https
            else _PinnedHTTPConnection(host, port, ip, remaining)
        )
        watchdog = threading.Timer(remaining, _cut, args=(conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            try:
                conn.connect()
            except OSError as exc:  # refused, unreachable, timed out, TLS failure: next address
                last_error = exc
                continue
            conn.request(
                "GET",
                target,
                headers={
                    "Accept": "application/jwk-set+json, application/json",
                    "Accept-Encoding": "identity",
                    "User-Agent": "django-agentauth",
                    "Connection": "close",
                },
            )
            response = conn.getresponse()
            if response.status in _REDIRECT_STATUSES:
                return response.status, response.getheader("Location"), b""
            if response.status != 200:
                return response.status, None, b""
            return 200, None, _read_capped(response, deadline)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from exc
        finally:
            # Cancel and join before closing: the watchdog never touches a closed socket.
            watchdog.cancel()
            watchdog.join()
            conn.close()
    raise FetchError(f"could not connect to {host!r} before the deadline: {last_error}")


def fetch(url: str) -> bytes:
    """The body at ``url`` (already normalized), fetched under every rule of spec §8.12."""
    deadline = time.monotonic() + app_settings.JWKS_FETCH_TIMEOUT
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _request_once(current, deadline)
        if status == 200:
            return body
        if status not in _REDIRECT_STATUSES:
            raise FetchError(f"{current}: HTTP {status}")
        if not location:
            raise FetchError(f"{current}: redirect without Location")
        try:
            current = normalize_url(urljoin(current, location), "redirect")
        except ProtocolError:
            raise FetchError(f"{current}: redirect to a refused URL {location!r}") from None
    raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")


# --- content --------------------------------------------------------------------------------


def _usable_for_signatures(jwk: dict[str, Any]) -> bool:
    use, ops = jwk.get("use"), jwk.get("key_ops")
    if use is not None and use != "sig":
        return False
    return ops is None or (isinstance(ops, list) and "verify" in ops)


def parse_jwks(body: bytes) -> dict[str, dict[str, str]]:
    """Validate a JWK Set (spec §8.12) and return its Ed25519 keys by ``kid``.

    The whole set is refused if any member is malformed, symmetric, private or of an unknown
    type, or if two keys share a ``kid``: a set that is wrong in part is not trusted in part.
    RSA and EC keys may sit beside the Ed25519 ones (a shared identity service) but are never
    used (§4.1: this protocol signs with Ed25519 only).
    """
    try:
        document = strict_json_loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise FetchError("body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchError("body is not a JWK Set")
    members = document["keys"]
    if not members:
        raise FetchError("the JWK Set is empty")
    if len(members) > app_settings.JWKS_MAX_KEYS:
        raise FetchError(f"the JWK Set has more than {app_settings.JWKS_MAX_KEYS} keys")
    usable: dict[str, dict[str, str]] = {}
    kids: set[str] = set()
    for jwk in members:
        if not isinstance(jwk, dict):
            raise FetchError("a JWK Set member is not an object")
        kty = jwk.get("kty")
        if not isinstance(kty, str) or kty not in _KEY_TYPE_MEMBERS:
            raise FetchError(f"unknown key type {kty!r}")
        if _PRIVATE_MEMBERS & jwk.keys():
            raise FetchError("the JWK Set holds private key material")
        if not all(isinstance(jwk.get(m), str) and jwk[m] for m in _KEY_TYPE_MEMBERS[kty]):
            raise FetchError(f"a {kty} key lacks its required members")
        kid = jwk.get("kid")
        if kid is not None:
            if not isinstance(kid, str) or not _KID.fullmatch(kid):
                raise FetchError("a kid is not a short printable string")
            if kid in kids:
                raise FetchError(f"kid {kid!r} appears twice")
            kids.add(kid)
        if kty != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        try:
            canonical = keys.validate_public_jwk(jwk, field="JWKS key")
        except ProtocolError as exc:
            raise FetchError(exc.message) from None
        if kid is not None and _usable_for_signatures(jwk):
            usable[kid] = canonical
    if not usable:
        raise FetchError("the JWK Set has no Ed25519 signing key with a kid")
    return usable


def valid_kid(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(_KID.fullmatch(value))


# --- the cache ------------------------------------------------------------------------------


def _cache_key(kind: str, url: str) -> str:
    return f"agentauth:jwks:{kind}:{hashlib.sha256(url.encode()).hexdigest()}"


def _unavailable(exc: Exception) -> ProtocolError:
    return unavailable.protocol_error(exc, "The key cache is unavailable; the request was refused")


def _entry(url: str, *, refresh: bool) -> dict[str, Any] | None:
    """The cached entry for ``url``, refreshed first when ``refresh`` and the rate allows."""
    cache = caches[app_settings.JWKS_CACHE_ALIAS]
    try:
        entry: dict[str, Any] | None = cache.get(_cache_key("keys", url))
        if not refresh:
            return entry
        # One fetch per URL per interval across all processes: ``add`` is atomic.
        if not cache.add(_cache_key("fetch", url), 1, app_settings.JWKS_MIN_REFRESH_INTERVAL):
            return entry
    except Exception as exc:
        raise _unavailable(exc) from exc
    try:
        found = parse_jwks(fetch(url))
    except FetchError as exc:
        logger.warning("agentauth: JWKS %s refused: %s", url, exc)
        return entry
    entry = {"keys": found, "fetched_at": time.time()}
    try:
        cache.set(_cache_key("keys", url), entry, app_settings.JWKS_CACHE_MAX_AGE)
    except Exception as exc:
        raise _unavailable(exc) from exc
    return entry


def _usable(entry: dict[str, Any] | None, *, max_age: int) -> dict[str, dict[str, str]] | None:
    if entry is None or time.time() - float(entry["fetched_at"]) > max_age:
        return None
    found: dict[str, dict[str, str]] = entry["keys"]
    return found


def get_key(url: str, kid: str) -> dict[str, str]:
    """The Ed25519 key ``kid`` at ``url`` (normalized), as a canonical JWK, or ``invalid_jwt``.

    Fresh cached keys are used as they are; otherwise (stale entry, unknown ``kid``) the URL is
    fetched again if it was not fetched within the minimum interval.
    """
    fresh = _usable(_entry(url, refresh=False), max_age=app_settings.JWKS_REFRESH_INTERVAL)
    if fresh is not None and kid in fresh:
        return fresh[kid]
    found = _usable(_entry(url, refresh=True), max_age=app_settings.JWKS_CACHE_MAX_AGE)
    if found is None:
        raise invalid_jwt(FETCH_FAILED)
    if kid not in found:
        raise invalid_jwt("The JWKS has no usable Ed25519 key with the JWT's kid")
    return found[kid]


def has_thumbprint(url: str, thumbprint: str) -> bool:
    """Whether a key at ``url`` has this RFC 7638 thumbprint (the agent-JWT ``iss`` of a host
    that rotated its JWKS key before any host JWT told the server, spec §4.5 step 4, §8.7)."""
    for refresh in (False, True):
        found = _usable(_entry(url, refresh=refresh), max_age=app_settings.JWKS_CACHE_MAX_AGE)
        if found and any(keys.thumbprint(k) == thumbprint for k in found.values()):
            return True
    return False


def agent_identity(url: str, kid: str) -> str:
    """A stable 43-character registration key for an agent whose key lives at ``url``/``kid``
    (§4.2: such an agent is identified by URL and kid, not by a key that rotates).
    The domain prefix keeps it from ever equalling a real key thumbprint."""
    digest = hashlib.sha256(f"agentauth-jwks-agent\x00{url}\x00{kid}".encode()).digest()
    return keys.b64url_encode(digest)
