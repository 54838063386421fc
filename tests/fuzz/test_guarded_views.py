"""Fuzzing the example project's guarded views with valid agent JWTs (spec §2.13, §4.5 step 12).

Every request carries a fresh, valid JWT of one delegated agent whose grants are constrained:

- ``ticket.read``: ``{"ticket_id": {"not_in": ["2"]}}``
- ``ticket.close``: ``{"priority": {"not_in": ["critical"]}}``
- ``ticket.escalate``: ``{"ticket_id": {"in": ["3"]}}``

What varies is everything else a view could read: the URL kwarg, the query string (names
repeated or not), the body (none, JSON objects of argument names, the execute contract, other
JSON, deep nesting, bytes) and its content type. Two oracles:

- every reply is below 500, JSON, and a spec error body (§5.13) when it is an error;
- nothing happens outside the grants: ticket 2 (critical) is never closed nor returned by a read,
  and no ticket but 3 is ever escalated. The database is checked after every request.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from agentauth.conf import app_settings
from agentauth.testing import agent_token, make_agent, make_host
from example_project.support.models import Ticket

pytestmark = pytest.mark.django_db

ESCALATE_URL = "http://testserver/support/escalate"
GRANTS = {
    "ticket.read": {"ticket_id": {"not_in": ["2"]}},
    "ticket.close": {"priority": {"not_in": ["critical"]}},
    "ticket.escalate": {"ticket_id": {"in": ["3"]}},
}
PRIORITIES = {1: "low", 2: "critical", 3: "normal", 4: "low"}
#: (view, status) of every fuzzed request in this session.
STATUSES: Counter[tuple[str, int]] = Counter()

# --- what an agent can put in a request -------------------------------------------------------

#: Ticket ids and other spellings of them (leading zeros, signs, spaces, Arabic-Indic two).
IDS = st.sampled_from(
    ["1", "2", "3", "4", "02", "002", "+2", "2 ", " 2", "2\n", "\u0662", "0", "-2", "2.0", "1e0"]
)
NAMES = st.sampled_from(["ticket_id", "priority", "capability", "arguments", "note"]) | st.text(
    max_size=4
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-5, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | IDS
    | st.sampled_from(["low", "normal", "high", "critical", "ticket.read", "ticket.escalate"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
    max_leaves=8,
)
PRIORITY = st.sampled_from(["low", "normal", "high", "critical", "Critical", "low "])
#: Requests close to valid ones reach the views; the rest exercise the guard's refusals.
PLAUSIBLE = st.fixed_dictionaries(
    {}, optional={"ticket_id": IDS | SCALARS, "priority": PRIORITY | SCALARS}
)
ARGUMENTS = st.dictionaries(NAMES, IDS | SCALARS | JSON, max_size=4)
CONTRACT = st.fixed_dictionaries(
    {"capability": st.sampled_from(["ticket.escalate", "ticket.read", "ticket.close", "x"])},
    optional={"arguments": PLAUSIBLE | ARGUMENTS | JSON},
)
NESTED = st.sampled_from([10, 63, 64, 65, 300, 3000, 30_000]).map(
    lambda depth: ("[" * depth + "]" * depth).encode()
)
BODIES = st.one_of(
    st.none(),
    PLAUSIBLE.map(json.dumps),
    CONTRACT.map(json.dumps),
    ARGUMENTS.map(json.dumps),
    JSON.map(json.dumps),
    NESTED,
    st.binary(max_size=40),
    st.just('{"priority": "low", "priority": "critical"}'),
)
CONTENT_TYPES = st.sampled_from(
    ["application/json"] * 4
    + [
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ]
)
QUERIES = st.one_of(
    st.just({}),
    st.dictionaries(
        st.sampled_from(["ticket_id", "priority"]), st.lists(IDS | PRIORITY, min_size=1, max_size=2)
    ),
    st.dictionaries(NAMES, st.lists(IDS | SCALARS.map(str), min_size=1, max_size=2)),
)
#: A URL kwarg: anything ``<str:...>`` matches (no "/", not empty).
KWARGS = IDS | st.text(min_size=1, max_size=5).filter(lambda s: "/" not in s)


# --- the views and their requests -------------------------------------------------------------

TICKETS = st.sampled_from(["1", "2", "3", "4"])


@st.composite
def requests(draw: st.DrawFn, view: str) -> tuple[str, str, bytes, str]:
    """A valid request to ``view`` (within the grants or not), then up to four mutations."""
    kwarg = draw(TICKETS)
    query: dict[str, list[str]] = {}
    body: Any = None
    content_type = "application/json"
    if view == "close":
        body = draw(st.fixed_dictionaries({}, optional={"priority": PRIORITY}))
    elif view == "escalate":
        arguments = {"ticket_id": draw(TICKETS)}
        contract = {"capability": "ticket.escalate", "arguments": arguments}
        body = draw(st.sampled_from([contract, arguments]))
    raw: bytes | None = None
    for mutation in draw(
        st.lists(st.sampled_from(["kwarg", "query", "member", "body", "type"]), max_size=4)
    ):
        if mutation == "kwarg":
            kwarg = draw(KWARGS)
        elif mutation == "query":
            query[draw(NAMES)] = draw(st.lists(IDS | PRIORITY | SCALARS.map(str), min_size=1))
        elif mutation == "member":
            target = (
                body.get("arguments") if isinstance(body, dict) and "capability" in body else body
            )
            if isinstance(target, dict):
                target[draw(NAMES)] = draw(IDS | PRIORITY | SCALARS | JSON)
            else:
                body = draw(PLAUSIBLE | ARGUMENTS)
        elif mutation == "body":
            raw = draw(BODIES.map(lambda b: b.encode() if isinstance(b, str) else b))
        else:
            content_type = draw(CONTENT_TYPES)
    if raw is None:
        raw = b"" if body is None else json.dumps(body).encode()
    quoted = quote(kwarg, safe="")
    method, path = {
        "read": ("GET", f"/support/tickets/{quoted}"),
        "close": ("POST", f"/support/api/tickets/{quoted}/close"),
        "escalate": ("POST", "/support/escalate"),
    }[view]
    if query:
        path += "?" + urlencode(query, doseq=True)
    return method, path, raw, content_type


@pytest.fixture
def agent(user: Any) -> Any:
    for pk, priority in PRIORITIES.items():
        Ticket.objects.create(pk=pk, subject=f"Ticket {pk}", priority=priority)
    host, _ = make_host(user=user)
    return make_agent(host, grants=GRANTS)


def check_reply(response: Any) -> Any:
    """Below 500, JSON, and a spec error body (§5.13) when it is an error."""
    assert response.status_code < 500, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), (
        response.status_code,
        response["Content-Type"],
        response.content[:300],
    )
    body = json.loads(response.content)
    assert isinstance(body, dict)
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("message"), str) and body["message"], body
    return body


def check_grants_held(view: str, response: Any, body: Any) -> None:
    """Nothing was done, or shown, outside the grants' constraints."""
    assert Ticket.objects.get(pk=2).status == Ticket.Status.OPEN
    for pk in (1, 2, 4):
        assert Ticket.objects.get(pk=pk).priority == PRIORITIES[pk]
    if response.status_code == 200:
        assert body["data"]["ticket_id"] != "2", body
        if view == "escalate":
            assert body["data"]["ticket_id"] == "3", body


