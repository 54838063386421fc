"""§5.5 to §5.10 lifecycle: status, key rotation, reactivation, revocation and its cascade.

These run on an agent of their own (one more approval), so revoking it leaves the main agent
for the checks that still need it; the host-revocation cascade runs last, on the main host.
"""

from __future__ import annotations

import uuid
from typing import Any

from agentauth.client import Keypair

from .model import Level, Skipped, check, require
from .session import Agent, Session, error_code, refused

MUST, SHOULD = Level.MUST, Level.SHOULD


def _agent(s: Session) -> Agent:
    if "lifecycle" not in s.cache:
        s.cache["lifecycle"] = None
        s.cache["lifecycle"] = s.approve(s.new_agent([s.capability], name="conformance lifecycle"))
    agent: Agent | None = s.cache["lifecycle"]
    if agent is None:
        raise Skipped("no lifecycle agent could be set up")
    return agent


def _host_post(s: Session, host: Keypair, endpoint: str, body: dict[str, Any]) -> Any:
    return s.call("POST", s.endpoint(endpoint), token=s.host_jwt(host), json_body=body)


@check("status.response", "§5.5", MUST, "status returns the §5.5 fields")
def status_response(s: Session) -> str | None:
    agent = _agent(s)
    resp = s.status(agent)
    require(resp.ok, f"answered {resp.status} {error_code(resp)}")
    b = resp.body if isinstance(resp.body, dict) else {}
    for name in ("agent_id", "host_id", "name", "status", "mode", "created_at"):
        require(isinstance(b.get(name), str), f"'{name}' is {b.get(name)!r}")
    require(b["agent_id"] == agent.agent_id, "another agent's status")
    require(isinstance(b.get("agent_capability_grants"), list), "no grants array")
    return None


@check("status.active_grant_details", "§5.3", SHOULD, "active grants carry the description")
def active_grant_details(s: Session) -> str | None:
    resp = s.status(_agent(s))
    grants = resp.body.get("agent_capability_grants") if isinstance(resp.body, dict) else None
    active = [g for g in grants or [] if isinstance(g, dict) and g.get("status") == "active"]
    require(active, "no active grant")
    require(all(isinstance(g.get("description"), str) for g in active), f"grants {active}")
    return None


@check("status.unknown_agent", "§5.13", MUST, "status of an unknown agent: 404")
def status_unknown(s: Session) -> str | None:
    agent = _agent(s)
    resp = s.call(
        "GET",
        s.endpoint("status"),
        token=s.host_jwt(agent.host),
        query={"agent_id": f"agt_conformance_{uuid.uuid4().hex[:10]}"},
    )
    return refused(resp, status=404, code="agent_not_found")


@check("status.other_host", "§5.5", MUST, "a host cannot read another host's agent")
def status_other_host(s: Session) -> str | None:
    agent, other = _agent(s), s.active_agent()
    resp = s.status(agent, host=other.host)
    require(not resp.ok, f"host {other.host_id} read agent {agent.agent_id}")
    return refused(resp, status=(403, 404), code=("unauthorized", "agent_not_found"))


@check("status.missing_agent_id", "§5.13", MUST, "status without agent_id: 400")
def status_missing_id(s: Session) -> str | None:
    agent = _agent(s)
    resp = s.call("GET", s.endpoint("status"), token=s.host_jwt(agent.host))
    return refused(resp, status=400, code="invalid_request")


@check("lifecycle.rotate_key", "§5.8", MUST, "rotate-key: old key refused, new key works")
def rotate_key(s: Session) -> str | None:
    agent = _agent(s)
    new = Keypair.generate()
    resp = _host_post(
        s, agent.host, "rotate_key", {"agent_id": agent.agent_id, "public_key": new.wire_jwk}
    )
    require(resp.ok, f"rotate-key answered {resp.status} {error_code(resp)}")
    old_key = agent.key
    agent.key = new
    require(s.execute(agent).ok, "the new key's JWT is refused")
    agent.key = old_key
    old = s.execute(agent)
    agent.key = new
    return refused(old, status=401, code="invalid_jwt")


