"""CIBA back-channel approval (spec §7.2; checklist AP12-AP18, S26, S29)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from agentauth import notifications, tasks
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
    # spec: AP3, AP5, AP12
    reply = register_ciba(api, user.email, django_capture_on_commit_callbacks)
    assert reply.status == 200
    approval = reply.body["approval"]
    assert approval["method"] == "ciba"
    assert approval["binding_message"] == "Approve BOT-42"  # sanitised (S20)
    assert set(approval) == {"method", "binding_message", "expires_in", "interval"}
    assert "user_code" not in approval


def test_notification_email_links_to_an_approval_the_user_can_make(
    api: Api, client: Client, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec: AP14, S26 — the link works only for the named user, after signing in.
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
    # spec: S29 (CIBA Core §14) — an existing and an unknown hint answer alike.
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
    # spec: AP18 — the linked user is known; a hint cannot redirect the request elsewhere.
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
    # spec: AP17 — the server decides.
    settings.AGENTAUTH_APPROVAL_METHODS = ["device_authorization"]
    body = {"name": "x", "preferred_method": "ciba", "login_hint": user.email}
    reply = api.register(Keypair.generate(), body=body)
    assert reply.body["approval"]["method"] == "device_authorization"


def test_without_a_hint_or_linked_user_it_is_device(api: Api) -> None:
    reply = api.register(Keypair.generate(), body={"name": "x", "preferred_method": "ciba"})
    assert reply.body["approval"]["method"] == "device_authorization"


def test_notification_task_retries_with_backoff() -> None:
    task = tasks.send_ciba_notification
    assert task.name == "agentauth.send_ciba_notification"
    assert task.autoretry_for == (Exception,) and task.max_retries == 5
    assert task.retry_backoff is True


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


def test_failing_webhook_raises_so_the_task_retries(api: Api, user: Any, webhook: Any) -> None:
    webhook.status = 500
    body = {"name": "x", "preferred_method": "ciba", "login_hint": user.email}
    api.register(Keypair.generate(), body=body)
    with pytest.raises(Exception):
        notifications.notify(ApprovalRequest.objects.get().pk)


def test_nothing_is_sent_for_an_unknown_hint_or_a_decided_request(api: Api, user: Any) -> None:
    api.register(
        Keypair.generate(),
        body={"name": "x", "preferred_method": "ciba", "login_hint": "ghost@example.com"},
    )
    assert notifications.notify(ApprovalRequest.objects.get().pk) is False
    assert notifications.notify("apr_nope") is False
