"""One run's state and the few primitives every check uses: timed HTTP, tokens, agents.

Every HTTP call goes through :meth:`Session.call`, which caps its timeout by what is left of the
run's budget, so the checker cannot hang however slow or silent the server is. Every error
response is also kept, for the §5.13 error-format check that runs last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agentauth.client import Keypair, sign_agent_jwt, sign_host_jwt
from agentauth.client import http as client_http
from agentauth.client.client import DEFAULT_ENDPOINTS
from agentauth.client.urls import resolve_endpoint
from agentauth.errors import ProtocolError

from .approvers import ApprovalFailed, Approver
from .model import Failed, Skipped

DISCOVERY_PATH = "/.well-known/agent-configuration"
#: How long to wait for an agent to turn active after the approver returned.
APPROVAL_WAIT = 30.0


@dataclass
class Agent:
    host: Keypair
    key: Keypair
    agent_id: str
    host_id: str
    status: str
    body: dict[str, Any]


@dataclass(frozen=True)
class ErrorSeen:
    what: str
    status: int
    body: Any


@dataclass
class Session:
    url: str
    approver: Approver | None
    capability: str
    arguments: dict[str, Any]
    timeout: float = 10.0
    budget: float = 240.0
    started: float = field(default_factory=time.monotonic)
    discovery: dict[str, Any] | None = None
    discovery_headers: dict[str, str] = field(default_factory=dict)
    discovery_problem: str = ""
    #: What agent JWTs carry as ``iss``: the host thumbprint (§4.3) until the server refuses it.
    agent_iss: str = "thumbprint"
    errors: list[ErrorSeen] = field(default_factory=list)
    answers: int = 0
    cache: dict[str, Any] = field(default_factory=dict)

    # -- time and HTTP ------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.budget - (time.monotonic() - self.started)

    def call(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        query: dict[str, Any] | None = None,
    ) -> client_http.Response:
        left = self.remaining()
        if left <= 1:
            raise Skipped("the run's time budget is used up")
        timeout = min(self.timeout, left)
        try:
            resp = client_http.request(
                method, url, token=token, json_body=json_body, query=query, timeout=timeout
            )
        except ProtocolError as exc:
            raise Failed(
                f"{method} {url}: no usable answer within {timeout:.0f} s ({exc})"
            ) from None
        self.answers += 1
        if resp.status >= 400:
            self.errors.append(ErrorSeen(f"{method} {urlsplit(url).path}", resp.status, resp.body))
        return resp

    # -- discovery ----------------------------------------------------------------------------

    def doc(self) -> dict[str, Any]:
        if self.discovery is None:
            raise Skipped(
                f"no usable discovery document ({self.discovery_problem or 'not fetched'})"
            )
        return self.discovery

    @property
    def issuer(self) -> str:
        issuer = self.doc().get("issuer")
        if not isinstance(issuer, str) or not issuer:
            raise Skipped("discovery has no string 'issuer'")
        return issuer.rstrip("/")

    def endpoint(self, name: str) -> str:
        endpoints = self.doc().get("endpoints")
        value = endpoints.get(name) if isinstance(endpoints, dict) else None
        if not isinstance(value, str) or not value:
            value = DEFAULT_ENDPOINTS[name]
        return resolve_endpoint(self.issuer, value)

    @property
    def default_location(self) -> str:
        location = self.doc().get("default_location")
        return location if isinstance(location, str) and location else self.endpoint("execute")

    def location_of(self, capability: str) -> str:
        """The capability's own ``location`` if the list gives one, else the default (§2.15)."""
        for item in self.capability_list():
            if item.get("name") == capability and isinstance(item.get("location"), str):
                return str(item["location"])
        return self.default_location

    def capability_list(self) -> list[dict[str, Any]]:
        if "capabilities" not in self.cache:
            resp = self.call("GET", self.endpoint("capabilities"))
            body = resp.body if resp.ok else None
            items = body.get("capabilities") if isinstance(body, dict) else None
            self.cache["capabilities"] = [c for c in items or [] if isinstance(c, dict)]
        result: list[dict[str, Any]] = self.cache["capabilities"]
        return result

    # -- tokens -------------------------------------------------------------------------------

    def host_jwt(
        self,
        host: Keypair,
        *,
        agent_key: Keypair | None = None,
        claims: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        lifetime: int = 60,
    ) -> str:
        return sign_host_jwt(
            host,
            audience=self.issuer,
            agent_public_key=agent_key,
            extra_claims=claims,
            extra_headers=headers,
            lifetime=lifetime,
        )

    def agent_jwt(
        self,
        agent: Agent,
        *,
        audience: str | None = None,
        claims: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        iss: str | None = "session",
        key: Keypair | None = None,
    ) -> str:
        if iss == "session":
            iss = {"thumbprint": agent.host.thumbprint, "host_id": agent.host_id}.get(
                self.agent_iss
            )
        return sign_agent_jwt(
            key or agent.key,
            agent_id=agent.agent_id,
            audience=audience or self.location_of(self.capability),
            host_thumbprint=iss,
            extra_claims=claims,
            extra_headers=headers,
        )

    # -- agents -------------------------------------------------------------------------------

    def register(
        self, host: Keypair, key: Keypair, body: dict[str, Any], *, token: str | None = None
    ) -> client_http.Response:
        token = token or self.host_jwt(host, agent_key=key)
        return self.call("POST", self.endpoint("register"), token=token, json_body=body)

    def status(self, agent: Agent, *, host: Keypair | None = None) -> client_http.Response:
        token = self.host_jwt(host or agent.host)
        return self.call(
            "GET", self.endpoint("status"), token=token, query={"agent_id": agent.agent_id}
        )

    def new_agent(self, capabilities: list[Any], *, name: str = "conformance") -> Agent:
        """Register a new agent under a new host (§5.3); it may come back pending."""
        host, key = Keypair.generate(), Keypair.generate()
        body: dict[str, Any] = {
            "name": name,
            "host_name": "agentauth-conformance",
            "capabilities": capabilities,
            "mode": self.mode,
            "reason": "Agent Auth conformance run",
        }
        resp = self.register(host, key, body)
        if resp.status == 429:
            raise Failed(
                f"registration answered 429: {str(resp.body)[:200]}; the checker registers each "
                "agent under a new host from one address, so raise the server's limit on new "
                "hosts for the run (django-agentauth: register_unknown_host)"
            )
        if not resp.ok or not isinstance(resp.body, dict):
            raise Failed(f"registration answered {resp.status}: {str(resp.body)[:300]}")
        b = resp.body
        agent_id, host_id = b.get("agent_id"), b.get("host_id")
        if not isinstance(agent_id, str) or not isinstance(host_id, str):
            raise Failed(f"registration response lacks agent_id/host_id: {str(b)[:300]}")
        return Agent(host, key, agent_id, host_id, str(b.get("status")), b)

    @property
    def mode(self) -> str:
        modes = self.doc().get("modes")
        if isinstance(modes, list) and modes and "delegated" not in modes:
            return str(modes[0])
        return "delegated"

    def approve(self, agent: Agent) -> Agent:
        """Have the approver decide a pending agent, then wait until the server says active."""
        if agent.status == "active":
            return agent
        if agent.status != "pending":
            raise Failed(f"new agent is {agent.status!r}, neither active nor pending")
        if self.approver is None:
            raise Skipped("needs a person's approval and the run has --approver skip")
        approval = agent.body.get("approval")
        approval = approval if isinstance(approval, dict) else {}
        try:
            self.approver(
                agent.agent_id,
                str(approval.get("user_code") or ""),
                str(approval.get("verification_uri") or ""),
            )
        except ApprovalFailed as exc:
            raise Skipped(f"the approver failed: {exc}") from None
        deadline = time.monotonic() + min(APPROVAL_WAIT, max(self.remaining() - 1, 0))
        while True:
            resp = self.status(agent)
            if resp.ok and isinstance(resp.body, dict):
                agent.status = str(resp.body.get("status"))
                agent.body = {**agent.body, **resp.body}
                if agent.status == "active":
                    return agent
            if time.monotonic() >= deadline:
                raise Failed(
                    f"agent still {agent.status!r} {APPROVAL_WAIT:.0f} s after the approver "
                    f"returned (status answered {resp.status})"
                )
            time.sleep(1.0)

    def active_agent(self) -> Agent:
        """The run's main agent, granted ``--capability`` (registered and approved once)."""
        if "agent" not in self.cache:
            self.cache["agent"] = None
            try:
                self.cache["agent"] = self.approve(self.new_agent([self.capability]))
            except (Failed, Skipped) as exc:
                self.cache["agent_problem"] = str(exc)
                raise
        agent: Agent | None = self.cache["agent"]
        if agent is None:
            raise Skipped(f"no active agent: {self.cache.get('agent_problem', 'setup failed')}")
        return agent

    def execute(
        self,
        agent: Agent,
        *,
        token: str | None = None,
        capability: str | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> client_http.Response:
        cap = capability or self.capability
        return self.call(
            "POST",
            self.location_of(cap),
            token=token or self.agent_jwt(agent, audience=self.location_of(cap)),
            json_body={
                "capability": cap,
                "arguments": self.arguments if arguments is None else arguments,
            },
        )


def error_code(resp: client_http.Response) -> str:
    body = resp.body
    return str(body.get("error")) if isinstance(body, dict) else ""


def refused(
    resp: client_http.Response, *, status: int | tuple[int, ...], code: str | tuple[str, ...] = ()
) -> str | None:
    """Fail unless ``resp`` refuses the request with a 4xx.

    A 4xx other than the one the spec names still counts as refusing (the rule under test is
    that the request does not succeed); the difference is returned as a note for the report.
    """
    if resp.ok:
        raise Failed(f"accepted with {resp.status}; the request must be refused")
    if resp.status >= 500 or resp.status < 400:
        raise Failed(
            f"answered {resp.status} instead of refusing with a 4xx: {str(resp.body)[:200]}"
        )
    statuses = (status,) if isinstance(status, int) else status
    codes = (code,) if isinstance(code, str) else code
    got = error_code(resp)
    if resp.status not in statuses or (codes and got not in codes):
        expected = " or ".join(f"{s}" for s in statuses)
        if codes:
            expected += " " + "/".join(codes)
        return f"refused with {resp.status} {got or '(no error code)'}; the spec names {expected}"
    return None
