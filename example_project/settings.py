"""Settings for the django-agentauth example project (the seed article's ``support-api``).

Defaults need no services: SQLite in ``.demo/`` and Celery tasks run eagerly in-process.
Environment variables switch to real services:

- ``AGENTAUTH_EXAMPLE_DATABASE_URL``: ``postgres://user:password@host:5432/name``
- ``CELERY_BROKER_URL``: e.g. ``redis://127.0.0.1:6379/0`` (tasks then go to a worker)
- ``AGENTAUTH_ISSUER``: public base URL of the protocol endpoints
- ``DJANGO_DEBUG``: ``1`` for development (``make demo`` sets it); off by default
- ``DJANGO_SECRET_KEY``: required unless ``DJANGO_DEBUG=1``
- ``AGENTAUTH_INTROSPECTION_TOKENS``: comma-separated secrets of resource servers allowed to call
  ``POST /agent/introspect`` (required unless ``DJANGO_DEBUG=1``, system check E040)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_DIR = BASE_DIR / ".demo"
DEMO_DIR.mkdir(exist_ok=True)

from django.core.exceptions import ImproperlyConfigured  # noqa: E402

# Safe by default: DEBUG is off and there is no built-in secret; only the demo turns them on.
DEBUG = os.environ.get("DJANGO_DEBUG", "").lower() in ("1", "true", "yes")
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=1 for the local demo: `make demo`)."
        )
    SECRET_KEY = "django-insecure-agentauth-demo-only"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "rest_framework",
    "agentauth",
    "example_project.support",
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

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

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


def _database_from_url(url: str) -> dict[str, Any]:
    """A Django DATABASES entry from a ``postgres://`` URL, parsed with the standard library."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"Unsupported database URL scheme {parts.scheme!r}; use postgres://")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


def _prepare_threshold(variable: str) -> int | None:
    """psycopg's ``prepare_threshold`` from the environment: 5 unless set; ``none`` = never.

    Django turns prepared statements off by default (connection poolers in transaction mode
    may not support them) and its own cursors bind on the client, so they never prepare. With
    a threshold, the statements django-agentauth runs on every execute (spec §5.11) are prepared
    once per connection: planning the main one costs PostgreSQL more than running it. Behind
    PgBouncer in transaction mode before 1.21, set the variable to ``none``.
    """
    value = os.environ.get(variable, "5").strip().lower()
    return None if value in ("", "none") else int(value)


_database_url = os.environ.get("AGENTAUTH_EXAMPLE_DATABASE_URL", "")
if _database_url.startswith(("postgres://", "postgresql://")):
    DATABASES = {
        "default": {
            **_database_from_url(_database_url),
            # Persistent connections: opening one costs PostgreSQL several milliseconds of CPU,
            # more than a whole warm execute (docs/deployment.md has the figures). Behind
            # PgBouncer in transaction mode, keep this and disable server-side cursors.
            "CONN_MAX_AGE": int(os.environ.get("AGENTAUTH_EXAMPLE_CONN_MAX_AGE", "60")),
            "OPTIONS": {
                "prepare_threshold": _prepare_threshold("AGENTAUTH_EXAMPLE_PREPARE_THRESHOLD")
            },
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DEMO_DIR / "db.sqlite3",
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []  # demo credentials are deliberately simple

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DEMO_DIR / "static"

LOGIN_URL = "/accounts/login/"

# --- Celery --------------------------------------------------------------------------------------
# Without a broker every task runs eagerly in the web process, so the demo needs no services.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "memory://"
CELERY_TASK_ALWAYS_EAGER = not os.environ.get("CELERY_BROKER_URL")
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
CELERY_BEAT_SCHEDULE = {
    "agentauth-sweep": {"task": "agentauth.sweep", "schedule": 300.0},
}

# --- Agent Auth ----------------------------------------------------------------------------------
AGENTAUTH_ISSUER = os.environ.get("AGENTAUTH_ISSUER", "http://127.0.0.1:8000/api/auth")
AGENTAUTH_PROVIDER_NAME = "support-api"
AGENTAUTH_PROVIDER_DESCRIPTION = "Support operations for AI agents"
AGENTAUTH_MODES = ["delegated", "autonomous"]
AGENTAUTH_APPROVAL_METHODS = ["ciba", "device_authorization"]
# Spec §8.10: nothing is granted to a self-attested (dynamically registered) host before a person
# approves, so there is no AGENTAUTH_AUTONOMOUS_AUTO_APPROVE here. Instant ticket.read comes from
# trust the operator gave: `manage.py seed_demo` pre-registers a host whose defaults include it.
AGENTAUTH_INTROSPECTION_TOKENS = [
    t for t in os.environ.get("AGENTAUTH_INTROSPECTION_TOKENS", "").split(",") if t.strip()
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"agentauth": {"handlers": ["console"], "level": "INFO"}},
}
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"  # CIBA emails print here
