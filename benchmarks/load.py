"""Load benchmark of the register and execute paths against a real gunicorn + PostgreSQL server.

    .venv/bin/python -m benchmarks.load --duration 20 --concurrency 16 \\
        --db postgres://postgres@127.0.0.1:5432/agentauth_bench

1. Drops and recreates the ``--db`` database (loopback PostgreSQL only), migrates it with
   ``benchmarks.settings`` and seeds one support ticket.
2. Starts gunicorn (sync workers, one thread each) on a free 127.0.0.1 port and waits for
   ``/.well-known/agent-configuration``.
3. Phase ``register``: N client threads, one host key each (its first registration happens
   before timing, so the host is known), register autonomous agents asking for ``ticket.read``
   with a fresh agent key and host JWT per request; 200 ``status: active`` counts as success.
4. Phase ``execute``: K agents are registered first (untimed); then N threads execute
   ``ticket.read`` on the seeded ticket with a fresh agent JWT per request
   (``aud`` = the discovery document's ``default_location``); 200 ``{"data": ...}`` succeeds.

Prints one JSON line of results, then a readable summary. Every loop is bounded by count and by
time, traffic goes to 127.0.0.1 only, and gunicorn is stopped on every exit path (also Ctrl-C and
SIGTERM). Exits 1 if more than ``--max-error-rate`` of the timed requests failed, 2 if the setup
failed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
#: Databases this script refuses to drop, whatever ``--db`` says.
PROTECTED_DATABASES = frozenset({"postgres", "template0", "template1", "test"})
MAX_DURATION_S = 120.0
MAX_CONCURRENCY = 64
MAX_AGENTS = 2000
#: Hard cap on requests per thread per phase, on top of the time bound.
MAX_REQUESTS_PER_THREAD = 200_000
SOCKET_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 30.0
SUBPROCESS_TIMEOUT_S = 180.0
#: PostgreSQL flushes a backend's statistics at most once a second; wait that out per snapshot.
PG_STATS_SETTLE_S = 1.2
ERROR_SAMPLES = 5
#: Untimed registrations per thread after its host's first one, to warm every worker.
WARMUP_REGISTRATIONS = 3
#: Above this share of busy CPU before the run, the machine is not quiet enough to compare.
QUIET_BUSY_PCT = 15.0


class SetupError(RuntimeError):
    pass


# --- arguments and guards ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description="Load benchmark of agentauth register/execute (loopback only, self-stopping).",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per timed phase")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads per phase")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument(
        "--agents", type=int, default=64, help="agents registered before the execute phase (K)"
    )
    parser.add_argument(
        "--db",
        default="postgres://postgres@127.0.0.1:5432/agentauth_bench",
        help="benchmark database URL; the database is DROPPED and recreated",
    )
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=0,
        help="Django CONN_MAX_AGE for the server (0 = a new PostgreSQL connection per request)",
    )
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="skip ANALYZE before each phase (plans then come from a table without statistics)",
    )
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S:g}]")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be in [1, {MAX_CONCURRENCY}]")
    if not 1 <= args.workers <= 32:
        parser.error("--workers must be in [1, 32]")
    if not 1 <= args.agents <= MAX_AGENTS:
        parser.error(f"--agents must be in [1, {MAX_AGENTS}]")
    if not 0 <= args.conn_max_age <= 3600:
        parser.error("--conn-max-age must be in [0, 3600]")
    try:
        check_database_url(args.db)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def check_database_url(url: str) -> str:
    """The database name, after checking the URL is a loopback PostgreSQL we may drop."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("--db must be a postgres:// URL")
    if parts.hostname not in LOOPBACK_NAMES:
        raise ValueError("--db must point at a loopback PostgreSQL (127.0.0.1 or localhost)")
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ValueError("--db must name a database (letters, digits, underscores)")
    if name.lower() in PROTECTED_DATABASES:
        raise ValueError(f"refusing to drop the {name!r} database; name a dedicated one")
    return name


