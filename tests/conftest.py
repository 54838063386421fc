"""Shared fixtures. Host/agent fixtures built on agentauth.testing come with those modules."""

from __future__ import annotations

from typing import Any

import pytest


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

from agentauth.testing import Keypair, host_token  # noqa: E402

ISSUER = "http://testserver/api/auth"
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

    def _reply(self, response: Any) -> Reply:
        try:
            body = json.loads(response.content) if response.content else None
        except ValueError:
            body = response.content
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
            self.client.post(BASE + path, data=data, content_type=content_type, **headers)
        )

    def get(self, path: str, *, token: str | None = None, **params: Any) -> Reply:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        return self._reply(self.client.get(BASE + path, params, **headers))

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
