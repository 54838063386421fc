"""Drive any Agent Auth server with the register/execute workload and measure it.

    .venv/bin/python -m benchmarks.load --base-url http://127.0.0.1:4100 --duration 10

The server only has to be an Agent Auth server on loopback with an autonomous capability that is
granted without a person (the reference's ``ticket.read``; ours with
``AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["ticket.read"]``, as in ``benchmarks.settings``). Everything
else comes from ``/.well-known/agent-configuration``:

1. Warm-up, untimed: each client thread registers its own host key plus a few agents.
2. ``register``: N threads for D seconds register autonomous agents asking for the capability,
   each with a fresh agent key and a freshly signed host JWT. Success: 200 ``status: active``.
3. ``execute``: K agents are registered (untimed); N threads for D seconds execute the capability
   with a freshly signed agent JWT per call (``aud`` = ``default_location``), thread *i* using
   agents *i*, *i+N*, ... Success: 200 with ``data``.
4. ``discovery`` (only when asked for): N threads GET the discovery document. No key, no
   database: the floor of the server's stack, to tell its own cost from the protocol work's.

The same code is imported by ``benchmarks.compare``, which runs several servers in one run.
Traffic goes to loopback only; every loop is bounded by time and by count.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agentauth.client.identity import Keypair  # noqa: E402
from agentauth.client.tokens import sign_agent_jwt, sign_host_jwt  # noqa: E402

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_DURATION_S = 120.0
MAX_CONCURRENCY = 256
MAX_AGENTS = 2000
MAX_REQUESTS_PER_THREAD = 200_000
SOCKET_TIMEOUT_S = 30.0
ERROR_SAMPLES = 5
WARMUP_REGISTRATIONS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class SetupError(RuntimeError):
    pass


# --- the server, as its discovery document describes it ------------------------------------------


DISCOVERY_PATH = "/.well-known/agent-configuration"


@dataclass(frozen=True)
class Target:
    base_url: str
    host: str
    port: int
    issuer: str
    register_path: str
    execute_url: str
    execute_path: str


def _loopback(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_NAMES or not parts.port:
        raise SetupError(f"{url!r} is not an http://127.0.0.1:<port>/ URL; loopback only")
    return parts.hostname, parts.port, parts.path or "/"


def discover(base_url: str, timeout: float = 30.0) -> Target:
    """Read the discovery document, waiting up to ``timeout`` for the server to answer."""
    host, port, _ = _loopback(base_url)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", DISCOVERY_PATH)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200:
                doc = json.loads(body)
                break
            last = f"HTTP {resp.status}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = repr(exc)
        finally:
            conn.close()
        time.sleep(0.2)
    else:
        raise SetupError(f"{base_url} did not serve its discovery document ({last})")
    issuer = str(doc["issuer"])
    register = str(doc["endpoints"]["register"])
    if not register.startswith("http"):
        register = issuer + register
    execute = str(doc["default_location"])
    for url in (register, execute):
        if _loopback(url)[:2] != (host, port):
            raise SetupError(f"the server advertises {url!r}, not {base_url}")
    return Target(
        base_url=base_url,
        host=host,
        port=port,
        issuer=issuer,
        register_path=_loopback(register)[2],
        execute_url=execute,
        execute_path=_loopback(execute)[2],
    )


class Client:
    """One keep-alive connection, reopened when the server closes it (gunicorn sync does)."""

    def __init__(self, target: Target) -> None:
        self.conn = http.client.HTTPConnection(target.host, target.port, timeout=SOCKET_TIMEOUT_S)
        self.new_connections = 0

    def post(self, path: str, token: str, payload: bytes) -> tuple[int, Any]:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        return self.request("POST", path, payload, headers)

    def request(
        self, method: str, path: str, payload: bytes | None, headers: dict[str, str]
    ) -> tuple[int, Any]:
        if self.conn.sock is None:
            self.new_connections += 1
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()
        try:
            body = json.loads(data) if data else None
        except ValueError:
            body = data[:200].decode("utf-8", "replace")
        return resp.status, body

    def close(self) -> None:
        self.conn.close()


# --- CPU accounting (Linux /proc, read only) -----------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str, float, float]]:
    """pid -> (ppid, comm, own CPU s, CPU s of reaped children)."""
    table: dict[int, tuple[int, str, float, float]] = {}
    try:
        entries = [e for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return table
    for entry in entries:
        try:
            raw = (entry / "stat").read_text()
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            rest = raw[raw.rindex(")") + 2 :].split()
            table[int(entry.name)] = (
                int(rest[1]),
                comm,
                (int(rest[11]) + int(rest[12])) / CLK_TCK,
                (int(rest[13]) + int(rest[14])) / CLK_TCK,
            )
        except (OSError, ValueError, IndexError):
            continue
    return table


def _tree_cpu(table: dict[int, tuple[int, str, float, float]], root: int) -> float:
    """CPU of ``root`` and all its descendants, live or reaped."""
    if root not in table:
        return 0.0
    children: dict[int, list[int]] = {}
    for pid, row in table.items():
        children.setdefault(row[0], []).append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += table[pid][2] + table[pid][3]
        stack.extend(children.get(pid, ()))
    return total


def _postgres_cpu(table: dict[int, tuple[int, str, float, float]]) -> float:
    roots = [
        pid
        for pid, row in table.items()
        if row[1] == "postgres" and (row[0] not in table or table[row[0]][1] != "postgres")
    ]
    return sum(_tree_cpu(table, pid) for pid in roots)


def machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, idle / CLK_TCK


def busy_pct(seconds: float = 2.0) -> float:
    """Share of the machine busy over the next ``seconds``."""
    b0, i0 = machine_cpu()
    time.sleep(seconds)
    b1, i1 = machine_cpu()
    return round(100 * (b1 - b0) / max((b1 - b0) + (i1 - i0), 1e-9), 1)


@dataclass
class CpuSnapshot:
    wall: float
    client: float
    server: float | None
    postgres: float
    machine: tuple[float, float]

    @classmethod
    def take(cls, server_pid: int | None) -> CpuSnapshot:
        table = _proc_table()
        return cls(
            wall=time.perf_counter(),
            client=time.process_time(),
            server=_tree_cpu(table, server_pid) if server_pid else None,
            postgres=_postgres_cpu(table),
            machine=machine_cpu(),
        )

    def since(self, start: CpuSnapshot, ok: int) -> dict[str, Any]:
        wall = self.wall - start.wall
        cores = os.cpu_count() or 1
        busy = self.machine[0] - start.machine[0]
        idle = self.machine[1] - start.machine[1]
        out: dict[str, Any] = {
            "client_cpu_s": round(self.client - start.client, 2),
            "postgres_cpu_s": round(self.postgres - start.postgres, 2),
            "machine_busy_pct": round(100 * busy / max(busy + idle, 1e-9), 1),
        }
        if self.server is not None and start.server is not None:
            server = self.server - start.server
            out["server_cpu_s"] = round(server, 2)
            out["server_cpu_ms_per_ok"] = round(1000 * server / ok, 2) if ok else None
            other = busy - out["client_cpu_s"] - server - out["postgres_cpu_s"]
            out["background_pct_of_machine"] = round(100 * other / max(wall * cores, 1e-9), 1)
        return out


# --- phases --------------------------------------------------------------------------------------


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    requests: int = 0
    new_connections: int = 0

    def error(self, key: str, detail: Any) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1
        if len(self.samples) < ERROR_SAMPLES:
            self.samples.append(f"{key}: {str(detail)[:300]}")

    def merge(self, other: Tally) -> None:
        self.latencies.extend(other.latencies)
        for key, count in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + count
        self.samples.extend(other.samples[: max(0, ERROR_SAMPLES - len(self.samples))])
        self.requests += other.requests
        self.new_connections += other.new_connections


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1] * 1000, 2)


def summarize(tally: Tally, wall: float) -> dict[str, Any]:
    lat = sorted(tally.latencies)
    ok = len(lat)
    return {
        "requests": tally.requests,
        "ok": ok,
        "errors": dict(sorted(tally.errors.items())),
        "error_samples": tally.samples,
        "error_rate": round((tally.requests - ok) / tally.requests, 4) if tally.requests else 0.0,
        "wall_s": round(wall, 2),
        "rps": round(ok / wall, 1) if wall > 0 else 0.0,
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": percentile(lat, 100),
        "new_connections": tally.new_connections,
    }


def _run_threads(
    concurrency: int, duration: float, worker: Callable[[int, float, Tally], None]
) -> tuple[Tally, float]:
    tallies = [Tally() for _ in range(concurrency)]
    start = time.perf_counter()
    deadline = time.monotonic() + duration
    threads = [
        threading.Thread(target=worker, args=(i, deadline, tallies[i]), daemon=True)
        for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    hard_deadline = deadline + SOCKET_TIMEOUT_S + 5
    for t in threads:
        while t.is_alive() and time.monotonic() < hard_deadline:
            t.join(0.25)
    wall = time.perf_counter() - start
    if any(t.is_alive() for t in threads):
        raise SetupError("client threads did not finish in time")
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    return total, wall


class Workload:
    """Hosts, agents and request bodies for one server; phases can be run repeatedly."""

    def __init__(
        self,
        target: Target,
        *,
        concurrency: int,
        agents: int,
        capability: str = "ticket.read",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.target = target
        self.concurrency = concurrency
        self.capability = capability
        self.register_payload = json.dumps(
            {"name": "bench-agent", "mode": "autonomous", "capabilities": [capability]}
        ).encode()
        self.execute_payload = json.dumps(
            {"capability": capability, "arguments": arguments or {"ticket_id": "1"}}
        ).encode()
        self.hosts = [Keypair.generate() for _ in range(concurrency)]
        self.n_agents = agents
        self.agents: list[tuple[str, Keypair]] = []

    def _register(self, client: Client, host: Keypair) -> tuple[int, Any, Keypair]:
        agent = Keypair.generate()
        # ``kid`` inside the host JWK: the reference server finds known hosts by it.
        jwk = {**host.public_jwk, "kid": host.thumbprint}
        token = sign_host_jwt(
            host,
            audience=self.target.issuer,
            agent_public_key=agent,
            extra_claims={"host_public_key": jwk},
        )
        status, body = client.post(self.target.register_path, token, self.register_payload)
        return status, body, agent

    @staticmethod
    def _registered(status: int, body: Any) -> bool:
        return status == 200 and isinstance(body, dict) and body.get("status") == "active"

    def prepare(self) -> None:
        """Untimed: every host registers (concurrently, so every worker warms), then K agents."""
        failures: list[str] = []
        registered: list[list[tuple[str, Keypair]]] = [[] for _ in self.hosts]
        per_host = max(1 + WARMUP_REGISTRATIONS, math.ceil(self.n_agents / len(self.hosts)))

        def warm(i: int) -> None:
            client = Client(self.target)
            try:
                for _ in range(per_host):
                    status, body, key = self._register(client, self.hosts[i])
                    if not self._registered(status, body):
                        failures.append(f"HTTP {status} {body}")
                        return
                    registered[i].append((str(body["agent_id"]), key))
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
            finally:
                client.close()

        threads = [
            threading.Thread(target=warm, args=(i,), daemon=True) for i in range(len(self.hosts))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SOCKET_TIMEOUT_S * per_host)
        if failures or any(t.is_alive() for t in threads):
            raise SetupError(f"registrations before timing failed: {failures[:3]}")
        # Interleave hosts so that consecutive agents belong to different hosts.
        agents = [row[n] for n in range(per_host) for row in registered if n < len(row)]
        self.agents = agents[: self.n_agents]
        # One execution per agent, untimed: first-use work (caches, plans) is not measured.
        client = Client(self.target)
        try:
            for agent_id, key in self.agents[: self.concurrency * 2]:
                status, body = self._execute(client, agent_id, key)
                if status != 200:
                    raise SetupError(f"warm-up execution failed: HTTP {status} {body}")
        finally:
            client.close()

    def _execute(self, client: Client, agent_id: str, key: Keypair) -> tuple[int, Any]:
        token = sign_agent_jwt(key, agent_id=agent_id, audience=self.target.execute_url)
        return client.post(self.target.execute_path, token, self.execute_payload)

    def run(self, phase: str, duration: float, server_pid: int | None = None) -> dict[str, Any]:
        """One timed phase (``register``, ``execute`` or ``discovery``); a dict of figures."""
        target = self.target

        def register_worker(i: int, deadline: float, tally: Tally) -> None:
            client = Client(target)
            try:
                while tally.requests < MAX_REQUESTS_PER_THREAD and time.monotonic() < deadline:
                    t0 = time.perf_counter()
                    tally.requests += 1
                    try:
                        status, body, _ = self._register(client, self.hosts[i])
                    except (OSError, http.client.HTTPException) as exc:
                        tally.error(f"exception:{type(exc).__name__}", exc)
                        continue
                    if self._registered(status, body):
                        tally.latencies.append(time.perf_counter() - t0)
                    else:
                        tally.error(str(status) if status != 200 else "200:not_active", body)
            finally:
                tally.new_connections = client.new_connections
                client.close()

        def execute_worker(i: int, deadline: float, tally: Tally) -> None:
            client = Client(target)
            n = 0
            try:
                while tally.requests < MAX_REQUESTS_PER_THREAD and time.monotonic() < deadline:
                    agent_id, key = self.agents[(i + n * self.concurrency) % len(self.agents)]
                    n += 1
                    # Signing is part of the client's cost, as for a real agent; it is ~0.1 ms.
                    t0 = time.perf_counter()
                    tally.requests += 1
                    try:
                        status, body = self._execute(client, agent_id, key)
                    except (OSError, http.client.HTTPException) as exc:
                        tally.error(f"exception:{type(exc).__name__}", exc)
                        continue
                    if status == 200 and isinstance(body, dict) and "data" in body:
                        tally.latencies.append(time.perf_counter() - t0)
                    else:
                        tally.error(str(status) if status != 200 else "200:no_data", body)
            finally:
                tally.new_connections = client.new_connections
                client.close()

        def discovery_worker(i: int, deadline: float, tally: Tally) -> None:
            # The floor: no key, no database, a cached document; what the stack itself costs.
            client = Client(target)
            try:
                while tally.requests < MAX_REQUESTS_PER_THREAD and time.monotonic() < deadline:
                    t0 = time.perf_counter()
                    tally.requests += 1
                    try:
                        status, body = client.request(
                            "GET", DISCOVERY_PATH, None, {"Accept": "application/json"}
                        )
                    except (OSError, http.client.HTTPException) as exc:
                        tally.error(f"exception:{type(exc).__name__}", exc)
                        continue
                    if status == 200 and isinstance(body, dict) and "issuer" in body:
                        tally.latencies.append(time.perf_counter() - t0)
                    else:
                        tally.error(str(status), body)
            finally:
                tally.new_connections = client.new_connections
                client.close()

        worker = {
            "register": register_worker,
            "execute": execute_worker,
            "discovery": discovery_worker,
        }[phase]
        load_before = os.getloadavg()[0]
        cpu0 = CpuSnapshot.take(server_pid)
        tally, wall = _run_threads(self.concurrency, duration, worker)
        cpu1 = CpuSnapshot.take(server_pid)
        result = summarize(tally, wall)
        result.update(cpu1.since(cpu0, result["ok"]))
        result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        result["latencies"] = tally.latencies
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--base-url", required=True, help="http://127.0.0.1:PORT of the server")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--agents", type=int, default=64, help="agents for the execute phase")
    parser.add_argument("--capability", default="ticket.read")
    parser.add_argument("--arguments", default='{"ticket_id": "1"}', help="JSON object")
    parser.add_argument("--phases", default="register,execute")
    parser.add_argument(
        "--server-pid", type=int, help="count this process tree's CPU as the server's"
    )
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S:g}]")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be in [1, {MAX_CONCURRENCY}]")
    if not 1 <= args.agents <= MAX_AGENTS:
        parser.error(f"--agents must be in [1, {MAX_AGENTS}]")
    try:
        target = discover(args.base_url)
        workload = Workload(
            target,
            concurrency=args.concurrency,
            agents=args.agents,
            capability=args.capability,
            arguments=json.loads(args.arguments),
        )
        workload.prepare()
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"base_url": args.base_url, "concurrency": args.concurrency}
    failed = False
    for phase in args.phases.split(","):
        r = workload.run(phase, args.duration, args.server_pid)
        del r["latencies"]
        results[phase] = r
        failed |= r["error_rate"] > 0.01
        print(
            f"{phase:8} {r['rps']:8.1f}/s  p50 {r['p50_ms']:7.2f}  p99 {r['p99_ms']:7.2f} ms  "
            f"errors {r['errors']}  load {r['loadavg_1m']}",
            file=sys.stderr,
        )
    print(json.dumps(results, separators=(",", ":")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
