"""``bench.echo``: the reference server's ``ticket.read``, for a like-for-like comparison.

The reference answers ``ticket.read`` by echoing the call (``onExecute`` in its ``server.mjs``
returns the capability, arguments, agent and mode); the example project's ``ticket.read`` reads
the ticket through the ORM, one more query and about a quarter of its CPU per call. Loaded only
by ``benchmarks.settings`` (``INSTALLED_APPS``), so the benchmark can measure both: the protocol
work alone against the reference (``bench.echo``, the default of ``benchmarks.compare``) and a
handler that reads the database (``ours:2@ticket.read``).
"""

from __future__ import annotations

from typing import Any

from agentauth.capabilities import capability


@capability(
    "bench.echo",
    description="Echo the call, as the reference server's ticket.read does (benchmark only)",
    approval_strength="none",
    input={
        "type": "object",
        "required": ["ticket_id"],
        "properties": {"ticket_id": {"type": "string", "description": "Ticket identifier"}},
    },
)
def echo(ctx: Any, **arguments: Any) -> dict[str, Any]:
    return {
        "capability": ctx.capability.name,
        "arguments": arguments,
        "agent_id": ctx.agent.pk,
        "mode": "sync",
    }
