"""Concrete models. Invariants the spec states are database constraints, not hopes."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_otp.models import Device

from . import ids


class HostStatus(models.TextChoices):
    ACTIVE = "active"
    PENDING = "pending"
    REVOKED = "revoked"
    REJECTED = "rejected"


class AgentStatus(models.TextChoices):
    ACTIVE = "active"
    PENDING = "pending"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REJECTED = "rejected"
    CLAIMED = "claimed"


TERMINAL_AGENT_STATES = (AgentStatus.REVOKED, AgentStatus.REJECTED, AgentStatus.CLAIMED)
NON_TERMINAL_AGENT_STATES = (AgentStatus.ACTIVE, AgentStatus.PENDING, AgentStatus.EXPIRED)


class AgentMode(models.TextChoices):
    DELEGATED = "delegated"
    AUTONOMOUS = "autonomous"


class GrantStatus(models.TextChoices):
    ACTIVE = "active"
    PENDING = "pending"
    DENIED = "denied"
    # Not wire statuses (spec §3.3 has none): kept for the audit trail, never
    # returned and never effective.
    REVOKED = "revoked"
    EXPIRED = "expired"


LIVE_GRANT_STATES = (GrantStatus.ACTIVE, GrantStatus.PENDING)


class ApprovalMethod(models.TextChoices):
    DEVICE_AUTHORIZATION = "device_authorization"
    CIBA = "ciba"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


class Host(models.Model):
    """A client environment holding a host key (spec §2.7, §3.1)."""

    id = models.CharField(primary_key=True, max_length=40, default=ids.host_id, editable=False)
    name = models.CharField(max_length=128, blank=True)
    # The identifier agents and hosts put in ``iss``: RFC 7638 thumbprint of the current key.
    thumbprint = models.CharField(max_length=43, unique=True, null=True, blank=True)
    public_key = models.JSONField(null=True, blank=True)
    # A JWKS host is identified by its URL across key rotations (spec §4.2), so one URL, one host.
    jwks_url = models.URLField(max_length=2048, null=True, blank=True, unique=True)
    # Kept for a short grace window after an inline key rotation (§8.7).
    previous_thumbprint = models.CharField(max_length=43, null=True, blank=True, db_index=True)  # noqa: DJ001
    previous_thumbprint_until = models.DateTimeField(null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agentauth_hosts",
    )
    default_capabilities = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=HostStatus.choices, default=HostStatus.PENDING)
    activated_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status"]), models.Index(fields=["user", "status"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(public_key__isnull=False) | Q(jwks_url__isnull=False),
                name="agentauth_host_has_key_material",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or 'host'} ({self.id})"

    @property
    def is_linked(self) -> bool:
        return self.user_id is not None


class Agent(models.Model):
    """A runtime AI actor registered under a host (spec §2.1, §3.2)."""

    id = models.CharField(primary_key=True, max_length=40, default=ids.agent_id, editable=False)
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="agents")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agentauth_agents",
    )
    name = models.CharField(max_length=128)
    mode = models.CharField(max_length=16, choices=AgentMode.choices, default=AgentMode.DELEGATED)
    status = models.CharField(
        max_length=16, choices=AgentStatus.choices, default=AgentStatus.PENDING
    )
    public_key = models.JSONField(null=True, blank=True)
    # Registration idempotency key within the host (spec §5.3): thumbprint of the agent key.
    thumbprint = models.CharField(max_length=43)
    jwks_url = models.URLField(max_length=2048, null=True, blank=True)  # noqa: DJ001 - NULL = none
    kid = models.CharField(max_length=256, null=True, blank=True)  # noqa: DJ001
    revocation_reason = models.CharField(max_length=64, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    # Session end: min(last use + session TTL, activation + max lifetime, absolute end).
    expires_at = models.DateTimeField(null=True, blank=True)
    # Creation + absolute lifetime, fixed at creation: reactivation never moves it (spec §2.4).
    absolute_expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # Spec §2.2.2: who may decide for an autonomous agent (approvals.is_administrator).
        permissions = [("approve_agent", "Can decide approval requests for autonomous agents")]
        constraints = [
            models.UniqueConstraint(
                fields=["host", "thumbprint"], name="agentauth_one_agent_per_key"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "expires_at"]),
            models.Index(fields=["status", "absolute_expires_at"]),
            models.Index(fields=["host", "status"]),
            models.Index(fields=["user", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class CapabilityGrant(models.Model):
    """One capability for one agent, with its own status and constraints (spec §3.3)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="grants")
    capability = models.CharField(max_length=128)
    status = models.CharField(
        max_length=16, choices=GrantStatus.choices, default=GrantStatus.PENDING
    )
    constraints = models.JSONField(null=True, blank=True)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    denied_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reason = models.TextField(blank=True)
    approval = models.ForeignKey(
        "ApprovalRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="grants"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # One effective grant per capability, and at most one request waiting beside it (a
            # re-request with other constraints replaces the active grant when approved, §5.4).
            models.UniqueConstraint(
                fields=["agent", "capability"],
                condition=Q(status="active"),
                name="agentauth_one_active_grant_per_capability",
            ),
            models.UniqueConstraint(
                fields=["agent", "capability"],
                condition=Q(status="pending"),
                name="agentauth_one_pending_grant_per_capability",
            ),
        ]
        indexes = [
            models.Index(fields=["agent", "status"]),
            models.Index(fields=["status", "expires_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.capability} [{self.status}] for {self.agent_id}"

    def is_effective(self, now: Any = None) -> bool:
        """Active and not past its own expiry (spec §3.3)."""
        now = now or timezone.now()
        return self.status == GrantStatus.ACTIVE and (
            self.expires_at is None or self.expires_at > now
        )


class ApprovalRequest(models.Model):
    """A pending request for a person's consent (spec §7)."""

    id = models.CharField(primary_key=True, max_length=40, default=ids.approval_id, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="approval_requests")
    method = models.CharField(max_length=32, choices=ApprovalMethod.choices)
    status = models.CharField(
        max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    # Who is asked (CIBA) or, once decided, who decided.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agentauth_approval_requests",
    )
    # SHA-256 of the normalised user code; the code itself is never stored.
    user_code_hash = models.CharField(max_length=64, null=True, blank=True, unique=True)
    failed_attempts = models.PositiveIntegerField(default=0)
    binding_message = models.CharField(max_length=256, blank=True)
    login_hint = models.CharField(max_length=256, blank=True)
    reason = models.TextField(blank=True)
    interval = models.PositiveIntegerField(default=5)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status", "expires_at"])]

    def __str__(self) -> str:
        return f"{self.method} for {self.agent_id} [{self.status}]"


class ExecutionStatus(models.TextChoices):
    PENDING = "pending"
    # Claimed by a worker (a conditional UPDATE from pending), so a redelivered task never runs
    # the handler a second time. Shown as "pending" on the wire (spec §5.11 has no such status).
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class Execution(models.Model):
    """An asynchronous capability execution, polled at its ``status_url`` (spec §5.11)."""

    id = models.CharField(primary_key=True, max_length=40, default=ids.job_id, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="executions")
    capability = models.CharField(max_length=128)
    arguments = models.JSONField(default=dict)
    status = models.CharField(
        max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING
    )
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    jti = models.CharField(max_length=256, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"{self.capability} [{self.status}] {self.id}"


class OutboxKind(models.TextChoices):
    NOTIFICATION = "notification"  # ref: an ApprovalRequest id (CIBA, spec §7.2)
    JOB = "job"  # ref: an Execution id (spec §5.11 async)


class OutboxState(models.TextChoices):
    PENDING = "pending"  # not handed to the broker yet (or the broker refused it)
    QUEUED = "queued"  # handed to the broker; re-handed at next_attempt_at if still not done
    WORKING = "working"  # claimed by a worker; the claim lapses at next_attempt_at
    DONE = "done"
    FAILED = "failed"  # gave up after OUTBOX_MAX_ATTEMPTS


class OutboxMessage(models.Model):
    """Work that must follow a commit, written in the same transaction as what caused it.

    The broker is only a doorbell: if it is down, slow, or loses a message, or a worker dies,
    the sweep hands the row out again, and the worker's claim (a conditional UPDATE) makes a
    second delivery a no-op.
    """

    kind = models.CharField(max_length=16, choices=OutboxKind.choices)
    ref = models.CharField(max_length=40)
    state = models.CharField(
        max_length=16, choices=OutboxState.choices, default=OutboxState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=256, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    queued_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "ref"], name="agentauth_outbox_one_per_ref")
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.ref} [{self.state}]"


class SweepLock(models.Model):
    """One row, locked for the duration of a sweep so concurrent sweeps run one after another."""

    name = models.CharField(primary_key=True, max_length=32)

    def __str__(self) -> str:
        return self.name


class AuditEvent(models.Model):
    """An append-only record of who did what to whom (spec §11).

    Ids are stored as plain strings, not foreign keys, so the trail survives deletion of the
    agent, host or user it names.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=64)
    actor_type = models.CharField(max_length=16)  # agent | host | user | staff | system
    actor_id = models.CharField(max_length=64, blank=True)
    agent_id = models.CharField(max_length=40, blank=True, db_index=True)
    host_id = models.CharField(max_length=40, blank=True, db_index=True)
    user_id = models.CharField(max_length=64, blank=True, db_index=True)
    capability = models.CharField(max_length=128, blank=True)
    outcome = models.CharField(max_length=16, default="ok")
    error_code = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["kind", "created_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.kind} {self.agent_id or self.host_id}"


class ReplayRecord(models.Model):
    """A seen ``jti``; the unique key is the replay guard (spec §4.6, §10.3)."""

    key = models.CharField(primary_key=True, max_length=64)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.key


class WebAuthnCredential(Device):
    """A passkey or security key, registered by its owner (spec §8.11 physical presence).

    A django-otp ``Device`` so that projects can list it with the user's other factors and
    ``otp_required`` treats a WebAuthn-verified session as verified. It verifies assertions, not
    typed tokens, so ``verify_token`` always refuses.
    """

    credential_id = models.CharField(max_length=1024, unique=True)  # base64url
    public_key = models.TextField()  # base64url COSE key
    sign_count = models.PositiveBigIntegerField(default=0)
    transports = models.JSONField(default=list, blank=True)
    aaguid = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(Device.Meta):
        verbose_name = "WebAuthn credential"

    def verify_token(self, token: Any) -> bool:
        return False
