"""``agentauth.client`` against the TypeScript reference server (Better Auth + agent-auth).

Skipped unless ``AGENTAUTH_TEST_REFERENCE_URL`` names a running reference server (its origin,
e.g. ``http://127.0.0.1:4100``); ``.ci/run`` copies ../shared/peer/reference-server to a
temporary directory, starts it on a free port and runs this tier. Nothing here touches our
server: it checks that our client speaks the protocol to another implementation.

The reference server finds hosts by the ``kid`` inside the host JWK (the client sends
``kid`` = thumbprint in every JWK) and accepts an agent JWT's ``iss`` only when it is the
``host_id`` it returned (so this tier uses ``agent_iss="host_id"``). Where it departs from the
spec, the step is skipped with the section it violates, and runs again if the server is fixed.

People approve through the reference's own approval endpoint, as its README shows: a Better
Auth sign-up (session cookie) and ``POST /agent/approve-capability`` with an ``Origin`` header.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from agentauth.client import AgentAuthClient, AgentConnection, Keypair, ProtocolError

REFERENCE_URL = os.environ.get("AGENTAUTH_TEST_REFERENCE_URL", "").rstrip("/")

pytestmark = pytest.mark.skipif(
    not REFERENCE_URL, reason="set AGENTAUTH_TEST_REFERENCE_URL to a running reference server"
)

TICKET = {"ticket_id": "T-1001"}


class Approver:
    """A person signed in to the reference server, deciding through its approval endpoint."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        status, body = self.post(
            "/sign-up/email",
            {
                "email": f"approver-{uuid.uuid4().hex[:12]}@example.com",
                "password": "correct-horse-battery",
                "name": "Approver",
            },
        )
        assert status == 200, body

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.origin + "/api/auth" + path,
            data=json.dumps(body).encode(),
            headers={"Origin": self.origin, "Content-Type": "application/json"},
        )
        try:
            with self.opener.open(request, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def approve(self, connection: AgentConnection, action: str = "approve") -> Any:
        approval = connection.approval or {}
        assert approval.get("user_code"), connection.approval
        status, body = self.post(
            "/agent/approve-capability",
            {
                "agent_id": connection.agent_id,
                "action": action,
                "user_code": approval["user_code"],
            },
        )
        assert status == 200, body
        return body


@pytest.fixture(scope="module")
def approver() -> Approver:
    return Approver(REFERENCE_URL)


@pytest.fixture
def client() -> Iterator[AgentAuthClient]:
    yield AgentAuthClient(REFERENCE_URL, agent_iss="host_id", sleep=lambda _: None)


def grant_statuses(connection: AgentConnection) -> dict[str, str]:
    return {str(g["capability"]): str(g["status"]) for g in connection.grants}


def delegated(client: AgentAuthClient, approver: Approver, *caps: str) -> AgentConnection:
    """A delegated agent of a new host, approved by a person (§5.3, §7.1)."""
    connection = client.register("Interop delegated", capabilities=list(caps))
    assert connection.status == "pending" and connection.approval is not None
    assert connection.approval["method"] == "device_authorization"
    approver.approve(connection)
    assert client.status(connection)["status"] == "active"
    return connection


def test_discover(client: AgentAuthClient) -> None:
    # §5.1
    doc = client.discover()
    assert doc["issuer"] == REFERENCE_URL + "/api/auth"
    assert "Ed25519" in doc["algorithms"]
    assert client.endpoint("register").startswith(REFERENCE_URL)
    names = {c["name"] for c in client.all_capabilities(auth="none")}
    assert {"ticket.read", "ticket.close"} <= names


def test_autonomous_registration_and_execution(client: AgentAuthClient) -> None:
    # §5.3, §5.11: the reference grants its host defaults to autonomous agents of new hosts.
    connection = client.register(
        "Interop autonomous", capabilities=["ticket.read"], mode="autonomous"
    )
    assert connection.status == "active", connection.raw
    assert grant_statuses(connection) == {"ticket.read": "active"}
    result = client.execute(connection, "ticket.read", TICKET)
    assert result["data"]["arguments"] == TICKET
    assert result["data"]["agent_id"] == connection.agent_id


def test_delegated_registration_approved_by_a_person(
    client: AgentAuthClient, approver: Approver
) -> None:
    # §5.3 (unknown host: pending), §7.1 (device authorization, poll status), §5.11
    connection = delegated(client, approver, "ticket.read", "ticket.close")
    assert grant_statuses(connection) == {"ticket.read": "active", "ticket.close": "active"}
    arguments = {"ticket_id": "T-7", "priority": "low"}
    assert client.execute(connection, "ticket.close", arguments)["data"]["arguments"] == arguments


def test_denied_registration_is_observable(client: AgentAuthClient, approver: Approver) -> None:
    # §7.1 step 4: polling ends on "rejected".
    connection = client.register("Interop denied", capabilities=["ticket.close"])
    approver.approve(connection, action="deny")
    try:
        body = client.status(connection)
    except ProtocolError as exc:
        pytest.skip(f"reference answers {exc.status} {exc.code} to the status poll (§7.1 step 4)")
    assert body["status"] == "rejected"


def test_request_capability_then_approval(client: AgentAuthClient, approver: Approver) -> None:
    # §5.4: a capability outside the host's defaults waits for the person.
    connection = delegated(client, approver, "ticket.read")
    result = client.request_capability(connection, ["ticket.close"], reason="Close solved tickets")
    assert {g["capability"]: g["status"] for g in result["agent_capability_grants"]} == {
        "ticket.close": "pending"
    }
    approver.approve(connection)
    client.status(connection)
    assert grant_statuses(connection)["ticket.close"] == "active"
    arguments = {"ticket_id": "T-8", "priority": "high"}
    assert client.execute(connection, "ticket.close", arguments)["data"]["arguments"] == arguments


def test_reactivate(client: AgentAuthClient) -> None:
    # §5.6 step 1: an active agent gets its status back unchanged. (Driving a real expiry needs
    # the reference's session TTL to elapse; server.mjs has no knob to shorten it.)
    connection = client.register(
        "Interop reactivate", capabilities=["ticket.read"], mode="autonomous"
    )
    body = client.reactivate(connection)
    assert body["status"] == "active"
    assert grant_statuses(connection) == {"ticket.read": "active"}


def test_rotate_agent_key(client: AgentAuthClient) -> None:
    # §5.8: the new key works at once, the old one no longer verifies.
    connection = client.register("Interop rotate", capabilities=["ticket.read"], mode="autonomous")
    old = connection.agent
    assert client.rotate_agent_key(connection, Keypair.generate())["status"] == "active"
    assert client.execute(connection, "ticket.read", TICKET)["data"]
    stale = AgentConnection(
        connection.agent_id, connection.host_id, old, "active", connection.grants
    )
    with pytest.raises(ProtocolError) as exc:
        client.execute(stale, "ticket.read", TICKET)
    assert exc.value.status == 401


def test_rotate_host_key(client: AgentAuthClient) -> None:
    # §5.9, §4.2: host JWTs are signed with the current key and name the host by its thumbprint.
    connection = client.register(
        "Interop host rotate", capabilities=["ticket.read"], mode="autonomous"
    )
    try:
        result = client.rotate_host_key(Keypair.generate())
    except ProtocolError as exc:
        if exc.code == "host_not_found":
            pytest.skip(
                "reference violates §4.2 (inline-key hosts are identified by iss = key "
                "thumbprint): /host/rotate-key looks the host up by its random host_id only"
            )
        raise
    assert result["status"] == "active"
    assert client.status(connection)["status"] == "active"


def test_introspect(client: AgentAuthClient) -> None:
    # §5.12
    connection = client.register(
        "Interop introspect", capabilities=["ticket.read"], mode="autonomous"
    )
    body = client.introspect(client.sign_agent_jwt(connection))
    assert body["active"] is True and body["agent_id"] == connection.agent_id
    assert client.introspect("not.a.jwt") == {"active": False}


def test_revoke_agent_then_host(client: AgentAuthClient) -> None:
    # §5.7, §5.10
    first = client.register("Interop revoke 1", capabilities=["ticket.read"], mode="autonomous")
    second = client.register("Interop revoke 2", capabilities=["ticket.read"], mode="autonomous")
    assert client.revoke(first)["status"] == "revoked"
    with pytest.raises(ProtocolError) as exc:
        client.execute(first, "ticket.read", TICKET)
    assert exc.value.code == "agent_revoked"
    result = client.revoke_host()
    assert result["status"] == "revoked" and result["agents_revoked"] == 1
    with pytest.raises(ProtocolError) as exc:
        client.execute(second, "ticket.read", TICKET)
    assert exc.value.status in (401, 403)


def test_agent_iss_thumbprint_as_the_spec_shows(client: AgentAuthClient) -> None:
    # §4.3: an agent JWT's iss is "the JWK thumbprint of the host's current signing key".
    spec_client = AgentAuthClient(REFERENCE_URL, client.host, agent_iss="thumbprint")
    connection = spec_client.register(
        "Interop iss", capabilities=["ticket.read"], mode="autonomous"
    )
    try:
        spec_client.execute(connection, "ticket.read", TICKET)
    except ProtocolError as exc:
        if exc.status == 401:
            pytest.skip(
                "reference violates §4.3: it refuses an agent JWT whose iss is the host key "
                "thumbprint, accepting only its own host_id (agent_iss='host_id') or no iss"
            )
        raise
