"""The real-time approval profile (spec §10.10.2): ``notification_url`` and its SSE stream.

These go through Django's test client, which serves the stream's synchronous (WSGI) form; the
asynchronous form under a real ASGI server is in ``tests/live/test_approval_events_asgi.py``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import Client
from django.utils import timezone

from agentauth import agents
from agentauth.client.sse import parse_event_stream
from agentauth.models import Agent, ApprovalRequest
from agentauth.testing import Keypair, host_token, make_agent, make_host
from tests.conftest import BASE, ISSUER, Api, assert_error, operator_decides

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def events_on(settings: Any) -> None:
    settings.AGENTAUTH_APPROVAL_EVENTS = True
    settings.AGENTAUTH_APPROVAL_EVENTS_MAX_SECONDS = 2
    cache.clear()


def pending_agent(api: Api, key: Keypair, capabilities: list[str] | None = None) -> dict[str, Any]:
    body = {"name": "x", "capabilities": capabilities or ["check_balance"]}
    reply = api.register(key, body=body)
    assert reply.status == 200 and reply.body["status"] == "pending", reply.body
    body = reply.body
    assert isinstance(body, dict)
    return body


def open_stream(client: Client, key: Keypair, agent_id: str, **params: str) -> Any:
    return client.get(
        f"{BASE}/agent/events/{agent_id}",
        params,
        HTTP_AUTHORIZATION=f"Bearer {host_token(key)}",
    )


def events(response: Any) -> list[tuple[str, Any]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    lines = b"".join(response.streaming_content).decode().splitlines(keepends=True)
    # The stream has no ``done`` (that is the execute profile's terminator); end it for the parser.
    found = parse_event_stream([*lines, "event: done\n", "\n"])
    return found[:-1]


def close(response: Any) -> None:
    """End a response as a WSGI server would, as the test client does for the streams it
    finishes: without ``close_old_connections``, which would close the test's transaction."""
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def status_body(api: Api, key: Keypair, agent_id: str) -> Any:
    cache.clear()  # the status endpoint paces polls; this is not a poll
    return api.get("/agent/status", token=host_token(key), agent_id=agent_id).body


def test_approval_object_carries_the_notification_url(api: Api, host_key: Keypair) -> None:
    body = pending_agent(api, host_key)
    assert body["approval"]["notification_url"] == f"{ISSUER}/agent/events/{body['agent_id']}"


def test_off_by_default_nothing_is_advertised_or_served(
    api: Api, client: Client, host_key: Keypair, settings: Any
) -> None:
    settings.AGENTAUTH_APPROVAL_EVENTS = False
    body = pending_agent(api, host_key)
    assert "notification_url" not in body["approval"]
    response = open_stream(client, host_key, body["agent_id"])
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_approved(api: Api, client: Client, host_key: Keypair, user: Any) -> None:
    body = pending_agent(api, host_key)
    operator_decides(Agent.objects.get(pk=body["agent_id"]), user)
    found = events(open_stream(client, host_key, body["agent_id"]))
    assert found == [("approved", status_body(api, host_key, body["agent_id"]))]
    assert found[0][1]["status"] == "active"


def test_partially_approved(api: Api, client: Client, host_key: Keypair, user: Any) -> None:
    body = pending_agent(api, host_key, ["check_balance", "read_only_note"])
    operator_decides(Agent.objects.get(pk=body["agent_id"]), user, approve=["check_balance"])
    found = events(open_stream(client, host_key, body["agent_id"]))
    assert [name for name, _ in found] == ["partially_approved"]
    grants = {g["capability"]: g["status"] for g in found[0][1]["agent_capability_grants"]}
    assert grants == {"check_balance": "active", "read_only_note": "denied"}


def test_denied(api: Api, client: Client, host_key: Keypair, user: Any) -> None:
    body = pending_agent(api, host_key)
    operator_decides(Agent.objects.get(pk=body["agent_id"]), user, reject=True)
    found = events(open_stream(client, host_key, body["agent_id"]))
    assert [(name, data["status"]) for name, data in found] == [("denied", "rejected")]


