"""Approval event streams under a real ASGI server (uvicorn), many at once (spec §10.10.2).

uvicorn serves Django's ASGI application from a thread of this process, so it sees the test
database; the streams are read over real sockets. Every wait is bounded by a socket timeout.

Tier: PostgreSQL (``AGENTAUTH_TEST_DATABASE_URL``). Fifty request threads writing and reading an
in-memory SQLite database shared between threads fail with "database table is locked", which
says nothing about the streams. The same stream code runs in-process, on every tier, in
``tests/api/test_approval_events.py``.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import uvicorn
from django.core.asgi import get_asgi_application
from django.core.cache import cache

from agentauth.client.sse import parse_event_stream
from agentauth.models import Agent
from agentauth.testing import Keypair, host_token
from tests.conftest import BASE, Api, operator_decides

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("AGENTAUTH_TEST_DATABASE_URL"),
        reason="needs AGENTAUTH_TEST_DATABASE_URL: concurrent request threads need a real database",
    ),
    pytest.mark.django_db(transaction=True),
]

STREAMS = 50
READ_TIMEOUT = 30.0


@pytest.fixture
def asgi_server() -> Iterator[tuple[str, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        get_asgi_application(), lifespan="off", log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        assert server.started, "uvicorn did not start"
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class Stream:
    """One open stream, read line by line from a raw socket."""

    def __init__(self, address: tuple[str, int], path: str, token: str) -> None:
        self.conn = http.client.HTTPConnection(*address, timeout=READ_TIMEOUT)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        self.response = self.conn.getresponse()

    def first_line(self) -> bytes:
        return self.response.readline()

    def events(self) -> list[tuple[str, Any]]:
        lines = []
        while line := self.response.readline():
            lines.append(line)
        return parse_event_stream([*lines, b"event: done\n", b"\n"])[:-1]

    def close(self) -> None:
        self.conn.close()


def test_fifty_concurrent_streams_all_see_the_approval(
    asgi_server: tuple[str, int], api: Api, user: Any, settings: Any
) -> None:
    settings.AGENTAUTH_APPROVAL_EVENTS = True
    settings.AGENTAUTH_APPROVAL_EVENTS_MAX_PER_HOST = STREAMS
    settings.AGENTAUTH_APPROVAL_EVENTS_MAX_SECONDS = 60
    cache.clear()
    key = Keypair.generate()
    agent_ids = []
    for i in range(STREAMS):
        reply = api.register(key, body={"name": f"a{i}", "capabilities": ["check_balance"]})
        assert reply.body["status"] == "pending", reply.body
        agent_ids.append(reply.body["agent_id"])
    paths = [f"{BASE}/agent/events/{agent_id}" for agent_id in agent_ids]

    with ThreadPoolExecutor(max_workers=STREAMS) as pool:
        streams = list(pool.map(lambda p: Stream(asgi_server, p, host_token(key)), paths))
        try:
            assert [s.response.status for s in streams] == [200] * STREAMS
            assert all(s.response.getheader("Content-Type") == "text/event-stream" for s in streams)
            # Every stream is open and waiting before anything is decided.
            assert set(pool.map(Stream.first_line, streams)) == {b": waiting for the approval\n"}
            over = Stream(asgi_server, paths[0], host_token(key))
            assert over.response.status == 429
            assert b'"error":"rate_limited"' in over.response.read()
            over.close()

            for agent_id in agent_ids:
                operator_decides(Agent.objects.get(pk=agent_id), user)
            results = list(pool.map(Stream.events, streams))
        finally:
            for stream in streams:
                stream.close()
    for agent_id, found in zip(agent_ids, results, strict=True):
        assert [name for name, _ in found] == ["approved"]
        assert found[0][1]["agent_id"] == agent_id and found[0][1]["status"] == "active"
