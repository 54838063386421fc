"""Keys by URL through the protocol (spec §4.2, §4.5, §4.5.1, §8.7): hosts that register with
``host_jwks_url``, agents whose key is at ``agent_jwks_url``, and what must be refused."""

from __future__ import annotations

from typing import Any

import pytest

from agentauth import signals
from agentauth.client.tokens import sign_agent_jwt
from agentauth.models import Agent, AuditEvent, Host
from agentauth.testing import Keypair, host_token
from tests.conftest import ISSUER, Api, assert_error
from tests.domain.test_jwks import https_server, pki, srv, url  # noqa: F401 (fixtures)
from tests.jwks_support import NAMES, JwksServer, jwks_document

EXECUTE = ISSUER + "/capability/execute"
pytestmark = pytest.mark.django_db


class World:
    def __init__(self, server: JwksServer) -> None:
        self.server = server
        self.host = Keypair.generate()
        self.agent = Keypair.generate()
        self.host_url = url(server, "/host.json")
        self.agent_url = url(server, "/agent.json", host="agent-keys.test")
        self.publish_host(self.host)
        server.serve_json("/agent.json", jwks_document(("agent-1", self.agent.public_jwk)))

    def publish_host(self, *host_keys: Keypair) -> None:
        self.server.serve_json(
            "/host.json", jwks_document(*((k.thumbprint, k.public_jwk) for k in host_keys))
        )

    def host_jwt(self, key: Keypair | None = None, **extra: Any) -> str:
        claims = {"host_jwks_url": self.host_url, **extra.pop("claims", {})}
        return host_token(key or self.host, include_host_key=False, extra_claims=claims, **extra)

    def register_token(self, **claims: Any) -> str:
        return self.host_jwt(
            claims={"agent_jwks_url": self.agent_url, "agent_kid": "agent-1", **claims}
        )

    def agent_jwt(self, agent: Agent, **kwargs: Any) -> str:
        kwargs.setdefault("extra_headers", {"kid": "agent-1"})
        kwargs.setdefault("host_thumbprint", self.host.thumbprint)
        return sign_agent_jwt(self.agent, agent_id=agent.pk, audience=EXECUTE, **kwargs)


@pytest.fixture
def world(srv: JwksServer, settings: Any) -> World:  # noqa: F811
    # Autonomous auto-approval activates a new host and its agent at once (§2.8).
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["check_balance"]
    return World(srv)


REGISTER = {"name": "by url", "mode": "autonomous", "capabilities": ["check_balance"]}


def register(api: Api, world: World) -> Agent:
    reply = api.post("/agent/register", REGISTER, token=world.register_token())
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "active"
    return Agent.objects.get(pk=reply.body["agent_id"])


def execute(api: Api, token: str) -> Any:
    body = {"capability": "check_balance", "arguments": {"account_id": "acc"}}
    return api.post("/capability/execute", body, token=token)


def test_register_and_execute_with_keys_by_url(api: Api, world: World) -> None:
    agent = register(api, world)
    host = Host.objects.get()
    assert (host.jwks_url, host.public_key, host.thumbprint) == (
        world.host_url,
        None,
        world.host.thumbprint,
    )
    assert (agent.jwks_url, agent.kid, agent.public_key) == (world.agent_url, "agent-1", None)

    reply = execute(api, world.agent_jwt(agent))
    assert reply.status == 200, reply.body
    assert reply.body["data"]["account_id"] == "acc"
    # Host JWTs keep working (status), and both key sets came from the cache after one fetch.
    status = api.get("/agent/status", token=world.host_jwt(), agent_id=agent.pk)
    assert status.status == 200, status.body
    assert world.server.count("/host.json") == 1
    assert world.server.count("/agent.json") == 1


