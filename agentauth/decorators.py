"""``@requires_capability`` for plain Django views."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from . import guard
from .errors import ProtocolError
from .views.base import error_response

logger = logging.getLogger("agentauth")


def requires_capability(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Let only agents holding every named capability (within its constraints) in.

    The view reads its arguments from ``request.agent_arguments`` only: the URL kwargs, query
    parameters and JSON body members the schema and constraints were checked against (see
    ``guard.protect``). Also sets ``request.agent``, ``request.agent_grant`` (the first
    capability's grant) and ``request.agent_grants`` (all of them). The view is CSRF-exempt: it
    is authenticated by a bearer JWT, never by a cookie. Every refusal is a spec error body,
    never an HTML page.
    """
    if not names or not all(isinstance(n, str) and n for n in names):
        raise TypeError("requires_capability() needs one or more capability names")
    required = tuple(names)  # fixed at decoration time; never mutated

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                guard.protect(request, required, kwargs).attach(request)
            except ProtocolError as exc:
                return error_response(exc)
            except Exception:
                logger.exception("agentauth: guard failed on %s", request.path)
                return error_response(ProtocolError("internal_error"))
            response: HttpResponseBase = view(request, *args, **kwargs)
            return response

        wrapper.required_capabilities = required  # type: ignore[attr-defined]
        return csrf_exempt(wrapper)

    return decorate
