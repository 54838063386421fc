# ruff: noqa: S608 - SQL is assembled from model metadata (table and column names) only; every
# value is a query parameter.
"""The registration hot path: a known host registers an agent that needs no person (spec §5.3).

``POST /agent/register`` from a host the server knows, for a new agent whose capabilities its
policy grants at once (an autonomous agent under ``AGENTAUTH_AUTONOMOUS_AUTO_APPROVE``, or a
delegated agent within a linked host's defaults), is the registration hosts make most. The general
path (``tokens.verify_host_jwt`` then ``registration.register``) spends the ``jti`` on its own,
then locks the host and checks for a duplicate key in a transaction: nine round trips, and most of
its CPU in ORM query compilation. This module serves that case with the same checks and
guarantees:

1. ``BEGIN``; one statement inserts the ``jti`` record (database replay guard: on PostgreSQL in
   the same statement, ``ON CONFLICT DO NOTHING``) and reads the host by the thumbprint the JWT
   names, locking its row as the general path does (``SELECT ... FOR UPDATE``).
2. In Python, as ``verify_host_jwt`` and ``registration.register`` would: the host's inline key,
   the signature (spec §4.5.1), the replay verdict, the host's state, the agent key (§4.2), the
   mode and statuses (``registration.initial_statuses``, so ``policy.auto_approvable`` decides),
   then the host's rate limit.
3. The agent, its grants and the audit row are inserted by statements built once per process
   (``agentauth.prepared``); the unique key on (host, agent key) refuses a concurrent duplicate;
   ``COMMIT``. The agent-registered signal follows the commit.

Anything else falls back, before anything is written, to the general path: the transaction is
rolled back (so the ``jti`` is not spent by this attempt) and the request is handled from the
start, producing its errors, audit rows, approval requests and state changes: an unknown or
JWKS-keyed host, a key at a JWKS URL, a refusal of any kind, a retry with a key already
registered, a capability that waits for a person, a host to activate or rename, a database other
than PostgreSQL or SQLite.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from . import keys, prepared, ratelimit, registration, replay, tokens, wire
from .conf import app_settings
from .errors import ProtocolError
from .fastpath import Fallback
from .models import AgentStatus, GrantStatus, Host, HostStatus
from .prepared import Shape

__all__ = ["Fallback", "register"]


def register(token: str, body: Any) -> dict[str, Any]:
    """The registration answer; raises ``Fallback`` before any effect when the general path must
    answer."""
    if connection.vendor not in ("postgresql", "sqlite") or not isinstance(body, dict):
        raise Fallback
    try:
        parsed, iss, presented, jwks_url = tokens.parse_host_jwt(token)
        if jwks_url is not None or "agent_jwks_url" in parsed.claims:
            raise Fallback  # a key at a URL may need a fetch: never with the host row locked
        until, jti = tokens.check_times(parsed.claims)
        req = registration.RegistrationRequest.parse(body)
    except ProtocolError:
        raise Fallback from None
    try:
        with transaction.atomic():
            return _register(parsed, iss, presented, req, jti, until)
    except IntegrityError:
        # The same agent key committed by a concurrent registration: a retry (spec §5.3), which
        # the general path answers.
        raise Fallback from None


def _register(
    parsed: Any,
    iss: str,
    presented: Any,
    req: registration.RegistrationRequest,
    jti: str,
    until: datetime,
) -> dict[str, Any]:
    database_guard = app_settings.REPLAY_GUARD != "cache"
    key = replay.replay_key(tokens.HOST_TYP, iss, jti) if database_guard else None
    loaded = _load(iss, key, until)
    if loaded is None:
        raise Fallback
    host, spent = loaded
    if host.jwks_url is not None or host.public_key is None:
        raise Fallback
    try:
        if presented is not None and keys.thumbprint(presented) != iss:
            raise Fallback
        public_key = keys.validate_public_jwk(host.public_key)
        parsed.verify(keys.public_key_from_jwk(public_key))
        if (database_guard and not spent) or host.status not in (
            HostStatus.ACTIVE,
            HostStatus.PENDING,
        ):
            raise Fallback
        verified = tokens.VerifiedHost(
            host=host, thumbprint=iss, public_key=public_key, claims=parsed.claims
        )
        agent_key = registration.agent_key_from_claims(verified)
        if req.host_name and req.host_name != host.name:
            raise Fallback
        agent_status, grant_statuses, activate_host = registration.initial_statuses(host, req)
        if activate_host or agent_status != AgentStatus.ACTIVE:
            raise Fallback
        if any(status != GrantStatus.ACTIVE for status in grant_statuses.values()):
            raise Fallback
        # Last: from here on the request is this path's, so the limit counts it once.
        ratelimit.hit("host", host.pk)
    except ProtocolError:
        raise Fallback from None
    now = timezone.now()
    agent, grants = registration.new_agent(host, req, agent_key, agent_status, grant_statuses, now)
    with prepared.batch():  # one round trip for the writes
        tokens.note_host_use(host)
        prepared.insert([agent])
        prepared.insert(grants)
        registration.registered(agent, host, req, grants, created_host=False)
    if not database_guard:
        # Only once the writes went through: a key already registered (IntegrityError above)
        # is a retry for the general path, which must find this jti unspent. A refusal here is
        # the final answer (a cache record cannot be rolled back) and rolls the writes back.
        replay.consume(tokens.HOST_TYP, iss, jti, until, issued_at=parsed.claims["iat"])
    return wire.registration(agent, grants, None)


@cache
def _statements(vendor: str, with_replay: bool) -> tuple[str, Shape]:
    """(The select, the shape); per process, per vendor and guard."""
    qn = connection.ops.quote_name
    h = Shape(Host, "h")
    meta = Host._meta
    thumbprint = qn(prepared.column(meta.get_field("thumbprint")))
    prefix, spent = replay.spend_clauses(vendor, with_replay)
    select = f"{prefix}SELECT {', '.join(h.columns)}{spent} FROM {qn(meta.db_table)} h"
    select += f" WHERE h.{thumbprint} = %s"
    # SQLite: no row locks (a write transaction is exclusive there).
    return (select + " FOR UPDATE OF h" if vendor == "postgresql" else select), h


def _load(iss: str, key: str | None, until: datetime) -> tuple[Host, bool] | None:
    """The host whose current key ``iss`` names, locked, and whether the ``jti`` record was
    inserted now (``key``: the database guard's); ``None`` when no such host."""
    select, h = _statements(connection.vendor, key is not None)
    row, spent = replay.read_spending(select, [iss], key, until)
    if row is None:
        return None
    return h.build(row[: len(h.fields)]), spent
