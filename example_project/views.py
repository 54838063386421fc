"""The example project's landing page."""

from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from agentauth.conf import app_settings


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        format_html(
            """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>support-api: django-agentauth demo</title></head>
<body>
<h1>support-api</h1>
<p>This is the django-agentauth example project: a small support desk whose tickets AI agents
can read (<code>ticket.read</code>) and close (<code>ticket.close</code>) through the
Agent Auth Protocol (v1.0-draft), with approvals, scoped grants and revocation.</p>
<ul>
<li><a href="/.well-known/agent-configuration">Discovery document</a>
(<code>/.well-known/agent-configuration</code>); protocol endpoints live under
<code>{}</code></li>
<li><a href="/admin/">Admin</a>: hosts, agents, grants, approvals and audit events
(sign in as <code>demo</code> / <code>demo-password</code> after <code>make demo</code>)</li>
</ul>
</body>
</html>
""",
            app_settings.ISSUER,
        )
    )
