"""Rate limits (spec §8.13): fixed windows counted in Django's cache.

Dimensions and defaults (override per key in ``AGENTAUTH_RATE_LIMITS``; ``None`` disables one):

``ip``                     60/minute  registration and discovery, per client IP
``register_unknown_host``  10/hour    first registrations of unknown hosts, per client IP (§8.13)
``host``                  300/minute  host-JWT-authenticated requests, per host
``agent``                  60/minute  agent-JWT-authenticated requests, per agent
``introspect``             60/minute  introspection calls, per client IP (§5.12: aggressive)
``ciba_host``              10/hour    CIBA notifications caused by one host (``notifications``)
``ciba_recipient``          5/hour    CIBA notifications to one person about hosts not linked
                                      to them (CIBA Core §14: notification floods)

Counters live in the cache named by ``AGENTAUTH_RATE_LIMIT_CACHE`` (default ``"default"``); in
production it must be shared by every process (Redis, Memcached), or each worker counts alone.
If the cache cannot answer, the request is refused (503) rather than let through unmetered.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.core.cache import caches
from django.http import HttpRequest
from django.utils.module_loading import import_string

from . import unavailable
from .conf import _get
from .errors import ProtocolError

DEFAULT_RATES: dict[str, str | None] = {
    "ip": "60/minute",
    "register_unknown_host": "10/hour",
    "host": "300/minute",
    "agent": "60/minute",
    "introspect": "60/minute",
    "ciba_host": "10/hour",
    "ciba_recipient": "5/hour",
}
_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int
    text: str

    @classmethod
    def parse(cls, text: str) -> Rate:
        count, _, unit = text.partition("/")
        unit = unit.strip().rstrip("s")
        if unit not in _PERIODS or not count.strip().isdigit():
            raise ValueError(f"Bad rate {text!r}: use 'N/second|minute|hour|day'")
        return cls(int(count), _PERIODS[unit], text)


def rate_for(scope: str) -> Rate | None:
    rates = {**DEFAULT_RATES, **(_get("RATE_LIMITS", None) or {})}
    text = rates.get(scope)
    return Rate.parse(text) if text else None


def client_ip(request: HttpRequest) -> str:
    """``REMOTE_ADDR`` unless ``AGENTAUTH_CLIENT_IP`` names a function that knows the proxies."""
    resolver = _get("CLIENT_IP", None)
    if resolver:
        return str(import_string(resolver)(request))
    return str(request.META.get("REMOTE_ADDR", ""))


def hit(scope: str, identity: str) -> None:
    """Count a request for ``identity`` in ``scope``; raise 429 ``rate_limited`` past the limit."""
    rate = rate_for(scope)
    if rate is None:
        return
    now = time.time()
    window = int(now // rate.period)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    key = f"agentauth:rl:{scope}:{digest}:{window}"
    cache = caches[str(_get("RATE_LIMIT_CACHE", "default"))]
    try:
        cache.add(key, 0, rate.period + 1)
        count = cache.incr(key)
    except ValueError:
        # The key expired between add and incr: this is the first hit of a fresh window.
        count = 1
        cache.set(key, 1, rate.period + 1)
    except Exception as exc:  # an unreachable cache must fail closed
        raise unavailable.protocol_error(exc, "Rate limiting is unavailable") from exc
    if count > rate.limit:
        retry_after = max(1, int((window + 1) * rate.period - now))
        raise ProtocolError(
            "rate_limited",
            f"Rate limit exceeded ({scope}: {rate.text})",
            headers={"Retry-After": str(retry_after)},
        )