def test_agent_jwt_must_name_the_registered_kid(api: Api, world: World) -> None:
    agent = register(api, world)
    for headers in ({"kid": "agent-2"}, {}):
        reply = execute(api, world.agent_jwt(agent, extra_headers=headers))
        assert_error(reply, 401, "invalid_jwt")


def test_agent_jwt_signed_by_another_key_fails(api: Api, world: World) -> None:
    agent = register(api, world)
    token = sign_agent_jwt(
        Keypair.generate(),
        agent_id=agent.pk,
        audience=EXECUTE,
        host_thumbprint=world.host.thumbprint,
        extra_headers={"kid": "agent-1"},
    )
    assert_error(execute(api, token), 401, "invalid_jwt")


def test_key_delivery_mode_is_fixed(api: Api, world: World) -> None:
    # spec §8.7: a JWKS host may not present an inline key, nor another URL.
    agent = register(api, world)
    inline = host_token(world.host)  # host_public_key, no host_jwks_url
    assert_error(api.get("/agent/status", token=inline, agent_id=agent.pk), 401, "invalid_jwt")
    both = world.host_jwt(claims={"host_public_key": world.host.public_jwk})
    assert_error(api.get("/agent/status", token=both, agent_id=agent.pk), 401, "invalid_jwt")
    other = world.host_jwt(claims={"host_jwks_url": url(world.server, "/elsewhere.json")})
    assert_error(api.get("/agent/status", token=other, agent_id=agent.pk), 401, "invalid_jwt")


def test_host_jwt_needs_kid_and_iss_must_match_the_kid_key(api: Api, world: World) -> None:
    no_kid = world.register_token()
    no_kid = world.host_jwt(
        claims={"agent_jwks_url": world.agent_url, "agent_kid": "agent-1"},
        extra_headers={"kid": None},
    )
    assert_error(api.post("/agent/register", REGISTER, token=no_kid), 401, "invalid_jwt")
    # The kid selects a key whose thumbprint is not iss.
    stranger = Keypair.generate()
    world.server.serve_json(
        "/host.json", jwks_document((world.host.thumbprint, stranger.public_jwk))
    )
    reply = api.post("/agent/register", REGISTER, token=world.register_token())
    assert_error(reply, 401, "invalid_jwt")
    assert not Host.objects.exists()


def test_private_host_jwks_url_is_refused_without_a_connection(
    api: Api, world: World, settings: Any
) -> None:
    settings.AGENTAUTH_JWKS_ALLOWED_NETWORKS = []
    NAMES["jwks.test"] = ["127.0.0.1"]
    reply = api.post("/agent/register", REGISTER, token=world.register_token())
    assert_error(reply, 401, "invalid_jwt")
    assert world.server.hits == []
    assert not Host.objects.exists()


def test_metadata_address_as_agent_jwks_url(api: Api, world: World) -> None:
    token = world.register_token(agent_jwks_url="https://169.254.169.254/latest/meta-data/")
    assert_error(api.post("/agent/register", REGISTER, token=token), 401, "invalid_jwt")
    assert not Agent.objects.exists()


@pytest.mark.parametrize(
    "claims",
    [
        {"agent_kid": None},
        {"agent_kid": ""},
        {"agent_kid": 5},
        {"agent_jwks_url": "http://agent-keys.test/agent.json"},
        {"agent_jwks_url": "not a url"},
        {"agent_public_key": Keypair.generate().public_jwk},
    ],
    ids=["no kid", "empty kid", "numeric kid", "http", "not a url", "both key claims"],
)
def test_malformed_agent_key_claims(api: Api, world: World, claims: dict[str, Any]) -> None:
    reply = api.post("/agent/register", REGISTER, token=world.register_token(**claims))
    assert_error(reply, 400, "invalid_request")
    assert world.server.count("/agent.json") == 0


def test_agent_kid_alone_is_refused(api: Api, world: World) -> None:
    token = world.host_jwt(claims={"agent_kid": "agent-1"}, agent_public_key=world.agent)
    assert_error(api.post("/agent/register", REGISTER, token=token), 400, "invalid_request")


