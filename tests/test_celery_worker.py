"""A real Celery worker (with embedded beat) on a Redis broker, against PostgreSQL.

Tier: needs ``AGENTAUTH_TEST_CELERY_BROKER_URL`` and ``AGENTAUTH_TEST_DATABASE_URL`` (a worker is
another process, so it needs a database both can see; in-memory SQLite cannot be shared).
``.ci/run`` runs this file alone with both set.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from agentauth.models import Agent, AgentStatus, CapabilityGrant, GrantStatus
from agentauth.testing import Keypair, agent_token, make_agent, make_host
from tests.conftest import ISSUER, Api

BROKER = os.environ.get("AGENTAUTH_TEST_CELERY_BROKER_URL")
pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.skipif(
        not (BROKER and os.environ.get("AGENTAUTH_TEST_DATABASE_URL")),
        reason="needs AGENTAUTH_TEST_CELERY_BROKER_URL and AGENTAUTH_TEST_DATABASE_URL "
        "(a worker process cannot share an in-memory SQLite database)",
    ),
    pytest.mark.django_db(transaction=True),
]
BEAT_SECONDS = "2"


def wait_for(check: Callable[[], Any], *, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[dict[str, Any]]:
    with django_db_blocker.unblock():
        db = dict(connection.settings_dict)
    mail_dir = tempfile.mkdtemp(prefix="agentauth-mail-")
    log_fd, log_name = tempfile.mkstemp(prefix="agentauth-worker-", suffix=".log")
    user = db["USER"] or "postgres"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        # The worker must use the test database pytest-django created, not the base one.
        "AGENTAUTH_TEST_DATABASE_URL": f"postgres://{user}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "AGENTAUTH_TEST_EMAIL_DIR": mail_dir,
        "AGENTAUTH_TEST_BEAT_SECONDS": BEAT_SECONDS,
    }
    schedule = Path(mail_dir) / "beat-schedule"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "example_project",
            "worker",
            "-B",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=INFO",
            "-s",
            str(schedule),
            "--without-mingle",
            "--without-gossip",
        ],
        env=env,
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: "ready" in Path(log_name).read_text(errors="replace"),
            timeout=40,
            what="the Celery worker to be ready",
        )
        yield {"mail_dir": mail_dir, "log": log_name}
    except BaseException:
        print(Path(log_name).read_text(errors="replace")[-4000:])
        raise
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_async_capability_runs_on_the_worker(
    worker: Any, api: Api, user: Any, settings: Any
) -> None:
    # spec: §2.15 async, §5.11 — accepted with 202, completed by a real worker, polled.
    settings.CELERY_TASK_ALWAYS_EAGER = False
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["slow_report"])
    reply = api.post(
        "/capability/execute",
        {"capability": "slow_report", "arguments": {"n": 4}},
        token=agent_token(agent, key, audience=ISSUER + "/capability/execute"),
    )
    assert reply.status == 202, reply.body
    path = reply.body["status_url"].removeprefix("http://testserver/api/auth")

    def completed() -> Any:
        body = api.get(path, token=agent_token(agent, key)).body
        return body if body["status"] != "pending" else None

    assert wait_for(completed, what="the async job") == {
        "status": "completed",
        "result": {"total": 8},
    }


def test_beat_scheduled_sweep_expires_agents_and_grants(worker: Any, user: Any) -> None:
    # Issue 4 acceptance: the beat-scheduled sweep, run by a real worker, expires what lapsed.
    host, _ = make_host(user=user)
    idle, _ = make_agent(host, grants=["check_balance"])
    Agent.objects.filter(pk=idle.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    fresh, _ = make_agent(host, grants=["check_balance"])
    CapabilityGrant.objects.filter(agent=fresh).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    wait_for(
        lambda: Agent.objects.get(pk=idle.pk).status == AgentStatus.EXPIRED,
        what="the sweep to expire the idle agent",
    )
    wait_for(
        lambda: CapabilityGrant.objects.get(agent=fresh).status == GrantStatus.EXPIRED,
        what="the sweep to expire the lapsed grant",
    )
    assert Agent.objects.get(pk=fresh.pk).status == AgentStatus.ACTIVE


def test_ciba_email_from_the_worker_approves(
    worker: Any, api: Api, client: Client, user: Any, settings: Any
) -> None:
    # Issue 5 acceptance: the worker delivers the CIBA email; its link approves the request.
    settings.CELERY_TASK_ALWAYS_EAGER = False
    reply = api.register(
        Keypair.generate(),
        body={
            "name": "Mail bot",
            "capabilities": ["check_balance"],
            "preferred_method": "ciba",
            "login_hint": user.email,
            "binding_message": "Code 7731",
        },
    )
    assert reply.body["approval"]["method"] == "ciba"

    def email() -> str | None:
        files = list(Path(worker["mail_dir"]).glob("*.log"))
        return files[0].read_text() if files else None

    body = wait_for(email, what="the CIBA email")
    assert user.email in body and "Code 7731" in body
    link = re.search(r"http://testserver(/api/auth/approve/\S+)", body)
    assert link is not None
    client.force_login(user)
    response = client.post(link.group(1), {"action": "approve", "capabilities": ["check_balance"]})
    assert response.status_code == 200
    assert Agent.objects.get(pk=reply.body["agent_id"]).status == AgentStatus.ACTIVE
