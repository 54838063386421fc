"""The real-time approval stream (spec §10.10.2): ``GET /agent/events/<agent_id>``."""

from __future__ import annotations

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse

from .. import approval_events
from ..conf import app_settings
from ..errors import ProtocolError
from ..tokens import bearer_token, verify_host_jwt
from ..validation import check_fields
from .agents import agent_of_host
from .base import ProtocolView


class ApprovalEventsView(ProtocolView):
    """Authenticated exactly as ``GET /agent/status`` (§5.5): a host JWT, and the agent must be
    registered under that host. Refusals are JSON bodies sent before any stream starts."""

    http_method_names = ["get", "options"]

    def get(self, request: HttpRequest, agent_id: str) -> StreamingHttpResponse:
        if not app_settings.APPROVAL_EVENTS:
            raise ProtocolError("not_found", "This server does not offer approval events")
        verified = verify_host_jwt(bearer_token(request), allow_pending=True, allow_rejected=True)
        check_fields(request.GET, ())
        assert verified.host is not None
        agent = agent_of_host(agent_id, verified.host)
        slot = approval_events.open_slot(verified.host.pk)
        stream = approval_events.ApprovalEventStream(agent.pk, slot)
        response = StreamingHttpResponse(
            stream.body(asynchronous=isinstance(request, ASGIRequest)),
            content_type="text/event-stream",
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
        return response