def test_host_and_agent_urls_must_differ(api: Api, world: World) -> None:
    # spec §4.2; compared in canonical form.
    same = world.host_url.replace("https://jwks.test", "HTTPS://JWKS.TEST")
    token = world.register_token(agent_jwks_url=same)
    assert_error(api.post("/agent/register", REGISTER, token=token), 400, "invalid_request")


def test_agent_kid_missing_from_its_jwks(api: Api, world: World) -> None:
    token = world.register_token(agent_kid="agent-9")
    assert_error(api.post("/agent/register", REGISTER, token=token), 401, "invalid_jwt")
    assert not Agent.objects.exists()


def test_agent_key_must_differ_from_the_host_key(api: Api, world: World) -> None:
    world.server.serve_json("/agent.json", jwks_document(("agent-1", world.host.public_jwk)))
    reply = api.post("/agent/register", REGISTER, token=world.register_token())
    assert_error(reply, 400, "invalid_request")


def test_jwks_agent_does_not_rotate_through_the_endpoint(api: Api, world: World) -> None:
    agent = register(api, world)
    body = {"agent_id": agent.pk, "public_key": Keypair.generate().public_jwk}
    reply = api.post("/agent/rotate-key", body, token=world.host_jwt())
    assert_error(reply, 400, "invalid_request")


def test_jwks_host_rotation(
    api: Api, world: World, django_capture_on_commit_callbacks: Any
) -> None:
    # spec §4.5.1 step 4, §8.7: the next key is published first, then used.
    rotated: list[Any] = []

    def on_rotation(sender: Any, **kwargs: Any) -> None:
        rotated.append(kwargs)

    signals.key_rotated.connect(on_rotation)
    new = Keypair.generate()
    world.publish_host(world.host, new)
    agent = register(api, world)
    old = world.host.thumbprint

    # An agent JWT naming the new key as iss before any host JWT did (the §8.7 race).
    race = world.agent_jwt(agent, host_thumbprint=new.thumbprint)
    assert execute(api, race).status == 200
    # ... but not a key its host does not publish.
    stray = world.agent_jwt(agent, host_thumbprint=Keypair.generate().thumbprint)
    assert_error(execute(api, stray), 401, "invalid_jwt")

    try:
        with django_capture_on_commit_callbacks(execute=True):
            reply = api.get("/agent/status", token=world.host_jwt(new), agent_id=agent.pk)
        assert reply.status == 200, reply.body
        host = Host.objects.get()
        assert (host.thumbprint, host.previous_thumbprint) == (new.thumbprint, old)
        # The old key, still published, is accepted but does not turn the identifier back.
        with django_capture_on_commit_callbacks(execute=True):
            reply = api.get("/agent/status", token=world.host_jwt(), agent_id=agent.pk)
        assert reply.status == 200
        assert Host.objects.get().thumbprint == new.thumbprint
    finally:
        signals.key_rotated.disconnect(on_rotation)
    # One rotation: one audit row and one signal, as through POST /host/rotate-key.
    assert AuditEvent.objects.filter(kind="host.key_rotated", host_id=host.pk).count() == 1
    assert [(r["host"].pk, r["agent"], r["actor_type"]) for r in rotated] == [
        (host.pk, None, "host")
    ]


def test_unpublished_key_cannot_rotate_a_jwks_host(api: Api, world: World) -> None:
    agent = register(api, world)
    intruder = Keypair.generate()
    reply = api.get("/agent/status", token=world.host_jwt(intruder), agent_id=agent.pk)
    assert_error(reply, 401, "invalid_jwt")
    assert Host.objects.get().thumbprint == world.host.thumbprint


def test_inline_registration_is_unchanged(api: Api, world: World) -> None:
    reply = api.register(Keypair.generate())
    assert reply.status == 200, reply.body
    assert world.server.hits == []
