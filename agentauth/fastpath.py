# ruff: noqa: S608 - SQL is assembled from model metadata (table and column names) only; every
# value is a query parameter.
"""The execute hot path: a valid sync call in one transaction with two statements.

``POST /capability/execute`` is the endpoint agents call most. The general path
(``views/capabilities.ExecuteView``) authenticates, spends the ``jti``, then opens a transaction to
lock the grant and run the handler, and writes the audit row after it: about ten round trips to
PostgreSQL and most of its CPU in ORM query compilation. This module serves the common case, a
call that will succeed, with the same checks in the same order and the same guarantees:

1. ``BEGIN``; one statement reads the agent, its host and its active grant of the capability,
   locking the grant row (``SELECT ... FOR UPDATE``, spec §8.17), and, with the database replay
   guard, inserts the ``jti`` record in the same statement (``ON CONFLICT DO NOTHING``: a
   concurrent use of the same ``jti`` waits for this transaction and then finds it spent).
2. In Python: the signature (spec §4.5), then the replay verdict, the agent's and host's state
   and clocks, the ``capabilities`` claim, the grant, schema and constraints.
3. The handler runs in that transaction, the grant still locked.
4. The audit row is inserted in the same transaction; ``COMMIT``. A call that returned 200 has its
   audit row and its spent ``jti`` committed together with the handler's writes.

Anything else falls back, before the handler has run, to the general path: the transaction is
rolled back (so the ``jti`` is not spent by this attempt) and ``ExecuteView`` handles the request
from the start, producing exactly its errors, audit rows and state transitions. The fallback
covers every refusal (bad signature, replay, revoked agent, missing grant, schema, constraints,
rate limit), a clock transition that is due, keys published at a JWKS URL, non-public, async or
stream capabilities and other databases than PostgreSQL and SQLite. A handler that raises rolls
back its writes with the transaction; the ``jti`` is then spent again (if another request spent
it meanwhile, that one was its only acceptance) and the refusal audited, as on the general path.

The SQL is built once per process from the models' metadata, so renamed columns follow the models.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from functools import cache
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from . import clocks, execution, prepared, ratelimit, replay, signals, tokens, wire
from .capabilities import Capability, registry
from .conf import app_settings
from .errors import ProtocolError
from .models import (
    Agent,
    AgentStatus,
    CapabilityGrant,
    GrantStatus,
    Host,
    HostStatus,
)
from .prepared import Shape

AGENT_TYP = tokens.AGENT_TYP


class Fallback(Exception):
    """Not for the hot path: the general path handles this request from the start."""


def sync_capability(name: Any) -> Capability | None:
    """The capability if a call to it may take the hot path: a public, local, sync one, with
    DPoP off and not required by the capability (proofs are checked on the general path only,
    ``agentauth.dpop``)."""
    if app_settings.DPOP != "off" or not isinstance(name, str) or not name or len(name) > 128:
        return None
    cap = registry.get(name)
    if cap is None or not cap.public or cap.mode != "sync" or cap.require_dpop:
        return None
    if cap.url and cap.url != app_settings.DEFAULT_LOCATION:
        return None
    if cap.resolve_handler() is None:
        return None
    return cap


def execute(
    token: str,
    audiences: Collection[str],
    cap: Capability,
    arguments: dict[str, Any],
    request: Any = None,
) -> str:
    """Run a sync call to ``cap``; the answer's body (``wire.sync_result``, encoded once: the
    check that the result is JSON is its encoding). Raises ``Fallback`` before any effect when
    the general path must answer, or the (audited) ``ProtocolError`` of a failed handler."""
    if connection.vendor not in ("postgresql", "sqlite"):
        raise Fallback
    try:
        parsed, sub, iss = tokens.parse_agent_jwt(token, audiences)
        until, jti = tokens.check_times(parsed.claims)
    except ProtocolError:
        raise Fallback from None
    database_guard = app_settings.REPLAY_GUARD != "cache"
    key = replay.replay_key(AGENT_TYP, sub, jti)
    failure: ProtocolError | None = None
    verified: tokens.VerifiedAgent | None = None
    with transaction.atomic():
        row = _load(sub, cap.name, key if database_guard else None, until)
        if row is None:
            raise Fallback
        agent, host, grant, spent = row
        if agent.jwks_url is not None or host.jwks_url is not None:
            # Keys at a JWKS URL may need a fetch: never with the grant row locked.
            raise Fallback
        try:
            tokens.verify_agent_signature(parsed, agent, host, iss)
        except ProtocolError:
            raise Fallback from None
        if database_guard and not spent:
            raise ProtocolError("invalid_jwt", "JWT has already been used (jti replay)")
        now = timezone.now()
        if not _may_act(agent, host, now):
            raise Fallback
        verified = tokens.VerifiedAgent(agent=agent, host=host, claims=parsed.claims)
        try:
            ratelimit.hit("agent", agent.pk)
            execution.check_claim(verified, cap)
            grant = execution.check_grant(grant, cap, arguments)
        except ProtocolError:
            raise Fallback from None
        if not database_guard:
            # Its refusals are final answers.
            replay.consume(AGENT_TYP, agent.pk, jti, until, issued_at=parsed.claims["iat"])
        handler = cap.resolve_handler()
        assert handler is not None
        ctx = execution.ExecutionContext(agent, host, cap, grant, parsed.claims, request)
        try:
            data = handler(ctx, **arguments)
        except Exception as exc:
            failure = execution.handler_error(exc)
            failure.__cause__ = exc
        else:
            try:
                body = json.dumps(
                    wire.sync_result(data), cls=DjangoJSONEncoder, separators=(",", ":")
                )
            except (TypeError, ValueError):
                failure = ProtocolError("internal_error", "The capability returned non-JSON data")
        if failure is None:
            # The row execution.record writes; its signal follows the commit, below.
            execution.audit_call(verified, cap.name, mode="sync")
        else:
            transaction.set_rollback(True)  # what the handler wrote goes, with the jti record
    assert verified is not None
    if failure is not None:
        if database_guard:
            replay.insert(key, until)
        execution.record(verified, cap.name, error=failure)
        raise failure
    # After the commit, as on the general path: the session slides (at most one write per
    # window) and receivers see a call that really happened.
    clocks.touch(agent)
    signals.capability_executed.send(
        sender=Agent, agent=agent, capability=cap.name, jti=jti, mode="sync"
    )
    return body


def _may_act(agent: Agent, host: Host, now: datetime) -> bool:
    """Active agent and host and no clock transition due (``tokens.ensure_may_act`` would pass
    without writing anything)."""
    if agent.status != AgentStatus.ACTIVE or host.status != HostStatus.ACTIVE:
        return False
    return not clocks.transition_due(agent, now)


# --- SQL -----------------------------------------------------------------------------------------


@cache
def _statements(vendor: str, with_replay: bool) -> tuple[str, tuple[Shape, ...]]:
    """(The select, the shapes); per process, per vendor and guard."""
    qn = connection.ops.quote_name
    a, h, g = Shape(Agent, "a"), Shape(Host, "h"), Shape(CapabilityGrant, "g")
    am, hm, gm = Agent._meta, Host._meta, CapabilityGrant._meta

    def col(meta: Any, name: str) -> str:
        return qn(prepared.column(meta.get_field(name)))

    grant_where = (
        f"{col(gm, 'agent')} = a.{col(am, 'id')} AND {col(gm, 'capability')} = %s"
        f" AND {col(gm, 'status')} = %s ORDER BY {col(gm, 'id')} LIMIT 1"
    )
    base_from = (
        f"FROM {qn(am.db_table)} a JOIN {qn(hm.db_table)} h"
        f" ON h.{col(hm, 'id')} = a.{col(am, 'host')}"
    )
    if vendor == "postgresql":
        # The grant row is locked by the statement that reads it (spec §8.17); the replay record
        # is inserted by the same statement, so the whole read is one round trip.
        gcols = ", ".join(qn(prepared.column(f)) for f in g.fields)
        prefix, spent = replay.spend_clauses(vendor, with_replay)
        select = (
            f"{prefix}SELECT {', '.join(a.columns + h.columns + g.columns)}{spent} {base_from}"
            + f" LEFT JOIN LATERAL (SELECT {gcols} FROM {qn(gm.db_table)}"
            + f" WHERE {grant_where} FOR UPDATE) g ON TRUE WHERE a.{col(am, 'id')} = %s"
        )
        return select, (a, h, g)
    # SQLite: no row locks (a write transaction is exclusive there) and no INSERT in a CTE.
    select = (
        f"SELECT {', '.join(a.columns + h.columns + g.columns)} {base_from}"
        f" LEFT JOIN {qn(gm.db_table)} g ON g.{col(gm, 'id')} = (SELECT {col(gm, 'id')}"
        f" FROM {qn(gm.db_table)} WHERE {grant_where})"
        f" WHERE a.{col(am, 'id')} = %s"
    )
    return select, (a, h, g)


def _load(
    agent_id: str, capability: str, key: str | None, until: datetime
) -> tuple[Agent, Host, CapabilityGrant | None, bool] | None:
    """Agent, host, locked active grant (or ``None``) and whether the ``jti`` record was
    inserted now; ``None`` when no such agent."""
    select, (a, h, g) = _statements(connection.vendor, key is not None)
    params: list[Any] = [capability, GrantStatus.ACTIVE.value, agent_id]
    row, spent = replay.read_spending(select, params, key, until)
    if row is None:
        return None
    na, nh, ng = len(a.fields), len(h.fields), len(g.fields)
    agent = a.build(row[:na])
    host = h.build(row[na : na + nh])
    Agent.host.field.set_cached_value(agent, host)
    grant = None
    if row[na + nh] is not None:
        grant = g.build(row[na + nh : na + nh + ng])
        CapabilityGrant.agent.field.set_cached_value(grant, agent)
    return agent, host, grant, spent
