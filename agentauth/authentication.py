"""DRF authentication for project views called by agents (``Authorization: Bearer <agent JWT>``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser

from .extras import missing_message

try:
    from rest_framework import exceptions
    from rest_framework.authentication import BaseAuthentication
    from rest_framework.request import Request
except ImportError as exc:  # the [drf] extra
    raise ImportError(
        missing_message("rest_framework", "agentauth.authentication (DRF authentication)")
    ) from exc

from . import guard
from .conf import app_settings
from .errors import ProtocolError
from .jws import strict_json_loads, typ_matches
from .keys import b64url_decode
from .tokens import VerifiedAgent


def discovery_challenge() -> str:
    """``WWW-Authenticate`` for agents (spec §5.14): where to discover and register."""
    return f'AgentAuth discovery="{app_settings.ISSUER}/.well-known/agent-configuration"'


class AgentAuthError(exceptions.APIException):
    """A protocol error rendered by DRF with the spec's body (§5.13) and status."""

    def __init__(self, error: ProtocolError) -> None:
        super().__init__()
        # Set as is: APIException(detail=...) would turn every leaf into a string ("actual":
        # null would become "None", 1000 would become "1000"), and DRF renders a dict detail as
        # the whole body.
        self.detail = error.body()
        self.status_code = error.status
        self.protocol_error = error
        # DRF's exception handler turns these two attributes into headers.
        if error.status == 401:
            # A DPoP error carries its own challenge (RFC 9449 §7.1).
            self.auth_header = error.headers.get("WWW-Authenticate") or discovery_challenge()
        if "Retry-After" in error.headers:
            self.wait = int(error.headers["Retry-After"])


class AgentAuthentication(BaseAuthentication):
    """Authenticates agent JWTs; ``request.auth`` is the verified agent.

    ``request.user`` is the person a delegated agent acts for, and anonymous for an autonomous
    agent: a view that needs to know it is an agent reads ``request.auth.agent``.

    Fails closed: an agent is let in only on views whose permissions include ``HasCapability``
    (or ``capability_required(...)``). Elsewhere an agent JWT is refused with 403
    ``unauthorized``, so listing this class in ``DEFAULT_AUTHENTICATION_CLASSES`` never hands an
    agent everything its person may do. A bearer token that is not an agent JWT is left to the
    other authenticators there.
    """

    def authenticate(self, request: Request) -> tuple[Any, VerifiedAgent] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        schemes = ("bearer ",) if app_settings.DPOP == "off" else ("bearer ", "dpop ")
        if not header.lower().startswith(schemes):
            return None  # let other authenticators try
        if not requires_capability(request):
            if not is_agent_jwt(header[len("bearer ") :].strip()):
                return None
            message = "Agents may only call views that require a capability"
            raise AgentAuthError(ProtocolError("unauthorized", message))
        try:
            verified = guard.authenticate(request._request)
        except ProtocolError as exc:
            raise AgentAuthError(exc) from exc
        return (verified.agent.user or AnonymousUser(), verified)

    def authenticate_header(self, request: Request) -> str:
        return discovery_challenge()


def requires_capability(request: Request) -> bool:
    """Whether the DRF view serving ``request`` checks capabilities (``HasCapability``).

    A request without its view (built by hand) does not: fail closed.
    """
    from .permissions import HasCapability  # permissions imports this module

    view = (getattr(request, "parser_context", None) or {}).get("view")
    if view is None or not hasattr(view, "get_permissions"):
        return False
    return any(isinstance(permission, HasCapability) for permission in view.get_permissions())


def is_agent_jwt(token: str) -> bool:
    """Whether the token's header says ``typ: agent+jwt``, unverified: only to decide whose
    token it is, never to trust it."""
    try:
        header = strict_json_loads(b64url_decode(token.split(".", 1)[0]))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and typ_matches(header, "agent+jwt")
