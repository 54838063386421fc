"""Asynchronous executions (spec §2.15 "async", §5.11): the stored job and its dispatch.

The job is handed to Celery by task name, so this module never imports ``tasks`` (which calls
``execution.run_job``): the task layer sits on top of the domain, not beside it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.urls import reverse

from .capabilities import Capability
from .conf import app_settings
from .models import Execution
from .tokens import VerifiedAgent

RUN_TASK = "agentauth.run_capability"


def status_url(job: Execution) -> str:
    """Absolute, on the issuer's origin (clients refuse others, spec §8.12)."""
    return app_settings.ORIGIN + reverse("agentauth:execution_status", args=[job.pk])


def create(verified: VerifiedAgent, cap: Capability, arguments: dict[str, Any]) -> Execution:
    """Store an accepted call and run it once the acceptance has committed.

    One transaction with the broker probe: no job row is left behind when the queue is down.
    """
    from celery import signature

    from .queueing import enqueue_on_commit

    with transaction.atomic():
        job = Execution.objects.create(
            agent=verified.agent,
            capability=cap.name,
            arguments=arguments,
            jti=str(verified.claims.get("jti", "")),
        )
        enqueue_on_commit(signature(RUN_TASK, args=(job.pk,)))
    return job
