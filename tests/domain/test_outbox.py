"""The outbox (agentauth/outbox.py): what must follow a commit is recorded with it, survives a
broker that is down, and runs once however often it is delivered (spec §5.11 async, §7.2 CIBA).

The broker is made unreachable for real (a Redis URL on a closed port, tasks no longer eager), so
publishing fails the way it does in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from agentauth import execution, outbox
from agentauth.models import (
    ApprovalRequest,
    Execution,
    ExecutionStatus,
    OutboxKind,
    OutboxMessage,
    OutboxState,
)
from agentauth.testing import Keypair, agent_token, make_agent, make_host
from example_project.celery import app as celery_app
from tests.conftest import ISSUER, Api

pytestmark = pytest.mark.django_db

EXECUTE = ISSUER + "/capability/execute"


@pytest.fixture
def broker_down() -> Iterator[None]:
    """Tasks go to a broker nobody listens on, until the test calls ``broker_back``."""
    saved = (celery_app.conf.task_always_eager, celery_app.conf.broker_url)
    celery_app.conf.task_always_eager = False
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"
    reset_connections()
    try:
        yield
    finally:
        broker_back(saved)


def reset_connections() -> None:
    """Forget pooled broker connections and producers made for the previous broker URL."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


def broker_back(saved: tuple[bool, str] | None = None) -> None:
    celery_app.conf.task_always_eager = True if saved is None else saved[0]
    if saved is not None:
        celery_app.conf.broker_url = saved[1]
    reset_connections()
    outbox._paused_until = 0.0  # the pause after a refusal is per process; a new start


@pytest.fixture
def job_agent(user: Any) -> Any:
    host, _ = make_host(user=user)
    return make_agent(host, grants={"slow_report": None})


def register_ciba(api: Api, user: Any) -> Any:
    body = {"name": "bot", "preferred_method": "ciba", "login_hint": user.email}
    return api.register(Keypair.generate(), body=body)


def execute_async(api: Api, job_agent: Any) -> Any:
    a, key = job_agent
    body = {"capability": "slow_report", "arguments": {"n": 3}}
    return api.post("/capability/execute", body, token=agent_token(a, key, audience=EXECUTE))


def test_ciba_registration_is_accepted_with_the_broker_down_and_mailed_once_it_returns(
    api: Api, user: Any, broker_down: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        reply = register_ciba(api, user)
    assert reply.status == 200 and reply.body["approval"]["method"] == "ciba", reply.body
    message = OutboxMessage.objects.get()
    assert (message.kind, message.state) == (OutboxKind.NOTIFICATION, OutboxState.PENDING)
    assert message.ref == ApprovalRequest.objects.get().pk
    assert "publish" in message.last_error and mail.outbox == []

    broker_back()
    assert outbox.dispatch_due() == 1
    message.refresh_from_db()
    assert message.state == OutboxState.DONE and message.sent_at is not None
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [user.email]
    assert outbox.dispatch_due(timezone.now() + timedelta(days=1)) == 0  # nothing left due
    assert outbox.deliver(message.pk) == "skipped"  # a late redelivery sends nothing
    assert len(mail.outbox) == 1


def test_async_execute_is_accepted_with_the_broker_down_and_runs_once_it_returns(
    api: Api, job_agent: Any, broker_down: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        reply = execute_async(api, job_agent)
    assert reply.status == 202 and reply.body["status"] == "pending", reply.body
    job = Execution.objects.get()
    assert job.status == ExecutionStatus.PENDING
    assert OutboxMessage.objects.get().ref == job.pk

    broker_back()
    outbox.dispatch_due()
    job.refresh_from_db()
    assert (job.status, job.result) == (ExecutionStatus.COMPLETED, {"total": 6})


def test_a_refused_publish_pauses_publishing_in_this_process(
    api: Api, user: Any, job_agent: Any, broker_down: None, django_capture_on_commit_callbacks: Any
) -> None:
    # One short timeout per pause, not one per request, while the broker is away.
    with django_capture_on_commit_callbacks(execute=True):
        register_ciba(api, user)
    assert outbox._paused_until > 0
    with django_capture_on_commit_callbacks(execute=True):
        execute_async(api, job_agent)
    later = OutboxMessage.objects.get(kind=OutboxKind.JOB)
    assert later.state == OutboxState.PENDING and later.last_error == ""  # not even tried


def test_a_redelivered_job_runs_its_handler_once(
    api: Api, job_agent: Any, broker_down: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        execute_async(api, job_agent)
    message = OutboxMessage.objects.get()
    assert outbox.deliver(message.pk) == "done"
    job = Execution.objects.get()
    finished = (job.status, job.finished_at, job.updated_at)
    # A second delivery, and the job's own task run again: neither touches the job.
    OutboxMessage.objects.filter(pk=message.pk).update(state=OutboxState.QUEUED)
    assert outbox.deliver(message.pk) == "done"
    execution.run_job(job.pk)
    job.refresh_from_db()
    assert (job.status, job.finished_at, job.updated_at) == finished


def test_a_job_whose_worker_died_fails_after_the_lease_and_is_not_run_again(
    api: Api, job_agent: Any, broker_down: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        execute_async(api, job_agent)
    message = OutboxMessage.objects.get()
    job = Execution.objects.get()
    # What a worker killed mid-job leaves: both claims taken, nothing finished.
    long_ago = timezone.now() - timedelta(hours=1)
    Execution.objects.filter(pk=job.pk).update(status=ExecutionStatus.RUNNING, updated_at=long_ago)
    OutboxMessage.objects.filter(pk=message.pk).update(
        state=OutboxState.WORKING, attempts=1, next_attempt_at=long_ago
    )
    assert outbox.deliver(message.pk) == "done"
    job.refresh_from_db()
    assert job.status == ExecutionStatus.FAILED and job.result is None
    assert job.error is not None and job.error["message"] == "The worker running this job stopped"


def test_a_live_claim_is_not_taken_twice(
    api: Api, user: Any, broker_down: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        register_ciba(api, user)
    message = OutboxMessage.objects.get()
    soon = timezone.now() + timedelta(minutes=5)
    OutboxMessage.objects.filter(pk=message.pk).update(
        state=OutboxState.WORKING, next_attempt_at=soon
    )
    assert outbox.deliver(message.pk) == "skipped" and mail.outbox == []
    # Once the claim lapses (the worker died mid-notification) the mail goes out.
    OutboxMessage.objects.filter(pk=message.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    broker_back()
    assert outbox.dispatch_due() == 1
    assert len(mail.outbox) == 1


def test_a_failing_notifier_is_retried_with_backoff_then_given_up(
    api: Api, user: Any, settings: Any, broker_down: None, django_capture_on_commit_callbacks: Any
) -> None:
    settings.AGENTAUTH_CIBA_NOTIFIER = "agentauth.notifications.WebhookNotifier"
    settings.AGENTAUTH_CIBA_WEBHOOK_URL = "ftp://not-http"  # the notifier raises
    settings.AGENTAUTH_OUTBOX_MAX_ATTEMPTS = 2
    with django_capture_on_commit_callbacks(execute=True):
        register_ciba(api, user)
    message = OutboxMessage.objects.get()
    assert outbox.deliver(message.pk) == "retry"
    message.refresh_from_db()
    assert message.state == OutboxState.PENDING and message.attempts == 1
    assert message.next_attempt_at > timezone.now() + timedelta(seconds=5)
    assert "http" in message.last_error
    assert outbox.deliver(message.pk) == "retry"
    assert outbox.deliver(message.pk) == "failed"
    message.refresh_from_db()
    assert message.state == OutboxState.FAILED and message.sent_at is None
