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
from typing import Any

from django.db import connections


@dataclass
class RoundTrips:
    count: int = 0
    #: What the client sent, one line per message (``Query "BEGIN"``, ``Sync``...).
    sent: list[str] = field(default_factory=list)
    #: The connection's prepared statements when counting ended: name -> SQL.
    prepared: dict[str, str] = field(default_factory=dict)

    def statements(self) -> list[str]:
        """The first word of each statement sent, in order (``BEGIN``, ``WITH``...); a statement
        run from a prepared one is named by the prepared statement's SQL."""
        words: list[str] = []
        parsed = False
        for line in self.sent:
            kind, _, rest = line.partition(" ")
            quoted = rest.split('"')
            if kind == "Query" and len(quoted) > 1:
                words.append(quoted[1].split()[0].upper())
            elif kind == "Parse" and len(quoted) > 3:
                words.append(quoted[3].split()[0].upper())
                parsed = True
            elif kind == "Bind" and len(quoted) > 3:
                if not parsed:  # no Parse before it: a prepared statement, run again
                    words.append(self.prepared.get(quoted[3], "?").split()[0].upper())
                parsed = False
        return words


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
            result.prepared = _prepared_statements(conn.connection)
            trace.seek(0)
            for line in trace.read().decode("utf-8", "replace").splitlines():
                parts = line.split("\t")
                if len(parts) < 3:
                    continue
                if parts[0] == "B" and parts[2] == "ReadyForQuery":
                    result.count += 1
                elif parts[0] == "F":
                    result.sent.append(" ".join(parts[2:])[:200])


def _prepared_statements(raw: Any) -> dict[str, str]:
    """Protocol-level prepared statements of the psycopg connection (by psycopg's names)."""
    import psycopg

    try:
        with psycopg.ClientCursor(raw) as cursor:  # not Django's: nothing logged or counted
            cursor.execute("SELECT name, statement FROM pg_prepared_statements")
            return {str(name): str(sql) for name, sql in cursor.fetchall()}
    except psycopg.Error:  # e.g. a failed transaction: names stay unresolved ("?")
        return {}
