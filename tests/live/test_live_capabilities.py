"""Over real HTTP: an agent uses the support desk's capabilities.

Black box, like ``tests/live/test_live_server.py``: ``AgentAuthClient`` talks to ``live_server``;
the operator's steps (pre-registering the host, approving a capability) are management commands.
The agent reaches the capabilities three ways: the execute endpoint, the project's guarded views
(plain and DRF) with JWTs the client signs, and a capability's own ``location``.
"""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from agentauth.client import AgentAuthClient, Keypair, ProtocolError
from agentauth.client import http as client_http
from agentauth.models import HostStatus
from example_project.support.models import Ticket

pytestmark = pytest.mark.django_db(transaction=True)

CLOSE_CONSTRAINTS = {"ticket.close": {"priority": {"not_in": ["critical"]}}}
NOT_CRITICAL = {"priority": {"not_in": ["critical"]}}


@pytest.fixture
def tickets() -> dict[str, Ticket]:
    return {
        "low": Ticket.objects.create(subject="Printer jam", priority="low"),
        "low2": Ticket.objects.create(subject="Mouse broken", priority="low"),
        "critical": Ticket.objects.create(subject="Site down", priority="critical"),
        "normal": Ticket.objects.create(subject="Password reset", priority="normal"),
    }


def run(command: str, *args: str) -> dict[str, Any]:
    out = StringIO()
    call_command(command, *args, stdout=out)
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def error_of(call: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as exc:
        call()
    return exc.value


def test_support_agent_walk(issuer: str, live_server: Any, user: Any, tickets: Any) -> None:
    # spec: §2.7, §7, §5.2, §2.12, §2.15, §5.12, §4.3, §7.1, §5.3, §2.13, §5.14
    low, low2, critical = tickets["low"], tickets["low2"], tickets["critical"]
    site = live_server.url

    # 1. The operator pre-registers alice's laptop, linked, with ticket.read as a default.
    host_key = Keypair.generate()
    created = run(
        "agentauth_create_host",
        "--jwk",
        json.dumps(host_key.public_jwk),
        "--user",
        "alice",
        "--default-capability",
        "ticket.read",
    )
    assert created["status"] == HostStatus.ACTIVE and created["thumbprint"] == host_key.thumbprint

    # 2. A delegated agent asking for a default, approval_strength="none" capability is active
    # at once, with no approval to wait for.
    client = AgentAuthClient(issuer, host_key)
    connection = client.register("Support helper", capabilities=["ticket.read"])
    assert connection.status == "active"
    assert connection.approval is None
    assert connection.active_capabilities == ["ticket.read"]
    assert connection.host_id == created["host_id"]

    # 3. Listing with the agent's JWT shows what it holds.
    listing = {c["name"]: c for c in client.all_capabilities(connection)}
    assert listing["ticket.read"]["grant_status"] == "granted"
    assert listing["ticket.close"]["grant_status"] == "not_granted"
    assert listing["ticket.escalate"]["grant_status"] == "not_granted"
    assert set(listing["ticket.close"]) == {"name", "description", "grant_status"}

    # 4. Execute at the default location.
    result = client.execute(connection, "ticket.read", {"ticket_id": str(low.pk)})
    assert result == {"data": low.to_dict()}

    # 5. Not granted yet.
    exc = error_of(lambda: client.execute(connection, "ticket.close", {"ticket_id": str(low.pk)}))
    assert exc.code == "capability_not_granted" and exc.status == 403

    # 6. Ask for it: ticket.close needs a person (approval_strength "session").
    requested = client.request_capability(connection, ["ticket.close"], reason="Close done tickets")
    assert requested["agent_capability_grants"] == [
        {"capability": "ticket.close", "status": "pending"}
    ]
    approval = requested["approval"]
    assert approval["method"] == "device_authorization" and approval["user_code"]
    assert connection.pending_capabilities() == ["ticket.close"]

    # 7. Alice approves it, narrowed to non-critical tickets.
    decided = run(
        "agentauth_approve",
        connection.agent_id,
        "--user",
        "alice",
        "--capability",
        "ticket.close",
        "--constraints",
        json.dumps(CLOSE_CONSTRAINTS),
    )
    assert decided == {
        "agent_id": connection.agent_id,
        "status": "active",
        "approved": ["ticket.close"],
        "denied": [],
    }
    status = client.status(connection)
    grants = {g["capability"]: g for g in status["agent_capability_grants"]}
    assert grants["ticket.close"]["status"] == "active"
    assert grants["ticket.close"]["constraints"] == NOT_CRITICAL
    assert grants["ticket.close"]["granted_by"] == str(user.pk)
    assert sorted(connection.active_capabilities) == ["ticket.close", "ticket.read"]

    # 8. Within the constraint: closed.
    result = client.execute(
        connection, "ticket.close", {"ticket_id": str(low.pk), "priority": "low"}
    )
    assert result["data"]["status"] == "closed"
    low.refresh_from_db()
    assert low.status == Ticket.Status.CLOSED

    # 9. A critical ticket, stated with its real priority: refused with the violations.
    exc = error_of(
        lambda: client.execute(
            connection, "ticket.close", {"ticket_id": str(critical.pk), "priority": "critical"}
        )
    )
    assert exc.code == "constraint_violated" and exc.status == 403
    assert exc.extra["violations"] == [
        {"field": "priority", "constraint": {"not_in": ["critical"]}, "actual": "critical"}
    ]
    # ... and lying about the priority is caught by the handler (400, not a silent close).
    exc = error_of(
        lambda: client.execute(
            connection, "ticket.close", {"ticket_id": str(critical.pk), "priority": "low"}
        )
    )
    assert exc.code == "invalid_request" and exc.status == 400
    critical.refresh_from_db()
    assert critical.status == Ticket.Status.OPEN

    # 10. The plain guarded view, with a JWT the client signs for the issuer (aud = issuer).
    token = client.sign_agent_jwt(connection)
    response = client_http.request("GET", f"{site}/support/tickets/{low2.pk}", token=token)
    assert response.status == 200
    assert response.body == {"data": low2.to_dict()}
    # A JWT scoped to another capability does not open it (§2.15, §4.3).
    token = client.sign_agent_jwt(connection, capabilities=["ticket.close"])
    response = client_http.request("GET", f"{site}/support/tickets/{low2.pk}", token=token)
    exc = error_of(lambda: client_http.raise_for_error(response))
    assert exc.code == "capability_not_granted" and exc.status == 403
    # No JWT: the challenge tells the agent where to start (§5.14).
    response = client_http.request("GET", f"{site}/support/tickets/{low2.pk}")
    assert response.status == 401 and response.body["error"] == "invalid_jwt"
    assert response.headers["www-authenticate"] == (
        f'AgentAuth discovery="{issuer}/.well-known/agent-configuration"'
    )

    # 11. The DRF view, same grant and constraint.
    close_url = f"{site}/support/api/tickets/{{}}/close"
    response = client_http.request(
        "POST",
        close_url.format(low2.pk),
        token=client.sign_agent_jwt(connection),
        json_body={"priority": "low"},
    )
    assert response.status == 200 and response.body["data"]["status"] == "closed"
    response = client_http.request(
        "POST",
        close_url.format(critical.pk),
        token=client.sign_agent_jwt(connection),
        json_body={"priority": "critical"},
    )
    exc = error_of(lambda: client_http.raise_for_error(response))
    assert exc.code == "constraint_violated" and exc.status == 403
    assert exc.extra == {
        "violations": [
            {"field": "priority", "constraint": {"not_in": ["critical"]}, "actual": "critical"}
        ]
    }
    # Leaving the constrained field out fails closed, reported as JSON null.
    response = client_http.request(
        "POST",
        close_url.format(critical.pk),
        token=client.sign_agent_jwt(connection),
        json_body={},
    )
    exc = error_of(lambda: client_http.raise_for_error(response))
    assert exc.code == "constraint_violated"
    assert exc.extra["violations"][0]["actual"] is None
    critical.refresh_from_db()
    assert critical.status == Ticket.Status.OPEN


def test_capability_with_its_own_location(
    issuer: str, live_server: Any, user: Any, tickets: Any
) -> None:
    # spec: §2.15, §5.12, §2.12, §4.5, §4.3 — ticket.escalate is served by a project view.
    normal = tickets["normal"]
    host_key = Keypair.generate()
    # ticket.escalate and ticket.close are even host defaults: they still wait for a person,
    # since only approval_strength="none" capabilities are ever auto-approved (spec §8.10).
    run(
        "agentauth_create_host",
        "--jwk",
        json.dumps(host_key.public_jwk),
        "--user",
        "alice",
        "--default-capability",
        "ticket.escalate",
        "--default-capability",
        "ticket.close",
    )
    client = AgentAuthClient(issuer, host_key)
    connection = client.register("Escalator", capabilities=["ticket.escalate"])
    assert connection.status == "active"
    assert connection.pending_capabilities() == ["ticket.escalate"]
    run("agentauth_approve", connection.agent_id, "--user", "alice")
    client.status(connection)
    assert connection.active_capabilities == ["ticket.escalate"]
    # The same rule on request-capability.
    requested = client.request_capability(connection, ["ticket.close"])
    assert requested["agent_capability_grants"] == [
        {"capability": "ticket.close", "status": "pending"}
    ]

    described = client.describe_capability("ticket.escalate", connection)
    location = described["location"]
    assert location == live_server.url + "/support/escalate"
    assert described["grant_status"] == "granted"

    # The default location refuses it and names the right one.
    exc = error_of(
        lambda: client.execute(
            connection,
            "ticket.escalate",
            {"ticket_id": str(normal.pk)},
            location=client.default_location,
        )
    )
    assert exc.code == "invalid_request" and exc.extra["location"] == location

    # The client resolves the location itself (from the grant) and signs aud = that URL.
    result = client.execute(connection, "ticket.escalate", {"ticket_id": str(normal.pk)})
    assert result["data"]["priority"] == "critical"
    normal.refresh_from_db()
    assert normal.priority == "critical"

    # A token for the location is rejected elsewhere (aud is exact) but introspects as active,
    # which is how a separate resource server at that location would check it.
    token = client.sign_agent_jwt(connection, audience=location)
    response = client_http.request(
        "GET", f"{live_server.url}/support/tickets/{normal.pk}", token=token
    )
    assert response.status == 401 and response.body["error"] == "invalid_jwt"
    introspected = client.introspect(
        client.sign_agent_jwt(connection, audience=location),
        secret="introspection-secret-for-tests",
    )
    assert introspected["active"] is True and introspected["agent_id"] == connection.agent_id
