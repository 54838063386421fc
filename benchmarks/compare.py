"""Ours against the TypeScript reference, side by side in one run: ``make bench``.

    .venv/bin/python -m benchmarks.compare            # reference (memory, PostgreSQL) vs ours

Starts every server at once (idle servers cost nothing), prepares each with the same
``benchmarks.load`` workload, then measures them in turns: ``--rounds`` rounds of the execute
phase, each round visiting every server for ``--duration`` seconds in a rotated order, then the
register rounds the same way. A disturbance on the shared machine therefore falls on all servers
alike, and the ratios printed at the end are what to compare across machines.

Servers (``--servers``, comma separated):

- ``ref-memory``, ``ref-postgres``: the reference server (Better Auth + ``@better-auth/agent-auth``)
  from a copy of ``shared/peer/reference-server`` (``--reference``), with its memory store or
  with PostgreSQL (``--ref-db``, dropped and recreated).
- ``ours:N``: gunicorn with N sync workers, PostgreSQL (``--db``, dropped and recreated),
  ``CONN_MAX_AGE=60``, the database replay guard; ``ours-cache:N`` the same with the Redis replay
  guard (``--redis``); ``ours-gthread:N`` N gthread workers of 4 threads (keep-alive
  connections); ``ours-asgi:N`` N uvicorn workers under gunicorn (psycopg pool of 10
  connections per worker instead of persistent connections).

What each server executes: the reference's ``ticket.read``, which echoes the call; ours by
default ``bench.echo`` (``benchmarks/capabilities.py``), the same echo, so that both do the same
work behind the protocol. A ``@capability`` suffix chooses another: ``ours:2@ticket.read`` runs
the example project's ``ticket.read``, which reads the ticket through the ORM.

Exit status: 0, 1 if a server failed more than 1% of its requests, 2 if the setup failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import servers
from benchmarks.load import SetupError, Workload, busy_pct, discover, percentile

DEFAULT_SERVERS = "ref-memory,ref-postgres,ours:2"
#: What each kind of server executes unless the spec says ``@capability``.
DEFAULT_CAPABILITY = {"ref": "ticket.read", "ours": "bench.echo"}
TARGETS = (
    # (label, ours, reference, minimum ratio of ours / reference, higher is better)
    ("execute/s vs reference (memory)", "execute", "rps", "ref-memory", 1.0),
    ("execute/s vs reference (PostgreSQL)", "execute", "rps", "ref-postgres", 2.0),
    ("register/s vs reference (PostgreSQL)", "register", "rps", "ref-postgres", 1.5),
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--servers", default=DEFAULT_SERVERS)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per server per round")
    parser.add_argument("--rounds", type=int, default=3, help="execute rounds (register: half)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--agents", type=int, default=64)
    parser.add_argument("--phases", default="execute,register")
    parser.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/agentauth_bench")
    parser.add_argument(
        "--ref-db", default="postgres://postgres@127.0.0.1:5432/agentauth_bench_ref"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9", help="for ours-cache")
    parser.add_argument("--reference", help="the reference-server folder (copied before use)")
    parser.add_argument("--json", dest="json_out", help="also write the full results here")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 60 or not 1 <= args.rounds <= 10:
        parser.error("--duration in (0, 60], --rounds in [1, 10]")
    if not 1 <= args.concurrency <= 256:
        parser.error("--concurrency in [1, 256]")
    try:
        servers.check_database_url(args.db)
        servers.check_database_url(args.ref_db)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def start_all(args: argparse.Namespace, tmp: Path) -> dict[str, tuple[servers.Process, str]]:
    """name -> (process, base URL), every server started and its databases fresh."""
    specs = [s.strip() for s in args.servers.split(",") if s.strip()]
    started: dict[str, tuple[servers.Process, str]] = {}
    ours_ready = ref_copy = ref_db_ready = None
    for spec in specs:
        kind, _, count = spec.partition("@")[0].partition(":")
        port = servers.free_port()
        if kind in ("ref-memory", "ref-postgres"):
            if ref_copy is None:
                ref_copy = servers.copy_reference(servers.find_reference(args.reference), tmp)
            db = None
            if kind == "ref-postgres":
                if ref_db_ready is None:
                    servers.recreate_database(args.ref_db)
                    ref_db_ready = True
                db = args.ref_db
            proc = servers.start_reference(ref_copy, port, db)
        elif kind in ("ours", "ours-cache", "ours-asgi", "ours-gthread"):
            guard = "cache" if kind == "ours-cache" else "database"
            if kind == "ours-asgi":
                # A thread per request under ASGI: pooled connections, not persistent ones.
                env = servers.ours_env(port, args.db, 0, guard, args.redis, pool=10)
            else:
                env = servers.ours_env(port, args.db, 60, guard, args.redis)
            if ours_ready is None:
                servers.recreate_database(args.db)
                ours_ready = servers.prepare_ours(env)
            if kind == "ours-cache":
                _flush_redis(args.redis)
                servers.mark_cache_up(env)
            workers = int(count or 2)
            worker_class = {"ours-asgi": "asgi", "ours-gthread": "gthread"}.get(kind, "sync")
            proc = servers.start_ours(port, env, workers, worker_class)
        else:
            raise SetupError(f"unknown server {spec!r}")
        started[spec] = (proc, f"http://127.0.0.1:{port}")
    if ours_ready is not None:
        args.ticket_id = ours_ready
    return started


def capability_of(spec: str) -> str:
    """``ours:2@ticket.read`` -> ``ticket.read``; without a suffix, the kind's default."""
    _, _, capability = spec.partition("@")
    return capability or DEFAULT_CAPABILITY["ref" if spec.startswith("ref") else "ours"]


