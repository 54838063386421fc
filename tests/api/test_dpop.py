"""DPoP proof of possession for agent-JWT requests (spec §4.4, §4.5 step 9, §8.14; RFC 9449).

Proofs and tokens are made with the agent-side helpers (``agentauth.client.dpop``,
``agentauth.testing``); a bad proof differs from a good one in exactly the member under test.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import Client

from agentauth import dpop
from agentauth.capabilities import registry
from agentauth.client.dpop import cnf, make_proof
from agentauth.client.identity import Keypair
from agentauth.keys import b64url_decode, b64url_encode
from agentauth.testing import agent_token, make_agent, make_host
from example_project.support.models import Ticket

pytestmark = pytest.mark.django_db

ISSUER = "http://testserver/api/auth"
EXECUTE = ISSUER + "/capability/execute"
EXECUTE_PATH = "/api/auth/capability/execute"
BALANCE = {"capability": "check_balance", "arguments": {"account_id": "acc_1"}}


@pytest.fixture
def required(settings: Any) -> None:
    settings.AGENTAUTH_DPOP = "required"


@pytest.fixture
def optional(settings: Any) -> None:
    settings.AGENTAUTH_DPOP = "optional"


@pytest.fixture
def agent(user: Any) -> tuple[Any, Keypair]:
    host, _ = make_host(user=user)
    return make_agent(
        host,
        grants=["check_balance", "slow_report", "read_only_note", "ticket.read", "ticket.close"],
    )


def bound(agent: tuple[Any, Keypair], proof_key: Keypair | None = None, **kw: Any) -> str:
    """An agent JWT bound (``cnf.jkt``) to ``proof_key`` (default: the agent's key)."""
    a, key = agent
    kw.setdefault("audience", EXECUTE)
    kw.setdefault("extra_claims", {"cnf": cnf(proof_key or key)})
    return agent_token(a, key, **kw)


def proof_for(key: Keypair, token: str, method: str = "POST", url: str = EXECUTE, **kw: Any) -> str:
    return make_proof(key, method, url, access_token=token, **kw)


def post(
    client: Client,
    token: str,
    proof: str | None,
    *,
    path: str = EXECUTE_PATH,
    body: Any = None,
    scheme: str = "DPoP",
) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"}
    if proof is not None:
        headers["HTTP_DPOP"] = proof
    data = json.dumps(BALANCE if body is None else body)
    return client.post(path, data, content_type="application/json", **headers)


def refused(response: Any, code: str = "invalid_dpop_proof") -> dict[str, Any]:
    """401 with the §5.13 body and the RFC 9449 §7.1 challenge."""
    body: dict[str, Any] = json.loads(response.content)
    assert response.status_code == 401, (response.status_code, body)
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert response["WWW-Authenticate"].startswith(f'DPoP error="{code}"')
    return body


def ok(response: Any) -> None:
    assert response.status_code == 200, (response.status_code, response.content)


# --- discovery ---------------------------------------------------------------------------------


def test_discovery_is_silent_when_off(client: Client) -> None:
    doc = client.get("/api/auth/.well-known/agent-configuration").json()
    assert "dpop_signing_alg_values_supported" not in doc
    assert "dpop_bound_access_tokens_required" not in doc


@pytest.mark.parametrize("mode", ["optional", "required"])
def test_discovery_advertises_dpop(client: Client, settings: Any, mode: str) -> None:
    # RFC 9449 §5.1, RFC 9728 §2 member names.
    settings.AGENTAUTH_DPOP = mode
    doc = client.get("/api/auth/.well-known/agent-configuration").json()
    assert doc["dpop_signing_alg_values_supported"] == ["EdDSA"]
    assert doc["dpop_bound_access_tokens_required"] is (mode == "required")


def test_unknown_mode_fails_closed(settings: Any) -> None:
    from agentauth.conf import app_settings

    settings.AGENTAUTH_DPOP = "sometimes"
    assert app_settings.DPOP == "required"


# --- the happy paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["DPoP", "Bearer"])
def test_bound_token_with_its_proof_is_accepted(
    client: Client, agent: Any, required: None, scheme: str
) -> None:
    # RFC 9449 §7.1 scheme; the spec's examples use Bearer, so both are accepted.
    token = bound(agent)
    ok(post(client, token, proof_for(agent[1], token), scheme=scheme))


def test_separate_proof_key(client: Client, agent: Any, required: None) -> None:
    # RFC 9449 §4.1: the proof key need not be the agent key; cnf.jkt names whichever it is.
    other = Keypair.generate()
    token = bound(agent, other)
    ok(post(client, token, proof_for(other, token)))


def test_optional_mode_still_takes_plain_bearer(client: Client, agent: Any, optional: None) -> None:
    a, key = agent
    ok(post(client, agent_token(a, key, audience=EXECUTE), None, scheme="Bearer"))


def test_proof_without_ath_is_accepted(client: Client, agent: Any, required: None) -> None:
    token = bound(agent)
    ok(post(client, token, make_proof(agent[1], "POST", EXECUTE)))


# --- missing proof / binding -------------------------------------------------------------------


def test_missing_proof_when_required(client: Client, agent: Any, required: None) -> None:
    token = bound(agent)
    refused(post(client, token, None, scheme="Bearer"))


def test_plain_token_without_proof_is_refused_when_required(
    client: Client, agent: Any, required: None
) -> None:
    a, key = agent
    refused(post(client, agent_token(a, key, audience=EXECUTE), None, scheme="Bearer"))


def test_dpop_scheme_without_proof(client: Client, agent: Any, optional: None) -> None:
    # RFC 9449 §7.1: the DPoP scheme promises a proof, even with an unbound token.
    a, key = agent
    refused(post(client, agent_token(a, key, audience=EXECUTE), None, scheme="DPoP"))


def test_bound_token_without_proof_is_refused(client: Client, agent: Any, optional: None) -> None:
    # RFC 9449 §7.1: a DPoP-bound token presented as a bare bearer token is the theft case.
    refused(post(client, bound(agent), None, scheme="Bearer"))


def test_cnf_jkt_mismatch(client: Client, agent: Any, required: None) -> None:
    token = bound(agent, Keypair.generate())
    refused(post(client, token, proof_for(agent[1], token)))


def test_cnf_jkt_missing(client: Client, agent: Any, optional: None) -> None:
    # A proof with an unbound token: the proof then proves nothing about the token.
    a, key = agent
    token = agent_token(a, key, audience=EXECUTE)
    refused(post(client, token, proof_for(key, token)))


# --- the proof JWT itself (RFC 9449 §4.3) -------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"typ": "JWT"}, {"typ": None}, {"typ": "agent+jwt"}, {"jwk": None}, {"crit": ["x"]}],
    ids=["typ-jwt", "typ-missing", "typ-agent", "jwk-missing", "crit"],
)
def test_bad_proof_header(client: Client, agent: Any, required: None, headers: Any) -> None:
    token = bound(agent)
    refused(post(client, token, proof_for(agent[1], token, extra_headers=headers)))


