"""Fuzzing the protocol endpoints: malformed input is a spec-shaped 4xx, never a 5xx (spec §5.13).

Two sections. The deep one drives the six discovery and lifecycle endpoints with oracles: every
endpoint below gets at least ``MIN_REQUESTS`` generated requests from each hypothesis test that
targets it (``fuzz`` counts the requests that actually reached the endpoint and fails the test if
there were fewer). The broad one (at the end) throws garbage, arbitrary JSON, wrong types,
unknown fields, wrong content types, garbage or forged JWTs and valid JWTs with fuzzed bodies at
every other protocol endpoint. ``max_examples`` comes from the hypothesis profile (conftest.py).

Every reply is checked by ``check_reply``: status below 500, ``application/json``, a JSON object,
and for errors ``{"error": <snake_case>, "message": <non-empty>}`` plus the headers the status
calls for (``Allow`` on 405, ``WWW-Authenticate`` on 401, ``Retry-After`` on 429).

Each hypothesis example runs inside a savepoint that is rolled back, so an example that succeeds
(a registration, a revocation, a host revoking itself) never changes what the next one sees, and
the ``jti`` replay records of one example never collide with another's.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from django.db import transaction
from django.test import Client
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agentauth.client.tokens import sign_agent_jwt, sign_host_jwt
from agentauth.testing import Keypair, agent_token, make_agent, make_host

pytestmark = pytest.mark.django_db

ISSUER = "http://testserver/api/auth"
BODY_LIMIT = 64 * 1024
#: Every example of the active hypothesis profile must reach its endpoint (see conftest.py).
MIN_REQUESTS = settings().max_examples
ERROR_CODE = re.compile(r"[a-z_]+")

#: The registered host signs with HOST_KEY; STRANGER_KEY is a real key no host uses.
HOST_KEY = Keypair.generate()
STRANGER_KEY = Keypair.generate()


# --- endpoints and the request/reply plumbing -------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    authenticated: bool = True


DISCOVERY = Endpoint("discovery", "GET", "/api/auth/.well-known/agent-configuration", False)
DISCOVERY_ROOT = Endpoint("discovery_root", "GET", "/.well-known/agent-configuration", False)
REGISTER = Endpoint("register", "POST", "/api/auth/agent/register")
STATUS = Endpoint("status", "GET", "/api/auth/agent/status")
REVOKE = Endpoint("revoke", "POST", "/api/auth/agent/revoke")
HOST_REVOKE = Endpoint("host_revoke", "POST", "/api/auth/host/revoke")

ENDPOINTS = [DISCOVERY, DISCOVERY_ROOT, REGISTER, STATUS, REVOKE, HOST_REVOKE]
PROTECTED = [REGISTER, STATUS, REVOKE, HOST_REVOKE]
POSTS = [REGISTER, REVOKE, HOST_REVOKE]
WRONG_METHODS = ["PUT", "DELETE", "PATCH"]

#: Requests that reached each endpoint, and (endpoint, status) pairs, over the whole module.
SENT: Counter[str] = Counter()
STATUSES: Counter[tuple[str, int]] = Counter()


@dataclass(frozen=True)
class Mint:
    """An Authorization header made at send time, so every use gets a fresh ``jti``.

    ``key``: "host" (the registered host), "stranger" (a real unregistered key) or "fresh" (a key
    made for this request). ``claims``/``headers`` override the token's members (``None``
    removes one), as ``sign_host_jwt`` does.
    """

    key: str = "host"
    claims: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, Any] = field(default_factory=dict)
    scheme: str = "Bearer"


VALID = Mint()


@dataclass(frozen=True)
class Now:
    """A time claim relative to the moment the token is signed."""

    offset: float


@dataclass
class Request:
    endpoint: Endpoint
    method: str | None = None
    body: bytes = b""
    content_type: str = "application/json"
    auth: Mint | str | None = None
    query: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any
    authorization: str | None


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact_jws(key: Keypair, header: Any, claims: Any) -> str:
    """Sign any header/claims JSON with Ed25519, whatever PyJWT would think of it."""
    head = b64(json.dumps(header, separators=(",", ":")).encode())
    payload = b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = key.private_key.sign(f"{head}.{payload}".encode("ascii"))
    return f"{head}.{payload}.{b64(signature)}"


def _resolve(values: Mapping[str, Any], now: int) -> dict[str, Any]:
    return {k: (now + v.offset if isinstance(v, Now) else v) for k, v in values.items()}


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in {**base, **extra}.items() if v is not None}


def signed_host_token(
    key: Keypair,
    *,
    claims: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
    agent: Keypair | None = None,
) -> str:
    """``sign_host_jwt`` with overrides; shapes PyJWT refuses to encode (a non-string ``iss`` or
    ``kid``, a non-list ``crit``) are signed by hand with exactly the same members."""
    now = int(time.time())
    claims = _resolve(claims or {}, now)
    headers = dict(headers or {})
    try:
        return sign_host_jwt(
            key, audience=ISSUER, agent_public_key=agent, extra_claims=claims, extra_headers=headers
        )
    except (TypeError, ValueError, jwt.PyJWTError):
        base = {
            "iss": key.thumbprint,
            "sub": key.thumbprint,
            "aud": ISSUER,
            "iat": now,
            "exp": now + 60,
            "jti": str(uuid.uuid4()),
            "host_public_key": key.public_jwk,
        }
        if agent is not None:
            base["agent_public_key"] = agent.public_jwk
        head = _merge({"alg": "EdDSA", "typ": "host+jwt", "kid": key.thumbprint}, headers)
        return compact_jws(key, head, _merge(base, claims))


def authorization(auth: Mint | str | None, endpoint: Endpoint) -> str | None:
    if not isinstance(auth, Mint):
        return auth
    key = {"host": HOST_KEY, "stranger": STRANGER_KEY}.get(auth.key) or Keypair.generate()
    # Registration needs an agent key in the token; other endpoints must ignore it (§4.2).
    agent = Keypair.generate() if endpoint is REGISTER else None
    token = signed_host_token(key, claims=auth.claims, headers=auth.headers, agent=agent)
    return f"{auth.scheme} {token}"


def send(client: Client, request: Request) -> Reply:
    method = request.method or request.endpoint.method
    header = authorization(request.auth, request.endpoint)
    meta: dict[str, Any] = dict(request.meta)
    if header is not None:
        meta["HTTP_AUTHORIZATION"] = header
    if request.query:
        # WSGI carries the raw query bytes as latin-1 text.
        raw_query = request.query.encode("utf-8", "surrogatepass")
        meta["QUERY_STRING"] = raw_query.decode("latin-1")
    response = client.generic(
        method,
        request.endpoint.path,
        data=request.body,
        content_type=request.content_type,
        **meta,
    )
    SENT[request.endpoint.name] += 1
    STATUSES[request.endpoint.name, response.status_code] += 1
    return check_reply(response, method, request.endpoint, header)


def check_reply(response: Any, method: str, endpoint: Endpoint, header: str | None) -> Reply:
    """The §5.13 contract for one reply; returns it parsed for further checks."""
    context = f"{method} {endpoint.path}: {response.status_code} {response.content[:400]!r}"
    assert response.status_code < 500, context
    assert 200 <= response.status_code < 300 or 400 <= response.status_code < 500, context
    assert response.headers.get("Content-Type") == "application/json", context
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"reply is not JSON: {context}") from None
    assert isinstance(body, dict), context
    status = response.status_code
    if status >= 400:
        assert isinstance(body.get("error"), str), context
        assert ERROR_CODE.fullmatch(body["error"]), context
        assert isinstance(body.get("message"), str) and body["message"].strip(), context
        assert "error_description" not in body, context  # §5.13: message, not OAuth's name
        if status == 401:
            assert body["error"] in ("invalid_jwt", "authentication_required"), context
            assert response.headers.get("WWW-Authenticate", "").startswith("AgentAuth "), context
        if status == 405:
            assert body["error"] == "method_not_allowed", context
            allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
            assert endpoint.method in allowed and method.upper() not in allowed, context
        if status == 413:
            assert body["error"] == "invalid_request", context
        if status == 429:
            assert response.headers.get("Retry-After"), context
    elif endpoint in (DISCOVERY, DISCOVERY_ROOT):
        assert body.get("issuer") == ISSUER, context
    return Reply(status, body, response.headers, header)


def assert_error(reply: Reply, status: int, code: str) -> None:
    assert (reply.status, reply.body.get("error")) == (status, code), (reply.body, reply.headers)


@contextmanager
def rolled_back() -> Iterator[None]:
    """Run one example in a savepoint that is always rolled back."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def fuzz(
    endpoint: Endpoint,
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any], None],
    examples: Sequence[Any] = (),
) -> Counter[int]:
    """Run ``check`` on FUZZ examples of ``strategy``; fail unless each example reached the
    endpoint, so "max_examples requests per endpoint" is measured rather than assumed. Returns how
    often each status was answered."""
    before = SENT[endpoint.name]
    statuses_before = STATUSES.copy()

    @given(strategy)
    def run(case: Any) -> None:
        with rolled_back():
            check(case)

    # Explicit cases run first, whatever the generator draws: the paths a test's coverage
    # assertion relies on are always exercised, so the assertion cannot depend on luck.
    for case in reversed(examples):
        run = example(case)(run)

    run()
    sent = SENT[endpoint.name] - before
    assert sent >= MIN_REQUESTS, f"only {sent} requests reached {endpoint.path}"
    seen = STATUSES - statuses_before
    return Counter({status: n for (name, status), n in seen.items() if name == endpoint.name})


