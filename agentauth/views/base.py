"""The base of every protocol endpoint: strict JSON in, spec-shaped JSON out, never a 500 page.

Protocol endpoints are plain Django views rather than DRF views: they parse bodies themselves so
that every failure (content type, size, JSON syntax, types, unknown members) maps to the spec's
``{"error", "message"}`` body, and the hot path skips content negotiation.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from ..conf import app_settings
from ..errors import ProtocolError, invalid_request
from ..jws import strict_json_loads
from ..unavailable import DEPENDENCY_ERRORS
from ..unavailable import protocol_error as unavailable_error

logger = logging.getLogger("agentauth")


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None, *, encoded: bool = False
) -> HttpResponse:
    """``data`` as a JSON answer; ``encoded``: ``data`` is the JSON text already."""
    if encoded:
        response = HttpResponse(data, status=status, content_type="application/json")
    else:
        response = JsonResponse(
            data, status=status, safe=False, json_dumps_params={"separators": (",", ":")}
        )
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(exc: ProtocolError) -> HttpResponse:
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault(
            "WWW-Authenticate",
            f'AgentAuth discovery="{app_settings.ISSUER}/.well-known/agent-configuration"',
        )
    return json_response(exc.body(), status=exc.status, headers=headers)


def read_json_body(request: HttpRequest, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or a spec error (400/413/415)."""
    limit = app_settings.MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise invalid_request("Invalid Content-Length") from None
    if declared > limit:
        raise ProtocolError("invalid_request", f"Body exceeds {limit} bytes", status=413)
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ProtocolError("invalid_request", f"Body exceeds {limit} bytes", status=413) from None
    if len(raw) > limit:
        raise ProtocolError("invalid_request", f"Body exceeds {limit} bytes", status=413)
    if not raw.strip():
        if allow_empty:
            return {}
        raise invalid_request("A JSON object body is required")
    if request.content_type != "application/json":
        raise ProtocolError("invalid_request", "Content-Type must be application/json", status=415)
    try:
        body = strict_json_loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise invalid_request("Body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_request("Body must be a JSON object")
    return body


_origin_warned = False


def warn_if_foreign_origin(request: HttpRequest) -> None:
    """In DEBUG, say once when requests arrive on an origin other than the issuer's.

    The discovery document and every token audience use ``AGENTAUTH_ISSUER``, never the
    ``Host`` header; a server started on another port than the issuer names advertises
    endpoints that clients then fail to reach or to authenticate against.
    """
    global _origin_warned
    if _origin_warned or not settings.DEBUG:
        return
    try:
        origin = f"{request.scheme}://{request.get_host()}"
    except SuspiciousOperation:
        return
    if origin != app_settings.ORIGIN:
        _origin_warned = True
        logger.warning(
            "agentauth: a request arrived on %s, but AGENTAUTH_ISSUER is %s; the discovery "
            "document and token audiences name the issuer's origin, so clients using %s will "
            "fail. Set AGENTAUTH_ISSUER to the URL clients use (e.g. make demo PORT=8001 sets "
            "it). Logged once.",
            origin,
            app_settings.ISSUER,
            origin,
        )


@method_decorator(csrf_exempt, name="dispatch")
class ProtocolView(View):
    """JWT-authenticated JSON endpoint: CSRF does not apply (no cookies are used)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        method = (request.method or "").lower()
        warn_if_foreign_origin(request)
        try:
            if method not in self.http_method_names or not hasattr(self, method):
                allowed = self.allow_header()
                raise ProtocolError(
                    "method_not_allowed",
                    f"Use {allowed} on this endpoint",
                    headers={"Allow": allowed},
                )
            response: HttpResponseBase = getattr(self, method)(request, *args, **kwargs)
            return response
        except ProtocolError as exc:
            return error_response(exc)
        except DEPENDENCY_ERRORS as exc:
            # The database, cache or broker is down or hung: a retry will work (spec §5.13).
            return error_response(unavailable_error(exc))
        except SuspiciousOperation:
            # e.g. TooManyFieldsSent from request.GET: the client's fault, as Django answers it.
            return error_response(invalid_request("Malformed request"))
        except Exception:
            # The body never leaks internals; the log keeps the traceback.
            logger.exception("agentauth: unhandled error in %s", request.path)
            return error_response(ProtocolError("internal_error"))

    def allow_header(self) -> str:
        return ", ".join(m.upper() for m in self.http_method_names if hasattr(self, m))

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = HttpResponse(status=204)
        response.headers["Allow"] = self.allow_header()
        return response
