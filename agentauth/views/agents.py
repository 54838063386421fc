"""Agent endpoints authenticated by host JWTs: register, status, revoke (spec §5.3, §5.5, §5.7)."""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from .. import agents, approvals, clocks, fastregister, grants, ratelimit, registration, wire
from ..capabilities import registry
from ..conf import app_settings
from ..errors import ProtocolError, invalid_request
from ..models import Agent, Host
from ..tokens import bearer_token, verify_agent_jwt, verify_host_jwt
from ..validation import check_fields
from .auth import authenticate_agent
from .base import ProtocolView, json_response, read_json_body


def agent_of_host(agent_id: object, host: Host) -> Agent:
    """The agent named by the request, which MUST be registered under the calling host."""
    # NUL is refused: PostgreSQL cannot compare it (a DataError, so a 500).
    if not isinstance(agent_id, str) or not agent_id or len(agent_id) > 64 or "\x00" in agent_id:
        raise invalid_request("'agent_id' is required and must be a string")
    agent = Agent.objects.filter(pk=agent_id).first()
    if agent is None:
        raise ProtocolError("agent_not_found")
    if agent.host_id != host.pk:
        # Spec §5.5: 403 unauthorized, as in the spec's §5.13 example.
        raise ProtocolError("unauthorized", "This agent is not registered under the calling host")
    agent.host = host
    return agent


class RegisterView(ProtocolView):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        ratelimit.hit("ip", ratelimit.client_ip(request))
        try:  # read once, for the hot path and the general path alike
            body: dict[str, Any] | None = read_json_body(request)
        except ProtocolError as exc:
            body, unreadable = None, exc
        if body is not None:
            fast = self.fast(request, body)
            if fast is not None:
                return fast
        verified = verify_host_jwt(bearer_token(request), allow_unknown=True, allow_pending=True)
        if verified.host is None:
            # Spec §8.13: unknown-host registration is the cheapest abuse; limit it hard per IP.
            ratelimit.hit("register_unknown_host", ratelimit.client_ip(request))
        if body is None:
            raise unreadable
        req = registration.RegistrationRequest.parse(body)
        return json_response(wire.registration(*registration.register(verified, req)))

    def fast(self, request: HttpRequest, body: dict[str, Any]) -> HttpResponse | None:
        """The hot path (``fastregister``); ``None``: answer on the general path."""
        try:
            token = bearer_token(request)
        except ProtocolError:
            return None
        try:
            return json_response(fastregister.register(token, body))
        except fastregister.Fallback:
            return None


class StatusView(ProtocolView):
    http_method_names = ["get", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        # A rejected host still reads its own agents: denial must be observable (spec §7.1).
        verified = verify_host_jwt(bearer_token(request), allow_pending=True, allow_rejected=True)
        check_fields(request.GET, ("agent_id",))
        assert verified.host is not None
        agent = agent_of_host(request.GET.get("agent_id"), verified.host)
        approvals.pace_polling(agent)
        # Clocks are applied before answering; a host poll does not extend the session (§2.4).
        clocks.evaluate_clocks(agent)
        return json_response(wire.agent_status(agent, agent.grants.all()))


class RevokeView(ProtocolView):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        verified = verify_host_jwt(bearer_token(request), allow_pending=True)
        body = read_json_body(request)
        check_fields(body, ("agent_id",))
        assert verified.host is not None
        agent = agent_of_host(body.get("agent_id"), verified.host)
        agents.revoke_agent(agent, actor_type="host", actor_id=verified.host.pk)
        return json_response(wire.agent_revoked(agent))


class RequestCapabilityView(ProtocolView):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        verified = authenticate_agent(request, {app_settings.ISSUER})
        req = grants.CapabilityRequest.parse(read_json_body(request))
        result = grants.request_capabilities(verified.agent, req)
        return json_response(wire.capability_request(*result))


class IntrospectView(ProtocolView):
    """RFC 7662-style introspection (spec §5.12): any invalid token is ``{"active": false}``.

    Callers are resource servers holding one of ``AGENTAUTH_INTROSPECTION_TOKENS``. Without
    them the endpoint is closed, except under ``DEBUG`` (system check ``agentauth.E040``), where
    an unauthenticated caller still never learns which user an agent acts for.
    """

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        ratelimit.hit("introspect", ratelimit.client_ip(request))
        authenticated = caller_is_resource_server(request)
        body = read_json_body(request)
        check_fields(body, ("token",))
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise invalid_request("'token' is required and must be a string")
        try:
            # Read-only: introspection does not spend the token's jti (§4.6); any
            # audience this server issues tokens for is acceptable (§5.12).
            verified = verify_agent_jwt(token, audiences=introspection_audiences(), consume=False)
        except ProtocolError:
            return json_response(wire.inactive())
        names = grants.effective_names(verified.agent)
        return json_response(
            wire.introspection(
                verified.agent, names, verified.capabilities_claim, disclose_user=authenticated
            )
        )


def caller_is_resource_server(request: HttpRequest) -> bool:
    """``True`` for a caller with a configured secret; ``False`` for an anonymous caller, which
    only ``DEBUG`` lets through. Refuses everyone else before the token is looked at."""
    secrets = app_settings.INTROSPECTION_TOKENS
    if not secrets:
        if settings.DEBUG:
            return False
        raise ProtocolError(
            "authentication_required",
            "Introspection is not configured on this server (AGENTAUTH_INTROSPECTION_TOKENS)",
        )
    scheme, _, presented = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    valid = False
    for secret in secrets:  # every secret compared, in constant time
        valid |= hmac.compare_digest(presented.encode(), secret.encode())
    if scheme.lower() != "bearer" or not valid:
        raise ProtocolError(
            "authentication_required", "Introspection needs the resource server's secret"
        )
    return True


def introspection_audiences() -> set[str]:
    audiences = {app_settings.ISSUER, app_settings.DEFAULT_LOCATION}
    audiences.update(c.url for c in registry if c.url)
    return audiences


class ReactivateView(ProtocolView):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        verified = verify_host_jwt(bearer_token(request))
        body = read_json_body(request)
        check_fields(body, ("agent_id",))
        assert verified.host is not None
        agent = agent_of_host(body.get("agent_id"), verified.host)
        result = agents.reactivate(agent, actor_id=verified.host.pk)
        return json_response(wire.reactivation(*result))


class RotateKeyView(ProtocolView):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        verified = verify_host_jwt(bearer_token(request))
        body = read_json_body(request)
        check_fields(body, ("agent_id", "public_key"))
        assert verified.host is not None
        agent = agent_of_host(body.get("agent_id"), verified.host)
        if "public_key" not in body:
            raise invalid_request("'public_key' is required")
        agent = agents.rotate_agent_key(agent, body["public_key"], actor_id=verified.host.pk)
        return json_response(wire.agent_key_rotated(agent))
