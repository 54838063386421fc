"""``agentauth-agent mcp``: the client's tools (spec §6) served to an agent over MCP stdio.

The agent calls tools; this process holds the keys (§4.1: the agent never sees a private key)
in a :class:`~agentauth.client.keystore.KeyStore`. It talks only to the providers it was started
with (``--provider URL``): §6.2.3 asks clients to check an allowlist before fetching URLs an
agent names, and an agent steered by a prompt injection could otherwise send the host key's
signatures anywhere.

Needs the ``mcp`` extra: ``pip install 'django-agentauth[mcp]'``.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from agentauth.errors import ProtocolError

from .client import AgentAuthClient
from .connection import AgentConnection
from .identity import Keypair
from .keystore import KeyStore
from .tokens import DEFAULT_LIFETIME


class AgentTools:
    """The §6 tools over one key store and a fixed set of providers."""

    def __init__(
        self, store: KeyStore, providers: Sequence[str], *, allow_insecure_http: bool = False
    ) -> None:
        if not providers:
            raise ValueError("at least one --provider URL is required")
        self.store = store
        self.providers = [p.rstrip("/") for p in providers]
        self.allow_insecure_http = allow_insecure_http
        self._clients: dict[str, AgentAuthClient] = {}
        # Tools run in worker threads; the key file and the client cache are shared state.
        self._lock = threading.RLock()

    # -- plumbing -----------------------------------------------------------------------------

    def _url(self, provider: str) -> str:
        """A configured provider, by URL or by the ``provider_name`` its discovery gives."""
        wanted = provider.rstrip("/")
        if wanted in self.providers:
            return wanted
        for url in self.providers:
            if self._client(url).discover().get("provider_name") == provider:
                return url
        raise ToolError(f"unknown provider {provider!r}; see list_providers")

    def _client(self, url: str) -> AgentAuthClient:
        with self._lock:
            if url not in self._clients:
                state = self.store.load()
                if not state.get("host"):
                    state["host"] = Keypair.generate().to_private_jwk()
                    self.store.save(state)
                self._clients[url] = AgentAuthClient(
                    url,
                    Keypair.from_private_jwk(state["host"]),
                    allow_insecure_http=self.allow_insecure_http,
                )
            return self._clients[url]

    def _agent(self, agent_id: str) -> tuple[AgentAuthClient, AgentConnection]:
        stored = self.store.load()["agents"].get(agent_id)
        if stored is None:
            raise ToolError(f"agent {agent_id!r} is not connected here; see connect_agent")
        url = stored.get("base_url")
        if url not in self.providers:
            raise ToolError(f"agent {agent_id!r} belongs to a provider this server does not serve")
        return self._client(url), AgentConnection.from_dict(stored)

    def _remember(self, url: str, connection: AgentConnection) -> None:
        state = self.store.load()
        state["agents"][connection.agent_id] = {**connection.to_dict(), "base_url": url}
        self.store.save(state)

    def _forget(self, agent_id: str) -> None:
        state = self.store.load()
        state["agents"].pop(agent_id, None)
        self.store.save(state)

    # -- the tools (spec §6.2 to §6.10) -------------------------------------------------------

    def list_providers(self) -> dict[str, Any]:
        found = []
        for url in self.providers:
            try:
                doc = self._client(url).discover()
            except ProtocolError:
                doc = {}
            found.append(
                {"name": doc.get("provider_name") or url, "description": doc.get("description")}
                | {"url": url}
            )
        return {"providers": found}

    def discover_provider(self, url: str) -> dict[str, Any]:
        return self._client(self._url(url)).discover(force=True)

    def list_capabilities(
        self, provider: str, query: str | None = None, agent_id: str | None = None
    ) -> dict[str, Any]:
        if agent_id:
            client, connection = self._agent(agent_id)
            return {"capabilities": client.all_capabilities(connection, query=query)}
        client = self._client(self._url(provider))
        return {"capabilities": client.all_capabilities(query=query, auth="none")}

    def describe_capability(
        self, provider: str, name: str, agent_id: str | None = None
    ) -> dict[str, Any]:
        if agent_id:
            client, connection = self._agent(agent_id)
            return client.describe_capability(name, connection)
        return self._client(self._url(provider)).describe_capability(name, auth="none")

    def connect_agent(
        self,
        provider: str,
        name: str,
        capabilities: list[str | dict[str, Any]] | None = None,
        mode: str = "delegated",
        reason: str | None = None,
        preferred_method: str | None = None,
        login_hint: str | None = None,
        binding_message: str | None = None,
        wait_seconds: float = 0,
    ) -> dict[str, Any]:
        url = self._url(provider)
        client = self._client(url)
        connection = client.register(
            name,
            capabilities=capabilities,
            mode=mode,
            reason=reason,
            preferred_method=preferred_method,
            login_hint=login_hint,
            binding_message=binding_message,
        )
        with self._lock:
            self._remember(url, connection)
        if connection.status != "pending" or wait_seconds <= 0:
            return connection.raw
        final = client.wait_for_approval(connection, timeout=wait_seconds)
        with self._lock:
            self._remember(url, connection)
        return final

    def agent_status(self, agent_id: str) -> dict[str, Any]:
        client, connection = self._agent(agent_id)
        body = client.status(connection)
        with self._lock:
            self._remember(client.base_url, connection)
        return body

    def request_capability(
        self,
        agent_id: str,
        capabilities: list[str | dict[str, Any]],
        reason: str | None = None,
        preferred_method: str | None = None,
        login_hint: str | None = None,
        binding_message: str | None = None,
        wait_seconds: float = 0,
    ) -> dict[str, Any]:
        client, connection = self._agent(agent_id)
        body = client.request_capability(
            connection,
            capabilities,
            reason=reason,
            preferred_method=preferred_method,
            login_hint=login_hint,
            binding_message=binding_message,
        )
        names = [c if isinstance(c, str) else str(c.get("name")) for c in capabilities]
        if wait_seconds > 0 and connection.pending_capabilities(names):
            body = client.wait_for_approval(connection, timeout=wait_seconds, capabilities=names)
        with self._lock:
            self._remember(client.base_url, connection)
        return body

    def execute_capability(
        self, agent_id: str, capability: str, arguments: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        client, connection = self._agent(agent_id)
        result = client.execute(connection, capability, arguments)
        return result if isinstance(result, dict) else {"result": result}

    def sign_jwt(
        self, agent_id: str, aud: str | None = None, capabilities: list[str] | None = None
    ) -> dict[str, Any]:
        client, connection = self._agent(agent_id)
        token = client.sign_agent_jwt(connection, audience=aud, capabilities=capabilities)
        return {"token": token, "expires_in": DEFAULT_LIFETIME}

    def reactivate_agent(self, agent_id: str) -> dict[str, Any]:
        client, connection = self._agent(agent_id)
        body = client.reactivate(connection)
        with self._lock:
            self._remember(client.base_url, connection)
        return body

    def disconnect_agent(self, agent_id: str) -> dict[str, Any]:
        client, connection = self._agent(agent_id)
        body = client.revoke(connection)
        with self._lock:
            self._forget(agent_id)
        return body


TOOL_DESCRIPTIONS = {
    "list_providers": "List the services this client can connect agents to (spec §6.2.1).",
    "discover_provider": "Fetch a provider's discovery document (spec §6.2.3).",
    "list_capabilities": "List a provider's capabilities; with agent_id, with grant status "
    "(spec §6.3).",
    "describe_capability": "One capability in full, with its input schema (spec §6.3.1).",
    "connect_agent": "Register a new agent with a provider (spec §6.4). A pending result carries "
    "an approval object to show the user; wait_seconds > 0 waits for the decision.",
    "agent_status": "An agent's status and grants (spec §6.9).",
    "request_capability": "Ask for more capabilities for an agent (spec §6.6).",
    "execute_capability": "Run a granted capability (spec §6.10).",
    "sign_jwt": "A short-lived agent JWT for a resource server (spec §6.5).",
    "reactivate_agent": "Reactivate an expired agent (spec §6.8).",
    "disconnect_agent": "Revoke an agent for good and forget its key (spec §6.7).",
}


def build_server(tools: AgentTools) -> MCPServer:
    server: MCPServer = MCPServer(
        "agentauth-agent",
        instructions="Agent Auth Protocol client: connect agents to services and run "
        "capabilities. Keys stay in this process.",
    )
    for name, description in TOOL_DESCRIPTIONS.items():
        server.add_tool(_guarded(getattr(tools, name)), name=name, description=description)
    return server


def _guarded(method: Any) -> Any:
    """A protocol failure becomes a tool error carrying the spec's error body (§5.13)."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ProtocolError as exc:
            raise ToolError(json.dumps({**exc.body(), "status": exc.status})) from None

    return call


def serve(state: Path, providers: Sequence[str], *, allow_insecure_http: bool = False) -> None:
    tools = AgentTools(KeyStore.from_env(state), providers, allow_insecure_http=allow_insecure_http)
    build_server(tools).run("stdio")
