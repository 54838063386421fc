"""End to end over real HTTP: ``agentauth.client.AgentAuthClient`` against ``live_server``.

Nothing here uses Django's test client: every request is signed by the agent-side client, sent
through its own HTTP stack to a running server, and parsed back from the wire, so the discovery
document, JWT audiences, status codes and JSON shapes are checked exactly as a real agent sees
them. Decisions a person would take are taken with ``agentauth_approve``, as an operator would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from agentauth.approvals import find_by_user_code
from agentauth.client import (
    AgentAuthClient,
    AgentConnection,
    Keypair,
    ProtocolError,
    sign_host_jwt,
)
from agentauth.client import http as client_http
from agentauth.models import Agent, AgentStatus, Host, HostStatus

# live_server implies transactional_db; say so, since the server thread must see our writes.
pytestmark = pytest.mark.django_db(transaction=True)

USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")

ClientFactory = Callable[..., AgentAuthClient]


@pytest.fixture
def make_client(issuer: str) -> ClientFactory:
    """A client with its own (new) host key unless one is given; loopback http is allowed."""

    def make(host: Keypair | None = None, **kwargs: Any) -> AgentAuthClient:
        return AgentAuthClient(issuer, host, **kwargs)

    return make


def approve(agent_id: str, *args: str) -> dict[str, Any]:
    """Run ``agentauth_approve`` as alice and return its JSON summary."""
    out = StringIO()
    call_command("agentauth_approve", agent_id, "--user", "alice", *args, stdout=out)
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def grants_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["capability"]: g for g in body["agent_capability_grants"]}


def test_loopback_http_is_accepted_without_opt_in(live_server: Any) -> None:
    # spec: §8.9 — plain http is tolerated only on loopback; live_server binds localhost.
    client = AgentAuthClient(live_server.url + "/api/auth")
    assert client.allow_insecure_http is False
    assert client.base_url.startswith("http://localhost:") or client.base_url.startswith(
        "http://127.0.0.1:"
    )


def test_acceptance_walk(make_client: ClientFactory, issuer: str, user: Any, settings: Any) -> None:
    # spec: §5.1, §7, §2.8, §2.2.2, §7.1, §5.5, §5.10, §8.5, §4.5.1 step 8, §5.3
    # 1. Discovery.
    auto = make_client()
    doc = auto.discover()
    assert doc["version"] == "1.0-draft"
    assert doc["issuer"] == issuer
    assert doc["default_location"] == issuer + "/capability/execute"
    assert doc["algorithms"] == ["Ed25519"]
    for key, path in {
        "register": "/agent/register",
        "status": "/agent/status",
        "revoke": "/agent/revoke",
        "revoke_host": "/host/revoke",
    }.items():
        assert doc["endpoints"][key] == path
        assert auto.endpoint(key) == issuer + path

    # 2. An autonomous agent under the configured policy is active at once (§2.8).
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["check_balance"]
    bot = auto.register(
        "Deploy bot", mode="autonomous", capabilities=["check_balance"], host_name="CI runner"
    )
    assert bot.status == "active"
    assert bot.approval is None
    assert bot.active_capabilities == ["check_balance"]
    assert bot.agent_id.startswith("agt_") and bot.host_id and bot.host_id.startswith("hst_")
    body = auto.status(bot)
    assert body["status"] == "active" and body["mode"] == "autonomous"
    assert "user_id" not in body
    grant = grants_by_name(body)["check_balance"]
    assert grant["status"] == "active" and grant["description"]
    assert grant["input"]["required"] == ["account_id"]
    auto_host = Host.objects.get(pk=bot.host_id)
    assert auto_host.status == HostStatus.ACTIVE and auto_host.user_id is None
    assert auto_host.thumbprint == auto.host.thumbprint

    # 3. A delegated agent from a host the server has never seen waits for a person (§2.8).
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = None
    laptop = make_client(Keypair.generate())
    assert laptop.host.thumbprint != auto.host.thumbprint
    helper = laptop.register(
        "Ticket helper",
        capabilities=["check_balance", "transfer"],
        reason="Pay my bills",
        host_name="Alice's laptop",
    )
    assert helper.status == "pending"
    assert helper.grants == [
        {"capability": "check_balance", "status": "pending"},
        {"capability": "transfer", "status": "pending"},
    ]
    approval = helper.approval
    assert approval is not None
    assert approval["method"] == "device_authorization"
    assert USER_CODE.match(approval["user_code"])
    assert approval["verification_uri"] == issuer + "/device"
    assert approval["verification_uri_complete"] == (
        issuer + "/device?code=" + approval["user_code"]
    )
    assert approval["interval"] == 1 and 0 < approval["expires_in"] <= 300
    # A pending host may poll status (§4.5.1 step 8), and gets no access meanwhile.
    assert laptop.status(helper)["status"] == "pending"
    assert Host.objects.get(pk=helper.host_id).status == HostStatus.PENDING

    # 4. Alice approves from the shell; the next poll shows it.
    assert approve(helper.agent_id) == {
        "agent_id": helper.agent_id,
        "status": "active",
        "approved": ["check_balance", "transfer"],
        "denied": [],
    }
    body = laptop.status(helper)
    assert body["status"] == "active" and body["mode"] == "delegated"
    assert body["user_id"] == str(user.pk)
    assert body["activated_at"].endswith("Z") and body["expires_at"].endswith("Z")
    for name in ("check_balance", "transfer"):
        g = grants_by_name(body)[name]
        assert g["status"] == "active" and g["granted_by"] == str(user.pk)
    assert helper.status == "active" and helper.approval is None
    assert sorted(helper.active_capabilities) == ["check_balance", "transfer"]
    laptop_host = Host.objects.get(pk=helper.host_id)
    assert laptop_host.status == HostStatus.ACTIVE and laptop_host.user_id == user.pk

    # 5. The host is now linked: a second delegated agent is active at once, but a capability
    # outside the host's defaults still waits, so an approval comes back (§5.3).
    second = laptop.register("Second helper", capabilities=["check_balance"])
    assert second.status == "active"
    assert second.grants == [{"capability": "check_balance", "status": "pending"}]
    assert second.approval is not None and USER_CODE.match(second.approval["user_code"])

    # 6. The host revokes itself; every agent under it goes with it (§8.5, §5.10).
    result = laptop.revoke_host()
    assert result == {"host_id": helper.host_id, "status": "revoked", "agents_revoked": 2}
    assert set(Agent.objects.filter(host_id=helper.host_id).values_list("status", flat=True)) == {
        AgentStatus.REVOKED
    }
    with pytest.raises(ProtocolError) as exc:
        laptop.status(helper)
    assert exc.value.code == "host_revoked" and exc.value.status == 403
    with pytest.raises(ProtocolError) as exc:
        laptop.register("After revocation")
    assert exc.value.code == "host_revoked" and exc.value.status == 403
    # The other host is untouched.
    assert auto.status(bot)["status"] == "active"


def test_discovery_from_the_site_root_resolves_to_the_issuer(live_server: Any, issuer: str) -> None:
    # spec: §6.2.3, §5.1 — a client given the bare origin ends up on the issuer.
    client = AgentAuthClient(live_server.url)
    assert client.issuer == issuer
    assert client.endpoint("register") == issuer + "/agent/register"
    connection = client.register("From the root", capabilities=["check_balance"])
    assert connection.status == "pending"
    assert client.status(connection)["agent_id"] == connection.agent_id


def test_pending_registration_retry_is_idempotent_over_the_wire(
    make_client: ClientFactory, user: Any
) -> None:
    # spec: §5.3, §7.1
    client = make_client()
    agent_key = Keypair.generate()
    body = {"name": "Retrying agent", "capabilities": ["check_balance"]}

    def post_register() -> dict[str, Any]:
        # A fresh host JWT (new jti) each time, carrying the same agent key.
        token = sign_host_jwt(client.host, audience=client.issuer, agent_public_key=agent_key)
        response = client_http.request(
            "POST", client.endpoint("register"), token=token, json_body=body
        )
        result: dict[str, Any] = client_http.raise_for_error(response).body
        return result

    first = post_register()
    second = post_register()
    assert first["status"] == second["status"] == "pending"
    assert second["agent_id"] == first["agent_id"]
    assert second["host_id"] == first["host_id"]
    assert Agent.objects.filter(host_id=first["host_id"]).count() == 1
    # The retry refreshed the approval flow: only the newest user code is live.
    first_code = first["approval"]["user_code"]
    second_code = second["approval"]["user_code"]
    assert first_code != second_code
    assert find_by_user_code(first_code) is None
    assert find_by_user_code(second_code) is not None

    approve(first["agent_id"])
    with pytest.raises(ProtocolError) as exc:
        post_register()
    assert exc.value.code == "agent_exists" and exc.value.status == 409
    # The client itself never retries with an old key: each register() is a new agent.
    again = client.register("Retrying agent", capabilities=["check_balance"])
    assert again.agent_id != first["agent_id"] and again.status == "active"


def test_partial_approval_with_capability_option(make_client: ClientFactory, user: Any) -> None:
    # spec: §5.3, §5.5, §7.1 (per-capability deny keeps the agent active)
    client = make_client()
    connection = client.register("Careful agent", capabilities=["check_balance", "transfer"])
    assert connection.status == "pending"
    summary = approve(
        connection.agent_id, "--capability", "check_balance", "--reason", "Balance only for now"
    )
    assert summary["approved"] == ["check_balance"] and summary["denied"] == ["transfer"]
    body = client.status(connection)
    assert body["status"] == "active" and body["user_id"] == str(user.pk)
    grants = grants_by_name(body)
    assert grants["check_balance"]["status"] == "active"
    assert grants["check_balance"]["granted_by"] == str(user.pk)
    assert grants["transfer"] == {
        "capability": "transfer",
        "status": "denied",
        "reason": "Balance only for now",
    }
    assert connection.active_capabilities == ["check_balance"]


def test_constraints_chosen_by_the_approver_reach_the_wire(
    make_client: ClientFactory, user: Any
) -> None:
    # spec: §5.3, §2.13 — the grant carries the effective (approved) constraints.
    client = make_client()
    connection = client.register(
        "Constrained agent",
        capabilities=[{"name": "transfer", "constraints": {"amount": {"max": 1000}}}],
    )
    approve(connection.agent_id, "--constraints", '{"transfer": {"amount": {"max": 100}}}')
    grant = grants_by_name(client.status(connection))["transfer"]
    assert grant["status"] == "active"
    assert grant["constraints"] == {"amount": {"max": 100}}


def test_deny_from_an_unknown_host_rejects_the_host_too(
    make_client: ClientFactory, user: Any
) -> None:
    # spec: §7.1, §2.11 — denying a new host's first connection rejects both.
    client = make_client()
    connection = client.register("Unwanted", capabilities=["check_balance"])
    summary = approve(connection.agent_id, "--deny")
    assert summary["status"] == "rejected" and summary["denied"] == ["check_balance"]
    assert Agent.objects.get(pk=connection.agent_id).status == AgentStatus.REJECTED
    assert Host.objects.get(pk=connection.host_id).status == HostStatus.REJECTED
    # §7.1 step 4: the poll ends on "rejected"; the rejected host may still read it.
    assert client.status(connection)["status"] == "rejected"
    assert connection.status == "rejected"
    with pytest.raises(ProtocolError) as exc:
        client.register("Trying again")
    assert exc.value.code == "host_rejected" and exc.value.status == 403


def test_deny_under_an_approved_host_shows_rejected_in_status(
    make_client: ClientFactory, user: Any
) -> None:
    # spec: §5.5, §7.1 — the host stays usable, the agent is rejected.
    client = make_client()
    kept = client.register("Kept", capabilities=["check_balance"])
    dropped = client.register("Dropped", capabilities=["transfer"])
    assert kept.status == dropped.status == "pending"
    approve(kept.agent_id)
    # Approving the host's first agent does not approve the other pending one (§2.11).
    assert client.status(dropped)["status"] == "pending"
    approve(dropped.agent_id, "--deny")
    body = client.status(dropped)
    assert body["status"] == "rejected"
    assert body["agent_capability_grants"][0]["status"] == "denied"
    assert client.status(kept)["status"] == "active"
    assert Host.objects.get(pk=kept.host_id).status == HostStatus.ACTIVE


def test_wait_for_approval_returns_once_approved(make_client: ClientFactory, user: Any) -> None:
    # spec: §12.1, §7.1, §5.3 — polls status at >= the server's interval until it leaves pending.
    waits: list[float] = []
    connection: AgentConnection | None = None

    def sleep(seconds: float) -> None:
        # Runs between polls, in this thread: the first poll still sees ``pending``, then
        # alice approves before the second.
        waits.append(seconds)
        if len(waits) == 2:
            assert connection is not None
            approve(connection.agent_id)

    client = make_client(sleep=sleep)
    connection = client.register("Patient agent", capabilities=["check_balance"])
    assert connection.approval is not None and connection.approval["interval"] == 1
    body = client.wait_for_approval(connection, interval=0.01, timeout=30)
    assert body["status"] == "active"
    assert grants_by_name(body)["check_balance"]["status"] == "active"
    assert connection.status == "active" and connection.active_capabilities == ["check_balance"]
    # Two polls; the client never waited less than the approval's interval (§7 ``interval``).
    assert waits == [1.0, 1.0]


def test_wait_for_named_capabilities_returns_their_denial(
    make_client: ClientFactory, user: Any
) -> None:
    # spec: §7.1, §7.2 — real sleeps: waiting on named grants ends when they leave
    # ``pending``, and a denial is returned as the final body, not raised or retried.
    client = make_client()
    kept = client.register("Kept", capabilities=["check_balance"])
    approve(kept.agent_id)
    dropped = client.register("Dropped", capabilities=["check_balance"])
    # Under the now linked host the agent is active at once, with the grant pending.
    assert dropped.status == "active" and dropped.pending_capabilities() == ["check_balance"]
    approve(dropped.agent_id, "--deny")
    body = client.wait_for_approval(
        dropped, interval=0.01, timeout=10, capabilities=["check_balance"]
    )
    assert body["status"] == "active"
    assert grants_by_name(body)["check_balance"]["status"] == "denied"
    assert dropped.pending_capabilities() == []