# --- strategies ------------------------------------------------------------------------------

NASTY_STRINGS = [
    "",
    " ",
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "true",
    "0",
    "\x00",
    "a\x00b",
    "\u202e\u200b",
    "\ufeff",
    "😀",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "%00",
    "\r\nX-Injected: 1",
    "../../etc/passwd",
    "agt_",
    "hst_",
    "x" * 65,
    "x" * 257,
    "delegated",
    "autonomous",
    "check_balance",
    "device_authorization",
    ISSUER,
]

#: A string around a lone UTF-16 surrogate: legal as a JSON ``\\ud800`` escape, not as UTF-8.
lone_surrogates = st.builds(
    lambda a, s, b: a + s + b,
    st.text(max_size=4),
    st.characters(categories=["Cs"]),
    st.text(max_size=4),
)
long_strings = st.builds(lambda ch, n: ch * n, st.characters(), st.integers(100, 2000))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(NASTY_STRINGS),
    lone_surrogates,
    long_strings,
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


def nest(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


deep_values = st.builds(nest, json_values, st.integers(45, 55), st.booleans())
json_any = json_values | deep_values


def encode_json(value: Any, ascii_only: bool) -> bytes:
    # ``surrogatepass`` puts a lone surrogate on the wire as raw bytes, which Python's JSON
    # decoder (given bytes) accepts just like its ``\\uXXXX`` escape.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


json_bodies = st.builds(encode_json, json_any, st.booleans())

RAW_CORPUS = [
    b"null",
    b"true",
    b"0",
    b"-0",
    b"1e400",
    b"[]",
    b'["name"]',
    b'"name"',
    b"{",
    b"}",
    b"{]",
    b"{'name': 'x'}",
    b'{"name": "x",}',
    b"NaN",
    b'{"name": NaN}',
    b'{"name": Infinity}',
    b'{"agent_id": -Infinity}',
    b'{"name": "a", "name": "b"}',
    b'{"agent_id": "x", "agent_id": "x"}',
    b"\xff\xfe\xfd",
    b"\x00" * 16,
    b'{"name": "x"}\x00',
    b'{"name": "x"} {}',
    b"[" * 50_000,
    b'{"a":' * 10_000,
    b"1" * 5000,
    b'{"name": 1' + b"0" * 5000 + b"}",
    b'{"name": "\xc3\x28"}',
    b'{"name": "\xed\xa0\x80"}',
]
raw_bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    st.sampled_from(RAW_CORPUS),
    json_bodies,
    # Over the 64 KiB limit: 413 once the body is read.
    st.integers(BODY_LIMIT + 1, BODY_LIMIT + 2048).map(lambda n: b"[" + b"1," * (n // 2) + b"1]"),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/json; charset=latin-1",
            "text/plain",
            "text/json",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=BoUnDaRy",
            "application/octet-stream",
            "*/*",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
)
#: Header-safe text (a WSGI server hands header values over as latin-1).
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)
b64_segments = st.binary(max_size=90).map(b64)
claim_names = st.one_of(
    st.sampled_from(
        [
            "iat",
            "exp",
            "nbf",
            "aud",
            "iss",
            "sub",
            "jti",
            "host_public_key",
            "agent_public_key",
            "host_jwks_url",
            "agent_jwks_url",
            "agent_kid",
            "capabilities",
            "cnf",
        ]
    ),
    st.text(max_size=10),
)
claim_values = st.one_of(
    st.none(),
    json_scalars,
    json_values,
    st.integers(-200, 200).map(Now),
    st.sampled_from(
        [
            ISSUER,
            [ISSUER],
            [ISSUER, ISSUER],
            ISSUER + "/",
            "http://testserver",
            "HTTP://TESTSERVER/api/auth",
            float("nan"),
            float("inf"),
            float("-inf"),
            10**400,
            -(10**400),
            HOST_KEY.thumbprint,
            STRANGER_KEY.thumbprint,
            HOST_KEY.public_jwk,
            STRANGER_KEY.public_jwk,
            {**HOST_KEY.public_jwk, "d": "AAAA"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed448", "x": "AAAA"},
            "https://example.com/jwks.json",
        ]
    ),
)
header_values = st.one_of(
    st.sampled_from(
        ["host+jwt", "HOST+JWT", "application/host+jwt", "agent+jwt", "JWT", "jwt", "", "none"]
    ),
    json_scalars,
    st.lists(st.sampled_from(["b64", "exp", "x"]), max_size=2),
)
header_names = st.one_of(
    st.sampled_from(["typ", "kid", "crit", "cty", "jku", "x5u", "jwk", "b64", "zip"]),
    # ``alg`` would make PyJWT sign with another algorithm; RAW_TOKENS covers it by hand.
    st.text(max_size=8).filter(lambda k: k != "alg"),
)
forged_tokens = st.builds(
    Mint,
    key=st.sampled_from(["host", "host", "stranger", "fresh"]),
    claims=st.dictionaries(claim_names, claim_values, max_size=4),
    headers=st.dictionaries(header_names, header_values, max_size=2),
    scheme=st.sampled_from(["Bearer", "Bearer", "bearer", "BEARER", "Basic", "DPoP", "Token"]),
)
json_segment_tokens = st.builds(
    lambda header, claims, signature: ".".join(
        [b64(encode_json(header, True)), b64(encode_json(claims, True)), b64(signature)]
    ),
    st.one_of(
        st.fixed_dictionaries(
            {"alg": st.sampled_from(["EdDSA", "none", "HS256", "RS256", "ES256", "eddsa"])},
            optional={
                "typ": header_values,
                "kid": json_scalars,
                "crit": st.lists(st.text(max_size=5), max_size=2),
            },
        ),
        json_values,
    ),
    json_any,
    st.binary(min_size=64, max_size=64) | st.binary(max_size=100),
)
authorizations = st.one_of(
    st.none(),
    st.just(VALID),
    header_text,
    header_text.map(lambda t: f"Bearer {t}"),
    st.tuples(b64_segments, b64_segments, b64_segments).map(lambda s: "Bearer " + ".".join(s)),
    st.lists(b64_segments, max_size=6).map(lambda s: "Bearer " + ".".join(s)),
    json_segment_tokens.map(lambda t: f"Bearer {t}"),
    forged_tokens,
)
query_keys = st.one_of(
    st.sampled_from(["agent_id", "agent_id", "host_id", "agent_id[]", "AGENT_ID", ""]),
    st.text(max_size=8),
)
queries = st.one_of(
    st.just(""),
    header_text,
    st.lists(
        st.tuples(query_keys, st.one_of(st.text(max_size=70), st.sampled_from(NASTY_STRINGS))),
        max_size=4,
    ).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)),
    st.integers(995, 1010).map(lambda n: "&".join(["agent_id=x"] * n)),
)
#: A declared Content-Length the body does not match; never more than the body's real size,
#: which a real server would wait for (and the test client refuses).
content_length_overrides = st.sampled_from(
    [{}, {}, {}]
    + [{"CONTENT_LENGTH": v} for v in ("abc", "-1", "0", "99999999999999999999", "1e3")]
)


