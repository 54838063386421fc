"""The ``verification_uri`` page (RFC 8628, spec §7.1).

For now it lets a signed-in person look up a user code and see exactly what the agent asks for;
the decision itself is taken by staff in the admin or with ``agentauth_approve``. Approving on
this page needs fresh authentication and WebAuthn step-up, which come with the approval pages.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views import View

from ..approvals import find_by_user_code
from ..capabilities import registry


@method_decorator(login_required, name="dispatch")
class DeviceView(View):
    http_method_names = ["get"]

    def get(self, request: HttpRequest) -> HttpResponse:
        code = request.GET.get("code", "")[:32]
        context: dict[str, object] = {"code": code, "approval": None, "not_found": False}
        if code:
            approval = find_by_user_code(code)
            if approval is None:
                context["not_found"] = True
            else:
                grants = list(approval.agent.grants.filter(status="pending"))
                context["approval"] = approval
                context["items"] = [(g, registry.get(g.capability)) for g in grants]
        return render(request, "agentauth/device.html", context)
