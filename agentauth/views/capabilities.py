"""Capability endpoints: list, describe, execute, and the async ``status_url`` (spec §5.2,
§5.2.1, §5.11)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from .. import dpop, execution, fastpath, wire
from ..capabilities import Capability, registry
from ..conf import app_settings
from ..errors import ProtocolError, invalid_request
from ..keys import b64url_decode, b64url_encode
from ..models import CapabilityGrant, Execution, GrantStatus
from ..tokens import VerifiedAgent, VerifiedHost, bearer_token
from ..validation import check_fields
from .auth import authenticate_agent, execute_audiences, optional_identity
from .base import ProtocolView, json_response, read_json_body

MAX_LIMIT = 100
DEFAULT_LIMIT = 50


def _visible(
    identity: VerifiedAgent | VerifiedHost | None,
) -> tuple[list[Capability], set[str] | None]:
    """Capabilities this caller may see, and (agent JWT only) the names it holds grants for.

    Non-public capabilities are shown only to an agent that holds or held a grant for them, or
    to a host whose defaults include them (§5.2.1, §5.2).
    """
    if isinstance(identity, VerifiedAgent):
        rows = CapabilityGrant.objects.filter(agent=identity.agent).values_list(
            "capability", "status", "expires_at"
        )
        held = {name for name, _, _ in rows}
        now = timezone.now()
        granted = {
            name
            for name, status, expires in rows
            if status == GrantStatus.ACTIVE and (expires is None or expires > now)
        }
        return [c for c in registry if c.public or c.name in held], granted
    if isinstance(identity, VerifiedHost) and identity.host is not None:
        defaults = set(identity.host.default_capabilities or [])
        return [c for c in registry if c.public or c.name in defaults], None
    return [c for c in registry if c.public], None


def _matches(cap: Capability, query: str) -> bool:
    """Every word of the query appears in the name or the description (case-insensitive)."""
    haystack = f"{cap.name.replace('.', ' ').replace('_', ' ')} {cap.name} {cap.description}"
    return all(word in haystack.lower() for word in query.lower().split())


def _cache_headers(response: HttpResponse, authenticated: bool) -> HttpResponse:
    # spec §10.6: list/describe are cacheable for 5 minutes, per identity when authenticated.
    response.headers["Cache-Control"] = f"{'private' if authenticated else 'public'}, max-age=300"
    response.headers["Vary"] = "Authorization"
    return response


class ListView(ProtocolView):
    http_method_names = ["get", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        check_fields(request.GET, ("query", "cursor", "limit"))
        identity = optional_identity(request)
        caps, granted = _visible(identity)
        query = request.GET.get("query", "")
        if len(query) > 256:
            raise invalid_request("'query' is too long")
        if query:
            caps = [c for c in caps if _matches(c, query)]
        limit = _limit(request.GET.get("limit"))
        cursor = request.GET.get("cursor")
        if cursor is not None:
            after = _decode_cursor(cursor)
            caps = [c for c in caps if c.name > after]
        page, more = caps[:limit], len(caps) > limit
        items = []
        for cap in page:
            item: dict[str, Any] = {"name": cap.name, "description": cap.description}
            # §2.12 field; the official SDK looks for it only here, so without it a located
            # capability would be sent to default_location and refused.
            if cap.location:
                item["location"] = cap.url
            if granted is not None:
                item["grant_status"] = "granted" if cap.name in granted else "not_granted"
            items.append(item)
        body = {
            "capabilities": items,
            "has_more": more,
            "next_cursor": b64url_encode(page[-1].name.encode()) if more and page else None,
        }
        return _cache_headers(json_response(body), identity is not None)


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    # ASCII digits only: str.isdigit() also accepts characters int() refuses ("²"), and int()
    # refuses more than 4300 digits; both were 500s.
    digits = raw.lstrip("0") if raw.isascii() and raw.isdigit() else ""
    if not digits:
        raise invalid_request("'limit' must be a positive integer")
    return MAX_LIMIT if len(digits) > len(str(MAX_LIMIT)) else min(int(digits), MAX_LIMIT)


def _decode_cursor(cursor: str) -> str:
    try:
        return b64url_decode(cursor).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise invalid_request("'cursor' is not a cursor this server issued") from None


class DescribeView(ProtocolView):
    http_method_names = ["get", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        check_fields(request.GET, ("name",))
        name = request.GET.get("name")
        if not name:
            raise invalid_request("'name' is required")
        identity = optional_identity(request)
        caps, granted = _visible(identity)
        cap = next((c for c in caps if c.name == name), None)
        if cap is None:
            raise ProtocolError("capability_not_found", f"Capability '{name}' does not exist")
        body = cap.to_wire(full=True)
        if granted is not None:
            body["grant_status"] = "granted" if cap.name in granted else "not_granted"
        return _cache_headers(json_response(body), identity is not None)


class ExecuteView(ProtocolView):
    """``POST /capability/execute`` (spec §5.11): parse, ``execution.execute``, render by mode."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponseBase:
        try:  # read once, for the hot path and the general path alike
            body = read_json_body(request)
            check_fields(body, ("capability", "arguments"))
        except ProtocolError as exc:
            unreadable: ProtocolError | None = exc
        else:
            unreadable = None
            fast = self.fast(request, body)
            if fast is not None:
                return fast
        verified = authenticate_agent(request, execute_audiences())
        if unreadable is not None:
            # A call whose body cannot be read is still a refused call (§11), once the caller
            # is known.
            execution.record(verified, "", error=unreadable)
            raise unreadable
        arguments = body.get("arguments")
        outcome = execution.execute(
            verified, body.get("capability"), {} if arguments is None else arguments, request
        )
        if outcome.job is not None:
            return json_response(wire.job(outcome.job), status=202, headers={"Retry-After": "1"})
        if outcome.events is not None:
            asgi = isinstance(request, ASGIRequest)
            if asgi and isinstance(outcome.events, AsyncIterator):
                # The stream may stay open for minutes: it should not keep this request's
                # database connection checked out meanwhile (docs/deployment.md).
                execution.release_connections()
            frames = _frames(outcome.events, asgi)
            response = StreamingHttpResponse(frames, content_type="text/event-stream")
            response.headers["Cache-Control"] = "no-store"
            response.headers["X-Accel-Buffering"] = "no"
            return response
        return json_response(wire.sync_result(outcome.data))

    def fast(self, request: HttpRequest, body: dict[str, Any]) -> HttpResponseBase | None:
        """The hot path of a sync call (``fastpath``); ``None``: answer on the general path."""
        cap = fastpath.sync_capability(body.get("capability"))
        arguments = body.get("arguments")
        arguments = {} if arguments is None else arguments
        if cap is None or not isinstance(arguments, dict):
            return None
        try:
            token = bearer_token(request)
        except ProtocolError:
            return None
        try:
            # A failed handler's ProtocolError is the answer (audited); only Fallback retries.
            answer = fastpath.execute(token, execute_audiences(), cap, arguments, request)
        except fastpath.Fallback:
            return None
        return json_response(answer, encoded=True)


