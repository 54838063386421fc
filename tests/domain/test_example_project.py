"""The example project follows spec §8.10 and §8.11: nothing for a self-attested host before a
person approves; data-changing capabilities need a passkey; safe settings by default."""

from __future__ import annotations

import importlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from agentauth.capabilities import registry
from agentauth.client import Keypair
from agentauth.models import Host, HostStatus
from agentauth.testing import agent_token
from tests.conftest import Api, assert_error

pytestmark = pytest.mark.django_db


def example_settings(monkeypatch: Any, **env: str) -> Any:
    for name in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY", "AGENTAUTH_INTROSPECTION_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import example_project.settings as module

    return importlib.reload(module)


@pytest.fixture
def as_example(monkeypatch: Any, settings: Any) -> Any:
    """This test's settings carry the example project's whole AGENTAUTH_* policy."""
    example = example_settings(monkeypatch, DJANGO_SECRET_KEY="x")
    for name in dir(example):
        if name.startswith("AGENTAUTH_") and name not in ("AGENTAUTH_ISSUER",):
            setattr(settings, name, getattr(example, name))
    for name in ("AGENTAUTH_AUTONOMOUS_AUTO_APPROVE",):
        if not hasattr(example, name):
            setattr(settings, name, None)
    settings.AGENTAUTH_RATE_LIMITS = {k: None for k in settings.AGENTAUTH_RATE_LIMITS}
    return example


@pytest.mark.parametrize("mode", ["autonomous", "delegated"])
def test_a_fresh_keypair_gets_nothing_before_approval(api: Api, as_example: Any, mode: str) -> None:
    # spec §8.10: "The server MUST NOT grant any capabilities or trust the host identity until
    # user approval completes."
    key = Keypair.generate()
    reply = api.register(key, body={"name": "bot", "capabilities": ["ticket.read"], "mode": mode})
    assert reply.status == 200
    assert reply.body["status"] == "pending"
    assert [g["status"] for g in reply.body["agent_capability_grants"]] == ["pending"]
    assert Host.objects.get(pk=reply.body["host_id"]).status == HostStatus.PENDING


def test_data_changing_capabilities_need_a_passkey() -> None:
    # spec §8.11: a password sign-in is not enough where an agent may drive the browser.
    assert registry.get("ticket.close").approval_strength == "webauthn"
    assert registry.get("ticket.escalate").approval_strength == "webauthn"
    assert registry.get("ticket.read").approval_strength == "none"


def test_settings_are_safe_by_default(monkeypatch: Any) -> None:
    with pytest.raises(ImproperlyConfigured):
        example_settings(monkeypatch)  # no secret, no DEBUG: refuse to start
    production = example_settings(monkeypatch, DJANGO_SECRET_KEY="s" * 50)
    assert production.DEBUG is False and production.SECRET_KEY == "s" * 50
    demo = example_settings(monkeypatch, DJANGO_DEBUG="1")
    assert demo.DEBUG is True and demo.SECRET_KEY
    example_settings(monkeypatch, DJANGO_SECRET_KEY="x")  # leave a loadable module behind


def test_seed_demo_pre_registers_a_trusted_host(api: Api, as_example: Any, tmp_path: Path) -> None:
    # spec §2.8: the operator's pre-registration is what earns instant ticket.read.
    key_file = tmp_path / "trusted-host.json"
    call_command("seed_demo", key_file=str(key_file), stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    host_key = Keypair.from_private_jwk(json.loads(key_file.read_text())["host"])
    host = Host.objects.get(thumbprint=host_key.thumbprint)
    assert host.status == HostStatus.ACTIVE and host.default_capabilities == ["ticket.read"]
    assert host.user is not None and host.user.get_username() == "demo"

    body = {"name": "triage", "capabilities": ["ticket.read", "ticket.close"]}
    reply = api.register(host_key, body=body)
    grants = {g["capability"]: g["status"] for g in reply.body["agent_capability_grants"]}
    assert reply.body["status"] == "active"
    assert grants == {"ticket.read": "active", "ticket.close": "pending"}

    # Running it again keeps the same host and key.
    call_command("seed_demo", key_file=str(key_file), stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert Host.objects.count() == 1
    assert Keypair.from_private_jwk(json.loads(key_file.read_text())["host"]) == host_key


def test_an_unapproved_agent_cannot_read_tickets(api: Api, as_example: Any) -> None:
    from agentauth.models import Agent

    agent_key = Keypair.generate()
    reply = api.register(
        Keypair.generate(),
        agent_key,
        body={"name": "bot", "capabilities": ["ticket.read"], "mode": "autonomous"},
    )
    agent = Agent.objects.get(pk=reply.body["agent_id"])
    call = {"capability": "ticket.read", "arguments": {"ticket_id": "1"}}
    executed = api.post("/capability/execute", call, token=agent_token(agent, agent_key))
    assert_error(executed, 403, "agent_pending")
