"""Security events reach the ``agentauth.audit`` logger as structured records, once committed."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agentauth import audit
from agentauth.models import AuditEvent
from agentauth.testing import agent_token, host_token, make_agent, make_host
from tests.conftest import ISSUER, Api

pytestmark = pytest.mark.django_db


def audit_records(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "agentauth.audit"]


def test_revocation_is_logged_with_its_fields(
    api: Api, user: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    host, host_key = make_host(user=user)
    agent, _ = make_agent(host)
    caplog.set_level(logging.INFO, logger="agentauth.audit")
    with django_capture_on_commit_callbacks(execute=True):
        reply = api.post("/agent/revoke", {"agent_id": agent.pk}, token=host_token(host_key))
    assert reply.status == 200
    (record,) = [r for r in audit_records(caplog) if getattr(r, "event", "") == "agent.revoked"]
    row = AuditEvent.objects.get(kind="agent.revoked")
    assert record.levelno == logging.INFO
    assert (record.agent, record.host, record.user) == (agent.pk, host.pk, str(user.pk))  # type: ignore[attr-defined]
    assert record.outcome == "ok" and record.audit_id == row.pk  # type: ignore[attr-defined]


def test_refused_call_is_a_warning_with_capability_and_code(
    api: Api, user: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    host, _ = make_host(user=user)
    agent, key = make_agent(host)  # no grants
    caplog.set_level(logging.INFO, logger="agentauth.audit")
    with django_capture_on_commit_callbacks(execute=True):
        reply = api.post(
            "/capability/execute",
            {"capability": "check_balance", "arguments": {"account_id": "a"}},
            token=agent_token(agent, key, audience=ISSUER + "/capability/execute"),
        )
    assert reply.status == 403
    (record,) = audit_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.event == "capability.refused"  # type: ignore[attr-defined]
    assert record.capability == "check_balance"  # type: ignore[attr-defined]
    assert record.error_code == "capability_not_granted"  # type: ignore[attr-defined]
    assert record.outcome == "error"  # type: ignore[attr-defined]


def test_rolled_back_rows_are_not_logged(user: Any, caplog: Any) -> None:
    from django.db import transaction

    caplog.set_level(logging.INFO, logger="agentauth.audit")
    host, _ = make_host(user=user)

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        audit.record("host.revoked", actor_type="test", host=host)
        raise Abort
    assert audit_records(caplog) == []
    assert not AuditEvent.objects.filter(kind="host.revoked").exists()
