"""Server settings for the load benchmark: the example project on PostgreSQL, limits off.

The benchmark measures the cost of a request, so the per-agent and per-IP rate limits (which
would refuse most of its traffic by design) are disabled here and nowhere else.
"""

from example_project.settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
AGENTAUTH_RATE_LIMITS = {
    "ip": None,
    "register_unknown_host": None,
    "host": None,
    "agent": None,
    "introspect": None,
}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