def methods_for(endpoint: Endpoint) -> st.SearchStrategy[str]:
    wrong = [*WRONG_METHODS, "TRACE", "PROPFIND", "BREW"]
    wrong.append("POST" if endpoint.method == "GET" else "GET")
    return st.sampled_from([endpoint.method] * len(wrong)) | st.sampled_from(wrong)


def _django_can_build(request: Request) -> bool:
    """Django's WSGIRequest reads ``GET`` while parsing a ``charset`` parameter, so a query over
    DATA_UPLOAD_MAX_NUMBER_FIELDS raises before any view runs (a Django limitation, outside
    this app): that pair is left out."""
    return "charset" not in request.content_type or request.query.count("&") < 999


def raw_requests(endpoint: Endpoint) -> st.SearchStrategy[Request]:
    return st.builds(
        Request,
        endpoint=st.just(endpoint),
        method=methods_for(endpoint),
        body=raw_bodies,
        content_type=content_types,
        auth=authorizations,
        query=queries,
        meta=content_length_overrides,
    ).filter(_django_can_build)


# --- 1. anything at all, at every endpoint ----------------------------------------------------


@pytest.fixture
def parties() -> dict[str, Any]:
    """The registered host with one agent, and another host's agent."""
    host, _ = make_host(key=HOST_KEY)
    agent, agent_key = make_agent(host)
    other_host, _ = make_host(key=Keypair.generate())
    foreign, _ = make_agent(other_host)
    return {"host": host, "agent": agent, "agent_key": agent_key, "foreign": foreign}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_arbitrary_requests(client: Client, parties: dict[str, Any], endpoint: Endpoint) -> None:
    """Random method, body, content type, Content-Length, Authorization and query string."""

    def check(request: Request) -> None:
        reply = send(client, request)
        if request.method and request.method.upper() != endpoint.method:
            assert_error(reply, 405, "method_not_allowed")
        elif not endpoint.authenticated:
            assert reply.status == 200, reply.body  # discovery ignores everything else
        elif request.auth is None or (isinstance(request.auth, str) and " " not in request.auth):
            assert_error(reply, 401, "invalid_jwt")

    wrong = next(m for m in WRONG_METHODS if m != endpoint.method)
    anchors = [
        Request(endpoint, method=wrong),
        Request(endpoint, auth=None if endpoint.authenticated else VALID),
        Request(endpoint, auth=VALID),
    ]
    statuses = fuzz(endpoint, raw_requests(endpoint), check, examples=anchors)
    # The mix must reach past the method and token checks, not only bounce off them.
    assert statuses[405] and (statuses[200] if not endpoint.authenticated else statuses[401])
    if endpoint.authenticated:
        assert sum(n for status, n in statuses.items() if status not in (401, 405)), statuses


