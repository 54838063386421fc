"""A real Celery worker (with embedded beat) on a Redis broker, against PostgreSQL.

Tier: needs ``AGENTAUTH_TEST_CELERY_BROKER_URL`` and ``AGENTAUTH_TEST_DATABASE_URL`` (a worker is
another process, so it needs a database both can see; in-memory SQLite cannot be shared).
``.ci/run`` runs this file alone with both set. The same async paths run eagerly, in-process, in
``tests/api/test_execute.py``.

The worker is started once for the module, under a node name of its own, and is stopped (SIGTERM,
then SIGKILL for its whole process group) when the module ends, whatever happened. Every wait is
bounded; a timeout reports the end of the worker's log.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from agentauth import agents
from agentauth.models import (
    Agent,
    AgentStatus,
    CapabilityGrant,
    Execution,
    ExecutionStatus,
    GrantStatus,
)
from agentauth.tasks import run_capability
from agentauth.testing import Keypair, agent_token, make_agent, make_host
from example_project.celery import app as celery_app
from tests.conftest import BASE, ISSUER, Api, Reply, post_decision

BROKER = os.environ.get("AGENTAUTH_TEST_CELERY_BROKER_URL")
pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.skipif(
        not (BROKER and os.environ.get("AGENTAUTH_TEST_DATABASE_URL")),
        reason="needs AGENTAUTH_TEST_CELERY_BROKER_URL and AGENTAUTH_TEST_DATABASE_URL: a real "
        "worker is another process, so it needs a database both can see (in-memory SQLite "
        "cannot be shared)",
    ),
    pytest.mark.django_db(transaction=True),
]
BEAT_SECONDS = "2"
STARTUP_TIMEOUT = 40.0
JOB_TIMEOUT = 20.0
BEAT_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass
class Worker:
    node: str
    proc: subprocess.Popen[bytes]
    log: Path
    mail_dir: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(worker log unreadable: {exc})"


def wait_for(
    check: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    worker: Worker | None = None,
    interval: float = 0.3,
) -> Any:
    """Poll ``check`` until it returns something truthy, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(
                f"the Celery worker exited ({worker.proc.returncode}) while waiting for {what}\n"
                f"--- worker log (tail) ---\n{worker.log_tail()}"
            )
        if time.monotonic() >= deadline:
            tail = f"\n--- worker log (tail) ---\n{worker.log_tail()}" if worker else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")
        time.sleep(interval)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (warm shutdown), then SIGKILL; the whole group, so embedded beat goes too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, if any
    proc.wait(5)


def _broker_check() -> None:
    """Fail fast, with a clear message, on an unreachable broker or a foreign worker on it."""
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3, interval_start=0.2, interval_step=0.2)
    others = celery_app.control.ping(timeout=1.0)
    if others:
        pytest.fail(
            f"another Celery worker already consumes from {BROKER} ({others}); it would take this "
            "test's tasks. Stop it or point AGENTAUTH_TEST_CELERY_BROKER_URL at a free Redis db."
        )