@check("lifecycle.reactivate_active", "§5.6", MUST, "reactivating an active agent is a no-op")
def reactivate_active(s: Session) -> str | None:
    agent = _agent(s)
    resp = _host_post(s, agent.host, "reactivate", {"agent_id": agent.agent_id})
    require(resp.ok, f"answered {resp.status} {error_code(resp)}")
    got = resp.body.get("status") if isinstance(resp.body, dict) else None
    require(got == "active", f"status {got!r}")
    return None


@check("lifecycle.revoke", "§5.7", MUST, "revoke answers {agent_id, status: revoked}")
def revoke(s: Session) -> str | None:
    agent = _agent(s)
    resp = _host_post(s, agent.host, "revoke", {"agent_id": agent.agent_id})
    require(resp.ok, f"answered {resp.status} {error_code(resp)}")
    s.cache["revoked"] = agent
    b = resp.body if isinstance(resp.body, dict) else {}
    require(b.get("agent_id") == agent.agent_id and b.get("status") == "revoked", f"body {b}")
    return None


def _revoked(s: Session) -> Agent:
    agent: Agent | None = s.cache.get("revoked")
    if agent is None:
        raise Skipped("no revoked agent (see lifecycle.revoke)")
    return agent


@check("lifecycle.revoked_execute", "§5.11", MUST, "a revoked agent's execution: 403")
def revoked_execute(s: Session) -> str | None:
    return refused(s.execute(_revoked(s)), status=403, code="agent_revoked")


@check("lifecycle.revoked_status", "§5.5", MUST, "status shows the agent revoked")
def revoked_status(s: Session) -> str | None:
    resp = s.status(_revoked(s))
    require(resp.ok, f"answered {resp.status} {error_code(resp)}")
    require(resp.body.get("status") == "revoked", f"status {resp.body.get('status')!r}")
    return None


@check("lifecycle.reactivate_revoked", "§5.6", MUST, "reactivating a revoked agent: 403")
def reactivate_revoked(s: Session) -> str | None:
    agent = _revoked(s)
    resp = _host_post(s, agent.host, "reactivate", {"agent_id": agent.agent_id})
    return refused(resp, status=403, code="agent_revoked")


@check("lifecycle.revoke_unknown", "§5.13", MUST, "revoking an unknown agent: 404")
def revoke_unknown(s: Session) -> str | None:
    agent = _revoked(s)
    resp = _host_post(s, agent.host, "revoke", {"agent_id": f"agt_conf_{uuid.uuid4().hex[:10]}"})
    return refused(resp, status=404, code="agent_not_found")


@check("lifecycle.rotate_host_key", "§5.9", MUST, "rotate host key: old key refused, new works")
def rotate_host_key(s: Session) -> str | None:
    agent = _revoked(s)
    new = Keypair.generate()
    resp = _host_post(s, agent.host, "rotate_host_key", {"public_key": new.wire_jwk})
    require(resp.ok, f"answered {resp.status} {error_code(resp)}")
    old = agent.host
    agent.host = new
    require(s.status(agent).ok, "the new host key is refused")
    stale = s.status(agent, host=old)
    return refused(stale, status=(401, 403), code=("invalid_jwt", "unauthorized"))


@check("lifecycle.revoke_host", "§5.10", MUST, "revoke host answers and cascades to its agents")
def revoke_host(s: Session) -> str | None:
    agent = s.active_agent()
    resp = s.call("POST", s.endpoint("revoke_host"), token=s.host_jwt(agent.host), json_body={})
    require(resp.ok, f"answered {resp.status} {error_code(resp)}")
    b = resp.body if isinstance(resp.body, dict) else {}
    require(b.get("status") == "revoked", f"status {b.get('status')!r}")
    require(isinstance(b.get("agents_revoked"), int), f"agents_revoked {b.get('agents_revoked')!r}")
    s.cache["revoked_host"] = agent
    return refused(s.execute(agent), status=403, code=("agent_revoked", "host_revoked"))


@check("lifecycle.revoked_host_jwt", "§4.5.1 step 8", MUST, "a revoked host's JWT: 403")
def revoked_host_jwt(s: Session) -> str | None:
    agent: Agent | None = s.cache.get("revoked_host")
    if agent is None:
        raise Skipped("no revoked host (see lifecycle.revoke_host)")
    return refused(s.status(agent), status=403, code="host_revoked")
