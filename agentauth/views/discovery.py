"""``GET /.well-known/agent-configuration`` (spec §5.1)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse

from .. import dpop, ratelimit
from ..conf import app_settings
from .base import ProtocolView, json_response

#: Discovery key -> URL name in ``agentauth.urls`` (spec §5.1 endpoint keys).
ENDPOINT_NAMES = (
    "register",
    "capabilities",
    "describe_capability",
    "execute",
    "request_capability",
    "status",
    "reactivate",
    "revoke",
    "revoke_host",
    "rotate_key",
    "rotate_host_key",
    "introspect",
)


def endpoints() -> dict[str, str]:
    """Endpoint paths relative to the issuer (spec §5.1), for the endpoints this server serves.

    Paths are derived from the URLconf, so they are right wherever the project mounts the app;
    an endpoint that is not routed is not advertised.
    """
    issuer_path = reverse("agentauth:discovery").removesuffix("/.well-known/agent-configuration")
    result = {}
    for key in ENDPOINT_NAMES:
        try:
            path = reverse(f"agentauth:{key}")
        except NoReverseMatch:
            continue
        result[key] = path.removeprefix(issuer_path) if issuer_path else path
    return result


def document() -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": "1.0-draft",
        "provider_name": app_settings.PROVIDER_NAME,
        "description": app_settings.PROVIDER_DESCRIPTION,
        "issuer": app_settings.ISSUER,
        "default_location": app_settings.DEFAULT_LOCATION,
        "algorithms": ["Ed25519"],
        "modes": list(app_settings.MODES),
        "approval_methods": list(app_settings.APPROVAL_METHODS),
        "endpoints": endpoints(),
    }
    doc.update(dpop.discovery_fields())
    if app_settings.JWKS_URI:
        doc["jwks_uri"] = app_settings.JWKS_URI
    return doc


class DiscoveryView(ProtocolView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        ratelimit.hit("ip", ratelimit.client_ip(request))
        response = json_response(document())
        response.headers["Cache-Control"] = f"public, max-age={app_settings.DISCOVERY_MAX_AGE}"
        return response
