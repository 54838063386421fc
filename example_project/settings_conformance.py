"""The example project as ``agentauth-conformance`` sees it in CI (``.ci/run``, tier "conformance").

The checker registers every agent under a brand-new host from one client IP, about twenty in a
run, while the example keeps the default ``register_unknown_host`` limit of 10 per hour per IP
(§8.13). Under gunicorn each worker counts in its own local-memory cache, so with the default
the run passed or failed depending on which worker took which request. The checker is one
trusted client doing on purpose what the limit exists to stop; everything else stays as the
example ships it.
"""

from example_project.settings import *  # noqa: F403

AGENTAUTH_RATE_LIMITS = {"register_unknown_host": "1000/hour"}