def _frames(
    events: Iterator[tuple[str, str]] | AsyncIterator[tuple[str, str]], asgi: bool
) -> Iterator[bytes] | AsyncIterator[bytes]:
    """Server-Sent Events frames. An ``async def`` handler's stream stays asynchronous under ASGI
    (an open stream then holds no worker); under WSGI it is pulled one event at a time, so
    events still go out as they come instead of all at the end."""
    if isinstance(events, AsyncIterator):
        if asgi:
            return _aframes(events)
        events = _pull(events)
    return (f"event: {name}\ndata: {data}\n\n".encode() for name, data in events)


async def _aframes(events: AsyncIterator[tuple[str, str]]) -> AsyncIterator[bytes]:
    async for name, data in events:
        yield f"event: {name}\ndata: {data}\n\n".encode()


def _pull(events: AsyncIterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    # One event loop for the whole stream: a loop per event would close the handler's async
    # generator when it ends (``shutdown_asyncgens``) and cut the stream after one event.
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(events.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class ExecutionStatusView(ProtocolView):
    """``status_url`` polling: agent JWT, and only the agent that started the job (spec §5.11)."""

    http_method_names = ["get", "options"]

    def get(self, request: HttpRequest, job_id: str) -> HttpResponse:
        verified = authenticate_agent(request, {app_settings.ISSUER, app_settings.DEFAULT_LOCATION})
        job = Execution.objects.filter(pk=job_id, agent=verified.agent).first()
        if job is None:
            # Another agent's job is indistinguishable from no job (§2.15).
            raise ProtocolError("not_found", "No such execution")
        dpop.require_for(registry.get(job.capability), verified)
        return json_response(wire.job(job))
