"""JSON 404s for unknown paths under the protocol mount (spec §5.13: every protocol answer is
an error body), without shadowing anything of the project's own URLconf."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import NoReverseMatch, URLPattern, reverse
from django.urls.resolvers import RegexPattern, ResolverMatch

from ..errors import ProtocolError
from .base import ProtocolView, error_response

#: Path prefixes that are the protocol's own even when the app is mounted at the site root.
PROTOCOL_PREFIXES = ("agent/", "host/", "capability/", ".well-known/")


class NotFoundView(ProtocolView):
    """Every method on an unknown protocol path: ``404 not_found``, never the HTML page."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return error_response(ProtocolError("not_found", "No protocol endpoint at this path"))


def _mounted_at_root() -> bool:
    try:
        discovery = reverse("agentauth:discovery")
    except NoReverseMatch:
        return True  # not mounted under the usual namespace: be as narrow as possible
    return discovery.removesuffix(".well-known/agent-configuration") == "/"


class _UnderMount(URLPattern):
    """Matches any remaining path when the app has a mount of its own (``api/auth/``); at the
    site root it matches only the protocol's prefixes, so project URLs after it still resolve."""

    def resolve(self, path: str) -> ResolverMatch | None:
        if _mounted_at_root() and not path.startswith(PROTOCOL_PREFIXES):
            return None
        return super().resolve(path)


def catch_all() -> URLPattern:
    """The last pattern of ``agentauth.urls``."""
    pattern = RegexPattern(r"^", name="not_found", is_endpoint=True)
    return _UnderMount(pattern, NotFoundView.as_view(), name="not_found")
