"""§5.11 execution, the §4.3, §4.5 agent JWT rules it enforces, and §2.13 constraints."""

from __future__ import annotations

import time
import uuid
from typing import Any

from agentauth.client import Keypair

from . import forge
from .model import Failed, Level, Skipped, check, require
from .session import Agent, Session, error_code, refused

MUST, SHOULD = Level.MUST, Level.SHOULD
ASYNC_POLLS = 10


def _now() -> int:
    return int(time.time())


@check("agent_jwt.iss_thumbprint", "§4.3, §4.5 step 4", MUST, "agent JWT iss = host thumbprint")
def iss_thumbprint(s: Session) -> str | None:
    """The spec's ``iss``; when refused, the run carries on with what the server does accept."""
    agent = s.active_agent()
    resp = s.execute(agent, token=s.agent_jwt(agent, iss=agent.host.thumbprint))
    if resp.ok:
        return None
    for mode, iss in (("absent", None), ("host_id", agent.host_id)):
        if s.execute(agent, token=s.agent_jwt(agent, iss=iss)).ok:
            s.agent_iss = mode
            raise Failed(
                f"refused with {resp.status} {error_code(resp)}; accepted with iss {mode} "
                "(the rest of the run uses that)"
            )
    raise Failed(f"refused with {resp.status} {error_code(resp)}, and so is every other iss")


def _sync_shape(body: Any) -> None:
    require(isinstance(body, dict) and "data" in body, f"no 'data' in {str(body)[:200]}")
    extra = [k for k in ("status", "status_url", "result", "error") if k in body]
    require(not extra, f"sync response also carries {extra}")


@check("execute.response", "§5.11", MUST, "execution answers in the sync/async/stream shape")
def response(s: Session) -> str | None:
    agent = s.active_agent()
    resp = s.execute(agent)
    s.cache["execute_response"] = resp
    require(resp.ok, f"execution answered {resp.status}: {str(resp.body)[:300]}")
    if resp.content_type == "text/event-stream":
        return "stream"
    if resp.status == 202:
        body = resp.body if isinstance(resp.body, dict) else {}
        require(body.get("status") == "pending", f"202 without status pending: {body}")
        require(isinstance(body.get("status_url"), str), "202 without status_url")
        bad = [k for k in ("data", "result", "error") if k in body]
        require(not bad, f"async pending also carries {bad}")
        return "async"
    _sync_shape(resp.body)
    return "sync"


@check("execute.async_poll", "§5.11", MUST, "async status_url needs the agent JWT and completes")
def async_poll(s: Session) -> str | None:
    resp = s.cache.get("execute_response")
    if resp is None or resp.status != 202:
        raise Skipped("the capability answered without 202 (choose an async one with --capability)")
    agent = s.active_agent()
    url = resp.body["status_url"]
    anonymous = s.call("GET", url)
    require(not anonymous.ok, "status_url answers without an agent JWT")
    for _ in range(ASYNC_POLLS):
        # §5.11 leaves the polling JWT's aud open: the issuer first, then the location.
        poll = s.call("GET", url, token=s.agent_jwt(agent, audience=s.issuer))
        if poll.status == 401:
            poll = s.call(
                "GET", url, token=s.agent_jwt(agent, audience=s.location_of(s.capability))
            )
        body = poll.body if isinstance(poll.body, dict) else {}
        require(poll.ok, f"poll answered {poll.status} {error_code(poll)}")
        state = body.get("status")
        if state == "completed":
            require("result" in body and "data" not in body, f"completed shape: {body}")
            return None
        if state == "failed":
            require(isinstance(body.get("error"), dict), f"failed without error object: {body}")
            return "failed (shape ok)"
        require(state == "pending", f"poll status {state!r}")
        time.sleep(1)
    raise Failed(f"still pending after {ASYNC_POLLS} polls")


@check("execute.stream_done", "§5.11", MUST, "an event stream ends with a 'done' event")
def stream_done(s: Session) -> str | None:
    resp = s.cache.get("execute_response")
    if resp is None or resp.content_type != "text/event-stream":
        raise Skipped("the capability did not stream (choose a streaming one with --capability)")
    events = [e[0] if isinstance(e, tuple | list) else e for e in resp.body or []]
    require(events and events[-1] == "done", f"events {events[-5:]}")
    return None


def _agent_rule(
    id: str,
    section: str,
    title: str,
    *,
    status: int | tuple[int, ...] = 401,
    code: str | tuple[str, ...] = "invalid_jwt",
    claims: Any = None,
    headers: dict[str, Any] | None = None,
    mangle: Any = None,
    audience: Any = None,
) -> None:
    def run(s: Session) -> str | None:
        agent = s.active_agent()
        aud = audience(s) if audience is not None else None
        token = s.agent_jwt(
            agent,
            audience=aud,
            claims=claims() if callable(claims) else claims,
            headers=headers,
        )
        if mangle is not None:
            token = mangle(token, agent)
        return refused(s.execute(agent, token=token), status=status, code=code)

    check(id, section, MUST, title)(run)