# --- 2. a valid host JWT, then a fuzzed body: the body validators run ------------------------

REGISTER_FIELDS = [
    "name",
    "host_name",
    "capabilities",
    "mode",
    "reason",
    "preferred_method",
    "login_hint",
    "binding_message",
    "force_approval",
]
OTHER_FIELDS = ["agent_id", "host_id", "public_key", "capability", "arguments", "token", "status"]
CAPABILITY_NAMES = ["check_balance", "read_only_note", "transfer", "close_account", "no_such_cap"]

constraints = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(["account_id", "amount", "to", "currency", "bogus"]),
        st.one_of(
            json_scalars,
            st.dictionaries(
                st.sampled_from(["min", "max", "in", "not_in", "eq", "bogus_op"]),
                json_values,
                max_size=3,
            ),
        ),
        max_size=3,
    ),
)
capability_lists = st.lists(
    st.one_of(
        st.sampled_from(CAPABILITY_NAMES),
        st.fixed_dictionaries(
            {"name": st.sampled_from(CAPABILITY_NAMES)}, optional={"constraints": constraints}
        ),
        json_scalars,
    ),
    max_size=4,
) | st.integers(48, 53).map(lambda n: ["read_only_note"] * n)
register_base = st.fixed_dictionaries(
    {"name": st.sampled_from(["Fuzz agent", "日本語エージェント", " padded ", "<b>bold</b>"])},
    optional={
        "host_name": st.text(max_size=40),
        "capabilities": capability_lists,
        "mode": st.sampled_from(["delegated", "autonomous", "DELEGATED", "other"]),
        "reason": st.text(max_size=60),
        "preferred_method": st.sampled_from(["device_authorization", "ciba", "webauthn"]),
        "login_hint": st.sampled_from(["alice@example.com", "alice"]),
        "binding_message": st.text(max_size=30),
        "force_approval": st.booleans(),
    },
)


def mutated(base: st.SearchStrategy[dict[str, Any]], fields: list[str]) -> st.SearchStrategy[Any]:
    """A valid-looking object with some known fields given arbitrary values and unknown fields
    added; whole arbitrary JSON and raw bytes too, so read_json_body runs after auth passes."""
    wrong_types = st.dictionaries(st.sampled_from(fields + OTHER_FIELDS), json_any, max_size=3)
    unknown: st.SearchStrategy[dict[str, Any]] = st.just({}) | st.dictionaries(
        st.text(max_size=12), json_values, max_size=2
    )
    objects = st.builds(lambda b, w, u: {**b, **w, **u}, base, wrong_types, unknown)
    return st.one_of(
        base.map(lambda v: encode_json(v, True)),
        st.builds(encode_json, objects, st.booleans()),
        json_bodies,
        raw_bodies,
    )


def parses_to_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return False


def agent_ids(parties: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([parties["agent"].pk, parties["foreign"].pk, "agt_missing"]),
        json_scalars,
    )


def authenticated_requests(
    endpoint: Endpoint, parties: dict[str, Any]
) -> st.SearchStrategy[tuple[Request, bool]]:
    if endpoint is STATUS:
        ids = agent_ids(parties).filter(lambda v: isinstance(v, str)).map(str)
        query = st.one_of(
            ids.map(lambda v: f"agent_id={v}"),
            st.builds(lambda v, rest: f"agent_id={v}&{rest}", ids, queries),
            queries,
        )
        request = st.builds(Request, endpoint=st.just(STATUS), auth=st.just(VALID), query=query)
    else:
        if endpoint is REGISTER:
            body = mutated(register_base, REGISTER_FIELDS)
        elif endpoint is REVOKE:
            body = mutated(st.fixed_dictionaries({"agent_id": agent_ids(parties)}), ["agent_id"])
        else:
            body = st.just(b"") | mutated(st.just({}), ["reason", "host_id"])
        content_type = st.sampled_from(["application/json"] * 5 + ["text/plain", ""])
        request = st.builds(
            Request,
            endpoint=st.just(endpoint),
            body=body,
            content_type=content_type,
            auth=st.just(VALID),
        )
    return st.tuples(request, st.booleans())


@pytest.mark.parametrize("endpoint", PROTECTED, ids=lambda e: e.name)
def test_valid_token_fuzzed_body(
    client: Client, parties: dict[str, Any], endpoint: Endpoint
) -> None:
    """A fresh, valid host JWT per example: never a 401, whatever the body; the same token sent
    again is a replay (401 invalid_jwt, §4.5.1 step 7) whatever the first answer was."""
    agent, foreign = parties["agent"], parties["foreign"]

    def check(case: tuple[Request, bool]) -> None:
        request, replay = case
        reply = send(client, request)
        assert reply.status != 401, reply.body
        body = request.body
        if endpoint is not STATUS and len(body) > BODY_LIMIT:
            assert_error(reply, 413, "invalid_request")
        elif endpoint is not STATUS and body.strip():
            if request.content_type != "application/json":
                assert_error(reply, 415, "invalid_request")
            elif not parses_to_object(body):
                assert_error(reply, 400, "invalid_request")
        json_ok = request.content_type == "application/json" or not body
        if endpoint is STATUS and request.query in (f"agent_id={agent.pk}",):
            assert reply.status == 200 and reply.body["agent_id"] == agent.pk, reply.body
        if endpoint is STATUS and request.query == f"agent_id={foreign.pk}":
            assert_error(reply, 403, "unauthorized")
        if endpoint is REVOKE and body == encode_json({"agent_id": agent.pk}, True) and json_ok:
            assert reply.body == {"agent_id": agent.pk, "status": "revoked"}
        if endpoint is HOST_REVOKE and body in (b"", b"{}") and json_ok:
            assert reply.status == 200 and reply.body["status"] == "revoked", reply.body
        if replay:
            again = send(client, Request(**{**request.__dict__, "auth": reply.authorization}))
            assert_error(again, 401, "invalid_jwt")

    statuses = fuzz(endpoint, authenticated_requests(endpoint, parties), check)
    assert statuses[200] and statuses[400], statuses  # validators both pass and refuse