def _flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.ticket_id = "1"

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    t_start = time.perf_counter()
    machine = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "busy_pct_before": busy_pct(2.0),
        "python": platform.python_version(),
        "django": version_of("django"),
        "gunicorn": version_of("gunicorn"),
    }
    print(f"machine: {machine}", file=sys.stderr, flush=True)
    results: dict[str, Any] = {"machine": machine, "config": vars(args).copy(), "servers": {}}
    procs: dict[str, tuple[servers.Process, str]] = {}
    workloads: dict[str, Workload] = {}
    with tempfile.TemporaryDirectory(prefix="agentauth-bench-") as tmp:
        try:
            try:
                procs = start_all(args, Path(tmp))
                for name, (_proc, url) in procs.items():
                    target = discover(url, timeout=60)
                    workloads[name] = Workload(
                        target,
                        capability=capability_of(name),
                        concurrency=args.concurrency,
                        agents=args.agents,
                        arguments={"ticket_id": args.ticket_id},
                    )
                    workloads[name].prepare()
                    print(f"ready: {name} at {url}", file=sys.stderr, flush=True)
                if any(n.startswith("ours") for n in procs):
                    servers.analyze(args.db)
                if "ref-postgres" in procs:
                    servers.analyze(args.ref_db)
            except (SetupError, servers.SetupError, OSError, ValueError) as exc:
                print(f"setup failed: {exc}", file=sys.stderr)
                for name, (proc, _) in procs.items():
                    print(f"--- {name} log tail ---\n{proc.tail()}", file=sys.stderr)
                return 2
            raw = measure(args, procs, workloads)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            for proc, _ in procs.values():
                proc.stop()
    results["servers"] = raw
    results["ratios"] = ratios(raw)
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    report(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, separators=(",", ":")))
    failed = [
        n
        for n, r in raw.items()
        for p in r.values()
        if isinstance(p, dict) and p["error_rate"] > 0.01
    ]
    return 1 if failed else 0


