"""The OpenAPI document (``agentauth.openapi``): it covers exactly the routed protocol
endpoints, is served and exported, and what the server really sends matches it.

Every reply that goes through ``tests.conftest.Api`` is checked against the document by
``tests/openapi_check.py``, across the whole suite. The flows below make sure each documented
operation is exercised at least once, with its success shapes and its common errors, and that
none of them answers 5xx.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from jsonschema import Draft202012Validator

from agentauth import openapi
from agentauth.models import Agent, AgentStatus
from agentauth.testing import Keypair, agent_token, host_token, make_agent, make_host
from agentauth.views.base import ProtocolView
from agentauth.views.fallback import NotFoundView
from agentauth.views.openapi import OpenApiView
from tests import openapi_check
from tests.conftest import ISSUER, Api, assert_error

pytestmark = pytest.mark.django_db

EXECUTE = ISSUER + "/capability/execute"


def protocol_routes() -> dict[str, type[ProtocolView]]:
    """URL name -> view class for the protocol endpoints routed under ``agentauth.urls``."""
    resolver = next(
        r
        for r in get_resolver().url_patterns
        if isinstance(r, URLResolver) and r.namespace == "agentauth"
    )
    routes = {}
    for pattern in resolver.url_patterns:
        assert isinstance(pattern, URLPattern)
        view_class = getattr(pattern.callback, "view_class", None)
        if (
            view_class is not None
            and issubclass(view_class, ProtocolView)
            and view_class not in (NotFoundView, OpenApiView)
        ):
            routes[str(pattern.name)] = view_class
    return routes


def test_every_protocol_route_is_documented_and_nothing_else() -> None:
    routes = protocol_routes()
    documented = {op.route: op for op in openapi.OPERATIONS}
    assert set(routes) == set(documented)
    for name, view_class in routes.items():
        served = {m for m in view_class.http_method_names if m not in ("options", "head")}
        assert served == {documented[name].method}, name


def test_document_paths_are_the_routed_paths(api: Api) -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"] == [{"url": ISSUER}]
    discovered = api.get("/.well-known/agent-configuration").body["endpoints"]
    operation_paths = {
        op["operationId"]: path for path, item in doc["paths"].items() for op in item.values()
    }
    for key, path in discovered.items():
        assert operation_paths[key] == path
    assert operation_paths["execution_status"] == "/capability/status/{job_id}"


def test_every_schema_is_valid_and_every_reference_resolves() -> None:
    doc = openapi.document()
    text = json.dumps(doc)
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert f'"#/components/schemas/{name}"' in text or name == "Error" or name == "PublicJwk"
    refs = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert refs <= set(doc["components"]["schemas"])
    schemes = set(doc["components"]["securitySchemes"])
    for item in doc["paths"].values():
        for op in item.values():
            for requirement in op["security"]:
                assert set(requirement) <= schemes
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}


def test_security_schemes_are_bearer_jwts() -> None:
    schemes = openapi.document()["components"]["securitySchemes"]
    assert schemes["hostJwt"] == schemes["hostJwt"] | {"type": "http", "scheme": "bearer"}
    assert schemes["agentJwt"]["bearerFormat"] == "JWT"
    ops = {op.route: op for op in openapi.OPERATIONS}
    assert ops["register"].security == ("hostJwt",)
    assert ops["execute"].security == ("agentJwt",)
    assert ops["discovery"].security == ()


def test_request_members_are_the_views_own() -> None:
    """A member a view accepts but the document lacks (or the reverse) fails here."""
    from agentauth.grants import REQUEST_FIELDS
    from agentauth.registration import REGISTER_FIELDS

    doc = openapi.document()["paths"]
    register = doc["/agent/register"]["post"]["requestBody"]["content"]["application/json"]
    assert set(register["schema"]["properties"]) == set(REGISTER_FIELDS)
    request = doc["/agent/request-capability"]["post"]["requestBody"]["content"]
    assert set(request["application/json"]["schema"]["properties"]) == set(REQUEST_FIELDS)


def test_served_and_exported(client: Any, settings: Any) -> None:
    response = client.get("/api/auth/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == openapi.document()
    out = io.StringIO()
    call_command("agentauth_openapi", stdout=out)
    assert json.loads(out.getvalue()) == response.json()


def test_serving_can_be_turned_off(client: Any, settings: Any) -> None:
    settings.AGENTAUTH_OPENAPI_ENABLED = False
    response = client.get("/api/auth/openapi.json")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    out = io.StringIO()
    call_command("agentauth_openapi", stdout=out)  # the command still exports it
    assert json.loads(out.getvalue())["openapi"].startswith("3.1")


def test_the_checker_catches_a_violation() -> None:
    """The suite-wide check is only worth something if it can fail."""
    with pytest.raises(openapi_check.SchemaViolation):
        openapi_check.check(
            "POST", "/api/auth/agent/revoke", 200, "application/json", {"agent_id": 1}
        )
    with pytest.raises(openapi_check.SchemaViolation):
        openapi_check.check("POST", "/api/auth/agent/revoke", 418, "application/json", {})
    with pytest.raises(openapi_check.SchemaViolation):
        openapi_check.check(
            "GET", "/api/auth/agent/status", 200, "application/json", {"surprise": True}
        )
    openapi_check.check(
        "POST",
        "/api/auth/agent/revoke",
        200,
        "application/json",
        {"agent_id": "a", "status": "revoked"},
    )


# --- the flows: every operation, success and errors, no 5xx -------------------------------------


class Tally:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.statuses: list[tuple[str, int]] = []

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        reply = self.api.post(path, body, **kwargs)
        self.statuses.append((path, reply.status))
        return reply

    def get(self, path: str, **kwargs: Any) -> Any:
        reply = self.api.get(path, **kwargs)
        self.statuses.append((path, reply.status))
        return reply


@pytest.fixture
def tally(api: Api) -> Tally:
    return Tally(api)


def test_flows_match_the_document(
    tally: Tally, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    host, host_key = make_host(user=user, default_capabilities=["check_balance"])
    anonymous_host = Keypair.generate()
    assert tally.get("/.well-known/agent-configuration").status == 200
    assert tally.get("/capability/list").status == 200
    assert tally.get("/capability/list", limit="1").body["next_cursor"]
    assert tally.get("/capability/list", token=host_token(host_key)).status == 200
    assert tally.get("/capability/describe", name="transfer").status == 200

    # Registration: one auto-approved, one waiting for a person (with an approval object).
    agent_key = Keypair.generate()
    reply = tally.post(
        "/agent/register",
        {"name": "Flow agent", "capabilities": ["check_balance"]},
        token=host_token(host_key, agent_public_key=agent_key),
    )
    assert reply.status == 200 and reply.body["status"] == "active"
    agent = Agent.objects.get(pk=reply.body["agent_id"])
    pending = tally.post(
        "/agent/register",
        {"name": "Needs a person", "capabilities": ["close_account"]},
        token=host_token(host_key, agent_public_key=Keypair.generate()),
    )
    assert pending.status == 200 and "approval" in pending.body
    assert tally.get("/agent/status", agent_id=agent.pk, token=host_token(host_key)).status == 200

    token = agent_token(agent, agent_key)
    assert tally.get("/capability/list", token=token).status == 200
    assert (
        tally.get(
            "/capability/describe", name="check_balance", token=agent_token(agent, agent_key)
        ).status
        == 200
    )
    requested = tally.post(
        "/agent/request-capability",
        {"capabilities": ["transfer"], "reason": "pay rent"},
        token=agent_token(agent, agent_key),
    )
    assert requested.status == 200 and requested.body["approval"]
    executed = tally.post(
        "/capability/execute",
        {"capability": "check_balance", "arguments": {"account_id": "acc_1"}},
        token=agent_token(agent, agent_key, audience=EXECUTE),
    )
    assert executed.status == 200 and "data" in executed.body
    assert tally.post(
        "/agent/introspect",
        {"token": agent_token(agent, agent_key)},
        token="introspection-secret-for-tests",
    ).body["active"]
    assert tally.post(
        "/agent/introspect", {"token": "not.a.jwt"}, token="introspection-secret-for-tests"
    ).body == {"active": False}

    # Async execution and its status_url.
    worker, worker_key = make_agent(host, grants=["slow_report", "failing_job"])
    with django_capture_on_commit_callbacks(execute=False):
        accepted = tally.post(
            "/capability/execute",
            {"capability": "slow_report", "arguments": {"n": 2}},
            token=agent_token(worker, worker_key, audience=EXECUTE),
        )
    assert accepted.status == 202
    status_path = accepted.body["status_url"].removeprefix(ISSUER)
    assert tally.get(status_path, token=agent_token(worker, worker_key)).body["status"] == "pending"
    with django_capture_on_commit_callbacks(execute=True):
        failed = tally.post(
            "/capability/execute",
            {"capability": "failing_job"},
            token=agent_token(worker, worker_key, audience=EXECUTE),
        )
    failed_path = failed.body["status_url"].removeprefix(ISSUER)
    assert tally.get(failed_path, token=agent_token(worker, worker_key)).body["status"] == "failed"

    # Lifecycle: rotate, expire and reactivate, revoke; then the host.
    new_key = Keypair.generate()
    rotated = tally.post(
        "/agent/rotate-key",
        {"agent_id": agent.pk, "public_key": new_key.public_jwk},
        token=host_token(host_key),
    )
    assert rotated.status == 200
    Agent.objects.filter(pk=agent.pk).update(
        status=AgentStatus.EXPIRED, expires_at=timezone.now() - timedelta(seconds=1)
    )
    reactivated = tally.post(
        "/agent/reactivate", {"agent_id": agent.pk}, token=host_token(host_key)
    )
    assert reactivated.status == 200
    assert (
        tally.post("/agent/revoke", {"agent_id": agent.pk}, token=host_token(host_key)).status
        == 200
    )
    new_host_key = Keypair.generate()
    assert (
        tally.post(
            "/host/rotate-key", {"public_key": new_host_key.public_jwk}, token=host_token(host_key)
        ).status
        == 200
    )
    assert tally.post("/host/revoke", token=host_token(new_host_key)).status == 200

    # Errors, each in the §5.13 shape the document gives for its status.
    assert_error(tally.post("/agent/revoke", {"agent_id": agent.pk}), 401, "invalid_jwt")
    assert_error(tally.get("/agent/register"), 405, "method_not_allowed")
    assert_error(
        tally.post("/agent/register", raw="{", token=host_token(anonymous_host)),
        400,
        "invalid_request",
    )
    assert_error(
        tally.post(
            "/agent/register",
            raw="name=x",
            content_type="application/x-www-form-urlencoded",
            token=host_token(anonymous_host),
        ),
        415,
        "invalid_request",
    )
    assert_error(
        tally.post(
            "/agent/register", {"name": "x", "colour": "red"}, token=host_token(anonymous_host)
        ),
        400,
        "invalid_request",
    )
    assert_error(tally.get("/capability/describe", name="nope"), 404, "capability_not_found")
    assert_error(tally.get("/capability/list", limit="x"), 400, "invalid_request")
    assert_error(
        tally.get("/agent/status", agent_id=agent.pk, token=host_token(new_host_key)),
        403,
        "host_revoked",
    )
    assert_error(
        tally.get(status_path, token=agent_token(worker, worker_key)), 403, "agent_revoked"
    )
    assert_error(tally.post("/agent/introspect", {"token": "x"}), 401, "authentication_required")

    documented = {op.route for op in openapi.OPERATIONS}
    assert len(tally.statuses) >= 2 * len(documented)
    assert not [s for s in tally.statuses if s[1] >= 500]


def test_stream_is_documented(client: Any, user: Any) -> None:
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["count_up"])
    response = client.post(
        "/api/auth/capability/execute",
        json.dumps({"capability": "count_up", "arguments": {"n": 2}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {agent_token(agent, key, audience=EXECUTE)}",
    )
    assert response.status_code == 200
    b"".join(response.streaming_content)
    openapi_check.check(
        "POST", "/api/auth/capability/execute", 200, response.headers["Content-Type"], None
    )


def test_drf_spectacular_documents_agent_authentication() -> None:
    pytest.importorskip("drf_spectacular")
    from django.urls import path
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.openapi import AutoSchema
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from agentauth.authentication import AgentAuthentication

    class Tickets(APIView):
        authentication_classes = [AgentAuthentication]
        schema = AutoSchema()

        def get(self, request: Any) -> Response:
            return Response({})

    schema = SchemaGenerator(patterns=[path("tickets", Tickets.as_view())]).get_schema(
        request=None, public=True
    )
    assert (
        schema["components"]["securitySchemes"]["agentJwt"]
        == (openapi.SECURITY_SCHEMES["agentJwt"])
    )
    assert {"agentJwt": []} in schema["paths"]["/tickets"]["get"]["security"]


def test_document_is_valid_openapi_3_1() -> None:
    """Against the OpenAPI 3.1 specification's own schema, not just our reading of it."""
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(openapi.document())
