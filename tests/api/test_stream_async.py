"""Streams whose handler is an ``async def`` generator (the example's ``ticket.watch``).

Under ASGI such a stream is served as an asynchronous iterator: an open stream waiting for its
next event holds a coroutine, not a worker (docs/deployment.md). Same events, limits and
re-checks as a sync handler's stream (spec §5.11, §8.17).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.test import AsyncClient, Client, override_settings

from agentauth import agents
from agentauth.testing import agent_token, make_agent, make_host
from example_project.support.models import Ticket

pytestmark = pytest.mark.django_db(transaction=True)

EXECUTE = "http://testserver/api/auth/capability/execute"


@pytest.fixture
def watcher() -> Any:
    ticket = Ticket.objects.create(subject="Printer on fire", body="")
    host, _ = make_host()
    agent, key = make_agent(host, grants=["ticket.watch"])
    return agent, key, ticket


def body(ticket: Ticket, count: int = 2) -> dict[str, Any]:
    args = {"ticket_id": str(ticket.pk), "count": count, "interval": 0}
    return {"capability": "ticket.watch", "arguments": args}


def parse(raw: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in raw.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def expected(ticket: Ticket) -> list[tuple[str, Any]]:
    tid = str(ticket.pk)
    return [
        ("data", {"n": 0, "ticket_id": tid, "status": "open"}),
        ("data", {"n": 1, "ticket_id": tid, "status": "open"}),
        ("done", {}),
    ]


def test_asgi_serves_the_stream_asynchronously(watcher: Any) -> None:
    async_to_sync(asgi_stream)(watcher)


async def asgi_stream(watcher: Any) -> None:
    agent, key, ticket = watcher
    response = await AsyncClient().post(
        "/api/auth/capability/execute",
        data=body(ticket),
        content_type="application/json",
        headers={"Authorization": f"Bearer {agent_token(agent, key, audience=EXECUTE)}"},
    )
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    assert response.is_async
    raw = b"".join([chunk async for chunk in response.streaming_content])
    assert parse(raw) == expected(ticket)


def test_wsgi_serves_the_same_stream(watcher: Any) -> None:
    agent, key, ticket = watcher
    response = Client().post(
        "/api/auth/capability/execute",
        data=body(ticket),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {agent_token(agent, key, audience=EXECUTE)}",
    )
    assert response.status_code == 200 and not response.is_async
    assert parse(b"".join(response)) == expected(ticket)


@override_settings(AGENTAUTH_STREAM_RECHECK_SECONDS=-1)
def test_async_stream_stops_when_the_agent_is_revoked(watcher: Any) -> None:
    # spec §8.17: a stream outlives its JWT; the re-check refuses a revoked agent.
    async_to_sync(revoked_mid_stream)(watcher)


async def revoked_mid_stream(watcher: Any) -> None:
    agent, key, ticket = watcher
    response = await AsyncClient().post(
        "/api/auth/capability/execute",
        data=body(ticket, count=3),
        content_type="application/json",
        headers={"Authorization": f"Bearer {agent_token(agent, key, audience=EXECUTE)}"},
    )
    assert response.status_code == 200
    await sync_to_async(agents.revoke_agent)(agent, actor_type="user")
    raw = b"".join([chunk async for chunk in response.streaming_content])
    events = parse(raw)
    assert events[0][0] == "error" and events[0][1]["error"] == "agent_revoked"
    assert events[-1] == ("done", {})
