"""Malformed input never gets a 5xx (issue 2 acceptance; spec §5.13, ER1-ER8).

Hypothesis throws the profile's ``max_examples`` generated requests at every protocol endpoint:
arbitrary bytes, arbitrary JSON, wrong types for known fields, unknown fields, wrong content
types, garbage or forged JWTs, and valid JWTs with fuzzed bodies. Every answer must be a
spec-shaped error (or a success for the odd valid request), never a 5xx or an HTML page.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentauth.testing import Keypair, agent_token, host_token, make_agent, make_host

pytestmark = pytest.mark.django_db
CODE = re.compile(r"^[a-z_]+$")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_values = st.recursive(
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
    json_values.map(lambda v: ("json", v)),
    st.dictionaries(known_fields, json_values, max_size=5).map(lambda v: ("json", v)),
    st.dictionaries(st.text(max_size=12), json_values, max_size=5).map(lambda v: ("json", v)),
    st.sampled_from(["[]", "{", "nul", '{"a":1,"a":2}', "NaN", '{"x": Infinity}', "[" * 200]).map(
        lambda t: ("raw", t.encode())
    ),
)
content_types = st.sampled_from(
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


def check(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    if response.status_code >= 400:
        assert isinstance(body, dict) and CODE.match(body["error"]), body
        assert isinstance(body["message"], str) and body["message"]


def send(client: Any, method: str, path: str, body: Any, ctype: str, auth: str | None) -> Any:
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
@given(body=bodies, ctype=content_types, auth=st.none() | garbage_auth)
def test_post_endpoints_with_garbage(
    client: Any, path: str, body: Any, ctype: str, auth: Any
) -> None:
    check(send(client, "POST", path, body, ctype, auth))


@pytest.mark.parametrize("path", GET_ENDPOINTS)
@given(
    query=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3),
    auth=st.none() | garbage_auth,
)
def test_get_endpoints_with_garbage(client: Any, path: str, query: Any, auth: Any) -> None:
    headers = {"HTTP_AUTHORIZATION": auth} if auth is not None else {}
    check(client.get(path, query, **headers))


@pytest.mark.parametrize("path", POST_ENDPOINTS[:3] + POST_ENDPOINTS[5:8])
@given(
    body=bodies,
    claims=st.dictionaries(
        st.sampled_from(
            ["iat", "exp", "aud", "iss", "jti", "typ", "agent_public_key", "host_public_key", "sub"]
        ),
        json_values,
        max_size=3,
    ),
)
def test_valid_host_jwts_with_fuzzed_claims_and_bodies(
    client: Any, path: str, body: Any, claims: Any
) -> None:
    # The body validators run only after authentication: a fresh, valid host JWT per example.
    _, key = make_host(key=Keypair.generate())
    token = signed(key, {"alg": "EdDSA", "typ": "host+jwt"}, {**valid_host_claims(key), **claims})
    check(send(client, "POST", path, body, "application/json", f"Bearer {token}"))


@pytest.mark.parametrize(
    "path", ["/api/auth/capability/execute", "/api/auth/agent/request-capability"]
)
@given(body=bodies)
def test_valid_agent_jwts_with_fuzzed_bodies(client: Any, path: str, body: Any) -> None:
    host, _ = make_host()
    agent, key = make_agent(host, grants=["check_balance", "transfer"])
    audience = "http://testserver" + path if path.endswith("execute") else None
    token = agent_token(agent, key, **({"audience": audience} if audience else {}))
    check(send(client, "POST", path, body, "application/json", f"Bearer {token}"))


@pytest.mark.parametrize("path", POST_ENDPOINTS + GET_ENDPOINTS)
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_wrong_methods(client: Any, path: str, method: str) -> None:
    response = client.generic(method, path)
    check(response)
    assert response.status_code == 405 and response["Allow"]


@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_oversized_bodies(client: Any, path: str) -> None:
    response = client.post(path, data="{" + " " * 70_000 + "}", content_type="application/json")
    check(response)
    assert response.status_code in (401, 413)  # unauthenticated endpoints refuse 413 first


def test_oversized_body_with_valid_auth(client: Any) -> None:
    _, key = make_host()
    token = host_token(key, agent_public_key=Keypair.generate())
    response = client.post(
        "/api/auth/agent/register",
        data=json.dumps({"name": "x" * 70_000}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    check(response)
    assert response.status_code == 413


def test_replayed_valid_token_is_refused(client: Any) -> None:
    host, key = make_host()
    agent, _ = make_agent(host)
    token = host_token(key)
    first = client.get(
        "/api/auth/agent/status", {"agent_id": agent.pk}, HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    second = client.get(
        "/api/auth/agent/status", {"agent_id": agent.pk}, HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert first.status_code == 200
    check(second)
    assert second.status_code == 401 and second.json()["error"] == "invalid_jwt"
