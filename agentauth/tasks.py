"""Celery tasks. Thin: each takes ids and calls a domain function, and is safe to run twice.

The library defines no Celery app; the project's app discovers these (``autodiscover_tasks``).
Names are explicit so a beat schedule or a worker never depends on module paths. Tasks are
acknowledged after they ran (``acks_late``) and given back if the worker dies mid-task
(``reject_on_worker_lost``); the claims in ``outbox.deliver`` and ``execution.run_job`` make the
redelivery harmless.
"""

from __future__ import annotations

from . import execution, outbox
from .extras import missing_message

try:
    from celery import shared_task
except ImportError as exc:  # the [celery] extra
    raise ImportError(
        missing_message("celery", "Async capabilities, CIBA notifications and the scheduled sweep")
    ) from exc

LATE = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


@shared_task(name="agentauth.deliver", **LATE)
def deliver(message_id: int) -> str:
    return outbox.deliver(message_id)


@shared_task(name="agentauth.dispatch_outbox", ignore_result=True)
def dispatch_outbox() -> int:
    return outbox.dispatch_due()


@shared_task(name="agentauth.run_capability", **LATE)
def run_capability(job_id: str) -> None:
    execution.run_job(job_id)


@shared_task(name="agentauth.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    from .sweep import sweep as run_sweep

    return run_sweep()


@shared_task(name="agentauth.send_ciba_notification", **LATE)
def send_ciba_notification(approval_id: str) -> bool:
    """Messages queued before the outbox existed; new notifications go through ``deliver``."""
    from .notifications import notify

    return notify(approval_id)
