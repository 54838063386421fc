"""Async and streamed executions: the 202 contract, polling, job re-checks, SSE (spec §2.15,
§5.11, §5.13, §8.12). Complements tests/api/test_execute.py."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from agentauth import agents, execution
from agentauth.audit import AuditLog
from agentauth.capabilities import registry
from agentauth.models import Agent, AgentStatus, AuditEvent, CapabilityGrant, Execution
from agentauth.testing import agent_token, make_agent, make_host
from tests.conftest import ISSUER, Api, assert_error

pytestmark = pytest.mark.django_db

EXECUTE = ISSUER + "/capability/execute"


@pytest.fixture
def agent(user: Any) -> Any:
    host, _ = make_host(user=user)
    return make_agent(
        host,
        grants={
            "slow_report": None,
            "failing_job": None,
            "non_json_report": None,
            "count_up": None,
            "broken_stream": None,
            "non_json_stream": None,
        },
    )


def execute(api: Api, agent: Any, capability: str, arguments: Any = None) -> Any:
    a, key = agent
    body: dict[str, Any] = {"capability": capability}
    if arguments is not None:
        body["arguments"] = arguments
    return api.post("/capability/execute", body, token=agent_token(a, key, audience=EXECUTE))


def poll(api: Api, agent: Any, status_url: str, **token_kwargs: Any) -> Any:
    a, key = agent
    return api.get(status_url.removeprefix(ISSUER), token=agent_token(a, key, **token_kwargs))


def tasks(callbacks: list[Any]) -> list[Any]:
    """On-commit callbacks other than the audit log's."""
    return [c for c in callbacks if not isinstance(c, AuditLog)]


def started(api: Api, agent: Any, capture: Any, capability: str, arguments: Any = None) -> Any:
    """Accept a job and run its task (the eager Celery task runs on commit)."""
    with capture(execute=True):
        reply = execute(api, agent, capability, arguments)
    assert reply.status == 202, reply.body
    return reply


# --- the 202 contract and polling ---------------------------------------------------------------


def test_accepted_shape(api: Api, agent: Any, django_capture_on_commit_callbacks: Any) -> None:
    # spec: §2.15, §8.12 — pending only, absolute, same origin as the issuer.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        reply = execute(api, agent, "slow_report", {"n": 3})
    assert reply.status == 202
    assert reply.body == {"status": "pending", "status_url": reply.body["status_url"]}
    url, issuer = urlsplit(reply.body["status_url"]), urlsplit(ISSUER)
    assert (url.scheme, url.netloc) == (issuer.scheme, issuer.netloc)
    assert url.path.startswith(issuer.path + "/")
    assert int(reply.headers["Retry-After"]) >= 1
    # The task is enqueued only once the job row is committed (beside it: the audit log line).
    assert len(tasks(callbacks)) == 1
    job = Execution.objects.get()
    assert job.status == "pending" and job.arguments == {"n": 3}
    assert url.path.endswith("/" + job.pk)


def test_completed_poll(api: Api, agent: Any, django_capture_on_commit_callbacks: Any) -> None:
    # spec: §2.15, §5.11 — GET with a fresh agent JWT, aud = issuer.
    reply = started(api, agent, django_capture_on_commit_callbacks, "slow_report", {"n": 5})
    result = poll(api, agent, reply.body["status_url"])
    assert result.status == 200
    assert result.body == {"status": "completed", "result": {"total": 10}}
    job = Execution.objects.get()
    assert job.finished_at is not None and job.error is None


