"""Host endpoints: ``POST /host/revoke`` (spec §5.10)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from .. import lifecycle
from ..tokens import bearer_token, verify_host_jwt
from ..validation import check_fields
from .base import ProtocolView, json_response, read_json_body


class RevokeHostView(ProtocolView):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        verified = verify_host_jwt(bearer_token(request), allow_pending=True)
        check_fields(read_json_body(request, allow_empty=True), ())
        assert verified.host is not None
        count = lifecycle.revoke_host(verified.host, actor_type="host", actor_id=verified.host.pk)
        return json_response(
            {"host_id": verified.host.pk, "status": "revoked", "agents_revoked": count}
        )
