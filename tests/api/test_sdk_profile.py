"""The official TypeScript SDK's wire habits, reproduced as a client profile over real HTTP.

The SDK signs agent JWTs without ``iss`` (§4.3 makes it optional; the server finds the host
through ``sub``, §4.5 step 4), puts ``kid`` in every JWK and JWT header, sends host JWTs with
``sub`` equal to ``iss``, and finds a capability's ``location`` (§2.12, §2.15) only in
``GET /capability/list`` entries: if the list left it out, the SDK would post a located
capability to ``default_location`` and get ``400``.
"""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import jwt
import pytest
from django.core.management import call_command

from agentauth.client import AgentAuthClient, AgentConnection, Keypair
from agentauth.client import http as client_http
from agentauth.models import Agent
from agentauth.testing import make_host
from example_project.support.models import Ticket

pytestmark = pytest.mark.django_db(transaction=True)


class SdkProfileClient(AgentAuthClient):
    """Our client, narrowed to what the TypeScript SDK does."""

    def __init__(self, base_url: str, host: Keypair | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, host, agent_iss="omit", **kwargs)

    def _capability_location(self, connection: AgentConnection, capability: str) -> str:
        # No grant `location`, no describe: list entries only, else default_location.
        for entry in self.all_capabilities(connection):
            if entry.get("name") == capability and entry.get("location"):
                return str(entry["location"])
        return self.default_location


def _claims(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def test_sdk_profile_signs_like_the_sdk(issuer: str) -> None:
    client = SdkProfileClient(issuer)
    agent = Keypair.generate()
    header, claims = _claims(client._host_token(agent))
    assert header["kid"] == claims["iss"] == claims["sub"] == client.host.thumbprint
    assert claims["host_public_key"]["kid"] == client.host.thumbprint
    assert claims["agent_public_key"]["kid"] == agent.thumbprint
    connection = AgentConnection("agt_x", "hst_x", agent, "active")
    header, claims = _claims(client._agent_token(connection))
    assert header["kid"] == agent.thumbprint
    assert "iss" not in claims


def test_sdk_profile_executes_a_located_capability(issuer: str, user: Any) -> None:
    # §2.15: a capability with its own location is executed there, aud = that URL; the SDK
    # learns the location from the list entry (§5.2, fields of §2.12).
    ticket = Ticket.objects.create(subject="Printer on fire")
    host_key = Keypair.generate()
    make_host(user=user, key=host_key)
    client = SdkProfileClient(issuer, host_key)
    connection = client.register("SDK-style agent", capabilities=["ticket.read", "ticket.escalate"])
    out = StringIO()
    call_command("agentauth_approve", connection.agent_id, "--user", "alice", stdout=out)
    assert json.loads(out.getvalue())["status"] == "active"
    client.status(connection)

    entries = {e["name"]: e for e in client.all_capabilities(connection)}
    assert entries["ticket.escalate"]["location"] == issuer.removesuffix("/api/auth") + (
        "/support/escalate"
    )
    assert "location" not in entries["ticket.read"]

    result = client.execute(connection, "ticket.escalate", {"ticket_id": str(ticket.pk)})
    assert result["data"]["priority"] == "critical"
    assert client.execute(connection, "ticket.read", {"ticket_id": str(ticket.pk)})["data"]
    assert Agent.objects.get(pk=connection.agent_id).last_used_at is not None


def test_without_the_list_location_the_sdk_would_be_refused(issuer: str, user: Any) -> None:
    # What the SDK saw before list entries carried location: default_location answers 400
    # with the capability's location, so nothing runs at the wrong place.
    host_key = Keypair.generate()
    make_host(user=user, key=host_key)
    client = SdkProfileClient(issuer, host_key)
    connection = client.register("SDK-style agent", capabilities=["ticket.escalate"])
    call_command("agentauth_approve", connection.agent_id, "--user", "alice", stdout=StringIO())
    token = client._agent_token(
        connection, audience=client.default_location, capabilities=["ticket.escalate"]
    )
    resp = client_http.request(
        "POST",
        client.default_location,
        token=token,
        json_body={"capability": "ticket.escalate", "arguments": {"ticket_id": "1"}},
    )
    assert resp.status == 400 and resp.body["error"] == "invalid_request"
    assert resp.body["location"].endswith("/support/escalate")
