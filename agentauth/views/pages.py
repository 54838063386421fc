"""What every page for people gets, in one place: security headers and a 503 page.

The approval pages show attacker-chosen text (agent and host names, reasons, binding messages)
next to buttons that grant access, so they are locked down beyond what templates' autoescaping
gives (spec §8.10, §8.11):

- ``Content-Security-Policy`` with no inline script or style and nothing from other origins: a
  markup injection that slipped past sanitising still cannot run script, load a remote resource
  or post a form elsewhere;
- ``Cache-Control: no-store``: pending requests and the connected-apps list stay out of shared
  and back-button caches;
- ``Referrer-Policy: same-origin``: approval ids in URLs are not sent to other sites (not
  ``no-referrer``: browsers then send ``Origin: null`` and Django's CSRF check refuses forms);
- ``X-Content-Type-Options: nosniff`` and frame denial (``X-Frame-Options: DENY`` and
  ``frame-ancestors 'none'``): no clickjacking of the approve button.

Not found and not allowed get a plain page under the same headers. When the cache or the
database is down the person gets a readable 503 page with
``Retry-After``, never a bare 500 (and a JSON 503 from the endpoints the pages' script calls).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext_lazy

from ..conf import app_settings
from ..errors import ProtocolError
from ..unavailable import is_dependency_failure

logger = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
RETRY_AFTER_SECONDS = 30

View = TypeVar("View", bound=Callable[..., HttpResponseBase])


def secure_headers(response: HttpResponseBase) -> HttpResponseBase:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    add_never_cache_headers(response)  # includes no-store
    return response


PROBLEMS = {
    404: (
        gettext_lazy("Not found"),
        gettext_lazy("There is no such request, or it has expired or been decided."),
    ),
    403: (gettext_lazy("Not allowed"), gettext_lazy("You cannot do that here.")),
    503: (
        gettext_lazy("Temporarily unavailable"),
        gettext_lazy(
            "This page cannot be shown right now because a service it needs is not answering. "
            "Nothing was approved or changed."
        ),
    ),
}


def render_page(
    request: HttpRequest, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    """Render a page for a person inside ``AGENTAUTH_BASE_TEMPLATE`` (the site's look)."""
    full = {"agentauth_base": app_settings.BASE_TEMPLATE, **(context or {})}
    return render(request, template, full, status=status)


def problem_page(status: int, *, as_json: bool = False) -> HttpResponseBase:
    """A plain page for 403, 404 and 503, rendered without the request: the context processors
    (messages, the session behind them) may need the very service that is down."""
    title, message = PROBLEMS[status]
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else {}
    if as_json:
        # API text stays English, whatever language the page is in.
        code = {404: "not_found", 403: "unauthorized", 503: "temporarily_unavailable"}[status]
        with translation.override("en"):
            text = str(message)
        return JsonResponse({"error": code, "message": text}, status=status, headers=headers)
    context: dict[str, Any] = {"title": title, "message": message}
    if status == 503:
        context["retry_after"] = str(RETRY_AFTER_SECONDS)
    try:
        html: str = render_to_string("agentauth/problem.html", context)
    except Exception:
        logger.exception("agentauth: the %s page could not be rendered", status)
        html = f"{title}. {message}"
    return HttpResponse(html, status=status, headers=headers)


def _is_outage(exc: Exception) -> bool:
    if isinstance(exc, ProtocolError):
        return exc.code == "temporarily_unavailable"
    return is_dependency_failure(exc)  # the database, the cache or the broker


def _guarded(view: View, *, as_json: bool) -> View:
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            response = view(request, *args, **kwargs)
        except Http404:
            response = problem_page(404, as_json=as_json)
        except PermissionDenied:
            response = problem_page(403, as_json=as_json)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            logger.error("agentauth: %s unavailable: %s", request.path, exc)
            response = problem_page(503, as_json=as_json)
        return secure_headers(response)

    return cast(View, wrapped)


def person_page(view: View) -> View:
    """For an HTML page a person opens."""
    return _guarded(view, as_json=False)


def person_page_api(view: View) -> View:
    """For a JSON endpoint the pages' own script calls (the WebAuthn ceremonies)."""
    return _guarded(view, as_json=True)