@pytest.mark.parametrize("view", ["read", "close", "escalate"])
@given(data=st.data())
def test_guarded_views_hold_their_grants(
    client: Client, agent: Any, view: str, data: st.DataObject
) -> None:
    method, path, raw, content_type = data.draw(requests(view))
    agent_obj, key = agent
    audience = ESCALATE_URL if view == "escalate" else app_settings.ISSUER
    response = client.generic(
        method,
        path,
        raw,
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Bearer {agent_token(agent_obj, key, audience=audience)}",
    )
    reply = check_reply(response)
    STATUSES[view, response.status_code] += 1
    check_grants_held(view, response, reply)


def test_fuzz_reached_the_views() -> None:
    # Runs after the fuzz tests (file order): the oracle above is worth something only if
    # requests were let through, and refused, for every view.
    for view in ("read", "close", "escalate"):
        seen = {status for (name, status) in STATUSES if name == view}
        if not seen:
            pytest.skip("the fuzz tests did not run in this session")
        assert 200 in seen and seen & {400, 403, 415}, (view, sorted(seen))


def test_the_fuzzed_grants_let_the_right_requests_through(client: Client, agent: Any) -> None:
    # The oracle above is worth something only if the grants do allow some requests.
    agent_obj, key = agent
    response = client.get(
        "/support/tickets/1", HTTP_AUTHORIZATION=f"Bearer {agent_token(agent_obj, key)}"
    )
    assert response.status_code == 200
    response = client.post(
        "/support/api/tickets/4/close",
        json.dumps({"priority": "low"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {agent_token(agent_obj, key)}",
    )
    assert response.status_code == 200
    response = client.post(
        "/support/escalate",
        json.dumps({"capability": "ticket.escalate", "arguments": {"ticket_id": "3"}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {agent_token(agent_obj, key, audience=ESCALATE_URL)}",
    )
    assert response.status_code == 200
    assert Ticket.objects.get(pk=3).priority == "critical"
