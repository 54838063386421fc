"""Authentication helpers shared by the protocol views."""

from __future__ import annotations

from collections.abc import Collection

from django.http import HttpRequest

from .. import clocks, dpop, jws, ratelimit
from ..conf import app_settings
from ..errors import ProtocolError
from ..tokens import (
    AGENT_TYP,
    HOST_TYP,
    VerifiedAgent,
    VerifiedHost,
    bearer_token,
    verify_agent_jwt,
    verify_host_jwt,
)


def authenticate_agent(request: HttpRequest, audiences: Collection[str]) -> VerifiedAgent:
    """Verify the agent JWT (and its DPoP proof, §4.5 step 9), meter the agent, slide its
    session (§2.4)."""
    mode = app_settings.DPOP
    if mode == "off":
        verified = verify_agent_jwt(bearer_token(request), audiences=audiences)
    else:
        verified = dpop.authenticate(request, audiences, mode)
    ratelimit.hit("agent", verified.agent.pk)
    clocks.touch(verified.agent)
    return verified


def execute_audiences() -> set[str]:
    """``aud`` values the default execute location accepts (§4.3, spec §6.10)."""
    audiences = {app_settings.DEFAULT_LOCATION}
    if app_settings.EXECUTE_ACCEPTS_ISSUER_AUD:
        audiences.add(app_settings.ISSUER)
    return audiences


def optional_identity(request: HttpRequest) -> VerifiedAgent | VerifiedHost | None:
    """For list/describe: no token, a host JWT or an agent JWT (spec §5.2).

    A bad token is a 401, never a silent downgrade to anonymous (§5.2). A valid host JWT
    from an unknown or pending host counts as anonymous (§5.2).
    """
    if not request.META.get("HTTP_AUTHORIZATION"):
        return None
    token = dpop.access_token(request)
    header = jws.parse(token).header
    if jws.typ_matches(header, AGENT_TYP):
        return authenticate_agent(request, {app_settings.ISSUER})
    if jws.typ_matches(header, HOST_TYP):
        verified = verify_host_jwt(token, allow_unknown=True, allow_pending=True)
        if verified.host is None or verified.host.status != "active":
            return None
        return verified
    raise ProtocolError("invalid_jwt", "JWT typ must be host+jwt or agent+jwt")
