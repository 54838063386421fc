"""Start and stop the servers the benchmarks measure: ours under gunicorn, and the reference.

Each server runs in its own process group with its output in a temporary file (its tail is shown
when something fails), and is stopped on every exit path; the kernel sends it SIGTERM if the
benchmark dies without cleaning up. Databases are loopback PostgreSQL only and are dropped and
recreated, so they must be dedicated ones (``postgres``, ``test`` and templates are refused).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
PROTECTED_DATABASES = frozenset({"postgres", "template0", "template1", "test"})
SUBPROCESS_TIMEOUT_S = 180.0


class SetupError(RuntimeError):
    pass


def check_database_url(url: str) -> str:
    """The database name, after checking the URL is a loopback PostgreSQL we may drop."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"{url!r}: not a postgres:// URL")
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"{url!r}: only a loopback PostgreSQL may be used")
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ValueError(f"{url!r}: name a database (letters, digits, underscores)")
    if name.lower() in PROTECTED_DATABASES:
        raise ValueError(f"refusing to drop the {name!r} database; name a dedicated one")
    return name


def recreate_database(url: str) -> str:
    """Drop and create the database; PostgreSQL's version."""
    import psycopg
    from psycopg import sql

    name = check_database_url(url)
    admin = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        version = conn.execute("SHOW server_version").fetchone()
    return str(version[0]).split()[0] if version else "unknown"


def analyze(url: str) -> None:
    """Planner statistics, as autovacuum would have made on a database that is not seconds old."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("ANALYZE")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Process:
    """A child in its own session, logging to a temporary file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"agentauth-bench-{name}-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, chars: int = 3000) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

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
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


# --- ours ----------------------------------------------------------------------------------------


def ours_env(
    port: int, db: str, conn_max_age: int, replay_guard: str, redis_url: str, pool: int = 0
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.settings",
        AGENTAUTH_BENCH_PORT=str(port),
        AGENTAUTH_BENCH_DATABASE_URL=db,
        AGENTAUTH_BENCH_CONN_MAX_AGE=str(conn_max_age),
        AGENTAUTH_BENCH_REPLAY_GUARD=replay_guard,
        AGENTAUTH_BENCH_REDIS_URL=redis_url,
        AGENTAUTH_BENCH_POOL=str(pool) if pool else "",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


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
        raise SetupError(f"manage.py {args[0]} took too long") from exc
    if done.returncode != 0:
        raise SetupError(f"manage.py {args[0]} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


SEED_TICKET = (
    "from example_project.support.models import Ticket; "
    "t = Ticket.objects.create(subject='Printer on fire', body='Seeded by the benchmark'); "
    "print('SEEDED_TICKET', t.pk)"
)


def prepare_ours(env: dict[str, str]) -> str:
    """Migrate the (fresh) database and seed one ticket; the ticket's id."""
    run_manage(env, "migrate", "--noinput", "-v", "0")
    for line in run_manage(env, "shell", "-c", SEED_TICKET).splitlines():
        if line.startswith("SEEDED_TICKET "):
            return line.split()[1]
    raise SetupError("could not read the seeded ticket's id")


#: An emptied replay cache refuses tokens signed before its memory began (``agentauth.replay``,
#: docs/operations.md): a benchmark's freshly flushed Redis is marked as up for an hour.
MARK_CACHE_UP = (
    "import time; from django.core.cache import cache; from agentauth import replay; "
    "cache.set(replay.MEMORY_MARKER, time.time() - 3600, None)"
)


def mark_cache_up(env: dict[str, str]) -> None:
    run_manage(env, "shell", "-c", MARK_CACHE_UP)


def start_ours(port: int, env: dict[str, str], workers: int, worker_class: str = "sync") -> Process:
    """gunicorn with ``workers`` sync workers, or gthread workers of 4 threads each (which keep
    connections alive: a sync worker closes the client's connection after every response), or
    uvicorn workers for ``worker_class="asgi"``."""
    binary = Path(sys.executable).with_name("gunicorn")
    command = [str(binary)] if binary.exists() else [sys.executable, "-m", "gunicorn"]
    app = "example_project.wsgi:application"
    extra = ["--worker-class", "sync", "--threads", "1"]
    if worker_class == "gthread":
        extra = ["--worker-class", "gthread", "--threads", "4", "--keep-alive", "5"]
    if worker_class == "asgi":
        app = "example_project.asgi:application"
        extra = ["--worker-class", "uvicorn.workers.UvicornWorker"]
    command += [
        app,
        "--bind",
        f"{LOOPBACK}:{port}",
        "--workers",
        str(workers),
        *extra,
        "--timeout",
        "60",
        "--graceful-timeout",
        "5",
        "--log-level",
        "warning",
    ]
    return Process(f"ours-{worker_class}", command, env, ROOT)


# --- the reference -------------------------------------------------------------------------------


def find_reference(explicit: str | None) -> Path:
    candidates = [explicit, os.environ.get("AGENTAUTH_REFERENCE_SERVER")]
    candidates += [
        str(p / "shared/peer/reference-server") for p in (ROOT.parent, ROOT.parent.parent)
    ]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if (path / "server.mjs").is_file():
            return path
    raise SetupError(
        "reference server not found; pass --reference DIR or set AGENTAUTH_REFERENCE_SERVER"
    )


def copy_reference(source: Path, into: Path) -> Path:
    """A writable copy (the original is read-only); mtimes kept, so ``npm ci`` is not re-run."""
    dest = into / "reference-server"
    shutil.copytree(
        source, dest, symlinks=True, ignore=shutil.ignore_patterns("server-*.log", ".server-*.pid")
    )
    for path in [dest, *dest.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    return dest


def start_reference(copy: Path, port: int, database_url: str | None) -> Process:
    if shutil.which("node") is None:
        raise SetupError("node is not installed (the reference server needs Node >= 20)")
    if not (copy / "node_modules").is_dir():
        raise SetupError(f"{copy}/node_modules is missing; run ./run.sh install there first")
    env = dict(os.environ, PORT=str(port), HOST=LOOPBACK)
    env.pop("AA_DATABASE_URL", None)
    if database_url:
        env["AA_DATABASE_URL"] = database_url
    name = "reference-postgres" if database_url else "reference-memory"
    return Process(name, ["node", "server.mjs"], env, copy)