# --- 3. signed JWTs with fuzzed claims: an oracle for what must be refused ------------------


@dataclass(frozen=True)
class Forgery:
    key: str
    claims: dict[str, Any]
    headers: dict[str, Any]
    valid: bool


def choice(valid: list[Any], invalid: list[Any] | st.SearchStrategy[Any]) -> Any:
    """A valid value tagged True (six times in seven) or an invalid one tagged False, so that
    a fair share of forgeries has every member right and must be accepted."""
    bad = invalid if isinstance(invalid, st.SearchStrategy) else st.sampled_from(invalid)
    good = st.sampled_from(valid).map(lambda v: (v, True))
    return st.sampled_from([True] * 6 + [False]).flatmap(
        lambda ok: good if ok else bad.map(lambda v: (v, False))
    )


offsets = st.integers(-20, 20) | st.floats(-20, 20)
#: (iat, exp) relative to signing time, and whether the pair is acceptable (§4.6).
#: Float offsets stop one second short of the 60 s maximum: ``(t + d + 60) - (t + d)`` can
#: round to a hair over 60.
good_int_times = st.tuples(st.integers(-20, 20), st.integers(0, 60)).map(
    lambda t: ((Now(t[0]), Now(t[0] + t[1])), True)
)
good_float_times = st.tuples(st.floats(-20, 20), st.integers(0, 59)).map(
    lambda t: ((Now(t[0]), Now(t[0] + t[1])), True)
)
bad_times: st.SearchStrategy[tuple[tuple[Any, Any], bool]] = st.one_of(
    st.tuples(st.integers(40, 10**7), st.integers(0, 60)).map(  # issued in the future
        lambda t: ((Now(t[0]), Now(t[0] + t[1])), False)
    ),
    st.tuples(offsets, st.integers(62, 10**7)).map(  # lifetime above the maximum
        lambda t: ((Now(t[0]), Now(t[0] + t[1])), False)
    ),
    st.tuples(offsets, st.integers(1, 10**6)).map(  # exp before iat
        lambda t: ((Now(t[0]), Now(t[0] - t[1])), False)
    ),
    st.tuples(st.integers(-(10**7), -100), st.integers(0, 60)).map(  # expired
        lambda t: ((Now(t[0]), Now(t[0] + t[1])), False)
    ),
    st.tuples(
        st.sampled_from(["iat", "exp"]),
        st.sampled_from(
            [None, "1700000000", True, [1], {}, 10**400, -(10**400), float("nan"), float("inf")]
        ),
    ).map(
        lambda t: ((Now(0) if t[0] == "exp" else t[1], t[1] if t[0] == "exp" else Now(60)), False)
    ),
)
time_pairs = st.sampled_from([True] * 6 + [False]).flatmap(
    lambda ok: (good_int_times | good_float_times) if ok else bad_times
)
nbfs = choice([None, Now(-5), Now(0)], [Now(120), "0", 10**400, float("nan"), [0]])
auds = choice([ISSUER, [ISSUER]], [ISSUER + "/", "http://testserver", [ISSUER, ISSUER], [], 7, ""])
issuers = choice(
    [HOST_KEY.thumbprint],
    st.one_of(
        st.sampled_from(["", "x" * 300, HOST_KEY.thumbprint.upper(), 5, ["a"], {"a": 1}]),
        st.text(min_size=1, max_size=60),
        lone_surrogates,
    ).filter(lambda v: v != HOST_KEY.thumbprint),
)
jtis = choice(
    ["j", "x" * 256, "日本", "\u202e"],
    st.sampled_from(["", "x" * 257, 1, ["a"], False, "a\x00b"]) | lone_surrogates,
)
typs = choice(
    ["host+jwt", "HOST+JWT", "application/host+jwt", "Application/Host+JWT"],
    [None, "agent+jwt", "jwt", "host+jwt ", "application/application/host+jwt", "x/host+jwt", 1],
)
signing_keys = choice(["host"], ["stranger", "fresh"])
host_keys = choice([HOST_KEY.public_jwk, None], [STRANGER_KEY.public_jwk])
extras = choice([{}], [{"host_jwks_url": "https://example.com/jwks.json"}, {"crit": ["exp"]}])


@st.composite
def forgeries(draw: Any) -> Forgery:
    (iat, exp), times_ok = draw(time_pairs)
    parts = {
        "nbf": draw(nbfs),
        "aud": draw(auds),
        "iss": draw(issuers),
        "jti": draw(jtis),
        "host_public_key": draw(host_keys),
    }
    typ, typ_ok = draw(typs)
    key, key_ok = draw(signing_keys)
    extra, extra_ok = draw(extras)
    claims = {name: value for name, (value, _) in parts.items()}
    claims.update(iat=iat, exp=exp)
    headers: dict[str, Any] = {"typ": typ}
    if "crit" in extra:
        headers["crit"] = extra["crit"]
    else:
        claims.update(extra)
    ok = times_ok and typ_ok and key_ok and extra_ok and all(v for _, v in parts.values())
    # Each example runs in its own rolled-back savepoint, so a fixed jti never replays.
    return Forgery(key, claims, headers, ok)


