"""Admin: staff deny and revoke through the same domain functions as the API, and approve on
the approval page (which calls ``approvals.decide``).

Actions never ``queryset.update()`` state: each object goes through ``approvals.decide``,
``agents.revoke_agent`` or ``hosts.revoke_host``/``unlink_host``, so the audit trail and signals
are identical whatever the entry point.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html

from . import agents, approvals, grants, hosts, webauthn
from .errors import ProtocolError
from .models import (
    Agent,
    ApprovalRequest,
    AuditEvent,
    CapabilityGrant,
    Host,
    WebAuthnCredential,
)


class GrantInline(admin.TabularInline):
    model = CapabilityGrant
    extra = 0
    fields = (
        "capability",
        "status",
        "constraints",
        "granted_by",
        "denied_by",
        "reason",
        "expires_at",
    )
    readonly_fields = fields
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class HostForm(forms.ModelForm):
    class Meta:
        model = Host
        fields = ("name", "default_capabilities", "expires_at")

    def clean_default_capabilities(self) -> list[str]:
        try:
            return hosts.validate_defaults(self.cleaned_data["default_capabilities"])
        except ProtocolError as exc:
            raise forms.ValidationError(exc.message) from None


class LinkHostForm(forms.Form):
    username = forms.CharField(label="Link to the user with this username")


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "status", "mode", "host", "user", "created_at", "last_used_at")
    list_filter = ("status", "mode", "created_at")
    search_fields = ("id", "name", "host__id", "host__name")
    list_select_related = ("host", "user")
    raw_id_fields = ("host", "user")
    readonly_fields = (
        "audit_trail",
        "id",
        "host",
        "user",
        "mode",
        "status",
        "public_key",
        "thumbprint",
        "jwks_url",
        "kid",
        "revocation_reason",
        "last_used_at",
        "activated_at",
        "expires_at",
        "revoked_at",
        "created_at",
        "updated_at",
    )
    inlines = [GrantInline]

    @admin.display(description="Audit trail")
    def audit_trail(self, obj: Agent) -> str:
        url = reverse("admin:agentauth_auditevent_changelist") + f"?agent_id={obj.pk}"
        return format_html("<a href='{}'>Everything this agent did and had done to it</a>", url)

    actions = ["approve", "deny", "revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # agents register themselves through a host

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return approvals.is_administrator(request.user)

    @admin.action(description="Approve… (on its approval page)", permissions=["approve"])
    def approve(self, request: HttpRequest, queryset: QuerySet[Agent]) -> HttpResponse | None:
        """Approving happens on the approval page, where the administrator sees exactly what is
        asked, confirms it is them and steps up with a passkey if a capability needs it; the
        page's decision goes through ``approvals.decide`` like every other."""
        pages = []
        for agent in queryset.select_related("host"):
            try:
                approval = approvals.live_request(agent)
            except ProtocolError as exc:
                self.message_user(request, f"{agent}: {exc.message}", messages.WARNING)
                continue
            if not approvals.may_view(approval, request.user, request.session):
                self.message_user(
                    request,
                    f"{agent}: it acts for a person, who approves it themselves (on the approval "
                    "page, or an operator runs agentauth_approve --user THEM).",
                    messages.WARNING,
                )
                continue
            pages.append((agent, reverse("agentauth:approve", args=[approval.pk])))
        if len(pages) == 1 and queryset.count() == 1:
            return redirect(pages[0][1])
        for agent, url in pages:
            self.message_user(
                request,
                format_html("{}: <a href='{}'>decide on its approval page</a>.", agent, url),
            )
        return None

    @admin.action(description="Deny the connection", permissions=["approve"])
    def deny(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        approver = approvals.Approver.in_session(request.user, request.session)
        done = 0
        for agent in queryset.select_related("host"):
            try:
                approvals.decide(
                    approvals.live_request(agent),
                    approver=approver,
                    reject=True,
                    reason="Denied by an administrator",
                )
                done += 1
            except ProtocolError as exc:
                self.message_user(request, f"{agent}: {exc.message}", messages.WARNING)
        if done:
            self.message_user(request, f"Denied {done} agent(s).", messages.SUCCESS)

    @admin.action(description="Revoke", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        count = sum(
            agents.revoke_agent(a, actor_type="staff", actor_id=str(request.user.pk))
            for a in queryset
        )
        self.message_user(request, f"Revoked {count} agent(s).", messages.SUCCESS)


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    form = HostForm
    list_display = ("name", "id", "status", "user", "created_at", "last_used_at")
    list_filter = ("status", "created_at")
    search_fields = ("id", "name", "thumbprint")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    readonly_fields = (
        "id",
        "thumbprint",
        "public_key",
        "jwks_url",
        "status",
        "previous_thumbprint",
        "previous_thumbprint_until",
        "activated_at",
        "last_used_at",
        "revoked_at",
        "created_at",
        "updated_at",
    )
    fields = ("name", "default_capabilities", "expires_at", *readonly_fields, "user")
    actions = ["revoke", "link", "unlink"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # use agentauth_create_host: it validates the key and computes the id

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # Linking goes through hosts.link_host (it claims autonomous agents), never a form.
        return (*self.readonly_fields, "user")

    @admin.action(description="Revoke (cascades to its agents)", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        total = 0
        for host in queryset:
            total += hosts.revoke_host(host, actor_type="staff", actor_id=str(request.user.pk))
        self.message_user(
            request, f"Revoked {queryset.count()} host(s) and {total} agent(s).", messages.SUCCESS
        )

    @admin.action(description="Link to a user…", permissions=["change"])
    def link(self, request: HttpRequest, queryset: QuerySet[Host]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one host.", messages.WARNING)
            return None
        host = queryset.get()
        form = LinkHostForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            from django.contrib.auth import get_user_model

            User = get_user_model()
            user = User.objects.filter(
                **{User.USERNAME_FIELD: form.cleaned_data["username"]}
            ).first()
            if user is None:
                self.message_user(request, "No such user.", messages.ERROR)
                return None
            try:
                claimed = hosts.link(host, user)
            except ProtocolError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return None
            self.message_user(
                request, f"Linked {host} to {user}; {len(claimed)} autonomous agent(s) claimed."
            )
            return None
        return render(
            request,
            "admin/agentauth/link_host.html",
            {
                "host": host,
                "form": form,
                "opts": self.model._meta,
                "queryset": queryset,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(
        description="Unlink from its user (revokes delegated agents)", permissions=["change"]
    )
    def unlink(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        revoked = 0
        for host in queryset.exclude(user=None):
            revoked += len(
                hosts.unlink_host(host, actor_type="staff", actor_id=str(request.user.pk))
            )
        self.message_user(request, f"Unlinked; {revoked} delegated agent(s) revoked.")


@admin.register(CapabilityGrant)
class CapabilityGrantAdmin(admin.ModelAdmin):
    list_display = ("capability", "agent", "status", "granted_by", "expires_at", "created_at")
    list_filter = ("status", "capability")
    search_fields = ("agent__id", "capability")
    list_select_related = ("agent", "granted_by")
    raw_id_fields = ("agent", "granted_by", "denied_by", "approval")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Revoke", permissions=["view"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[CapabilityGrant]) -> None:
        if not request.user.has_perm("agentauth.change_agent"):
            raise PermissionDenied
        count = sum(
            grants.revoke_grant(g, actor_type="staff", actor_id=str(request.user.pk))
            for g in queryset.select_related("agent")
        )
        self.message_user(request, f"Revoked {count} grant(s).", messages.SUCCESS)


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "agent", "method", "status", "expires_at", "created_at")
    list_filter = ("status", "method")
    search_fields = ("id", "agent__id")
    list_select_related = ("agent",)
    exclude = ("user_code_hash",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: an audit trail that staff can edit is not an audit trail."""

    list_display = (
        "created_at",
        "kind",
        "actor_type",
        "agent_id",
        "host_id",
        "user_id",
        "capability",
        "outcome",
        "error_code",
    )
    list_filter = ("kind", "outcome", "actor_type", "capability", "created_at")
    search_fields = ("agent_id", "host_id", "user_id", "capability", "error_code")
    date_hierarchy = "created_at"

    def lookup_allowed(self, lookup: str, value: str, request: Any = None) -> bool:
        # ?agent_id=…, ?host_id=…, ?user_id=…: the links from the agent and host pages.
        if lookup in ("agent_id", "host_id", "user_id", "capability"):
            return True
        return bool(super().lookup_allowed(lookup, value, request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebAuthnCredential)
class WebAuthnCredentialAdmin(admin.ModelAdmin):
    """Read-only list of passkeys and security keys. Staff can revoke one (a lost key: it stops
    approving at once, the row stays for the audit trail) or delete it; nobody can edit the key
    material or add one here, since a credential only comes from its owner's authenticator."""

    list_display = ("name", "user", "confirmed", "created_at", "last_used_at", "sign_count")
    list_filter = ("confirmed", "created_at", "last_used_at")
    search_fields = ("name", "credential_id")
    search_help_text = "Name or credential id"
    list_select_related = ("user",)
    readonly_fields = (
        "user",
        "name",
        "confirmed",
        "credential_id",
        "aaguid",
        "transports",
        "sign_count",
        "created_at",
        "last_used_at",
    )
    fields = readonly_fields
    actions = ["revoke_credentials"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Revoke selected credentials", permissions=["delete"])
    def revoke_credentials(
        self, request: HttpRequest, queryset: QuerySet[WebAuthnCredential]
    ) -> None:
        revoked = sum(webauthn.revoke_credential(c, by=request.user) for c in queryset)
        self.message_user(request, f"{revoked} credential(s) revoked.", messages.SUCCESS)
