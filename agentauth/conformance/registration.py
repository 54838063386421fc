"""§5.3 registration and the §4.2, §4.5.1 host JWT rules it is the first to enforce.

Each host JWT check sends an otherwise valid registration from a brand-new host with one thing
wrong in its token, so the only reason to refuse it is the rule under test.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from agentauth.client import Keypair

from . import forge
from .model import Level, Skipped, check, require
from .session import Agent, Session, error_code, refused

MUST, SHOULD = Level.MUST, Level.SHOULD


def _body(s: Session, **extra: Any) -> dict[str, Any]:
    return {"name": "conformance probe", "capabilities": [s.capability], "mode": s.mode, **extra}


def _forged_registration(
    s: Session,
    *,
    claims: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
    lifetime: int = 60,
    mangle: Any = None,
) -> Any:
    host, key = Keypair.generate(), Keypair.generate()
    token = s.host_jwt(host, agent_key=key, claims=claims, headers=headers, lifetime=lifetime)
    if mangle is not None:
        token = mangle(token, host)
    return s.register(host, key, _body(s), token=token)


def _host_rule(id: str, section: str, title: str, **forgery: Any) -> None:
    def run(s: Session) -> str | None:
        return refused(_forged_registration(s, **forgery), status=401, code="invalid_jwt")

    check(id, section, MUST, title)(run)


now = lambda: int(time.time())  # noqa: E731 - evaluated per check, not at import

_host_rule("host_jwt.typ_jwt", "§4.2", "host JWT with typ 'JWT' is refused", headers={"typ": "JWT"})
_host_rule(
    "host_jwt.typ_agent",
    "§4.5.1 step 1",
    "host JWT with typ 'agent+jwt' is refused",
    headers={"typ": "agent+jwt"},
)
_host_rule("host_jwt.typ_missing", "§4.2", "host JWT without typ is refused", headers={"typ": None})
_host_rule(
    "host_jwt.alg_none",
    "§4.1",
    "unsigned host JWT (alg none) is refused",
    mangle=lambda t, h: forge.unsigned(t),
)
_host_rule(
    "host_jwt.alg_hs256",
    "§4.1",
    "host JWT HMAC-signed with the public key (HS256) is refused",
    mangle=lambda t, h: forge.hmac_with_public_key(t, h.public_jwk["x"]),
)
_host_rule(
    "host_jwt.bad_signature",
    "§4.5.1 step 5",
    "host JWT with a broken signature is refused",
    mangle=lambda t, h: forge.bad_signature(t),
)
_host_rule(
    "host_jwt.aud_wrong",
    "§4.5.1 step 3",
    "host JWT for another audience is refused",
    claims={"aud": "https://other.example/api/auth"},
)
_host_rule("host_jwt.aud_missing", "§4.2", "host JWT without aud is refused", claims={"aud": None})
_host_rule("host_jwt.exp_missing", "§4.2", "host JWT without exp is refused", claims={"exp": None})
_host_rule("host_jwt.iat_missing", "§4.2", "host JWT without iat is refused", claims={"iat": None})
_host_rule("host_jwt.jti_missing", "§4.6", "host JWT without jti is refused", claims={"jti": None})


@check("host_jwt.expired", "§4.5.1 step 6", MUST, "expired host JWT is refused")
def expired(s: Session) -> str | None:
    resp = _forged_registration(s, claims={"iat": now() - 600, "exp": now() - 540})
    return refused(resp, status=401, code="invalid_jwt")


@check("host_jwt.iat_future", "§4.5.1 step 6", MUST, "host JWT issued 10 min ahead is refused")
def iat_future(s: Session) -> str | None:
    resp = _forged_registration(s, claims={"iat": now() + 600, "exp": now() + 660})
    return refused(resp, status=401, code="invalid_jwt")


@check("host_jwt.iss_not_thumbprint", "§4.2", MUST, "new host whose iss is not its thumbprint")
def iss_not_thumbprint(s: Session) -> str | None:
    other = Keypair.generate().thumbprint
    resp = _forged_registration(s, claims={"iss": other, "sub": other})
    return refused(resp, status=(400, 401), code=("invalid_jwt", "invalid_request"))


@check("host_jwt.unknown_claim", "RFC 7519 §4", MUST, "an unknown JWT claim is ignored")
def unknown_claim(s: Session) -> str | None:
    resp = _forged_registration(s, claims={"x_conformance": {"nested": [1, 2]}})
    require(resp.ok, f"refused with {resp.status} {error_code(resp)}")
    return None


@check("host_jwt.jti_replay", "§4.6", MUST, "a replayed host JWT is refused (registration)")
def replay_register(s: Session) -> str | None:
    host, key = Keypair.generate(), Keypair.generate()
    token = s.host_jwt(host, agent_key=key)
    first = s.register(host, key, _body(s), token=token)
    if not first.ok:
        raise Skipped(f"the first registration was refused ({first.status} {error_code(first)})")
    return refused(s.register(host, key, _body(s), token=token), status=401, code="invalid_jwt")


@check("host_jwt.jti_replay_status", "§4.6", MUST, "a replayed host JWT is refused (status)")
def replay_status(s: Session) -> str | None:
    agent = s.new_agent([s.capability])
    token = s.host_jwt(agent.host)
    query = {"agent_id": agent.agent_id}
    first = s.call("GET", s.endpoint("status"), token=token, query=query)
    if not first.ok:
        raise Skipped(f"status with a fresh host JWT failed ({first.status} {error_code(first)})")
    again = s.call("GET", s.endpoint("status"), token=token, query=query)
    return refused(again, status=401, code="invalid_jwt")


@check("registration.agent_key_required", "§5.3", MUST, "registration without agent key")
def agent_key_required(s: Session) -> str | None:
    host = Keypair.generate()
    token = s.host_jwt(host)
    resp = s.register(host, Keypair.generate(), _body(s), token=token)
    return refused(resp, status=(400, 401), code=("invalid_request", "invalid_jwt"))


@check("registration.body_not_object", "§5.13", MUST, "a JSON array body gets 400")
def body_not_object(s: Session) -> str | None:
    host, key = Keypair.generate(), Keypair.generate()
    resp = s.call(
        "POST",
        s.endpoint("register"),
        token=s.host_jwt(host, agent_key=key),
        json_body=["not", "an", "object"],
    )
    return refused(resp, status=400, code="invalid_request")


@check("registration.name_required", "§5.3", MUST, "registration without 'name' gets 400")
def name_required(s: Session) -> str | None:
    host, key = Keypair.generate(), Keypair.generate()
    body = _body(s)
    del body["name"]
    return refused(s.register(host, key, body), status=400, code="invalid_request")


@check("registration.unknown_capability", "§5.13", MUST, "unknown capability: 400")
def unknown_capability(s: Session) -> str | None:
    host, key = Keypair.generate(), Keypair.generate()
    name = f"conformance.no-such-{uuid.uuid4().hex[:8]}"
    resp = s.register(host, key, {**_body(s), "capabilities": [name]})
    return refused(resp, status=400, code="invalid_capabilities")


@check("registration.unknown_capability_list", "§5.13", SHOULD, "invalid_capabilities names it")
def unknown_capability_list(s: Session) -> str | None:
    host, key = Keypair.generate(), Keypair.generate()
    name = f"conformance.no-such-{uuid.uuid4().hex[:8]}"
    resp = s.register(host, key, {**_body(s), "capabilities": [name]})
    body = resp.body if isinstance(resp.body, dict) else {}
    require(name in (body.get("invalid_capabilities") or []), f"body: {str(body)[:200]}")
    return None


@check("registration.unsupported_mode", "§5.13", MUST, "an unknown mode gets 400")
def unsupported_mode(s: Session) -> str | None:
    host, key = Keypair.generate(), Keypair.generate()
    resp = s.register(host, key, {**_body(s), "mode": "telepathic"})
    return refused(resp, status=400, code=("unsupported_mode", "invalid_request"))


@check("registration.response", "§5.3", MUST, "registration response has the §5.3 fields")
def response(s: Session) -> str | None:
    agent = s.new_agent([s.capability])
    s.cache["probe_agent"] = agent
    b = agent.body
    for name in ("agent_id", "host_id", "name", "mode", "status"):
        require(isinstance(b.get(name), str), f"'{name}' is {b.get(name)!r}")
    require(b["status"] in ("active", "pending"), f"status {b['status']!r}")
    grants = b.get("agent_capability_grants")
    require(isinstance(grants, list), "'agent_capability_grants' is not an array")
    for g in grants or []:
        require(
            isinstance(g, dict) and isinstance(g.get("capability"), str) and "status" in g,
            f"grant {g!r} lacks capability/status",
        )
    if b["status"] == "pending":
        approval = b.get("approval")
        require(isinstance(approval, dict), "pending without an 'approval' object")
        require(isinstance((approval or {}).get("method"), str), "approval without 'method'")
    return f"status {b['status']}"


@check("registration.device_authorization", "§7.1", MUST, "device approval has RFC 8628 fields")
def device_authorization(s: Session) -> str | None:
    agent = s.cache.get("probe_agent")
    if agent is None:
        raise Skipped("no probe agent (see registration.response)")
    approval = agent.body.get("approval")
    if not isinstance(approval, dict) or approval.get("method") != "device_authorization":
        raise Skipped("the server chose no device authorization for this agent")
    for name, kind in (
        ("verification_uri", str),
        ("user_code", str),
        ("expires_in", int),
        ("interval", int),
    ):
        require(isinstance(approval.get(name), kind), f"'{name}' is {approval.get(name)!r}")
    return None


@check("registration.pending_retry", "§5.3", SHOULD, "re-registering a pending agent is idempotent")
def pending_retry(s: Session) -> str | None:
    agent: Agent | None = s.cache.get("probe_agent")
    if agent is None or agent.status != "pending":
        raise Skipped("no pending probe agent (the server approved it at once)")
    resp = s.register(agent.host, agent.key, _body(s))
    require(resp.ok, f"refused with {resp.status} {error_code(resp)}")
    got = resp.body.get("agent_id") if isinstance(resp.body, dict) else None
    require(got == agent.agent_id, f"a second agent {got!r} instead of {agent.agent_id!r}")
    return None


@check("registration.approved", "§7.1", MUST, "after approval the agent becomes active")
def approved(s: Session) -> str | None:
    agent = s.active_agent()
    return f"agent {agent.agent_id}"


@check("registration.agent_exists", "§5.3", SHOULD, "re-registering an active agent: 409")
def agent_exists(s: Session) -> str | None:
    agent = s.active_agent()
    resp = s.register(agent.host, agent.key, _body(s))
    return refused(resp, status=409, code="agent_exists")
