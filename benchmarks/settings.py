"""Server settings for ``benchmarks.load``: the example project, production-like, limits off.

``benchmarks.load`` sets these variables for the gunicorn it starts:

- ``AGENTAUTH_BENCH_PORT``: the loopback port gunicorn binds (the issuer is derived from it);
- ``AGENTAUTH_BENCH_DATABASE_URL``: ``postgres://...`` of the freshly created benchmark database;
- ``AGENTAUTH_BENCH_CONN_MAX_AGE``: Django's ``CONN_MAX_AGE`` (seconds; 0 = one PostgreSQL
  connection per request, Django's default);
- ``AGENTAUTH_BENCH_REPLAY_GUARD``: ``database`` (default) or ``cache``, the latter with Redis at
  ``AGENTAUTH_BENCH_REDIS_URL`` as the default cache.

The benchmark measures what a request costs, so every rate limit is off here (the per-agent
limit of 60/minute alone would refuse almost all of its executions) and nowhere else.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only-not-a-secret")

from example_project.settings import *  # noqa: F403
from example_project.settings import _database_from_url, _prepare_threshold

_PORT = int(os.environ.get("AGENTAUTH_BENCH_PORT", "8000"))

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

AGENTAUTH_ISSUER = f"http://127.0.0.1:{_PORT}/api/auth"
# Benchmark only: autonomous agents asking for ticket.read (or ticket.watch, for the stream
# benchmark) are active at once, so the load test can execute without a person. The example
# project itself grants nothing before approval.
AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["ticket.read", "ticket.watch", "bench.echo"]
# bench.echo (benchmarks/capabilities.py): the reference's ticket.read, which echoes the call.
INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks"]  # noqa: F405
AGENTAUTH_INTROSPECTION_TOKENS = ["benchmark-only"]
AGENTAUTH_RATE_LIMITS = {
    "ip": None,
    "register_unknown_host": None,
    "host": None,
    "agent": None,
    "introspect": None,
}

DATABASES = {
    "default": {
        **_database_from_url(
            os.environ.get(
                "AGENTAUTH_BENCH_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/agentauth_bench",
            )
        ),
        "CONN_MAX_AGE": int(os.environ.get("AGENTAUTH_BENCH_CONN_MAX_AGE", "0")),
        "OPTIONS": {
            # AGENTAUTH_BENCH_POOL=N: psycopg's connection pool, at most N connections per
            # process (then CONN_MAX_AGE must be 0); the choice for ASGI (a thread per request).
            **(
                {"pool": {"min_size": 1, "max_size": int(_POOL)}}
                if (_POOL := os.environ.get("AGENTAUTH_BENCH_POOL"))
                else {}
            ),
            # As the example project: the execute hot path's statements are prepared after 5
            # uses on a connection (AGENTAUTH_BENCH_PREPARE_THRESHOLD=none: never).
            "prepare_threshold": _prepare_threshold("AGENTAUTH_BENCH_PREPARE_THRESHOLD"),
        },
        "CONN_HEALTH_CHECKS": os.environ.get("AGENTAUTH_BENCH_CONN_HEALTH_CHECKS") == "1",
    }
}

AGENTAUTH_REPLAY_GUARD = os.environ.get("AGENTAUTH_BENCH_REPLAY_GUARD") or "database"
if AGENTAUTH_REPLAY_GUARD == "cache":
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ.get("AGENTAUTH_BENCH_REDIS_URL") or "redis://127.0.0.1:6379/0",
        }
    }

# Celery stays eager (no broker): nothing on these two paths enqueues work.
# Warnings and errors only, so the captured gunicorn log shows failures and not every request.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
