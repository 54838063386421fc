"""WebAuthn registration and approval step-up, offline with a software authenticator
(spec §8.11, §8.10)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from agentauth.models import Agent, ApprovalRequest, WebAuthnCredential
from agentauth.testing import Keypair
from agentauth.testing.authenticator import SoftAuthenticator
from tests.conftest import Api, post_decision

pytestmark = pytest.mark.django_db

ORIGIN = "http://testserver"


def post_json(client: Client, url: str, body: Any = None) -> Any:
    return client.post(url, data=json.dumps(body or {}), content_type="application/json")


def register_credential(client: Client, soft: SoftAuthenticator) -> Any:
    begin = post_json(client, "/api/auth/webauthn/begin")
    assert begin.status_code == 200, begin.content
    options = begin.json()
    return post_json(
        client,
        "/api/auth/webauthn/complete",
        {"credential": soft.create(options, ORIGIN), "name": "Test key"},
    )


@pytest.fixture
def signed_in(client: Client, user: Any) -> Client:
    client.force_login(user)  # a sign-in: the login signal marks the session fresh
    return client


def test_register_a_passkey(signed_in: Client, user: Any) -> None:
    soft = SoftAuthenticator()
    reply = register_credential(signed_in, soft)
    assert reply.status_code == 200 and reply.json()["registered"] is True
    credential = WebAuthnCredential.objects.get(user=user)
    assert credential.credential_id == soft.credential_id_b64 and credential.confirmed


def test_registration_needs_fresh_authentication(client: Client, user: Any) -> None:
    client.force_login(user)
    session = client.session
    session["agentauth_authenticated_at"] -= 301  # the sign-in is now older than 5 minutes
    session.save()
    response = post_json(client, "/api/auth/webauthn/begin")
    assert response.status_code == 403 and response.json()["error"] == "fresh_auth_required"


def test_registration_options_require_user_verification(signed_in: Client) -> None:
    options = post_json(signed_in, "/api/auth/webauthn/begin").json()
    assert options["authenticatorSelection"]["userVerification"] == "required"


def test_registration_without_user_verification_is_refused(signed_in: Client) -> None:
    # spec: §8.11 — UV is required, not preferred.
    reply = register_credential(signed_in, SoftAuthenticator(user_verified=False))
    assert reply.status_code == 403 and reply.json()["error"] == "webauthn_verification_failed"
    assert not WebAuthnCredential.objects.exists()


def test_registration_from_another_origin_is_refused(signed_in: Client) -> None:
    soft = SoftAuthenticator()
    options = post_json(signed_in, "/api/auth/webauthn/begin").json()
    reply = post_json(
        signed_in,
        "/api/auth/webauthn/complete",
        {"credential": soft.create(options, "https://evil.example")},
    )
    assert reply.status_code == 403
    assert not WebAuthnCredential.objects.exists()


def test_registration_challenge_is_single_use(signed_in: Client) -> None:
    soft = SoftAuthenticator()
    options = post_json(signed_in, "/api/auth/webauthn/begin").json()
    credential = soft.create(options, ORIGIN)
    first = post_json(signed_in, "/api/auth/webauthn/complete", {"credential": credential})
    second = post_json(signed_in, "/api/auth/webauthn/complete", {"credential": credential})
    assert first.status_code == 200 and second.status_code == 403


# --- step-up on an approval -----------------------------------------------------------------


@pytest.fixture
def transfer_request(api: Api, signed_in: Client) -> str:
    """A pending agent asking for ``transfer`` (webauthn strength); the code entered."""
    reply = api.register(Keypair.generate(), body={"name": "Payer", "capabilities": ["transfer"]})
    code = reply.body["approval"]["user_code"]
    response = signed_in.post("/api/auth/device", {"code": code})
    assert response.status_code == 302
    return str(response["Location"])


def step_up(client: Client, page: str, soft: SoftAuthenticator, **kwargs: Any) -> Any:
    options = post_json(client, f"{page}/webauthn/begin").json()
    assert options["userVerification"] == "required"
    assertion = soft.get(options, kwargs.pop("origin", ORIGIN), **kwargs)
    return post_json(client, f"{page}/webauthn/complete", assertion)


def test_webauthn_capability_cannot_be_approved_without_step_up(
    signed_in: Client, transfer_request: str
) -> None:
    register_credential(signed_in, SoftAuthenticator())
    response = post_decision(
        signed_in, transfer_request, {"action": "approve", "capabilities": ["transfer"]}
    )
    assert response.status_code == 403
    assert b"webauthn_required" in response.content
    assert Agent.objects.get().status == "pending"


def test_step_up_then_approve(signed_in: Client, transfer_request: str, user: Any) -> None:
    soft = SoftAuthenticator()
    register_credential(signed_in, soft)
    verified = step_up(signed_in, transfer_request, soft)
    assert verified.status_code == 200, verified.content
    response = post_decision(
        signed_in, transfer_request, {"action": "approve", "capabilities": ["transfer"]}
    )
    assert response.status_code == 200
    agent = Agent.objects.get()
    assert agent.status == "active"
    assert agent.grants.get(capability="transfer").status == "active"
    assert WebAuthnCredential.objects.get().sign_count == 1


def test_not_enrolled(signed_in: Client, transfer_request: str) -> None:
    response = post_json(signed_in, f"{transfer_request}/webauthn/begin")
    assert response.status_code == 403 and response.json()["error"] == "webauthn_not_enrolled"


@pytest.mark.parametrize(
    "misbehave",
    ["wrong_challenge", "wrong_origin", "replayed_counter", "no_user_verification"],
)
def test_step_up_refusals(signed_in: Client, transfer_request: str, misbehave: str) -> None:
    # §8.10, §8.11; the offline ceremony cases.
    soft = SoftAuthenticator()
    register_credential(signed_in, soft)
    if misbehave == "replayed_counter":
        assert step_up(signed_in, transfer_request, soft).status_code == 200
        reply = step_up(signed_in, transfer_request, soft, advance_counter=False)
    elif misbehave == "wrong_challenge":
        options = post_json(signed_in, f"{transfer_request}/webauthn/begin").json()
        options["challenge"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        reply = post_json(
            signed_in, f"{transfer_request}/webauthn/complete", soft.get(options, ORIGIN)
        )
    elif misbehave == "wrong_origin":
        reply = step_up(signed_in, transfer_request, soft, origin="https://evil.example")
    else:
        soft.user_verified = False
        reply = step_up(signed_in, transfer_request, soft)
    assert reply.status_code == 403, reply.content
    assert reply.json()["error"] == "webauthn_verification_failed"


def test_step_up_is_bound_to_one_approval(
    api: Api, signed_in: Client, transfer_request: str
) -> None:
    soft = SoftAuthenticator()
    register_credential(signed_in, soft)
    assert step_up(signed_in, transfer_request, soft).status_code == 200
    other = api.register(Keypair.generate(), body={"name": "Other", "capabilities": ["transfer"]})
    page = signed_in.post("/api/auth/device", {"code": other.body["approval"]["user_code"]})[
        "Location"
    ]
    response = post_decision(signed_in, page, {"action": "approve", "capabilities": ["transfer"]})
    assert response.status_code == 403
    assert Agent.objects.get(pk=other.body["agent_id"]).status == "pending"


def test_step_up_with_another_users_credential(
    signed_in: Client, transfer_request: str, django_user_model: Any
) -> None:
    soft = SoftAuthenticator()
    register_credential(signed_in, SoftAuthenticator())  # the user's own key
    mallory = django_user_model.objects.create_user(username="mallory", password="x")
    WebAuthnCredential.objects.create(
        user=mallory, name="m", credential_id=soft.credential_id_b64, public_key="AA"
    )
    reply = step_up(signed_in, transfer_request, soft)
    assert reply.status_code == 403
    assert ApprovalRequest.objects.filter(status="pending").count() == 1


def test_step_up_challenge_of_one_approval_cannot_complete_another(
    api: Api, signed_in: Client, transfer_request: str
) -> None:
    soft = SoftAuthenticator()
    register_credential(signed_in, soft)
    other = api.register(Keypair.generate(), body={"name": "Other", "capabilities": ["transfer"]})
    code = other.body["approval"]["user_code"]
    other_page = signed_in.post("/api/auth/device", {"code": code})["Location"]
    options = post_json(signed_in, f"{transfer_request}/webauthn/begin").json()
    reply = post_json(signed_in, f"{other_page}/webauthn/complete", soft.get(options, ORIGIN))
    assert reply.status_code == 403
    response = post_decision(
        signed_in, other_page, {"action": "approve", "capabilities": ["transfer"]}
    )
    assert response.status_code == 403
