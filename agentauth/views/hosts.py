"""Host endpoints: ``POST /host/revoke`` (spec §5.10)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from .. import hosts, wire
from ..errors import invalid_request
from ..tokens import bearer_token, verify_host_jwt
from ..validation import check_fields
from .base import ProtocolView, json_response, read_json_body


class RevokeHostView(ProtocolView):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        verified = verify_host_jwt(bearer_token(request), allow_pending=True)
        check_fields(read_json_body(request, allow_empty=True), ())
        assert verified.host is not None
        count = hosts.revoke_host(verified.host, actor_type="host", actor_id=verified.host.pk)
        return json_response(wire.host_revoked(verified.host, count))


class RotateHostKeyView(ProtocolView):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        verified = verify_host_jwt(bearer_token(request))
        body = read_json_body(request)
        check_fields(body, ("public_key",))
        if "public_key" not in body:
            raise invalid_request("'public_key' is required")
        assert verified.host is not None
        host = hosts.rotate_host_key(verified.host, body["public_key"])
        return json_response(wire.host_key_rotated(host))