@pytest.mark.parametrize("alg", ["ES256", "HS256", "none", "Ed25519"])
def test_wrong_alg(client: Client, agent: Any, required: None, alg: str) -> None:
    # Signed correctly with the Ed25519 key: only the alg check can refuse it (RFC 9449 §4.3 5).
    token = bound(agent)
    good = proof_for(agent[1], token)
    header = json.loads(b64url_decode(good.split(".")[0]))
    forged = b64url_encode(json.dumps({**header, "alg": alg}).encode())
    signing_input = f"{forged}.{good.split('.')[1]}"
    signature = b64url_encode(agent[1].private_key.sign(signing_input.encode()))
    refused(post(client, token, f"{signing_input}.{signature}"))


def test_bad_signature(client: Client, agent: Any, required: None) -> None:
    # Signed by another key while the header names the bound key.
    token = bound(agent)
    forged = proof_for(Keypair.generate(), token, extra_headers={"jwk": agent[1].public_jwk})
    refused(post(client, token, forged))


def test_jwk_with_private_members(client: Client, agent: Any, required: None) -> None:
    token = bound(agent)
    leaky = {**agent[1].public_jwk, "d": agent[1].to_private_jwk()["d"]}
    refused(post(client, token, proof_for(agent[1], token, extra_headers={"jwk": leaky})))