_agent_rule(
    "agent_jwt.typ_host", "§4.3", "agent JWT typed host+jwt is refused", headers={"typ": "host+jwt"}
)
_agent_rule(
    "agent_jwt.typ_missing", "§4.3", "agent JWT without typ is refused", headers={"typ": None}
)
_agent_rule(
    "agent_jwt.alg_none",
    "§4.1",
    "unsigned agent JWT (alg none) is refused",
    mangle=lambda t, a: forge.unsigned(t),
)
_agent_rule(
    "agent_jwt.alg_hs256",
    "§4.1",
    "agent JWT HMAC-signed with the agent's public key is refused",
    mangle=lambda t, a: forge.hmac_with_public_key(t, a.key.public_jwk["x"]),
)
_agent_rule(
    "agent_jwt.bad_signature",
    "§4.5 step 7",
    "agent JWT with a broken signature is refused",
    mangle=lambda t, a: forge.bad_signature(t),
)
_agent_rule(
    "agent_jwt.aud_wrong",
    "§4.3",
    "agent JWT for another audience is refused",
    audience=lambda s: "https://other.example/capability/execute",
)
_agent_rule(
    "agent_jwt.aud_missing", "§4.3", "agent JWT without aud is refused", claims={"aud": None}
)
_agent_rule(
    "agent_jwt.expired",
    "§4.5 step 8",
    "expired agent JWT is refused",
    claims=lambda: {"iat": _now() - 600, "exp": _now() - 540},
)
_agent_rule(
    "agent_jwt.iat_future",
    "§4.5 step 8",
    "agent JWT issued 10 min ahead is refused",
    claims=lambda: {"iat": _now() + 600, "exp": _now() + 660},
)
_agent_rule(
    "agent_jwt.exp_missing", "§4.3", "agent JWT without exp is refused", claims={"exp": None}
)
_agent_rule(
    "agent_jwt.iat_missing", "§4.3", "agent JWT without iat is refused", claims={"iat": None}
)
_agent_rule(
    "agent_jwt.jti_missing", "§4.6", "agent JWT without jti is refused", claims={"jti": None}
)
_agent_rule(
    "agent_jwt.capabilities_claim",
    "§4.3",
    "a capabilities claim without the capability is refused",
    status=403,
    code="capability_not_granted",
    claims={"capabilities": ["conformance.other"]},
)


@check(
    "agent_jwt.aud_issuer_at_execute",
    "§4.3, §5.11",
    SHOULD,
    "execution refuses aud = issuer (the location is the audience)",
)
def aud_issuer(s: Session) -> str | None:
    """SHOULD, not MUST: the spec contradicts itself here. §4.3 and §5.11 make the location the
    execution audience, while §4.5 step 3, §8.18 and the §6.10 client algorithm use the issuer,
    so a server accepting both for compatibility breaks no rule every reader agrees on."""
    if s.location_of(s.capability).rstrip("/") == s.issuer:
        raise Skipped("the execution location is the issuer itself")
    agent = s.active_agent()
    token = s.agent_jwt(agent, audience=s.issuer)
    return refused(s.execute(agent, token=token), status=401, code="invalid_jwt")


@check("agent_jwt.wrong_key", "§4.5 step 7", MUST, "agent JWT signed by another key is refused")
def wrong_key(s: Session) -> str | None:
    agent = s.active_agent()
    token = s.agent_jwt(agent, key=Keypair.generate())
    return refused(s.execute(agent, token=token), status=401, code="invalid_jwt")


@check("agent_jwt.unknown_agent", "§4.5 step 5", MUST, "agent JWT for an unknown sub is refused")
def unknown_agent(s: Session) -> str | None:
    agent = s.active_agent()
    token = s.agent_jwt(agent, claims={"sub": f"agt_conformance_{uuid.uuid4().hex[:10]}"})
    return refused(
        s.execute(agent, token=token),
        status=(401, 403, 404),
        code=("invalid_jwt", "agent_not_found"),
    )


@check("agent_jwt.jti_replay", "§4.6", MUST, "a replayed agent JWT is refused")
def jti_replay(s: Session) -> str | None:
    agent = s.active_agent()
    token = s.agent_jwt(agent)
    first = s.execute(agent, token=token)
    if not first.ok:
        raise Skipped(f"the first execution failed ({first.status} {error_code(first)})")
    return refused(s.execute(agent, token=token), status=401, code=("invalid_jwt", "jti_replay"))


@check("agent_jwt.no_token", "§5.11", MUST, "execution without a token gets 401")
def no_token(s: Session) -> str | None:
    resp = s.call(
        "POST",
        s.location_of(s.capability),
        json_body={"capability": s.capability, "arguments": s.arguments},
    )
    return refused(resp, status=401, code=("invalid_jwt", "authentication_required"))


