"""Running a capability (spec §2.15, §5.11) for the execute endpoint, project views and tasks.

``execute()`` is the one entry point of ``POST /capability/execute``: it finds the capability,
applies the location rule, dispatches on the mode, writes exactly one audit row per call, checks
that results are JSON and re-checks long streams. The order of checks is the §2.15:
capability exists and is granted (and named in the JWT's ``capabilities`` claim, if any), the
grant's operators are known, the arguments match the input schema, then the constraints hold.
Only then does the handler run, inside a transaction with the grant re-read under lock, so a
revocation cannot slip between check and effect (§8.17).
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jsonschema
from asgiref.sync import sync_to_async
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, transaction
from django.utils import timezone

from . import audit, constraints, dpop, jobs, signals, unavailable
from .capabilities import Capability, registry
from .conf import app_settings
from .errors import ProtocolError, invalid_request
from .models import Agent, CapabilityGrant, Execution, ExecutionStatus, GrantStatus, Host
from .tokens import VerifiedAgent, ensure_may_act

logger = logging.getLogger("agentauth")


@dataclass
class ExecutionContext:
    """What a handler knows about the call: who, under which grant, for whom."""

    agent: Agent
    host: Host
    capability: Capability
    grant: CapabilityGrant
    claims: dict[str, Any] = field(default_factory=dict)
    request: Any = None

    @property
    def user(self) -> Any:
        """The person the agent acts for (``None`` for autonomous agents)."""
        return self.agent.user

    @property
    def jti(self) -> str | None:
        return self.claims.get("jti")


@dataclass(frozen=True)
class Outcome:
    """What an accepted call produced, by mode: ``data`` (sync), ``job`` (async) or ``events``
    (stream: ``(event, JSON text)`` pairs, ending with ``done``)."""

    mode: str
    data: Any = None
    job: Execution | None = None
    events: Iterator[tuple[str, str]] | AsyncIterator[tuple[str, str]] | None = None


def execute(verified: VerifiedAgent, name: Any, arguments: Any, request: Any = None) -> Outcome:
    """Run one ``POST /capability/execute`` call (spec §5.11) and audit it exactly once.

    Any refusal is recorded as ``capability.refused`` with its code, then raised.
    """
    try:
        cap = lookup(name, verified)
        dpop.require_for(cap, verified)  # §4.5 step 9, per capability (not re-run by jobs)
        if cap.url and cap.url != app_settings.DEFAULT_LOCATION:
            raise invalid_request(
                f"Capability '{cap.name}' is executed at its own location", location=cap.url
            )
        if cap.mode == "async":
            authorize(verified, cap, arguments)
            job = jobs.create(verified, cap, arguments)
            record(verified, cap.name, mode="async", job_id=job.pk)
            return Outcome("async", job=job)
        if cap.mode == "stream":
            grant = authorize(verified, cap, arguments)
            events: Iterator[tuple[str, str]] | AsyncIterator[tuple[str, str]]
            if inspect.isasyncgenfunction(_handler(cap)):
                events = _astream(verified, cap, grant, arguments)
            else:
                events = _stream(verified, cap, grant, arguments)
            record(verified, cap.name, mode="stream")
            return Outcome("stream", events=events)
        data = run_sync(verified, cap, arguments, request)
        record(verified, cap.name, mode="sync")
        return Outcome("sync", data=data)
    except ProtocolError as exc:
        record(verified, name if isinstance(name, str) else "", error=exc)
        raise


def lookup(name: Any, verified: VerifiedAgent) -> Capability:
    """The capability named ``name`` if this agent may see it (§5.11, §5.2.1)."""
    if not isinstance(name, str) or not name or len(name) > 128:
        raise invalid_request("'capability' is required and must be a string")
    cap = registry.get(name)
    held = CapabilityGrant.objects.filter(agent=verified.agent, capability=name).exists
    if cap is None:
        if held():
            raise ProtocolError(
                "capability_not_granted", f"The capability '{name}' has been removed"
            )
        raise ProtocolError("capability_not_found", f"Capability '{name}' does not exist")
    if not cap.public and not held():
        # A non-public capability is not disclosed to agents that were never granted it.
        raise ProtocolError("capability_not_found", f"Capability '{name}' does not exist")
    return cap


def authorize(
    verified: VerifiedAgent,
    cap: Capability,
    arguments: Any,
    *,
    lock: bool = False,
) -> CapabilityGrant:
    """Grant, claim, schema and constraint checks (spec §4.5 steps 10-12, §5.11).

    The schema is never optional: constraints compare raw values, so they mean what they say
    only for arguments of the declared types and spellings.
    """
    check_claim(verified, cap)
    grants = CapabilityGrant.objects.filter(
        agent=verified.agent, capability=cap.name, status=GrantStatus.ACTIVE
    )
    if lock:
        grants = grants.select_for_update()
    return check_grant(grants.first(), cap, arguments)


def check_claim(verified: VerifiedAgent, cap: Capability) -> None:
    """The JWT's ``capabilities`` claim, when present, must name ``cap`` (spec §4.3)."""
    claim = verified.capabilities_claim
    if claim is not None and cap.name not in claim:
        raise ProtocolError(
            "capability_not_granted", f"This JWT is not valid for capability '{cap.name}'"
        )


