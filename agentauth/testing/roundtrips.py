"""Count PostgreSQL round trips, BEGIN, COMMIT and SAVEPOINT included.

Django's ``CaptureQueriesContext`` sees only the statements Django sends through a cursor; psycopg
sends ``BEGIN`` itself and ``COMMIT`` through the connection, and each costs a round trip like
any query. This counts what the server answered instead: one ``ReadyForQuery`` per round trip,
from libpq's own protocol trace of the Django connection (PostgreSQL with psycopg 3 only).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import connections


@dataclass
class RoundTrips:
    count: int = 0
    #: What the client sent, one line per message (``Query "BEGIN"``, ``Sync``...).
    sent: list[str] = field(default_factory=list)


@contextmanager
def count_round_trips(using: str = "default") -> Iterator[RoundTrips]:
    """``with count_round_trips() as trips: ...``; then ``trips.count``."""
    from psycopg import pq

    conn = connections[using]
    if conn.vendor != "postgresql":
        raise RuntimeError("count_round_trips needs PostgreSQL")
    conn.ensure_connection()
    pgconn = conn.connection.pgconn
    result = RoundTrips()
    with tempfile.TemporaryFile() as trace:
        # libpq closes the stream it traces to when untraced: give it a duplicate descriptor.
        pgconn.trace(os.dup(trace.fileno()))
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield result
        finally:
            pgconn.untrace()
            trace.seek(0)
            for line in trace.read().decode("utf-8", "replace").splitlines():
                parts = line.split("\t")
                if len(parts) < 3:
                    continue
                if parts[0] == "B" and parts[2] == "ReadyForQuery":
                    result.count += 1
                elif parts[0] == "F":
                    result.sent.append(" ".join(parts[2:])[:200])
