"""The OpenAPI 3.1 document of the protocol endpoints, built from the code that serves them.

Built rather than kept as a file so it cannot drift: paths come from the URLconf (so they are
right wherever the app is mounted), request members from the same field tuples the views pass to
``check_fields``, error codes and statuses from ``errors.ERRORS`` (spec §5.13), and the
discovery keys from ``views.discovery``. ``tests/api/test_openapi.py`` checks that every route of
``agentauth.urls`` is documented, that nothing documented is unrouted, and validates real
responses from the protocol flows against the schemas below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.urls import NoReverseMatch, reverse

from .conf import app_settings
from .errors import ERRORS
from .grants import REQUEST_FIELDS
from .registration import REGISTER_FIELDS
from .validation import MESSAGE_MAX, NAME_MAX, REASON_MAX
from .views.discovery import ENDPOINT_NAMES

OPENAPI_VERSION = "3.1.0"
DOCUMENT_VERSION = "1.0-draft"

_REF = "#/components/schemas/"

#: Codes raised with an explicit status outside the spec's table in ``errors.ERRORS``.
IMPLEMENTATION_CODES: dict[str, int] = {
    "slow_down": 429,  # RFC 8628 §3.5 status polling while an approval is pending
    "resource_not_found": 404,  # a capability handler's lookup failed
    "host_exists": 409,  # host key rotation to a key that already identifies a host
}


def codes_by_status() -> dict[int, list[str]]:
    table: dict[int, list[str]] = {}
    for code, (status, _) in ERRORS.items():
        table.setdefault(status, []).append(code)
    for code, status in IMPLEMENTATION_CODES.items():
        table.setdefault(status, []).append(code)
    table.setdefault(413, []).append("invalid_request")
    table.setdefault(415, []).append("invalid_request")
    return {status: sorted(codes) for status, codes in table.items()}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


_STRING = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}
_AGENT_STATUS = {
    "type": "string",
    "enum": ["pending", "active", "expired", "revoked", "rejected", "claimed"],
}

#: Descriptions of the request members the views accept, keyed by member name. Which members an
#: endpoint accepts comes from the view's own field tuple, never from here.
_MEMBERS: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "maxLength": NAME_MAX, "description": "Shown to the approver."},
    "host_name": {"type": "string", "maxLength": NAME_MAX},
    "capabilities": {
        "type": "array",
        "items": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "properties": {"name": _STRING, "constraints": {"type": "object"}},
                    "required": ["name"],
                    "additionalProperties": False,
                },
            ]
        },
        "description": "Capability names, or objects with constraints (spec §5.3, §2.13).",
    },
    "mode": {"type": "string", "enum": ["delegated", "autonomous"]},
    "reason": {"type": "string", "maxLength": REASON_MAX},
    "preferred_method": {"type": "string", "maxLength": 64},
    "login_hint": {"type": "string", "maxLength": MESSAGE_MAX},
    "binding_message": {"type": "string", "maxLength": MESSAGE_MAX},
    "force_approval": {"type": "boolean"},
    "agent_id": {"type": "string"},
    "public_key": _ref("PublicJwk"),
    "token": {"type": "string", "description": "The agent JWT to introspect."},
    "capability": {"type": "string"},
    "arguments": {"type": "object"},
}


def _body(fields: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
    names = list(fields)
    return {
        "type": "object",
        "properties": {name: _MEMBERS[name] for name in names},
        "required": list(required),
        "additionalProperties": False,
    }


_GRANT = {
    "type": "object",
    "properties": {
        "capability": _STRING,
        "status": {"type": "string", "enum": ["active", "pending", "denied"]},
        "description": _STRING,
        "input": {"type": "object"},
        "output": {"type": "object"},
        "location": {"type": "string", "format": "uri"},
        "constraints": {"type": "object"},
        "granted_by": _STRING,
        "expires_at": _TIME,
        "reason": _STRING,
    },
    "required": ["capability", "status"],
    "additionalProperties": False,
}

_APPROVAL = {
    "type": "object",
    "properties": {
        "method": {"type": "string", "enum": ["device_authorization", "ciba"]},
        "verification_uri": {"type": "string", "format": "uri"},
        "verification_uri_complete": {"type": "string", "format": "uri"},
        "user_code": _STRING,
        "binding_message": _STRING,
        "expires_in": {"type": "integer", "minimum": 0},
        "interval": {"type": "integer", "minimum": 0},
        "notification_url": {
            "type": "string",
            "format": "uri",
            "description": "Approval events (spec §10.10.2), when AGENTAUTH_APPROVAL_EVENTS is on.",
        },
    },
    "required": ["method", "expires_in", "interval"],
    "additionalProperties": False,
}

_GRANTS = {"type": "array", "items": _ref("Grant")}

_AGENT_STATUS_BODY = {
    "type": "object",
    "properties": {
        "agent_id": _STRING,
        "host_id": _STRING,
        "user_id": _STRING,
        "name": _STRING,
        "status": _AGENT_STATUS,
        "mode": _MEMBERS["mode"],
        "agent_capability_grants": _GRANTS,
        "created_at": _TIME,
        "activated_at": _TIME,
        "last_used_at": _TIME,
        "expires_at": _TIME,
        "approval": _ref("Approval"),
    },
    "required": ["agent_id", "host_id", "name", "status", "mode", "agent_capability_grants"],
    "additionalProperties": False,
}

_CAPABILITY = {
    "type": "object",
    "properties": {
        "name": _STRING,
        "description": _STRING,
        "location": {"type": "string", "format": "uri"},
        "input": {"type": "object"},
        "output": {"type": "object"},
        "approval_strength": {"type": "string", "enum": ["none", "session", "webauthn"]},
        "grant_status": {"type": "string", "enum": ["granted", "not_granted"]},
    },
    "required": ["name", "description"],
    "additionalProperties": False,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "description": "Every non-2xx protocol response (spec §5.13). Some codes add members: "
        "unknown_fields, invalid_capabilities, unknown_operators, violations. A capability "
        "handler may raise codes of its own, so the code set is open; each response lists the "
        "codes this server sends with its status.",
        "properties": {
            "error": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            "message": _STRING,
            "unknown_fields": {"type": "array", "items": _STRING},
            "invalid_capabilities": {"type": "array", "items": _STRING},
            "unknown_operators": {"type": "array", "items": _STRING},
            "violations": {"type": "array"},
        },
        "required": ["error", "message"],
    },
    "PublicJwk": {
        "type": "object",
        "description": "An Ed25519 public key (RFC 8037); private members are refused.",
        "properties": {
            "kty": {"const": "OKP"},
            "crv": {"const": "Ed25519"},
            "x": _STRING,
            "kid": _STRING,
        },
        "required": ["kty", "crv", "x"],
    },
    "Grant": _GRANT,
    "Approval": _APPROVAL,
    "Discovery": {
        "type": "object",
        "properties": {
            "version": _STRING,
            "provider_name": _STRING,
            "description": _STRING,
            "issuer": {"type": "string", "format": "uri"},
            "default_location": {"type": "string", "format": "uri"},
            "algorithms": {"type": "array", "items": _STRING},
            "modes": {"type": "array", "items": _STRING},
            "approval_methods": {"type": "array", "items": _STRING},
            "endpoints": {
                "type": "object",
                "properties": {key: _STRING for key in ENDPOINT_NAMES},
                "additionalProperties": False,
            },
            "jwks_uri": {"type": "string", "format": "uri"},
        },
        "required": ["version", "issuer", "algorithms", "modes", "endpoints"],
        "additionalProperties": False,
    },
    "CapabilityList": {
        "type": "object",
        "properties": {
            "capabilities": {"type": "array", "items": _ref("Capability")},
            "has_more": {"type": "boolean"},
            "next_cursor": {"type": ["string", "null"]},
        },
        "required": ["capabilities", "has_more", "next_cursor"],
        "additionalProperties": False,
    },
    "Capability": _CAPABILITY,
    "Registration": {
        "type": "object",
        "properties": {
            "agent_id": _STRING,
            "host_id": _STRING,
            "name": _STRING,
            "mode": _MEMBERS["mode"],
            "status": _AGENT_STATUS,
            "agent_capability_grants": _GRANTS,
            "approval": _ref("Approval"),
        },
        "required": ["agent_id", "host_id", "name", "mode", "status", "agent_capability_grants"],
        "additionalProperties": False,
    },
    "CapabilityRequestResult": {
        "type": "object",
        "properties": {
            "agent_id": _STRING,
            "agent_capability_grants": _GRANTS,
            "approval": _ref("Approval"),
        },
        "required": ["agent_id", "agent_capability_grants"],
        "additionalProperties": False,
    },
    "AgentStatus": _AGENT_STATUS_BODY,
    "AgentRevoked": {
        "type": "object",
        "properties": {"agent_id": _STRING, "status": {"const": "revoked"}},
        "required": ["agent_id", "status"],
        "additionalProperties": False,
    },
    "AgentKeyRotated": {
        "type": "object",
        "properties": {"agent_id": _STRING, "status": _AGENT_STATUS},
        "required": ["agent_id", "status"],
        "additionalProperties": False,
    },
    "HostRevoked": {
        "type": "object",
        "properties": {
            "host_id": _STRING,
            "status": {"const": "revoked"},
            "agents_revoked": {"type": "integer", "minimum": 0},
        },
        "required": ["host_id", "status", "agents_revoked"],
        "additionalProperties": False,
    },
    "HostKeyRotated": {
        "type": "object",
        "properties": {"host_id": _STRING, "status": _STRING},
        "required": ["host_id", "status"],
        "additionalProperties": False,
    },
    "Introspection": {
        "oneOf": [
            {
                "type": "object",
                "properties": {"active": {"const": False}},
                "required": ["active"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "active": {"const": True},
                    "agent_id": _STRING,
                    "host_id": _STRING,
                    "user_id": _STRING,
                    "mode": _MEMBERS["mode"],
                    "expires_at": _TIME,
                    "agent_capability_grants": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"capability": _STRING, "status": {"const": "active"}},
                            "required": ["capability", "status"],
                            "additionalProperties": False,
                        },
                    },
                },
                "required": ["active", "agent_id", "host_id", "agent_capability_grants", "mode"],
                "additionalProperties": False,
            },
        ]
    },
    "SyncResult": {
        "type": "object",
        "properties": {"data": {}},
        "required": ["data"],
        "additionalProperties": False,
    },
    "Job": {
        "description": "The async shapes of spec §5.11, mutually exclusive.",
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "status": {"const": "pending"},
                    "status_url": {"type": "string", "format": "uri"},
                },
                "required": ["status", "status_url"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"status": {"const": "completed"}, "result": {}},
                "required": ["status", "result"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"status": {"const": "failed"}, "error": {}},
                "required": ["status", "error"],
                "additionalProperties": False,
            },
        ],
    },
}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "hostJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A host JWT (typ host+jwt, EdDSA), signed by the host key (spec §4.2).",
    },
    "agentJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An agent JWT (typ agent+jwt, EdDSA), signed by the agent key (spec §4.3).",
    },
    "resourceServer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A secret from AGENTAUTH_INTROSPECTION_TOKENS (spec §5.12).",
    },
}


@dataclass(frozen=True)
class Operation:
    route: str  # URL name in agentauth.urls
    method: str
    summary: str
    spec: str  # spec section
    security: tuple[str, ...] = ()  # alternatives; empty: no authentication
    optional_auth: bool = False
    request: dict[str, Any] | None = None
    query: tuple[str, ...] = ()
    required_query: tuple[str, ...] = ()
    responses: dict[int, str] = field(default_factory=dict)  # status -> schema name
    stream: bool = False


OPERATIONS: tuple[Operation, ...] = (
    Operation("discovery", "get", "Server configuration", "§5.1", responses={200: "Discovery"}),
    Operation(
        "capabilities",
        "get",
        "List capabilities",
        "§5.2",
        security=("hostJwt", "agentJwt"),
        optional_auth=True,
        query=("query", "cursor", "limit"),
        responses={200: "CapabilityList"},
    ),
    Operation(
        "describe_capability",
        "get",
        "Describe one capability",
        "§5.2",
        security=("hostJwt", "agentJwt"),
        optional_auth=True,
        query=("name",),
        required_query=("name",),
        responses={200: "Capability"},
    ),
    Operation(
        "register",
        "post",
        "Register an agent under a host",
        "§5.3",
        security=("hostJwt",),
        request=_body(REGISTER_FIELDS, required=("name",)),
        responses={200: "Registration"},
    ),
    Operation(
        "request_capability",
        "post",
        "Request more capabilities",
        "§5.4",
        security=("agentJwt",),
        request=_body(REQUEST_FIELDS, required=("capabilities",)),
        responses={200: "CapabilityRequestResult"},
    ),
    Operation(
        "status",
        "get",
        "An agent's status and grants",
        "§5.5",
        security=("hostJwt",),
        query=("agent_id",),
        required_query=("agent_id",),
        responses={200: "AgentStatus"},
    ),
    Operation(
        "reactivate",
        "post",
        "Reactivate an expired agent",
        "§5.6",
        security=("hostJwt",),
        request=_body(("agent_id",), required=("agent_id",)),
        responses={200: "AgentStatus"},
    ),
    Operation(
        "revoke",
        "post",
        "Revoke an agent",
        "§5.7",
        security=("hostJwt",),
        request=_body(("agent_id",), required=("agent_id",)),
        responses={200: "AgentRevoked"},
    ),
    Operation(
        "rotate_key",
        "post",
        "Replace an agent's key",
        "§5.8",
        security=("hostJwt",),
        request=_body(("agent_id", "public_key"), required=("agent_id", "public_key")),
        responses={200: "AgentKeyRotated"},
    ),
    Operation(
        "rotate_host_key",
        "post",
        "Replace the host's key",
        "§5.9",
        security=("hostJwt",),
        request=_body(("public_key",), required=("public_key",)),
        responses={200: "HostKeyRotated"},
    ),
    Operation(
        "revoke_host",
        "post",
        "Revoke the host and its agents",
        "§5.10",
        security=("hostJwt",),
        request=_body(()),
        responses={200: "HostRevoked"},
    ),
    Operation(
        "execute",
        "post",
        "Execute a capability",
        "§5.11",
        security=("agentJwt",),
        request=_body(("capability", "arguments"), required=("capability",)),
        responses={200: "SyncResult", 202: "Job"},
        stream=True,
    ),
    Operation(
        "execution_status",
        "get",
        "Poll an async execution (status_url)",
        "§5.11",
        security=("agentJwt",),
        responses={200: "Job"},
    ),
    Operation(
        "approval_events",
        "get",
        "Wait for the approval outcome (server-sent events)",
        "§10.10.2",
        security=("hostJwt",),
        responses={200: "AgentStatus"},
        stream=True,
    ),
    Operation(
        "introspect",
        "post",
        "Introspect an agent JWT",
        "§5.12",
        security=("resourceServer",),
        request=_body(("token",), required=("token",)),
        responses={200: "Introspection"},
    ),
)

_QUERY: dict[str, dict[str, Any]] = {
    "query": {"type": "string", "maxLength": 256},
    "cursor": {"type": "string"},
    "limit": {"type": "string", "pattern": "^[0-9]+$", "description": "1 to 100; default 50."},
    "name": {"type": "string"},
    "agent_id": {"type": "string"},
}


def _error_statuses(op: Operation) -> list[int]:
    statuses = {400, 405, 429, 500, 503}
    if op.security or op.optional_auth:
        statuses.add(401)
    if op.security and op.security != ("resourceServer",):
        statuses.add(403)
    if op.route in (
        "describe_capability",
        "status",
        "reactivate",
        "revoke",
        "rotate_key",
        "approval_events",
    ):
        statuses.add(404)
    if op.route in ("execute", "execution_status"):
        statuses.add(404)
    if op.route in ("register", "request_capability", "rotate_key", "rotate_host_key"):
        statuses.add(409)
    if op.request is not None:
        statuses.update((413, 415))
    return sorted(statuses)


def _error_response(status: int) -> dict[str, Any]:
    codes = codes_by_status().get(status, [])
    described = ", ".join(f"`{c}`" for c in codes)
    return {
        "description": f"Spec error body (§5.13); codes: {described}",
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _path(route: str) -> str | None:
    """The route's path relative to the issuer, with ``{job_id}`` for the job route."""
    try:
        if route == "execution_status":
            full = reverse("agentauth:execution_status", args=["JOBID"]).replace(
                "JOBID", "{job_id}"
            )
        elif route == "approval_events":
            full = reverse("agentauth:approval_events", args=["AGENTID"]).replace(
                "AGENTID", "{agent_id}"
            )
        else:
            full = reverse(f"agentauth:{route}")
    except NoReverseMatch:
        return None
    prefix = reverse("agentauth:discovery").removesuffix("/.well-known/agent-configuration")
    return full.removeprefix(prefix) if prefix else full