def check_grant(grant: CapabilityGrant | None, cap: Capability, arguments: Any) -> CapabilityGrant:
    """The agent's active grant of ``cap`` (``None``: it has none) permits these arguments."""
    now = timezone.now()
    if grant is None or not grant.is_effective(now):
        raise ProtocolError(
            "capability_not_granted", f"Agent has no active grant for capability '{cap.name}'"
        )
    if not isinstance(arguments, dict):
        raise invalid_request("'arguments' must be an object")
    constraints.check(grant.constraints, {})  # unknown operators first: 400, not 403 (§2.15)
    validate_arguments(cap, arguments)
    # Server-imposed constraints bind every grant, including ones created before they were
    # declared (spec §2.13: the tightest constraint from either source wins).
    violations = constraints.check(grant.constraints, arguments)
    violations += constraints.check(dict(cap.constraints or {}) or None, arguments)
    if violations:
        raise ProtocolError("constraint_violated", violations=violations)
    return grant


def validate_arguments(cap: Capability, arguments: dict[str, Any]) -> None:
    """Arguments must match the input schema; stale or wrong shapes are 400 (spec §5.2.1)."""
    if cap.input is None:
        return
    validator = _validator(cap)
    if validator.is_valid(arguments):  # the common case, without collecting every error
        return
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path)
        raise invalid_request(
            f"Arguments do not match the input schema of '{cap.name}': {error.message}",
            schema_path="/".join(str(p) for p in error.absolute_schema_path),
            field=path or None,
        )


_validators: dict[tuple[str, int], Any] = {}


def _validator(cap: Capability) -> Any:
    """Compiled once per declared schema, not on every call (the execute hot path)."""
    key = (cap.name, id(cap.input))
    if key not in _validators:
        _validators[key] = jsonschema.Draft202012Validator(cap.input)
    return _validators[key]


def handler_error(exc: Exception) -> ProtocolError:
    """Turn what a handler raised into a spec error; nothing becomes an HTML 500 page."""
    if isinstance(exc, ProtocolError):
        return exc
    if unavailable.is_dependency_failure(exc):
        return unavailable.protocol_error(exc)  # the database went away mid-call: 503, not 500
    if isinstance(exc, ObjectDoesNotExist | LookupError):
        return ProtocolError("resource_not_found", str(exc) or "Not found", status=404)
    if isinstance(exc, ValidationError):
        return invalid_request("; ".join(exc.messages) or "Invalid arguments")
    if isinstance(exc, ValueError):
        return invalid_request(str(exc) or "Invalid arguments")
    if isinstance(exc, TypeError):
        # Usually a call that does not fit the handler's signature: do not echo its internals.
        logger.warning("agentauth: capability handler raised TypeError: %s", exc)
        return invalid_request("The arguments do not fit this capability")
    if isinstance(exc, PermissionError):
        return ProtocolError("unauthorized", str(exc) or "Not allowed")
    logger.exception("agentauth: capability handler failed")
    return ProtocolError("internal_error", "The capability failed")