def check_loopback_url(url: str, port: int) -> str:
    """The path of ``url`` after checking it points at our own server; no request leaves it."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_NAMES or parts.port != port:
        raise SetupError(f"the server advertises {url!r}, not http://127.0.0.1:{port}/...")
    return parts.path


# --- machine description -------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


# --- CPU accounting (Linux /proc) ----------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_cpu() -> tuple[float, float] | None:
    """(busy, idle) CPU seconds summed over all cores since boot."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields[:8]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLK_TCK, idle / CLK_TCK


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    comm: str
    own: float  # utime + stime, seconds
    reaped: float  # cutime + cstime: CPU of children that exited and were waited for


def scan_processes() -> dict[int, ProcStat]:
    """Read-only scan of /proc/<pid>/stat for every process (no signals, no writes)."""
    table: dict[int, ProcStat] = {}
    try:
        entries = [e for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return table
    for entry in entries:
        try:
            raw = (entry / "stat").read_text()
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            rest = raw[raw.rindex(")") + 2 :].split()
            table[int(entry.name)] = ProcStat(
                ppid=int(rest[1]),
                comm=comm,
                own=(int(rest[11]) + int(rest[12])) / CLK_TCK,
                reaped=(int(rest[13]) + int(rest[14])) / CLK_TCK,
            )
        except (OSError, ValueError, IndexError):
            continue
    return table


def tree_cpu(table: dict[int, ProcStat], root: int) -> float | None:
    """CPU seconds of ``root``, its live children and its exited children."""
    if root not in table:
        return None
    total = table[root].own + table[root].reaped
    return total + sum(p.own for p in table.values() if p.ppid == root)


def postmaster_pids(table: dict[int, ProcStat]) -> list[int]:
    """PostgreSQL postmasters: ``postgres`` processes whose parent is not one."""
    return [
        pid
        for pid, p in table.items()
        if p.comm == "postgres" and (p.ppid not in table or table[p.ppid].comm != "postgres")
    ]


@dataclass
class CpuSnapshot:
    """Client, gunicorn, PostgreSQL and whole-machine CPU at one instant."""

    wall: float
    client: float
    server: float | None
    postgres: float | None
    machine: tuple[float, float] | None

    @classmethod
    def take(cls, server_pid: int | None) -> CpuSnapshot:
        table = scan_processes()
        roots = postmaster_pids(table)
        pg = [tree_cpu(table, pid) for pid in roots]
        return cls(
            wall=time.perf_counter(),
            client=time.process_time(),
            server=tree_cpu(table, server_pid) if server_pid else None,
            postgres=sum(v for v in pg if v is not None) if roots else None,
            machine=machine_cpu(),
        )

    def since(self, start: CpuSnapshot) -> dict[str, Any]:
        wall = self.wall - start.wall
        cores = os.cpu_count() or 1
        out: dict[str, Any] = {"client_cpu_s": round(self.client - start.client, 2)}
        out["client_cpu_pct_of_machine"] = round(100 * out["client_cpu_s"] / (wall * cores), 1)
        if self.server is not None and start.server is not None:
            out["gunicorn_cpu_s"] = round(self.server - start.server, 2)
        if self.postgres is not None and start.postgres is not None:
            out["postgres_cpu_s"] = round(self.postgres - start.postgres, 2)
        if self.machine is not None and start.machine is not None:
            busy = self.machine[0] - start.machine[0]
            idle = self.machine[1] - start.machine[1]
            out["machine_busy_pct"] = round(100 * busy / max(busy + idle, 1e-9), 1)
            if "gunicorn_cpu_s" in out and "postgres_cpu_s" in out:
                # Busy time that neither this client, gunicorn nor PostgreSQL used: anything
                # else running on the machine. Large values mean the run was disturbed.
                out["background_cpu_s"] = round(
                    busy - out["client_cpu_s"] - out["gunicorn_cpu_s"] - out["postgres_cpu_s"], 2
                )
                out["background_pct_of_machine"] = round(
                    100 * out["background_cpu_s"] / (wall * cores), 1
                )
        return out


def background_busy_pct(seconds: float = 2.0) -> float | None:
    """Share of the machine's CPU busy before the benchmark starts anything."""
    before = machine_cpu()
    time.sleep(seconds)
    after = machine_cpu()
    if before is None or after is None:
        return None
    busy, idle = after[0] - before[0], after[1] - before[1]
    return round(100 * busy / max(busy + idle, 1e-9), 1)


# --- PostgreSQL ----------------------------------------------------------------------------------


def admin_url(url: str) -> str:
    return urlsplit(url)._replace(path="/postgres").geturl()


def recreate_database(url: str) -> str:
    import psycopg
    from psycopg import sql

    name = check_database_url(url)
    with psycopg.connect(admin_url(url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        version = conn.execute("SHOW server_version").fetchone()
    return str(version[0]) if version else "unknown"


def analyze(url: str) -> None:
    """Refresh planner statistics, as autovacuum would have on a database that is not brand new.

    Without this, the tables created seconds ago have no statistics and PostgreSQL may plan
    lookups by agent as scans of a whole index (see benchmarks/README.md).
    """
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("ANALYZE")


def pg_snapshot(url: str) -> dict[str, Any] | None:
    """Cumulative statistics of the benchmark database and its tables."""
    import psycopg

    time.sleep(PG_STATS_SETTLE_S)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            db = conn.execute(
                "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,"
                " tup_updated, tup_deleted FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            tables = conn.execute(
                "SELECT relname, coalesce(seq_scan, 0), coalesce(idx_scan, 0), n_tup_ins,"
                " n_tup_upd, n_tup_del FROM pg_stat_user_tables"
            ).fetchall()
    except psycopg.Error:
        return None
    keys = (
        "xact_commit",
        "xact_rollback",
        "tup_returned",
        "tup_fetched",
        "tup_inserted",
        "tup_updated",
        "tup_deleted",
    )
    return {
        "db": dict(zip(keys, db or (0,) * len(keys), strict=True)),
        "tables": {
            row[0]: dict(zip(("seq_scan", "idx_scan", "ins", "upd", "del"), row[1:], strict=True))
            for row in tables
        },
    }


def pg_delta(
    before: dict[str, Any] | None, after: dict[str, Any] | None, ok: int
) -> dict[str, Any]:
    """Per successful request: transactions, tuples, and per-table scans/writes (approximate)."""
    if before is None or after is None or ok == 0:
        return {}
    per = {k: round((after["db"][k] - before["db"][k]) / ok, 2) for k in after["db"]}
    tables: dict[str, dict[str, float]] = {}
    for name, stats in after["tables"].items():
        base = before["tables"].get(name, {})
        row = {k: round((v - base.get(k, 0)) / ok, 2) for k, v in stats.items()}
        if any(row.values()):
            tables[name] = {k: v for k, v in row.items() if v}
    return {"per_request": per, "tables_per_request": dict(sorted(tables.items()))}


# --- project setup and server --------------------------------------------------------------------


def run_manage(env: dict[str, str], *args: str) -> str:
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SetupError(
            f"manage.py {args[0]} took longer than {SUBPROCESS_TIMEOUT_S:g} s"
        ) from exc
    if done.returncode != 0:
        raise SetupError(f"manage.py {args[0]} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


SEED_TICKET = (
    "from example_project.support.models import Ticket; "
    "t = Ticket.objects.create(subject='Printer on fire', body='Seeded by benchmarks.load'); "
    "print('SEEDED_TICKET', t.pk)"
)


def seed_ticket(env: dict[str, str]) -> str:
    out = run_manage(env, "shell", "-c", SEED_TICKET)
    for line in out.splitlines():
        if line.startswith("SEEDED_TICKET "):
            return line.split()[1]
    raise SetupError(f"could not read the seeded ticket id from: {out[-500:]!r}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if this script dies without cleaning up."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Server:
    """gunicorn in its own process group; output goes to a temporary file for diagnosis."""

    def __init__(self, port: int, env: dict[str, str], workers: int) -> None:
        self.port = port
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="agentauth-bench-gunicorn-", suffix=".log", delete=False
        )
        binary = Path(sys.executable).with_name("gunicorn")
        command = [str(binary)] if binary.exists() else [sys.executable, "-m", "gunicorn"]
        self.proc = subprocess.Popen(
            [
                *command,
                "example_project.wsgi:application",
                "--bind",
                f"{LOOPBACK}:{port}",
                "--workers",
                str(workers),
                "--threads",
                "1",
                "--worker-class",
                "sync",
                "--timeout",
                "30",
                "--graceful-timeout",
                "5",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self, path: str) -> dict[str, Any]:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"gunicorn exited with {self.proc.returncode}")
            conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
            try:
                conn.request("GET", path, headers={"Accept": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200:
                    return dict(json.loads(body))
                last = f"HTTP {resp.status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                last = repr(exc)
            finally:
                conn.close()
            time.sleep(0.2)
        raise SetupError(f"gunicorn did not answer {path} within {READY_TIMEOUT_S:g} s ({last})")

    def tail(self, chars: int = 4000) -> str:
        try:
            text = Path(self.log.name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""
        return f"{text}\n(full gunicorn log: {self.log.name})"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


# --- the client side -----------------------------------------------------------------------------


class Client:
    """One keep-alive ``http.client`` connection, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=SOCKET_TIMEOUT_S)
        self.new_connections = 0

    def post(self, path: str, token: str, payload: bytes) -> tuple[int, Any]:
        if self.conn.sock is None:
            self.new_connections += 1
        try:
            self.conn.request(
                "POST",
                path,
                body=payload,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
            )
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            raise
        try:
            body = json.loads(data) if data else None
        except ValueError:
            body = data[:200].decode("utf-8", "replace")
        return resp.status, body

    def close(self) -> None:
        self.conn.close()


@dataclass
class Tally:
    """What one thread saw in one phase; merged after the phase."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    sign_s: float = 0.0
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
        self.sign_s += other.sign_s
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
        "error_rate": round((tally.requests - ok) / tally.requests, 4) if tally.requests else 0.0,
        "wall_s": round(wall, 2),
        "rps": round(ok / wall, 1) if wall > 0 else 0.0,
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": percentile(lat, 100),
        "mean_ms": round(sum(lat) / ok * 1000, 2) if ok else 0.0,
        "client_sign_ms_mean": round(tally.sign_s / tally.requests * 1000, 3)
        if tally.requests
        else 0.0,
        "new_connections": tally.new_connections,
    }


def run_threads(
    concurrency: int, duration: float, worker: Any, stop: threading.Event
) -> tuple[Tally, float]:
    """Run ``worker(index, deadline, tally)`` in N threads for ``duration`` seconds."""
    tallies = [Tally() for _ in range(concurrency)]
    start = time.perf_counter()
    deadline = time.monotonic() + duration
    threads = [
        threading.Thread(target=worker, args=(i, deadline, tallies[i]), daemon=True)
        for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    # The last requests may still be in flight at the deadline; give them the socket timeout.
    hard_deadline = deadline + SOCKET_TIMEOUT_S + 5
    for t in threads:
        while t.is_alive() and time.monotonic() < hard_deadline:
            t.join(0.25)
    wall = time.perf_counter() - start
    if any(t.is_alive() for t in threads):
        stop.set()
        raise RuntimeError("client threads did not finish in time")
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    return total, wall


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from agentauth.client.identity import Keypair
    from agentauth.client.tokens import sign_agent_jwt, sign_host_jwt

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.settings",
        AGENTAUTH_BENCH_PORT=str(port),
        AGENTAUTH_BENCH_DATABASE_URL=args.db,
        AGENTAUTH_BENCH_CONN_MAX_AGE=str(args.conn_max_age),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    started = time.perf_counter()
    stop = threading.Event()

    quiet = background_busy_pct()
    if quiet is not None and quiet > QUIET_BUSY_PCT:
        print(
            f"warning: the machine is already {quiet}% busy before the benchmark; "
            "numbers will be low and noisy",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"setting up: database {urlsplit(args.db).path.lstrip('/')}, migrate, seed ...",
        file=sys.stderr,
        flush=True,
    )
    try:
        pg_version = recreate_database(args.db)
        run_manage(env, "migrate", "--noinput", "-v", "0")
        ticket_id = seed_ticket(env)
    except (SetupError, OSError) as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # psycopg errors: PostgreSQL not reachable, no rights...
        print(f"setup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2

    server = Server(port, env, args.workers)
    failed_setup = False
    try:
        discovery = server.wait_ready("/.well-known/agent-configuration")
        issuer = str(discovery["issuer"])
        default_location = str(discovery["default_location"])
        register_path = check_loopback_url(issuer + discovery["endpoints"]["register"], port)
        execute_path = check_loopback_url(default_location, port)
        print(
            f"gunicorn ready on {LOOPBACK}:{port} (setup {time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

        def register_payload() -> bytes:
            return json.dumps(
                {"name": "bench-agent", "mode": "autonomous", "capabilities": ["ticket.read"]}
            ).encode()

        def register_once(client: Client, host: Keypair) -> tuple[int, Any, Keypair]:
            agent = Keypair.generate()
            token = sign_host_jwt(host, audience=issuer, agent_public_key=agent)
            status, body = client.post(register_path, token, register_payload())
            return status, body, agent

        def registered(status: int, body: Any) -> bool:
            return status == 200 and isinstance(body, dict) and body.get("status") == "active"

        # Untimed warm-up, concurrently so that every gunicorn worker is hit: each thread's host
        # key registers first (the host is then known), then a few more agents.
        hosts = [Keypair.generate() for _ in range(args.concurrency)]
        warm_failures: list[str] = []

        def warm_up(i: int) -> None:
            client = Client(port)
            try:
                for _ in range(1 + WARMUP_REGISTRATIONS):
                    status, body, _ = register_once(client, hosts[i])
                    if not registered(status, body):
                        warm_failures.append(f"HTTP {status} {body}")
                        return
            except (OSError, http.client.HTTPException) as exc:
                warm_failures.append(repr(exc))
            finally:
                client.close()

        warmers = [
            threading.Thread(target=warm_up, args=(i,), daemon=True)
            for i in range(args.concurrency)
        ]
        for t in warmers:
            t.start()
        for t in warmers:
            t.join(SOCKET_TIMEOUT_S * (1 + WARMUP_REGISTRATIONS))
        if warm_failures or any(t.is_alive() for t in warmers):
            raise SetupError(f"warm-up registrations failed: {warm_failures[:3]}")
        setup_client = Client(port)

        # --- phase A: register -----------------------------------------------------------------
        def register_worker(i: int, deadline: float, tally: Tally) -> None:
            client = Client(port)
            try:
                while (
                    not stop.is_set()
                    and tally.requests < MAX_REQUESTS_PER_THREAD
                    and time.monotonic() < deadline
                ):
                    s0 = time.perf_counter()
                    agent = Keypair.generate()
                    token = sign_host_jwt(hosts[i], audience=issuer, agent_public_key=agent)
                    payload = register_payload()
                    t0 = time.perf_counter()
                    tally.sign_s += t0 - s0
                    tally.requests += 1
                    try:
                        status, body = client.post(register_path, token, payload)
                    except (OSError, http.client.HTTPException) as exc:
                        tally.error(f"exception:{type(exc).__name__}", exc)
                        continue
                    elapsed = time.perf_counter() - t0
                    if registered(status, body):
                        tally.latencies.append(elapsed)
                    else:
                        tally.error(str(status) if status != 200 else "200:not_active", body)
            finally:
                tally.new_connections = client.new_connections
                client.close()

        print(
            f"phase register: {args.concurrency} threads x {args.duration:g} s",
            file=sys.stderr,
            flush=True,
        )
        if args.analyze:
            analyze(args.db)
        pg0 = pg_snapshot(args.db)
        cpu0 = CpuSnapshot.take(server.proc.pid)
        reg_tally, reg_wall = run_threads(args.concurrency, args.duration, register_worker, stop)
        cpu1 = CpuSnapshot.take(server.proc.pid)
        pg1 = pg_snapshot(args.db)
        reg = {**summarize(reg_tally, reg_wall), **cpu1.since(cpu0)}
        reg["db"] = pg_delta(pg0, pg1, reg["ok"])

        # --- phase B: execute ------------------------------------------------------------------
        agents: list[tuple[str, Keypair]] = []
        for n in range(args.agents):
            status, body, key = register_once(setup_client, hosts[n % len(hosts)])
            if not registered(status, body):
                raise SetupError(f"registering execute agent {n} failed: HTTP {status} {body}")
            agents.append((str(body["agent_id"]), key))
        setup_client.close()
        execute_payload = json.dumps(
            {"capability": "ticket.read", "arguments": {"ticket_id": ticket_id}}
        ).encode()

        def execute_worker(i: int, deadline: float, tally: Tally) -> None:
            client = Client(port)
            n = 0
            try:
                while (
                    not stop.is_set()
                    and tally.requests < MAX_REQUESTS_PER_THREAD
                    and time.monotonic() < deadline
                ):
                    # Thread i walks agents i, i+N, i+2N...: concurrent threads use distinct agents.
                    agent_id, key = agents[(i + n * args.concurrency) % len(agents)]
                    n += 1
                    s0 = time.perf_counter()
                    token = sign_agent_jwt(key, agent_id=agent_id, audience=default_location)
                    t0 = time.perf_counter()
                    tally.sign_s += t0 - s0
                    tally.requests += 1
                    try:
                        status, body = client.post(execute_path, token, execute_payload)
                    except (OSError, http.client.HTTPException) as exc:
                        tally.error(f"exception:{type(exc).__name__}", exc)
                        continue
                    elapsed = time.perf_counter() - t0
                    if status == 200 and isinstance(body, dict) and "data" in body:
                        tally.latencies.append(elapsed)
                    else:
                        tally.error(str(status) if status != 200 else "200:no_data", body)
            finally:
                tally.new_connections = client.new_connections
                client.close()

        print(
            f"phase execute: {args.agents} agents, {args.concurrency} threads x "
            f"{args.duration:g} s",
            file=sys.stderr,
            flush=True,
        )
        if args.analyze:
            analyze(args.db)
        pg2 = pg_snapshot(args.db)
        cpu2 = CpuSnapshot.take(server.proc.pid)
        exe_tally, exe_wall = run_threads(args.concurrency, args.duration, execute_worker, stop)
        cpu3 = CpuSnapshot.take(server.proc.pid)
        pg3 = pg_snapshot(args.db)
        exe = {**summarize(exe_tally, exe_wall), **cpu3.since(cpu2)}
        exe["db"] = pg_delta(pg2, pg3, exe["ok"])
    except SetupError as exc:
        failed_setup = True
        print(f"setup failed: {exc}\n--- gunicorn log (tail) ---\n{server.tail()}", file=sys.stderr)
    except KeyboardInterrupt:
        stop.set()
        raise
    except BaseException:
        stop.set()
        print(f"--- gunicorn log (tail) ---\n{server.tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
    if failed_setup:
        return 2  # the gunicorn log is kept for diagnosis

    result = {
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model(),
            "mem_gib": mem_gib(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgresql": pg_version,
            "django": version_of("django"),
            "gunicorn": version_of("gunicorn"),
            "busy_pct_before_run": quiet,
            "note": "client, gunicorn and PostgreSQL share these cores",
        },
        "config": {
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "gunicorn_workers": args.workers,
            "gunicorn_worker_class": "sync",
            "gunicorn_threads": 1,
            "execute_agents": args.agents,
            "conn_max_age": args.conn_max_age,
            "analyze_before_phase": args.analyze,
            "replay_guard": "database",
            "rate_limits": "off",
            "fresh_jwt_per_request": True,
            "total_runtime_s": round(time.perf_counter() - started, 1),
        },
        "register": reg,
        "execute": exe,
    }
    print(json.dumps(result, separators=(",", ":")), flush=True)
    print_summary(result, reg_tally.samples, exe_tally.samples)

    total = reg["requests"] + exe["requests"]
    errors = total - reg["ok"] - exe["ok"]
    rate = errors / total if total else 1.0
    if total == 0 or rate > args.max_error_rate:
        print(
            f"\nFAIL: error rate {rate:.2%} > {args.max_error_rate:.2%}\n"
            f"--- gunicorn log (tail) ---\n{server.tail()}",
            file=sys.stderr,
        )
        return 1  # the gunicorn log is kept for diagnosis
    server.cleanup()
    return 0


def print_summary(result: dict[str, Any], *samples: list[str]) -> None:
    m, c = result["machine"], result["config"]
    print()
    print(
        f"agentauth load benchmark: {m['nproc']} cores ({m['cpu_model']}), Python {m['python']}, "
        f"PostgreSQL {m['postgresql']}, gunicorn {m['gunicorn']} x{c['gunicorn_workers']} sync"
    )
    if m["busy_pct_before_run"] is not None and m["busy_pct_before_run"] > QUIET_BUSY_PCT:
        print(f"WARNING: the machine was {m['busy_pct_before_run']}% busy before the run")
    print(
        f"{c['concurrency']} client threads, {c['duration_s']:g} s per phase, fresh JWT per "
        f"request, CONN_MAX_AGE={c['conn_max_age']}, total {c['total_runtime_s']} s"
    )
    print()
    header = ("phase", "requests", "ok", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms")
    print(f"{header[0]:<9}" + "".join(f"{h:>10}" for h in header[1:]))
    for name in ("register", "execute"):
        r = result[name]
        cells = (
            r["requests"],
            r["ok"],
            r["requests"] - r["ok"],
            r["rps"],
            r["p50_ms"],
            r["p95_ms"],
            r["p99_ms"],
            r["max_ms"],
        )
        print(f"{name:<9}" + "".join(f"{v:>10}" for v in cells))
    print()
    print("CPU seconds during each phase (client = this process, incl. key generation + signing):")
    for name in ("register", "execute"):
        r = result[name]
        print(
            f"  {name:<9} client {r['client_cpu_s']} s ({r['client_cpu_pct_of_machine']}% of "
            f"the machine; key+JWT {r['client_sign_ms_mean']} ms/request), gunicorn "
            f"{r.get('gunicorn_cpu_s', '?')} s, PostgreSQL {r.get('postgres_cpu_s', '?')} s, "
            f"background {r.get('background_cpu_s', '?')} s; machine busy "
            f"{r.get('machine_busy_pct', '?')}%"
        )
    for name in ("register", "execute"):
        disturbed = result[name].get("background_pct_of_machine", 0.0)
        if disturbed > QUIET_BUSY_PCT:
            print(
                f"  WARNING: other processes used {disturbed}% of the machine during {name}; "
                "its numbers are not comparable with a quiet run"
            )
    for name in ("register", "execute"):
        db = result[name].get("db") or {}
        if not db:
            continue
        per = db["per_request"]
        print(
            f"\nPostgreSQL per successful {name} (approximate): "
            f"{per['xact_commit']} commits, {per['tup_inserted']} rows inserted, "
            f"{per['tup_updated']} updated"
        )
        for table, stats in db["tables_per_request"].items():
            print(f"  {table:<36} " + "  ".join(f"{k} {v}" for k, v in stats.items()))
    for name, errs in zip(("register", "execute"), samples, strict=True):
        if result[name]["errors"]:
            print(f"\n{name} errors: {result[name]['errors']}")
            for line in errs:
                print(f"  {line}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; gunicorn was stopped", file=sys.stderr)
        sys.exit(130)
