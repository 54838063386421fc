"""CIBA notifications (spec §7.2): tell the named person that an agent waits for them.

A notifier is a class with ``send(approval, url)``; ``AGENTAUTH_CIBA_NOTIFIER`` picks it. It runs
in a Celery task that retries with backoff, so a notifier signals failure by raising.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from django.core.mail import send_mail
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string

from .conf import app_settings
from .models import ApprovalMethod, ApprovalRequest, ApprovalStatus


class EmailNotifier:
    """Plain-text email through Django's email backend, with a link to the approval page."""

    def send(self, approval: ApprovalRequest, url: str) -> None:
        email = getattr(approval.user, "email", "")
        if not email:
            return
        agent = approval.agent
        lines = [f'The agent "{agent.name}" asks for your approval.']
        if approval.binding_message:
            lines += ["", f"Message: {approval.binding_message}"]
        lines += [
            "",
            f"Review and decide: {url}",
            "",
            "If you did not expect this, ignore it: nothing happens without you.",
        ]
        send_mail(
            subject=f"Approve {agent.name} on {app_settings.PROVIDER_NAME}?",
            message="\n".join(lines),
            from_email=None,
            recipient_list=[email],
        )


class WebhookNotifier:
    """POSTs a JSON event to ``AGENTAUTH_CIBA_WEBHOOK_URL`` (your push or chat service)."""

    def send(self, approval: ApprovalRequest, url: str) -> None:
        target = app_settings.CIBA_WEBHOOK_URL
        if not target or not target.startswith(("https://", "http://")):
            raise RuntimeError("AGENTAUTH_CIBA_WEBHOOK_URL is not an http(s) URL")
        payload = {
            "type": "agentauth.approval_requested",
            "approval_id": approval.pk,
            "user_id": str(approval.user_id),
            "agent": {"id": approval.agent_id, "name": approval.agent.name},
            "binding_message": approval.binding_message,
            "approval_url": url,
            "expires_at": approval.expires_at.isoformat(),
        }
        request = urllib.request.Request(  # noqa: S310 - operator-configured http(s) URL
            target,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise RuntimeError(f"webhook answered {response.status}")


def approval_url(approval: ApprovalRequest) -> str:
    return app_settings.ORIGIN + reverse("agentauth:approve", args=[approval.pk])


def notify(approval_id: str) -> bool:
    """Send the notification for a live CIBA request; ``False`` when there is nobody to tell
    (the hint matched no one) or nothing left to decide."""
    approval = (
        ApprovalRequest.objects.select_related("agent", "user")
        .filter(pk=approval_id, method=ApprovalMethod.CIBA, status=ApprovalStatus.PENDING)
        .first()
    )
    if approval is None or approval.user is None or approval.expires_at <= timezone.now():
        return False
    notifier: Any = import_string(app_settings.CIBA_NOTIFIER)()
    notifier.send(approval, approval_url(approval))
    return True
