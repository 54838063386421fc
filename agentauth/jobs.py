"""Asynchronous executions (spec §2.15 "async", §5.11): the stored job and its dispatch.

The job is recorded in the outbox in the same transaction as the acceptance and handed to
Celery by task name from there, so this module never imports ``tasks`` (which calls
``execution.run_job``): the task layer sits on top of the domain, not beside it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.urls import reverse

from . import outbox
from .capabilities import Capability
from .conf import app_settings
from .models import Execution, OutboxKind
from .tokens import VerifiedAgent


def status_url(job: Execution) -> str:
    """Absolute, on the issuer's origin (clients refuse others, spec §8.12)."""
    return app_settings.ORIGIN + reverse("agentauth:execution_status", args=[job.pk])


def create(verified: VerifiedAgent, cap: Capability, arguments: dict[str, Any]) -> Execution:
    """Store an accepted call and its outbox row in one transaction: accepted means recorded,
    whether or not the broker is up."""
    with transaction.atomic():
        job = Execution.objects.create(
            agent=verified.agent,
            capability=cap.name,
            arguments=arguments,
            jti=str(verified.claims.get("jti", "")),
        )
        outbox.enqueue(OutboxKind.JOB, job.pk)
    return job
