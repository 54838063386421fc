"""Asynchronous executions (spec §2.15 "async", §5.11): start, run in Celery, report."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from . import execution
from .capabilities import Capability, registry
from .conf import app_settings
from .errors import ProtocolError
from .models import Execution, ExecutionStatus
from .tokens import VerifiedAgent, ensure_may_act


def status_url(job: Execution) -> str:
    """Absolute, on the issuer's origin (clients refuse others, spec §8.12)."""
    return app_settings.ORIGIN + reverse("agentauth:execution_status", args=[job.pk])


def start(verified: VerifiedAgent, cap: Capability, arguments: dict[str, Any]) -> Execution:
    execution.authorize(verified, cap, arguments)
    job = Execution.objects.create(
        agent=verified.agent,
        capability=cap.name,
        arguments=arguments,
        jti=str(verified.claims.get("jti", "")),
    )
    from .tasks import run_capability

    transaction.on_commit(lambda: run_capability.delay(job.pk))
    return job


def run(job_id: str) -> None:
    """Run a pending job once. Everything is re-checked: the agent may have been revoked, the
    grant narrowed or the capability removed since the job was accepted (spec §8.17)."""
    job = Execution.objects.select_related("agent__host").filter(pk=job_id).first()
    if job is None or job.status != ExecutionStatus.PENDING:
        return
    agent = job.agent
    result: Any = None
    error: dict[str, Any] | None = None
    try:
        ensure_may_act(agent, agent.host)
        cap = registry.get(job.capability)
        if cap is None:
            raise ProtocolError(
                "capability_not_granted", f"The capability '{job.capability}' has been removed"
            )
        verified = VerifiedAgent(agent=agent, host=agent.host, claims={"jti": job.jti})
        result = execution.run_sync(verified, cap, dict(job.arguments))
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            # Stored as JSON below: a non-JSON result would crash the task and leave the job
            # pending for ever. Fail it as the sync path does.
            raise ProtocolError("internal_error", "The capability returned non-JSON data") from None
    except ProtocolError as exc:
        error = exc.body()
    now = timezone.now()
    Execution.objects.filter(pk=job.pk, status=ExecutionStatus.PENDING).update(
        status=ExecutionStatus.FAILED if error else ExecutionStatus.COMPLETED,
        result=None if error else result,
        error=error,
        finished_at=now,
        updated_at=now,
    )


def body(job: Execution) -> dict[str, Any]:
    """The async response shapes of spec §5.11, mutually exclusive."""
    if job.status == ExecutionStatus.COMPLETED:
        return {"status": "completed", "result": job.result}
    if job.status == ExecutionStatus.FAILED:
        return {"status": "failed", "error": job.error}
    return {"status": "pending", "status_url": status_url(job)}
