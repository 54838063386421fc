"""The periodic sweep (spec §2.4, §10.9): persist what the clocks already decided.

Requests evaluate the clocks themselves, so the sweep is about keeping the database honest
(status pages, admin lists, exports) and small. Each step is one set-based statement, never a
loop over rows, and the audit rows for a step are written by one ``INSERT ... SELECT``. Sweeps
take a lock row first, so two running at once (beat plus cron) simply run one after the other;
running one twice changes nothing the second time.

After that transaction come the purges, which can be large: spent replay records, audit rows
past ``AUDIT_RETENTION`` (optionally logged as JSON to ``agentauth.audit`` first) and finished
outbox rows. They delete ``SWEEP_BATCH_SIZE`` rows per statement, each in its own short
transaction, by an indexed column, and stop at ``SWEEP_TIME_BUDGET`` (the next sweep carries
on). On PostgreSQL the replay table is vacuumed after a purge so its pages are reused at once
rather than whenever autovacuum gets to it: the table churns its whole content every few
minutes, and would otherwise grow on disk while its row count stays flat. Last, the outbox hands
out again whatever is due.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from . import outbox, signals
from .clocks import REASON_ABSOLUTE_LIFETIME
from .conf import app_settings
from .models import (
    LIVE_GRANT_STATES,
    NON_TERMINAL_AGENT_STATES,
    TERMINAL_AGENT_STATES,
    Agent,
    AgentStatus,
    ApprovalRequest,
    ApprovalStatus,
    AuditEvent,
    CapabilityGrant,
    GrantStatus,
    Host,
    HostStatus,
    OutboxMessage,
    OutboxState,
    ReplayRecord,
    SweepLock,
)

logger = logging.getLogger("agentauth")
#: Pruned audit rows, one JSON object per line, when ``AUDIT_EXPORT_ON_PRUNE`` is on: route this
#: logger to your archive before rows leave the database.
audit_logger = logging.getLogger("agentauth.audit")


def _audit_agents(kind: str, agents: QuerySet[Agent], now: datetime) -> None:
    """One audit row per agent about to change, in one statement."""
    agent_table = Agent._meta.db_table
    audit_table = AuditEvent._meta.db_table
    where_sql, params = agents.values("pk").query.get_compiler(connection=connection).as_sql()
    data = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    user = "CAST(a.user_id AS varchar(64))" if connection.vendor == "postgresql" else "a.user_id"
    # Table names come from model metadata and the WHERE clause from the ORM's compiler, with
    # its parameters passed separately: nothing user-supplied is formatted into the SQL.
    sql = (
        f"INSERT INTO {audit_table} (created_at, kind, actor_type, actor_id, agent_id, host_id, "
        f"user_id, capability, outcome, error_code, data) "
        f"SELECT %s, %s, 'system', 'sweep', a.id, a.host_id, COALESCE({user}, ''), '', 'ok', '', "
        f"{data} FROM {agent_table} a WHERE a.id IN ({where_sql})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, kind, "{}", *params])


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Run every step; return how many rows each changed."""
    now = now or timezone.now()
    counts: dict[str, int] = {}
    with transaction.atomic():
        SweepLock.objects.get_or_create(name="sweep")
        SweepLock.objects.select_for_update().get(name="sweep")

        # Absolute lifetime → revoked, permanently (spec §2.4).
        overdue = Agent.objects.filter(
            status__in=NON_TERMINAL_AGENT_STATES, absolute_expires_at__lte=now
        )
        _audit_agents("agent.revoked", overdue, now)
        counts["agents_revoked"] = overdue.update(
            status=AgentStatus.REVOKED,
            revoked_at=now,
            revocation_reason=REASON_ABSOLUTE_LIFETIME,
            updated_at=now,
        )
        # Session TTL or max lifetime → expired (reactivation can bring these back).
        idle = Agent.objects.filter(status=AgentStatus.ACTIVE, expires_at__lte=now)
        _audit_agents("agent.expired", idle, now)
        counts["agents_expired"] = idle.update(status=AgentStatus.EXPIRED, updated_at=now)
        # Grants past their own expiry are never effective; record it.
        counts["grants_expired"] = CapabilityGrant.objects.filter(
            status=GrantStatus.ACTIVE, expires_at__lte=now
        ).update(status=GrantStatus.EXPIRED, updated_at=now)
        # Grants of agents that can never act again stop being live.
        counts["grants_closed"] = CapabilityGrant.objects.filter(
            status__in=LIVE_GRANT_STATES,
            agent__status__in=TERMINAL_AGENT_STATES,
        ).update(status=GrantStatus.REVOKED, updated_at=now)
        counts["approvals_expired"] = ApprovalRequest.objects.filter(
            status=ApprovalStatus.PENDING, expires_at__lte=now
        ).update(status=ApprovalStatus.EXPIRED, decided_at=now, updated_at=now)
        # Abandoned registrations are deleted, not revoked (spec §10.9).
        cutoff = now - timedelta(seconds=app_settings.PENDING_RETENTION)
        stale = Agent.objects.filter(status=AgentStatus.PENDING, created_at__lt=cutoff)
        _audit_agents("agent.deleted", stale, now)
        counts["pending_agents_deleted"] = stale.delete()[1].get(Agent._meta.label, 0)
        orphans = Host.objects.filter(status=HostStatus.PENDING, created_at__lt=cutoff).filter(
            ~Q(pk__in=Agent.objects.values("host_id"))
        )
        counts["pending_hosts_deleted"] = orphans.delete()[1].get(Host._meta.label, 0)
        AuditEvent.objects.create(
            kind="sweep", actor_type="system", actor_id="sweep", data=dict(counts)
        )
    counts.update(purge(now))
    counts["outbox_dispatched"] = outbox.dispatch_due(now)
    transaction.on_commit(lambda: signals.sweep_finished.send(sender=Agent, counts=counts))
    return counts


