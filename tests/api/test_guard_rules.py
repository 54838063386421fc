"""What is checked is what is used: the guard of project views (spec §2.13, §2.15, §4.5 step 12).

Each exploit below worked on the guard before ``guard.protect``; each test is its regression:

1. a constraint checked against the query string while the DRF view acted on the body alone;
2. a capability's input schema skipped for the plain form at the capability's own location;
3. leading zeros: ``"04"`` read ticket 4 under ``not_in: ["4"]``;
4. deeply nested JSON on a guarded view was an HTML 500, and guarded views had no body cap.

Then the rules that make them impossible: one argument set (URL kwargs, query, JSON body; a
repeated or contradicted name is refused), strict and capped JSON, and ``AgentAuthentication``
refusing agents on DRF views that require no capability.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.http import HttpRequest, JsonResponse
from django.test import Client, RequestFactory
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from agentauth.authentication import AgentAuthentication
from agentauth.decorators import requires_capability
from agentauth.permissions import capability_required
from agentauth.testing import agent_token, make_agent, make_host
from example_project.support.capabilities import get_ticket
from example_project.support.models import Ticket

pytestmark = pytest.mark.django_db

ESCALATE_URL = "http://testserver/support/escalate"
NOT_CRITICAL = {"ticket.close": {"priority": {"not_in": ["critical"]}}}


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """A spec error body (§5.13) with this status and code."""
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body: dict[str, Any] = json.loads(response.content)
    assert response.status_code == status, (response.status_code, body)
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


@pytest.fixture
def tickets() -> dict[int, Ticket]:
    return {
        pk: Ticket.objects.create(pk=pk, subject=f"Ticket {pk}", priority=priority)
        for pk, priority in [(1, "low"), (2, "critical"), (4, "normal"), (5, "low")]
    }


@pytest.fixture
def host(user: Any) -> Any:
    host, _ = make_host(user=user)
    return host


# --- 1. the DRF view acts on what the constraint was checked against (§2.13, §4.5 step 12) ----


def test_query_priority_cannot_close_a_critical_ticket(
    client: Client, host: Any, tickets: Any
) -> None:
    # The constraint saw ?priority=low; the view used to read request.data only, found no
    # priority and closed the critical ticket.
    agent, key = make_agent(host, grants=NOT_CRITICAL)
    response = client.generic(
        "POST", "/support/api/tickets/2/close?priority=low", **bearer(agent_token(agent, key))
    )
    assert response.status_code in (400, 403), response.content
    assert Ticket.objects.get(pk=2).status == Ticket.Status.OPEN


def test_query_and_body_are_one_argument_set(client: Client, host: Any, tickets: Any) -> None:
    # Saying "low" to the guard in the query and "critical" in the body is a contradiction.
    agent, key = make_agent(host, grants=NOT_CRITICAL)
    response = client.post(
        "/support/api/tickets/2/close?priority=low",
        json.dumps({"priority": "critical"}),
        content_type="application/json",
        **bearer(agent_token(agent, key)),
    )
    assert_error(response, 400, "invalid_request")
    assert Ticket.objects.get(pk=2).status == Ticket.Status.OPEN


def test_the_view_receives_exactly_the_checked_arguments(
    client: Client, host: Any, tickets: Any
) -> None:
    # Within the grant, the query's priority is the one the view compares with the ticket.
    agent, key = make_agent(host, grants=NOT_CRITICAL)
    response = client.generic(
        "POST", "/support/api/tickets/1/close?priority=low", **bearer(agent_token(agent, key))
    )
    assert response.status_code == 200, response.content
    assert Ticket.objects.get(pk=1).status == Ticket.Status.CLOSED


def test_a_form_body_is_refused_not_ignored(client: Client, host: Any, tickets: Any) -> None:
    # A body the guard cannot read as JSON is no argument source the view may fall back on.
    agent, key = make_agent(host, grants=NOT_CRITICAL)
    response = client.post(
        "/support/api/tickets/2/close?priority=low",
        "priority=critical",
        content_type="application/x-www-form-urlencoded",
        **bearer(agent_token(agent, key)),
    )
    assert_error(response, 415, "invalid_request")
    assert Ticket.objects.get(pk=2).status == Ticket.Status.OPEN


def test_a_repeated_query_name_is_refused(client: Client, host: Any, tickets: Any) -> None:
    # request.GET.getlist() would see two values where one was checked.
    agent, key = make_agent(host, grants=["ticket.read"])
    response = client.get(
        "/support/tickets/1", {"ticket_id": ["1", "1"]}, **bearer(agent_token(agent, key))
    )
    assert_error(response, 400, "invalid_request")


def test_a_kwarg_and_a_body_member_must_agree_in_type(
    client: Client, host: Any, tickets: Any
) -> None:
    # The URL says "1" (a string), the body says 1: two different values, not one.
    agent, key = make_agent(host, grants=NOT_CRITICAL)
    response = client.post(
        "/support/api/tickets/1/close",
        json.dumps({"ticket_id": 1, "priority": "low"}),
        content_type="application/json",
        **bearer(agent_token(agent, key)),
    )
    assert_error(response, 400, "invalid_request")
    assert Ticket.objects.get(pk=1).status == Ticket.Status.OPEN


def test_one_name_one_value_means_same_json_value(host: Any) -> None:
    # true == 1 == 1.0 in Python, but they are three JSON values: an <int:...> kwarg of 1 and a
    # body member of true are a contradiction, not agreement.
    agent, key = make_agent(host, grants=["read_only_note"])

    @requires_capability("read_only_note")
    def view(request: HttpRequest, n: int) -> JsonResponse:
        return JsonResponse({"n": request.agent_arguments["n"]})  # type: ignore[attr-defined]

    for body in ('{"n": true}', '{"n": 1.0}'):
        request = RequestFactory().post(
            "/n/1", body, "application/json", **bearer(agent_token(agent, key))
        )
        assert_error(view(request, n=1), 400, "invalid_request")
    request = RequestFactory().post(
        "/n/1", '{"n": 1}', "application/json", **bearer(agent_token(agent, key))
    )
    assert json.loads(view(request, n=1).content) == {"n": 1}


# --- 2. the input schema always applies, at a capability's own location too (§2.15) --------


def test_plain_form_at_the_location_is_schema_checked(
    client: Client, host: Any, tickets: Any
) -> None:
    # {"ticket_id": 5} (an integer) slipped past not_in ["5"] and escalated ticket 5.
    agent, key = make_agent(host, grants={"ticket.escalate": {"ticket_id": {"not_in": ["5"]}}})
    response = client.post(
        "/support/escalate",
        json.dumps({"ticket_id": 5}),
        content_type="application/json",
        **bearer(agent_token(agent, key, audience=ESCALATE_URL)),
    )
    assert_error(response, 400, "invalid_request")
    assert Ticket.objects.get(pk=5).priority == "low"


def test_plain_form_at_the_location_still_meets_the_constraint(
    client: Client, host: Any, tickets: Any
) -> None:
    agent, key = make_agent(host, grants={"ticket.escalate": {"ticket_id": {"not_in": ["5"]}}})
    token = agent_token(agent, key, audience=ESCALATE_URL)
    response = client.post(
        "/support/escalate",
        json.dumps({"ticket_id": "5"}),
        content_type="application/json",
        **bearer(token),
    )
    assert_error(response, 403, "constraint_violated")
    token = agent_token(agent, key, audience=ESCALATE_URL)
    response = client.post(
        "/support/escalate",
        json.dumps({"ticket_id": "1"}),
        content_type="application/json",
        **bearer(token),
    )
    assert response.status_code == 200, response.content
    assert Ticket.objects.get(pk=1).priority == "critical"
    assert Ticket.objects.get(pk=5).priority == "low"


def test_plain_view_arguments_are_schema_checked(client: Client, host: Any, tickets: Any) -> None:
    # A name the capability does not take (additionalProperties: false) is refused, not ignored.
    agent, key = make_agent(host, grants=["ticket.read"])
    response = client.get("/support/tickets/1", {"verbose": "1"}, **bearer(agent_token(agent, key)))
    assert_error(response, 400, "invalid_request")


# --- 3. ids are canonical, so raw-string constraints mean what they say (§2.13) --------------


@pytest.mark.parametrize("spelling", ["04", "004", "+4", "4 ", "\u0664"])
def test_leading_zeros_do_not_dodge_not_in(
    client: Client, host: Any, tickets: Any, spelling: str
) -> None:
    agent, key = make_agent(host, grants={"ticket.read": {"ticket_id": {"not_in": ["4"]}}})
    response = client.get(
        "/support/tickets/" + spelling.replace(" ", "%20"), **bearer(agent_token(agent, key))
    )
    assert response.status_code in (400, 403, 404), response.content
    assert b"Ticket 4" not in response.content


@pytest.mark.parametrize("spelling", ["04", "+4", "4\n", "\u0664", "4.0", ""])
def test_get_ticket_takes_only_the_canonical_id(tickets: Any, spelling: str) -> None:
    # Defence in depth for callers that skip the schema.
    with pytest.raises(LookupError):
        get_ticket(spelling)
    assert get_ticket("4").pk == 4


def test_leading_zeros_at_the_execute_endpoint(client: Client, host: Any, tickets: Any) -> None:
    agent, key = make_agent(host, grants={"ticket.read": {"ticket_id": {"not_in": ["4"]}}})
    response = client.post(
        "/api/auth/capability/execute",
        json.dumps({"capability": "ticket.read", "arguments": {"ticket_id": "04"}}),
        content_type="application/json",
        **bearer(agent_token(agent, key, audience="http://testserver/api/auth/capability/execute")),
    )
    assert_error(response, 400, "invalid_request")


# --- 4. bodies: capped, strict, depth-limited; never a 500 -------------------------------------


def test_deep_nesting_is_a_spec_error(client: Client, host: Any, tickets: Any) -> None:
    agent, key = make_agent(host, grants=NOT_CRITICAL)
    for depth in (30_000, 50_000):  # 60 KB (under the cap) and 100 KB (over it)
        response = client.post(
            "/support/api/tickets/1/close",
            "[" * depth + "]" * depth,
            content_type="application/json",
            **bearer(agent_token(agent, key)),
        )
        assert_error(response, 400 if depth * 2 <= 65536 else 413, "invalid_request")
    agent, key = make_agent(host, grants=["ticket.read"])
    response = client.generic(
        "GET",
        "/support/tickets/1",
        '{"a":' * 10_000 + "1" + "}" * 10_000,
        content_type="application/json",
        **bearer(agent_token(agent, key)),
    )
    assert_error(response, 400, "invalid_request")
    assert Ticket.objects.get(pk=1).status == Ticket.Status.OPEN


def test_body_cap_applies_to_guarded_views(
    client: Client, host: Any, tickets: Any, settings: Any
) -> None:
    settings.AGENTAUTH_MAX_BODY_BYTES = 100
    agent, key = make_agent(host, grants=NOT_CRITICAL)
    body = json.dumps({"priority": "low", "ticket_id": "1" + " " * 0})
    padded = body[:-1] + " " * 120 + "}"
    response = client.post(
        "/support/api/tickets/1/close",
        padded,
        content_type="application/json",
        **bearer(agent_token(agent, key)),
    )
    assert_error(response, 413, "invalid_request")
    assert Ticket.objects.get(pk=1).status == Ticket.Status.OPEN


def test_duplicate_members_are_refused(client: Client, host: Any, tickets: Any) -> None:
    # A lenient parser keeps the last "priority", a strict one refuses: the guard and DRF's
    # request.data must never disagree about which one counts.
    agent, key = make_agent(host, grants=NOT_CRITICAL)
    response = client.post(
        "/support/api/tickets/2/close",
        '{"priority": "low", "priority": "critical"}',
        content_type="application/json",
        **bearer(agent_token(agent, key)),
    )
    assert_error(response, 400, "invalid_request")
    assert Ticket.objects.get(pk=2).status == Ticket.Status.OPEN


def test_too_many_query_fields_is_a_spec_error(client: Client, host: Any, tickets: Any) -> None:
    agent, key = make_agent(host, grants=["ticket.read"])
    query = "&".join(f"f{i}=1" for i in range(1100))
    response = client.get(
        "/support/tickets/1", QUERY_STRING=query, **bearer(agent_token(agent, key))
    )
    assert_error(response, 400, "invalid_request")


def test_json_depth_limit() -> None:
    # The same limit for protocol endpoints, JWTs and guarded views.
    from agentauth.jws import MAX_JSON_DEPTH, strict_json_loads

    assert strict_json_loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    deeper = MAX_JSON_DEPTH + 1
    with pytest.raises(ValueError):
        strict_json_loads("[" * deeper + "]" * deeper)
    with pytest.raises(ValueError):
        strict_json_loads('{"a":' * deeper + "1" + "}" * deeper)


# --- AgentAuthentication fails closed on views that require no capability ---------------------


class Account(APIView):
    """A view of the person's own data, reachable with their session, not by their agents."""

    authentication_classes = [AgentAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"username": request.user.username})


