"""Wall time and query count of the lifecycle sweep over many lapsed agents.

    .venv/bin/python -m benchmarks.sweep --agents 100000 \\
        --db postgres://postgres@127.0.0.1:5432/agentauth_sweep_bench

Creates (drops first) the named PostgreSQL database, migrates it, bulk-creates N active agents
with one grant each whose sessions have lapsed, plus N/10 past their absolute lifetime, runs
``agentauth.sweep.sweep()`` once and again (the second must change nothing), and prints one
JSON line and a summary. Loopback only; bounded by N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import timedelta
from urllib.parse import urlsplit


def recreate_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/agentauth_sweep_bench")
    args = parser.parse_args(argv)
    if not 1 <= args.agents <= 1_000_000:
        parser.error("--agents must be between 1 and 1,000,000")

    recreate_database(args.db)
    os.environ["AGENTAUTH_EXAMPLE_DATABASE_URL"] = args.db
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only-not-a-secret")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from agentauth.models import Agent, AgentStatus, CapabilityGrant, Host
    from agentauth.sweep import sweep

    call_command("migrate", verbosity=0)
    now = timezone.now()
    started = time.perf_counter()
    host = Host.objects.create(
        name="bench", thumbprint="b" * 43, public_key={"x": "bench"}, status="active"
    )
    batch = 10_000
    for offset in range(0, args.agents, batch):
        agents = [
            Agent(
                id=f"agt_bench_{i:08d}",
                host=host,
                name=f"bench {i}",
                status=AgentStatus.ACTIVE,
                thumbprint=f"{i:043d}",
                created_at=now - timedelta(days=2),
                activated_at=now - timedelta(days=2),
                expires_at=now - timedelta(minutes=1),
                # Every tenth agent is past its absolute lifetime: revoked, not just expired.
                absolute_expires_at=now - timedelta(seconds=1) if i % 10 == 0 else None,
            )
            for i in range(offset, min(offset + batch, args.agents))
        ]
        Agent.objects.bulk_create(agents, batch_size=batch)
        CapabilityGrant.objects.bulk_create(
            [CapabilityGrant(agent=a, capability="ticket.read", status="active") for a in agents],
            batch_size=batch,
        )
    setup_seconds = time.perf_counter() - started

    with CaptureQueriesContext(connection) as first_queries:
        t0 = time.perf_counter()
        first = sweep()
        first_seconds = time.perf_counter() - t0
    with CaptureQueriesContext(connection) as second_queries:
        t0 = time.perf_counter()
        second = sweep()
        second_seconds = time.perf_counter() - t0

    expired = Agent.objects.filter(status=AgentStatus.EXPIRED).count()
    revoked = Agent.objects.filter(status=AgentStatus.REVOKED).count()
    result = {
        "benchmark": "sweep",
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "postgres": connection.cursor().connection.info.server_version,
        },
        "agents": args.agents,
        "setup_seconds": round(setup_seconds, 2),
        "sweep_seconds": round(first_seconds, 3),
        "sweep_queries": len(first_queries.captured_queries),
        "counts": first,
        "second_sweep_seconds": round(second_seconds, 3),
        "second_sweep_queries": len(second_queries.captured_queries),
        "second_counts": second,
        "expired": expired,
        "revoked": revoked,
    }
    print(json.dumps(result, sort_keys=True))
    ok = expired + revoked == args.agents and not any(
        second[k] for k in second if k.startswith(("agents", "grants"))
    )
    print(
        f"\nsweep of {args.agents:,} lapsed agents: {first_seconds:.2f} s, "
        f"{len(first_queries.captured_queries)} queries; expired {expired:,}, revoked {revoked:,}; "
        f"second sweep {second_seconds:.2f} s, {len(second_queries.captured_queries)} queries, "
        f"{'nothing left to do' if ok else 'UNEXPECTED CHANGES'}",
        file=sys.stderr,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
