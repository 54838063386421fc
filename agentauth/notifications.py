"""CIBA notifications (spec §7.2): tell the named person that an agent waits for them.

A notifier is a class with ``send(approval, url)``; ``AGENTAUTH_CIBA_NOTIFIER`` picks it. It runs
from the outbox (``outbox.deliver``), which retries with backoff, so a notifier signals failure
by raising.

Sending costs an agent almost nothing, so CIBA Core §14 (which spec §7.2 makes a MUST) asks for
limits against notification floods. They are counted here, at delivery, after the request was
answered: the HTTP response and the request's database work are the same whether the hinted
person exists, is limited or not (no enumeration). Two rate scopes of ``AGENTAUTH_RATE_LIMITS``:

``ciba_host``       notifications caused by one host (all its agents), whoever receives them;
``ciba_recipient``  notifications to one person about hosts *not* linked to them (a
                    ``login_hint`` from a stranger's host); a person's own linked hosts never
                    use up this budget, so strangers cannot crowd out their real requests.

Everything an agent or host chose (host name, agent name, binding message, reason) goes into a
mail as plain text, length-limited and defanged so that no mail client turns it into a link
(spec §8.10).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
import urllib.request
from typing import Any

from django.core.mail import send_mail
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from . import ratelimit
from .conf import _get, app_settings
from .errors import ProtocolError
from .models import AgentMode, ApprovalMethod, ApprovalRequest, ApprovalStatus, HostStatus

logger = logging.getLogger(__name__)

#: Longest rendering of each attacker-chosen field in a mail (after which "…").
NAME_LIMIT = 60
MESSAGE_LIMIT = 120
REASON_LIMIT = 200

_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_DOT_BETWEEN = re.compile(r"(?<=\w)\.(?=\w)")
_SCHEME_COLON = re.compile(
    r"(?i)\b(https?|ftps?|file|mailto|tel|sms|callto|sip|javascript|data|ws|wss)\s*:"
)


def mail_text(value: Any, limit: int) -> str:
    """Attacker-chosen text made safe for a plain-text mail (spec §8.10: no clickable links).

    Control and format characters become spaces and whitespace is collapsed (no forged lines or
    headers); compatibility forms are folded (a full-width dot is a dot); the text is cut to
    ``limit``; then every scheme colon and every dot between word characters is bracketed, so
    ``https://evil.example``, ``www.evil.example`` and ``evil.example`` all reach the reader as
    ``https[:]//evil[.]example``-style text that no mail client links.
    """
    text = unicodedata.normalize("NFKC", str(value or "")).translate(_DOTS)
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text
    )
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = _SCHEME_COLON.sub(lambda m: f"{m.group(1)}[:]", text)
    return _DOT_BETWEEN.sub("[.]", text)


class EmailNotifier:
    """Plain-text email through Django's email backend, with a link to the approval page.

    The subject carries no attacker-chosen text; the body shows it as plain, defanged text."""

    def send(self, approval: ApprovalRequest, url: str) -> None:
        email = getattr(approval.user, "email", "")
        if not email:
            return
        send_mail(
            subject=_("An agent asks for your approval on %(site)s")
            % {"site": app_settings.PROVIDER_NAME},
            message=mail_body(approval, url),
            from_email=None,
            recipient_list=[email],
        )


def mail_body(approval: ApprovalRequest, url: str) -> str:
    """In the active language (the project's ``LANGUAGE_CODE`` when sent from a task)."""
    agent, host = approval.agent, approval.agent.host
    host_line = mail_text(host.name, NAME_LIMIT) or _("(unnamed application)")
    if host.status == HostStatus.PENDING:
        host_line += " " + _("(first time this application connects)")
    if agent.mode == AgentMode.DELEGATED:
        acts = _("on your behalf")
    else:
        acts = _("on its own (autonomous)")
    lines = [
        _("An agent asks for your approval on %(site)s.") % {"site": app_settings.PROVIDER_NAME},
        "",
        _("Application: %(host)s") % {"host": host_line},
        _("Agent: %(agent)s") % {"agent": mail_text(agent.name, NAME_LIMIT)},
        _("Acts: %(acts)s") % {"acts": acts},
    ]
    if approval.binding_message:
        message = mail_text(approval.binding_message, MESSAGE_LIMIT)
        lines.append(_("Message to compare with your agent's screen: %(m)s") % {"m": message})
    if approval.reason:
        reason = mail_text(approval.reason, REASON_LIMIT)
        lines.append(_("Reason it gives: %(reason)s") % {"reason": reason})
    lines += [
        "",
        _(
            "The lines above were written by the application, not by us; addresses in them are "
            "disabled on purpose."
        ),
        "",
        _("Review and decide: %(url)s") % {"url": url},
        "",
        _("If you did not expect this, ignore it: nothing happens without you."),
    ]
    return "\n".join(lines)


class WebhookNotifier:
    """POSTs a JSON event to ``AGENTAUTH_CIBA_WEBHOOK_URL`` (your push or chat service).

    ``agent.name`` and ``binding_message`` are what the agent sent, unchanged, for code that
    compares them; ``display`` holds the same attacker-chosen text prepared as for the mail
    (plain, shortened, defanged: spec §8.10), for a service that shows it to a person and would
    otherwise turn ``evil.example`` into a link."""

    def send(self, approval: ApprovalRequest, url: str) -> None:
        target = app_settings.CIBA_WEBHOOK_URL
        if not target or not target.startswith(("https://", "http://")):
            raise RuntimeError("AGENTAUTH_CIBA_WEBHOOK_URL is not an http(s) URL")
        agent, host = approval.agent, approval.agent.host
        payload = {
            "type": "agentauth.approval_requested",
            "approval_id": approval.pk,
            "user_id": str(approval.user_id),
            "agent": {"id": approval.agent_id, "name": agent.name},
            "binding_message": approval.binding_message,
            "approval_url": url,
            "expires_at": approval.expires_at.isoformat(),
            "display": {
                "host_name": mail_text(host.name, NAME_LIMIT),
                "agent_name": mail_text(agent.name, NAME_LIMIT),
                "binding_message": mail_text(approval.binding_message, MESSAGE_LIMIT),
                "reason": mail_text(approval.reason, REASON_LIMIT),
            },
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
    (the hint matched no one who could decide), nothing left to decide, or a limit is reached.
    """
    approval = (
        ApprovalRequest.objects.select_related("agent", "agent__host", "user")
        .filter(pk=approval_id, method=ApprovalMethod.CIBA, status=ApprovalStatus.PENDING)
        .first()
    )
    if approval is None or approval.user is None or approval.expires_at <= timezone.now():
        return False
    if not approval.user.is_active or not within_limits(approval):
        return False
    notifier: Any = import_string(app_settings.CIBA_NOTIFIER)()
    notifier.send(approval, approval_url(approval))
    return True


def within_limits(approval: ApprovalRequest) -> bool:
    """Count this notification against ``ciba_host`` and, for a stranger's host, against
    ``ciba_recipient``; ``False`` past either. Counted once per request, so a task retried
    after a failed send does not count twice. A cache that cannot answer raises (the task
    retries later): nothing is sent unmetered."""
    from django.core.cache import caches

    cache = caches[str(_get("RATE_LIMIT_CACHE", "default"))]
    try:
        first = cache.add(f"agentauth:ciba-counted:{approval.pk}", 1, 2 * 86400)
    except Exception as exc:
        raise ProtocolError("temporarily_unavailable", "Notification limits unavailable") from exc
    if not first:
        return True
    host = approval.agent.host
    try:
        ratelimit.hit("ciba_host", host.pk)
        if host.user_id != approval.user_id:
            ratelimit.hit("ciba_recipient", str(approval.user_id))
    except ProtocolError as exc:
        if exc.code != "rate_limited":
            raise
        logger.warning("agentauth: CIBA notification for %s not sent: %s", approval.pk, exc)
        return False
    return True