class GuardedAccount(Account):
    permission_classes = [capability_required("ticket.read")]


def test_agent_cannot_use_a_view_without_a_capability(host: Any) -> None:
    # Listed in DEFAULT_AUTHENTICATION_CLASSES, AgentAuthentication would otherwise make
    # request.user the agent's person on every DRF view of the project.
    agent, key = make_agent(host, grants=["ticket.read"])
    request = APIRequestFactory().get("/account", **bearer(agent_token(agent, key)))
    response = Account.as_view()(request)
    assert response.status_code == 403
    assert response.data["error"] == "unauthorized"
    assert "username" not in response.data


def test_agent_can_use_the_view_once_it_requires_a_capability(host: Any, tickets: Any) -> None:
    agent, key = make_agent(host, grants=["ticket.read"])
    request = APIRequestFactory().get(
        "/account", {"ticket_id": "1"}, **bearer(agent_token(agent, key))
    )
    response = GuardedAccount.as_view()(request)
    assert response.status_code == 200, response.data
    assert response.data == {"username": "alice"}


def test_default_authentication_classes_cannot_open_other_views(host: Any) -> None:
    # As if REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] listed both (APIView reads that
    # setting once, at import, so the view names them itself).
    class Profile(APIView):
        authentication_classes = [SessionAuthentication, AgentAuthentication]
        permission_classes = [IsAuthenticated]

        def get(self, request: Request) -> Response:
            return Response({"username": request.user.username})

    agent, key = make_agent(host, grants=["ticket.read"])
    request = APIRequestFactory().get("/profile", **bearer(agent_token(agent, key)))
    response = Profile.as_view()(request)
    assert response.status_code == 403
    assert response.data["error"] == "unauthorized"


def test_other_bearer_schemes_are_left_to_other_authenticators(host: Any) -> None:
    # A bearer token that is not an agent JWT (an OAuth token, say) is not ours to refuse.
    request = APIRequestFactory().get("/account", HTTP_AUTHORIZATION="Bearer opaque-oauth-token")
    response = Account.as_view()(request)
    assert response.status_code in (401, 403)
    assert "error" not in response.data  # DRF's own refusal: nobody authenticated it
