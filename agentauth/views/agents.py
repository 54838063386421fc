"""Agent endpoints authenticated by host JWTs: register, status, revoke (spec §5.3, §5.5, §5.7)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from .. import lifecycle, ratelimit, registration, serializers
from ..errors import ProtocolError, invalid_request
from ..models import Agent, Host
from ..tokens import bearer_token, verify_host_jwt
from ..validation import check_fields
from .base import ProtocolView, json_response, read_json_body


def agent_of_host(agent_id: object, host: Host) -> Agent:
    """The agent named by the request, which MUST be registered under the calling host."""
    if not isinstance(agent_id, str) or not agent_id or len(agent_id) > 64:
        raise invalid_request("'agent_id' is required and must be a string")
    agent = Agent.objects.filter(pk=agent_id).first()
    if agent is None:
        raise ProtocolError("agent_not_found")
    if agent.host_id != host.pk:
        # Checklist Q22: 403 unauthorized, as in the spec's §5.13 example.
        raise ProtocolError("unauthorized", "This agent is not registered under the calling host")
    agent.host = host
    return agent


class RegisterView(ProtocolView):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        ratelimit.hit("ip", ratelimit.client_ip(request))
        verified = verify_host_jwt(bearer_token(request), allow_unknown=True, allow_pending=True)
        if verified.host is None:
            # Spec §8.13: unknown-host registration is the cheapest abuse; limit it hard per IP.
            ratelimit.hit("register_unknown_host", ratelimit.client_ip(request))
        body = read_json_body(request)
        return json_response(registration.register(verified, body))


class StatusView(ProtocolView):
    http_method_names = ["get", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        verified = verify_host_jwt(bearer_token(request), allow_pending=True)
        check_fields(request.GET, ("agent_id",))
        assert verified.host is not None
        agent = agent_of_host(request.GET.get("agent_id"), verified.host)
        # Clocks are applied before answering; a host poll does not extend the session (Q14).
        lifecycle.evaluate_clocks(agent)
        return json_response(serializers.agent_status(agent, agent.grants.all()))


class RevokeView(ProtocolView):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        verified = verify_host_jwt(bearer_token(request), allow_pending=True)
        body = read_json_body(request)
        check_fields(body, ("agent_id",))
        assert verified.host is not None
        agent = agent_of_host(body.get("agent_id"), verified.host)
        lifecycle.revoke_agent(agent, actor_type="host", actor_id=verified.host.pk)
        return json_response({"agent_id": agent.pk, "status": "revoked"})
