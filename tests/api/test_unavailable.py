"""A dependency that is down is a clear 503, never a 500 (agentauth/unavailable.py; spec §5.13).

The cache is made unreachable for real: a Redis cache on a port nobody listens on.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from agentauth.testing import Keypair, host_token
from tests.conftest import Api, assert_error

pytestmark = pytest.mark.django_db

DEAD_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}


def test_polling_a_pending_agent_with_the_cache_down_is_503(
    api: Api, host_key: Keypair, settings: Any
) -> None:
    # The slow_down pacing (RFC 8628 §3.5) needs the cache; without it, fail closed and clearly.
    reg = api.register(host_key, body={"name": "x"})
    settings.CACHES = DEAD_CACHE
    reply = api.get("/agent/status", token=host_token(host_key), agent_id=reg.body["agent_id"])
    assert_error(reply, 503, "temporarily_unavailable")
    assert reply.headers["Retry-After"] == "5"


def test_entering_a_code_with_the_cache_down_is_a_503_page(
    client: Client, user: Any, settings: Any
) -> None:
    client.force_login(user)
    settings.CACHES = DEAD_CACHE
    response = client.post("/api/auth/device", {"code": "ABCD-EFGH"})
    assert response.status_code == 503 and int(response["Retry-After"]) > 0
    assert response["Content-Type"].startswith("text/html")
    assert b"Temporarily unavailable" in response.content
