"""Settings for the test suite.

By default everything is in-process: in-memory SQLite, local-memory cache and eager Celery.
Environment variables switch on the service tiers (``.ci/run`` sets them):

- ``AGENTAUTH_TEST_DATABASE_URL``: ``postgres://user:password@host:port/name`` (PostgreSQL tier;
  the test database itself is ``test_agentauth_<name>``)
- ``AGENTAUTH_TEST_REDIS_URL``: ``redis://host:port/db`` (Redis tier: the default cache)
- ``AGENTAUTH_TEST_CELERY_BROKER_URL``: a broker for the real-worker tier; tasks are no longer
  run eagerly
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

SECRET_KEY = "agentauth-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_static",
    "rest_framework",
    "agentauth",
    "example_project.support",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _postgres_from_url(url: str) -> dict[str, Any]:
    """A DATABASES entry from a ``postgres://`` URL, with the standard library only."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(
            f"AGENTAUTH_TEST_DATABASE_URL: unsupported scheme {parts.scheme!r}; use postgres://"
        )
    name = unquote(parts.path.lstrip("/")) or "postgres"
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        # Named after the database given, so runs against different databases never collide.
        "TEST": {"NAME": f"test_agentauth_{name}"},
        # Every statement on a server-binding cursor (the execute hot path's) is prepared at
        # its first run, so the PostgreSQL tier runs that path as production does, prepared.
        "OPTIONS": {"prepare_threshold": 0},
    }


_database_url = os.environ.get("AGENTAUTH_TEST_DATABASE_URL")
if _database_url:
    DATABASES = {"default": _postgres_from_url(_database_url)}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}


def _redis_for_worker(url: str, worker: str) -> str:
    """Under pytest-xdist, worker ``gwN`` uses database ``base + N`` of the Redis at ``url``.

    Tests empty the cache (``cache.clear()`` is ``FLUSHDB`` on Redis), so workers sharing one
    database would clear each other's rate-limit counters and replay markers mid-test.
    """
    if not worker:
        return url
    parts = urlsplit(url)
    base = int(parts.path.lstrip("/") or 0)
    db = base + int(worker.removeprefix("gw"))
    if db > 15:
        raise ValueError(
            f"AGENTAUTH_TEST_REDIS_URL: worker {worker} would need Redis database {db}; "
            "use a lower base database or fewer workers (PYTEST_WORKERS)"
        )
    return parts._replace(path=f"/{db}").geturl()


_redis_url = os.environ.get("AGENTAUTH_TEST_REDIS_URL")
if _redis_url:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _redis_for_worker(_redis_url, os.environ.get("PYTEST_XDIST_WORKER", "")),
            "KEY_PREFIX": "agentauth-tests",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
LOGIN_URL = "/accounts/login/"

# The Celery app is example_project's (imported with example_project.support); it reads these.
_broker_url = os.environ.get("AGENTAUTH_TEST_CELERY_BROKER_URL")
CELERY_BROKER_URL = _broker_url or "memory://"
CELERY_TASK_ALWAYS_EAGER = not _broker_url
CELERY_TASK_EAGER_PROPAGATES = True
# Publishing is a doorbell for the outbox (docs/operations.md): fail in seconds, never retry in
# the request; the sweep hands out whatever the broker did not take.
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "visibility_timeout": 900,  # longer than the longest job (AGENTAUTH_OUTBOX_LEASE_SECONDS)
}

AGENTAUTH_ISSUER = "http://testserver/api/auth"
# Resource servers' secret for POST /agent/introspect (tests.conftest.INTROSPECTION_SECRET).
AGENTAUTH_INTROSPECTION_TOKENS = ["introspection-secret-for-tests"]
AGENTAUTH_APPROVAL_METHODS = ["device_authorization", "ciba"]  # CIBA is opt-in
SILENCED_SYSTEM_CHECKS = ["agentauth.W001"]  # the test issuer is plain http://testserver

# The suite sends hundreds of requests from one address; tests/api/test_ratelimit.py switches the
# limits back on where they are the subject.
AGENTAUTH_RATE_LIMITS = {
    "ip": None,
    "register_unknown_host": None,
    "host": None,
    "agent": None,
    "introspect": None,
    "ciba_host": None,
    "ciba_recipient": None,
}

# Real-worker tier (tests/live/test_celery_worker.py): the worker process writes email to files the
# test reads, and runs beat with a short sweep schedule.
if os.environ.get("AGENTAUTH_TEST_EMAIL_DIR"):
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = os.environ["AGENTAUTH_TEST_EMAIL_DIR"]
if os.environ.get("AGENTAUTH_TEST_BEAT_SECONDS"):
    CELERY_BEAT_SCHEDULE = {
        "agentauth-sweep": {
            "task": "agentauth.sweep",
            "schedule": float(os.environ["AGENTAUTH_TEST_BEAT_SECONDS"]),
        }
    }

# JWKS URLs are resolved by a table the tests fill (tests/jwks_support.py), never by real DNS:
# no test can make the suite reach outside this machine. Unknown names do not resolve.
AGENTAUTH_JWKS_RESOLVER = "tests.jwks_support.resolve"
