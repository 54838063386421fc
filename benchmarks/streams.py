"""Many concurrent SSE streams: gunicorn sync workers against uvicorn (ASGI) workers.

    .venv/bin/python -m benchmarks.streams --streams 200 --workers 2

Starts our server twice on the same fresh database (``--db``, dropped and recreated), once with
sync workers and once with uvicorn workers under gunicorn, and opens ``--streams`` concurrent
``ticket.watch`` streams against each (``--events`` events ``--interval`` seconds apart, an
``async def`` handler). A sync worker holds one open stream at a time, so streams queue behind
each other; an ASGI worker holds a coroutine per stream. Reported per server: streams completed
within ``--deadline`` seconds, wall time, and time to the first event (p50/p99) and to ``done``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from typing import Any

from agentauth.client.tokens import sign_agent_jwt
from benchmarks import servers
from benchmarks.load import SetupError, Workload, discover, percentile


def one_stream(
    workload: Workload, index: int, body: bytes, deadline: float, out: dict[str, Any]
) -> None:
    target = workload.target
    agent_id, key = workload.agents[index % len(workload.agents)]
    token = sign_agent_jwt(key, agent_id=agent_id, audience=target.execute_url)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(target.host, target.port, timeout=max(1.0, deadline))
    try:
        conn.request(
            "POST",
            target.execute_path,
            body=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        if resp.status != 200:
            out["error"] = f"HTTP {resp.status}"
            return
        events = 0
        while True:
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"event: data"):
                events += 1
                if events == 1:
                    out["first_s"] = time.perf_counter() - start
            elif line.startswith(b"event: done"):
                out["done_s"] = time.perf_counter() - start
                out["events"] = events
                break
            elif line.startswith(b"event: error"):
                out["error"] = "error event"
    except (OSError, http.client.HTTPException) as exc:
        out["error"] = type(exc).__name__
    finally:
        conn.close()


def run(workload: Workload, n: int, body: bytes, deadline: float) -> dict[str, Any]:
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    threads = [
        threading.Thread(
            target=one_stream, args=(workload, i, body, deadline, results[i]), daemon=True
        )
        for i in range(n)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - (time.perf_counter() - t0)) + 1)
    wall = time.perf_counter() - t0
    done = sorted(r["done_s"] for r in results if "done_s" in r)
    first = sorted(r["first_s"] for r in results if "first_s" in r)
    errors: dict[str, int] = {}
    for r in results:
        if "error" in r:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    return {
        "streams": n,
        "completed": len(done),
        "not_completed_within_deadline": n - len(done) - sum(errors.values()),
        "errors": errors,
        "wall_s": round(wall, 2),
        "first_event_p50_ms": percentile(first, 50),
        "first_event_p99_ms": percentile(first, 99),
        "done_p50_ms": percentile(done, 50),
        "done_max_ms": percentile(done, 100),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streams")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--deadline", type=float, default=30.0)
    parser.add_argument("--kinds", default="sync,asgi")
    parser.add_argument("--pool", type=int, default=10, help="pool size per ASGI worker")
    parser.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/agentauth_bench")
    args = parser.parse_args(argv)
    if not 1 <= args.streams <= 1000 or not 1 <= args.events <= 20 or not 0 <= args.interval <= 5:
        parser.error("--streams in [1, 1000], --events in [1, 20], --interval in [0, 5]")
    if not 1 <= args.deadline <= 120:
        parser.error("--deadline in [1, 120]")
    servers.recreate_database(args.db)
    results: dict[str, Any] = {"config": vars(args)}
    ticket_id = None
    for kind in args.kinds.split(","):
        port = servers.free_port()
        # Under ASGI every request runs in its own thread: persistent connections would pile up
        # (one per request); the psycopg pool hands them back instead.
        if kind == "asgi":
            env = servers.ours_env(port, args.db, 0, "database", "", pool=args.pool)
        else:
            env = servers.ours_env(port, args.db, 60, "database", "")
        if ticket_id is None:
            ticket_id = servers.prepare_ours(env)
        proc = servers.start_ours(port, env, args.workers, kind)
        try:
            target = discover(f"http://127.0.0.1:{port}", timeout=60)
            arguments = {"ticket_id": ticket_id, "count": 1, "interval": 0}
            workload = Workload(
                target, concurrency=4, agents=16, capability="ticket.watch", arguments=arguments
            )
            workload.prepare()
            body = json.dumps(
                {
                    "capability": "ticket.watch",
                    "arguments": {
                        "ticket_id": ticket_id,
                        "count": args.events,
                        "interval": args.interval,
                    },
                }
            ).encode()
            results[kind] = run(workload, args.streams, body, args.deadline)
            print(f"{kind}: {results[kind]}", file=sys.stderr, flush=True)
        except SetupError as exc:
            print(f"setup failed for {kind}: {exc}\n{proc.tail()}", file=sys.stderr)
            return 2
        finally:
            proc.stop()
    print(json.dumps(results, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