def test_two_proofs_in_one_header(client: Client, agent: Any, required: None) -> None:
    token = bound(agent)
    one = proof_for(agent[1], token)
    refused(post(client, token, f"{one}, {proof_for(agent[1], token)}"))


def test_htm_mismatch(client: Client, agent: Any, required: None) -> None:
    token = bound(agent)
    refused(post(client, token, proof_for(agent[1], token, method="GET")))


@pytest.mark.parametrize(
    "url",
    [
        ISSUER + "/agent/request-capability",  # other path
        "http://evil.example/api/auth/capability/execute",  # other host
        "https://testserver/api/auth/capability/execute",  # other scheme
        "http://testserver:8080/api/auth/capability/execute",  # other port
    ],
)
def test_htu_mismatch(client: Client, agent: Any, required: None, url: str) -> None:
    token = bound(agent)
    refused(post(client, token, proof_for(agent[1], token, url=url)))


@pytest.mark.parametrize("htu", ["http://[::1/x", "http://testserver:99999/", 42, ["x"], ""])
def test_malformed_htu(client: Client, agent: Any, required: None, htu: Any) -> None:
    token = bound(agent)
    refused(post(client, token, proof_for(agent[1], token, extra_claims={"htu": htu})))


@pytest.mark.parametrize(
    "jwk", [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}, "key", [], {"kty": "OKP"}]
)
def test_malformed_jwk(client: Client, agent: Any, required: None, jwk: Any) -> None:
    token = bound(agent)
    refused(post(client, token, proof_for(agent[1], token, extra_headers={"jwk": jwk})))


@pytest.mark.parametrize("value", [{"jkt": 5}, "jkt", {"x5t#S256": "abc"}, {"jkt": ""}])
def test_malformed_cnf(client: Client, agent: Any, required: None, value: Any) -> None:
    token = bound(agent, extra_claims={"cnf": value})
    refused(post(client, token, proof_for(agent[1], token)))


def test_htu_is_normalised_and_query_ignored(client: Client, agent: Any, required: None) -> None:
    # RFC 9449 §4.3 9: compared without query and fragment, after syntax normalisation.
    token = bound(agent)
    htu = "HTTP://TestServer:80/api/auth/capability/execute?x=1#f"
    ok(post(client, token, proof_for(agent[1], token, extra_claims={"htu": htu})))
    token = bound(agent)
    ok(post(client, token, proof_for(agent[1], token), path=EXECUTE_PATH + "?y=2"))


@pytest.mark.parametrize("offset", [-3600, -120, 120])
def test_iat_outside_window(client: Client, agent: Any, required: None, offset: int) -> None:
    token = bound(agent)
    iat = int(time.time()) + offset
    refused(post(client, token, proof_for(agent[1], token, extra_claims={"iat": iat})))


@pytest.mark.parametrize("claim", ["jti", "iat", "htm", "htu"])
def test_missing_claim(client: Client, agent: Any, required: None, claim: str) -> None:
    token = bound(agent)
    refused(post(client, token, proof_for(agent[1], token, extra_claims={claim: None})))


def test_ath_mismatch(client: Client, agent: Any, required: None) -> None:
    token, other = bound(agent), bound(agent)
    refused(post(client, token, proof_for(agent[1], other)))


def test_jti_replay_across_agent_jwts(client: Client, agent: Any, required: None) -> None:
    # RFC 9449 §11.1: one proof, once, whatever access token comes with it.
    proof = make_proof(agent[1], "POST", EXECUTE)
    ok(post(client, bound(agent), proof))
    refused(post(client, bound(agent), proof))


def test_jti_replay_across_two_workers(agent: Any, required: None) -> None:
    # Two separate clients (as two processes would be) share the database replay guard.
    first, second = Client(), Client()
    proof = make_proof(agent[1], "POST", EXECUTE)
    ok(post(first, bound(agent), proof))
    refused(post(second, bound(agent), proof))


def test_same_jti_under_another_key_is_not_a_replay(
    client: Client, agent: Any, user: Any, required: None
) -> None:
    # The replay partition is the proof key, so two clients choosing one jti do not collide.
    host, _ = make_host(user=user)
    other = make_agent(host, grants=["check_balance"])
    for who in (agent, other):
        token = bound(who)
        ok(post(client, token, proof_for(who[1], token, extra_claims={"jti": "same"})))


