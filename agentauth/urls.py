"""Protocol URLs. Include ``urlpatterns`` at the issuer path, and ``well_known_urlpatterns`` at
the site root so ``/.well-known/agent-configuration`` answers there too (spec §5.1)::

    path("api/auth/", include("agentauth.urls")),
    path("", include(well_known_urlpatterns)),

Paths have no trailing slash, so ``APPEND_SLASH`` never redirects a POST.
"""

from django.urls import path

from . import views
from .views import approvals as approval_pages
from .views.events import ApprovalEventsView
from .views.fallback import catch_all
from .views.openapi import OpenApiView

app_name = "agentauth"

urlpatterns = [
    # The endpoints agents call most come first: Django tries the patterns in order.
    path("capability/execute", views.ExecuteView.as_view(), name="execute"),
    path("agent/register", views.RegisterView.as_view(), name="register"),
    path(".well-known/agent-configuration", views.DiscoveryView.as_view(), name="discovery"),
    path("agent/status", views.StatusView.as_view(), name="status"),
    path("agent/revoke", views.RevokeView.as_view(), name="revoke"),
    path("agent/events/<str:agent_id>", ApprovalEventsView.as_view(), name="approval_events"),
    path("host/revoke", views.RevokeHostView.as_view(), name="revoke_host"),
    path(
        "agent/request-capability",
        views.RequestCapabilityView.as_view(),
        name="request_capability",
    ),
    path("agent/introspect", views.IntrospectView.as_view(), name="introspect"),
    path("agent/reactivate", views.ReactivateView.as_view(), name="reactivate"),
    path("agent/rotate-key", views.RotateKeyView.as_view(), name="rotate_key"),
    path("host/rotate-key", views.RotateHostKeyView.as_view(), name="rotate_host_key"),
    path("capability/list", views.ListView.as_view(), name="capabilities"),
    path("capability/describe", views.DescribeView.as_view(), name="describe_capability"),
    path(
        "capability/status/<str:job_id>",
        views.ExecutionStatusView.as_view(),
        name="execution_status",
    ),
    path("openapi.json", OpenApiView.as_view(), name="openapi"),
    # Pages for people (session-authenticated), not protocol endpoints.
    path("device", approval_pages.device, name="device"),
    path("approve/<str:approval_id>", approval_pages.approve, name="approve"),
    path(
        "approve/<str:approval_id>/webauthn/begin",
        approval_pages.approve_webauthn_begin,
        name="approve-webauthn-begin",
    ),
    path(
        "approve/<str:approval_id>/webauthn/complete",
        approval_pages.approve_webauthn_complete,
        name="approve-webauthn-complete",
    ),
    path("reauth", approval_pages.reauth, name="reauth"),
    path("webauthn", approval_pages.webauthn_register, name="webauthn"),
    path("webauthn/begin", approval_pages.webauthn_register_begin, name="webauthn-register-begin"),
    path(
        "webauthn/complete",
        approval_pages.webauthn_register_complete,
        name="webauthn-register-complete",
    ),
    path("connected", approval_pages.connected, name="connected"),
    # Last: unknown paths under the mount get a JSON 404 (spec §5.13), not the HTML page.
    catch_all(),
]

well_known_urlpatterns = [
    path(
        ".well-known/agent-configuration",
        views.DiscoveryView.as_view(),
        name="agentauth-discovery-root",
    ),
]
