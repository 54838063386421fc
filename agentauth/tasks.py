"""Celery tasks. Thin: each takes ids and calls a domain function, and is safe to run twice.

The library defines no Celery app; the project's app discovers these (``autodiscover_tasks``).
Names are explicit so a beat schedule or a worker never depends on module paths.
"""

from __future__ import annotations

from . import execution
from .extras import missing_message

try:
    from celery import shared_task
except ImportError as exc:  # the [celery] extra
    raise ImportError(
        missing_message("celery", "Async capabilities, CIBA notifications and the scheduled sweep")
    ) from exc


@shared_task(name="agentauth.run_capability", ignore_result=True)
def run_capability(job_id: str) -> None:
    execution.run_job(job_id)


@shared_task(name="agentauth.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    from .sweep import sweep as run_sweep

    return run_sweep()


@shared_task(
    name="agentauth.send_ciba_notification",
    autoretry_for=(Exception,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
    ignore_result=True,
)
def send_ciba_notification(approval_id: str) -> bool:
    from .notifications import notify

    return notify(approval_id)