def _operation(op: Operation) -> dict[str, Any]:
    result: dict[str, Any] = {
        "operationId": op.route,
        "summary": op.summary,
        "description": f"Spec {op.spec}.",
        "responses": {},
    }
    if op.security:
        result["security"] = [{name: []} for name in op.security]
        if op.optional_auth:
            result["security"].append({})
    else:
        result["security"] = []
    params = [
        {
            "name": name,
            "in": "query",
            "required": name in op.required_query,
            "schema": _QUERY[name],
        }
        for name in op.query
    ]
    if op.route == "execution_status":
        params.append({"name": "job_id", "in": "path", "required": True, "schema": _STRING})
    if op.route == "approval_events":
        params.append({"name": "agent_id", "in": "path", "required": True, "schema": _STRING})
    if params:
        result["parameters"] = params
    if op.request is not None:
        result["requestBody"] = {
            "required": bool(op.request["required"]) or op.route != "revoke_host",
            "content": {"application/json": {"schema": op.request}},
        }
    for status, schema in op.responses.items():
        content: dict[str, Any] = {"application/json": {"schema": _ref(schema)}}
        if op.route == "approval_events":
            # One SSE event whose data is the status body, then the stream ends.
            content = {}
        if op.stream and status == 200:
            content["text/event-stream"] = {
                "schema": {
                    "type": "string",
                    "description": f"Server-sent JSON events (spec {op.spec}).",
                }
            }
        result["responses"][str(status)] = {"description": schema, "content": content}
    for status in _error_statuses(op):
        result["responses"][str(status)] = _error_response(status)
    return result


def document() -> dict[str, Any]:
    """The whole document, for the issuer this server is configured with."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        path = _path(op.route)
        if path is None:
            continue  # not routed in this project: not documented either
        paths.setdefault(path, {})[op.method] = _operation(op)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"{app_settings.PROVIDER_NAME} — Agent Auth Protocol",
            "version": DOCUMENT_VERSION,
            "description": app_settings.PROVIDER_DESCRIPTION
            or "Agent Auth Protocol endpoints served by django-agentauth.",
        },
        "servers": [{"url": app_settings.ISSUER}],
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
    }
