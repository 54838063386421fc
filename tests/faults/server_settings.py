"""The example project as the fault tier runs it: PostgreSQL, a Redis broker, a Redis cache
with the cache replay guard, a Celery worker with beat, mail to files. Every address comes from
the environment ``tests/faults/test_faults.py`` sets; nothing here touches shared services."""

from __future__ import annotations

import os

from example_project.settings import *  # noqa: F403
from example_project.settings import INSTALLED_APPS

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "tests.faults"]
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["FAULTS_CACHE_URL"],
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
    }
}
AGENTAUTH_REPLAY_GUARD = "cache"
AGENTAUTH_INTROSPECTION_TOKENS = ["fault-tier-introspection-not-secret"]
SILENCED_SYSTEM_CHECKS = ["agentauth.W001"]  # plain http on loopback
AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["ticket.read", "faults.tally"]
AGENTAUTH_RATE_LIMITS = {
    "ip": None,
    "register_unknown_host": None,
    "host": None,
    "agent": None,
    "introspect": None,
    "ciba_host": None,  # the load mails one person many times on purpose
    "ciba_recipient": None,
}
AGENTAUTH_OUTBOX_REQUEUE_SECONDS = 8
AGENTAUTH_OUTBOX_LEASE_SECONDS = 15
AGENTAUTH_PUBLISH_PAUSE_SECONDS = 2
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = os.environ["FAULTS_MAIL_DIR"]
CELERY_BEAT_SCHEDULE = {
    "agentauth-dispatch": {"task": "agentauth.dispatch_outbox", "schedule": 2.0},
    "agentauth-sweep": {"task": "agentauth.sweep", "schedule": 15.0},
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"agentauth": {"handlers": ["console"], "level": "WARNING"}},
}
