"""Pages where a person decides (spec §7, §8.10, §8.11). Session-authenticated, CSRF-protected.

The rules live in ``approvals`` and ``webauthn``; these views only gather input and render:
- ``device``: enter the user code (RFC 8628), with a per-user lock-out;
- ``approve``: see exactly what is asked and approve all, some, or deny (the admin's Approve
  action lands here too). The form carries ``shown``, the digest of what was displayed;
  ``approvals.decide`` refuses a changed request, a stale sign-in, a missing step-up and anyone
  the agent does not answer to, and this view only redirects or re-renders;
- ``reauth``: confirm it is you (password, plus an OTP token if you have a device);
- ``webauthn_register``: add a passkey or security key;
- ``connected``: your hosts ("Connected apps"), agents, grants and recent activity.

Every view is wrapped by ``pages.person_page`` (or ``person_page_api`` for the JSON endpoints the
WebAuthn script calls): security headers and a 503 page when a service is down.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import devices_for_user

from .. import agents, approvals, hosts, webauthn
from ..capabilities import registry
from ..errors import ProtocolError
from ..models import (
    Agent,
    AgentMode,
    AgentStatus,
    ApprovalRequest,
    ApprovalStatus,
    AuditEvent,
    CapabilityGrant,
    GrantStatus,
    Host,
    HostStatus,
    WebAuthnCredential,
)
from .pages import person_page, person_page_api, render_page

#: What each approval strength asks of the person, in their words (spec §8.11).
STRENGTH_LABELS = {
    "none": gettext_lazy("No approval needed"),
    "session": gettext_lazy("Needs your sign-in"),
    "webauthn": gettext_lazy("Needs your security key"),
}

STATUS_LABELS = {
    "active": gettext_lazy("Active"),
    "pending": gettext_lazy("Waiting for approval"),
    "expired": gettext_lazy("Expired (can be reactivated)"),
    "revoked": gettext_lazy("Revoked"),
    "rejected": gettext_lazy("Denied"),
    "claimed": gettext_lazy("Claimed"),
}

#: Audit event kinds as the connected-apps page names them; unknown kinds show as they are.
EVENT_LABELS = {
    "agent.registered": gettext_lazy("Agent connected"),
    "agent.revoked": gettext_lazy("Agent revoked"),
    "agent.expired": gettext_lazy("Agent expired"),
    "agent.reactivated": gettext_lazy("Agent reactivated"),
    "agent.key_rotated": gettext_lazy("Agent key replaced"),
    "agent.deleted": gettext_lazy("Agent deleted"),
    "approval.decided": gettext_lazy("Request decided"),
    "capability.executed": gettext_lazy("Capability used"),
    "capability.refused": gettext_lazy("Capability refused"),
    "capability.requested": gettext_lazy("More access requested"),
    "grant.revoked": gettext_lazy("Access removed"),
    "host.created": gettext_lazy("Application registered"),
    "host.linked": gettext_lazy("Application linked to you"),
    "host.unlinked": gettext_lazy("Application unlinked"),
    "host.revoked": gettext_lazy("Application disconnected"),
    "host.key_rotated": gettext_lazy("Application key replaced"),
    "webauthn.revoked": gettext_lazy("Security key revoked"),
}


@person_page
@login_required
@require_http_methods(["GET", "POST"])
def device(request: HttpRequest) -> HttpResponse:
    code = (request.POST.get("code") or request.GET.get("code") or "")[:32]
    error = None
    if request.method == "POST":
        approval = approvals.enter_user_code(request.user, request.session, code)
        if approval is not None:
            return redirect("agentauth:approve", approval_id=approval.pk)
        # One answer for wrong, expired and locked-out codes: nothing to enumerate.
        error = _(
            "That code is not valid. Check it and try again; codes expire after a few minutes."
        )
    return render_page(request, "agentauth/device.html", {"code": code, "error": error})


def _visible_approval(
    request: HttpRequest, approval_id: str, *, replaced_too: bool = False
) -> ApprovalRequest:
    """The live request, if this person may see it; ``Http404`` otherwise (no hints).

    ``replaced_too``: also one the agent replaced by asking again, so that a decision posted
    against it reaches ``decide`` and is refused as changed rather than vanishing.
    """
    approval = (
        ApprovalRequest.objects.select_related("agent", "agent__host")
        .filter(pk=approval_id)
        .first()
    )
    if approval is None or not approvals.may_view(approval, request.user, request.session):
        raise Http404("No such request")
    live = approval.status == ApprovalStatus.PENDING and approval.expires_at > timezone.now()
    if not (live or (replaced_too and approval.status == ApprovalStatus.EXPIRED)):
        raise Http404("No such request")
    return approval


def _items(pending: list[CapabilityGrant]) -> list[dict[str, Any]]:
    items = []
    for grant in pending:
        strength = approvals.strength_of(grant.capability)
        items.append(
            {
                "grant": grant,
                "capability": registry.get(grant.capability),
                "strength": strength,
                "strength_label": STRENGTH_LABELS.get(strength, strength),
                # Only what needs nobody's approval is ticked in advance: anything that needs a
                # person is a choice the person makes, one box at a time.
                "preselected": strength == "none",
                "constraints": json.dumps(grant.constraints, indent=1) if grant.constraints else "",
            }
        )
    return items


def _page(
    request: HttpRequest, approval: ApprovalRequest, error: ProtocolError | None = None
) -> HttpResponse:
    """The request as the person sees it, with the digest their decision must carry back."""
    agent = approval.agent
    # One read: the digest the decision carries back covers exactly the grants listed.
    pending = list(agent.grants.filter(status=GrantStatus.PENDING).order_by("capability"))
    items = _items(pending)
    context: dict[str, Any] = {
        "approval": approval,
        "agent": agent,
        "host": agent.host,
        "items": items,
        "shown": approvals.shown_digest(approval, agent.status, pending),
        "new_host": agent.host.status == HostStatus.PENDING,
        "as_staff": agent.mode == AgentMode.AUTONOMOUS,
        "fresh": approvals.is_fresh(request.session),
        "needs_webauthn": approvals.required_strength(i["grant"].capability for i in items)
        == "webauthn",
        "has_credentials": webauthn.usable_credentials(request.user).exists(),
        "stepped_up": webauthn.stepup_verified(request.session, request.user, approval.pk),
        "can_approve": approvals.may_decide(approval, request.user, request.session),
        "can_deny": approvals.may_decide(approval, request.user, request.session, reject=True),
    }
    if error is not None:
        context["error"], context["error_code"] = error.message, error.code
    return render_page(
        request, "agentauth/approve.html", context, status=error.status if error else 200
    )


@person_page
@login_required
@require_http_methods(["GET", "POST"])
def approve(request: HttpRequest, approval_id: str) -> HttpResponse:
    if request.method == "GET":
        return _page(request, _visible_approval(request, approval_id))
    approval = _visible_approval(request, approval_id, replaced_too=True)
    agent = approval.agent
    approver = approvals.Approver.in_session(request.user, request.session)
    shown = request.POST.get("shown", "")
    action = request.POST.get("action")
    try:
        if action == "deny":
            approvals.decide(
                approval,
                approver=approver,
                shown=shown,
                reject=True,
                reason=request.POST.get("reason", "")[:500],
            )
            return render_page(request, "agentauth/done.html", {"agent": agent, "approved": []})
        if action != "approve":
            raise ProtocolError("invalid_request", "Choose approve or deny")
        decision = approvals.decide(
            approval,
            approver=approver,
            shown=shown,
            approve=request.POST.getlist("capabilities"),
        )
        webauthn.consume_stepup(request.session)
    except ProtocolError as exc:
        if exc.code == "fresh_auth_required":
            return redirect(f"{reverse('agentauth:reauth')}?next={request.path}")
        if exc.code == "request_changed":
            current = approvals.successor(approval, request.user, request.session)
            if approval.status == ApprovalStatus.PENDING and current is None:
                current = approval
            if current is None:
                raise Http404("No such request") from None
            if current.pk != approval.pk:
                messages.warning(request, exc.message)
                return redirect("agentauth:approve", approval_id=current.pk)
            approval.agent.refresh_from_db()
        return _page(request, approval, exc)
    return render_page(
        request,
        "agentauth/done.html",
        {"agent": agent, "approved": decision.approved, "denied": decision.denied},
    )


@person_page_api
@login_required
@require_POST
def approve_webauthn_begin(request: HttpRequest, approval_id: str) -> JsonResponse:
    approval = _visible_approval(request, approval_id)
    try:
        return JsonResponse(webauthn.begin_stepup(request.session, request.user, approval.pk))
    except ProtocolError as exc:
        return JsonResponse(exc.body(), status=exc.status)


@person_page_api
@login_required
@require_POST
def approve_webauthn_complete(request: HttpRequest, approval_id: str) -> JsonResponse:
    approval = _visible_approval(request, approval_id)
    try:
        credential = json.loads(request.body)
        webauthn.complete_stepup(request.session, request.user, approval.pk, credential)
    except (ValueError, UnicodeDecodeError):
        return JsonResponse({"error": "invalid_request", "message": "Not JSON"}, status=400)
    except ProtocolError as exc:
        return JsonResponse(exc.body(), status=exc.status)
    return JsonResponse({"verified": True})


@person_page
@login_required
@require_http_methods(["GET", "POST"])
def reauth(request: HttpRequest) -> HttpResponse:
    """Confirm it is you: the password, and an OTP token when you have an OTP device."""
    next_url = request.POST.get("next") or request.GET.get("next") or reverse("agentauth:connected")
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        next_url = reverse("agentauth:connected")
    me: Any = request.user
    otp_devices = [d for d in devices_for_user(me) if not isinstance(d, WebAuthnCredential)]
    error = None
    if request.method == "POST":
        user = authenticate(
            request,
            **{
                me.USERNAME_FIELD: me.get_username(),
                "password": request.POST.get("password", ""),
            },
        )
        token = request.POST.get("otp_token", "").strip()
        otp_ok = not otp_devices or any(d.verify_token(token) for d in otp_devices if token)
        if user is not None and user.pk == me.pk and otp_ok:
            approvals.mark_authenticated(request.session)
            return redirect(next_url)
        error = _("That did not match. Try again.")
    return render_page(
        request,
        "agentauth/reauth.html",
        {"next": next_url, "needs_otp": bool(otp_devices), "error": error},
    )


@person_page
@login_required
def webauthn_register(request: HttpRequest) -> HttpResponse:
    credentials = WebAuthnCredential.objects.filter(user=request.user).order_by("-created_at")
    return render_page(request, "agentauth/webauthn_register.html", {"credentials": credentials})


@person_page_api
@login_required
@require_POST
def webauthn_register_begin(request: HttpRequest) -> JsonResponse:
    if not approvals.is_fresh(request.session):
        return JsonResponse(
            {"error": "fresh_auth_required", "message": "Confirm it is you first"}, status=403
        )
    return JsonResponse(webauthn.begin_registration(request.session, request.user))


@person_page_api
@login_required
@require_POST
def webauthn_register_complete(request: HttpRequest) -> JsonResponse:
    try:
        payload = json.loads(request.body)
        credential = webauthn.complete_registration(
            request.session,
            request.user,
            payload.get("credential"),
            name=str(payload.get("name") or "Passkey"),
        )
    except (ValueError, UnicodeDecodeError, AttributeError):
        return JsonResponse({"error": "invalid_request", "message": "Not JSON"}, status=400)
    except ProtocolError as exc:
        return JsonResponse(exc.body(), status=exc.status)
    return JsonResponse({"registered": True, "name": credential.name})


@person_page
@login_required
@require_http_methods(["GET", "POST"])
def connected(request: HttpRequest) -> HttpResponse:
    """ "Connected apps" (spec §10.8): what can act for you, and the switches to stop it.

    Each switch asks first: the button posts the action, which renders a confirmation page
    saying what will happen; only a post carrying ``confirm=yes`` does it.
    """
    user: Any = request.user
    if request.method == "POST":
        if request.POST.get("confirm") != "yes":
            return _confirmation(request)
        _connected_action(request)
        return redirect("agentauth:connected")
    hosts = list(Host.objects.filter(user=user).exclude(status=HostStatus.REVOKED).order_by("name"))
    for host in hosts:
        host.status_label = STATUS_LABELS.get(host.status, host.status)  # type: ignore[attr-defined]
    agent_rows = list(
        Agent.objects.filter(user=user)
        .select_related("host")
        .prefetch_related("grants")
        .order_by("-created_at")
    )
    for agent in agent_rows:
        agent.status_label = STATUS_LABELS.get(agent.status, agent.status)  # type: ignore[attr-defined]
    names = {a.pk: a.name for a in agent_rows}
    activity = list(AuditEvent.objects.filter(user_id=str(user.pk)).order_by("-created_at")[:50])
    for event in activity:
        event.label = EVENT_LABELS.get(event.kind, event.kind)  # type: ignore[attr-defined]
        event.agent_name = names.get(event.agent_id, "")  # type: ignore[attr-defined]
    return render_page(
        request,
        "agentauth/connected.html",
        {
            "hosts": hosts,
            "agents": agent_rows,
            "activity": activity,
            "live_statuses": (AgentStatus.ACTIVE, AgentStatus.PENDING, AgentStatus.EXPIRED),
        },
    )


def _owned_target(request: HttpRequest) -> tuple[str, Any]:
    """The action posted from the connected-apps page and the signed-in person's own agent or
    host it names; anything else (another person's, unknown, no such action) is refused."""
    action, target = request.POST.get("action"), request.POST.get("id", "")
    model: Any = {"revoke_agent": Agent, "revoke_host": Host, "unlink_host": Host}.get(action or "")
    obj = model.objects.filter(pk=target, user=request.user).first() if model else None
    if obj is None:
        raise PermissionDenied
    return str(action), obj


def _confirmation(request: HttpRequest) -> HttpResponse:
    """What the switch will do, in plain words, with the one button that does it."""
    action, target = _owned_target(request)
    if action == "revoke_agent":
        agent = target
        question = _("Revoke %(name)s?") % {"name": agent.name}
        consequence = _(
            "It stops working at once and cannot be turned back on. The application can "
            "connect a new agent, which you would approve again."
        )
        button = _("Revoke")
    else:
        host = target
        count = hosts.agents_reached(host, unlink=action != "revoke_host")
        label = host.name or _("Unnamed application")
        if action == "revoke_host":
            question = _("Disconnect %(name)s?") % {"name": label}
            consequence = _(
                "The application and its %(count)d agent(s) stop working at once. It cannot "
                "reconnect with the same key."
            ) % {"count": count}
            button = _("Disconnect and revoke")
        else:
            question = _("Unlink %(name)s from your account?") % {"name": label}
            consequence = _(
                "Its %(count)d agent(s) acting for you are revoked, and the application no "
                "longer acts for you. It can ask to be linked again."
            ) % {"count": count}
            button = _("Unlink")
    return render_page(
        request,
        "agentauth/confirm.html",
        {
            "question": question,
            "consequence": consequence,
            "button": button,
            "action": action,
            "target": target.pk,
        },
    )


def _connected_action(request: HttpRequest) -> None:
    action, target = _owned_target(request)
    user: Any = request.user
    if action == "revoke_agent":
        agent = target
        agents.revoke_agent(agent, actor_type="user", actor_id=str(user.pk))
        messages.success(request, _("Revoked %(name)s.") % {"name": agent.name})
    else:
        host = target
        label = host.name or host.pk
        if action == "revoke_host":
            count = hosts.revoke_host(host, actor_type="user", actor_id=str(user.pk))
            messages.success(
                request,
                _("Disconnected %(name)s; %(count)d agent(s) revoked.")
                % {"name": label, "count": count},
            )
        else:
            revoked = hosts.unlink_host(host, actor_type="user", actor_id=str(user.pk))
            messages.success(
                request,
                _("Unlinked %(name)s; %(count)d agent(s) revoked.")
                % {"name": label, "count": len(revoked)},
            )
