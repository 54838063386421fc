"""The agent-side client: discovery, registration, lifecycle calls and capability execution.

It plays the role spec §6 calls "client": it holds the host key and every agent key, signs a
fresh short-lived JWT for each request (never reusing one across requests or servers, §8.18),
and turns every ``{"error","message"}`` body into :class:`~agentauth.errors.ProtocolError`.
Used by the test-suite against this package's server, and usable against any server speaking
the protocol. Imports nothing from Django.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from agentauth.errors import ProtocolError

from . import dpop, http, live
from .connection import AgentConnection
from .errors import ClientError
from .identity import Keypair
from .tokens import DEFAULT_LIFETIME, sign_agent_jwt, sign_host_jwt
from .urls import require_same_origin, require_transport, resolve_endpoint

SUPPORTED_MAJOR_VERSION = 1
DISCOVERY_PATH = "/.well-known/agent-configuration"
#: §10.5: default discovery cache lifetime 1 h, never longer than 24 h.
DEFAULT_DISCOVERY_TTL = 3600.0
MAX_DISCOVERY_TTL = 86400.0
#: §7: the approval ``interval`` is a minimum; 5 s when the server gave none.
DEFAULT_APPROVAL_INTERVAL = 5.0
#: Used for endpoints a discovery document leaves out (the paths of the §5.1 example).
DEFAULT_ENDPOINTS = {
    "register": "/agent/register",
    "capabilities": "/capability/list",
    "describe_capability": "/capability/describe",
    "execute": "/capability/execute",
    "request_capability": "/agent/request-capability",
    "status": "/agent/status",
    "reactivate": "/agent/reactivate",
    "revoke": "/agent/revoke",
    "revoke_host": "/host/revoke",
    "rotate_key": "/agent/rotate-key",
    "rotate_host_key": "/host/rotate-key",
    "introspect": "/agent/introspect",
}

AuthMode = Literal["agent", "host", "none"]
#: What an agent JWT carries as ``iss`` (§4.3 leaves servers to cope): the host key's thumbprint
#: (this server, the spec's examples), the ``host_id`` the server returned at registration (the
#: TypeScript reference server accepts only that), or nothing (the TypeScript SDK).
AgentIss = Literal["thumbprint", "host_id", "omit"]
AGENT_ISS_CHOICES: tuple[str, ...] = ("thumbprint", "host_id", "omit")
CapabilityRequest = str | Mapping[str, Any]
TokenFactory = Callable[[], str | None]


def _no_token() -> None:
    return None


def _cache_lifetime(cache_control: str | None) -> float:
    """Seconds to keep a discovery document, from ``Cache-Control`` (§5.1, §10.5)."""
    if not cache_control:
        return DEFAULT_DISCOVERY_TTL
    directives = [d.strip().lower() for d in cache_control.split(",")]
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    for directive in directives:
        name, _, value = directive.partition("=")
        if name.strip() == "max-age" and value.strip().isdigit():
            return min(float(value.strip()), MAX_DISCOVERY_TTL)
    return DEFAULT_DISCOVERY_TTL


def _major_version(version: str) -> int | None:
    match = re.match(r"^\s*(\d+)(?:\.\d+)*(?:-[A-Za-z0-9.]+)?\s*$", version)
    return int(match.group(1)) if match else None


def _as_dict(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ClientError("invalid_response", f"{what}: expected a JSON object")
    return body


def _agent_id(agent: str | AgentConnection) -> str:
    return agent.agent_id if isinstance(agent, AgentConnection) else agent


def _raise_failed(body: Mapping[str, Any]) -> None:
    """An async ``failed`` result carries a §5.13 error object; surface it as an exception."""
    error = body.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("error"), str):
        extra = {k: v for k, v in error.items() if k not in ("error", "message", "status")}
        raise ProtocolError(error["error"], error.get("message"), status=200, **extra)
    raise ProtocolError("execution_failed", "capability execution failed", status=200)


def _settled(body: Mapping[str, Any], wanted: set[str] | None) -> bool:
    """The agent is no longer ``pending`` and neither are the grants waited for."""
    if body.get("status") == "pending":
        return False
    grants = body.get("agent_capability_grants") or []
    return wanted is None or not any(
        isinstance(g, Mapping) and g.get("capability") in wanted and g.get("status") == "pending"
        for g in grants
    )


class AgentAuthClient:
    """A client for one Agent Auth server, identified by ``base_url``.

    ``host`` is the host identity (a new one is generated when omitted). ``sleep`` and ``clock``
    are injectable so approval and async-execution polling can be tested without waiting.
    Plain ``http://`` is accepted only for loopback addresses unless ``allow_insecure_http``.
    ``agent_iss`` chooses what agent JWTs carry as ``iss`` (see :data:`AgentIss`).
    """

    def __init__(
        self,
        base_url: str,
        host: Keypair | None = None,
        *,
        timeout: float = 10.0,
        allow_insecure_http: bool = False,
        poll_timeout: float = 300.0,
        max_poll_interval: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        agent_iss: AgentIss = "thumbprint",
    ) -> None:
        if agent_iss not in AGENT_ISS_CHOICES:
            raise ValueError(f"agent_iss must be one of {AGENT_ISS_CHOICES}")
        self.agent_iss = agent_iss
        self.base_url = base_url.rstrip("/")
        self.allow_insecure_http = allow_insecure_http
        require_transport(self.base_url, allow_insecure_http=allow_insecure_http)
        self.host = host if host is not None else Keypair.generate()
        self.timeout = timeout
        self.poll_timeout = poll_timeout
        self.max_poll_interval = max_poll_interval
        self._sleep = sleep
        self._clock = clock
        self._discovery: dict[str, Any] | None = None
        self._discovery_expires = 0.0
        self._described: dict[str, dict[str, Any]] = {}
        self._dpop = dpop.DPoPSession()

    # -- discovery ----------------------------------------------------------------------------

    def discover(self, *, force: bool = False) -> dict[str, Any]:
        """Fetch (or return the cached) discovery document and check it is usable (§5.1).

        A cached copy is reused until its ``Cache-Control`` lifetime ends; when a refresh fails
        because the server is unreachable, the last good copy is kept (§10.5).
        """
        now = self._clock()
        if self._discovery is not None and not force and now < self._discovery_expires:
            return self._discovery
        try:
            resp = http.raise_for_error(
                http.request("GET", self.base_url + DISCOVERY_PATH, timeout=self.timeout)
            )
        except ProtocolError as exc:
            if self._discovery is not None and (exc.status == 0 or exc.status >= 500):
                return self._discovery
            raise
        doc = self._validate_discovery(resp.body)
        self._discovery = doc
        self._discovery_expires = now + _cache_lifetime(resp.headers.get("cache-control"))
        return doc

    def _validate_discovery(self, body: Any) -> dict[str, Any]:
        doc = _as_dict(body, "discovery document")
        version, issuer, endpoints = doc.get("version"), doc.get("issuer"), doc.get("endpoints")
        if not isinstance(version, str) or not isinstance(issuer, str):
            raise ClientError("invalid_discovery", "discovery needs string 'version' and 'issuer'")
        if not isinstance(endpoints, dict) or not all(
            isinstance(v, str) for v in endpoints.values()
        ):
            raise ClientError("invalid_discovery", "discovery 'endpoints' must map names to URLs")
        major = _major_version(version)
        if major != SUPPORTED_MAJOR_VERSION:
            raise ClientError(
                "unsupported_version",
                f"server speaks Agent Auth {version!r}; this client supports "
                f"{SUPPORTED_MAJOR_VERSION}.x",
                version=version,
            )
        require_transport(issuer, allow_insecure_http=self.allow_insecure_http)
        location = doc.get("default_location")
        if location is not None and not isinstance(location, str):
            raise ClientError("invalid_discovery", "'default_location' must be a string")
        previous = self._discovery
        if (
            previous is not None
            and "Ed25519" in (previous.get("algorithms") or [])
            and "Ed25519" not in (doc.get("algorithms") or [])
        ):
            # §8.16: a document that drops a previously supported algorithm is suspicious.
            raise ClientError("algorithm_downgrade", "server no longer lists Ed25519")
        return doc

    @property
    def configuration(self) -> dict[str, Any]:
        return self.discover()

    @property
    def issuer(self) -> str:
        return str(self.discover()["issuer"])

    def endpoint(self, name: str) -> str:
        """Absolute URL of a discovery endpoint (relative values are prefixed with ``issuer``)."""
        doc = self.discover()
        value = doc["endpoints"].get(name) or DEFAULT_ENDPOINTS.get(name)
        if not value:
            raise ClientError("invalid_discovery", f"server does not publish endpoint {name!r}")
        url = resolve_endpoint(str(doc["issuer"]), value)
        return require_transport(url, allow_insecure_http=self.allow_insecure_http)

    @property
    def default_location(self) -> str:
        """Execution URL for capabilities without their own ``location`` (§5.1)."""
        location = self.discover().get("default_location")
        return str(location) if location else self.endpoint("execute")

    # -- signing ------------------------------------------------------------------------------

    def _host_token(self, agent_key: Keypair | None = None) -> str:
        return sign_host_jwt(self.host, audience=self.issuer, agent_public_key=agent_key)

    def _agent_token(
        self,
        connection: AgentConnection,
        *,
        audience: str | None = None,
        capabilities: Iterable[str] | None = None,
        lifetime: int = DEFAULT_LIFETIME,
    ) -> str:
        # Bound to the proof key when the server speaks DPoP (spec §4.4: SHOULD carry cnf.jkt).
        bound = {"cnf": dpop.cnf(connection.agent)} if self.uses_dpop else None
        return sign_agent_jwt(
            connection.agent,
            agent_id=connection.agent_id,
            audience=audience or self.issuer,
            host_thumbprint=self._agent_iss(connection),
            capabilities=capabilities,
            lifetime=lifetime,
            extra_claims=bound,
        )

    @property
    def uses_dpop(self) -> bool:
        """Whether agent requests carry DPoP proofs: only when discovery advertises it."""
        return dpop.advertised(self.discover())

    def _agent_iss(self, connection: AgentConnection) -> str | None:
        if self.agent_iss == "omit":
            return None
        if self.agent_iss == "host_id":
            if not connection.host_id:
                raise ClientError("invalid_state", "agent_iss='host_id' needs the agent's host_id")
            return connection.host_id
        return self.host.thumbprint

    def sign_agent_jwt(
        self,
        connection: AgentConnection,
        *,
        audience: str | None = None,
        capabilities: Sequence[str] | None = None,
        lifetime: int = DEFAULT_LIFETIME,
    ) -> str:
        """The spec's ``sign_jwt`` tool (§6.5): an agent JWT for the agent's own use.

        ``aud`` defaults to ``issuer``. Capabilities outside the grants the client last saw as
        active are refused locally (§6), so the client never vouches for access it lacks.
        """
        if capabilities:
            missing = sorted(set(capabilities) - set(connection.active_capabilities))
            if missing:
                raise ClientError(
                    "capability_not_granted",
                    f"agent has no active grant for {missing}",
                    capabilities=missing,
                )
        return self._agent_token(
            connection, audience=audience, capabilities=capabilities, lifetime=lifetime
        )

    # -- transport ----------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        token: TokenFactory,
        proof_key: Keypair | None,
        **kwargs: Any,
    ) -> http.Response:
        """One request; with a DPoP proof by ``proof_key`` when the server speaks DPoP."""
        if proof_key is not None and self.uses_dpop:
            agent_token: Callable[[], str] = lambda: str(token())  # noqa: E731
            return self._dpop.request(proof_key, method, url, agent_token, **kwargs)
        return http.request(method, url, token=token(), **kwargs)

    def _call(
        self,
        method: str,
        endpoint: str,
        *,
        token: TokenFactory = _no_token,
        json_body: Any = None,
        query: Mapping[str, Any] | None = None,
        proof_key: Keypair | None = None,
    ) -> Any:
        """Call a discovery endpoint; on an unexpected 404/410 refresh discovery once (§10.5).

        ``token`` is a factory so a retry gets a freshly signed JWT (new ``jti``).
        ``proof_key`` is the agent key for agent-JWT calls (DPoP, when advertised).
        """
        url = self.endpoint(endpoint)
        resp = self._send(
            method, url, token, proof_key, json_body=json_body, query=query, timeout=self.timeout
        )
        if resp.status in (404, 410) and self._looks_like_missing_endpoint(resp):
            self.discover(force=True)
            new_url = self.endpoint(endpoint)
            if new_url != url:
                resp = self._send(
                    method,
                    new_url,
                    token,
                    proof_key,
                    json_body=json_body,
                    query=query,
                    timeout=self.timeout,
                )
        return http.raise_for_error(resp).body

    @staticmethod
    def _looks_like_missing_endpoint(resp: http.Response) -> bool:
        body = resp.body
        code = body.get("error") if isinstance(body, dict) else None
        return code in (None, "not_found")

    def _auth_factory(
        self, connection: AgentConnection | None, auth: AuthMode | None
    ) -> TokenFactory:
        mode = auth or ("agent" if connection is not None else "host")
        if mode == "none":
            return _no_token
        if mode == "host":
            return self._host_token
        if connection is None:
            raise ValueError("auth='agent' needs a connection")
        return lambda: self._agent_token(connection)

    @staticmethod
    def _proof_key(connection: AgentConnection | None, auth: AuthMode | None) -> Keypair | None:
        """The DPoP proof key when the call is made with an agent JWT (see ``client.dpop``)."""
        agent_auth = (auth or ("agent" if connection is not None else "host")) == "agent"
        return connection.agent if agent_auth and connection is not None else None

    # -- registration and lifecycle (host JWT) ------------------------------------------------

    def register(
        self,
        name: str,
        *,
        capabilities: Sequence[CapabilityRequest] | None = None,
        mode: str = "delegated",
        reason: str | None = None,
        preferred_method: str | None = None,
        login_hint: str | None = None,
        binding_message: str | None = None,
        host_name: str | None = None,
    ) -> AgentConnection:
        """Register a new agent under this client's host (§5.3, §6.4).

        A fresh agent keypair is generated for every call: retrying with the same key would hit
        ``409 agent_exists`` once the first attempt left ``pending`` (§5.3 idempotency). The
        host name defaults to this machine's hostname, as §5.3 suggests clients auto-detect it.
        """
        algorithms = self.discover().get("algorithms")
        if isinstance(algorithms, list) and "Ed25519" not in algorithms:
            raise ClientError("unsupported_algorithm", "server does not accept Ed25519 keys")
        agent = Keypair.generate()
        body: dict[str, Any] = {"name": name, "mode": mode}
        if capabilities is not None:
            body["capabilities"] = [c if isinstance(c, str) else dict(c) for c in capabilities]
        optional = {
            "reason": reason,
            "preferred_method": preferred_method,
            "login_hint": login_hint,
            "binding_message": binding_message,
            "host_name": host_name if host_name is not None else socket.gethostname(),
        }
        body.update({k: v for k, v in optional.items() if v})
        resp = _as_dict(
            self._call("POST", "register", token=lambda: self._host_token(agent), json_body=body),
            "register",
        )
        agent_id = resp.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id:
            raise ClientError("invalid_response", "register response has no agent_id")
        connection = AgentConnection(
            agent_id=agent_id,
            host_id=None,
            agent=agent,
            status="pending",
            raw=resp,
            issuer=self.issuer,
        )
        connection.apply_status(resp)
        return connection

    def status(self, agent: str | AgentConnection) -> dict[str, Any]:
        """``GET /agent/status`` with a host JWT (§5.5); refreshes ``agent`` if a connection."""
        body = _as_dict(
            self._call(
                "GET", "status", token=self._host_token, query={"agent_id": _agent_id(agent)}
            ),
            "status",
        )
        if isinstance(agent, AgentConnection):
            agent.apply_status(body)
        return body

    def wait_for_approval(
        self,
        agent: str | AgentConnection,
        *,
        timeout: float = 300,
        interval: float | None = None,
        capabilities: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Poll status until the agent (and, if named, those grants) is no longer ``pending``.

        The wait between polls is the largest of ``interval``, the approval object's
        ``interval`` (a server minimum, §7) and 5 s by default; ``rate_limited``/``slow_down``
        lengthen it. Transient failures (network, 5xx) keep polling. The final status body is
        returned whatever it says (active, rejected, revoked...); ``approval_timeout`` is raised
        when ``timeout`` elapses first.
        """
        delay = float(interval) if interval is not None else DEFAULT_APPROVAL_INTERVAL
        if isinstance(agent, AgentConnection) and agent.approval:
            delay = max(delay, float(agent.approval.get("interval") or 0))
        wanted = None if capabilities is None else set(capabilities)
        deadline = self._clock() + timeout
        settled = self._wait_live(agent, wanted, deadline)
        if settled is not None:
            return settled
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ClientError("approval_timeout", f"still pending after {timeout} s")
            self._sleep(min(delay, remaining))
            try:
                body = self.status(agent)
            except ProtocolError as exc:
                if exc.code in ("rate_limited", "slow_down"):
                    delay = max(delay + 5, http.retry_after(exc.headers) or 0)
                    continue
                if exc.status == 0 or exc.status >= 500:
                    continue
                raise
            approval = body.get("approval")
            if isinstance(approval, Mapping) and isinstance(approval.get("interval"), int | float):
                delay = max(delay, float(approval["interval"]))
            if _settled(body, wanted):
                return body

    def _wait_live(
        self, agent: str | AgentConnection, wanted: set[str] | None, deadline: float
    ) -> dict[str, Any] | None:
        """The settled status from the approval's event stream (spec §10.10.2), if the server
        offered one and it delivered; ``None`` means poll."""
        url = live.notification_url(agent.approval) if isinstance(agent, AgentConnection) else None
        if url is None:
            return None
        found = live.wait_for_event(
            url,
            self._host_token(),
            issuer=self.issuer,
            allow_insecure_http=self.allow_insecure_http,
            deadline=deadline,
            clock=self._clock,
        )
        if found is None or found[1].get("agent_id") != _agent_id(agent):
            return None
        assert isinstance(agent, AgentConnection)
        agent.apply_status(found[1])
        return found[1] if _settled(found[1], wanted) else None

    def _host_post(
        self, endpoint: str, body: dict[str, Any], agent: str | AgentConnection | None = None
    ) -> dict[str, Any]:
        result = _as_dict(
            self._call("POST", endpoint, token=self._host_token, json_body=body), endpoint
        )
        if isinstance(agent, AgentConnection):
            agent.apply_status(result)
        return result

    def revoke(self, agent: str | AgentConnection) -> dict[str, Any]:
        """Permanently revoke an agent of this host (§5.7)."""
        return self._host_post("revoke", {"agent_id": _agent_id(agent)}, agent)

    def revoke_host(self) -> dict[str, Any]:
        """Revoke this host and, by cascade, all its agents (§5.10)."""
        return self._host_post("revoke_host", {})

    def reactivate(self, agent: str | AgentConnection) -> dict[str, Any]:
        """Reactivate an expired agent (§5.6); may return ``pending`` with an approval."""
        return self._host_post("reactivate", {"agent_id": _agent_id(agent)}, agent)

    def rotate_agent_key(self, agent: str | AgentConnection, new: Keypair) -> dict[str, Any]:
        """Replace an agent's key (§5.8); a connection passed in switches to ``new`` on success."""
        body = {"agent_id": _agent_id(agent), "public_key": new.wire_jwk}
        result = _as_dict(
            self._call("POST", "rotate_key", token=self._host_token, json_body=body), "rotate_key"
        )
        if isinstance(agent, AgentConnection):
            agent.agent = new
        return result

    def rotate_host_key(self, new: Keypair) -> dict[str, Any]:
        """Replace the host key, signing with the current one (§5.9); then use ``new``."""
        body = {"public_key": new.wire_jwk}
        result = _as_dict(
            self._call("POST", "rotate_host_key", token=self._host_token, json_body=body),
            "rotate_host_key",
        )
        self.host = new
        return result

    # -- capabilities (agent JWT, host JWT or anonymous) --------------------------------------

    def list_capabilities(
        self,
        connection: AgentConnection | None = None,
        *,
        query: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
        auth: AuthMode | None = None,
    ) -> dict[str, Any]:
        """One page of ``GET /capability/list`` (§5.2).

        ``auth`` defaults to the agent JWT when a connection is given (adds ``grant_status``),
        else the host JWT.
        """
        params = {"query": query, "cursor": cursor, "limit": limit}
        return _as_dict(
            self._call(
                "GET",
                "capabilities",
                token=self._auth_factory(connection, auth),
                query=params,
                proof_key=self._proof_key(connection, auth),
            ),
            "capabilities",
        )

    def all_capabilities(
        self,
        connection: AgentConnection | None = None,
        *,
        query: str | None = None,
        auth: AuthMode | None = None,
        max_pages: int = 100,
    ) -> list[dict[str, Any]]:
        """Every capability, following ``next_cursor`` across pages (§6)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(max_pages):
            page = self.list_capabilities(connection, query=query, cursor=cursor, auth=auth)
            items.extend(c for c in page.get("capabilities") or [] if isinstance(c, dict))
            next_cursor = page.get("next_cursor")
            if not isinstance(next_cursor, str) or not next_cursor or next_cursor in seen:
                break
            if page.get("has_more") is False:
                break
            seen.add(next_cursor)
            cursor = next_cursor
        return items

    def describe_capability(
        self,
        name: str,
        connection: AgentConnection | None = None,
        *,
        auth: AuthMode | None = None,
    ) -> dict[str, Any]:
        """``GET /capability/describe?name=`` (§5.2.1)."""
        return _as_dict(
            self._call(
                "GET",
                "describe_capability",
                token=self._auth_factory(connection, auth),
                query={"name": name},
                proof_key=self._proof_key(connection, auth),
            ),
            "describe_capability",
        )

    def request_capability(
        self,
        connection: AgentConnection,
        capabilities: Sequence[CapabilityRequest],
        *,
        reason: str | None = None,
        preferred_method: str | None = None,
        login_hint: str | None = None,
        binding_message: str | None = None,
    ) -> dict[str, Any]:
        """Ask for more capabilities with an agent JWT (§5.4); grants are merged locally."""
        body: dict[str, Any] = {
            "capabilities": [c if isinstance(c, str) else dict(c) for c in capabilities]
        }
        optional = {
            "reason": reason,
            "preferred_method": preferred_method,
            "login_hint": login_hint,
            "binding_message": binding_message,
        }
        body.update({k: v for k, v in optional.items() if v})
        result = _as_dict(
            self._call(
                "POST",
                "request_capability",
                token=lambda: self._agent_token(connection),
                json_body=body,
                proof_key=connection.agent,
            ),
            "request_capability",
        )
        grants = result.get("agent_capability_grants")
        if isinstance(grants, list):
            connection.merge_grants(grants)
        approval = result.get("approval")
        connection.approval = dict(approval) if isinstance(approval, Mapping) else None
        return result

    # -- execution ----------------------------------------------------------------------------

    def execute(
        self,
        connection: AgentConnection,
        capability: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        location: str | None = None,
    ) -> Any:
        """Execute a capability (§5.11) and return its result body.

        The JWT's ``aud`` is the resolved location (capability ``location`` →
        ``default_location`` → ``issuer + endpoints.execute``) and it is scoped to
        ``[capability]``. Sync results return ``{"data": ...}``; an async ``202`` is polled to
        ``{"status": "completed", "result": ...}`` (``failed`` raises); a ``text/event-stream``
        response returns the list of ``(event, data)`` tuples up to ``done``.
        """
        target = require_transport(
            location or self._capability_location(connection, capability),
            allow_insecure_http=self.allow_insecure_http,
        )
        body: dict[str, Any] = {"capability": capability}
        if arguments is not None:
            body["arguments"] = dict(arguments)
        resp = http.raise_for_error(
            self._send(
                "POST",
                target,
                lambda: self._agent_token(connection, audience=target, capabilities=[capability]),
                connection.agent,
                json_body=body,
                timeout=self.timeout,
            )
        )
        if resp.content_type == "text/event-stream":
            return resp.body
        result = resp.body
        if isinstance(result, dict) and result.get("status") == "pending":
            return self._poll_execution(connection, capability, resp)
        if resp.status == 202:
            raise ClientError("invalid_response", "202 response without a pending status_url")
        if isinstance(result, dict) and result.get("status") == "failed":
            _raise_failed(result)
        return result

    def _capability_location(self, connection: AgentConnection, capability: str) -> str:
        """Where to execute (spec §2.15): the capability's ``location`` if it has one (from the
        active grant, else ``describe``), otherwise the server's ``default_location``."""
        for grant in connection.grants or []:
            if grant.get("capability") == capability and grant.get("location"):
                return str(grant["location"])
        described = self._described.get(capability)
        if described is None:
            try:
                described = self.describe_capability(capability, connection)
            except ProtocolError:
                described = {}
            self._described[capability] = described
        return str(described.get("location") or self.default_location)

    def _poll_execution(
        self, connection: AgentConnection, capability: str, resp: http.Response
    ) -> Any:
        """Poll an async execution's ``status_url`` until it completes or fails (§5.11, §2.15).

        Each poll carries a freshly signed agent JWT (``aud`` = issuer), the wait honours
        ``Retry-After`` and otherwise backs off 1, 2, 4... s up to ``max_poll_interval``. The
        ``status_url`` must be on the issuer's origin (§8.12) or it is never contacted.
        """
        deadline = self._clock() + self.poll_timeout
        backoff = 1.0
        body: dict[str, Any] = resp.body
        status_url: str | None = None
        while True:
            if body.get("status") != "pending":
                if body.get("status") == "failed":
                    _raise_failed(body)
                return body
            candidate = body.get("status_url") or status_url
            if not isinstance(candidate, str):
                raise ClientError("invalid_response", "pending execution without a status_url")
            status_url = require_transport(
                require_same_origin(candidate, self.issuer),
                allow_insecure_http=self.allow_insecure_http,
            )
            wait = http.retry_after(resp.headers)
            if wait is None:
                wait = backoff
                backoff = min(backoff * 2, self.max_poll_interval)
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ClientError("execution_timeout", f"still pending after {self.poll_timeout} s")
            self._sleep(min(wait, remaining))
            resp = self._send(
                "GET",
                status_url,
                lambda: self._agent_token(connection, capabilities=[capability]),
                connection.agent,
                timeout=self.timeout,
            )
            if resp.status == 429 or resp.status >= 500:
                continue  # transient: keep the last pending body, honour Retry-After next round
            body = _as_dict(http.raise_for_error(resp).body, "status_url")

    # -- introspection ------------------------------------------------------------------------

    def introspect(self, token: str, *, secret: str | None = None) -> dict[str, Any]:
        """``POST /agent/introspect`` (§5.12), as a resource server would call it; ``secret`` is
        the resource server's bearer secret (``AGENTAUTH_INTROSPECTION_TOKENS`` on the server).
        """
        auth: TokenFactory = (lambda: secret) if secret else _no_token
        reply = self._call("POST", "introspect", token=auth, json_body={"token": token})
        return _as_dict(reply, "introspect")