def test_poll_also_accepts_the_default_location_audience(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # §5.11 (optional): the execute URL is also a valid poll audience.
    reply = started(api, agent, django_capture_on_commit_callbacks, "slow_report", {"n": 1})
    assert poll(api, agent, reply.body["status_url"], audience=EXECUTE).status == 200
    refused = poll(api, agent, reply.body["status_url"], audience="https://other.example")
    assert_error(refused, 401, "invalid_jwt")


def test_failed_poll_is_a_spec_error_object(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec: §5.13 — {status: failed, error: {error, message}} and nothing else.
    reply = started(api, agent, django_capture_on_commit_callbacks, "failing_job")
    body = poll(api, agent, reply.body["status_url"]).body
    assert body == {
        "status": "failed",
        "error": {"error": "invalid_request", "message": "the report source is unavailable"},
    }


def test_non_json_result_fails_the_job(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # A result that cannot be stored as JSON used to crash the task and leave the job pending
    # for ever; it now fails like the sync path (500 internal_error there).
    reply = started(api, agent, django_capture_on_commit_callbacks, "non_json_report")
    body = poll(api, agent, reply.body["status_url"]).body
    assert body["status"] == "failed" and body["error"]["error"] == "internal_error"


def test_poll_tokens_are_verified(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec: §2.15 — every poll carries a fresh, valid agent JWT of the initiating agent.
    reply = started(api, agent, django_capture_on_commit_callbacks, "slow_report", {"n": 1})
    path = reply.body["status_url"].removeprefix(ISSUER)
    a, key = agent
    token = agent_token(a, key)
    assert api.get(path, token=token).status == 200
    assert_error(api.get(path, token=token), 401, "invalid_jwt")  # replayed
    assert_error(
        api.get(path, token=agent_token(a, key, extra_claims={"exp": 1})), 401, "invalid_jwt"
    )
    assert_error(
        api.get("/capability/status/job_nope", token=agent_token(a, key)), 404, "not_found"
    )
    agents.revoke_agent(a, actor_type="user")
    assert_error(api.get(path, token=agent_token(a, key)), 403, "agent_revoked")


def test_refused_at_acceptance_creates_no_job(
    api: Api, agent: Any, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec: §2.15 — the grant and the arguments are checked before a job exists.
    stranger = make_agent(agent[0].host)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert_error(execute(api, stranger, "slow_report", {"n": 1}), 403, "capability_not_granted")
        assert_error(execute(api, agent, "slow_report", {"n": "x"}), 400, "invalid_request")
    assert tasks(callbacks) == [] and not Execution.objects.exists()
    codes = set(AuditEvent.objects.filter(kind="capability.refused").values_list("error_code"))
    assert codes == {("capability_not_granted",), ("invalid_request",)}


def test_accepted_job_is_audited_with_its_id(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec: §11 — the acceptance is the audited execution, with the job it started.
    started(api, agent, django_capture_on_commit_callbacks, "slow_report", {"n": 1})
    event = AuditEvent.objects.get(kind="capability.executed")
    assert event.data["mode"] == "async" and event.data["job_id"] == Execution.objects.get().pk


# --- the job re-checks everything (spec §8.17) --------------------------------------------------


def accept_only(api: Api, agent: Any, capture: Any) -> list[Any]:
    with capture(execute=False) as callbacks:
        assert execute(api, agent, "slow_report", {"n": 1}).status == 202
    return list(callbacks)


def run_all(callbacks: list[Any]) -> Execution:
    for callback in callbacks:
        callback()
    return Execution.objects.get()


def test_job_fails_when_the_grant_is_revoked_meanwhile(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    callbacks = accept_only(api, agent, django_capture_on_commit_callbacks)
    CapabilityGrant.objects.filter(capability="slow_report").update(status="revoked")
    job = run_all(callbacks)
    assert job.status == "failed" and job.error["error"] == "capability_not_granted"
    assert job.result is None


def test_job_fails_when_the_capability_is_removed_meanwhile(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    callbacks = accept_only(api, agent, django_capture_on_commit_callbacks)
    cap = registry.get("slow_report")
    assert cap is not None
    registry.unregister("slow_report")
    try:
        job = run_all(callbacks)
    finally:
        registry.register(cap)
    assert job.status == "failed" and job.error["error"] == "capability_not_granted"
    assert "removed" in job.error["message"]


def test_job_fails_when_the_constraints_narrow_meanwhile(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    callbacks = accept_only(api, agent, django_capture_on_commit_callbacks)
    CapabilityGrant.objects.filter(capability="slow_report").update(constraints={"n": {"max": 0}})
    job = run_all(callbacks)
    assert job.status == "failed" and job.error["error"] == "constraint_violated"
    assert job.error["violations"] == [{"field": "n", "constraint": {"max": 0}, "actual": 1}]


def test_job_fails_when_the_session_lapsed_meanwhile(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # The job evaluates the agent's clocks itself; no sweep has to run first.
    from datetime import timedelta

    from django.utils import timezone

    callbacks = accept_only(api, agent, django_capture_on_commit_callbacks)
    type(agent[0]).objects.filter(pk=agent[0].pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    job = run_all(callbacks)
    # The code is not specified for jobs; today an expired agent reports "unauthorized".
    assert job.status == "failed" and job.error["error"] in ("agent_expired", "unauthorized")
    agent[0].refresh_from_db()
    assert agent[0].status == AgentStatus.EXPIRED


def test_a_finished_job_is_not_run_again(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # A redelivered task finds the job finished and leaves it alone.
    started(api, agent, django_capture_on_commit_callbacks, "slow_report", {"n": 2})
    job = Execution.objects.get()
    CapabilityGrant.objects.filter(capability="slow_report").update(status="revoked")
    execution.run_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed" and job.result == {"total": 4}


# --- streams -------------------------------------------------------------------------------------


def stream(client: Any, agent: Any, capability: str, arguments: Any = None) -> Any:
    a, key = agent
    body: dict[str, Any] = {"capability": capability}
    if arguments is not None:
        body["arguments"] = arguments
    return client.post(
        "/api/auth/capability/execute",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {agent_token(a, key, audience=EXECUTE)}",
    )


def parse(raw: bytes) -> list[tuple[str, Any]]:
    """SSE blocks to (event, data); a block without ``event:`` is a data event (spec §5.11)."""
    events = []
    for block in raw.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event", "data"), json.loads(fields["data"])))
    return events


def test_stream_headers_and_events(client: Any, agent: Any) -> None:
    # spec: §5.13
    response = stream(client, agent, "count_up", {"n": 2})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-store"
    events = parse(b"".join(response.streaming_content))
    assert events == [("data", {"i": 0}), ("data", {"i": 1}), ("done", {})]
    event = AuditEvent.objects.get(kind="capability.executed")
    assert event.capability == "count_up" and event.data["mode"] == "stream"


def test_stream_handler_failure_is_error_then_done(client: Any, agent: Any) -> None:
    # spec: §5.13 — the handler's exception becomes an error event; done always follows.
    events = parse(b"".join(stream(client, agent, "broken_stream").streaming_content))
    assert events == [
        ("data", {"i": 0}),
        ("error", {"error": "internal_error", "message": "The capability failed"}),
        ("done", {}),
    ]


def test_non_json_chunk_is_error_then_done(client: Any, agent: Any) -> None:
    # spec: §5.13 — a chunk that cannot be serialised used to end the stream without done.
    events = parse(b"".join(stream(client, agent, "non_json_stream").streaming_content))
    assert [e for e, _ in events] == ["data", "error", "done"]
    assert events[1][1]["error"] == "internal_error"


def test_stream_refusals_are_json_errors(client: Any, agent: Any) -> None:
    # Refused before any event: a plain spec error, not an event stream.
    stranger = make_agent(agent[0].host)
    response = stream(client, stranger, "count_up", {"n": 1})
    assert response.status_code == 403 and response["Content-Type"] == "application/json"
    assert response.json()["error"] == "capability_not_granted"
    response = stream(client, agent, "count_up", {"n": "many"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_stream_ends_when_the_agent_is_revoked(client: Any, agent: Any, settings: Any) -> None:
    # spec: §2.15 — a stream outliving its JWT re-checks revocation and ends on it.
    settings.AGENTAUTH_STREAM_RECHECK_SECONDS = 0
    response = stream(client, agent, "count_up", {"n": 100})
    chunks = iter(response.streaming_content)
    assert parse(next(chunks)) == [("data", {"i": 0})]
    agents.revoke_agent(agent[0], actor_type="user")
    rest = parse(b"".join(chunks))
    assert rest == [
        ("error", {"error": "agent_revoked", "message": "Agent has been revoked"}),
        ("done", {}),
    ]


@pytest.mark.parametrize(
    ("deadline", "code"),
    [("expires_at", "agent_expired"), ("absolute_expires_at", "absolute_lifetime_exceeded")],
)
def test_stream_recheck_applies_the_clocks_and_names_the_state(
    client: Any, agent: Any, settings: Any, deadline: str, code: str
) -> None:
    # spec §2.4, §5.11: the re-check is the authentication rule (clocks first, then state), so
    # a stream whose agent lapses mid-way ends with that state's own error.
    settings.AGENTAUTH_STREAM_RECHECK_SECONDS = 0
    response = stream(client, agent, "count_up", {"n": 100})
    chunks = iter(response.streaming_content)
    assert parse(next(chunks)) == [("data", {"i": 0})]
    past = timezone.now() - timedelta(seconds=1)
    Agent.objects.filter(pk=agent[0].pk).update(**{deadline: past})
    rest = parse(b"".join(chunks))
    assert [(event, data.get("error")) for event, data in rest] == [("error", code), ("done", None)]


def test_stream_has_a_maximum_duration(client: Any, agent: Any, settings: Any) -> None:
    # spec: §2.15 — a stream is cut at STREAM_MAX_SECONDS with an error, then done.
    settings.AGENTAUTH_STREAM_MAX_SECONDS = 0
    events = parse(b"".join(stream(client, agent, "count_up", {"n": 1000}).streaming_content))
    assert events[-2:] == [
        ("error", {"error": "stream_timeout", "message": "Stream time limit"}),
        ("done", {}),
    ]
    assert len(events) < 1000