def record(
    verified: VerifiedAgent, capability: str, *, error: ProtocolError | None = None, **data: Any
) -> None:
    """Audit one call, allowed or refused (spec §11), and send its signal."""
    audit_call(verified, capability, error=error, **data)
    agent = verified.agent
    if error is None:
        signals.capability_executed.send(
            sender=Agent, agent=agent, capability=capability, jti=verified.claims.get("jti"), **data
        )
    else:
        signals.capability_refused.send(
            sender=Agent, agent=agent, capability=capability, error=error.code
        )


def audit_call(
    verified: VerifiedAgent, capability: str, *, error: ProtocolError | None = None, **data: Any
) -> None:
    """The call's audit row (spec §11): ``capability.executed`` or ``capability.refused``."""
    agent = verified.agent
    audit.record(
        "capability.executed" if error is None else "capability.refused",
        actor_type="agent",
        actor_id=agent.pk,
        agent=agent,
        capability=capability,
        outcome="ok" if error is None else "error",
        error_code="" if error is None else error.code,
        jti=verified.claims.get("jti"),
        **data,
    )


def run_sync(
    verified: VerifiedAgent,
    cap: Capability,
    arguments: dict[str, Any],
    request: Any = None,
    *,
    encoder: type[json.JSONEncoder] = DjangoJSONEncoder,
) -> Any:
    """Check and run in one transaction, the grant row locked (spec §8.17).

    The result must encode with ``encoder`` (the response's for sync calls, plain JSON for
    stored job results); if not, the call fails and what the handler wrote is rolled back.
    """
    handler = _handler(cap)
    with transaction.atomic():
        try:
            grant = authorize(verified, cap, arguments, lock=True)
        except ProtocolError as exc:
            if exc.code == "capability_not_granted":
                # A revocation may have committed while we waited for the grant lock: say so.
                agent = Agent.objects.select_related("host").get(pk=verified.agent.pk)
                ensure_may_act(agent, agent.host)
            raise
        ctx = ExecutionContext(verified.agent, verified.host, cap, grant, verified.claims, request)
        try:
            result = handler(ctx, **arguments)
        except Exception as exc:
            # Leaving the atomic block with the exception rolls back what the handler wrote.
            raise handler_error(exc) from exc
        try:
            json.dumps(result, cls=encoder)
        except (TypeError, ValueError):
            raise ProtocolError("internal_error", "The capability returned non-JSON data") from None
        return result


def run_job(job_id: str) -> None:
    """Run a pending job once. Everything is re-checked: the agent may have been revoked, the
    grant narrowed or the capability removed since the job was accepted (spec §8.17)."""
    now = timezone.now()
    # The claim: one conditional UPDATE, so a redelivered task never runs the handler twice.
    if not Execution.objects.filter(pk=job_id, status=ExecutionStatus.PENDING).update(
        status=ExecutionStatus.RUNNING, updated_at=now
    ):
        # Claimed longer ago than any job may run: its worker died. Fail it rather than run a
        # handler that may already have had effects.
        Execution.objects.filter(
            pk=job_id,
            status=ExecutionStatus.RUNNING,
            updated_at__lte=now - timedelta(seconds=app_settings.OUTBOX_LEASE_SECONDS),
        ).update(
            status=ExecutionStatus.FAILED,
            error={"error": "internal_error", "message": "The worker running this job stopped"},
            finished_at=now,
            updated_at=now,
        )
        return
    job = Execution.objects.select_related("agent__host").get(pk=job_id)
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
        # Plain JSON: the result is stored in a JSON column, not rendered by a response.
        result = run_sync(verified, cap, dict(job.arguments), encoder=json.JSONEncoder)
    except ProtocolError as exc:
        error = exc.body()
    now = timezone.now()
    Execution.objects.filter(pk=job.pk, status=ExecutionStatus.RUNNING).update(
        status=ExecutionStatus.FAILED if error else ExecutionStatus.COMPLETED,
        result=None if error else result,
        error=error,
        finished_at=now,
        updated_at=now,
    )