@pytest.mark.parametrize("endpoint", PROTECTED, ids=lambda e: e.name)
def test_forged_claims(client: Client, parties: dict[str, Any], endpoint: Endpoint) -> None:
    """Signed host JWTs with one or more bad members are 401 invalid_jwt (§5.13, §4.1, §4.2, §8.7);
    with
    every member acceptable the request goes through."""
    agent = parties["agent"]
    bodies = {
        REGISTER: b'{"name": "Fuzz agent"}',
        REVOKE: encode_json({"agent_id": agent.pk}, True),
        HOST_REVOKE: b"",
        STATUS: b"",
    }

    seen: Counter[bool] = Counter()

    def check(forgery: Forgery) -> None:
        seen[forgery.valid] += 1
        request = Request(
            endpoint,
            body=bodies[endpoint],
            auth=Mint(forgery.key, forgery.claims, forgery.headers),
            query=f"agent_id={agent.pk}" if endpoint is STATUS else "",
        )
        reply = send(client, request)
        if forgery.valid:
            assert reply.status == 200, (forgery, reply.body)
        else:
            assert_error(reply, 401, "invalid_jwt")

    fuzz(endpoint, forgeries(), check)
    assert min(seen[True], seen[False]) >= MIN_REQUESTS // 10, seen


# --- 4. a fixed corpus: methods, sizes, bodies, content types, tokens ------------------------


