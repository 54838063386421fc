"""``@requires_capability`` for plain Django views."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from . import guard
from .errors import ProtocolError
from .views.base import error_response


def requires_capability(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Let only agents holding every named capability (within its constraints) in.

    Sets ``request.agent``, ``request.agent_grant`` (the first capability's grant) and
    ``request.agent_grants`` (all of them). The view is CSRF-exempt: it is authenticated by a
    bearer JWT, never by a cookie. Failures are spec-shaped JSON errors.
    """
    if not names or not all(isinstance(n, str) and n for n in names):
        raise TypeError("requires_capability() needs one or more capability names")
    required = tuple(names)  # fixed at decoration time; never mutated

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                verified = guard.authenticate(request)
                arguments, contract = guard.request_arguments(request, kwargs, required)
                grants = guard.authorize(verified, required, arguments, validate_schema=contract)
            except ProtocolError as exc:
                return error_response(exc)
            request.agent = verified.agent  # type: ignore[attr-defined]
            request.agent_grants = grants  # type: ignore[attr-defined]
            request.agent_grant = grants[required[0]]  # type: ignore[attr-defined]
            request.agent_arguments = arguments  # type: ignore[attr-defined]
            response: HttpResponseBase = view(request, *args, **kwargs)
            return response

        wrapper.required_capabilities = required  # type: ignore[attr-defined]
        return csrf_exempt(wrapper)

    return decorate