def purge(now: datetime) -> dict[str, int]:
    """The batched deletes, within the time budget; return how many rows each removed."""
    deadline = time.monotonic() + app_settings.SWEEP_TIME_BUDGET
    counts = {
        "replay_records_purged": _purge_batches(
            ReplayRecord.objects.filter(expires_at__lt=now).order_by("expires_at"), deadline
        )
    }
    if counts["replay_records_purged"] and connection.vendor == "postgresql":
        _vacuum(ReplayRecord._meta.db_table)
    retention = app_settings.AUDIT_RETENTION
    counts["audit_events_pruned"] = (
        0
        if retention is None
        else _purge_batches(
            AuditEvent.objects.filter(created_at__lt=now - timedelta(seconds=retention)).order_by(
                "created_at"
            ),
            deadline,
            export=app_settings.AUDIT_EXPORT_ON_PRUNE,
        )
    )
    counts["outbox_purged"] = _purge_batches(
        OutboxMessage.objects.filter(
            state__in=(OutboxState.DONE, OutboxState.FAILED),
            next_attempt_at__lt=now - timedelta(seconds=app_settings.PENDING_RETENTION),
        ).order_by("next_attempt_at"),
        deadline,
    )
    return counts


def _purge_batches(rows: QuerySet[Any], deadline: float, *, export: bool = False) -> int:
    total = 0
    size = app_settings.SWEEP_BATCH_SIZE
    while time.monotonic() < deadline:
        with transaction.atomic():
            batch = list(rows.values_list("pk", flat=True)[:size])
            if not batch:
                break
            if export:
                for row in AuditEvent.objects.filter(pk__in=batch).order_by("pk").values():
                    audit_logger.info(json.dumps(row, cls=DjangoJSONEncoder, sort_keys=True))
            total += rows.model._default_manager.filter(pk__in=batch).delete()[0]
        if len(batch) < size:
            break
    return total


def _vacuum(table: str) -> None:
    """Plain VACUUM: no exclusive lock, pages freed for reuse. Best effort (it needs ownership
    of the table and no open transaction); autovacuum remains the fallback."""
    if not connection.get_autocommit():
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM {connection.ops.quote_name(table)}")
    except DatabaseError as exc:
        logger.warning("agentauth sweep: could not vacuum %s: %s", table, exc)