def test_refused_proof_does_not_spend_its_jti(client: Client, agent: Any, required: None) -> None:
    # A proof refused before the replay store is written can be fixed and re-sent; the
    # ordering keeps an attacker without a valid agent JWT from filling the store.
    proof = make_proof(agent[1], "POST", EXECUTE, extra_claims={"jti": "once"})
    refused(post(client, bound(agent, Keypair.generate()), proof))
    ok(post(client, bound(agent), proof))


# --- server nonces (RFC 9449 §9) ---------------------------------------------------------------


def test_nonce_required(client: Client, agent: Any, required: None, settings: Any) -> None:
    settings.AGENTAUTH_DPOP_NONCE = True
    token = bound(agent)
    response = post(client, token, proof_for(agent[1], token))
    refused(response, "use_dpop_nonce")
    nonce = response["DPoP-Nonce"]
    # The agent JWT was not spent by the nonce round trip: the retry may reuse it.
    ok(post(client, token, proof_for(agent[1], token, nonce=nonce)))


def test_stale_nonce(client: Client, agent: Any, required: None, settings: Any) -> None:
    settings.AGENTAUTH_DPOP_NONCE = True
    issued = int(time.time()) - 3600
    stale = f"{issued}.{dpop._nonce_mac(issued)}"
    token = bound(agent)
    response = post(client, token, proof_for(agent[1], token, nonce=stale))
    refused(response, "use_dpop_nonce")
    assert dpop.nonce_is_fresh(response["DPoP-Nonce"])


# "{now}" is filled in when the test runs: an id computed at collection differs between
# pytest-xdist workers that collect in different seconds, and the run stops.
@pytest.mark.parametrize("nonce", ["1.x", "abc", "{now}.forgedmacforgedmacfo"])
def test_forged_nonce(
    client: Client, agent: Any, required: None, settings: Any, nonce: str
) -> None:
    nonce = nonce.format(now=int(time.time()))
    settings.AGENTAUTH_DPOP_NONCE = True
    token = bound(agent)
    refused(post(client, token, proof_for(agent[1], token, nonce=nonce)), "use_dpop_nonce")


def test_nonce_from_another_worker(agent: Any, required: None, settings: Any) -> None:
    # Stateless nonces: any worker accepts another's.
    settings.AGENTAUTH_DPOP_NONCE = True
    token = bound(agent)
    nonce = post(Client(), token, proof_for(agent[1], token))["DPoP-Nonce"]
    ok(post(Client(), token, proof_for(agent[1], token, nonce=nonce)))


# --- every agent-JWT surface -------------------------------------------------------------------


def test_request_capability(client: Client, agent: Any, required: None) -> None:
    url = ISSUER + "/agent/request-capability"
    token = bound(agent, audience=ISSUER)
    body = {"capabilities": ["transfer"]}
    path = "/api/auth/agent/request-capability"
    refused(post(client, token, None, path=path, body=body))
    token = bound(agent, audience=ISSUER)
    assert (
        post(client, token, proof_for(agent[1], token, url=url), path=path, body=body).status_code
        < 300
    )


def test_status_poll(
    client: Client, agent: Any, required: None, django_capture_on_commit_callbacks: Any
) -> None:
    token = bound(agent)
    with django_capture_on_commit_callbacks(execute=True):
        started = post(
            client,
            token,
            proof_for(agent[1], token),
            body={"capability": "slow_report", "arguments": {"n": 2}},
        )
    assert started.status_code == 202
    url = started.json()["status_url"]
    path = url.removeprefix("http://testserver")
    token = bound(agent, audience=ISSUER)
    refused(client.get(path, HTTP_AUTHORIZATION=f"DPoP {token}"))
    token = bound(agent, audience=ISSUER)
    poll = client.get(
        path, HTTP_AUTHORIZATION=f"DPoP {token}", HTTP_DPOP=proof_for(agent[1], token, "GET", url)
    )
    assert poll.json() == {"status": "completed", "result": {"total": 4}}


