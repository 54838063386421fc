"""Project views guarded by capabilities (spec §2.12 ``location``, §2.15, §5.11, §5.14).

The example project's ``support`` app is mounted at ``/support/``:

- ``GET /support/tickets/<id>``: a plain view behind ``@requires_capability("ticket.read")``;
- ``POST /support/api/tickets/<id>/close``: a DRF view with ``AgentAuthentication`` and
  ``capability_required("ticket.close")``;
- ``POST /support/escalate``: the ``location`` of ``ticket.escalate``; agents send the execute
  contract there with ``aud`` = that URL.

Tokens come from ``agentauth.testing``; every request goes through the real middleware stack.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, JsonResponse
from django.test import Client, RequestFactory
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from agentauth import agents
from agentauth.authentication import AgentAuthentication, AgentAuthError
from agentauth.capabilities import Capability, register, registry
from agentauth.decorators import requires_capability
from agentauth.models import AgentMode, AuditEvent, HostStatus
from agentauth.permissions import HasCapability, capability_required
from agentauth.testing import agent_token, make_agent, make_host
from example_project.support import views as support_views
from example_project.support.models import Ticket

pytestmark = pytest.mark.django_db

ISSUER = "http://testserver/api/auth"
DEFAULT_LOCATION = ISSUER + "/capability/execute"
ESCALATE_URL = "http://testserver/support/escalate"
CHALLENGE = f'AgentAuth discovery="{ISSUER}/.well-known/agent-configuration"'


# --- helpers ------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def body_of(response: Any) -> Any:
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    return json.loads(response.content)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """A spec-shaped error (§5.13): the status, ``error`` and a non-empty ``message``."""
    body = body_of(response)
    assert response.status_code == status, (response.status_code, body)
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    result: dict[str, Any] = body
    return result


@pytest.fixture
def tickets() -> dict[str, Ticket]:
    return {
        "low": Ticket.objects.create(pk=1, subject="Printer jam", priority="low"),
        "critical": Ticket.objects.create(pk=2, subject="Site down", priority="critical"),
    }


@pytest.fixture
def host(user: Any) -> Any:
    host, _ = make_host(user=user)
    return host


def agent_with(host: Any, grants: Any, **kwargs: Any) -> tuple[Any, Any]:
    return make_agent(host, grants=grants, **kwargs)


def get_ticket(client: Client, ticket_id: Any, token: str | None, **extra: Any) -> Any:
    headers = bearer(token) if token else {}
    return client.get(f"/support/tickets/{ticket_id}", **headers, **extra)


def close_ticket(client: Client, ticket_id: Any, token: str | None, body: Any) -> Any:
    headers = bearer(token) if token else {}
    return client.post(
        f"/support/api/tickets/{ticket_id}/close",
        json.dumps(body),
        content_type="application/json",
        **headers,
    )


def escalate(client: Client, token: str | None, body: Any, path: str = "/support/escalate") -> Any:
    headers = bearer(token) if token else {}
    return client.post(path, json.dumps(body), content_type="application/json", **headers)


# --- @requires_capability on a plain view -------------------------------------------------------


def test_no_token_is_a_spec_401_with_the_challenge(client: Client, tickets: Any) -> None:
    # spec: §5.14, §5.13 — the §5.13 body and WWW-Authenticate: AgentAuth discovery="..."
    response = get_ticket(client, 1, None)
    assert_error(response, 401, "invalid_jwt")
    assert response["WWW-Authenticate"] == CHALLENGE
    assert response["Cache-Control"] == "no-store"


def test_plain_view_expects_the_issuer_as_audience(client: Client, host: Any, tickets: Any) -> None:
    # spec: §4.5, §4.3 — the URL is no capability's location, so aud = issuer.
    agent, key = agent_with(host, ["ticket.read"])
    own_url = "http://testserver/support/tickets/1"
    for audience in (own_url, DEFAULT_LOCATION, "http://testserver"):
        response = get_ticket(client, 1, agent_token(agent, key, audience=audience))
        assert_error(response, 401, "invalid_jwt")
        assert response["WWW-Authenticate"] == CHALLENGE
    response = get_ticket(client, 1, agent_token(agent, key, audience=ISSUER))
    assert response.status_code == 200


def test_granted_agent_reads_the_ticket(client: Client, host: Any, tickets: Any) -> None:
    # spec: §5.12, §2.15 — the view runs and returns its data.
    agent, key = agent_with(host, ["ticket.read"])
    response = get_ticket(client, 1, agent_token(agent, key))
    assert response.status_code == 200
    data = body_of(response)["data"]
    assert data["ticket_id"] == "1" and data["subject"] == "Printer jam"


def test_decorator_sets_the_agent_on_the_request(host: Any) -> None:
    # The attributes a guarded view reads: request.agent, agent_grant(s), agent_arguments.
    agent, key = agent_with(host, {"ticket.read": {"ticket_id": "7"}, "ticket.close": None})
    seen: dict[str, Any] = {}

    @requires_capability("ticket.read", "ticket.close")
    def view(request: HttpRequest, ticket_id: str) -> JsonResponse:
        seen["agent"] = request.agent  # type: ignore[attr-defined]
        seen["grant"] = request.agent_grant  # type: ignore[attr-defined]
        seen["grants"] = request.agent_grants  # type: ignore[attr-defined]
        seen["arguments"] = request.agent_arguments  # type: ignore[attr-defined]
        return JsonResponse({"ok": True})

    request = RequestFactory().get("/anywhere/7", **bearer(agent_token(agent, key)))
    response = view(request, ticket_id="7")
    assert response.status_code == 200
    assert seen["agent"].pk == agent.pk
    assert seen["grant"].capability == "ticket.read"
    assert seen["grant"].constraints == {"ticket_id": "7"}
    assert sorted(seen["grants"]) == ["ticket.close", "ticket.read"]
    assert seen["arguments"] == {"ticket_id": "7"}
    # The arguments are schema-checked too (both capabilities' schemas): a query parameter
    # neither capability takes is refused, not handed to the view unchecked (spec §2.13).
    request = RequestFactory().get("/anywhere/7?verbose=1", **bearer(agent_token(agent, key)))
    assert_error(view(request, ticket_id="7"), 400, "invalid_request")


def test_every_named_capability_is_required(host: Any) -> None:
    # Holding one of two required capabilities is not enough.
    agent, key = agent_with(host, ["ticket.read"])

    @requires_capability("ticket.read", "ticket.close")
    def view(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"ok": True})

    request = RequestFactory().get("/anywhere?ticket_id=1", **bearer(agent_token(agent, key)))
    assert_error(view(request), 403, "capability_not_granted")


def test_agent_without_the_grant_is_refused(client: Client, host: Any, tickets: Any) -> None:
    # spec: §2.15, §5.14 — a valid JWT without the capability is a 403, not a 401 challenge.
    agent, key = agent_with(host, ["ticket.close"])
    response = get_ticket(client, 1, agent_token(agent, key))
    assert_error(response, 403, "capability_not_granted")
    assert "WWW-Authenticate" not in response


def test_capabilities_claim_must_name_the_capability(
    client: Client, host: Any, tickets: Any
) -> None:
    # spec: §2.15, §4.3 — a JWT scoped to other capabilities does not open this view.
    agent, key = agent_with(host, ["ticket.read", "ticket.close"])
    token = agent_token(agent, key, capabilities=["ticket.close"])
    assert_error(get_ticket(client, 1, token), 403, "capability_not_granted")
    token = agent_token(agent, key, capabilities=["ticket.read"])
    assert get_ticket(client, 1, token).status_code == 200


def test_url_kwargs_are_checked_against_constraints(
    client: Client, host: Any, tickets: Any
) -> None:
    # spec: §2.13 — the grant is for ticket 1 only.
    agent, key = agent_with(host, {"ticket.read": {"ticket_id": "1"}})
    assert get_ticket(client, 1, agent_token(agent, key)).status_code == 200
    body = assert_error(get_ticket(client, 2, agent_token(agent, key)), 403, "constraint_violated")
    assert body["violations"] == [{"field": "ticket_id", "constraint": "1", "actual": "2"}]


def test_repeating_a_constrained_name_is_refused(client: Client, host: Any, tickets: Any) -> None:
    # A query parameter may not give the URL kwarg a second value, nor repeat itself.
    agent, key = agent_with(host, {"ticket.read": {"ticket_id": "1"}})
    response = get_ticket(client, 1, agent_token(agent, key), QUERY_STRING="ticket_id=2")
    assert_error(response, 400, "invalid_request")
    response = get_ticket(
        client, 1, agent_token(agent, key), QUERY_STRING="ticket_id=1&ticket_id=2"
    )
    assert_error(response, 400, "invalid_request")
    # The same value twice is no contradiction.
    response = get_ticket(client, 1, agent_token(agent, key), QUERY_STRING="ticket_id=1")
    assert response.status_code == 200


def test_execute_contract_body_cannot_override_the_url(
    client: Client, host: Any, tickets: Any
) -> None:
    # spec: §2.13 — away from a location, {"capability","arguments"} is not the argument source:
    # stating ticket 1 in the body while the URL names ticket 2 must not pass a ticket-1 grant.
    # Its members are plain body members, which ticket.read's input schema does not take (400).
    agent, key = agent_with(host, {"ticket.read": {"ticket_id": "1"}})
    contract = {"capability": "ticket.read", "arguments": {"ticket_id": "1"}}
    response = client.generic(
        "GET",
        "/support/tickets/2",
        json.dumps(contract),
        content_type="application/json",
        **bearer(agent_token(agent, key)),
    )
    assert_error(response, 400, "invalid_request")


def test_revoked_agent_and_host(client: Client, user: Any, tickets: Any) -> None:
    # spec: §2.6, §5.13 — a validly signed JWT of a revoked agent or host is a state 403.
    host, _ = make_host(user=user)
    agent, key = agent_with(host, ["ticket.read"])
    agents.revoke_agent(agent, actor_type="user")
    assert_error(get_ticket(client, 1, agent_token(agent, key)), 403, "agent_revoked")

    revoked_host, _ = make_host(user=user, status=HostStatus.REVOKED)
    other, other_key = agent_with(revoked_host, ["ticket.read"])
    assert_error(get_ticket(client, 1, agent_token(other, other_key)), 403, "host_revoked")


def test_calls_are_audited(client: Client, host: Any, tickets: Any) -> None:
    # spec: §11 — allowed and refused calls each leave a row with the jti.
    agent, key = agent_with(host, {"ticket.read": {"ticket_id": "1"}})
    ok_token = agent_token(agent, key)
    assert get_ticket(client, 1, ok_token).status_code == 200
    refused_token = agent_token(agent, key)
    assert get_ticket(client, 2, refused_token).status_code == 403

    rows = AuditEvent.objects.filter(agent_id=agent.pk, capability="ticket.read")
    executed = rows.get(kind="capability.executed")
    assert executed.outcome == "ok" and executed.actor_type == "agent"
    assert executed.data["mode"] == "view"
    assert executed.data["jti"]
    assert executed.host_id == host.pk and executed.user_id == str(host.user_id)
    refused = rows.get(kind="capability.refused")
    assert refused.outcome == "error" and refused.error_code == "constraint_violated"
    assert refused.data["jti"] != executed.data["jti"]


def test_guarded_views_need_no_csrf_token(client: Client, host: Any, tickets: Any) -> None:
    # Bearer-authenticated views are CSRF-exempt (no cookie is involved).
    csrf_client = Client(enforce_csrf_checks=True)
    # The check really is on for this client: a cookie-authenticated POST is refused.
    assert csrf_client.post("/accounts/login/", {"username": "x"}).status_code == 403

    agent, key = agent_with(host, ["ticket.escalate", "ticket.close"])
    contract = {"capability": "ticket.escalate", "arguments": {"ticket_id": "1"}}
    response = escalate(csrf_client, agent_token(agent, key, audience=ESCALATE_URL), contract)
    assert response.status_code == 200, response.content
    response = close_ticket(csrf_client, 1, agent_token(agent, key), {"priority": "critical"})
    assert response.status_code == 200, response.content


# --- DRF: AgentAuthentication + capability_required -------------------------------------------

CLOSE_GRANT = {"ticket.close": {"priority": {"not_in": ["critical"]}}}


def test_drf_closes_a_low_ticket(client: Client, host: Any, tickets: Any) -> None:
    # spec: §2.13 — within the constraint the view runs.
    agent, key = agent_with(host, CLOSE_GRANT)
    response = close_ticket(client, 1, agent_token(agent, key), {"priority": "low"})
    assert response.status_code == 200
    data = body_of(response)["data"]
    assert data["ticket_id"] == "1" and data["status"] == "closed"
    assert Ticket.objects.get(pk=1).status == Ticket.Status.CLOSED


def test_drf_constraint_violation_has_the_spec_body(
    client: Client, host: Any, tickets: Any
) -> None:
    # spec: §2.13, §5.13 — DRF must not wrap ({"detail": ...}) or stringify the body.
    agent, key = agent_with(host, CLOSE_GRANT)
    response = close_ticket(client, 2, agent_token(agent, key), {"priority": "critical"})
    body = assert_error(response, 403, "constraint_violated")
    assert set(body) == {"error", "message", "violations"}
    assert body["violations"] == [
        {"field": "priority", "constraint": {"not_in": ["critical"]}, "actual": "critical"}
    ]
    assert Ticket.objects.get(pk=2).status == Ticket.Status.OPEN


def test_drf_missing_constrained_field_fails_closed(
    client: Client, host: Any, tickets: Any
) -> None:
    # spec: §2.13 — no priority, no closing under a priority constraint.
    agent, key = agent_with(host, CLOSE_GRANT)
    body = assert_error(
        close_ticket(client, 2, agent_token(agent, key), {}), 403, "constraint_violated"
    )
    # JSON null, not the string "None".
    assert body["violations"] == [
        {"field": "priority", "constraint": {"not_in": ["critical"]}, "actual": None}
    ]
    assert Ticket.objects.get(pk=2).status == Ticket.Status.OPEN


def test_drf_stated_priority_must_be_the_real_one(client: Client, host: Any, tickets: Any) -> None:
    # The view's own rule that gives the constraint its meaning: claiming "low" for a critical
    # ticket passes the constraint but not the view.
    agent, key = agent_with(host, CLOSE_GRANT)
    response = close_ticket(client, 2, agent_token(agent, key), {"priority": "low"})
    assert_error(response, 400, "invalid_request")
    assert Ticket.objects.get(pk=2).status == Ticket.Status.OPEN


def test_drf_execute_contract_body_cannot_dodge_the_constraint(
    client: Client, host: Any, tickets: Any
) -> None:
    # spec: §2.13 — stating priority "low" inside an execute-contract body must not be checked
    # in place of the request the view acts on; its members are plain body members, which
    # ticket.close's input schema does not take (400).
    agent, key = agent_with(host, CLOSE_GRANT)
    contract = {"capability": "ticket.close", "arguments": {"ticket_id": "2", "priority": "low"}}
    response = close_ticket(client, 2, agent_token(agent, key), contract)
    assert_error(response, 400, "invalid_request")
    assert Ticket.objects.get(pk=2).status == Ticket.Status.OPEN


def test_drf_no_token_is_a_spec_401(client: Client, tickets: Any) -> None:
    # spec: §5.14, §5.13 — the same body and challenge as the plain decorator.
    response = close_ticket(client, 1, None, {"priority": "low"})
    body = assert_error(response, 401, "invalid_jwt")
    assert "detail" not in body
    assert response["WWW-Authenticate"] == CHALLENGE
    # Another scheme is no agent credential either.
    response = client.post(
        "/support/api/tickets/1/close",
        json.dumps({"priority": "low"}),
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ=",
    )
    assert_error(response, 401, "invalid_jwt")
    assert Ticket.objects.get(pk=1).status == Ticket.Status.OPEN


def test_drf_bad_token_is_a_spec_401(client: Client, host: Any, tickets: Any) -> None:
    # spec: §5.14, §4.3 — a JWT for another audience.
    agent, key = agent_with(host, CLOSE_GRANT)
    token = agent_token(agent, key, audience="https://elsewhere.example")
    response = close_ticket(client, 1, token, {"priority": "low"})
    assert_error(response, 401, "invalid_jwt")
    assert response["WWW-Authenticate"] == CHALLENGE


def test_drf_state_errors_keep_their_codes(client: Client, host: Any, tickets: Any) -> None:
    agent, key = agent_with(host, ["ticket.read"])
    assert_error(
        close_ticket(client, 1, agent_token(agent, key), {"priority": "low"}),
        403,
        "capability_not_granted",
    )
    agents.revoke_agent(agent, actor_type="user")
    assert_error(
        close_ticket(client, 1, agent_token(agent, key), {"priority": "low"}), 403, "agent_revoked"
    )


class WhoAmI(APIView):
    """A throwaway DRF view reporting what authentication put on the request."""

    authentication_classes = [AgentAuthentication]
    permission_classes = [capability_required("ticket.read")]

    def get(self, request: Request) -> Response:
        user = request.user
        return Response(
            {
                "authenticated": bool(user.is_authenticated),
                "username": getattr(user, "username", None),
                "agent": request.auth.agent.pk,
                "grant": request.agent_grant.capability,  # type: ignore[attr-defined]
            }
        )


def test_drf_user_is_the_delegating_person(user: Any) -> None:
    # spec: §3.2 — a delegated agent acts for its host's linked user; an autonomous one for nobody.
    host, _ = make_host(user=user)
    delegated, key = agent_with(host, ["ticket.read"])
    request = APIRequestFactory().get("/whoami?ticket_id=1", **bearer(agent_token(delegated, key)))
    response = WhoAmI.as_view()(request)
    assert response.status_code == 200
    assert response.data == {
        "authenticated": True,
        "username": "alice",
        "agent": delegated.pk,
        "grant": "ticket.read",
    }

    bot_host, _ = make_host(user=None)
    bot, bot_key = agent_with(bot_host, ["ticket.read"], mode=AgentMode.AUTONOMOUS)
    request = APIRequestFactory().get("/whoami?ticket_id=1", **bearer(agent_token(bot, bot_key)))
    response = WhoAmI.as_view()(request)
    assert response.status_code == 200
    assert response.data["authenticated"] is False and response.data["agent"] == bot.pk


def test_authentication_returns_the_linked_user_object(user: Any) -> None:
    host, _ = make_host(user=user)
    agent, key = agent_with(host, ["ticket.read"])
    request = Request(
        APIRequestFactory().get("/x", **bearer(agent_token(agent, key))),
        parser_context={"view": WhoAmI()},
    )
    result = AgentAuthentication().authenticate(request)
    assert result is not None
    who, verified = result
    assert who == user and verified.agent.pk == agent.pk
    # Without a Bearer header the authenticator steps aside for others.
    assert AgentAuthentication().authenticate(Request(APIRequestFactory().get("/x"))) is None
    bot_host, _ = make_host()
    bot, bot_key = agent_with(bot_host, [], mode=AgentMode.AUTONOMOUS)
    request = Request(
        APIRequestFactory().get("/x", **bearer(agent_token(bot, bot_key))),
        parser_context={"view": WhoAmI()},
    )
    result = AgentAuthentication().authenticate(request)
    assert result is not None and isinstance(result[0], AnonymousUser)
    # Without a view that requires a capability, an agent JWT is refused (fails closed).
    request = Request(APIRequestFactory().get("/x", **bearer(agent_token(bot, bot_key))))
    with pytest.raises(AgentAuthError):
        AgentAuthentication().authenticate(request)


# --- a capability's own location: POST /support/escalate ---------------------------------------

ESCALATE = {"capability": "ticket.escalate", "arguments": {"ticket_id": "1"}}


def test_location_runs_the_execute_contract(client: Client, host: Any, tickets: Any) -> None:
    # spec: §2.15, §5.12, §2.12 — aud = the location URL, body = {"capability", "arguments"}.
    agent, key = agent_with(host, ["ticket.escalate"])
    response = escalate(client, agent_token(agent, key, audience=ESCALATE_URL), ESCALATE)
    assert response.status_code == 200
    assert body_of(response)["data"]["priority"] == "critical"
    assert Ticket.objects.get(pk=1).priority == "critical"


@pytest.mark.parametrize("audience", [ISSUER, DEFAULT_LOCATION, ESCALATE_URL + "/"])
def test_location_audience_must_be_exact(
    client: Client, host: Any, tickets: Any, audience: str
) -> None:
    # spec: §5.12, §4.5, §4.3
    agent, key = agent_with(host, ["ticket.escalate"])
    response = escalate(client, agent_token(agent, key, audience=audience), ESCALATE)
    assert_error(response, 401, "invalid_jwt")
    assert Ticket.objects.get(pk=1).priority == "low"


def test_describe_shows_the_location(client: Client, host: Any) -> None:
    # spec: §2.12 — the URL name "support:escalate" is published as a URL.
    agent, key = agent_with(host, ["ticket.escalate"])
    response = client.get(
        "/api/auth/capability/describe",
        {"name": "ticket.escalate"},
        **bearer(agent_token(agent, key)),
    )
    body = body_of(response)
    assert response.status_code == 200
    assert body["location"] == ESCALATE_URL
    assert body["grant_status"] == "granted"
    assert body["input"]["additionalProperties"] is False


def test_location_validates_the_input_schema(client: Client, host: Any, tickets: Any) -> None:
    # spec: §2.15, §2.12 — the contract's arguments are checked against the input schema.
    agent, key = agent_with(host, ["ticket.escalate"])
    token = agent_token(agent, key, audience=ESCALATE_URL)
    extra = {"capability": "ticket.escalate", "arguments": {"ticket_id": "1", "note": "x"}}
    assert_error(escalate(client, token, extra), 400, "invalid_request")
    token = agent_token(agent, key, audience=ESCALATE_URL)
    missing = {"capability": "ticket.escalate", "arguments": {}}
    assert_error(escalate(client, token, missing), 400, "invalid_request")
    token = agent_token(agent, key, audience=ESCALATE_URL)
    not_object = {"capability": "ticket.escalate", "arguments": ["1"]}
    assert_error(escalate(client, token, not_object), 400, "invalid_request")
    assert Ticket.objects.get(pk=1).priority == "low"


def test_location_refuses_another_capability(client: Client, host: Any, tickets: Any) -> None:
    # spec: §5.12 — this location serves ticket.escalate only.
    agent, key = agent_with(host, ["ticket.escalate", "ticket.read"])
    token = agent_token(agent, key, audience=ESCALATE_URL)
    body = {"capability": "ticket.read", "arguments": {"ticket_id": "1"}}
    assert_error(escalate(client, token, body), 400, "invalid_request")
    assert Ticket.objects.get(pk=1).priority == "low"


def test_location_query_cannot_contradict_the_arguments(
    client: Client, host: Any, tickets: Any
) -> None:
    agent, key = agent_with(host, {"ticket.escalate": {"ticket_id": "1"}})
    token = agent_token(agent, key, audience=ESCALATE_URL)
    response = escalate(client, token, ESCALATE, path="/support/escalate?ticket_id=2")
    assert_error(response, 400, "invalid_request")
    token = agent_token(agent, key, audience=ESCALATE_URL)
    other = {"capability": "ticket.escalate", "arguments": {"ticket_id": "2"}}
    body = assert_error(escalate(client, token, other), 403, "constraint_violated")
    assert body["violations"] == [{"field": "ticket_id", "constraint": "1", "actual": "2"}]
    assert Ticket.objects.get(pk=2).priority == "critical"  # untouched (it was already)
    assert Ticket.objects.get(pk=1).priority == "low"


def test_location_needs_the_grant(client: Client, host: Any, tickets: Any) -> None:
    # spec: §2.15
    agent, key = agent_with(host, ["ticket.read"])
    response = escalate(client, agent_token(agent, key, audience=ESCALATE_URL), ESCALATE)
    assert_error(response, 403, "capability_not_granted")


def test_default_location_points_to_the_capability_location(
    client: Client, host: Any, tickets: Any
) -> None:
    # spec: §2.15 — a capability with its own location is not run at the default location.
    agent, key = agent_with(host, ["ticket.escalate"])
    response = client.post(
        "/api/auth/capability/execute",
        json.dumps(ESCALATE),
        content_type="application/json",
        **bearer(agent_token(agent, key, audience=DEFAULT_LOCATION)),
    )
    body = assert_error(response, 400, "invalid_request")
    assert body["location"] == ESCALATE_URL
    assert Ticket.objects.get(pk=1).priority == "low"


@pytest.fixture
def located_capability() -> Any:
    """A capability with both a handler and a location elsewhere (registered for one test)."""
    calls: list[dict[str, Any]] = []

    def handler(ctx: Any, **arguments: Any) -> dict[str, Any]:
        calls.append(arguments)
        return {"ran": True}

    cap = register(
        Capability(
            name="probe.located",
            description="Served at another location",
            approval_strength="none",
            location="https://elsewhere.example/run",
            handler=handler,
        )
    )
    yield cap, calls
    registry.unregister(cap.name)


def test_default_location_never_runs_a_located_handler(
    client: Client, host: Any, located_capability: Any
) -> None:
    # spec: §2.15 — even with a handler at hand, the default location sends the agent away.
    cap, calls = located_capability
    agent, key = agent_with(host, [cap.name])
    response = client.post(
        "/api/auth/capability/execute",
        json.dumps({"capability": cap.name}),
        content_type="application/json",
        **bearer(agent_token(agent, key, audience=DEFAULT_LOCATION)),
    )
    body = assert_error(response, 400, "invalid_request")
    assert body["location"] == "https://elsewhere.example/run"
    assert calls == []


def test_location_token_is_introspectable(client: Client, host: Any) -> None:
    # spec: §4.5, §5.12 — a resource server at the location can introspect its tokens.
    agent, key = agent_with(host, ["ticket.escalate"])
    token = agent_token(agent, key, audience=ESCALATE_URL)
    response = client.post(
        "/api/auth/agent/introspect",
        json.dumps({"token": token}),
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer introspection-secret-for-tests",
    )
    body = body_of(response)
    assert body["active"] is True and body["agent_id"] == agent.pk
    assert body["agent_capability_grants"] == [
        {"capability": "ticket.escalate", "status": "active"}
    ]


# --- declaration errors -------------------------------------------------------------------------


class Unconfigured(APIView):
    authentication_classes = [AgentAuthentication]
    permission_classes = [HasCapability]

    def get(self, request: Request) -> Response:
        return Response({"reached": True})


def test_has_capability_without_names_is_misconfigured(host: Any) -> None:
    agent, key = agent_with(host, ["ticket.read"])
    request = APIRequestFactory().get("/x", **bearer(agent_token(agent, key)))
    with pytest.raises(ImproperlyConfigured, match="required_capabilities"):
        Unconfigured.as_view()(request)
    # A single string is a mistake too (it would be read as a list of characters).
    Unconfigured.required_capabilities = "ticket.read"  # type: ignore[attr-defined]
    try:
        request = APIRequestFactory().get("/x", **bearer(agent_token(agent, key)))
        with pytest.raises(ImproperlyConfigured):
            Unconfigured.as_view()(request)
    finally:
        del Unconfigured.required_capabilities  # type: ignore[attr-defined]


def test_has_capability_reads_required_capabilities(host: Any) -> None:
    class Configured(Unconfigured):
        required_capabilities = ["ticket.read"]

    agent, key = agent_with(host, ["ticket.read"])
    request = APIRequestFactory().get("/x?ticket_id=1", **bearer(agent_token(agent, key)))
    assert Configured.as_view()(request).status_code == 200
    other, other_key = agent_with(host, ["ticket.close"])
    request = APIRequestFactory().get("/x", **bearer(agent_token(other, other_key)))
    response = Configured.as_view()(request)
    assert response.status_code == 403
    assert response.data["error"] == "capability_not_granted"


def test_decorators_need_capability_names() -> None:
    with pytest.raises(TypeError):
        requires_capability()
    with pytest.raises(TypeError):
        requires_capability("")
    with pytest.raises(TypeError):
        requires_capability(["ticket.read"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        capability_required()


def test_decorated_views_expose_their_capabilities() -> None:
    # Tooling (and HasCapability-style introspection) can read what a view requires, also
    # through other decorators such as @require_GET.
    assert support_views.ticket_detail.required_capabilities == ("ticket.read",)
    assert support_views.escalate.required_capabilities == ("ticket.escalate",)

    @requires_capability("ticket.read", "ticket.close")
    def view(request: HttpRequest) -> JsonResponse:
        return JsonResponse({})

    assert view.required_capabilities == ("ticket.read", "ticket.close")
    assert view.csrf_exempt is True
    assert view.__name__ == "view"
