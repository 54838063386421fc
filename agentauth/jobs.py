"""Asynchronous executions (spec §2.15 "async", §5.11): the stored job and its dispatch.

The job is handed to Celery by task name, so this module never imports ``tasks`` (which calls
``execution.run_job``): the task layer sits on top of the domain, not beside it.
"""

from __future__ import annotations

from typing import Any

from celery import signature
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
    """Store an accepted call and run it once the acceptance has committed."""
    job = Execution.objects.create(
        agent=verified.agent,
        capability=cap.name,
        arguments=arguments,
        jti=str(verified.claims.get("jti", "")),
    )
    transaction.on_commit(lambda: signature(RUN_TASK, args=(job.pk,)).delay())
    return job