def test_guarded_view(client: Client, agent: Any, required: None) -> None:
    Ticket.objects.create(pk=1, subject="Printer jam", priority="low")
    url = "http://testserver/support/tickets/1"
    token = bound(agent, audience=ISSUER)
    refused(client.get("/support/tickets/1", HTTP_AUTHORIZATION=f"Bearer {token}"))
    token = bound(agent, audience=ISSUER)
    response = client.get(
        "/support/tickets/1",
        HTTP_AUTHORIZATION=f"DPoP {token}",
        HTTP_DPOP=proof_for(agent[1], token, "GET", url),
    )
    assert response.status_code == 200, response.content


def test_drf_view(client: Client, agent: Any, required: None) -> None:
    Ticket.objects.create(pk=1, subject="Printer jam", priority="low")
    url = "http://testserver/support/api/tickets/1/close"
    path = "/support/api/tickets/1/close"
    body = {"priority": "low"}
    token = bound(agent, audience=ISSUER)
    refused(post(client, token, None, path=path, body=body, scheme="Bearer"))
    token = bound(agent, audience=ISSUER)
    response = post(client, token, proof_for(agent[1], token, url=url), path=path, body=body)
    assert response.status_code == 200, response.content


# --- the per-capability requirement ------------------------------------------------------------


@pytest.fixture
def balance_needs_dpop() -> Iterator[None]:
    cap = registry.get("check_balance")
    assert cap is not None
    registry.unregister("check_balance")
    registry.register(dataclasses.replace(cap, require_dpop=True))
    try:
        yield
    finally:
        registry.unregister("check_balance")
        registry.register(cap)


def test_capability_requires_dpop(
    client: Client, agent: Any, optional: None, balance_needs_dpop: None
) -> None:
    a, key = agent
    refused(post(client, agent_token(a, key, audience=EXECUTE), None, scheme="Bearer"))
    # Another capability on the same server still takes a bare bearer token.
    body = {"capability": "read_only_note"}
    ok(post(client, agent_token(a, key, audience=EXECUTE), None, scheme="Bearer", body=body))
    token = bound(agent)
    ok(post(client, token, proof_for(key, token)))


def test_capability_requirement_holds_on_the_execute_hot_path(
    client: Client, agent: Any, settings: Any, balance_needs_dpop: None
) -> None:
    # With DPoP off server-wide, a plain sync call would take agentauth.fastpath, which checks
    # no proofs: a capability that requires one must be handed to the general path and refused.
    settings.AGENTAUTH_DPOP = "off"
    a, key = agent
    refused(post(client, agent_token(a, key, audience=EXECUTE), None, scheme="Bearer"))
    body = {"capability": "read_only_note"}
    ok(post(client, agent_token(a, key, audience=EXECUTE), None, scheme="Bearer", body=body))


def test_capability_requirement_on_a_guarded_view(
    client: Client, agent: Any, optional: None
) -> None:
    Ticket.objects.create(pk=1, subject="Printer jam", priority="low")
    cap = registry.get("ticket.read")
    assert cap is not None
    registry.unregister("ticket.read")
    registry.register(dataclasses.replace(cap, require_dpop=True))
    try:
        a, key = agent
        response = client.get(
            "/support/tickets/1", HTTP_AUTHORIZATION=f"Bearer {agent_token(a, key)}"
        )
    finally:
        registry.unregister("ticket.read")
        registry.register(cap)
    refused(response)


def test_capability_requirement_on_status_poll(
    client: Client, agent: Any, optional: None, django_capture_on_commit_callbacks: Any
) -> None:
    a, key = agent
    cap = registry.get("slow_report")
    assert cap is not None
    registry.unregister("slow_report")
    registry.register(dataclasses.replace(cap, require_dpop=True))
    try:
        token = bound(agent)
        body = {"capability": "slow_report", "arguments": {"n": 1}}
        with django_capture_on_commit_callbacks(execute=True):
            started = post(client, token, proof_for(key, token), body=body)
        path = started.json()["status_url"].removeprefix("http://testserver")
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {agent_token(a, key)}")
    finally:
        registry.unregister("slow_report")
        registry.register(cap)
    refused(response)


def test_capability_requirement_needs_dpop_on(settings: Any, balance_needs_dpop: None) -> None:
    settings.AGENTAUTH_DPOP = "off"
    assert "agentauth.E013" in {m.id for m in run_checks()}
    settings.AGENTAUTH_DPOP = "optional"
    assert "agentauth.E013" not in {m.id for m in run_checks()}