def test_expired(api: Api, client: Client, host_key: Keypair) -> None:
    body = pending_agent(api, host_key)
    ApprovalRequest.objects.filter(agent_id=body["agent_id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    found = events(open_stream(client, host_key, body["agent_id"]))
    assert [name for name, _ in found] == ["expired"]


def test_a_capability_request_of_an_active_agent_is_followed_too(
    api: Api, client: Client, user: Any
) -> None:
    host, key = make_host(user=user)
    agent, agent_key = make_agent(host, grants=["check_balance"])

    reply = api.request_capability(agent, agent_key, ["read_only_note"])
    assert reply.body["approval"]["notification_url"].endswith(f"/agent/events/{agent.pk}")
    operator_decides(agent, user)
    found = events(open_stream(client, key, agent.pk))
    assert [name for name, _ in found] == ["approved"]


def test_revoked_while_waiting(api: Api, client: Client, host_key: Keypair) -> None:
    body = pending_agent(api, host_key)
    agents.revoke_agent(Agent.objects.get(pk=body["agent_id"]), actor_type="host", actor_id="x")
    found = events(open_stream(client, host_key, body["agent_id"]))
    assert [(name, data["status"]) for name, data in found] == [("revoked", "revoked")]


def test_still_pending_the_stream_ends_after_the_limit_without_an_event(
    api: Api, client: Client, host_key: Keypair, settings: Any
) -> None:
    settings.AGENTAUTH_APPROVAL_EVENTS_MAX_SECONDS = 0
    body = pending_agent(api, host_key)
    assert events(open_stream(client, host_key, body["agent_id"])) == []


def test_needs_the_host_jwt(api: Api, client: Client, host_key: Keypair) -> None:
    body = pending_agent(api, host_key)
    response = client.get(f"{BASE}/agent/events/{body['agent_id']}")
    assert response.status_code == 401 and response.json()["error"] == "invalid_jwt"


def test_another_hosts_agent_is_refused(api: Api, client: Client, host_key: Keypair) -> None:
    body = pending_agent(api, host_key)
    _, other = make_host()
    response = open_stream(client, other, body["agent_id"])
    assert response.status_code == 403 and response.json()["error"] == "unauthorized"


def test_unknown_agent_and_unknown_parameters(api: Api, client: Client, host_key: Keypair) -> None:
    body = pending_agent(api, host_key)
    assert open_stream(client, host_key, "agt_nope").json()["error"] == "agent_not_found"
    response = open_stream(client, host_key, body["agent_id"], extra="1")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_streams_per_host_are_limited(
    api: Api, client: Client, host_key: Keypair, settings: Any
) -> None:
    settings.AGENTAUTH_APPROVAL_EVENTS_MAX_PER_HOST = 1
    body = pending_agent(api, host_key)
    first = open_stream(client, host_key, body["agent_id"])
    assert first.status_code == 200
    second = open_stream(client, host_key, body["agent_id"])
    assert second.status_code == 429 and second.json()["error"] == "rate_limited"
    assert second["Content-Type"] == "application/json"
    # Another host is not affected by this one's streams.
    _, other_key = make_host()
    other = pending_agent(api, other_key)
    third = open_stream(client, other_key, other["agent_id"])
    assert third.status_code == 200
    close(third)
    close(first)  # the response ends: its slot is free again, even though it was never read
    again = open_stream(client, host_key, body["agent_id"])
    assert again.status_code == 200
    close(again)


def test_streams_in_total_are_limited(
    api: Api, client: Client, host_key: Keypair, settings: Any
) -> None:
    settings.AGENTAUTH_APPROVAL_EVENTS_MAX_STREAMS = 1
    body = pending_agent(api, host_key)
    first = open_stream(client, host_key, body["agent_id"])
    assert first.status_code == 200
    _, other_key = make_host()
    other = pending_agent(api, other_key)
    assert_error_response = open_stream(client, other_key, other["agent_id"])
    assert assert_error_response.status_code == 429
    # A refused stream gives back what it took: the other host's count did not grow.
    close(first)
    settings.AGENTAUTH_APPROVAL_EVENTS_MAX_PER_HOST = 1
    second = open_stream(client, other_key, other["agent_id"])
    assert second.status_code == 200
    close(second)


def test_reading_to_the_end_frees_the_slot(
    api: Api, client: Client, host_key: Keypair, settings: Any, user: Any
) -> None:
    settings.AGENTAUTH_APPROVAL_EVENTS_MAX_PER_HOST = 1
    body = pending_agent(api, host_key)
    operator_decides(Agent.objects.get(pk=body["agent_id"]), user)
    response = open_stream(client, host_key, body["agent_id"])
    b"".join(response.streaming_content)  # not closed: the generator's end alone releases it
    assert open_stream(client, host_key, body["agent_id"]).status_code == 200


def test_error_bodies_are_spec_shaped(api: Api, host_key: Keypair) -> None:
    body = pending_agent(api, host_key)
    reply = api.get(f"/agent/events/{body['agent_id']}", token="not-a-jwt")
    assert_error(reply, 401, "invalid_jwt")
