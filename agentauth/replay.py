"""``jti`` replay guard (spec §4.6, §8.4, §4.5.1 step 7, §10.3).

Each token may be used once within its lifetime plus skew. The key is partitioned by token type
and identity, so two agents choosing the same ``jti`` do not collide. Both stores are shared across
processes and insert atomically; if the store cannot answer, the request is refused (503), never
waved through.

A cache can forget (a restart without persistence, a flush, eviction), and a forgotten ``jti``
would be accepted again. So the cache store keeps a marker key with no expiry holding the time
its memory began; a missing marker means the memory begins now. Tokens issued before that
moment (plus the skew) are refused: they may have been used before the loss. Each token lives at
most 300 s, so this lasts one token lifetime after a loss.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime
from functools import cache
from typing import Any

from django.core.cache import caches
from django.db import DatabaseError, connection
from django.utils import timezone

from . import unavailable
from .conf import app_settings
from .errors import ProtocolError
from .models import ReplayRecord

logger = logging.getLogger(__name__)


def replay_key(typ: str, identity: str, jti: str) -> str:
    raw = f"{typ}\x00{identity}\x00{jti}".encode()
    return hashlib.sha256(raw).hexdigest()


def _unavailable(exc: Exception) -> ProtocolError:
    return unavailable.protocol_error(
        exc, "Replay protection is unavailable; the request was refused"
    )


MEMORY_MARKER = "agentauth:jti:memory-since"


def _consume_cached(key: str, until: datetime, issued_at: float | None) -> None:
    cache = caches[app_settings.REPLAY_CACHE_ALIAS]
    ttl = max(1, int((until - timezone.now()).total_seconds()) + 1)
    try:
        since = cache.get(MEMORY_MARKER)
        if since is None:
            cache.add(MEMORY_MARKER, time.time(), None)  # no expiry; the first writer wins
            since = cache.get(MEMORY_MARKER)
        # A client clock may run CLOCK_SKEW ahead, so only tokens stamped later than that
        # after the memory began can be known unused.
        trusted_from = float(since) + app_settings.CLOCK_SKEW
        added = (
            issued_at is not None
            and issued_at >= trusted_from
            and cache.add(f"agentauth:jti:{key}", 1, ttl)
        )
    except Exception as exc:
        raise _unavailable(exc) from exc
    if issued_at is None or issued_at < trusted_from:
        logger.warning("agentauth replay cache lost its memory; refusing older tokens")
        raise ProtocolError(
            "temporarily_unavailable",
            "The replay store restarted; sign a new JWT",
            headers={"Retry-After": str(max(1, int(trusted_from - time.time()) + 1))},
        )
    if not added:
        raise ProtocolError("invalid_jwt", "JWT has already been used (jti replay)")


def consume(
    typ: str, identity: str, jti: str, until: datetime, *, issued_at: float | None = None
) -> None:
    """Record ``jti`` as used until ``until``; raise ``invalid_jwt`` if it was already used."""
    key = replay_key(typ, identity, jti)
    if app_settings.REPLAY_GUARD == "cache":
        _consume_cached(key, until, issued_at)
        return
    try:
        inserted = insert(key, until)
    except DatabaseError as exc:
        raise _unavailable(exc) from exc
    if not inserted:
        raise ProtocolError("invalid_jwt", "JWT has already been used (jti replay)")


def insert(key: str, until: datetime) -> bool:
    """Insert the record unless it exists; whether it was inserted now.

    One statement, no savepoint: ``ON CONFLICT DO NOTHING`` never raises for a duplicate, and a
    concurrent insert of the same key waits for the other transaction and then finds it (under
    autocommit that is one round trip instead of ``BEGIN``/``INSERT``/``COMMIT``).
    """
    with connection.cursor() as cursor:
        cursor.execute(insert_sql(connection.vendor), [key, _expires(until)])
        return bool(cursor.rowcount == 1)


def _expires(until: datetime) -> Any:
    return ReplayRecord._meta.get_field("expires_at").get_db_prep_save(until, connection)


def spend_clauses(vendor: str, with_replay: bool) -> tuple[str, str]:
    """(prefix, last column) that make a hot path's ``SELECT <columns> ...`` insert the ``jti``
    record in the same statement, the column saying whether it was inserted now (PostgreSQL: an
    ``INSERT`` in a CTE, ``ON CONFLICT DO NOTHING``); empty where ``read_spending`` inserts it
    first, by itself."""
    if not with_replay or vendor != "postgresql":
        return "", ""
    return f"WITH spent AS ({insert_sql(vendor)} RETURNING 1) ", ", (SELECT count(*) FROM spent)"


def read_spending(
    select: str, params: list[Any], key: str | None, until: datetime
) -> tuple[Any, bool]:
    """Run a hot path's read (built with ``spend_clauses``) and, with ``key``, spend the ``jti``
    record: the row (``None`` if none) and whether the record was inserted now (``True``
    without ``key``)."""
    from . import prepared

    if key is None:
        return prepared.execute(select, params).fetchone(), True
    if connection.vendor != "postgresql":
        spent = insert(key, until)
        return prepared.execute(select, params).fetchone(), spent
    row = prepared.execute(select, [key, _expires(until), *params]).fetchone()
    return row, row is not None and row[-1] == 1


@cache
def insert_sql(vendor: str) -> str:
    """``INSERT ... ON CONFLICT (key) DO NOTHING`` for the replay table, built once per
    process (and per database vendor) from the model's metadata; ``agentauth.fastpath`` runs
    the same statement inside its read."""
    meta = ReplayRecord._meta
    qn = connection.ops.quote_name
    key_col, until_col = (
        qn(str(getattr(meta.get_field(n), "column", n))) for n in ("key", "expires_at")
    )
    return (
        f"INSERT INTO {qn(meta.db_table)} ({key_col}, {until_col}) VALUES (%s, %s)"  # noqa: S608
        f" ON CONFLICT ({key_col}) DO NOTHING"
    )
