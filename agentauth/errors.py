"""Protocol errors (spec §5.13).

Every non-2xx protocol response is ``{"error": <code>, "message": <text>, ...extra}``. Domain code
raises :class:`ProtocolError`; the protocol views turn it into that body. This module imports
nothing from Django so that the agent-side client can share the code table.
"""

from __future__ import annotations

from typing import Any

#: code -> (HTTP status, default message). Codes from the spec's tables, plus the few this server
#: adds where the spec leaves a case open (``host_rejected``, ``host_pending``...).
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_request": (
        400,
        "Malformed request, missing required fields, or invalid parameter types",
    ),
    "unsupported_mode": (400, "Requested mode is not supported by this server"),
    "unsupported_algorithm": (400, "Key algorithm is not in the server's supported set"),
    "invalid_capabilities": (400, "One or more requested capability names don't exist"),
    "unknown_constraint_operator": (400, "Constraint contains an unrecognized operator"),
    "invalid_jwt": (401, "JWT is invalid, expired, or signature failed"),
    "authentication_required": (401, "Authentication is required"),
    "invalid_dpop_proof": (401, "The DPoP proof is missing or invalid"),
    "use_dpop_nonce": (401, "Retry with the nonce from the DPoP-Nonce header"),
    "agent_revoked": (403, "Agent has been revoked"),
    "agent_expired": (403, "Agent session has expired"),
    "absolute_lifetime_exceeded": (403, "Agent's absolute lifetime has elapsed"),
    "agent_pending": (403, "Agent is still pending approval"),
    "agent_rejected": (403, "Agent registration was denied"),
    "agent_claimed": (403, "Agent has been claimed and is no longer active"),
    "host_revoked": (403, "Host has been revoked"),
    "host_pending": (403, "Host is still pending approval"),
    "host_rejected": (403, "Host was rejected"),
    "dynamic_host_registration_disabled": (
        403,
        "This server does not accept registrations from unknown hosts",
    ),
    "unauthorized": (403, "Caller is not authorized for this operation"),
    "capability_not_granted": (403, "Agent does not have an active grant for this capability"),
    "constraint_violated": (403, "Execution arguments violate grant constraints"),
    "limit_exceeded": (403, "The request exceeds the limits of this capability"),
    "agent_not_found": (404, "Agent not found"),
    "host_not_found": (404, "Host not found"),
    "capability_not_found": (404, "Capability does not exist"),
    "not_found": (404, "No such endpoint"),
    "method_not_allowed": (405, "Method not allowed on this endpoint"),
    "agent_exists": (409, "An agent with this public key is already registered under this host"),
    "already_granted": (409, "All requested capabilities are already granted"),
    "rate_limited": (429, "Too many requests"),
    "internal_error": (500, "Server-side failure"),
    "temporarily_unavailable": (503, "A required service is unavailable; retry later"),
}


class ProtocolError(Exception):
    """An error the protocol defines a wire shape for.

    ``extra`` fields (``invalid_capabilities``, ``unknown_operators``, ``violations``...) are
    added to the body next to ``error`` and ``message``.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        default_status, default_message = ERRORS.get(code, (400, code))
        self.code = code
        self.message = message or default_message
        self.status = status or default_status
        self.headers = headers or {}
        self.extra = extra
        super().__init__(f"{code}: {self.message}")

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


def invalid_request(message: str, **extra: Any) -> ProtocolError:
    return ProtocolError("invalid_request", message, **extra)


def invalid_jwt(message: str = "JWT is invalid, expired, or signature failed") -> ProtocolError:
    return ProtocolError("invalid_jwt", message)
