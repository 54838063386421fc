"""Project views that agents call directly, guarded by capabilities.

Each view acts on ``request.agent_arguments`` only: the URL kwargs, query parameters and JSON body
members that the capability's input schema and the grant's constraints were checked against
(``agentauth.guard.protect``). Reading ``request.data``, ``request.GET`` or a URL kwarg directly
could act on something other than what was checked.

- ``ticket_detail``: a plain Django view behind ``@requires_capability("ticket.read")``.
- ``CloseTicket``: a DRF view with ``AgentAuthentication`` + ``capability_required``.
- ``escalate``: the ``location`` of the ``ticket.escalate`` capability; agents POST the execute
  contract (``{"capability", "arguments"}``) here with ``aud`` = this URL.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agentauth.authentication import AgentAuthentication
from agentauth.decorators import requires_capability
from agentauth.permissions import capability_required

from .capabilities import get_ticket


def not_found(exc: LookupError) -> dict[str, str]:
    return {"error": "resource_not_found", "message": str(exc)}


@require_GET
@requires_capability("ticket.read")
def ticket_detail(request: HttpRequest, ticket_id: str) -> JsonResponse:
    arguments: dict[str, Any] = request.agent_arguments  # type: ignore[attr-defined]
    try:
        ticket = get_ticket(arguments["ticket_id"])
    except LookupError as exc:
        return JsonResponse(not_found(exc), status=404)
    return JsonResponse({"data": ticket.to_dict()})


class CloseTicket(APIView):
    authentication_classes = [AgentAuthentication]
    permission_classes = [capability_required("ticket.close")]

    def post(self, request: Request, ticket_id: str) -> Response:
        arguments: dict[str, Any] = request.agent_arguments  # type: ignore[attr-defined]
        with transaction.atomic():
            try:
                ticket = get_ticket(arguments["ticket_id"], for_update=True)
            except LookupError as exc:
                return Response(not_found(exc), status=404)
            # The stated priority gives a priority constraint its meaning: it must be the
            # ticket's real one.
            priority = arguments.get("priority")
            if priority is not None and priority != ticket.priority:
                return Response(
                    {"error": "invalid_request", "message": "priority does not match the ticket"},
                    status=400,
                )
            ticket.close()
        return Response({"data": ticket.to_dict()})


@require_POST
@requires_capability("ticket.escalate")
def escalate(request: HttpRequest) -> JsonResponse:
    arguments: dict[str, Any] = request.agent_arguments  # type: ignore[attr-defined]
    with transaction.atomic():
        try:
            ticket = get_ticket(arguments["ticket_id"], for_update=True)
        except LookupError as exc:
            return JsonResponse(not_found(exc), status=404)
        ticket.priority = "critical"
        ticket.save(update_fields=["priority"])
    return JsonResponse({"data": ticket.to_dict()})
