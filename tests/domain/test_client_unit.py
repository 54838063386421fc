"""Unit tests for the Django-free agent client (``agentauth.client``).

No database and no Django: the client talks real HTTP to a tiny ``http.server`` on 127.0.0.1
that plays the server side with canned responses, so the client's own logic (endpoint
resolution, signing, polling, SSE) is exercised as is, never mocked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agentauth.client import (
    AgentAuthClient,
    AgentConnection,
    ClientError,
    Keypair,
    ProtocolError,
    sign_agent_jwt,
    sign_host_jwt,
)
from agentauth.client import http as client_http
from agentauth.client.cli import main as cli_main
from agentauth.client.sse import parse_event_stream

REPO_ROOT = Path(__file__).resolve().parents[2]

# RFC 8037 Appendix A.1 Ed25519 key and its RFC 7638 thumbprint from Appendix A.3.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def rfc7638_thumbprint(x: str) -> str:
    """Independent RFC 7638 computation: required members, lexicographic order, no spaces."""
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}'
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def public_key_of(jwk: dict[str, str]) -> Ed25519PublicKey:
    raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    return Ed25519PublicKey.from_public_bytes(raw)


# --------------------------------------------------------------------------- fake server


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any

    @property
    def token(self) -> str:
        auth = self.headers.get("authorization", "")
        assert auth.startswith("Bearer "), auth
        return auth[len("Bearer ") :]


Route = Callable[[Recorded, BaseHTTPRequestHandler], "tuple[int, dict[str, str], Any] | None"]


@dataclass
class FakeServer:
    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def json_route(
        self, path: str, body: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.routes[path] = lambda req, h: (status, dict(headers or {}), body)

    def sequence(self, path: str, replies: list[tuple[int, dict[str, str], Any]]) -> None:
        pending = list(replies)
        self.routes[path] = lambda req, h: pending.pop(0) if len(pending) > 1 else pending[0]

    def discovery(self, **overrides: Any) -> dict[str, Any]:
        doc = {
            "version": "1.0-draft",
            "provider_name": "test",
            "description": "test server",
            "issuer": self.url,
            "algorithms": ["Ed25519"],
            "modes": ["delegated", "autonomous"],
            "approval_methods": ["device_authorization"],
            "endpoints": {
                "register": "/agent/register",
                "capabilities": "/capability/list",
                "describe_capability": "/capability/describe",
                "execute": "/capability/execute",
                "request_capability": "/agent/request-capability",
                "status": "/agent/status",
                "reactivate": "/agent/reactivate",
                "revoke": "/agent/revoke",
                "revoke_host": "/host/revoke",
                "rotate_key": "/agent/rotate-key",
                "rotate_host_key": "/host/rotate-key",
                "introspect": "/agent/introspect",
            },
        }
        doc.update(overrides)
        self.json_route("/.well-known/agent-configuration", doc)
        return doc

    def hits(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]


def _make_handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            req = Recorded(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            server.requests.append(req)
            route = server.routes.get(parts.path)
            reply = (
                route(req, self)
                if route
                else (404, {}, {"error": "not_found", "message": "No such endpoint"})
            )
            if reply is None:
                return
            status, headers, body = reply
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode()
                headers.setdefault("Content-Type", "application/json")
            else:
                data = str(body).encode() if body is not None else b""
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

    return Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(fake))
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()


def make_client(server: FakeServer, **kwargs: Any) -> tuple[AgentAuthClient, list[float]]:
    sleeps: list[float] = []
    client = AgentAuthClient(server.url, sleep=sleeps.append, **kwargs)
    return client, sleeps


def connection_for(client: AgentAuthClient, *grants: str) -> AgentConnection:
    return AgentConnection(
        agent_id="agt_test",
        host_id="hst_test",
        agent=Keypair.generate(),
        status="active",
        grants=[{"capability": g, "status": "active"} for g in grants],
        issuer=client.issuer,
    )


# --------------------------------------------------------------------------- keys


def test_keypair_private_jwk_round_trip() -> None:
    original = Keypair.generate()
    stored = json.loads(json.dumps(original.to_private_jwk()))
    assert set(stored) == {"kty", "crv", "x", "d"}
    loaded = Keypair.from_private_jwk(stored)
    assert loaded == original
    assert loaded.public_jwk == original.public_jwk == {k: stored[k] for k in ("kty", "crv", "x")}
    assert loaded.thumbprint == original.thumbprint
    signature = loaded.private_key.sign(b"payload")
    public_key_of(original.public_jwk).verify(signature, b"payload")
    assert "d" not in original.public_jwk
    assert stored["d"] not in repr(original)


def test_keypair_matches_rfc8037_vector_and_rfc7638_thumbprint() -> None:
    key = Keypair.from_private_jwk({"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D})
    assert key.public_jwk == {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}
    assert rfc7638_thumbprint(RFC8037_X) == RFC8037_THUMBPRINT
    assert key.thumbprint == RFC8037_THUMBPRINT


def test_thumbprint_is_43_base64url_chars() -> None:
    for _ in range(5):
        key = Keypair.generate()
        assert len(key.thumbprint) == 43
        assert key.thumbprint == rfc7638_thumbprint(key.public_jwk["x"])
        assert set(key.thumbprint) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D, "x": Keypair.generate().public_jwk["x"]},
        {"kty": "EC", "crv": "P-256", "d": RFC8037_D},
        {"kty": "OKP", "crv": "Ed25519", "d": "c2hvcnQ"},
        {"kty": "OKP", "crv": "Ed25519"},
    ],
)
def test_private_jwk_rejects_bad_keys(jwk: dict[str, str]) -> None:
    with pytest.raises(ProtocolError):
        Keypair.from_private_jwk(jwk)


# --------------------------------------------------------------------------- JWTs


def test_host_jwt_header_and_claims() -> None:
    host, agent = Keypair.generate(), Keypair.generate()
    before = int(time.time())
    token = sign_host_jwt(host, audience="https://auth.example", agent_public_key=agent)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": "host+jwt", "kid": host.thumbprint}
    claims = jwt.decode(
        token, public_key_of(host.public_jwk), algorithms=["EdDSA"], audience="https://auth.example"
    )
    assert set(claims) == {
        "iss",
        "sub",
        "aud",
        "iat",
        "exp",
        "jti",
        "host_public_key",
        "agent_public_key",
    }
    assert claims["iss"] == claims["sub"] == rfc7638_thumbprint(host.public_jwk["x"])
    assert claims["aud"] == "https://auth.example"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 60
    assert str(uuid.UUID(claims["jti"])) == claims["jti"]
    # Every JWK carries kid = its RFC 7638 thumbprint (servers that look hosts up by kid).
    assert claims["host_public_key"] == {**host.public_jwk, "kid": claims["iss"]}
    assert claims["agent_public_key"] == {**agent.public_jwk, "kid": agent.thumbprint}


def test_host_jwt_without_agent_key_and_host_key() -> None:
    host = Keypair.generate()
    plain = jwt.decode(
        sign_host_jwt(host, audience="a", lifetime=30),
        public_key_of(host.public_jwk),
        algorithms=["EdDSA"],
        audience="a",
    )
    assert "agent_public_key" not in plain
    assert plain["exp"] - plain["iat"] == 30
    bare = jwt.decode(
        sign_host_jwt(host, audience="a", include_host_key=False),
        public_key_of(host.public_jwk),
        algorithms=["EdDSA"],
        audience="a",
    )
    assert "host_public_key" not in bare
    first, second = (sign_host_jwt(host, audience="a") for _ in range(2))
    assert (
        jwt.decode(first, options={"verify_signature": False})["jti"]
        != jwt.decode(second, options={"verify_signature": False})["jti"]
    )


def test_agent_jwt_header_claims_and_iss_omitted_by_default() -> None:
    agent = Keypair.generate()
    token = sign_agent_jwt(agent, agent_id="agt_1", audience="https://auth.example")
    assert jwt.get_unverified_header(token) == {
        "alg": "EdDSA",
        "typ": "agent+jwt",
        "kid": agent.thumbprint,
    }
    claims = jwt.decode(
        token,
        public_key_of(agent.public_jwk),
        algorithms=["EdDSA"],
        audience="https://auth.example",
    )
    assert set(claims) == {"sub", "aud", "iat", "exp", "jti"}
    assert claims["sub"] == "agt_1"
    assert claims["exp"] - claims["iat"] == 60


def test_agent_jwt_with_iss_and_capabilities() -> None:
    agent = Keypair.generate()
    token = sign_agent_jwt(
        agent,
        agent_id="agt_1",
        audience="https://auth.example/capability/execute",
        host_thumbprint="host-tp",
        capabilities=["check_balance"],
    )
    claims = jwt.decode(
        token,
        public_key_of(agent.public_jwk),
        algorithms=["EdDSA"],
        audience="https://auth.example/capability/execute",
    )
    assert claims["iss"] == "host-tp"
    assert claims["capabilities"] == ["check_balance"]
    empty = sign_agent_jwt(agent, agent_id="agt_1", audience="a", capabilities=[])
    assert "capabilities" not in jwt.decode(empty, options={"verify_signature": False})


def test_extra_claims_and_headers_override_or_remove_members() -> None:
    agent = Keypair.generate()
    token = sign_agent_jwt(
        agent,
        agent_id="agt_1",
        audience="a",
        extra_claims={"iat": 100, "exp": 160, "jti": None, "nonce": "x"},
        extra_headers={"typ": None, "kid": None},
    )
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iat"] == 100 and claims["exp"] == 160 and claims["nonce"] == "x"
    assert "jti" not in claims
    host = Keypair.generate()
    mistyped = sign_host_jwt(host, audience="a", extra_headers={"typ": "agent+jwt"})
    assert jwt.get_unverified_header(mistyped)["typ"] == "agent+jwt"


# --------------------------------------------------------------------------- discovery


def test_relative_endpoints_are_prefixed_with_issuer(server: FakeServer) -> None:
    server.discovery()
    client, _ = make_client(server)
    assert client.endpoint("register") == server.url + "/agent/register"
    assert client.default_location == server.url + "/capability/execute"
    # Issuer with a path prefix: plain concatenation as in {issuer}{endpoints.execute}.
    server.discovery(issuer=server.url + "/api/auth/")
    client, _ = make_client(server)
    assert client.endpoint("status") == server.url + "/api/auth/agent/status"


def test_absolute_endpoints_are_used_as_is(server: FakeServer) -> None:
    doc = server.discovery(issuer=server.url + "/api/auth")
    doc["endpoints"]["status"] = server.url + "/elsewhere/status"
    doc["default_location"] = server.url + "/run"
    server.json_route("/.well-known/agent-configuration", doc)
    server.json_route("/elsewhere/status", {"agent_id": "agt_1", "status": "active"})
    client, _ = make_client(server)
    assert client.endpoint("status") == server.url + "/elsewhere/status"
    assert client.default_location == server.url + "/run"
    assert client.status("agt_1")["status"] == "active"
    [hit] = server.hits("/elsewhere/status")
    assert hit.query == {"agent_id": ["agt_1"]}
    claims = jwt.decode(
        hit.token,
        public_key_of(client.host.public_jwk),
        algorithms=["EdDSA"],
        audience=server.url + "/api/auth",
    )
    assert jwt.get_unverified_header(hit.token)["typ"] == "host+jwt"
    assert claims["iss"] == client.host.thumbprint


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"version": "2.0-draft"}, "unsupported_version"),
        ({"version": "latest"}, "unsupported_version"),
        ({"endpoints": None}, "invalid_discovery"),
        ({"issuer": None}, "invalid_discovery"),
        ({"issuer": "ftp://example.com"}, "untrusted_url"),
    ],
)
def test_discovery_is_validated(server: FakeServer, overrides: dict[str, Any], code: str) -> None:
    server.discovery(**overrides)
    client, _ = make_client(server)
    with pytest.raises(ProtocolError) as info:
        client.discover()
    assert info.value.code == code


def test_discovery_accepts_other_1x_versions_and_is_cached(server: FakeServer) -> None:
    server.discovery(version="1.3")
    client, _ = make_client(server)
    client.discover()
    client.discover()
    assert len(server.hits("/.well-known/agent-configuration")) == 1
    client.discover(force=True)
    assert len(server.hits("/.well-known/agent-configuration")) == 2


def test_discovery_no_store_is_not_cached(server: FakeServer) -> None:
    doc = server.discovery()
    server.json_route(
        "/.well-known/agent-configuration", doc, headers={"Cache-Control": "no-store"}
    )
    client, _ = make_client(server)
    client.discover()
    client.discover()
    assert len(server.hits("/.well-known/agent-configuration")) == 2


def test_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(ClientError) as info:
        AgentAuthClient("http://auth.example.com")
    assert info.value.code == "untrusted_url"
    AgentAuthClient("http://auth.example.com", allow_insecure_http=True)


# ------------------------------------------------------------------ registration & lifecycle


def test_register_sends_host_jwt_with_fresh_agent_key(server: FakeServer) -> None:
    server.discovery()
    server.json_route(
        "/agent/register",
        {
            "agent_id": "agt_1",
            "host_id": "hst_1",
            "name": "bot",
            "mode": "delegated",
            "status": "pending",
            "agent_capability_grants": [{"capability": "check_balance", "status": "pending"}],
            "approval": {"method": "device_authorization", "interval": 5, "expires_in": 300},
        },
    )
    client, _ = make_client(server)
    conn = client.register(
        "bot",
        capabilities=["check_balance", {"name": "transfer", "constraints": {"amount": {"max": 5}}}],
        reason="why",
        host_name="laptop",
    )
    assert (conn.agent_id, conn.host_id, conn.status) == ("agt_1", "hst_1", "pending")
    assert conn.grants == [{"capability": "check_balance", "status": "pending"}]
    assert conn.approval is not None and conn.approval["interval"] == 5
    [hit] = server.hits("/agent/register")
    assert hit.method == "POST"
    assert hit.headers["content-type"] == "application/json"
    assert hit.json == {
        "name": "bot",
        "mode": "delegated",
        "capabilities": [
            "check_balance",
            {"name": "transfer", "constraints": {"amount": {"max": 5}}},
        ],
        "reason": "why",
        "host_name": "laptop",
    }
    claims = jwt.decode(
        hit.token, public_key_of(client.host.public_jwk), algorithms=["EdDSA"], audience=server.url
    )
    assert claims["agent_public_key"] == conn.agent.wire_jwk
    assert claims["host_public_key"] == client.host.wire_jwk
    second = client.register("bot", host_name="laptop")
    assert second.agent != conn.agent  # a new agent keypair per registration


def test_error_bodies_raise_protocol_error(server: FakeServer) -> None:
    server.discovery()
    server.json_route(
        "/agent/register",
        {
            "error": "invalid_capabilities",
            "message": "nope",
            "invalid_capabilities": ["x"],
            "status": "ignored",
        },
        status=400,
    )
    client, _ = make_client(server)
    with pytest.raises(ProtocolError) as info:
        client.register("bot", capabilities=["x"])
    err = info.value
    assert (err.code, err.status, err.message) == ("invalid_capabilities", 400, "nope")
    assert err.extra == {"invalid_capabilities": ["x"]}


def test_http_request_returns_error_responses_and_falls_back_to_status(
    server: FakeServer,
) -> None:
    server.routes["/boom"] = lambda req, h: (500, {"Content-Type": "text/plain"}, "kaput")
    resp = client_http.request("GET", server.url + "/missing")
    assert resp.status == 404 and resp.body["error"] == "not_found"
    resp = client_http.request("GET", server.url + "/boom", query={"a": "1", "b": None})
    assert resp.status == 500 and resp.body == "kaput"
    assert server.hits("/boom")[0].query == {"a": ["1"]}
    with pytest.raises(ProtocolError) as info:
        client_http.raise_for_error(resp)
    assert (info.value.code, info.value.status) == ("http_500", 500)
    with pytest.raises(ClientError) as net:
        client_http.request("GET", "http://127.0.0.1:1/")
    assert net.value.code == "network_error"


def test_wait_for_approval_honours_interval(server: FakeServer) -> None:
    server.discovery()
    pending = {"agent_id": "agt_1", "status": "pending", "approval": {"interval": 7}}
    active = {"agent_id": "agt_1", "status": "active", "agent_capability_grants": []}
    server.sequence("/agent/status", [(200, {}, pending), (200, {}, active)])
    client, sleeps = make_client(server)
    assert client.wait_for_approval("agt_1")["status"] == "active"
    assert sleeps == [5.0, 7.0]
    assert len(server.hits("/agent/status")) == 2


def test_wait_for_approval_times_out(server: FakeServer) -> None:
    server.discovery()
    server.json_route("/agent/status", {"agent_id": "agt_1", "status": "pending"})
    now = [0.0]
    client = AgentAuthClient(
        server.url,
        sleep=lambda s: now.__setitem__(0, now[0] + s),
        clock=lambda: now[0],
    )
    with pytest.raises(ClientError) as info:
        client.wait_for_approval("agt_1", timeout=12, interval=5)
    assert info.value.code == "approval_timeout"
    assert len(server.hits("/agent/status")) == 3


def test_rotate_host_key_signs_with_current_key_then_swaps(server: FakeServer) -> None:
    server.discovery()
    server.json_route("/host/rotate-key", {"host_id": "hst_1", "status": "active"})
    client, _ = make_client(server)
    old, new = client.host, Keypair.generate()
    client.rotate_host_key(new)
    assert client.host == new
    [hit] = server.hits("/host/rotate-key")
    jwt.decode(hit.token, public_key_of(old.public_jwk), algorithms=["EdDSA"], audience=server.url)
    assert hit.json == {"public_key": new.wire_jwk}


def test_client_sign_agent_jwt_refuses_ungranted_capabilities(server: FakeServer) -> None:
    server.discovery()
    client, _ = make_client(server)
    conn = connection_for(client, "check_balance")
    token = client.sign_agent_jwt(conn, capabilities=["check_balance"])
    claims = jwt.decode(
        token, public_key_of(conn.agent.public_jwk), algorithms=["EdDSA"], audience=server.url
    )
    assert claims["iss"] == client.host.thumbprint and claims["sub"] == "agt_test"
    with pytest.raises(ProtocolError) as info:
        client.sign_agent_jwt(conn, capabilities=["transfer"])
    assert info.value.code == "capability_not_granted"


@pytest.mark.parametrize(
    ("agent_iss", "expected"), [("thumbprint", "host"), ("host_id", "hst_test"), ("omit", None)]
)
def test_agent_iss_option(server: FakeServer, agent_iss: str, expected: str | None) -> None:
    # §4.3 leaves agent-JWT iss to the server: this server wants the thumbprint, the TypeScript
    # reference server only its host_id or nothing, the TypeScript SDK sends nothing.
    server.discovery()
    client, _ = make_client(server, agent_iss=agent_iss)
    conn = connection_for(client, "check_balance")
    claims = jwt.decode(
        client.sign_agent_jwt(conn),
        public_key_of(conn.agent.public_jwk),
        algorithms=["EdDSA"],
        audience=server.url,
    )
    want = client.host.thumbprint if expected == "host" else expected
    assert claims.get("iss") == want
    if agent_iss == "host_id":
        conn.host_id = None
        with pytest.raises(ProtocolError) as info:
            client.sign_agent_jwt(conn)
        assert info.value.code == "invalid_state"
    with pytest.raises(ValueError):
        AgentAuthClient(server.url, agent_iss="sub")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- execution


def test_execute_sync_uses_default_location_as_audience(server: FakeServer) -> None:
    server.discovery(default_location=None)
    server.json_route("/capability/execute", {"data": {"balance": 3}})
    client, _ = make_client(server)
    conn = connection_for(client, "check_balance")
    assert client.execute(conn, "check_balance", {"account": "a"}) == {"data": {"balance": 3}}
    [hit] = server.hits("/capability/execute")
    assert hit.json == {"capability": "check_balance", "arguments": {"account": "a"}}
    claims = jwt.decode(
        hit.token,
        public_key_of(conn.agent.public_jwk),
        algorithms=["EdDSA"],
        audience=server.url + "/capability/execute",
    )
    assert claims["capabilities"] == ["check_balance"]
    assert jwt.get_unverified_header(hit.token)["typ"] == "agent+jwt"


def test_execute_constraint_violation_keeps_violations(server: FakeServer) -> None:
    server.discovery()
    violations = [{"field": "amount", "constraint": {"max": 5}, "actual": 9}]
    server.json_route(
        "/capability/execute",
        {"error": "constraint_violated", "message": "no", "violations": violations},
        status=403,
    )
    client, _ = make_client(server)
    with pytest.raises(ProtocolError) as info:
        client.execute(connection_for(client, "transfer"), "transfer", {"amount": 9})
    assert info.value.code == "constraint_violated"
    assert info.value.extra["violations"] == violations


def test_execute_async_polls_with_fresh_jwts_and_backoff(server: FakeServer) -> None:
    server.discovery()
    status_url = server.url + "/capability/status/job_1"
    server.json_route(
        "/capability/execute", {"status": "pending", "status_url": status_url}, status=202
    )
    server.sequence(
        "/capability/status/job_1",
        [
            (200, {}, {"status": "pending", "status_url": status_url}),
            (200, {"Retry-After": "3"}, {"status": "pending", "status_url": status_url}),
            (200, {}, {"status": "completed", "result": {"ok": True}}),
        ],
    )
    client, sleeps = make_client(server)
    conn = connection_for(client, "slow")
    assert client.execute(conn, "slow") == {"status": "completed", "result": {"ok": True}}
    assert sleeps == [1.0, 2.0, 3.0]
    polls = server.hits("/capability/status/job_1")
    assert [p.method for p in polls] == ["GET"] * 3
    jtis = set()
    for poll in polls:
        claims = jwt.decode(
            poll.token,
            public_key_of(conn.agent.public_jwk),
            algorithms=["EdDSA"],
            audience=server.url,
        )
        jtis.add(claims["jti"])
    assert len(jtis) == 3
    assert server.hits("/capability/execute")[0].token not in {p.token for p in polls}


def test_execute_async_failure_raises_the_error_object(server: FakeServer) -> None:
    server.discovery()
    status_url = server.url + "/capability/status/job_2"
    server.json_route(
        "/capability/execute", {"status": "pending", "status_url": status_url}, status=202
    )
    server.json_route(
        "/capability/status/job_2",
        {"status": "failed", "error": {"error": "internal_error", "message": "broke"}},
    )
    client, _ = make_client(server)
    with pytest.raises(ProtocolError) as info:
        client.execute(connection_for(client, "slow"), "slow")
    assert (info.value.code, info.value.message) == ("internal_error", "broke")


@pytest.mark.parametrize(
    "status_url",
    [
        "http://localhost:{port}/capability/status/job_1",  # other host
        "http://127.0.0.1:1/capability/status/job_1",  # other port
        "https://127.0.0.1:{port}/capability/status/job_1",  # other scheme
        "/capability/status/job_1",  # not absolute
    ],
)
def test_execute_refuses_cross_origin_status_url(server: FakeServer, status_url: str) -> None:
    server.discovery()
    port = urlsplit(server.url).port
    server.json_route(
        "/capability/execute",
        {"status": "pending", "status_url": status_url.format(port=port)},
        status=202,
    )
    client, sleeps = make_client(server)
    with pytest.raises(ProtocolError) as info:
        client.execute(connection_for(client, "slow"), "slow")
    assert info.value.code == "untrusted_url"
    assert sleeps == []
    assert server.hits("/capability/status/job_1") == []


def test_parse_event_stream_rules_and_stops_at_done() -> None:
    lines = iter(
        [
            b": keep-alive comment\n",
            b'data: {"n": 1}\n',
            b"\n",
            b"event: data\n",
            b"data: line one\n",
            b"data: line two\n",
            b"\n",
            b"event: error\n",
            b'data: {"error": "x", "message": "y"}\n',
            b"\n",
            b"event: done\n",
            b"data:\n",
            b"\n",
            b"data: never read\n",
        ]
    )
    events = parse_event_stream(lines)
    assert events == [
        ("data", {"n": 1}),
        ("data", "line one\nline two"),
        ("error", {"error": "x", "message": "y"}),
        ("done", None),
    ]
    assert next(lines) == b"data: never read\n"  # nothing consumed past `done`


def test_parse_event_stream_without_done_is_incomplete() -> None:
    with pytest.raises(ClientError) as info:
        parse_event_stream(["data: 1\n", "\n"])
    assert info.value.code == "stream_incomplete"
    assert info.value.extra["events"] == [("data", 1)]


def test_execute_streaming_returns_events_without_waiting_for_close(server: FakeServer) -> None:
    server.discovery()
    release = threading.Event()

    def stream(req: Recorded, h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        h.wfile.write(b'data: {"chunk": 1}\n\nevent: done\ndata: {"total": 1}\n\n')
        h.wfile.flush()
        release.wait(10)  # keep the connection open: the client must stop at `done`

    server.routes["/capability/execute"] = stream
    client, _ = make_client(server)
    started = time.monotonic()
    try:
        events = client.execute(connection_for(client, "stream"), "stream")
    finally:
        release.set()
    assert events == [("data", {"chunk": 1}), ("done", {"total": 1})]
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- packaging rules


def test_importing_the_client_does_not_import_django() -> None:
    code = (
        "import agentauth.client, agentauth.client.cli, sys; "
        "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('django'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr


def test_cli_register_status_revoke_with_private_state_file(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.discovery()
    registered = {"agent_id": "agt_9", "host_id": "hst_9", "status": "active"}
    server.json_route("/agent/register", {**registered, "agent_capability_grants": []})
    server.json_route("/agent/status", {**registered, "agent_capability_grants": []})
    server.json_route("/agent/revoke", {"agent_id": "agt_9", "status": "revoked"})
    state_path = tmp_path / "state.json"

    assert cli_main(["register", server.url, "--name", "bot", "--state", str(state_path)]) == 0
    assert json.loads(capsys.readouterr().out)["agent_id"] == "agt_9"
    assert stat.S_IMODE(state_path.stat().st_mode) == 0o600
    state = json.loads(state_path.read_text())
    host = Keypair.from_private_jwk(state["host"])
    agent = Keypair.from_private_jwk(state["agents"]["agt_9"]["agent_key"])
    register_claims = jwt.decode(
        server.hits("/agent/register")[0].token,
        public_key_of(host.public_jwk),
        algorithms=["EdDSA"],
        audience=server.url,
    )
    assert register_claims["agent_public_key"] == agent.wire_jwk

    assert cli_main(["--state", str(state_path), "status", server.url, "agt_9"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "active"
    status_hit = server.hits("/agent/status")[0]
    jwt.decode(
        status_hit.token, public_key_of(host.public_jwk), algorithms=["EdDSA"], audience=server.url
    )

    assert cli_main(["revoke", server.url, "agt_9", "--state", str(state_path)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "revoked"
    assert json.loads(state_path.read_text())["agents"] == {}

    assert cli_main(["status", server.url, "agt_9", "--state", str(state_path)]) == 1
    assert json.loads(capsys.readouterr().err)["error"] == "agent_not_found"


def test_redirects_keep_the_token_only_on_the_same_origin(server: FakeServer) -> None:
    port = urlsplit(server.url).port
    server.routes["/same"] = lambda req, h: (302, {"Location": "/target"}, "")
    server.routes["/cross"] = lambda req, h: (
        302,
        {"Location": f"http://localhost:{port}/target"},
        "",
    )
    server.json_route("/target", {"ok": True})
    assert client_http.request("GET", server.url + "/same", token="t1").body == {"ok": True}
    assert client_http.request("GET", server.url + "/cross", token="t2").body == {"ok": True}
    first, second = server.hits("/target")
    assert first.headers.get("authorization") == "Bearer t1"
    assert "authorization" not in second.headers


def test_unexpected_404_refreshes_discovery_once(server: FakeServer) -> None:
    doc = server.discovery()
    doc["endpoints"]["status"] = "/old/status"
    server.json_route("/.well-known/agent-configuration", doc)
    client, _ = make_client(server)
    client.discover()
    moved = json.loads(json.dumps(doc))
    moved["endpoints"]["status"] = "/new/status"
    server.json_route("/.well-known/agent-configuration", moved)
    server.json_route("/new/status", {"agent_id": "agt_1", "status": "active"})
    assert client.status("agt_1")["status"] == "active"
    assert [len(server.hits(p)) for p in ("/old/status", "/new/status")] == [1, 1]
    old_jti, new_jti = (
        jwt.decode(server.hits(p)[0].token, options={"verify_signature": False})["jti"]
        for p in ("/old/status", "/new/status")
    )
    assert old_jti != new_jti


# ------------------------------------------------------------------- CLI parity with the SDK


@pytest.fixture
def cli_agent(server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A state file holding one registered agent, agt_9 of hst_9 at ``server``."""
    server.discovery()
    registered = {"agent_id": "agt_9", "host_id": "hst_9", "status": "active"}
    grants = [{"capability": "check_balance", "status": "active"}]
    server.json_route("/agent/register", {**registered, "agent_capability_grants": grants})
    state_path = tmp_path / "state.json"
    assert cli_main(["register", server.url, "--name", "bot", "--state", str(state_path)]) == 0
    capsys.readouterr()
    return state_path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert cli_main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_cli_capabilities_and_describe(
    server: FakeServer, cli_agent: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.json_route(
        "/capability/list",
        {"capabilities": [{"name": "check_balance", "description": "d"}], "has_more": False},
    )
    server.json_route("/capability/describe", {"name": "check_balance", "description": "d"})
    state = ["--state", str(cli_agent)]
    listed = run_cli(capsys, "capabilities", server.url, "--query", "balance", *state)
    assert listed == [{"name": "check_balance", "description": "d"}]
    anonymous = server.hits("/capability/list")[-1]
    assert "authorization" not in anonymous.headers and anonymous.query["query"] == ["balance"]
    run_cli(capsys, "capabilities", server.url, "--agent", "agt_9", *state)
    as_agent = jwt.decode(
        server.hits("/capability/list")[-1].token, options={"verify_signature": False}
    )
    assert as_agent["sub"] == "agt_9" and as_agent["aud"] == server.url
    described = run_cli(capsys, "describe", server.url, "check_balance", *state)
    assert described["name"] == "check_balance"
    assert server.hits("/capability/describe")[-1].query["name"] == ["check_balance"]


def test_cli_request_reactivate_sign_and_introspect(
    server: FakeServer, cli_agent: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state", str(cli_agent)]
    server.json_route(
        "/agent/request-capability",
        {
            "agent_id": "agt_9",
            "agent_capability_grants": [{"capability": "transfer", "status": "pending"}],
        },
    )
    out = run_cli(capsys, "request", server.url, "agt_9", "transfer", "--reason", "why", *state)
    assert out["agent_capability_grants"][0]["status"] == "pending"
    assert server.hits("/agent/request-capability")[0].json == {
        "capabilities": ["transfer"],
        "reason": "why",
    }
    stored = json.loads(cli_agent.read_text())["agents"]["agt_9"]
    assert {g["capability"]: g["status"] for g in stored["grants"]} == {
        "check_balance": "active",
        "transfer": "pending",
    }

    server.json_route("/agent/reactivate", {"agent_id": "agt_9", "status": "active"})
    assert run_cli(capsys, "reactivate", server.url, "agt_9", *state)["status"] == "active"
    assert server.hits("/agent/reactivate")[0].json == {"agent_id": "agt_9"}

    token = run_cli(capsys, "sign", server.url, "agt_9", "--capability", "check_balance", *state)[
        "token"
    ]
    agent = Keypair.from_private_jwk(stored["agent_key"])
    claims = jwt.decode(
        token, public_key_of(agent.public_jwk), algorithms=["EdDSA"], audience=server.url
    )
    assert claims["sub"] == "agt_9" and claims["capabilities"] == ["check_balance"]
    # The agent's own sign tool never vouches for what it does not hold.
    assert cli_main(["sign", server.url, "agt_9", "--capability", "transfer", *state]) == 1
    assert json.loads(capsys.readouterr().err)["error"] == "capability_not_granted"

    server.json_route("/agent/introspect", {"active": True, "agent_id": "agt_9"})
    assert run_cli(capsys, "introspect", server.url, token, *state)["active"] is True
    assert server.hits("/agent/introspect")[0].json == {"token": token}


def test_cli_key_rotations_update_the_state_file(
    server: FakeServer, cli_agent: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state", str(cli_agent)]
    before = json.loads(cli_agent.read_text())
    old_host = Keypair.from_private_jwk(before["host"])
    old_agent = Keypair.from_private_jwk(before["agents"]["agt_9"]["agent_key"])

    server.json_route("/agent/rotate-key", {"agent_id": "agt_9", "status": "active"})
    run_cli(capsys, "rotate-agent-key", server.url, "agt_9", *state)
    new_agent = Keypair.from_private_jwk(
        json.loads(cli_agent.read_text())["agents"]["agt_9"]["agent_key"]
    )
    assert new_agent != old_agent
    [hit] = server.hits("/agent/rotate-key")
    assert hit.json == {"agent_id": "agt_9", "public_key": new_agent.wire_jwk}

    server.json_route("/host/rotate-key", {"host_id": "hst_9", "status": "active"})
    run_cli(capsys, "rotate-host-key", server.url, *state)
    new_host = Keypair.from_private_jwk(json.loads(cli_agent.read_text())["host"])
    assert new_host != old_host
    [hit] = server.hits("/host/rotate-key")
    jwt.decode(
        hit.token, public_key_of(old_host.public_jwk), algorithms=["EdDSA"], audience=server.url
    )
    assert hit.json == {"public_key": new_host.wire_jwk}
    assert stat.S_IMODE(cli_agent.stat().st_mode) == 0o600


def test_cli_revoke_host_forgets_that_servers_agents(
    server: FakeServer, cli_agent: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.json_route(
        "/host/revoke", {"host_id": "hst_9", "status": "revoked", "agents_revoked": 1}
    )
    state = ["--state", str(cli_agent)]
    assert run_cli(capsys, "revoke-host", server.url, *state)["agents_revoked"] == 1
    assert server.hits("/host/revoke")[0].json == {}
    assert json.loads(cli_agent.read_text())["agents"] == {}


def test_cli_agent_iss_option(
    server: FakeServer, cli_agent: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.json_route("/capability/execute", {"data": {}})
    state = ["--state", str(cli_agent)]
    for choice, expected in (("host_id", "hst_9"), ("omit", None)):
        run_cli(
            capsys, "execute", server.url, "agt_9", "check_balance", "--agent-iss", choice, *state
        )
        claims = jwt.decode(
            server.hits("/capability/execute")[-1].token, options={"verify_signature": False}
        )
        assert claims.get("iss") == expected