@pytest.mark.parametrize("method", WRONG_METHODS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_wrong_method(client: Client, endpoint: Endpoint, method: str) -> None:
    reply = send(client, Request(endpoint, method=method, body=b"{}", auth=VALID))
    assert_error(reply, 405, "method_not_allowed")
    allowed = [m.strip() for m in reply.headers["Allow"].split(",")]
    assert endpoint.method in allowed and method not in allowed


@pytest.mark.parametrize("endpoint", POSTS, ids=lambda e: e.name)
def test_body_size_limit(client: Client, parties: dict[str, Any], endpoint: Endpoint) -> None:
    """Over 64 KiB is 413 (declared or not); exactly 64 KiB is read and judged on content."""
    padded = b'{"name": "x"}'
    at_limit = padded + b" " * (BODY_LIMIT - len(padded))
    over = at_limit + b" "
    reply = send(client, Request(endpoint, body=over, auth=VALID))
    assert_error(reply, 413, "invalid_request")
    reply = send(client, Request(endpoint, body=at_limit, auth=VALID))
    assert reply.status != 413
    declared = {"CONTENT_LENGTH": str(BODY_LIMIT + 1)}
    reply = send(client, Request(endpoint, body=padded, auth=VALID, meta=declared))
    assert_error(reply, 413, "invalid_request")


@pytest.mark.parametrize("raw", RAW_CORPUS, ids=lambda r: repr(r[:24]))
@pytest.mark.parametrize("endpoint", POSTS, ids=lambda e: e.name)
def test_malformed_body_corpus(client: Client, endpoint: Endpoint, raw: bytes) -> None:
    make_host(key=HOST_KEY)
    reply = send(client, Request(endpoint, body=raw, auth=VALID))
    if parses_to_object(raw):
        # Valid JSON to Python with bad text inside: refused by a validator, not as JSON.
        assert 400 <= reply.status < 500
    else:
        assert_error(reply, 400, "invalid_request")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
@pytest.mark.parametrize("endpoint", POSTS, ids=lambda e: e.name)
def test_wrong_content_type(client: Client, endpoint: Endpoint, content_type: str) -> None:
    make_host(key=HOST_KEY)
    reply = send(
        client, Request(endpoint, body=b'{"name": "x"}', content_type=content_type, auth=VALID)
    )
    assert_error(reply, 415, "invalid_request")


def _token_corpus() -> dict[str, str]:
    good = signed_host_token(HOST_KEY)
    head, payload, signature = good.split(".")
    raw_sig = base64.urlsafe_b64decode(signature + "==")
    now = int(time.time())
    claims = {
        "iss": HOST_KEY.thumbprint,
        "aud": ISSUER,
        "iat": now,
        "exp": now + 60,
        "jti": "corpus",
    }

    def hs256(secret: bytes) -> str:
        h = b64(json.dumps({"alg": "HS256", "typ": "host+jwt"}).encode())
        p = b64(json.dumps(claims).encode())
        mac = hmac.new(secret, f"{h}.{p}".encode(), "sha256").digest()
        return f"{h}.{p}.{b64(mac)}"

    def raw_header(text: bytes) -> str:
        h = b64(text)
        p = b64(json.dumps(claims).encode())
        return f"{h}.{p}.{b64(HOST_KEY.private_key.sign(f'{h}.{p}'.encode()))}"

    return {
        "empty bearer": "Bearer ",
        "bearer only": "Bearer",
        "basic": "Basic dXNlcjpwYXNz",
        "two segments": f"Bearer {head}.{payload}",
        "four segments": f"Bearer {good}.{signature}",
        "empty signature": f"Bearer {head}.{payload}.",
        "padded signature": f"Bearer {good}==",
        "standard base64 alphabet": f"Bearer {head}.{payload}.{base64.b64encode(raw_sig).decode()}",
        "short signature": f"Bearer {head}.{payload}.{b64(raw_sig[:63])}",
        "long signature": f"Bearer {head}.{payload}.{b64(raw_sig + b'x')}",
        "zero signature": f"Bearer {head}.{payload}.{b64(bytes(64))}",
        "over 8192 chars": "Bearer " + good + "A" * 8192,
        "huge": "Bearer " + "A" * 200_000,
        "alg none": "Bearer "
        + compact_jws(HOST_KEY, {"alg": "none", "typ": "host+jwt"}, claims).rsplit(".", 1)[0]
        + ".",
        "alg HS256 keyed with the public key": "Bearer " + hs256(HOST_KEY.public_jwk["x"].encode()),
        "alg missing": "Bearer " + compact_jws(HOST_KEY, {"typ": "host+jwt"}, claims),
        "alg Ed25519": "Bearer "
        + compact_jws(HOST_KEY, {"alg": "Ed25519", "typ": "host+jwt"}, claims),
        "crit header": "Bearer "
        + compact_jws(HOST_KEY, {"alg": "EdDSA", "typ": "host+jwt", "crit": ["exp"]}, claims),
        "header is a list": "Bearer " + compact_jws(HOST_KEY, ["EdDSA"], claims),
        "claims are a string": "Bearer "
        + compact_jws(HOST_KEY, {"alg": "EdDSA", "typ": "host+jwt"}, "claims"),
        "duplicate alg": "Bearer " + raw_header(b'{"alg":"none","alg":"EdDSA","typ":"host+jwt"}'),
        "NaN in header": "Bearer " + raw_header(b'{"alg":"EdDSA","typ":"host+jwt","x":NaN}'),
        "deep header": "Bearer "
        + raw_header(b'{"alg":"EdDSA","x":' + b"[" * 2000 + b"]" * 2000 + b"}"),
        "agent token": "Bearer " + sign_agent_jwt(HOST_KEY, agent_id="agt_x", audience=ISSUER),
        "wrong audience": "Bearer " + signed_host_token(HOST_KEY, claims={"aud": "https://evil"}),
        "expired": "Bearer "
        + signed_host_token(HOST_KEY, claims={"iat": Now(-600), "exp": Now(-540)}),
        "iat 10**400": "Bearer "
        + signed_host_token(HOST_KEY, claims={"iat": 10**400, "exp": 10**400}),
        "exp 10**400": "Bearer " + signed_host_token(HOST_KEY, claims={"exp": 10**400}),
        "nbf 10**400": "Bearer " + signed_host_token(HOST_KEY, claims={"nbf": 10**400}),
        "exp 1e400": "Bearer " + raw_header_claims(HOST_KEY, b'"exp":1e400'),
        "iss lone surrogate": "Bearer " + signed_host_token(HOST_KEY, claims={"iss": "\ud800"}),
        "jti lone surrogate": "Bearer " + signed_host_token(HOST_KEY, claims={"jti": "\udfff"}),
        # NUL cannot reach PostgreSQL (DataError): refused before the host lookup.
        "iss with NUL": "Bearer " + signed_host_token(HOST_KEY, claims={"iss": "a\x00"}),
        "signed by a stranger": "Bearer "
        + signed_host_token(
            STRANGER_KEY, claims={"iss": HOST_KEY.thumbprint, "host_public_key": None}
        ),
        "host_public_key of a stranger": "Bearer "
        + signed_host_token(HOST_KEY, claims={"host_public_key": STRANGER_KEY.public_jwk}),
        "host_jwks_url": "Bearer "
        + signed_host_token(HOST_KEY, claims={"host_jwks_url": "https://example.com/j"}),
    }


def raw_header_claims(key: Keypair, members: bytes) -> str:
    """A token whose claims JSON is written by hand (for literals json.dumps never writes)."""
    now = int(time.time())
    text = (
        b'{"iss":"%s","aud":"%s","iat":%d,"jti":"%s",'
        % (key.thumbprint.encode(), ISSUER.encode(), now, uuid.uuid4().hex.encode())
        + members
        + b"}"
    )
    head = b64(b'{"alg":"EdDSA","typ":"host+jwt"}')
    payload = b64(text)
    return f"{head}.{payload}.{b64(key.private_key.sign(f'{head}.{payload}'.encode()))}"


TOKEN_CASES = sorted(_token_corpus())


@pytest.mark.parametrize("case", TOKEN_CASES)
@pytest.mark.parametrize("endpoint", PROTECTED, ids=lambda e: e.name)
def test_bad_token_corpus(
    client: Client, parties: dict[str, Any], endpoint: Endpoint, case: str
) -> None:
    token = _token_corpus()[case]  # minted now: the time claims must be current
    body = encode_json({"agent_id": parties["agent"].pk}, True) if endpoint is REVOKE else b""
    if endpoint is REGISTER:
        body = b'{"name": "x"}'
    query = f"agent_id={parties['agent'].pk}" if endpoint is STATUS else ""
    reply = send(client, Request(endpoint, body=body, auth=token, query=query))
    assert_error(reply, 401, "invalid_jwt")


@pytest.mark.parametrize("endpoint", PROTECTED, ids=lambda e: e.name)
def test_replayed_token(client: Client, parties: dict[str, Any], endpoint: Endpoint) -> None:
    token = "Bearer " + signed_host_token(
        HOST_KEY, agent=Keypair.generate() if endpoint is REGISTER else None
    )
    query = f"agent_id={parties['agent'].pk}" if endpoint is STATUS else ""
    body = b'{"name": "x"}' if endpoint is REGISTER else b""
    if endpoint is REVOKE:
        body = encode_json({"agent_id": parties["agent"].pk}, True)
    first = send(client, Request(endpoint, body=body, auth=token, query=query))
    assert first.status == 200, first.body
    second = send(client, Request(endpoint, body=body, auth=token, query=query))
    assert_error(second, 401, "invalid_jwt")


def test_status_with_too_many_query_fields(client: Client, parties: dict[str, Any]) -> None:
    """Django refuses more than DATA_UPLOAD_MAX_NUMBER_FIELDS query fields; that is the
    client's fault (400), not a server failure."""
    query = "&".join([f"agent_id={parties['agent'].pk}"] * 1001)
    reply = send(client, Request(STATUS, auth=VALID, query=query))
    assert_error(reply, 400, "invalid_request")


@pytest.mark.parametrize("endpoint", [STATUS, REVOKE], ids=lambda e: e.name)
def test_agent_id_with_nul(client: Client, parties: dict[str, Any], endpoint: Endpoint) -> None:
    """PostgreSQL cannot compare text containing NUL; the id is refused before the lookup."""
    if endpoint is STATUS:
        request = Request(STATUS, auth=VALID, query="agent_id=%00")
    else:
        request = Request(REVOKE, body=b'{"agent_id": "agt_\\u0000"}', auth=VALID)
    assert_error(send(client, request), 400, "invalid_request")


# =================================================================================================
# Every other endpoint: garbage, fuzzed JWTs and bodies, wrong methods and oversized bodies on the
# endpoints the deep section above does not cover (execute, request-capability, introspect,
# reactivate, rotations, list, describe, status_url). The deep section holds wrong methods, size
# limits and replay for its own endpoints, so they are not repeated here.
# =================================================================================================

#: Paths whose wrong-method and size-limit behaviour the deep section already holds.
DEEP_PATHS = {e.path for e in ENDPOINTS}
CODE = re.compile(r"^[a-z_]+$")


any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
known_fields = st.sampled_from(
    [
        "name",
        "capabilities",
        "mode",
        "reason",
        "host_name",
        "agent_id",
        "capability",
        "arguments",
        "token",
        "public_key",
        "preferred_method",
        "login_hint",
        "binding_message",
    ]
)
bodies = st.one_of(
    st.binary(max_size=300).map(lambda b: ("raw", b)),
    any_json.map(lambda v: ("json", v)),
    st.dictionaries(known_fields, any_json, max_size=5).map(lambda v: ("json", v)),
    st.dictionaries(st.text(max_size=12), any_json, max_size=5).map(lambda v: ("json", v)),
    st.sampled_from(["[]", "{", "nul", '{"a":1,"a":2}', "NaN", '{"x": Infinity}', "[" * 200]).map(
        lambda t: ("raw", t.encode())
    ),
)
any_content_types = st.sampled_from(
    ["application/json", "application/json", "text/plain", "multipart/form-data; boundary=x", ""]
)
segment = st.binary(max_size=60).map(lambda b: b64(b))
garbage_auth = st.one_of(
    st.text(max_size=80),
    st.builds(lambda t: f"Bearer {t}", st.text(max_size=80)),
    st.builds(lambda a, b, c: f"Bearer {a}.{b}.{c}", segment, segment, segment),
)


def signed(key: Keypair, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A correctly signed JWS whatever the claim types (PyJWT refuses to sign odd ones)."""
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(key.private_key.sign(f'{head}.{body}'.encode()))}"


def valid_host_claims(key: Keypair) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": key.thumbprint,
        "aud": "http://testserver/api/auth",
        "iat": now,
        "exp": now + 30,
        "jti": uuid.uuid4().hex,
        "agent_public_key": Keypair.generate().public_jwk,
    }


def check_raw(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    if response.status_code >= 400:
        assert isinstance(body, dict) and CODE.match(body["error"]), body
        assert isinstance(body["message"], str) and body["message"]


def send_raw(client: Any, method: str, path: str, body: Any, ctype: str, auth: str | None) -> Any:
    kind, value = body
    data = value if kind == "raw" else json.dumps(value)
    headers = {"HTTP_AUTHORIZATION": auth} if auth is not None else {}
    if method == "GET":
        return client.get(path, **headers)
    return client.generic(method, path, data, content_type=ctype, **headers)


POST_ENDPOINTS = [
    "/api/auth/agent/register",
    "/api/auth/agent/revoke",
    "/api/auth/host/revoke",
    "/api/auth/agent/request-capability",
    "/api/auth/agent/introspect",
    "/api/auth/agent/reactivate",
    "/api/auth/agent/rotate-key",
    "/api/auth/host/rotate-key",
    "/api/auth/capability/execute",
]
GET_ENDPOINTS = [
    "/api/auth/agent/status",
    "/api/auth/capability/list",
    "/api/auth/capability/describe",
    "/api/auth/capability/status/job_x",
    "/.well-known/agent-configuration",
]


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@given(body=bodies, ctype=any_content_types, auth=st.none() | garbage_auth)
def test_post_endpoints_with_garbage(
    client: Any, path: str, body: Any, ctype: str, auth: Any
) -> None:
    check_raw(send_raw(client, "POST", path, body, ctype, auth))


@pytest.mark.parametrize("path", GET_ENDPOINTS)
@given(
    query=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3),
    auth=st.none() | garbage_auth,
)
def test_get_endpoints_with_garbage(client: Any, path: str, query: Any, auth: Any) -> None:
    headers = {"HTTP_AUTHORIZATION": auth} if auth is not None else {}
    check_raw(client.get(path, query, **headers))


@pytest.mark.parametrize("path", POST_ENDPOINTS[:3] + POST_ENDPOINTS[5:8])
@given(
    body=bodies,
    claims=st.dictionaries(
        st.sampled_from(
            ["iat", "exp", "aud", "iss", "jti", "typ", "agent_public_key", "host_public_key", "sub"]
        ),
        any_json,
        max_size=3,
    ),
)
def test_valid_host_jwts_with_fuzzed_claims_and_bodies(
    client: Any, path: str, body: Any, claims: Any
) -> None:
    # The body validators run only after authentication: a fresh, valid host JWT per example.
    _, key = make_host(key=Keypair.generate())
    token = signed(key, {"alg": "EdDSA", "typ": "host+jwt"}, {**valid_host_claims(key), **claims})
    check_raw(send_raw(client, "POST", path, body, "application/json", f"Bearer {token}"))


@pytest.mark.parametrize(
    "path", ["/api/auth/capability/execute", "/api/auth/agent/request-capability"]
)
@given(body=bodies)
def test_valid_agent_jwts_with_fuzzed_bodies(client: Any, path: str, body: Any) -> None:
    host, _ = make_host()
    agent, key = make_agent(host, grants=["check_balance", "transfer"])
    audience = "http://testserver" + path if path.endswith("execute") else None
    token = agent_token(agent, key, **({"audience": audience} if audience else {}))
    check_raw(send_raw(client, "POST", path, body, "application/json", f"Bearer {token}"))


@pytest.mark.parametrize("path", [p for p in POST_ENDPOINTS + GET_ENDPOINTS if p not in DEEP_PATHS])
@pytest.mark.parametrize("method", WRONG_METHODS)
def test_wrong_methods(client: Any, path: str, method: str) -> None:
    response = client.generic(method, path)
    check_raw(response)
    assert response.status_code == 405 and response["Allow"]


@pytest.mark.parametrize("path", [p for p in POST_ENDPOINTS if p not in DEEP_PATHS])
def test_oversized_bodies(client: Any, path: str) -> None:
    response = client.post(path, data="{" + " " * 70_000 + "}", content_type="application/json")
    check_raw(response)
    assert response.status_code in (401, 413)  # unauthenticated endpoints refuse 413 first