def _stream(
    verified: VerifiedAgent, cap: Capability, grant: CapabilityGrant, arguments: dict[str, Any]
) -> Iterator[tuple[str, str]]:
    """``(event, JSON text)`` pairs; always ends with ``done`` (or ``error`` then ``done``).

    A stream outlives its JWT, so every ``STREAM_RECHECK_SECONDS`` the agent and host must
    still be allowed to act (the same rule as authentication), and the stream stops at
    ``STREAM_MAX_SECONDS`` (spec §5.11, §8.17).
    """
    handler = _handler(cap)
    ctx = ExecutionContext(verified.agent, verified.host, cap, grant, verified.claims)
    limits = _StreamLimits()
    try:
        for chunk in handler(ctx, **arguments):
            if limits.recheck_due():
                _recheck(verified.agent.pk)
            yield _data(chunk)
    except Exception as exc:
        yield "error", _json(handler_error(exc).body())
    yield "done", _json({})


async def _astream(
    verified: VerifiedAgent, cap: Capability, grant: CapabilityGrant, arguments: dict[str, Any]
) -> AsyncIterator[tuple[str, str]]:
    """``_stream`` for an ``async def`` generator handler, with the same limits and re-checks.

    Under ASGI an open stream of such a handler is a coroutine waiting for its next chunk, not a
    worker process or thread held for the stream's lifetime (docs/deployment.md).
    """
    handler = _handler(cap)
    ctx = ExecutionContext(verified.agent, verified.host, cap, grant, verified.claims)
    limits = _StreamLimits()
    try:
        async for chunk in handler(ctx, **arguments):
            if limits.recheck_due():
                await sync_to_async(_recheck, thread_sensitive=False)(verified.agent.pk, True)
            yield _data(chunk)
    except Exception as exc:
        yield "error", _json(handler_error(exc).body())
    yield "done", _json({})


class _StreamLimits:
    """The time limit and the re-check interval of one stream (spec §5.11, §8.17), checked
    before each chunk is sent, for the sync and the async loop alike."""

    def __init__(self) -> None:
        self.started = self.last_check = time.monotonic()

    def recheck_due(self) -> bool:
        """Raises ``stream_timeout`` past the limit; ``True`` when the agent must be
        checked again before this chunk goes out."""
        now = time.monotonic()
        if now - self.started > app_settings.STREAM_MAX_SECONDS:
            raise ProtocolError("stream_timeout", "Stream time limit")
        if now - self.last_check > app_settings.STREAM_RECHECK_SECONDS:
            self.last_check = now
            return True
        return False


def _data(chunk: Any) -> tuple[str, str]:
    try:
        return "data", _json(chunk)
    except (TypeError, ValueError):
        # A chunk that is not JSON must not cut the stream short: error, then done.
        raise ProtocolError("internal_error", "Non-JSON stream data") from None


def _recheck(agent_id: str, release: bool = False) -> None:
    """The agent and host may still act (the same rule as at authentication).

    ``release``: give the database connection back afterwards (to the pool, if one is
    configured), so that an open stream does not hold one between re-checks.
    """
    try:
        agent = Agent.objects.select_related("host").get(pk=agent_id)
        ensure_may_act(agent, agent.host)
    finally:
        if release:
            release_connections()


def release_connections() -> None:
    """Close this thread's database connections unless a transaction is open on them."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close()


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _handler(cap: Capability) -> Callable[..., Any]:
    handler = cap.resolve_handler()
    if handler is None:
        raise ProtocolError(
            "invalid_request",
            f"Capability '{cap.name}' is served at its own location",
            location=cap.url,
        )
    return handler
