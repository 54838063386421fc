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
            self.auth_header = discovery_challenge()
        if "Retry-After" in error.headers:
            self.wait = int(error.headers["Retry-After"])


class AgentAuthentication(BaseAuthentication):
    """Authenticates agent JWTs; ``request.auth`` is the verified agent.

    ``request.user`` is the person a delegated agent acts for, and anonymous for an autonomous
    agent: a view that needs to know it is an agent reads ``request.auth.agent``.
    """

    def authenticate(self, request: Request) -> tuple[Any, VerifiedAgent] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.lower().startswith("bearer "):
            return None  # let other authenticators try
        try:
            verified = guard.authenticate(request._request)
        except ProtocolError as exc:
            raise AgentAuthError(exc) from exc
        return (verified.agent.user or AnonymousUser(), verified)

    def authenticate_header(self, request: Request) -> str:
        return discovery_challenge()
