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

from .client import AgentAuthClient
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
    parser = argparse.ArgumentParser(prog="agentauth-agent", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("discover", parents=[common], help="print the discovery document")
    p.add_argument("url")

    p = sub.add_parser("register", parents=[common], help="register a new agent")
    p.add_argument("url")
    p.add_argument("--name", required=True)
    p.add_argument("--capability", action="append", dest="capabilities", metavar="C")
    p.add_argument("--mode", default="delegated", choices=["delegated", "autonomous"])
    p.add_argument("--reason")
    p.add_argument("--wait", action="store_true", help="poll until approval completes")

    p = sub.add_parser("status", parents=[common], help="show an agent's status")
    p.add_argument("url")
    p.add_argument("agent_id")

    p = sub.add_parser("execute", parents=[common], help="execute a capability")
    p.add_argument("url")
    p.add_argument("agent_id")
    p.add_argument("capability")
    p.add_argument("--args", default=None, help="arguments as a JSON object")

    p = sub.add_parser("revoke", parents=[common], help="revoke an agent and forget its key")
    p.add_argument("url")
    p.add_argument("agent_id")
    return parser


def _run(args: argparse.Namespace, state: dict[str, Any], state_path: Path) -> Any:
    client = AgentAuthClient(
        args.url, _host(state), allow_insecure_http=getattr(args, "insecure_http", False)
    )
    if args.command == "discover":
        return client.discover()
    if args.command == "register":
        connection = client.register(
            args.name, capabilities=args.capabilities, mode=args.mode, reason=args.reason
        )
        _remember(state, args.url, connection)
        save_state(state_path, state)
        if not (args.wait and connection.status == "pending"):
            return connection.raw
        print(json.dumps({"approval": connection.approval}, indent=2), file=sys.stderr)
        final = client.wait_for_approval(connection)
        _remember(state, args.url, connection)
        save_state(state_path, state)
        return final
    connection = _connection(state, args.agent_id)
    if args.command == "status":
        result = client.status(connection)
        _remember(state, args.url, connection)
        save_state(state_path, state)
        return result
    if args.command == "execute":
        arguments = json.loads(args.args) if args.args else None
        if arguments is not None and not isinstance(arguments, dict):
            raise ProtocolError("invalid_request", "--args must be a JSON object")
        return client.execute(connection, args.capability, arguments)
    result = client.revoke(connection)  # "revoke"
    del state["agents"][connection.agent_id]
    save_state(state_path, state)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    state_path = Path(getattr(args, "state", DEFAULT_STATE)).expanduser()
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
