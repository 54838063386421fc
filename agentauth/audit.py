"""Audit trail: one row per state change or capability call (spec §11).

Each row is also a log record on the ``agentauth.audit`` logger, for the site's log pipeline
(SIEM, alerting): the message is the event kind and ``extra`` carries the fields as attributes
(``event``, ``agent``, ``host``, ``user``, ``capability``, ``outcome``, ``error_code``,
``actor_type``, ``actor``, ``audit_id``). The record is emitted when the transaction commits,
so the log never reports a change that was rolled back.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from . import prepared
from .models import Agent, AuditEvent, Host

logger = logging.getLogger("agentauth.audit")


def record(
    kind: str,
    *,
    actor_type: str,
    actor_id: str = "",
    agent: Agent | None = None,
    host: Host | None = None,
    user_id: Any = None,
    capability: str = "",
    outcome: str = "ok",
    error_code: str = "",
    **data: Any,
) -> AuditEvent:
    if host is None and agent is not None:
        host_id = agent.host_id
    else:
        host_id = host.id if host is not None else ""
    if user_id is None and agent is not None and agent.user_id is not None:
        user_id = agent.user_id
    event = AuditEvent(
        kind=kind,
        actor_type=actor_type,
        actor_id=str(actor_id or ""),
        agent_id=agent.id if agent is not None else "",
        host_id=host_id,
        user_id="" if user_id is None else str(user_id),
        capability=capability,
        outcome=outcome,
        error_code=error_code,
        data=data,
    )
    # Written on every call of the hot paths: a statement built once (no ORM compilation).
    prepared.insert([event])
    transaction.on_commit(AuditLog(event))
    return event


class AuditLog:
    """The on-commit callback that logs one row (a class, so tests that count the tasks a call
    enqueues can tell it apart)."""

    def __init__(self, event: AuditEvent) -> None:
        self.event = event

    def __call__(self) -> None:
        _log(self.event)


def _log(event: AuditEvent) -> None:
    level = logging.INFO if event.outcome == "ok" else logging.WARNING
    logger.log(
        level,
        "%s %s",
        event.kind,
        event.outcome,
        extra={
            "event": event.kind,
            "agent": event.agent_id or None,
            "host": event.host_id or None,
            "user": event.user_id or None,
            "capability": event.capability or None,
            "outcome": event.outcome,
            "error_code": event.error_code or None,
            "actor_type": event.actor_type,
            "actor": event.actor_id or None,
            "audit_id": event.pk,
        },
    )
