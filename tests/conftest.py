"""Shared fixtures and the hypothesis profiles.

Hypothesis profiles (chosen with ``HYPOTHESIS_PROFILE``, default ``dev``):

- ``dev``: a small budget for ``make test``, derandomized, no example database: the same commit
  always runs the same examples, on a laptop and in every CI tier alike.
- ``ci``: the full budget, derandomized, no example database. ``.ci/run`` uses it once, in its
  first tier, so the full fuzz budget runs once per CI run rather than once per tier.
- ``explore``: the full budget with fresh randomness and an example database under
  ``.hypothesis/`` (git-ignored), for hunting new failures locally. Never used in CI.

Tests take ``max_examples`` from the profile only; a test that needs "at least N requests" reads
``settings().max_examples``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

_COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "print_blob": True,
}
settings.register_profile("dev", max_examples=30, derandomize=True, database=None, **_COMMON)
settings.register_profile("ci", max_examples=200, derandomize=True, database=None, **_COMMON)
settings.register_profile(
    "explore",
    max_examples=200,
    database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
    **_COMMON,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def user(django_user_model: Any) -> Any:
    """A regular, signed-up user who can approve agents for herself."""
    return django_user_model.objects.create_user(
        username="alice", email="alice@example.com", password="alice-password"
    )


@pytest.fixture
def staff_user(django_user_model: Any) -> Any:
    """A staff member (admin site access, no superuser powers)."""
    return django_user_model.objects.create_user(
        username="sam", email="sam@example.com", password="sam-password", is_staff=True
    )


# --- protocol helpers -------------------------------------------------------------------------

import json  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from django.test import Client  # noqa: E402

from agentauth.testing import Keypair, agent_token, host_token  # noqa: E402
from tests import openapi_check  # noqa: E402

ISSUER = "http://testserver/api/auth"
INTROSPECTION_SECRET = "introspection-secret-for-tests"  # tests/settings.py
BASE = "/api/auth"


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


class Api:
    """Speaks the protocol to the test client: JSON bodies, Bearer tokens, parsed replies."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _reply(self, method: str, path: str, response: Any) -> Reply:
        try:
            body = json.loads(response.content) if response.content else None
        except ValueError:
            body = response.content
        # Every reply is held to the OpenAPI document (tests/openapi_check.py).
        openapi_check.check(
            method, path, response.status_code, response.headers.get("Content-Type", ""), body
        )
        return Reply(response.status_code, body, response.headers)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | str | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        data = raw if raw is not None else ("" if body is None else json.dumps(body))
        return self._reply(
            "POST",
            BASE + path,
            self.client.post(BASE + path, data=data, content_type=content_type, **headers),
        )

    def get(self, path: str, *, token: str | None = None, **params: Any) -> Reply:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        return self._reply("GET", BASE + path, self.client.get(BASE + path, params, **headers))

    def request_capability(self, agent: Any, key: Keypair, capabilities: list[Any]) -> Reply:
        """The agent asks for more (spec §5.4), with a fresh agent JWT."""
        return self.post(
            "/agent/request-capability",
            {"capabilities": capabilities},
            token=agent_token(agent, key),
        )

    def register(
        self, host: Keypair, agent: Keypair | None = None, body: Any = None, **token_kwargs: Any
    ) -> Reply:
        agent = agent or Keypair.generate()
        token = host_token(host, agent_public_key=agent, **token_kwargs)
        return self.post(
            "/agent/register", {"name": "Test agent"} if body is None else body, token=token
        )


@pytest.fixture
def api(client: Client) -> Api:
    return Api(client)


@pytest.fixture
def host_key() -> Keypair:
    return Keypair.generate()


def assert_error(reply: Reply, status: int, code: str) -> None:
    """A spec-shaped error body (§5.13) with the expected status and code."""
    assert reply.status == status, (reply.status, reply.body)
    assert isinstance(reply.body, dict), reply.body
    assert reply.body["error"] == code, reply.body
    assert isinstance(reply.body["message"], str) and reply.body["message"]


def operator_decides(agent: Any, user: Any, **kwargs: Any) -> Any:
    """Decide ``agent``'s live request in ``user``'s name, the way ``agentauth_approve`` does
    (the operator path: no browser session to check)."""
    from agentauth import approvals

    approver = approvals.Approver.operator(user, name="tests")
    return approvals.decide(approvals.live_request(agent), approver=approver, **kwargs)


def post_decision(client: Client, page: str, data: dict[str, Any]) -> Any:
    """Open an approval page and submit a decision from it, carrying back the digest of what the
    page displayed, as the browser form does (spec §8.10)."""
    shown = client.get(page).context["shown"]
    return client.post(page, {"shown": shown, **data})


def run_together(n: int, func: Any) -> list[Any]:
    """Run ``func(i)`` in ``n`` threads released at the same instant (races on PostgreSQL);
    each slot of the result holds the return value or the exception. Every thread closes its
    database connections, so the test database can be dropped afterwards."""
    import threading

    from django.db import connections

    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = func(i)
        except Exception as exc:  # collected and asserted on by the caller
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.fixture
def issuer(live_server: Any, settings: Any) -> str:
    """The issuer at ``live_server`` (``aud`` is compared with it exactly, §8.18), approval
    polling at 1 s; tests over real HTTP take it, files with other needs override it."""
    value = live_server.url + "/api/auth"
    settings.AGENTAUTH_ISSUER = value
    settings.AGENTAUTH_APPROVAL_INTERVAL = 1
    return value
