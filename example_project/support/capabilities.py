"""The seed article's ``support-api`` capabilities: ``ticket.read`` and ``ticket.close``, plus
``ticket.watch``, a stream.

``ticket.close`` takes the ticket's ``priority`` so that a grant can be scoped with a constraint
such as ``{"priority": {"not_in": ["critical"]}}``. The handler checks that the priority the agent
states is the ticket's real one; otherwise an agent could close a critical ticket by claiming it
is a low one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction

from agentauth.capabilities import Capability, capability, register
from agentauth.execution import release_connections

from .models import Ticket

PRIORITIES = [choice.value for choice in Ticket.Priority]

#: One spelling per ticket: constraints compare ids as raw strings (spec §2.13), so "04", "+4"
#: or "٤" must not be another way to write the ticket a ``not_in: ["4"]`` grant excludes.
#: Up to 18 digits fits a 64-bit primary key.
TICKET_ID_PATTERN = re.compile(r"[1-9][0-9]{0,17}")
TICKET_ID_SCHEMA = {
    "type": "string",
    "pattern": f"^{TICKET_ID_PATTERN.pattern}$",
    "description": 'The ticket\'s id in canonical form, e.g. "1" (no leading zeros)',
}


def get_ticket(ticket_id: str, *, for_update: bool = False) -> Ticket:
    # The schema already holds callers to the canonical form; this holds every other caller.
    if not (isinstance(ticket_id, str) and TICKET_ID_PATTERN.fullmatch(ticket_id)):
        raise LookupError(f"Ticket {ticket_id!r} not found")
    queryset = Ticket.objects.select_for_update() if for_update else Ticket.objects.all()
    try:
        return queryset.get(pk=int(ticket_id))
    except Ticket.DoesNotExist:
        raise LookupError(f"Ticket {ticket_id!r} not found") from None


@capability(
    "ticket.read",
    description="Read support tickets",
    approval_strength="none",
    input={
        "type": "object",
        "properties": {"ticket_id": TICKET_ID_SCHEMA},
        "required": ["ticket_id"],
        "additionalProperties": False,
    },
)
def read_ticket(ctx: Any, *, ticket_id: str) -> dict[str, Any]:
    return get_ticket(ticket_id).to_dict()


@capability(
    "ticket.close",
    description="Close a support ticket",
    # Changes data: spec §8.11 needs proof of presence (a passkey), not just a password.
    approval_strength="webauthn",
    input={
        "type": "object",
        "properties": {
            "ticket_id": TICKET_ID_SCHEMA,
            "priority": {
                "type": "string",
                "enum": PRIORITIES,
                "description": "The ticket's priority; must match the ticket",
            },
        },
        "required": ["ticket_id"],
        "additionalProperties": False,
    },
)
def close_ticket(ctx: Any, *, ticket_id: str, priority: str | None = None) -> dict[str, Any]:
    with transaction.atomic():
        ticket = get_ticket(ticket_id, for_update=True)
        if priority is not None and priority != ticket.priority:
            raise ValueError(
                f"Ticket {ticket_id!r} has priority {ticket.priority!r}, not {priority!r}"
            )
        ticket.close()
    return ticket.to_dict()


# Served by a project view (``support.views.escalate``), not by a handler: agents send the
# execute contract to this capability's location, with ``aud`` = that URL (spec §2.12, §2.15).
register(
    Capability(
        name="ticket.escalate",
        description="Escalate a support ticket to critical priority",
        approval_strength="webauthn",  # changes data (spec §8.11)
        location="support:escalate",
        input={
            "type": "object",
            "properties": {"ticket_id": TICKET_ID_SCHEMA},
            "required": ["ticket_id"],
            "additionalProperties": False,
        },
    )
)


@capability(
    "ticket.watch",
    description="Stream a support ticket's status, one event per interval",
    approval_strength="none",
    mode="stream",
    input={
        "type": "object",
        "properties": {
            "ticket_id": TICKET_ID_SCHEMA,
            "count": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
            "interval": {"type": "number", "minimum": 0, "maximum": 5, "default": 1},
        },
        "required": ["ticket_id"],
        "additionalProperties": False,
    },
)
async def watch_ticket(
    ctx: Any, *, ticket_id: str, count: int = 5, interval: float = 1
) -> AsyncIterator[dict[str, Any]]:
    # An async generator: under ASGI a watcher waiting for its next event holds no worker
    # (docs/deployment.md). Database access still goes through Django's sync ORM.
    def read() -> dict[str, Any]:
        try:
            return get_ticket(ticket_id).to_dict()
        finally:
            release_connections()  # back to the pool between events

    aread = sync_to_async(read, thread_sensitive=False)
    for i in range(count):
        if i:
            await asyncio.sleep(interval)
        ticket = await aread()
        yield {"n": i, "ticket_id": ticket["ticket_id"], "status": ticket["status"]}
