"""``agentauth-agent mcp``: the §6 tools over MCP stdio, driven by the ``mcp`` client library
against ``live_server``; and the key file it keeps (spec §4.1, §10.7)."""

from __future__ import annotations

import http.server
import json
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import anyio
import pytest
from django.core.management import call_command

from agentauth.client.keystore import PASSPHRASE_ENV, SEALED_FORMAT, KeyStore, KeyStoreError
from agentauth.models import Agent, AgentStatus

mcp = pytest.importorskip("mcp")

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {
    "list_providers",
    "discover_provider",
    "list_capabilities",
    "describe_capability",
    "connect_agent",
    "agent_status",
    "request_capability",
    "execute_capability",
    "sign_jwt",
    "reactivate_agent",
    "disconnect_agent",
}


def server_params(state: Path, *providers: str, passphrase: str | None = None) -> Any:
    """Spawn the installed ``agentauth-agent`` script (this checkout's code first on the path)."""
    script = Path(sys.executable).with_name("agentauth-agent")
    command, args = (
        (str(script), []) if script.exists() else (sys.executable, ["-m", "agentauth.client.cli"])
    )
    env = {"PYTHONPATH": str(ROOT)}
    if passphrase is not None:
        env[PASSPHRASE_ENV] = passphrase
    args += ["mcp", "--state", str(state)]
    for provider in providers:
        args += ["--provider", provider]
    return mcp.StdioServerParameters(command=command, args=args, env=env, cwd=str(ROOT))


async def session_calls(params: Any, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Open one MCP session, list the tools, make ``calls`` in order; return their results."""
    results: list[Any] = []
    with tempfile.TemporaryFile("w+") as errlog:
        try:
            await _session(params, calls, errlog, results)
        except BaseException as exc:
            errlog.seek(0)
            raise AssertionError(f"MCP session failed; server stderr:\n{errlog.read()}") from exc
    return results


async def _session(
    params: Any, calls: list[tuple[str, dict[str, Any]]], errlog: Any, results: list[Any]
) -> None:
    async with (
        mcp.stdio_client(params, errlog=errlog) as (read, write),
        mcp.ClientSession(read, write) as session,
    ):
        await session.initialize()
        listed = await session.list_tools()
        results.append({tool.name for tool in listed.tools})
        for name, arguments in calls:
            result = await session.call_tool(name, arguments)
            text = result.content[0].text if result.content else ""
            if result.is_error:
                results.append(("error", text))
            else:
                results.append(result.structured_content or json.loads(text))


def run(params: Any, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    return anyio.run(session_calls, params, calls)


@pytest.fixture
def issuer(live_server: Any, settings: Any) -> str:
    value = live_server.url + "/api/auth"
    settings.AGENTAUTH_ISSUER = value
    return value


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, list[str]]]:
    """A server that is not on the allowlist, recording what reaches it."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.mark.django_db(transaction=True)
def test_discover_connect_execute_over_mcp(
    issuer: str, user: Any, tmp_path: Path, elsewhere: tuple[str, list[str]]
) -> None:
    state = tmp_path / "keys.json"
    params = server_params(state, issuer)
    other, seen = elsewhere
    tools, providers, doc, refused, connected = run(
        params,
        [
            ("list_providers", {}),
            ("discover_provider", {"url": issuer}),
            ("discover_provider", {"url": other}),
            ("connect_agent", {"provider": issuer, "name": "MCP helper",
                               "capabilities": ["check_balance"]}),
        ],
    )  # fmt: skip
    assert tools == TOOLS
    assert providers["providers"][0]["url"] == issuer
    assert doc["issuer"] == issuer and doc["version"] == "1.0-draft"
    # §6.2.3: a URL the client was not configured with is refused, and never fetched.
    assert refused[0] == "error" and "unknown provider" in refused[1]
    assert seen == []
    assert connected["status"] == "pending" and connected["approval"]["user_code"]
    agent_id = connected["agent_id"]
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert agent_id in json.loads(state.read_text())["agents"]

    call_command("agentauth_approve", agent_id, "--user", "alice", stdout=StringIO())

    # A new process: the connection and the host key come back from the key file.
    _, status, result, unknown, gone = run(
        params,
        [
            ("agent_status", {"agent_id": agent_id}),
            ("execute_capability", {"agent_id": agent_id, "capability": "check_balance",
                                    "arguments": {"account_id": "acc_1"}}),
            ("execute_capability", {"agent_id": agent_id, "capability": "transfer",
                                    "arguments": {}}),
            ("disconnect_agent", {"agent_id": agent_id}),
        ],
    )  # fmt: skip
    assert status["status"] == "active"
    assert result == {"data": {"account_id": "acc_1", "balance": 1234.5, "currency": "USD"}}
    # A protocol refusal reaches the agent as the spec's error body.
    assert unknown[0] == "error" and '"error": "capability_not_granted"' in unknown[1]
    assert gone == {"agent_id": agent_id, "status": "revoked"}
    assert Agent.objects.get(pk=agent_id).status == AgentStatus.REVOKED
    assert agent_id not in json.loads(state.read_text())["agents"]


@pytest.mark.django_db(transaction=True)
def test_a_sealed_key_file_over_mcp(issuer: str, tmp_path: Path) -> None:
    state = tmp_path / "sealed.json"
    (connected,) = run(
        server_params(state, issuer, passphrase="correct horse"),
        [("connect_agent", {"provider": issuer, "name": "sealed"})],
    )[1:]
    assert connected["agent_id"].startswith("agt_")
    text = state.read_text()
    assert json.loads(text)["format"] == SEALED_FORMAT
    assert connected["agent_id"] not in text and '"d"' not in text  # no key material in clear
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert connected["agent_id"] in KeyStore(state, "correct horse").load()["agents"]
    # Without the passphrase it does not open (test_sealed_key_file_needs_the_right_passphrase).


def test_key_file_is_0600_even_over_a_looser_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{}")
    path.chmod(0o644)
    KeyStore(path).save({"host": None, "agents": {}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = tmp_path / "sealed.json"
    KeyStore(sealed, "pw").save({"host": {"d": "secret"}, "agents": {}})
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600


def test_sealed_key_file_needs_the_right_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "sealed.json"
    KeyStore(path, "right").save({"host": {"d": "secret"}, "agents": {"a": {}}})
    assert "secret" not in path.read_text()
    assert KeyStore(path, "right").load()["host"] == {"d": "secret"}
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        KeyStore(path, "wrong").load()
    with pytest.raises(KeyStoreError, match="is sealed"):
        KeyStore(path).load()
    # A tampered file does not open either (AES-GCM authenticates it).
    data = json.loads(path.read_text())
    data["ciphertext"] = data["ciphertext"][:-4] + ("AAAA" if data["ciphertext"][-4:] != "AAAA"
                                                    else "BBBB")  # fmt: skip
    path.write_text(json.dumps(data))
    with pytest.raises(KeyStoreError):
        KeyStore(path, "right").load()


def test_a_plain_key_file_is_not_used_with_a_passphrase(tmp_path: Path) -> None:
    # Someone who set a passphrase expects sealed keys; silently using clear ones would hide that.
    path = tmp_path / "plain.json"
    KeyStore(path).save({"host": None, "agents": {}})
    with pytest.raises(KeyStoreError, match="not sealed"):
        KeyStore(path, "pw").load()
