"""CPU and PostgreSQL round trips per warm execute (or registration), inside one Django process.

    .venv/bin/python -m benchmarks.profile_execute --db postgres://postgres@127.0.0.1:5432/agentauth_bench

Drops and recreates ``--db`` (loopback only), migrates it, creates one active autonomous agent
with a ``ticket.read`` grant and a ticket, then calls the WSGI application directly (no HTTP
server, no network client) ``--calls`` times with a freshly signed agent JWT each, after
``--warmup`` untimed calls. Reports the process CPU per call (``time.process_time``, signing
excluded), the round trips per call (``agentauth.testing.roundtrips``) and, with ``--profile``,
the top of a cProfile. ``--flow register`` measures ``POST /agent/register`` instead: the known
host registers a new autonomous agent asking for ``ticket.read`` (auto-approved, as in
``benchmarks/settings.py``), with a fresh agent key and host JWT per call, as ``load.py`` does.
The same machine-noise caveats as the load benchmark apply; compare runs made one after another.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_execute")
    parser.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/agentauth_bench")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--replay-guard", choices=("database", "cache"), default="database")
    parser.add_argument("--flow", choices=("execute", "register"), default="execute")
    parser.add_argument(
        "--capability",
        choices=("ticket.read", "bench.echo"),
        default="ticket.read",
        help="ticket.read reads the ticket through the ORM; bench.echo echoes the call, as the"
        " reference's ticket.read does (benchmarks/capabilities.py)",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    parser.add_argument("--sort", default="cumulative", help="pstats sort key")
    parser.add_argument("--top", type=int, default=60)
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 100_000 or not 0 <= args.warmup <= 10_000:
        parser.error("--calls in [1, 100000], --warmup in [0, 10000]")

    sys.path.insert(0, str(ROOT))
    from benchmarks import servers

    servers.recreate_database(args.db)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="benchmarks.settings",
        AGENTAUTH_BENCH_DATABASE_URL=args.db,
        AGENTAUTH_BENCH_CONN_MAX_AGE="60",
        AGENTAUTH_BENCH_REPLAY_GUARD=args.replay_guard,
        AGENTAUTH_BENCH_REDIS_URL=args.redis,
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    from agentauth.capabilities import registry
    from agentauth.client.identity import Keypair
    from agentauth.conf import app_settings
    from agentauth.models import AgentMode
    from agentauth.testing import agent_token, host_token, make_agent, make_host
    from agentauth.testing.roundtrips import count_round_trips
    from example_project.support.models import Ticket

    call_command("migrate", verbosity=0)
    if args.replay_guard == "cache":
        from django.core.cache import cache

        from agentauth import replay

        cache.clear()
        # An emptied cache refuses tokens signed before its memory began (agentauth.replay);
        # this benchmark's cache has been "up" for an hour.
        cache.set(replay.MEMORY_MARKER, time.time() - 3600, None)
    ticket = Ticket.objects.create(subject="Printer on fire", body="profile_execute")
    host, _ = make_host()
    agent, key = make_agent(host, mode=AgentMode.AUTONOMOUS, grants=[args.capability])
    app = get_wsgi_application()
    # The example handler's own work (an ORM read of the ticket) is timed apart: the reference
    # server's ticket.read only echoes its arguments, and the CPU target is about the
    # protocol's cost, not the project's.
    handler_cpu = [0.0]
    cap = registry.get(args.capability)
    inner = cap.resolve_handler() if cap else None
    if cap is not None and inner is not None:

        def timed(ctx: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return inner(ctx, **kwargs)
            finally:
                handler_cpu[0] += time.process_time() - start

        registry.unregister(cap.name)
        registry.register(dataclasses.replace(cap, handler=timed))
    if args.flow == "execute":
        body = {"capability": args.capability, "arguments": {"ticket_id": str(ticket.pk)}}
        path = "/api/auth/capability/execute"
    else:
        body = {"name": "bench-agent", "mode": "autonomous", "capabilities": [args.capability]}
        path = "/api/auth/agent/register"
    payload = json.dumps(body).encode()
    host_key = Keypair.generate()
    jwk = {**host_key.public_jwk, "kid": host_key.thumbprint}

    def new_token() -> str:
        if args.flow == "execute":
            return agent_token(agent, key, audience=app_settings.DEFAULT_LOCATION)
        return host_token(
            host_key, agent_public_key=Keypair.generate(), extra_claims={"host_public_key": jwk}
        )

    def environ(token: str) -> dict[str, Any]:
        return {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Bearer {token}",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(payload)),
            "wsgi.input": io.BytesIO(payload),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }

    statuses: dict[str, int] = {}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses[status] = statuses.get(status, 0) + 1

    def call(token: str) -> None:
        response = app(environ(token), start_response)
        b"".join(response)
        response.close()

    for _ in range(max(args.warmup, 1)):  # the first registration makes the host known
        call(new_token())
    tokens = [new_token() for _ in range(args.calls)]
    statuses.clear()
    handler_cpu[0] = 0.0
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    for token in tokens:
        call(token)
    if profiler:
        profiler.disable()
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    with count_round_trips() as trips:
        call(new_token())
    result = {
        "flow": args.flow,
        "replay_guard": args.replay_guard,
        "calls": args.calls,
        "statuses": statuses,
        "cpu_ms_per_call": round(1000 * cpu / args.calls, 3),
        "handler_cpu_ms_per_call": round(1000 * handler_cpu[0] / args.calls, 3),
        "cpu_ms_per_call_without_handler": round(1000 * (cpu - handler_cpu[0]) / args.calls, 3),
        "wall_ms_per_call": round(1000 * wall / args.calls, 3),
        "round_trips_per_call": trips.count,
        "sent": trips.sent,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "profiled": bool(profiler),
    }
    print(json.dumps(result, indent=1))
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats(args.sort)
        stats.print_stats(args.top)
        if os.environ.get("AGENTAUTH_PROFILE_DUMP"):
            stats.dump_stats(os.environ["AGENTAUTH_PROFILE_DUMP"])
        print(out.getvalue())
    return 0 if list(statuses) == ["200 OK"] else 1


if __name__ == "__main__":
    sys.exit(main())
