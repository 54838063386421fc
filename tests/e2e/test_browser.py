"""Browser tests in headless Chromium (Playwright) against a live server.

Tier: set ``AGENTAUTH_TEST_BROWSER=1`` (``.ci/run`` installs Debian's chromium and sets it).
Screenshots of every page land in ``artifacts/screenshots/`` (or ``AGENTAUTH_SCREENSHOT_DIR``).
WebAuthn needs a secure context, so the pages are opened on ``http://localhost``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from agentauth.client import AgentAuthClient
from agentauth.models import Agent

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(
        os.environ.get("AGENTAUTH_TEST_BROWSER") != "1" or not shutil.which(CHROMIUM),
        reason="browser tier: set AGENTAUTH_TEST_BROWSER=1 with Debian's chromium installed",
    ),
    pytest.mark.django_db(transaction=True),
]
SHOTS = Path(os.environ.get("AGENTAUTH_SCREENSHOT_DIR", "artifacts/screenshots"))

# Playwright's sync API keeps an event loop on this thread; the ORM calls the tests make
# between browser steps are ordinary synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def server(live_server: Any, settings: Any) -> str:
    url = live_server.url.replace("127.0.0.1", "localhost")
    settings.AGENTAUTH_ISSUER = f"{url}/api/auth"
    settings.AGENTAUTH_APPROVAL_INTERVAL = 1
    return str(url)


@pytest.fixture
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        context = browser.new_context(viewport={"width": 1000, "height": 900})
        # Report every Content-Security-Policy violation on the console, where it is collected.
        context.add_init_script(
            "document.addEventListener('securitypolicyviolation', (e) => console.error("
            "'CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI));"
        )
        page = context.new_page()
        page.csp_violations = []
        page.on("console", lambda msg: _collect_csp(page, msg.text))
        page.on("pageerror", lambda exc: _collect_csp(page, str(exc)))
        yield page
        browser.close()


def _collect_csp(page: Any, text: str) -> None:
    if "Content Security Policy" in text or "CSP violation" in text:
        page.csp_violations.append(text)


def assert_csp_clean(page: Any, response: Any = None) -> None:
    """Spec §8.10: the approval pages run under a strict CSP, and nothing on them breaks it."""
    assert page.csp_violations == []
    if response is not None:
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, server: str, username: str, password: str, next_path: str) -> None:
    page.goto(f"{server}/accounts/login/?next={next_path}")
    shot(page, "01-sign-in")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_user_approves_one_capability_and_denies_another(
    server: str, page: Any, django_user_model: Any
) -> None:
    # spec: §7.1 device authorization, §5.3 partial approval; the agent's status reflects it.
    django_user_model.objects.create_user("alice", "alice@example.com", "alice-password")
    client = AgentAuthClient(server)
    connection = client.register(
        "Ticket helper",
        capabilities=["check_balance", "read_only_note"],
        reason="Summarise my account",
        host_name="Alice's laptop",
    )
    code = connection.approval["user_code"]

    sign_in(page, server, "alice", "alice-password", "/api/auth/device")
    page.wait_for_selector("text=Connect an agent")
    shot(page, "02-device-code")
    assert_csp_clean(page, page.reload())
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector("text=Capabilities requested")
    shot(page, "03-approve")
    page.get_by_role("checkbox", name="read_only_note").uncheck()
    page.get_by_role("button", name="Approve selected").click()
    page.wait_for_selector("#result")
    shot(page, "04-done")
    assert "You approved check_balance" in page.inner_text("#result")

    status = client.status(connection.agent_id)
    grants = {g["capability"]: g["status"] for g in status["agent_capability_grants"]}
    assert status["status"] == "active"
    assert grants == {"check_balance": "active", "read_only_note": "denied"}

    connected = page.goto(f"{server}/api/auth/connected")
    shot(page, "05-connected-apps")
    assert "Ticket helper" in page.content()
    # The stylesheet is a file now: the page is styled, not blocked.
    assert page.eval_on_selector("body", "b => getComputedStyle(b).maxWidth") != "none"
    assert_csp_clean(page, connected)

    # Revoking asks first, on a page of its own (no script, so the CSP stays strict).
    page.get_by_role("button", name="Revoke…", exact=True).click()
    page.wait_for_selector("#consequence")
    shot(page, "05b-confirm-revoke")
    assert_csp_clean(page)
    page.get_by_role("link", name="Cancel").click()
    page.wait_for_selector("text=Recent activity")
    assert client.status(connection.agent_id)["status"] == "active"


def test_webauthn_capability_with_a_virtual_authenticator(
    server: str, page: Any, django_user_model: Any
) -> None:
    # spec: §8.11 — approving a write capability needs a user-verified assertion.
    django_user_model.objects.create_user("alice", "alice@example.com", "alice-password")
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    sign_in(page, server, "alice", "alice-password", "/api/auth/webauthn")
    page.get_by_role("button", name="Add a passkey").click()
    page.wait_for_selector("text=added", timeout=15000)
    shot(page, "06-passkeys")
    assert_csp_clean(page)

    client = AgentAuthClient(server)
    connection = client.register("Payments bot", capabilities=["transfer"])
    page.goto(f"{server}/api/auth/device")
    page.get_by_label("Code").fill(connection.approval["user_code"])
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector("#webauthn-verify")
    # Needs a person: not ticked in advance; the person ticks it, then verifies.
    assert not page.get_by_role("checkbox", name="transfer").is_checked()
    page.get_by_role("checkbox", name="transfer").check()
    shot(page, "07-approve-webauthn")
    page.get_by_role("button", name="Verify with passkey").click()
    page.wait_for_selector("#result", timeout=15000)
    shot(page, "08-done-webauthn")
    assert_csp_clean(page)
    status = client.status(connection.agent_id)
    assert status["status"] == "active"
    assert status["agent_capability_grants"][0]["status"] == "active"


def test_staff_approve_a_pending_agent_in_the_admin(
    server: str, page: Any, django_user_model: Any, settings: Any
) -> None:
    # spec §2.2.2, §8.11 — the admin's Approve action opens the approval page, whose decision
    # goes through approvals.decide like every other.
    django_user_model.objects.create_superuser("sam", "sam@example.com", "sam-password")
    client = AgentAuthClient(server)
    connection = client.register("Nightly job", capabilities=["check_balance"], mode="autonomous")
    assert connection.status == "pending"

    page.goto(f"{server}/admin/login/?next=/admin/agentauth/agent/")
    page.fill("#id_username", "sam")
    page.fill("#id_password", "sam-password")
    page.click("input[type=submit]")
    page.wait_for_selector("#changelist")
    shot(page, "09-admin-agents")
    page.check(f"input[name=_selected_action][value='{connection.agent_id}']")
    page.select_option("select[name=action]", "approve")
    page.click("button[name=index]")
    page.wait_for_selector("text=You are deciding as an administrator")
    page.get_by_role("button", name="Approve selected").click()
    page.wait_for_selector("#result")
    shot(page, "10-admin-approved")
    assert Agent.objects.get(pk=connection.agent_id).status == "active"
    assert client.status(connection.agent_id)["status"] == "active"
    call_command("agentauth_sweep")  # and nothing about it changes in a sweep
    assert Agent.objects.get(pk=connection.agent_id).status == "active"
