"""The client waits on the approval event stream when offered, and polls otherwise
(spec §10.10.2, §7.3), over real HTTP against ``live_server``."""

from __future__ import annotations

import http.server
import os
import threading
from typing import Any

import pytest
from django.core.cache import cache

from agentauth.client import AgentAuthClient, AgentConnection
from agentauth.models import Agent
from tests.conftest import operator_decides

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def issuer(live_server: Any, settings: Any) -> str:
    value = live_server.url + "/api/auth"
    settings.AGENTAUTH_ISSUER = value
    settings.AGENTAUTH_APPROVAL_INTERVAL = 1
    settings.AGENTAUTH_APPROVAL_EVENTS = True
    settings.AGENTAUTH_APPROVAL_EVENTS_MAX_SECONDS = 20
    cache.clear()
    return value


class Sleeps:
    """Records the polling loop's waits (and waits for real, briefly)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        threading.Event().wait(min(seconds, 0.2))


def wait_in_thread(client: AgentAuthClient, connection: AgentConnection) -> dict[str, Any]:
    result: dict[str, Any] = {}

    def run() -> None:
        result["body"] = client.wait_for_approval(connection, timeout=20)

    thread = threading.Thread(target=run)
    thread.start()
    return {"thread": thread, "result": result}


@pytest.mark.skipif(
    not os.environ.get("AGENTAUTH_TEST_DATABASE_URL"),
    reason="needs PostgreSQL: on the in-memory SQLite database the stream's polling thread and "
    "the test's decision share one database, and a table lock can end the stream early",
)
def test_the_stream_delivers_the_decision_without_a_poll(issuer: str, user: Any) -> None:
    sleeps = Sleeps()
    client = AgentAuthClient(issuer, sleep=sleeps)
    connection = client.register("helper", capabilities=["check_balance"])
    assert connection.approval and connection.approval["notification_url"].startswith(issuer)
    waiting = wait_in_thread(client, connection)
    operator_decides(Agent.objects.get(pk=connection.agent_id), user)
    waiting["thread"].join(25)
    body = waiting["result"]["body"]
    assert body["status"] == "active" and connection.status == "active"
    assert connection.active_capabilities == ["check_balance"]
    assert sleeps.calls == []  # no polling interval was ever waited


def test_without_a_notification_url_the_client_polls(issuer: str, user: Any, settings: Any) -> None:
    settings.AGENTAUTH_APPROVAL_EVENTS = False
    sleeps = Sleeps()
    client = AgentAuthClient(issuer, sleep=sleeps)
    connection = client.register("helper", capabilities=["check_balance"])
    assert connection.approval and "notification_url" not in connection.approval
    operator_decides(Agent.objects.get(pk=connection.agent_id), user)
    assert client.wait_for_approval(connection, timeout=20)["status"] == "active"
    assert sleeps.calls  # polled


@pytest.fixture
def elsewhere() -> Any:
    """Another origin that records what reaches it."""
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b'event: approved\ndata: {"status": "active"}\n\n')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_a_notification_url_off_the_issuers_origin_is_not_followed(
    issuer: str, user: Any, elsewhere: Any
) -> None:
    # The stream is opened with a host JWT: a server must not be able to send it elsewhere.
    origin, seen = elsewhere
    sleeps = Sleeps()
    client = AgentAuthClient(issuer, sleep=sleeps)
    connection = client.register("helper", capabilities=["check_balance"])
    assert connection.approval is not None
    connection.approval["notification_url"] = f"{origin}/agent/events/{connection.agent_id}"
    operator_decides(Agent.objects.get(pk=connection.agent_id), user)
    assert client.wait_for_approval(connection, timeout=20)["status"] == "active"
    assert seen == []  # the other origin never saw a request, let alone the token
    assert sleeps.calls


def test_a_refused_stream_falls_back_to_polling(issuer: str, user: Any, settings: Any) -> None:
    sleeps = Sleeps()
    client = AgentAuthClient(issuer, sleep=sleeps)
    connection = client.register("helper", capabilities=["check_balance"])
    settings.AGENTAUTH_APPROVAL_EVENTS_MAX_STREAMS = 0  # every stream is refused with 429
    operator_decides(Agent.objects.get(pk=connection.agent_id), user)
    assert client.wait_for_approval(connection, timeout=20)["status"] == "active"
    assert sleeps.calls
