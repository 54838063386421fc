"""Rate limits (spec §8.13, §8)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache

from agentauth.models import Host
from agentauth.testing import Keypair, host_token, make_agent, make_host
from tests.conftest import Api, assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_counters() -> Any:
    cache.clear()
    yield
    cache.clear()


def test_unknown_host_registration_is_limited_per_ip(api: Api, settings: Any) -> None:
    # spec: §8.13, §8
    settings.AGENTAUTH_RATE_LIMITS = {"register_unknown_host": "3/hour", "ip": None}
    for _ in range(3):
        assert api.register(Keypair.generate()).status == 200
    reply = api.register(Keypair.generate())
    assert_error(reply, 429, "rate_limited")
    assert 0 < int(reply.headers["Retry-After"]) <= 3600
    assert Host.objects.count() == 3


def test_known_hosts_are_not_counted_as_unknown(api: Api, settings: Any) -> None:
    settings.AGENTAUTH_RATE_LIMITS = {"register_unknown_host": "1/hour", "ip": None, "host": None}
    _, key = make_host()
    for _ in range(3):
        assert api.register(key).status == 200


def test_per_ip_limit_on_discovery(client: Any, settings: Any) -> None:
    # spec: §8 (per IP, unauthenticated endpoints)
    settings.AGENTAUTH_RATE_LIMITS = {"ip": "2/minute"}
    assert client.get("/.well-known/agent-configuration").status_code == 200
    assert client.get("/.well-known/agent-configuration").status_code == 200
    response = client.get("/.well-known/agent-configuration")
    assert response.status_code == 429 and response.json()["error"] == "rate_limited"
    # Another address has its own budget.
    assert client.get("/.well-known/agent-configuration", REMOTE_ADDR="10.0.0.9").status_code == 200


def test_per_host_limit(api: Api, settings: Any) -> None:
    # spec: §8 (per host)
    settings.AGENTAUTH_RATE_LIMITS = {"host": "2/minute"}
    host, key = make_host()
    agent, _ = make_agent(host)

    def poll(key: Keypair, agent_id: str) -> Any:
        return api.get("/agent/status", token=host_token(key), agent_id=agent_id)

    for _ in range(2):
        assert poll(key, agent.pk).status == 200
    assert_error(poll(key, agent.pk), 429, "rate_limited")
    other, other_key = make_host()
    other_agent, _ = make_agent(other)
    assert poll(other_key, other_agent.pk).status == 200


def test_rate_limit_cache_failure_fails_closed(client: Any, settings: Any) -> None:
    settings.AGENTAUTH_RATE_LIMITS = {"ip": "5/minute"}
    settings.AGENTAUTH_RATE_LIMIT_CACHE = "broken"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "broken": {"BACKEND": "tests.api.test_tokens.BrokenCache"},
    }
    response = client.get("/.well-known/agent-configuration")
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
