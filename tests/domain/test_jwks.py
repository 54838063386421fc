"""The JWKS fetch guard (spec §8.12) attacked over real sockets.

A TLS server runs in-process on 127.0.0.1 with a certificate from a CA made for this module.
Names resolve through ``tests.jwks_support.resolve`` (a table, never DNS). Tests that need the
server admit exactly ``127.0.0.1/32`` through ``AGENTAUTH_JWKS_ALLOWED_NETWORKS``, standing in
for "a public address"; every attack target lies outside it, and the address-class tests run with
the allowlist empty. Timing is asserted only as a generous bound ("returns, refused, well before
the slow server would have finished").
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from agentauth import jwks
from agentauth.errors import ProtocolError
from agentauth.testing import Keypair
from tests.jwks_support import (
    CALLS,
    NAMES,
    JwksServer,
    Pki,
    Route,
    jwks_document,
    make_pki,
)

KEY = Keypair.generate()
OTHER = Keypair.generate()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ["jwks.test", "agent-keys.test"])


@pytest.fixture(scope="module")
def https_server(pki: Pki) -> Iterator[JwksServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    server = JwksServer(context)
    yield server
    server.close()


@pytest.fixture
def srv(https_server: JwksServer, settings: Any, pki: Pki) -> Iterator[JwksServer]:
    https_server.routes.clear()
    https_server.hits.clear()
    settings.AGENTAUTH_JWKS_CA_FILE = str(pki.ca_file)
    settings.AGENTAUTH_JWKS_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    NAMES.clear()
    CALLS.clear()
    NAMES.update({"jwks.test": ["127.0.0.1"], "agent-keys.test": ["127.0.0.1"]})
    caches["default"].clear()
    yield https_server
    NAMES.clear()
    caches["default"].clear()


def url(server: JwksServer, path: str, host: str = "jwks.test") -> str:
    return f"https://{host}:{server.port}{path}"


def serve_keys(server: JwksServer, path: str = "/jwks", *entries: tuple[str, Keypair]) -> str:
    pairs = entries or (("k1", KEY),)
    server.serve_json(path, jwks_document(*((kid, k.public_jwk) for kid, k in pairs)))
    return url(server, path)


# --- the happy path -------------------------------------------------------------------------


def test_key_is_fetched_and_selected_by_kid(srv: JwksServer) -> None:
    target = serve_keys(srv, "/jwks", ("k1", KEY), ("k2", OTHER))
    assert jwks.get_key(target, "k2") == OTHER.public_jwk
    assert jwks.get_key(target, "k1") == KEY.public_jwk
    # One fetch for both keys, and Host named the URL's host although we dialled an address.
    assert [h.host_header for h in srv.hits] == [f"jwks.test:{srv.port}"]


# --- addresses ------------------------------------------------------------------------------

BLOCKED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "fec0::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",
    "::8.8.8.8",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::1",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_every_non_public_address_class_is_refused(
    srv: JwksServer, settings: Any, address: str
) -> None:
    settings.AGENTAUTH_JWKS_ALLOWED_NETWORKS = []
    NAMES["evil.test"] = [address]
    with pytest.raises(jwks.FetchError, match="non-public"):
        jwks.fetch(f"https://evil.test:{srv.port}/jwks")
    assert srv.hits == []


@pytest.mark.parametrize(
    "literal", ["127.0.0.1", "169.254.169.254", "0.0.0.0", "[::1]", "[::ffff:127.0.0.1]"]
)
def test_literal_address_urls_are_checked_too(srv: JwksServer, settings: Any, literal: str) -> None:
    settings.AGENTAUTH_JWKS_ALLOWED_NETWORKS = []
    with pytest.raises(jwks.FetchError, match="non-public"):
        jwks.fetch(jwks.normalize_url(f"https://{literal}:{srv.port}/jwks", "u"))
    assert srv.hits == []


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "2002:808:808::",
        "64:ff9b::808:808",
    ],
)
def test_public_addresses_pass_the_filter(address: str) -> None:
    # Only the predicate: nothing connects to these.
    import ipaddress

    assert jwks.is_public_address(ipaddress.ip_address(address))


def test_every_resolved_address_must_pass(srv: JwksServer) -> None:
    serve_keys(srv)
    NAMES["jwks.test"] = ["127.0.0.1", "10.0.0.1"]
    with pytest.raises(jwks.FetchError, match="non-public"):
        jwks.fetch(url(srv, "/jwks"))
    assert srv.hits == []


def test_unresolvable_and_garbage_answers_are_refused(srv: JwksServer) -> None:
    with pytest.raises(jwks.FetchError, match="cannot resolve"):
        jwks.fetch(url(srv, "/jwks", host="nowhere.test"))
    for garbage in ("not-an-address", "2606:4700::1%eth0"):
        NAMES["odd.test"] = [garbage]
        with pytest.raises(jwks.FetchError, match="unusable"):
            jwks.fetch(url(srv, "/jwks", host="odd.test"))
    NAMES["empty.test"] = []
    with pytest.raises(jwks.FetchError, match="no address"):
        jwks.fetch(url(srv, "/jwks", host="empty.test"))


def test_dns_rebinding_cannot_move_the_connection(srv: JwksServer) -> None:
    # First answer allowed, every later one a different (non-admitted) loopback address where
    # nothing listens. A guard that looked the name up again to connect would fail here.
    serve_keys(srv)
    answers = iter([["127.0.0.1"]])
    NAMES["jwks.test"] = lambda: next(answers, ["127.0.0.2"])
    body = jwks.fetch(url(srv, "/jwks"))
    assert json.loads(body)["keys"][0]["kid"] == "k1"
    assert CALLS == ["jwks.test"]
    assert srv.count("/jwks") == 1
    # The rebound answer is checked on the next fetch and refused before any connection.
    with pytest.raises(jwks.FetchError, match="non-public"):
        jwks.fetch(url(srv, "/jwks"))
    assert srv.count("/jwks") == 1


def test_rebinding_to_private_first_is_refused(srv: JwksServer) -> None:
    serve_keys(srv)
    answers = iter([["10.0.0.9"]])
    NAMES["jwks.test"] = lambda: next(answers, ["127.0.0.1"])
    with pytest.raises(jwks.FetchError, match="non-public"):
        jwks.fetch(url(srv, "/jwks"))
    assert srv.hits == []


# --- TLS ------------------------------------------------------------------------------------


def test_certificate_must_name_the_url_host(srv: JwksServer) -> None:
    serve_keys(srv)
    NAMES["impostor.test"] = ["127.0.0.1"]  # reaches our server, whose certificate lacks it
    with pytest.raises(jwks.FetchError, match="could not connect"):
        jwks.fetch(url(srv, "/jwks", host="impostor.test"))
    assert srv.hits == []


def test_certificate_must_chain_to_a_trusted_ca(srv: JwksServer, settings: Any) -> None:
    serve_keys(srv)
    settings.AGENTAUTH_JWKS_CA_FILE = None  # system trust does not know the test CA
    with pytest.raises(jwks.FetchError, match="could not connect"):
        jwks.fetch(url(srv, "/jwks"))
    assert srv.hits == []


# --- redirects ------------------------------------------------------------------------------


def _redirect(server: JwksServer, path: str, location: str, status: int = 302) -> None:
    server.routes[path] = Route(status=status, headers={"Location": location})


def test_up_to_three_redirects_are_followed(srv: JwksServer) -> None:
    serve_keys(srv, "/final")
    _redirect(srv, "/r1", "/r2", 301)
    _redirect(srv, "/r2", url(srv, "/r3", host="agent-keys.test"), 307)
    _redirect(srv, "/r3", "/final", 308)
    assert json.loads(jwks.fetch(url(srv, "/r1")))["keys"]
    assert [h.path for h in srv.hits] == ["/r1", "/r2", "/r3", "/final"]


def test_a_fourth_redirect_is_refused(srv: JwksServer) -> None:
    serve_keys(srv, "/final")
    for i in range(1, 5):
        _redirect(srv, f"/r{i}", f"/r{i + 1}" if i < 4 else "/final")
    with pytest.raises(jwks.FetchError, match="more than 3 redirects"):
        jwks.fetch(url(srv, "/r1"))
    assert srv.count("/final") == 0


def test_redirect_loop_ends(srv: JwksServer) -> None:
    _redirect(srv, "/loop", "/loop")
    with pytest.raises(jwks.FetchError, match="redirects"):
        jwks.fetch(url(srv, "/loop"))
    assert srv.count("/loop") == 4


@pytest.mark.parametrize(
    "location",
    [
        "https://internal.test/jwks",  # a name that resolves to a private address
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:127.0.0.1]/jwks",
        "https://127.0.0.2/jwks",
    ],
)
def test_redirect_targets_are_checked_like_the_first_url(srv: JwksServer, location: str) -> None:
    NAMES["internal.test"] = ["10.0.0.7"]
    _redirect(srv, "/hop", location)
    with pytest.raises(jwks.FetchError, match="non-public"):
        jwks.fetch(url(srv, "/hop"))
    assert [h.path for h in srv.hits] == ["/hop"]


@pytest.mark.parametrize(
    "location", ["http://jwks.test/jwks", "ftp://jwks.test/jwks", "https://u:p@jwks.test/"]
)
def test_redirects_to_refused_schemes_or_credentials(srv: JwksServer, location: str) -> None:
    _redirect(srv, "/hop", location)
    with pytest.raises(jwks.FetchError, match="refused URL"):
        jwks.fetch(url(srv, "/hop"))


def test_redirect_without_location_and_error_statuses(srv: JwksServer) -> None:
    srv.routes["/nowhere"] = Route(status=302)
    with pytest.raises(jwks.FetchError, match="without Location"):
        jwks.fetch(url(srv, "/nowhere"))
    with pytest.raises(jwks.FetchError, match="HTTP 404"):
        jwks.fetch(url(srv, "/missing"))


# --- size and time --------------------------------------------------------------------------


def test_declared_oversized_body_is_refused(srv: JwksServer, settings: Any) -> None:
    settings.AGENTAUTH_JWKS_MAX_BYTES = 1024
    srv.routes["/big"] = Route(body=b" " * 5000)
    with pytest.raises(jwks.FetchError, match="exceeds 1024"):
        jwks.fetch(url(srv, "/big"))


def test_undeclared_oversized_body_is_cut_while_streaming(srv: JwksServer) -> None:
    # No Content-Length: the cap is enforced on what arrives (default 64 KiB).
    srv.routes["/big"] = Route(body=b" " * (3 * 1024 * 1024), unsized=True)
    with pytest.raises(jwks.FetchError, match="body exceeds 65536"):
        jwks.fetch(url(srv, "/big"))


def test_compressed_body_is_refused(srv: JwksServer) -> None:
    srv.routes["/gz"] = Route(body=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    with pytest.raises(jwks.FetchError, match="encoding"):
        jwks.fetch(url(srv, "/gz"))


@pytest.mark.parametrize(
    "route",
    [
        Route(body=b'{"keys": []}' + b" " * 200, drip=True, delay=0.2),  # ~40 s to finish
        Route(body=b"{}", delay=60),  # headers never come in time
        Route(drip_headers=True, delay=0.2),  # a header line that never ends
    ],
    ids=["dripping body", "stalled headers", "dripping headers"],
)
def test_slow_servers_are_cut_at_the_deadline(srv: JwksServer, settings: Any, route: Route) -> None:
    settings.AGENTAUTH_JWKS_FETCH_TIMEOUT = 1.0
    srv.routes["/slow"] = route
    started = time.monotonic()
    with pytest.raises(jwks.FetchError):
        jwks.fetch(url(srv, "/slow"))
    assert time.monotonic() - started < 15


def test_stalled_tls_handshake_is_cut_at_the_deadline(srv: JwksServer, settings: Any) -> None:
    settings.AGENTAUTH_JWKS_FETCH_TIMEOUT = 1.0
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # the kernel accepts; nobody ever speaks TLS
    try:
        started = time.monotonic()
        with pytest.raises(jwks.FetchError):
            jwks.fetch(f"https://jwks.test:{listener.getsockname()[1]}/jwks")
        assert time.monotonic() - started < 15
    finally:
        listener.close()


def test_a_hanging_name_lookup_is_abandoned_at_the_deadline(settings: Any) -> None:
    # getaddrinfo has no timeout: a resolver that never answers must not hold the request
    # past its fetch deadline. The fetch returning while the lookup is still blocked is the
    # proof (no timing assertion); the lookup is released afterwards.
    release = threading.Event()
    started = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        started.set()
        release.wait(30)
        return ["127.0.0.1"]

    settings.AGENTAUTH_JWKS_RESOLVER = hanging
    settings.AGENTAUTH_JWKS_FETCH_TIMEOUT = 0.5
    try:
        with pytest.raises(jwks.FetchError, match="before the deadline"):
            jwks.fetch("https://jwks.test/jwks")
        assert started.is_set() and not release.is_set()
    finally:
        release.set()


# --- content --------------------------------------------------------------------------------

ED = KEY.public_jwk


def _doc(*members: Any) -> bytes:
    return json.dumps({"keys": list(members)}).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b'{"keys": [], "keys": []}',
        b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": NaN}]}',
        b"[]",
        b'{"keys": {}}',
        _doc(),
        _doc("not an object"),
        _doc({"kty": "oct", "k": "c2VjcmV0", "kid": "s"}, {**ED, "kid": "a"}),
        _doc({"kty": "XYZ", "kid": "x"}, {**ED, "kid": "a"}),
        _doc({"kid": "x"}, {**ED, "kid": "a"}),
        _doc({"kty": "RSA", "n": "AQAB", "kid": "r"}, {**ED, "kid": "a"}),
        _doc({"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB", "kid": "r"}, {**ED, "kid": "a"}),
        _doc({**ED, "kid": "a", "d": "AAAA"}),
        _doc({**ED, "kid": "a"}, {**OTHER.public_jwk, "kid": "a"}),
        _doc({**ED, "kid": ""}),
        _doc({**ED, "kid": 7}),
        _doc({**ED, "kid": "a", "x": "short"}),
        _doc({**ED, "kid": "a", "x5c": ["MII..."]}),
        _doc({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"}),
        _doc({"kty": "OKP", "crv": "Ed448", "x": "AAAA", "kid": "e"}),
        _doc(ED),
        _doc({**ED, "kid": "a", "use": "enc"}),
        _doc(*({**Keypair.generate().public_jwk, "kid": f"k{i}"} for i in range(21))),
    ],
    ids=[
        "html",
        "duplicate member",
        "NaN",
        "array",
        "keys not a list",
        "empty set",
        "member not an object",
        "symmetric key beside a good one",
        "unknown kty",
        "missing kty",
        "RSA without e",
        "private RSA",
        "private Ed25519",
        "duplicate kid",
        "empty kid",
        "numeric kid",
        "short x",
        "unknown member",
        "RSA only",
        "Ed448 only",
        "Ed25519 without kid",
        "encryption key only",
        "21 keys",
    ],
)
def test_bad_key_sets_are_refused_whole(body: bytes) -> None:
    with pytest.raises(jwks.FetchError):
        jwks.parse_jwks(body)


def test_other_asymmetric_keys_may_sit_beside_but_are_never_used() -> None:
    rsa = {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"}
    ec = {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "e"}
    found = jwks.parse_jwks(_doc(rsa, ec, {**ED, "kid": "a", "key_ops": ["verify"]}))
    assert found == {"a": ED}


def test_a_refused_document_is_invalid_jwt_at_the_protocol_edge(srv: JwksServer) -> None:
    srv.routes["/html"] = Route(body=b"<html></html>")
    with pytest.raises(ProtocolError) as caught:
        jwks.get_key(url(srv, "/html"), "k1")
    assert (caught.value.status, caught.value.code) == (401, "invalid_jwt")
    # The reason is logged, not returned: no network detail reaches the caller.
    assert caught.value.message == jwks.FETCH_FAILED


# --- the cache ------------------------------------------------------------------------------


def test_unknown_kids_cannot_force_a_fetch_storm(srv: JwksServer, settings: Any) -> None:
    settings.AGENTAUTH_JWKS_MIN_REFRESH_INTERVAL = 1
    target = serve_keys(srv)
    jwks.get_key(target, "k1")
    for i in range(25):
        with pytest.raises(ProtocolError, match="kid"):
            jwks.get_key(target, f"nope-{i}")
    assert srv.count("/jwks") == 1
    # Once the interval has passed, a miss may fetch again: a rotated-in key is found.
    serve_keys(srv, "/jwks", ("k1", KEY), ("k2", OTHER))
    time.sleep(1.2)
    assert jwks.get_key(target, "k2") == OTHER.public_jwk
    assert srv.count("/jwks") == 2


def test_failed_fetches_are_rate_limited_too(srv: JwksServer) -> None:
    srv.routes["/down"] = Route(status=503)
    for _ in range(10):
        with pytest.raises(ProtocolError):
            jwks.get_key(url(srv, "/down"), "k1")
    assert srv.count("/down") == 1


def test_stale_keys_serve_while_a_refresh_fails(srv: JwksServer, settings: Any) -> None:
    settings.AGENTAUTH_JWKS_REFRESH_INTERVAL = 0
    settings.AGENTAUTH_JWKS_MIN_REFRESH_INTERVAL = 1
    target = serve_keys(srv)
    jwks.get_key(target, "k1")
    srv.routes["/jwks"] = Route(status=500)
    time.sleep(1.2)
    assert jwks.get_key(target, "k1") == KEY.public_jwk  # refresh failed: cached key serves
    assert srv.count("/jwks") == 2
    settings.AGENTAUTH_JWKS_CACHE_MAX_AGE = 0
    with pytest.raises(ProtocolError):
        jwks.get_key(target, "k1")  # ... but never past the maximum age


# --- URL rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        5,
        "",
        "jwks.test/x",
        "ftp://jwks.test/x",
        "http://jwks.test/x",
        "https://user:pw@jwks.test/x",
        "https://jwks.test/x#frag",
        "https://jwks.test/x y",
        "https://jwks.tést/x",
        "https://jwks.test:99999/x",
        "https:///x",
        "https://jwks.test/" + "a" * 2048,
    ],
)
def test_url_shape_is_refused(settings: Any, value: Any) -> None:
    settings.AGENTAUTH_JWKS_ALLOW_HTTP = True  # without DEBUG it changes nothing
    with pytest.raises(ProtocolError) as caught:
        jwks.normalize_url(value, "host_jwks_url")
    assert caught.value.code == "invalid_request"


def test_urls_have_one_spelling() -> None:
    assert jwks.normalize_url("HTTPS://JWKS.Test:443/k?a=1", "u") == "https://jwks.test/k?a=1"
    assert jwks.normalize_url("https://jwks.test:8443", "u") == "https://jwks.test:8443/"


def test_http_only_with_debug_and_the_setting(settings: Any) -> None:
    settings.DEBUG = True
    with pytest.raises(ProtocolError):
        jwks.normalize_url("http://jwks.test/k", "u")
    settings.AGENTAUTH_JWKS_ALLOW_HTTP = True
    assert jwks.normalize_url("http://jwks.test/k", "u") == "http://jwks.test/k"


def test_plain_http_fetch_in_debug(srv: JwksServer, settings: Any) -> None:
    plain = JwksServer(None)
    try:
        settings.DEBUG = True
        settings.AGENTAUTH_JWKS_ALLOW_HTTP = True
        serve_keys(plain)
        target = jwks.normalize_url(f"http://jwks.test:{plain.port}/jwks", "u")
        assert jwks.get_key(target, "k1") == KEY.public_jwk
    finally:
        plain.close()


# --- system checks --------------------------------------------------------------------------


def test_allowlist_outside_debug_is_flagged(settings: Any) -> None:
    from agentauth.checks import check_jwks_fetching

    settings.AGENTAUTH_JWKS_ALLOWED_NETWORKS = []
    assert check_jwks_fetching() == []
    settings.AGENTAUTH_JWKS_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    assert [m.id for m in check_jwks_fetching()] == ["agentauth.W010"]
    settings.DEBUG = True
    assert check_jwks_fetching() == []
    settings.AGENTAUTH_JWKS_ALLOWED_NETWORKS = ["not a network"]
    assert [m.id for m in check_jwks_fetching()] == ["agentauth.E041"]
    with pytest.raises(SystemCheckError):
        call_command("check")
