"""One answer for a dependency that is down: the database, the cache or the broker.

Protocol endpoints answer ``503 temporarily_unavailable`` with ``Retry-After`` (spec §5.13), never
``500 internal_error``: the request was fine and a retry will work. Pages for people get a short
503 page rendered without the database, the session or the cache, since any of them may be the
thing that is down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

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


def protocol_error(exc: BaseException) -> ProtocolError:
    logger.error("agentauth: a dependency is unavailable: %s: %s", type(exc).__name__, exc)
    return ProtocolError(
        "temporarily_unavailable",
        "A service this server needs is unavailable; retry later",
        headers={"Retry-After": RETRY_AFTER},
    )


def page(exc: BaseException) -> HttpResponse:
    logger.error("agentauth: a dependency is unavailable: %s: %s", type(exc).__name__, exc)
    response = HttpResponse(render_to_string("agentauth/unavailable.html"), status=503)
    response.headers["Retry-After"] = RETRY_AFTER
    response.headers["Cache-Control"] = "no-store"
    return response


def guard_page(view: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a page view so a dependency failure is the 503 page, not the project's 500 page.
    Applied in ``urls.py``, so every page gets it in one place."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return view(request, *args, **kwargs)
        except DEPENDENCY_ERRORS as exc:
            return page(exc)

    return wrapped
