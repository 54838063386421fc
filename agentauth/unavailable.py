"""One answer for a dependency that is down: the database, the cache or the broker.

Protocol endpoints answer ``503 temporarily_unavailable`` with ``Retry-After`` (spec §5.13), never
``500 internal_error``: the request was fine and a retry will work. Pages for people get the 503
page of ``views/pages.py``, which asks ``is_dependency_failure`` too.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError

from .errors import ProtocolError

logger = logging.getLogger("agentauth")

RETRY_AFTER = "5"


def _error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OperationalError, InterfaceError, ConnectionError]
    types.append(TimeoutError)
    try:  # the cache and broker clients are optional dependencies
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        types += [RedisConnectionError, RedisTimeoutError]
    except ImportError:  # pragma: no cover - redis is not installed
        pass
    try:
        from kombu.exceptions import OperationalError as BrokerError

        types.append(BrokerError)
    except ImportError:  # pragma: no cover - kombu comes with celery
        pass
    return tuple(types)


DEPENDENCY_ERRORS = _error_types()


def is_dependency_failure(exc: BaseException) -> bool:
    return isinstance(exc, DEPENDENCY_ERRORS)


def protocol_error(
    exc: BaseException,
    message: str = "A service this server needs is unavailable; retry later",
) -> ProtocolError:
    """The 503 for ``exc``, logged; ``message`` says which service when the caller knows."""
    logger.error("agentauth: a dependency is unavailable: %s: %s", type(exc).__name__, exc)
    return ProtocolError("temporarily_unavailable", message, headers={"Retry-After": RETRY_AFTER})
