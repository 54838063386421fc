# Run by `manage.py shell` in the newcomer's project: the agent over HTTP, the person through
# the approval pages (Django's test client with CSRF enforced, as a browser would post them).
import os
import re
from urllib.parse import urlsplit

from django.test import Client

from agentauth.client import AgentAuthClient

port = os.environ.get("NEWCOMER_PORT", "8765")
base = f"http://127.0.0.1:{port}"
client = AgentAuthClient(base)
agent = client.register("Support triage bot", capabilities=["ticket.read"])
assert agent.status == "pending", agent.status
approval = agent.approval
print("-- registered", agent.agent_id, "code", approval["user_code"])

browser = Client(enforce_csrf_checks=True, HTTP_HOST=f"127.0.0.1:{port}")


def csrf(html: bytes) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1).decode()


page = urlsplit(approval["verification_uri_complete"])
to_login = browser.get(f"{page.path}?{page.query}")
assert to_login.status_code == 302, to_login.status_code
login_page = browser.get(to_login["Location"])
assert login_page.status_code == 200, login_page.status_code
signed_in = browser.post(
    to_login["Location"],
    {
        "username": "demo",
        "password": "demo-password",
        "next": f"{page.path}?{page.query}",
        "csrfmiddlewaretoken": csrf(login_page.content),
    },
)
assert signed_in.status_code == 302, signed_in.content
device = browser.get(signed_in["Location"])
opened = browser.post(
    page.path, {"code": approval["user_code"], "csrfmiddlewaretoken": csrf(device.content)}
)
assert opened.status_code == 302, opened.content
approve_page = browser.get(opened["Location"])
decided = browser.post(
    opened["Location"],
    {
        "action": "approve",
        "capabilities": ["ticket.read"],
        "csrfmiddlewaretoken": csrf(approve_page.content),
        # The digest of what the page showed, sent back as the browser's form does (spec §8.10).
        "shown": re.search(rb'name="shown" value="([^"]+)"', approve_page.content)
        .group(1)
        .decode(),
    },
)
assert decided.status_code == 200, decided.content
status = client.wait_for_approval(agent)
assert status["status"] == "active", status
result = client.execute(agent, "ticket.read", {"ticket_id": "1"})
assert result["data"]["subject"] == "Printer on fire", result
print("-- executed ticket.read:", result["data"])
