"""The agent-side client's DPoP (``agentauth.client.dpop``) against a live server.

Over real HTTP: the client discovers whether the server speaks DPoP, binds its agent JWTs
(``cnf.jkt``), sends a proof per request and answers ``use_dpop_nonce`` once (RFC 9449 §9).
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from agentauth.client import AgentAuthClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def issuer(live_server: Any, settings: Any) -> str:
    value = live_server.url + "/api/auth"
    settings.AGENTAUTH_ISSUER = value
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["check_balance", "read_only_note"]
    return value


def claims_of(token: str) -> dict[str, Any]:
    result: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return result


def test_client_without_dpop_on_the_server(issuer: str) -> None:
    client = AgentAuthClient(issuer)
    bot = client.register("Bot", mode="autonomous", capabilities=["check_balance"])
    # With DPoP off the server refuses the DPoP scheme, so success means plain Bearer was sent.
    assert client.uses_dpop is False
    assert "cnf" not in claims_of(client.sign_agent_jwt(bot))
    assert client.execute(bot, "check_balance", {"account_id": "a"}) == {
        "data": {"account_id": "a", "balance": 1234.5, "currency": "USD"}
    }


@pytest.mark.parametrize("nonce", [False, True])
def test_client_with_dpop_required(issuer: str, settings: Any, nonce: bool) -> None:
    settings.AGENTAUTH_DPOP = "required"
    settings.AGENTAUTH_DPOP_NONCE = nonce
    client = AgentAuthClient(issuer)
    bot = client.register("Bot", mode="autonomous", capabilities=["check_balance"])
    assert client.uses_dpop is True
    assert claims_of(client.sign_agent_jwt(bot))["cnf"] == {"jkt": bot.agent.thumbprint}
    # The first agent-JWT call meets the nonce demand (when on) and must retry by itself.
    listed = client.list_capabilities(bot)
    assert {c["name"]: c["grant_status"] for c in listed["capabilities"]}["check_balance"] == (
        "granted"
    )
    assert client.execute(bot, "check_balance", {"account_id": "a"})["data"]["account_id"] == "a"
    reply = client.request_capability(bot, ["read_only_note"])
    assert "agent_capability_grants" in reply
    assert client.execute(bot, "read_only_note") is not None
    if nonce:
        assert client._dpop.nonces  # the nonce was learnt and reused
