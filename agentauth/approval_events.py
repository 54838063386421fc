"""Real-time approval notification (spec §10.10.2): an SSE stream per agent that says once how
its approval ended, so a client need not poll ``GET /agent/status`` (§5.5, §7.3).

The stream reads the database once a second (one indexed query while the request is still
open); a decision therefore needs no signal plumbing and is seen whichever process took it.
Under ASGI the stream is an async generator, so an open stream costs a coroutine, not a worker;
under WSGI a plain generator serves it and holds the worker, which the stream limits bound.

Open streams are counted in the default cache, per host and in total. Each count lives
``MAX_SECONDS`` plus a margin after the last stream that took it: every stream it counts has
ended by then, so a count left behind by a killed process heals itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.utils import timezone

from . import clocks, wire
from .conf import app_settings
from .errors import ProtocolError
from .models import Agent, AgentStatus, ApprovalRequest, ApprovalStatus, GrantStatus

APPROVED = "approved"
PARTIALLY_APPROVED = "partially_approved"
DENIED = "denied"
EXPIRED = "expired"
#: The agent left the approvable states (revoked, or its session expired) while waiting.
REVOKED = "revoked"

#: How often an open stream looks at the database.
POLL_SECONDS = 1.0
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
_COUNT_MARGIN = 30
_TOTAL_KEY = "agentauth:approval-events:total"


def _decided(agent: Agent, approval: Mapping[str, Any] | None) -> str:
    """Which event ends the wait, once nothing is pending any more."""
    if agent.status == AgentStatus.REJECTED:
        return DENIED
    if agent.status not in (AgentStatus.ACTIVE, AgentStatus.PENDING):
        return REVOKED
    if approval is None:
        return APPROVED  # nothing was ever asked of a person: policy approved it
    if approval["status"] == ApprovalStatus.DENIED:
        return DENIED
    if approval["status"] != ApprovalStatus.APPROVED:
        return EXPIRED
    statuses = set(agent.grants.filter(approval_id=approval["pk"]).values_list("status", flat=True))
    if GrantStatus.DENIED in statuses:
        return PARTIALLY_APPROVED if GrantStatus.ACTIVE in statuses else DENIED
    return APPROVED


def outcome(agent_id: str) -> tuple[str, dict[str, Any]] | None:
    """``None`` while the agent's newest approval request is open; else the event name and the
    body ``GET /agent/status`` would answer now. Raises ``agent_not_found`` if it is gone."""
    approval = (
        ApprovalRequest.objects.filter(agent_id=agent_id)
        .order_by("-created_at")
        .values("pk", "status", "expires_at", "agent__status")
        .first()
    )
    if (
        approval is not None
        and approval["status"] == ApprovalStatus.PENDING
        and approval["expires_at"] > timezone.now()
        and approval["agent__status"] in (AgentStatus.PENDING, AgentStatus.ACTIVE)
    ):
        return None
    agent = Agent.objects.select_related("host").filter(pk=agent_id).first()
    if agent is None:
        raise ProtocolError("agent_not_found")
    # The same clocks the status endpoint applies, so the body is the one it would return.
    clocks.evaluate_clocks(agent)
    return _decided(agent, approval), wire.agent_status(agent, agent.grants.all())


@dataclass
class StreamSlot:
    """One open stream's place in the per-host and total counts; released exactly once."""

    keys: list[str] = field(default_factory=list)

    def release(self) -> None:
        keys, self.keys = self.keys, []
        for key in keys:
            try:
                if cache.decr(key) < 0:
                    cache.set(key, 0, _count_ttl())
            except ValueError:
                pass  # the count expired: nothing left to give back


def _count_ttl() -> int:
    return app_settings.APPROVAL_EVENTS_MAX_SECONDS + _COUNT_MARGIN


def _take(key: str) -> int:
    ttl = _count_ttl()
    if cache.add(key, 1, ttl):
        return 1
    try:
        value = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, ttl)
        value = 1
    cache.touch(key, ttl)
    return int(value)


def open_slot(host_id: str) -> StreamSlot:
    """Count a new stream for ``host_id``, or refuse it (429) if a limit is reached."""
    slot = StreamSlot()
    limits = (
        (f"agentauth:approval-events:host:{host_id}", app_settings.APPROVAL_EVENTS_MAX_PER_HOST),
        (_TOTAL_KEY, app_settings.APPROVAL_EVENTS_MAX_STREAMS),
    )
    for key, limit in limits:
        count = _take(key)
        slot.keys.append(key)
        if count > limit:
            slot.release()
            raise ProtocolError(
                "rate_limited",
                "Too many open approval event streams; poll GET /agent/status instead",
                status=429,
                headers={"Retry-After": "5"},
            )
    return slot


def frame(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


OPENED = b": waiting for the approval\n\n"
KEEPALIVE = b": keepalive\n\n"


class _Pace:
    """The time limit and keepalive rhythm of one stream, for the sync and the async loop."""

    def __init__(self) -> None:
        self.started = self.last_sent = time.monotonic()

    def open(self) -> bool:
        return time.monotonic() - self.started < app_settings.APPROVAL_EVENTS_MAX_SECONDS

    def keepalive_due(self) -> bool:
        if time.monotonic() - self.last_sent < KEEPALIVE_SECONDS:
            return False
        self.last_sent = time.monotonic()
        return True


class ApprovalEventStream:
    """The frames of one stream. Django closes the body when the response ends, which releases
    the slot even if iteration never began (a generator's ``finally`` would not run then)."""

    def __init__(self, agent_id: str, slot: StreamSlot) -> None:
        self.agent_id = agent_id
        self.slot = slot

    def close(self) -> None:
        self.slot.release()

    def body(self, *, asynchronous: bool) -> Any:
        """What ``StreamingHttpResponse`` gets: async-iterable under ASGI, iterable under WSGI
        (Django would buffer the other kind to the end, and the client would see nothing)."""
        return _AsyncBody(self) if asynchronous else _SyncBody(self)

    def frames(self) -> Iterator[bytes]:
        pace = _Pace()
        try:
            yield OPENED
            while pace.open():
                result = outcome(self.agent_id)
                if result is not None:
                    yield frame(*result)
                    return
                if pace.keepalive_due():
                    yield KEEPALIVE
                time.sleep(POLL_SECONDS)
        except ProtocolError:
            return  # the agent is gone: end the stream; the client's status poll says why
        finally:
            self.slot.release()

    async def aframes(self) -> AsyncIterator[bytes]:
        pace = _Pace()
        check = sync_to_async(outcome)
        try:
            yield OPENED
            while pace.open():
                result = await check(self.agent_id)
                if result is not None:
                    yield frame(*result)
                    return
                if pace.keepalive_due():
                    yield KEEPALIVE
                await asyncio.sleep(POLL_SECONDS)
        except ProtocolError:
            return
        finally:
            await sync_to_async(self.slot.release)()


class _SyncBody:
    def __init__(self, stream: ApprovalEventStream) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        return self.stream.frames()

    def close(self) -> None:
        self.stream.close()


class _AsyncBody:
    def __init__(self, stream: ApprovalEventStream) -> None:
        self.stream = stream

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.stream.aframes()

    def close(self) -> None:
        self.stream.close()
