"""Retention (agentauth/sweep.py purges): audit rows leave after AGENTAUTH_AUDIT_RETENTION, spent
replay records leave in batches, and on PostgreSQL the replay table stays compact on disk."""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from hashlib import sha256
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from agentauth.models import AuditEvent, ReplayRecord
from agentauth.sweep import purge, sweep

DAY = timedelta(days=1)


def audit_rows(days_ago: list[int]) -> None:
    now = timezone.now()
    AuditEvent.objects.bulk_create(
        AuditEvent(kind="agent.created", actor_type="system", created_at=now - d * DAY, data={})
        for d in days_ago
    )


@pytest.mark.django_db
def test_audit_rows_older_than_the_retention_are_pruned(settings: Any) -> None:
    settings.AGENTAUTH_AUDIT_RETENTION = 30 * 86400
    audit_rows([1, 29, 31, 400])
    counts = sweep()
    assert counts["audit_events_pruned"] == 2
    ages = sorted(
        (timezone.now() - e.created_at).days for e in AuditEvent.objects.exclude(kind="sweep")
    )
    assert ages == [1, 29]


@pytest.mark.django_db
def test_no_retention_keeps_every_row(settings: Any) -> None:
    settings.AGENTAUTH_AUDIT_RETENTION = None
    audit_rows([400, 4000])
    assert sweep()["audit_events_pruned"] == 0
    assert AuditEvent.objects.exclude(kind="sweep").count() == 2


@pytest.mark.django_db
def test_pruned_rows_are_exported_first(settings: Any, caplog: Any) -> None:
    settings.AGENTAUTH_AUDIT_RETENTION = 86400
    settings.AGENTAUTH_AUDIT_EXPORT_ON_PRUNE = True
    audit_rows([5])
    with caplog.at_level(logging.INFO, logger="agentauth.audit"):
        assert purge(timezone.now())["audit_events_pruned"] == 1
    exported = [json.loads(r.message) for r in caplog.records if r.name == "agentauth.audit"]
    assert len(exported) == 1 and exported[0]["kind"] == "agent.created"


@pytest.mark.django_db
def test_purges_go_in_batches_and_stop_at_the_time_budget(settings: Any) -> None:
    settings.AGENTAUTH_SWEEP_BATCH_SIZE = 10
    past = timezone.now() - timedelta(minutes=1)
    ReplayRecord.objects.bulk_create(
        ReplayRecord(key=f"{i:064d}", expires_at=past) for i in range(35)
    )
    settings.AGENTAUTH_SWEEP_TIME_BUDGET = 0
    assert purge(timezone.now())["replay_records_purged"] == 0  # out of time before a batch
    settings.AGENTAUTH_SWEEP_TIME_BUDGET = 20
    assert purge(timezone.now())["replay_records_purged"] == 35
    assert not ReplayRecord.objects.exists()


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("AGENTAUTH_TEST_DATABASE_URL"), reason="needs PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_replay_table_stays_compact_under_churn(settings: Any) -> None:
    # The table churns its whole content every few minutes; each purge that deletes rows
    # vacuums the table, so the freed pages are reused instead of the table growing by one
    # churn's worth each time. What the test can pin is that the VACUUM ran (PostgreSQL's own
    # count): how much it reclaims also depends on every open transaction in the cluster (one
    # in another pytest-xdist worker's database holds it back), which no code of ours controls.
    settings.AGENTAUTH_SWEEP_BATCH_SIZE = 1000

    def vacuums() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = %s",
                [ReplayRecord._meta.db_table],
            )
            return int(cursor.fetchone()[0])

    before = vacuums()
    for cycle in range(8):
        past = timezone.now() - timedelta(minutes=1)
        ReplayRecord.objects.bulk_create(
            ReplayRecord(key=sha256(f"{cycle}/{i}".encode()).hexdigest(), expires_at=past)
            for i in range(4000)
        )
        assert purge(timezone.now())["replay_records_purged"] == 4000
    assert vacuums() - before == 8
