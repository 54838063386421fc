"""``agentauth-agent``: a small command line over :class:`AgentAuthClient`.

Useful to poke a server by hand (register, approve in the browser, execute). Keys live in a JSON
state file written with owner-only permissions, because it holds the host's and the agents'
private keys (§10.7). Results are printed as JSON; protocol errors go to stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentauth.errors import ProtocolError

from .client import AGENT_ISS_CHOICES, AgentAuthClient
from .connection import AgentConnection
from .identity import Keypair

DEFAULT_STATE = "~/.agentauth-agent.json"


def load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"host": None, "agents": {}}
    state = json.loads(path.read_text())
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not an agentauth-agent state file")
    state.setdefault("agents", {})
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write atomically with mode 0600, even if an older copy had looser permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _host(state: dict[str, Any]) -> Keypair:
    if not state.get("host"):
        state["host"] = Keypair.generate().to_private_jwk()
    return Keypair.from_private_jwk(state["host"])


def _connection(state: dict[str, Any], agent_id: str) -> AgentConnection:
    stored = state["agents"].get(agent_id)
    if stored is None:
        raise ProtocolError("agent_not_found", f"agent {agent_id!r} is not in the state file")
    return AgentConnection.from_dict(stored)


def _remember(state: dict[str, Any], url: str, connection: AgentConnection) -> None:
    state["agents"][connection.agent_id] = {**connection.to_dict(), "base_url": url}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state", default=argparse.SUPPRESS, help=f"default {DEFAULT_STATE}")
    common.add_argument(
        "--insecure-http",
        action="store_true",
        default=argparse.SUPPRESS,
        help="allow plain http:// to non-loopback hosts",
    )
    common.add_argument(
        "--agent-iss",
        choices=AGENT_ISS_CHOICES,
        default=argparse.SUPPRESS,
        help="what agent JWTs carry as iss (default thumbprint; host_id for servers that want it)",
    )
    parser = argparse.ArgumentParser(prog="agentauth-agent", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, *, agent: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help)
        p.add_argument("url")
        if agent:
            p.add_argument("agent_id")
        return p

    command("discover", "print the discovery document", agent=False)

    p = command("register", "register a new agent", agent=False)
    p.add_argument("--name", required=True)
    p.add_argument("--capability", action="append", dest="capabilities", metavar="C")
    p.add_argument("--mode", default="delegated", choices=["delegated", "autonomous"])
    p.add_argument("--reason")
    p.add_argument("--wait", action="store_true", help="poll until approval completes")

    command("status", "show an agent's status")

    p = command("capabilities", "list capabilities (with grant status if --agent)", agent=False)
    p.add_argument("--agent", help="list as this agent (agent JWT)")
    p.add_argument("--query")

    p = command("describe", "describe one capability", agent=False)
    p.add_argument("name")
    p.add_argument("--agent", help="describe as this agent (agent JWT)")

    p = command("execute", "execute a capability")
    p.add_argument("capability")
    p.add_argument("--args", default=None, help="arguments as a JSON object")

    p = command("request", "request more capabilities for an agent")
    p.add_argument("capabilities", nargs="+", metavar="capability")
    p.add_argument("--reason")
    p.add_argument("--wait", action="store_true", help="poll until they are decided")

    command("reactivate", "reactivate an expired agent")
    command("rotate-agent-key", "give an agent a new key (the old one stops working)")
    command("rotate-host-key", "give this host a new key (the old one stops working)", agent=False)
    command("revoke", "revoke an agent and forget its key")
    command("revoke-host", "revoke this host and all its agents at this server", agent=False)

    p = command("introspect", "introspect an agent JWT, as a resource server would", agent=False)
    p.add_argument("token")

    p = sub.add_parser(
        "mcp", parents=[common], help="serve the client's tools over MCP stdio (needs [mcp])"
    )
    p.add_argument(
        "--provider",
        action="append",
        required=True,
        dest="providers",
        metavar="URL",
        help="a service (issuer URL) agents may use; repeat for more",
    )

    p = command("sign", "print a fresh agent JWT (the spec's sign_jwt tool)")
    p.add_argument("--capability", action="append", dest="capabilities", metavar="C")
    p.add_argument("--audience", help="default: the issuer")
    return parser


def _save(state: dict[str, Any], path: Path, url: str, connection: AgentConnection) -> None:
    _remember(state, url, connection)
    save_state(path, state)


def _run(args: argparse.Namespace, state: dict[str, Any], state_path: Path) -> Any:
    client = AgentAuthClient(
        args.url,
        _host(state),
        allow_insecure_http=getattr(args, "insecure_http", False),
        agent_iss=getattr(args, "agent_iss", "thumbprint"),
    )
    url = args.url
    command = args.command
    if command == "discover":
        return client.discover()
    if command == "register":
        connection = client.register(
            args.name, capabilities=args.capabilities, mode=args.mode, reason=args.reason
        )
        _save(state, state_path, url, connection)
        if not (args.wait and connection.status == "pending"):
            return connection.raw
        print(json.dumps({"approval": connection.approval}, indent=2), file=sys.stderr)
        final = client.wait_for_approval(connection)
        _save(state, state_path, url, connection)
        return final
    if command == "capabilities":
        viewer = _connection(state, args.agent) if args.agent else None
        return client.all_capabilities(viewer, query=args.query, auth=None if viewer else "none")
    if command == "describe":
        viewer = _connection(state, args.agent) if args.agent else None
        return client.describe_capability(args.name, viewer, auth=None if viewer else "none")
    if command == "introspect":
        return client.introspect(args.token)
    if command == "rotate-host-key":
        new = Keypair.generate()
        result = client.rotate_host_key(new)
        state["host"] = new.to_private_jwk()
        save_state(state_path, state)
        return result
    if command == "revoke-host":
        result = client.revoke_host()
        state["agents"] = {k: v for k, v in state["agents"].items() if v.get("base_url") != url}
        save_state(state_path, state)
        return result
    return _run_agent(client, args, state, state_path)


def _run_agent(
    client: AgentAuthClient, args: argparse.Namespace, state: dict[str, Any], state_path: Path
) -> Any:
    """Commands about one agent of the state file."""
    connection = _connection(state, args.agent_id)
    command, url = args.command, args.url
    if command == "status":
        result = client.status(connection)
    elif command == "execute":
        arguments = json.loads(args.args) if args.args else None
        if arguments is not None and not isinstance(arguments, dict):
            raise ProtocolError("invalid_request", "--args must be a JSON object")
        return client.execute(connection, args.capability, arguments)
    elif command == "request":
        result = client.request_capability(connection, args.capabilities, reason=args.reason)
        if args.wait and connection.pending_capabilities(args.capabilities):
            print(json.dumps({"approval": connection.approval}, indent=2), file=sys.stderr)
            result = client.wait_for_approval(connection, capabilities=args.capabilities)
    elif command == "reactivate":
        result = client.reactivate(connection)
    elif command == "rotate-agent-key":
        result = client.rotate_agent_key(connection, Keypair.generate())
    elif command == "sign":
        return {
            "token": client.sign_agent_jwt(
                connection, audience=args.audience, capabilities=args.capabilities
            )
        }
    else:  # "revoke"
        result = client.revoke(connection)
        del state["agents"][connection.agent_id]
        save_state(state_path, state)
        return result
    _save(state, state_path, url, connection)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    state_path = Path(getattr(args, "state", DEFAULT_STATE)).expanduser()
    if args.command == "mcp":
        from .mcp_server import serve

        serve(state_path, args.providers, allow_insecure_http=getattr(args, "insecure_http", False))
        return 0
    try:
        state = load_state(state_path)
        result = _run(args, state, state_path)
    except ProtocolError as exc:
        print(json.dumps({**exc.body(), "status": exc.status}, indent=2), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(json.dumps({"error": "client_error", "message": str(exc)}), file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
