"""How few round trips a Django transaction can take on psycopg 3: the floor under the hot paths.

    .venv/bin/python -m benchmarks.roundtrip_floor [--db postgres://postgres@127.0.0.1:5432/agentauth_rt]

The execute hot path needs a transaction: the grant row stays locked while the handler runs and
the audit row commits with the call (docs/capabilities.md, spec §8.17). With the Redis replay
guard that transaction holds one read and one insert. This script runs such a transaction (a
``SELECT`` then an ``INSERT`` in ``transaction.atomic()``) three ways and prints the round trips
each took (``agentauth.testing.roundtrips``) and what the client sent:

- ``plain``: as the hot path does: ``BEGIN``, the read, the insert, ``COMMIT``;
- ``pipelined begin``: the read in psycopg's pipeline mode, hoping to send ``BEGIN`` with it;
- ``pipelined commit``: the insert and Django's ``COMMIT`` in pipeline mode.

Measured (psycopg 3.3, Django 5.2): 4, 4 and 5. psycopg waits for ``BEGIN``'s answer before it
sends anything else, even in pipeline mode; and after ``COMMIT`` Django's ``atomic`` turns
autocommit back on, which in pipeline mode is one more synchronisation. So 4 is the floor with
a transaction; 2 would mean running the handler outside one. Drops and recreates ``--db``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roundtrip_floor")
    parser.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/agentauth_rt")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from benchmarks import servers

    servers.recreate_database(args.db)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="benchmarks.settings", AGENTAUTH_BENCH_DATABASE_URL=args.db
    )
    import django

    django.setup()
    from django.db import connection, transaction

    from agentauth.testing.roundtrips import count_round_trips

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE probe (id serial PRIMARY KEY, v text)")

    def read_and_insert() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
            cursor.execute("INSERT INTO probe (v) VALUES ('x')")

    def plain() -> None:
        with transaction.atomic():
            read_and_insert()

    def pipelined_begin() -> None:
        with transaction.atomic():
            with connection.connection.pipeline(), connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO probe (v) VALUES ('x')")

    def pipelined_commit() -> None:
        atomic = transaction.atomic()
        atomic.__enter__()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        with connection.connection.pipeline():
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO probe (v) VALUES ('x')")
            atomic.__exit__(None, None, None)

    ways: list[tuple[str, Callable[[], None]]] = [
        ("plain", plain),
        ("pipelined begin", pipelined_begin),
        ("pipelined commit", pipelined_commit),
    ]
    for name, way in ways:
        way()  # warm
        with count_round_trips() as trips:
            way()
        syncs = sum(1 for line in trips.sent if line.startswith("Sync"))
        print(
            f"{name:17} {trips.count} round trips; statements {trips.statements()},"
            f" {syncs} pipeline syncs"
        )
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