@pytest.fixture(scope="module")
def worker(
    request: pytest.FixtureRequest, django_db_setup: Any, django_db_blocker: Any
) -> Iterator[Worker]:
    assert not celery_app.conf.task_always_eager, "with a broker set, tasks must not run eagerly"
    _broker_check()
    with django_db_blocker.unblock():
        db = dict(connection.settings_dict)
    work_dir = Path(tempfile.mkdtemp(prefix="agentauth-worker-"))
    mail_dir = work_dir / "mail"
    mail_dir.mkdir()
    log = work_dir / "worker.log"
    node = f"agentauth-test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    user = quote(db["USER"] or "postgres", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "AGENTAUTH_TEST_CELERY_BROKER_URL": BROKER or "",
        # The worker must use the test database pytest-django created (db["NAME"] is already
        # test_<name>, with any suffix), not the base database of the URL.
        "AGENTAUTH_TEST_DATABASE_URL": (
            f"postgres://{user}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        ),
        "AGENTAUTH_TEST_EMAIL_DIR": str(mail_dir),
        "AGENTAUTH_TEST_BEAT_SECONDS": BEAT_SECONDS,
    }
    with log.open("wb") as log_file:
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
                "-n",
                node,
                "-s",
                str(work_dir / "beat-schedule"),
                "--without-mingle",
                "--without-gossip",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    running = Worker(node=node, proc=proc, log=log, mail_dir=mail_dir)
    failures_before = request.session.testsfailed
    failed = True
    try:
        started = time.monotonic()
        wait_for(
            lambda: celery_app.control.ping(destination=[node], timeout=0.5),
            timeout=STARTUP_TIMEOUT,
            what=f"the Celery worker {node} to answer a ping",
            worker=running,
        )
        print(f"\nCelery worker {node} ready in {time.monotonic() - started:.1f}s (log: {log})")
        yield running
        failed = request.session.testsfailed > failures_before
    finally:
        _stop(proc)
        if failed:
            print(f"\n--- Celery worker log (tail; kept in {work_dir}) ---\n{running.log_tail()}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


# --- helpers --------------------------------------------------------------------------------


def execute(api: Api, agent: Agent, key: Keypair, capability: str, arguments: Any = None) -> Reply:
    body: dict[str, Any] = {"capability": capability}
    if arguments is not None:
        body["arguments"] = arguments
    token = agent_token(agent, key, audience=ISSUER + "/capability/execute")
    return api.post("/capability/execute", body, token=token)


def poll_until_done(
    api: Api, worker: Worker, agent: Agent, key: Keypair, status_url: str
) -> dict[str, Any]:
    """Poll ``status_url`` with a fresh agent JWT each time until the job leaves ``pending``."""
    prefix = "http://testserver" + BASE
    assert status_url.startswith(prefix), status_url
    path = status_url.removeprefix(prefix)

    def done() -> dict[str, Any] | None:
        reply = api.get(path, token=agent_token(agent, key))
        assert reply.status == 200, (reply.status, reply.body)
        return reply.body if reply.body["status"] != "pending" else None

    return wait_for(done, timeout=JOB_TIMEOUT, what=f"the job at {status_url}", worker=worker)


def finished(worker: Worker, job_id: str) -> Execution:
    def row() -> Execution | None:
        job = Execution.objects.get(pk=job_id)
        return job if job.status != ExecutionStatus.PENDING else None

    return wait_for(row, timeout=JOB_TIMEOUT, what=f"job {job_id} to finish", worker=worker)


@pytest.fixture
def granted(user: Any) -> tuple[Agent, Keypair]:
    host, _ = make_host(user=user)
    return make_agent(host, grants=["slow_report", "failing_job"])


# --- async capabilities (spec §2.15 "async", §5.11) -----------------------------------------


def test_async_capability_runs_on_the_worker(
    worker: Worker, api: Api, granted: tuple[Agent, Keypair]
) -> None:
    agent, key = granted
    reply = execute(api, agent, key, "slow_report", {"n": 4})
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "pending" and reply.headers["Retry-After"] == "1"
    body = poll_until_done(api, worker, agent, key, reply.body["status_url"])
    assert body == {"status": "completed", "result": {"total": 8}}
    job = Execution.objects.get(agent=agent)
    assert job.finished_at is not None and job.error is None


def test_failing_async_capability_is_reported_failed(
    worker: Worker, api: Api, granted: tuple[Agent, Keypair]
) -> None:
    agent, key = granted
    reply = execute(api, agent, key, "failing_job")
    assert reply.status == 202, reply.body
    body = poll_until_done(api, worker, agent, key, reply.body["status_url"])
    assert body["status"] == "failed" and set(body) == {"status", "error"}, body
    assert body["error"] == {
        "error": "invalid_request",
        "message": "the report source is unavailable",
    }
    assert Execution.objects.get(agent=agent).result is None


def test_job_of_an_agent_revoked_before_it_runs_fails(
    worker: Worker, user: Any, granted: tuple[Agent, Keypair]
) -> None:
    # spec §8.17: the worker re-checks the agent; a job accepted before revocation must not run.
    agent, _ = granted
    job = Execution.objects.create(agent=agent, capability="slow_report", arguments={"n": 3})
    assert agents.revoke_agent(agent, actor_type="user", actor_id=str(user.pk))
    sent = run_capability.delay(job.pk)
    job = finished(worker, job.pk)
    assert job.status == ExecutionStatus.FAILED, (job.status, job.result, job.error)
    assert job.error is not None and job.error["error"] == "agent_revoked", job.error
    assert job.result is None and job.finished_at is not None
    assert sent.id in worker.log_tail(chars=200_000), "the task did not run on the worker"


def test_redelivered_job_runs_once(
    worker: Worker, api: Api, granted: tuple[Agent, Keypair]
) -> None:
    # tasks.py: every task is safe to run twice (a broker may redeliver).
    agent, key = granted
    reply = execute(api, agent, key, "slow_report", {"n": 5})
    assert reply.status == 202, reply.body
    poll_until_done(api, worker, agent, key, reply.body["status_url"])
    first = Execution.objects.get(agent=agent)
    run_capability.delay(first.pk)  # the redelivery
    # The worker is solo, on one queue: once a later job has finished, the redelivery has run.
    barrier = Execution.objects.create(agent=agent, capability="slow_report", arguments={"n": 1})
    barrier_task = run_capability.delay(barrier.pk)
    assert finished(worker, barrier.pk).result == {"total": 2}
    again = Execution.objects.get(pk=first.pk)
    assert (again.status, again.result, again.finished_at, again.updated_at) == (
        ExecutionStatus.COMPLETED,
        {"total": 10},
        first.finished_at,
        first.updated_at,
    )
    assert barrier_task.id in worker.log_tail(chars=200_000)


# --- beat and notifications -----------------------------------------------------------------


def test_beat_scheduled_sweep_expires_agents_and_grants(worker: Worker, user: Any) -> None:
    # The beat-scheduled sweep, run by a real worker, expires what lapsed.
    host, _ = make_host(user=user)
    idle, _ = make_agent(host, grants=["check_balance"])
    Agent.objects.filter(pk=idle.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    fresh, _ = make_agent(host, grants=["check_balance"])
    CapabilityGrant.objects.filter(agent=fresh).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    wait_for(
        lambda: Agent.objects.get(pk=idle.pk).status == AgentStatus.EXPIRED,
        timeout=BEAT_TIMEOUT,
        what="the sweep to expire the idle agent",
        worker=worker,
    )
    wait_for(
        lambda: CapabilityGrant.objects.get(agent=fresh).status == GrantStatus.EXPIRED,
        timeout=BEAT_TIMEOUT,
        what="the sweep to expire the lapsed grant",
        worker=worker,
    )
    assert Agent.objects.get(pk=fresh.pk).status == AgentStatus.ACTIVE


def test_ciba_email_from_the_worker_approves(
    worker: Worker, api: Api, client: Client, user: Any
) -> None:
    # The worker delivers the CIBA email; its link approves the request.
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
        files = sorted(worker.mail_dir.glob("*.log"))
        return files[0].read_text() if files else None

    body = wait_for(email, timeout=BEAT_TIMEOUT, what="the CIBA email", worker=worker)
    assert user.email in body and "Code 7731" in body
    link = re.search(r"http://testserver(/api/auth/approve/\S+)", body)
    assert link is not None
    client.force_login(user)
    # The form carries the digest of what the page showed (spec §8.10), as a browser's does.
    response = post_decision(
        client, link.group(1), {"action": "approve", "capabilities": ["check_balance"]}
    )
    assert response.status_code == 200
    assert Agent.objects.get(pk=reply.body["agent_id"]).status == AgentStatus.ACTIVE
