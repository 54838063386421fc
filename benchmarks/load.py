"""Load benchmark of the register and execute paths against a real server process.

    .venv/bin/python -m benchmarks.load --duration 15 --concurrency 8

Creates a fresh PostgreSQL database, migrates it, seeds a ticket, starts gunicorn (sync workers)
on a free loopback port, then runs two timed phases with concurrent client threads that sign a
fresh JWT for every request:

- register: each thread owns one host key (registered once, untimed) and registers new
  autonomous agents asking for ``ticket.read`` (auto-approved by the example's policy);
- execute: each thread drives its own active agents and executes ``ticket.read``.

Prints one JSON line, then a readable table. Traffic goes to 127.0.0.1 only; every loop is
bounded by ``--duration``; gunicorn is always stopped. Exits 1 if more than 1% of requests fail.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def prepare_database(url: str, env: dict[str, str]) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=ROOT)
    seed = "from example_project.support.models import Ticket; Ticket.objects.create(subject='b')"
    subprocess.run([*manage, "shell", "-c", seed], env=env, check=True, cwd=ROOT)


class Server:
    def __init__(self, port: int, env: dict[str, str], workers: int) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="agentauth-bench-", suffix=".log")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "example_project.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                "1",
                "--access-logfile",
                "/dev/null",
            ],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/.well-known/agent-configuration")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer:\n" + self.tail())

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


class Phase:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()

    def record(self, seconds: float, status: int, ok: bool) -> None:
        with self.lock:
            if ok:
                self.latencies.append(seconds)
            else:
                self.errors[str(status)] = self.errors.get(str(status), 0) + 1

    def summary(self, wall: float) -> dict[str, Any]:
        lat = sorted(self.latencies)
        failed = sum(self.errors.values())

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else 0.0

        return {
            "requests": len(lat) + failed,
            "ok": len(lat),
            "errors": self.errors,
            "rps": round(len(lat) / wall, 1),
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
        }


def post(conn: http.client.HTTPConnection, path: str, token: str, body: Any) -> tuple[int, Any]:
    conn.request(
        "POST",
        path,
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def run_phase(threads: int, duration: float, work: Any) -> tuple[float, float]:
    stop = time.monotonic() + duration
    started, cpu0 = time.perf_counter(), time.process_time()
    pool = [threading.Thread(target=work, args=(i, stop)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(duration + 30)
    return time.perf_counter() - started, time.process_time() - cpu0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="agentauth load benchmark (loopback only)")
    parser.add_argument("--duration", type=float, default=15, help="seconds per phase (≤ 120)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/agentauth_bench")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 120 or not 0 < args.concurrency <= 64:
        parser.error("duration must be in (0, 120] and concurrency in (0, 64]")

    sys.path.insert(0, str(ROOT))
    from agentauth.client.identity import Keypair
    from agentauth.client.tokens import sign_agent_jwt, sign_host_jwt

    port = free_port()
    issuer = f"http://127.0.0.1:{port}/api/auth"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        "AGENTAUTH_EXAMPLE_DATABASE_URL": args.db,
        "AGENTAUTH_ISSUER": issuer,
        "PYTHONPATH": str(ROOT),
    }
    prepare_database(args.db, env)
    server = Server(port, env, args.workers)
    try:
        server.wait_ready(port)
        execute_url = f"{issuer}/capability/execute"
        hosts = [Keypair.generate() for _ in range(args.concurrency)]
        agents: list[list[tuple[str, Keypair]]] = [[] for _ in range(args.concurrency)]

        def register(conn: http.client.HTTPConnection, i: int) -> tuple[int, Any]:
            key = Keypair.generate()
            token = sign_host_jwt(hosts[i], audience=issuer, agent_public_key=key)
            status, body = post(
                conn,
                "/api/auth/agent/register",
                token,
                {"name": "bench", "mode": "autonomous", "capabilities": ["ticket.read"]},
            )
            if status == 200 and body.get("status") == "active":
                agents[i].append((body["agent_id"], key))
            return status, body

        # Untimed warm-up: every host becomes known with its first registration.
        for i in range(args.concurrency):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            status, body = register(conn, i)
            if status != 200:
                raise RuntimeError(f"warm-up registration failed: {status} {body}")

        reg = Phase()

        def register_worker(i: int, stop: float) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    status, body = register(conn, i)
                    ok = status == 200 and body.get("status") == "active"
                except (OSError, http.client.HTTPException, ValueError):
                    status, ok = 0, False
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                reg.record(time.perf_counter() - t0, status, ok)

        reg_wall, reg_cpu = run_phase(args.concurrency, args.duration, register_worker)

        exe = Phase()

        def execute_worker(i: int, stop: float) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine = agents[i] or agents[0]
            n = 0
            while time.monotonic() < stop:
                agent_id, key = mine[n % len(mine)]
                n += 1
                token = sign_agent_jwt(
                    key, agent_id=agent_id, audience=execute_url, capabilities=["ticket.read"]
                )
                t0 = time.perf_counter()
                try:
                    status, body = post(
                        conn,
                        "/api/auth/capability/execute",
                        token,
                        {"capability": "ticket.read", "arguments": {"ticket_id": "1"}},
                    )
                    ok = status == 200 and "data" in body
                except (OSError, http.client.HTTPException, ValueError):
                    status, ok = 0, False
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                exe.record(time.perf_counter() - t0, status, ok)

        exe_wall, exe_cpu = run_phase(args.concurrency, args.duration, execute_worker)
    except BaseException:
        print(server.tail(), file=sys.stderr)
        raise
    finally:
        server.stop()

    result = {
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "note": "client and server share the machine",
        },
        "config": {
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "gunicorn_workers": args.workers,
            "database": "postgresql",
            "replay_guard": "database",
        },
        "register": {**reg.summary(reg_wall), "client_cpu_s": round(reg_cpu, 2)},
        "execute": {**exe.summary(exe_wall), "client_cpu_s": round(exe_cpu, 2)},
    }
    print(json.dumps(result, sort_keys=True))
    print(
        f"\n{'phase':<10}{'ok':>8}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    )
    for name in ("register", "execute"):
        r = result[name]
        print(
            f"{name:<10}{r['ok']:>8}{sum(r['errors'].values()):>8}{r['rps']:>9}"
            f"{r['p50_ms']:>9}{r['p95_ms']:>9}{r['p99_ms']:>9}"
        )
    total = sum(result[p]["requests"] for p in ("register", "execute"))
    failed = sum(sum(result[p]["errors"].values()) for p in ("register", "execute"))
    return 1 if total == 0 or failed / total > 0.01 else 0


if __name__ == "__main__":
    sys.exit(main())