@check("execute.capability_missing", "§5.11", MUST, "execution without 'capability' gets 400")
def capability_missing(s: Session) -> str | None:
    agent = s.active_agent()
    resp = s.call(
        "POST",
        s.location_of(s.capability),
        token=s.agent_jwt(agent),
        json_body={"arguments": s.arguments},
    )
    return refused(resp, status=400, code="invalid_request")


@check("execute.capability_not_found", "§5.11", MUST, "an unknown capability gets 404")
def capability_not_found(s: Session) -> str | None:
    agent = s.active_agent()
    name = f"conformance.no-such-{uuid.uuid4().hex[:8]}"
    resp = s.execute(agent, capability=name, arguments={})
    return refused(resp, status=404, code="capability_not_found")


def _granted(s: Session, agent: Agent) -> set[str] | None:
    resp = s.status(agent)
    grants = resp.body.get("agent_capability_grants") if isinstance(resp.body, dict) else None
    if not resp.ok or not isinstance(grants, list):
        return None
    return {
        str(g.get("capability"))
        for g in grants
        if isinstance(g, dict) and g.get("status") == "active"
    }


@check("execute.capability_not_granted", "§5.11", MUST, "an ungranted capability gets 403")
def capability_not_granted(s: Session) -> str | None:
    """Tries each listed capability the agent holds no grant for. One the server grants on
    first use is skipped over: a host's default capabilities are pre-authorized (§1.5, §2.7),
    so executing those is no breach."""
    agent = s.active_agent()
    granted = _granted(s, agent)
    if granted is None:
        raise Skipped("status did not list the agent's grants")
    auto = []
    for item in s.capability_list():
        name = str(item.get("name"))
        if name in granted or item.get("location"):
            continue
        resp = s.execute(agent, capability=name, arguments={})
        if not resp.ok:
            return refused(resp, status=403, code="capability_not_granted")
        now_granted = _granted(s, agent) or set()
        if name not in now_granted:
            raise Failed(f"{name!r} executed ({resp.status}) without any active grant")
        auto.append(name)
        granted = now_granted
    if auto:
        raise Skipped(
            f"every ungranted capability was granted on first use (host defaults): {auto}"
        )
    raise Skipped("the capability list offers no ungranted capability at the default location")


def _constrained(s: Session) -> tuple[Agent, str, Any]:
    """An agent whose grant pins one string argument to its configured value (§2.13 ``in``)."""
    if "constrained" not in s.cache:
        s.cache["constrained"] = None
        fields = [(k, v) for k, v in s.arguments.items() if isinstance(v, str | int | float)]
        if not fields:
            raise Skipped("--arguments has no scalar argument to constrain")
        field, value = fields[0]
        request = {"name": s.capability, "constraints": {field: {"in": [value]}}}
        agent = s.new_agent([request], name="conformance constrained")
        s.cache["constrained"] = (s.approve(agent), field, value)
    got: tuple[Agent, str, Any] | None = s.cache["constrained"]
    if got is None:
        raise Skipped("no constrained agent (see constraints.granted)")
    return got


@check("constraints.granted", "§5.3", MUST, "an active constrained grant carries its constraints")
def constraints_granted(s: Session) -> str | None:
    agent, field, _ = _constrained(s)
    grants = agent.body.get("agent_capability_grants") or []
    mine = [g for g in grants if isinstance(g, dict) and g.get("capability") == s.capability]
    require(mine and mine[0].get("status") == "active", f"grants {grants}")
    constraints = mine[0].get("constraints")
    require(isinstance(constraints, dict) and field in constraints, f"grant {mine[0]}")
    return None


@check("constraints.allowed", "§2.13", MUST, "a call inside the constraint executes")
def constraints_allowed(s: Session) -> str | None:
    agent, _, _ = _constrained(s)
    resp = s.execute(agent)
    require(resp.ok, f"answered {resp.status} {error_code(resp)}")
    return None


@check("constraints.violated", "§5.11", MUST, "a call outside the constraint gets 403")
def constraints_violated(s: Session) -> str | None:
    agent, field, value = _constrained(s)
    other = f"{value}9" if isinstance(value, str) else value + 1
    resp = s.execute(agent, arguments={**s.arguments, field: other})
    s.cache["violation"] = resp
    return refused(resp, status=403, code="constraint_violated")


@check("constraints.violations", "§5.11", SHOULD, "constraint_violated lists 'violations'")
def constraints_violations(s: Session) -> str | None:
    resp = s.cache.get("violation")
    if resp is None or error_code(resp) != "constraint_violated":
        raise Skipped("no constraint_violated answer to inspect")
    violations = resp.body.get("violations")
    require(isinstance(violations, list) and violations, f"body {resp.body}")
    return None
