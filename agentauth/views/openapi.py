"""``GET {mount}/openapi.json``: the protocol's OpenAPI document, unless the project opts out."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from .. import openapi, ratelimit
from ..conf import app_settings
from ..errors import ProtocolError
from .base import ProtocolView, json_response


class OpenApiView(ProtocolView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        if not app_settings.OPENAPI_ENABLED:
            # Opted out: the same answer as any unknown path under the mount.
            raise ProtocolError("not_found", "No protocol endpoint at this path")
        ratelimit.hit("ip", ratelimit.client_ip(request))
        response = json_response(openapi.document())
        response.headers["Cache-Control"] = f"public, max-age={app_settings.DISCOVERY_MAX_AGE}"
        return response