def measure(
    args: argparse.Namespace,
    procs: dict[str, tuple[servers.Process, str]],
    workloads: dict[str, Workload],
) -> dict[str, dict[str, Any]]:
    """Interleaved rounds; per server and phase the merged figures of all its rounds."""
    names = list(procs)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for phase in args.phases.split(","):
        rounds = args.rounds if phase == "execute" else max(1, (args.rounds + 1) // 2)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                res = workloads[name].run(phase, args.duration, procs[name][0].pid)
                runs.setdefault((name, phase), []).append(res)
                print(
                    f"  {phase:8} round {r + 1}/{rounds} {name:14} {res['rps']:7.1f}/s "
                    f"p99 {res['p99_ms']:7.1f} ms  load {res['loadavg_1m'][1]:.2f}"
                    + (f"  errors {res['errors']}" if res["errors"] else ""),
                    file=sys.stderr,
                    flush=True,
                )
    out: dict[str, dict[str, Any]] = {}
    for (name, phase), parts in runs.items():
        lat = sorted(x for p in parts for x in p["latencies"])
        ok = sum(p["ok"] for p in parts)
        wall = sum(p["wall_s"] for p in parts)
        requests = sum(p["requests"] for p in parts)
        server_cpu = [p["server_cpu_s"] for p in parts if "server_cpu_s" in p]
        errors: dict[str, int] = {}
        for p in parts:
            for k, v in p["errors"].items():
                errors[k] = errors.get(k, 0) + v
        out.setdefault(name, {})[phase] = {
            "ok": ok,
            "requests": requests,
            "errors": errors,
            "error_samples": [s for p in parts for s in p["error_samples"]][:3],
            "error_rate": round((requests - ok) / requests, 4) if requests else 0.0,
            "rps": round(ok / wall, 1) if wall else 0.0,
            "rps_per_round": [p["rps"] for p in parts],
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
            "server_cpu_ms_per_ok": round(1000 * sum(server_cpu) / ok, 2) if ok else None,
            "postgres_cpu_ms_per_ok": round(1000 * sum(p["postgres_cpu_s"] for p in parts) / ok, 2)
            if ok
            else None,
            "machine_busy_pct": round(sum(p["machine_busy_pct"] for p in parts) / len(parts), 1),
            "loadavg_1m": [p["loadavg_1m"][1] for p in parts],
        }
    return out


def ratios(raw: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets' ratios for every configuration of ours in the run, each against the
    reference measured in the same run."""
    rows: list[dict[str, Any]] = []
    for ours in (n for n in raw if n.startswith("ours")):
        for label, phase, metric, ref, minimum in TARGETS:
            if ref in raw and phase in raw[ref] and phase in raw[ours]:
                value = raw[ours][phase][metric] / max(raw[ref][phase][metric], 1e-9)
                rows.append(
                    {
                        "server": ours,
                        "target": label,
                        "ratio": round(value, 2),
                        "min": minimum,
                        "met": value >= minimum,
                    }
                )
        for ref in ("ref-memory", "ref-postgres"):
            if ref in raw and "execute" in raw[ref] and "execute" in raw[ours]:
                mine, theirs = raw[ours]["execute"]["p99_ms"], raw[ref]["execute"]["p99_ms"]
                rows.append(
                    {
                        "server": ours,
                        "target": f"execute p99 <= reference ({ref[4:]})",
                        "ratio": round(mine / max(theirs, 1e-9), 2),
                        "max": 1.0,
                        "met": mine <= theirs,
                    }
                )
    return rows


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"\nmachine: {m['nproc']} cores ({m['cpu_model']}), load average before "
        f"{m['loadavg_before']}, {m['busy_pct_before']}% busy before; Python {m['python']}, "
        f"Django {m['django']}, gunicorn {m['gunicorn']}; {results['total_s']} s in all"
    )
    print(
        f"\n{'server':14} {'phase':9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'srv ms':>7} {'pg ms':>6} {'errors':>7}  per round / load"
    )
    for name, phases in results["servers"].items():
        for phase, r in phases.items():
            print(
                f"{name:14} {phase:9} {r['rps']:8.1f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
                f"{r['p99_ms']:8.1f} {r['server_cpu_ms_per_ok'] or 0:7.2f} "
                f"{r['postgres_cpu_ms_per_ok'] or 0:6.2f} {r['requests'] - r['ok']:7d}  "
                f"{r['rps_per_round']} / {r['loadavg_1m']}"
            )
    print(
        "\n(srv ms / pg ms: CPU of the server's process tree / of PostgreSQL per successful"
        " request; PostgreSQL's includes anything else using it at the time)"
    )
    for row in results["ratios"]:
        bound = f">= {row['min']}" if "min" in row else f"<= {row['max']}"
        verdict = "met" if row["met"] else "NOT MET"
        print(
            f"  {row['server']:14} {row['target']:42} {row['ratio']:6.2f}  (target {bound})  "
            f"{verdict}"
        )


if __name__ == "__main__":
    sys.exit(main())
