"""Host JWT and agent JWT verification rules (spec §4, §8, §4.5, §10.3, §4.2,
§4.3)."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from django.db import OperationalError, connection
from django.test import override_settings
from django.utils import timezone

from agentauth import jws, replay, tokens
from agentauth.errors import ProtocolError
from agentauth.models import AgentStatus, Host, HostStatus, ReplayRecord
from agentauth.testing import Keypair, agent_token, host_token, make_agent, make_host
from tests.conftest import ISSUER, Api, assert_error

pytestmark = pytest.mark.django_db


def status_call(api: Api, token: str, agent_id: str = "agt_none") -> Any:
    return api.get("/agent/status", token=token, agent_id=agent_id)


def raises(code: str, func: Any, *args: Any, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        func(*args, **kwargs)
    assert info.value.code == code, info.value
    return info.value


def b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# --- host JWTs -----------------------------------------------------------------------------------


@pytest.fixture
def known() -> tuple[Host, Keypair, str]:
    host, key = make_host()
    agent, _ = make_agent(host)
    return host, key, agent.pk


def test_valid_host_jwt_reads_status(api: Api, known: Any) -> None:
    _host, key, agent_id = known
    assert status_call(api, host_token(key), agent_id).status == 200


@pytest.mark.parametrize("typ", ["agent+jwt", "JWT", None, 5])
def test_host_jwt_typ_must_be_host_jwt(api: Api, known: Any, typ: Any) -> None:
    # spec: §4.2, §4.5.1
    _host, key, agent_id = known
    token = host_token(key, extra_headers={"typ": typ} if typ is not None else {"typ": ""})
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")


@pytest.mark.parametrize("typ", ["application/host+jwt", "HOST+JWT"])
def test_host_typ_is_a_media_type(api: Api, known: Any, typ: str) -> None:
    # Spec §4.2.
    _host, key, agent_id = known
    assert status_call(api, host_token(key, extra_headers={"typ": typ}), agent_id).status == 200


@pytest.mark.parametrize(
    "aud", ["http://testserver/api", "http://evil.example/api/auth", ISSUER + "/", [ISSUER, "x"], 7]
)
def test_host_jwt_audience_must_match_exactly(api: Api, known: Any, aud: Any) -> None:
    # spec: §4.5.1, §8.18, §4.3
    _host, key, agent_id = known
    assert_error(status_call(api, host_token(key, audience=aud), agent_id), 401, "invalid_jwt")


def test_single_element_audience_array_is_accepted(api: Api, known: Any) -> None:
    # Spec §4.3.
    _host, key, agent_id = known
    assert status_call(api, host_token(key, audience=[ISSUER]), agent_id).status == 200


def test_expired_host_jwt(api: Api, known: Any) -> None:
    # spec: §4.6, §4.5.1
    _host, key, agent_id = known
    now = int(time.time())
    token = host_token(key, extra_claims={"iat": now - 80, "exp": now - 31})
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")


def test_expiry_within_skew_is_tolerated(api: Api, known: Any) -> None:
    # spec: §4.6 (30 s skew)
    _host, key, agent_id = known
    now = int(time.time())
    token = host_token(key, extra_claims={"iat": now - 40, "exp": now - 10})
    assert status_call(api, token, agent_id).status == 200


def test_future_iat_beyond_skew(api: Api, known: Any) -> None:
    # spec: §8.2
    _host, key, agent_id = known
    now = int(time.time())
    token = host_token(key, extra_claims={"iat": now + 45, "exp": now + 90})
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")


def test_overlong_lifetime(api: Api, known: Any) -> None:
    # spec: §4.6, §8.2
    _host, key, agent_id = known
    now = int(time.time())
    token = host_token(key, extra_claims={"iat": now, "exp": now + 61})
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")


def test_hard_lifetime_cap_applies_whatever_the_setting(known: Any, settings: Any) -> None:
    # Spec §4.6: at most 300 s, whatever AGENTAUTH_JWT_MAX_LIFETIME says.
    settings.AGENTAUTH_JWT_MAX_LIFETIME = 10_000
    _host, key, _ = known
    now = int(time.time())
    token = host_token(key, extra_claims={"iat": now, "exp": now + 301})
    raises("invalid_jwt", tokens.verify_host_jwt, token)


@pytest.mark.parametrize("claim", ["iat", "exp", "jti", "iss"])
def test_required_host_claims(api: Api, known: Any, claim: str) -> None:
    # spec: §4.2
    _host, key, agent_id = known
    token = host_token(key, extra_claims={claim: None})
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")


@pytest.mark.parametrize(
    "claims", [{"iat": True}, {"exp": "soon"}, {"jti": 5}, {"nbf": time.time() + 300}]
)
def test_claim_types(api: Api, known: Any, claims: dict[str, Any]) -> None:
    _host, key, agent_id = known
    assert_error(
        status_call(api, host_token(key, extra_claims=claims), agent_id), 401, "invalid_jwt"
    )


def test_replayed_host_jwt(api: Api, known: Any) -> None:
    # spec: §4.5.1 step 7, §4.5.1, §8.2
    _host, key, agent_id = known
    token = host_token(key)
    assert status_call(api, token, agent_id).status == 200
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")


def test_same_jti_from_two_hosts_is_not_a_replay(api: Api) -> None:
    # Spec §10.3: the replay key is partitioned by identity.
    h1, k1 = make_host()
    h2, k2 = make_host()
    a1, _ = make_agent(h1)
    a2, _ = make_agent(h2)
    assert status_call(api, host_token(k1, extra_claims={"jti": "same"}), a1.pk).status == 200
    assert status_call(api, host_token(k2, extra_claims={"jti": "same"}), a2.pk).status == 200


def test_wrong_signature(api: Api, known: Any) -> None:
    # spec: §4.5.1
    _host, key, agent_id = known
    forger = Keypair.generate()
    token = host_token(
        forger, extra_claims={"iss": key.thumbprint, "host_public_key": key.public_jwk}
    )
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")


def test_tampered_payload(api: Api, known: Any) -> None:
    _host, key, agent_id = known
    header, _, signature = host_token(key).split(".")
    now = int(time.time())
    payload = b64({"iss": key.thumbprint, "aud": ISSUER, "iat": now, "exp": now + 30, "jti": "x"})
    assert_error(status_call(api, f"{header}.{payload}.{signature}", agent_id), 401, "invalid_jwt")


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256", "ES256", None])
def test_only_eddsa(api: Api, known: Any, alg: Any) -> None:
    # spec: §4.1 (algorithm confusion). The token is otherwise perfect: correctly
    # signed with the host's Ed25519 key, so only the alg rule can refuse it.
    _host, key, agent_id = known
    now = int(time.time())
    header = b64({"alg": alg, "typ": "host+jwt"} if alg else {"typ": "host+jwt"})
    payload = b64({"iss": key.thumbprint, "aud": ISSUER, "iat": now, "exp": now + 30, "jti": "a"})
    signature = key.private_key.sign(f"{header}.{payload}".encode())
    sig = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    assert_error(status_call(api, f"{header}.{payload}.{sig}", agent_id), 401, "invalid_jwt")


def test_hand_built_eddsa_token_is_accepted(api: Api, known: Any) -> None:
    # The control for test_only_eddsa: the same construction with alg EdDSA passes.
    _host, key, agent_id = known
    now = int(time.time())
    header = b64({"alg": "EdDSA", "typ": "host+jwt"})
    payload = b64({"iss": key.thumbprint, "aud": ISSUER, "iat": now, "exp": now + 30, "jti": "b"})
    sig = base64.urlsafe_b64encode(key.private_key.sign(f"{header}.{payload}".encode()))
    token = f"{header}.{payload}.{sig.rstrip(b'=').decode()}"
    assert status_call(api, token, agent_id).status == 200


def test_crit_header_is_refused(api: Api, known: Any) -> None:
    _host, key, agent_id = known
    token = host_token(key, extra_headers={"crit": ["exp"]})
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")


def test_presented_host_key_must_match_stored(api: Api, known: Any) -> None:
    # spec: §4.5.1, §4.2
    _host, key, agent_id = known
    token = host_token(key, extra_claims={"host_public_key": Keypair.generate().public_jwk})
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")


def test_known_host_without_host_key_claim(api: Api, known: Any) -> None:
    # Spec §4.2: optional for known inline hosts.
    _host, key, agent_id = known
    assert status_call(api, host_token(key, include_host_key=False), agent_id).status == 200


def test_inline_host_cannot_switch_to_jwks(api: Api, known: Any) -> None:
    # spec §8.7: an inline host cannot switch to a JWKS URL (refused before any fetch).
    _host, key, agent_id = known
    token = host_token(key, extra_claims={"host_jwks_url": "https://keys.example/jwks.json"})
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")


def test_unknown_host_outside_registration(api: Api) -> None:
    # Spec §4.5.1 step 4.
    assert_error(status_call(api, host_token(Keypair.generate())), 401, "invalid_jwt")


def test_revoked_host(api: Api, known: Any) -> None:
    # spec: §4.5.1, §5.10
    host, key, agent_id = known
    Host.objects.filter(pk=host.pk).update(status=HostStatus.REVOKED)
    assert_error(status_call(api, host_token(key), agent_id), 403, "host_revoked")


def test_rejected_host(api: Api, known: Any) -> None:
    # spec: §4.5.1, §2.11; a rejected host may only read status (§7.1 step 4, tested in
    # test_registration), every other host endpoint refuses it.
    host, key, _ = known
    Host.objects.filter(pk=host.pk).update(status=HostStatus.REJECTED)
    raises("host_rejected", tokens.verify_host_jwt, host_token(key), allow_pending=True)
    assert tokens.verify_host_jwt(host_token(key), allow_rejected=True).host == host
    reply = api.post("/host/revoke", {}, token=host_token(key))
    assert_error(reply, 403, "host_rejected")


def test_pending_host_only_where_allowed(known: Any) -> None:
    # spec: §4.5.1, §4.5.1 step 8
    host, key, _ = known
    Host.objects.filter(pk=host.pk).update(status=HostStatus.PENDING)
    raises("host_pending", tokens.verify_host_jwt, host_token(key))
    assert tokens.verify_host_jwt(host_token(key), allow_pending=True).host == host


def test_signature_is_checked_before_host_state(api: Api, known: Any) -> None:
    # Spec §4.5: a forger learns nothing about the host's state.
    host, key, agent_id = known
    Host.objects.filter(pk=host.pk).update(status=HostStatus.REVOKED)
    forged = host_token(
        Keypair.generate(), extra_claims={"iss": key.thumbprint}, include_host_key=False
    )
    assert_error(status_call(api, forged, agent_id), 401, "invalid_jwt")


def test_rotated_host_key_stops_working_at_once(api: Api, known: Any) -> None:
    # spec: §4.2, §5.8 — a host JWT is only ever identified by the current key.
    host, key, agent_id = known
    new = Keypair.generate()
    Host.objects.filter(pk=host.pk).update(
        thumbprint=new.thumbprint,
        public_key=new.public_jwk,
        previous_thumbprint=key.thumbprint,
        previous_thumbprint_until=timezone.now() + timedelta(minutes=5),
    )
    assert_error(status_call(api, host_token(key), agent_id), 401, "invalid_jwt")
    assert status_call(api, host_token(new), agent_id).status == 200


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer ", "Basic abc", "Token x.y.z", "Bearer a.b", "Bearer " + "a" * 9000],
)
def test_bad_authorization_headers(client: Any, header: str) -> None:
    # spec: §4.2, §5.13
    response = client.get("/api/auth/agent/status", {"agent_id": "x"}, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_jwt"
    assert response.headers["WWW-Authenticate"].startswith('AgentAuth discovery="')


def test_duplicate_json_members_are_refused() -> None:
    # Two parsers could read different values; we read none.
    with pytest.raises(ProtocolError):
        jws.parse(f"{b64({'alg': 'EdDSA'})[:-1]}.e30.{'A' * 86}")
    raw = '{"alg":"EdDSA","alg":"none"}'
    header = base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()
    raises("invalid_jwt", jws.parse, f"{header}.e30.{'A' * 86}")


# --- replay guard --------------------------------------------------------------------------------


def test_replay_records_expire_with_the_token(api: Api, known: Any) -> None:
    # spec: §4.5.1 step 7, §4.6 — kept until exp + skew.
    _host, key, agent_id = known
    now = int(time.time())
    status_call(api, host_token(key, extra_claims={"iat": now, "exp": now + 20}), agent_id)
    record = ReplayRecord.objects.get()
    assert abs(record.expires_at.timestamp() - (now + 20 + 30)) < 1


def cache_remembers_since(seconds_ago: float) -> None:
    """The cache guard's marker: when the store's memory began (agentauth/replay.py)."""
    cache.set(replay.MEMORY_MARKER, time.time() - seconds_ago, None)


@override_settings(AGENTAUTH_REPLAY_GUARD="cache")
def test_cache_replay_guard(api: Api, known: Any) -> None:
    # spec: §4.6, §10.3
    _host, key, agent_id = known
    cache_remembers_since(3600)
    token = host_token(key)
    assert status_call(api, token, agent_id).status == 200
    assert_error(status_call(api, token, agent_id), 401, "invalid_jwt")
    assert not ReplayRecord.objects.exists()


@override_settings(AGENTAUTH_REPLAY_GUARD="cache")
def test_cache_replay_guard_refuses_tokens_older_than_its_memory(api: Api, known: Any) -> None:
    # Security rule: a cache that lost its state (restart, flush, eviction) cannot know which
    # tokens were used, so tokens issued before the loss (plus the skew) are refused.
    _host, key, agent_id = known
    cache_remembers_since(3600)
    used = host_token(key)
    assert status_call(api, used, agent_id).status == 200
    cache.clear()  # the store restarts empty
    reply = status_call(api, used, agent_id)
    assert_error(reply, 503, "temporarily_unavailable")
    assert 1 <= int(reply.headers["Retry-After"]) <= 31
    # Also a token signed now: a client clock may run up to the skew ahead of ours.
    assert_error(status_call(api, host_token(key), agent_id), 503, "temporarily_unavailable")
    cache_remembers_since(31)  # the skew has passed since the loss
    fresh = host_token(key)
    assert status_call(api, fresh, agent_id).status == 200
    assert_error(status_call(api, fresh, agent_id), 401, "invalid_jwt")


class BrokenCache(LocMemCache):
    """A cache backend whose server is down."""

    def add(self, *args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("cache server unreachable")


@override_settings(
    AGENTAUTH_REPLAY_GUARD="cache",
    AGENTAUTH_REPLAY_CACHE_ALIAS="broken",
    CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "broken": {"BACKEND": "tests.api.test_tokens.BrokenCache"},
    },
)
def test_cache_replay_guard_fails_closed(api: Api, known: Any) -> None:
    # Security rule: an unavailable replay store refuses the request (never accepts it).
    _host, key, agent_id = known
    reply = status_call(api, host_token(key), agent_id)
    assert_error(reply, 503, "temporarily_unavailable")


def test_database_replay_guard_fails_closed(api: Api, known: Any, monkeypatch: Any) -> None:
    _host, key, agent_id = known

    def down(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if ReplayRecord._meta.db_table in sql:
            raise OperationalError("database is unavailable")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(down):
        reply = status_call(api, host_token(key), agent_id)
    assert_error(reply, 503, "temporarily_unavailable")


# --- agent JWTs ----------------------------------------------------------------------------------


@pytest.fixture
def agent_setup() -> Any:
    host, _host_key = make_host()
    agent, key = make_agent(host, grants=["check_balance"])
    return agent, key


def verify(token: str) -> tokens.VerifiedAgent:
    return tokens.verify_agent_jwt(token, audiences={ISSUER})


def test_valid_agent_jwt(agent_setup: Any) -> None:
    agent, key = agent_setup
    assert verify(agent_token(agent, key)).agent == agent


def test_agent_jwt_without_iss_resolves_host_from_sub(agent_setup: Any) -> None:
    # spec: §8.7 (§4.5 step 4), as the official TypeScript client signs.
    agent, key = agent_setup
    assert verify(agent_token(agent, key, host_thumbprint=None)).host == agent.host


def test_iss_can_be_required(agent_setup: Any, settings: Any) -> None:
    settings.AGENTAUTH_REQUIRE_AGENT_ISS = True
    agent, key = agent_setup
    raises("invalid_jwt", verify, agent_token(agent, key, host_thumbprint=None))
    assert verify(agent_token(agent, key)).agent == agent


def test_agent_jwt_iss_of_another_host(agent_setup: Any) -> None:
    # spec: §4.5 — an agent is only ever its own host's.
    agent, key = agent_setup
    other, _ = make_host()
    raises("invalid_jwt", verify, agent_token(agent, key, host_thumbprint=other.thumbprint))


def test_previous_host_iss_only_within_grace(agent_setup: Any) -> None:
    # Spec §8.7.
    agent, key = agent_setup
    old = agent.host.thumbprint
    new = Keypair.generate()
    Host.objects.filter(pk=agent.host_id).update(
        thumbprint=new.thumbprint,
        public_key=new.public_jwk,
        previous_thumbprint=old,
        previous_thumbprint_until=timezone.now() + timedelta(seconds=60),
    )
    assert verify(agent_token(agent, key, host_thumbprint=old)).agent == agent
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        raises("invalid_jwt", verify, agent_token(agent, key, host_thumbprint=old))


@pytest.mark.parametrize("typ", ["host+jwt", "JWT", ""])
def test_agent_jwt_typ(agent_setup: Any, typ: str) -> None:
    # spec: §4.3, §4.5, §4.2
    agent, key = agent_setup
    raises("invalid_jwt", verify, agent_token(agent, key, extra_headers={"typ": typ}))


def test_host_jwt_is_not_an_agent_jwt(agent_setup: Any) -> None:
    # spec: §4.2 — token confusion.
    agent, key = agent_setup
    raises("invalid_jwt", verify, host_token(key, extra_claims={"sub": agent.pk}))


def test_agent_jwt_audience(agent_setup: Any) -> None:
    # spec: §4.5, §4.3
    agent, key = agent_setup
    raises("invalid_jwt", verify, agent_token(agent, key, audience="https://other.example/api"))


def test_agent_jwt_wrong_key(agent_setup: Any) -> None:
    # spec: §4.5
    agent, _ = agent_setup
    raises("invalid_jwt", verify, agent_token(agent, Keypair.generate()))


def test_unknown_agent(agent_setup: Any) -> None:
    agent, key = agent_setup
    raises("invalid_jwt", verify, agent_token(agent, key, extra_claims={"sub": "agt_nobody"}))


def test_agent_jwt_replay(agent_setup: Any) -> None:
    # spec: §4.5, §8.2
    agent, key = agent_setup
    token = agent_token(agent, key)
    verify(token)
    raises("invalid_jwt", verify, token)


def test_capabilities_claim_must_be_strings(agent_setup: Any) -> None:
    agent, key = agent_setup
    raises(
        "invalid_jwt",
        verify,
        agent_token(agent, key, extra_claims={"capabilities": "check_balance"}),
    )


@pytest.mark.parametrize(
    "status, code",
    [
        (AgentStatus.PENDING, "agent_pending"),
        (AgentStatus.EXPIRED, "agent_expired"),
        (AgentStatus.REVOKED, "agent_revoked"),
        (AgentStatus.REJECTED, "agent_rejected"),
        (AgentStatus.CLAIMED, "agent_claimed"),
    ],
)
def test_only_active_agents_authenticate(agent_setup: Any, status: str, code: str) -> None:
    # spec: §2.3, §4.5, §5.13, §4.5 step 4
    agent, key = agent_setup
    type(agent).objects.filter(pk=agent.pk).update(status=status)
    raises(code, verify, agent_token(agent, key))


def test_agent_signature_before_state(agent_setup: Any) -> None:
    # Spec §4.5.
    agent, _ = agent_setup
    type(agent).objects.filter(pk=agent.pk).update(status=AgentStatus.REVOKED)
    raises("invalid_jwt", verify, agent_token(agent, Keypair.generate()))


def test_agent_of_inactive_host(agent_setup: Any) -> None:
    agent, key = agent_setup
    Host.objects.filter(pk=agent.host_id).update(status=HostStatus.PENDING)
    raises("host_pending", verify, agent_token(agent, key))


def test_idle_agent_expires_without_a_sweep(settings: Any) -> None:
    # spec: §8.8, §2.4, §5.5 — the clocks are fixed on the agent when set, so set the TTL first.
    settings.AGENTAUTH_SESSION_TTL = 60
    host, _ = make_host()
    agent, key = make_agent(host, grants=["check_balance"])
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        raises("agent_expired", verify, agent_token(agent, key))
    agent.refresh_from_db()
    assert agent.status == AgentStatus.EXPIRED


def test_absolute_lifetime_revokes(settings: Any) -> None:
    # spec: §8.8, §2.4
    settings.AGENTAUTH_ABSOLUTE_LIFETIME = 3600
    settings.AGENTAUTH_SESSION_TTL = None
    settings.AGENTAUTH_MAX_LIFETIME = None
    host, _ = make_host()
    agent, key = make_agent(host, grants=["check_balance"])
    with time_machine.travel(timezone.now() + timedelta(seconds=3601)):
        raises("absolute_lifetime_exceeded", verify, agent_token(agent, key))
    agent.refresh_from_db()
    assert agent.status == AgentStatus.REVOKED


def test_unknown_ids_and_bad_signatures_read_the_same(api: Api, known: Any) -> None:
    # No enumeration of agent or host ids through error messages before the signature check.
    host, _key, _agent_id = known
    agent = type(host).objects.get(pk=host.pk).agents.get()
    forged = Keypair.generate()
    messages = {
        code_and_message(lambda: verify(agent_token(agent, forged))),
        code_and_message(
            lambda: verify(agent_token(agent, forged, extra_claims={"sub": "agt_unknown"}))
        ),
        code_and_message(lambda: tokens.verify_host_jwt(host_token(Keypair.generate()))),
    }
    assert len(messages) == 1


def code_and_message(call: Any) -> tuple[str, str]:
    with pytest.raises(ProtocolError) as info:
        call()
    return info.value.code, info.value.message
