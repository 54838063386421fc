"""CIBA back-channel approval (spec §7.2, §7.5, §8.11)."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from agentauth import notifications
from agentauth.models import Agent, ApprovalRequest
from agentauth.testing import Keypair, make_host
from tests.conftest import Api, post_decision

pytestmark = pytest.mark.django_db


def register_ciba(api: Api, hint: str, capture: Any, **extra: Any) -> Any:
    body = {
        "name": "Back office bot",
        "capabilities": ["check_balance"],
        "preferred_method": "ciba",
        "login_hint": hint,
        "binding_message": "Approve <b>BOT-42</b>",
        **extra,
    }
    with capture(execute=True):
        return api.register(Keypair.generate(), body=body)


def test_ciba_approval_object(api: Api, user: Any, django_capture_on_commit_callbacks: Any) -> None:
    # spec: §7, §7.2
    reply = register_ciba(api, user.email, django_capture_on_commit_callbacks)
    assert reply.status == 200
    approval = reply.body["approval"]
    assert approval["method"] == "ciba"
    assert approval["binding_message"] == "Approve BOT-42"  # sanitised (§8)
    assert set(approval) == {"method", "binding_message", "expires_in", "interval"}
    assert "user_code" not in approval


def test_notification_email_links_to_an_approval_the_user_can_make(
    api: Api, client: Client, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec: §7.2, §8.11 — the link works only for the named user, after signing in.
    reply = register_ciba(api, user.email, django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [user.email] and "BOT-42" in message.body
    link = re.search(r"https?://\S+", message.body)
    assert link is not None
    path = link.group(0).removeprefix("http://testserver")
    assert client.get(path).status_code == 302  # sign in first
    client.force_login(user)
    assert client.get(path).status_code == 200
    response = post_decision(client, path, {"action": "approve", "capabilities": ["check_balance"]})
    assert response.status_code == 200
    agent = Agent.objects.get(pk=reply.body["agent_id"])
    assert agent.status == "active" and agent.user == user


def test_another_user_cannot_open_the_request(
    api: Api,
    client: Client,
    user: Any,
    django_user_model: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    register_ciba(api, user.email, django_capture_on_commit_callbacks)
    approval = ApprovalRequest.objects.get()
    mallory = django_user_model.objects.create_user(username="mallory", password="x")
    client.force_login(mallory)
    assert client.get(f"/api/auth/approve/{approval.pk}").status_code == 404


def _shape(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("agent_id", "host_id")}


def test_no_user_enumeration(api: Api, user: Any, django_capture_on_commit_callbacks: Any) -> None:
    # spec: §7.2 (CIBA Core §14) — an existing and an unknown hint answer alike.
    known = register_ciba(api, user.email, django_capture_on_commit_callbacks)
    unknown = register_ciba(api, "nobody@example.com", django_capture_on_commit_callbacks)
    assert known.status == unknown.status == 200
    known_approval = dict(known.body["approval"])
    unknown_approval = dict(unknown.body["approval"])
    # expires_in is computed at response time and may differ by a second.
    assert abs(known_approval.pop("expires_in") - unknown_approval.pop("expires_in")) <= 1
    assert known_approval == unknown_approval
    known.body.pop("approval"), unknown.body.pop("approval")
    assert _shape(known.body) == _shape(unknown.body)
    assert set(known.headers) == set(unknown.headers)
    assert len(mail.outbox) == 1  # only the real person hears about it


def test_linked_user_is_asked_whatever_the_hint(
    api: Api, user: Any, django_user_model: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec: §7.5 — the linked user is known; a hint cannot redirect the request elsewhere.
    other = django_user_model.objects.create_user(
        username="bob", email="bob@example.com", password="x"
    )
    _, key = make_host(user=user)
    with django_capture_on_commit_callbacks(execute=True):
        reply = api.register(
            key,
            body={
                "name": "x",
                "capabilities": ["transfer"],
                "preferred_method": "ciba",
                "login_hint": other.email,
            },
        )
    assert reply.body["approval"]["method"] == "ciba"
    assert ApprovalRequest.objects.get().user == user
    assert [m.to for m in mail.outbox] == [[user.email]]


def test_ciba_not_offered_falls_back_to_device(api: Api, user: Any, settings: Any) -> None:
    # spec: §7.5 — the server decides.
    settings.AGENTAUTH_APPROVAL_METHODS = ["device_authorization"]
    body = {"name": "x", "preferred_method": "ciba", "login_hint": user.email}
    reply = api.register(Keypair.generate(), body=body)
    assert reply.body["approval"]["method"] == "device_authorization"


def test_without_a_hint_or_linked_user_it_is_device(api: Api) -> None:
    reply = api.register(Keypair.generate(), body={"name": "x", "preferred_method": "ciba"})
    assert reply.body["approval"]["method"] == "device_authorization"


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    status = 204

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Receiver.received.append(json.loads(self.rfile.read(length)))
        self.send_response(_Receiver.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook(settings: Any) -> Any:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.received = []
    _Receiver.status = 204
    settings.AGENTAUTH_CIBA_NOTIFIER = "agentauth.notifications.WebhookNotifier"
    settings.AGENTAUTH_CIBA_WEBHOOK_URL = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield _Receiver
    server.shutdown()


def test_webhook_notifier(api: Api, user: Any, webhook: Any, settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    body = {"name": "x", "preferred_method": "ciba", "login_hint": user.email}
    api.register(Keypair.generate(), body=body)
    approval = ApprovalRequest.objects.get()
    assert notifications.notify(approval.pk) is True
    event = webhook.received[-1]
    assert event["approval_id"] == approval.pk and event["user_id"] == str(user.pk)
    assert event["approval_url"].endswith(f"/api/auth/approve/{approval.pk}")


def test_webhook_display_fields_are_defanged(api: Api, user: Any, webhook: Any) -> None:
    # spec §8.10: what the agent chose reaches a person's screen as plain text no chat client
    # links; the raw values stay beside it for code that compares them.
    body = {
        "name": "Visit https://evil.example/login now",
        "host_name": "www.evil.example",
        "preferred_method": "ciba",
        "login_hint": user.email,
        "binding_message": "go to evil.example",
        "reason": "see http://evil.example",
    }
    api.register(Keypair.generate(), body=body)
    assert notifications.notify(ApprovalRequest.objects.get().pk) is True
    event = webhook.received[-1]
    assert event["agent"]["name"] == body["name"]
    assert event["binding_message"] == body["binding_message"]
    shown = event["display"]
    assert set(shown) == {"host_name", "agent_name", "binding_message", "reason"}
    for text in shown.values():
        assert "evil.example" not in text and "://" not in text, shown
    assert "evil[.]example" in shown["agent_name"] and "https[:]//" in shown["agent_name"]


def test_failing_webhook_raises_so_the_task_retries(api: Api, user: Any, webhook: Any) -> None:
    webhook.status = 500
    body = {"name": "x", "preferred_method": "ciba", "login_hint": user.email}
    api.register(Keypair.generate(), body=body)
    with pytest.raises(Exception):
        notifications.notify(ApprovalRequest.objects.get().pk)


def test_nothing_is_sent_to_a_deactivated_person(api: Api, user: Any, webhook: Any) -> None:
    # A person whose account was switched off can no longer decide: they are not told either.
    body = {"name": "x", "preferred_method": "ciba", "login_hint": user.email}
    api.register(Keypair.generate(), body=body)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert notifications.notify(ApprovalRequest.objects.get().pk) is False
    assert webhook.received == []


def test_nothing_is_sent_for_an_unknown_hint_or_a_decided_request(api: Api, user: Any) -> None:
    api.register(
        Keypair.generate(),
        body={"name": "x", "preferred_method": "ciba", "login_hint": "ghost@example.com"},
    )
    assert notifications.notify(ApprovalRequest.objects.get().pk) is False
    assert notifications.notify("apr_nope") is False


# --- notification floods, who is told, what a mail may contain (spec §7.2, §8.10) -------------


@pytest.fixture
def ciba_limits(settings: Any) -> dict[str, Any]:
    from django.core.cache import cache

    cache.clear()
    limits = {**settings.AGENTAUTH_RATE_LIMITS, "ciba_host": "4/hour", "ciba_recipient": "3/hour"}
    settings.AGENTAUTH_RATE_LIMITS = limits
    return limits


def test_fresh_keypairs_cannot_flood_one_person(
    api: Api, user: Any, ciba_limits: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec §7.2 (CIBA Core §14): one cheap key per request must not mean one mail per request.
    for _ in range(8):
        assert register_ciba(api, user.email, django_capture_on_commit_callbacks).status == 200
    assert len(mail.outbox) == 3


def test_one_host_cannot_flood_many_people(
    api: Api, django_user_model: Any, ciba_limits: Any, django_capture_on_commit_callbacks: Any
) -> None:
    host = Keypair.generate()
    for i in range(8):
        django_user_model.objects.create_user(f"u{i}", f"u{i}@example.com", "x")
        body = {"name": "x", "preferred_method": "ciba", "login_hint": f"u{i}@example.com"}
        with django_capture_on_commit_callbacks(execute=True):
            assert api.register(host, body=body).status == 200
    assert len(mail.outbox) == 4


def test_strangers_do_not_use_up_the_budget_of_a_persons_own_hosts(
    api: Api, user: Any, ciba_limits: Any, django_capture_on_commit_callbacks: Any
) -> None:
    for _ in range(5):
        register_ciba(api, user.email, django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 3
    _, key = make_host(user=user)
    with django_capture_on_commit_callbacks(execute=True):
        api.register(key, body={"name": "mine", "capabilities": ["transfer"]} | CIBA)
    assert len(mail.outbox) == 4 and mail.outbox[-1].to == [user.email]


CIBA = {"preferred_method": "ciba"}


def test_a_retried_send_counts_once(
    api: Api, user: Any, ciba_limits: Any, settings: Any, webhook: Any
) -> None:
    # A failed delivery is retried by the task; the retry is not a new notification.
    settings.AGENTAUTH_RATE_LIMITS = {**ciba_limits, "ciba_recipient": "1/hour"}
    register_ciba(api, user.email, lambda **kw: contextlib.nullcontext())
    approval_id = ApprovalRequest.objects.get().pk
    webhook.status = 500
    with pytest.raises(Exception):
        notifications.notify(approval_id)
    webhook.status = 204
    assert notifications.notify(approval_id) is True


def test_autonomous_agent_hint_notifies_only_an_administrator(
    api: Api,
    user: Any,
    django_user_model: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # spec §2.2.2: only an administrator decides for an autonomous agent, so a regular user
    # named by its hint is never bothered; the answer is the same CIBA object either way.
    plain = register_ciba(api, user.email, django_capture_on_commit_callbacks, mode="autonomous")
    assert plain.body["approval"]["method"] == "ciba" and mail.outbox == []
    assert ApprovalRequest.objects.get(agent_id=plain.body["agent_id"]).user is None
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "x")
    register_ciba(api, admin.email, django_capture_on_commit_callbacks, mode="autonomous")
    assert [m.to for m in mail.outbox] == [[admin.email]]


def test_autonomous_hint_reaches_a_user_with_the_permission(
    api: Api, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.contrib.auth.models import Group, Permission

    group = Group.objects.create(name="agent admins")
    group.permissions.add(
        Permission.objects.get(content_type__app_label="agentauth", codename="approve_agent")
    )
    user.groups.add(group)
    register_ciba(api, user.email, django_capture_on_commit_callbacks, mode="autonomous")
    assert [m.to for m in mail.outbox] == [[user.email]]


def test_an_inactive_linked_user_is_not_mailed(
    api: Api, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _, key = make_host(user=user)
    user.is_active = False
    user.save()
    with django_capture_on_commit_callbacks(execute=True):
        reply = api.register(key, body={"name": "x", "capabilities": ["transfer"]} | CIBA)
    assert reply.body["approval"]["method"] == "ciba" and mail.outbox == []


FULL_WIDTH = "".join(chr(ord(c) + 0xFEE0) for c in "evil.example")  # full-width letters and dot
HOSTILE = "Visit https://evil.example/login or www.evil.example, evil.example and a@b.example"


def test_mail_text_is_plain_limited_and_never_linkable(
    api: Api, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec §8.10: attacker-chosen fields are shown as text, never as clickable links.
    register_ciba(
        api,
        user.email,
        django_capture_on_commit_callbacks,
        name="Bank.example support " + "x" * 100,
        host_name="http://login.bank.example",
        binding_message=HOSTILE,
        reason="See mailto:help@evil.example or " + FULL_WIDTH,
    )
    message = mail.outbox[0]
    approval_link = re.search(r"http://testserver/api/auth/approve/\S+", message.body)
    assert approval_link is not None
    rest = message.body.replace(approval_link.group(0), "")
    assert re.search(r"(?i)(https?|mailto)\s*:", rest) is None, rest
    assert re.search(r"\w\.\w", rest) is None, rest  # no dotted name anywhere
    assert "evil[.]example" in rest and "https[:]//login" not in rest
    assert "x" * 60 not in rest  # names are cut short
    assert "evil" not in message.subject and "Bank" not in message.subject


@pytest.mark.parametrize(
    "text",
    [
        "https://evil.example",
        "HTTP://EVIL.EXAMPLE",
        "www.evil.example",
        "evil.example/path",
        "evil。example",
        "evil\u200b.example",
        "javascript:alert(1)",
        "line one\nSubject: forged",
    ],
)
def test_mail_text_defangs(text: str) -> None:
    out = notifications.mail_text(text, 200)
    assert re.search(r"\w\.\w", out) is None
    assert re.search(r"(?i)\b(https?|javascript)\s*:", out) is None
    assert "\n" not in out


def test_limited_or_unknown_hints_cost_the_request_the_same(
    api: Api,
    user: Any,
    ciba_limits: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # spec §7.2 (CIBA Core §14): same response and same statements whether the hinted person
    # exists, may decide, or is past their limit; the limits are counted later, in the task.
    from django.db import connection

    def statements(hint: str, **extra: Any) -> list[str]:
        seen: list[str] = []

        def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            seen.append(re.sub(r'"s\d+_x\d+"', '"savepoint"', sql))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record), django_capture_on_commit_callbacks():
            reply = api.register(Keypair.generate(), body={"name": "x", "login_hint": hint} | CIBA)
        assert reply.status == 200 and reply.body["approval"]["method"] == "ciba"
        return seen

    for _ in range(4):
        register_ciba(api, user.email, django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 3  # alice is now past her limit
    limited = statements(user.email)
    assert statements("ghost@example.com") == limited
    assert statements("bob@example.com") == limited
    assert statements(user.email, mode="autonomous") == statements("ghost@example.com")
