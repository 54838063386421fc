"""GET /capability/list and GET /capability/describe (spec §5.2, §5.2.1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from agentauth.models import CapabilityGrant, HostStatus
from agentauth.testing import Keypair, agent_token, host_token, make_agent, make_host
from tests.conftest import ISSUER, Api, assert_error

pytestmark = pytest.mark.django_db
PUBLIC = {
    "broken_stream",
    "capped_transfer",
    "check_balance",
    "count_up",
    "explode",
    "failing_job",
    "over_limit",
    "read_only_note",
    "slow_report",
    "transfer",
}


def names(reply: Any) -> set[str]:
    return {c["name"] for c in reply.body["capabilities"]}


# --- list ------------------------------------------------------------------------------------


def test_anonymous_list(api: Api) -> None:
    # spec: §5.2
    reply = api.get("/capability/list")
    assert reply.status == 200
    assert names(reply) >= PUBLIC and "close_account" not in names(reply)
    # §5.2 summary fields, plus §2.12 location where the capability has one (the SDK reads it
    # only here).
    for c in reply.body["capabilities"]:
        expected = {"name", "description"} | ({"location"} if "location" in c else set())
        assert set(c) == expected, c
    located = {c["name"]: c["location"] for c in reply.body["capabilities"] if "location" in c}
    assert located == {"ticket.escalate": "http://testserver/support/escalate"}
    assert reply.body["has_more"] is False and reply.body["next_cursor"] is None
    assert reply.headers["Cache-Control"] == "public, max-age=300"


def test_query(api: Api) -> None:
    # spec: §5.2
    assert names(api.get("/capability/list", query="bank balance")) == {"check_balance"}
    assert names(api.get("/capability/list", query="nothing matches this")) == set()


def test_pagination_walks_everything_once(api: Api) -> None:
    # spec: §5.2
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        reply = api.get("/capability/list", **params)
        assert reply.body["has_more"] == (reply.body["next_cursor"] is not None)
        seen += [c["name"] for c in reply.body["capabilities"]]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(seen) == names(api.get("/capability/list"))


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "x"}, {"limit": "-1"}, {"cursor": "%%%"}, {"page": "2"}]
)
def test_bad_list_parameters(api: Api, params: dict[str, str]) -> None:
    assert_error(api.get("/capability/list", **params), 400, "invalid_request")


def test_limit_is_clamped(api: Api) -> None:
    assert api.get("/capability/list", limit="100000").status == 200


def test_agent_list_has_grant_status(api: Api, user: Any) -> None:
    # spec: §5.2, §2.12
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["check_balance"])
    CapabilityGrant.objects.create(agent=agent, capability="transfer", status="pending")
    CapabilityGrant.objects.create(agent=agent, capability="close_account", status="denied")
    reply = api.get("/capability/list", token=agent_token(agent, key))
    status = {c["name"]: c["grant_status"] for c in reply.body["capabilities"]}
    assert status["check_balance"] == "granted"
    assert status["transfer"] == "not_granted"  # pending is not granted
    # A non-public capability shows once the agent holds any grant row for it (§5.2.1).
    assert status["close_account"] == "not_granted"
    assert all(c["grant_status"] in ("granted", "not_granted") for c in reply.body["capabilities"])
    assert reply.headers["Cache-Control"] == "private, max-age=300"
    assert "Authorization" in reply.headers["Vary"]


def test_host_list_includes_its_defaults(api: Api, user: Any) -> None:
    # §5.2
    _, key = make_host(user=user, default_capabilities=["close_account"])
    reply = api.get("/capability/list", token=host_token(key))
    assert "close_account" in names(reply)
    assert all("grant_status" not in c for c in reply.body["capabilities"])


def test_unknown_host_lists_like_anonymous(api: Api) -> None:
    # §5.2
    reply = api.get("/capability/list", token=host_token(Keypair.generate()))
    assert reply.status == 200 and "close_account" not in names(reply)


def test_bad_token_is_not_downgraded(api: Api) -> None:
    # §5.2
    assert_error(api.get("/capability/list", token="a.b.c"), 401, "invalid_jwt")


# --- describe --------------------------------------------------------------------------------


def test_describe(api: Api) -> None:
    # spec: §5.2.1, §2.12
    reply = api.get("/capability/describe", name="check_balance")
    assert reply.status == 200
    body = reply.body
    assert body["name"] == "check_balance" and body["input"]["required"] == ["account_id"]
    assert body["output"]["properties"]["balance"] == {"type": "number"}
    assert body["approval_strength"] == "none" and "grant_status" not in body


def test_describe_with_agent(api: Api, user: Any) -> None:
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["check_balance"])
    reply = api.get("/capability/describe", name="transfer", token=agent_token(agent, key))
    assert reply.body["grant_status"] == "not_granted"


@pytest.mark.parametrize("name", ["nope", "close_account"])
def test_describe_unknown_or_hidden(api: Api, name: str) -> None:
    # spec: §5.2.1
    assert_error(api.get("/capability/describe", name=name), 404, "capability_not_found")


def test_describe_needs_a_name(api: Api) -> None:
    assert_error(api.get("/capability/describe"), 400, "invalid_request")


# --- list: more -------------------------------------------------------------------------------


def test_limit_one_walks_every_page(api: Api) -> None:
    # spec: §5.2 — has_more and next_cursor always agree.
    everything = [c["name"] for c in api.get("/capability/list").body["capabilities"]]
    seen: list[str] = []
    cursor = None
    for _ in range(len(everything) + 1):
        reply = api.get("/capability/list", limit="1", **({"cursor": cursor} if cursor else {}))
        assert reply.status == 200
        assert len(reply.body["capabilities"]) == 1
        assert reply.body["has_more"] == (reply.body["next_cursor"] is not None)
        seen += [c["name"] for c in reply.body["capabilities"]]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert seen == everything  # same order, nothing skipped or repeated


def test_cursor_past_the_end_is_an_empty_last_page(api: Api) -> None:
    everything = [c["name"] for c in api.get("/capability/list").body["capabilities"]]
    first = api.get("/capability/list", limit=str(len(everything) - 1))
    last = api.get("/capability/list", cursor=first.body["next_cursor"])
    assert [c["name"] for c in last.body["capabilities"]] == everything[-1:]
    assert last.body["has_more"] is False and last.body["next_cursor"] is None


@pytest.mark.parametrize("limit", ["²", "1.5", " 1", "", "0000", "0x10", "1e2"])
def test_limit_must_be_ascii_digits(api: Api, limit: str) -> None:
    # §5.2 — "²" passes str.isdigit() but not int(): it was a 500.
    assert_error(api.get("/capability/list", limit=limit), 400, "invalid_request")


def test_huge_limit_is_clamped_not_an_error(api: Api) -> None:
    # §5.2 — more than 4300 digits made int() raise: it was a 500.
    reply = api.get("/capability/list", limit="9" * 5000)
    assert reply.status == 200 and reply.body["has_more"] is False
    assert api.get("/capability/list", limit="001").body["has_more"] is True


def test_anonymous_list_varies_on_authorization(api: Api) -> None:
    # §10.6
    assert "Authorization" in api.get("/capability/list").headers["Vary"]


def test_only_effective_grants_are_granted(api: Api, user: Any) -> None:
    # spec: §5.2 — lapsed, revoked and expired grant rows are not_granted.
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["check_balance", "transfer", "read_only_note"])
    past = timezone.now() - timedelta(seconds=1)
    CapabilityGrant.objects.filter(capability="transfer").update(expires_at=past)
    CapabilityGrant.objects.filter(capability="read_only_note").update(status="revoked")
    CapabilityGrant.objects.create(agent=agent, capability="count_up", status="expired")
    reply = api.get("/capability/list", token=agent_token(agent, key))
    status = {c["name"]: c["grant_status"] for c in reply.body["capabilities"]}
    assert status["check_balance"] == "granted"
    assert status["transfer"] == status["read_only_note"] == status["count_up"] == "not_granted"
    assert all(
        set(c) - {"location"} == {"name", "description", "grant_status"}
        for c in reply.body["capabilities"]
    )


def test_non_public_needs_a_grant_row_to_be_seen(api: Api, user: Any) -> None:
    # §5.2.1 — an agent never granted close_account does not learn it exists.
    host, _ = make_host(user=user)
    stranger, stranger_key = make_agent(host, grants=["check_balance"])
    holder, holder_key = make_agent(host, grants=["close_account"])
    assert "close_account" not in names(
        api.get("/capability/list", token=agent_token(stranger, stranger_key))
    )
    hidden = api.get(
        "/capability/describe", name="close_account", token=agent_token(stranger, stranger_key)
    )
    assert_error(hidden, 404, "capability_not_found")
    listed = api.get("/capability/list", token=agent_token(holder, holder_key))
    assert {"name": "close_account", "description": "Close a bank account"} | {
        "grant_status": "granted"
    } in listed.body["capabilities"]
    shown = api.get(
        "/capability/describe", name="close_account", token=agent_token(holder, holder_key)
    )
    assert shown.status == 200 and shown.body["grant_status"] == "granted"
    assert shown.body["input"]["required"] == ["account_id"]


def test_pending_host_lists_like_anonymous(api: Api, user: Any) -> None:
    # §5.2 — its defaults are not disclosed before approval.
    _, key = make_host(status=HostStatus.PENDING, default_capabilities=["close_account"])
    reply = api.get("/capability/list", token=host_token(key))
    assert reply.status == 200 and "close_account" not in names(reply)
    assert reply.headers["Cache-Control"] == "public, max-age=300"


def test_revoked_host_is_refused_not_downgraded(api: Api, user: Any) -> None:
    # §5.2
    _, key = make_host(user=user, status=HostStatus.REVOKED)
    assert_error(api.get("/capability/list", token=host_token(key)), 403, "host_revoked")


def test_host_describe_of_a_default_has_no_grant_status(api: Api, user: Any) -> None:
    # spec: §5.2.1, §5.2
    _, key = make_host(user=user, default_capabilities=["close_account"])
    reply = api.get("/capability/describe", name="close_account", token=host_token(key))
    assert reply.status == 200 and "grant_status" not in reply.body
    assert reply.headers["Cache-Control"] == "private, max-age=300"


@pytest.mark.parametrize(
    "token_kwargs",
    [
        {"audience": ISSUER + "/capability/execute"},  # list wants aud = issuer
        {"extra_claims": {"exp": 1}},  # expired
    ],
)
def test_bad_agent_token_on_list(api: Api, user: Any, token_kwargs: dict[str, Any]) -> None:
    # spec: §5.2
    host, _ = make_host(user=user)
    agent, key = make_agent(host)
    reply = api.get("/capability/list", token=agent_token(agent, key, **token_kwargs))
    assert_error(reply, 401, "invalid_jwt")


def test_agent_list_spends_the_jti_and_slides_the_session(api: Api, user: Any) -> None:
    # §4.6, §2.4
    host, _ = make_host(user=user)
    agent, key = make_agent(host)
    token = agent_token(agent, key)
    assert api.get("/capability/list", token=token).status == 200
    agent.refresh_from_db()
    assert agent.last_used_at is not None
    assert_error(api.get("/capability/list", token=token), 401, "invalid_jwt")


def test_describe_rejects_unknown_parameters(api: Api) -> None:
    reply = api.get("/capability/describe", name="check_balance", full="1")
    assert_error(reply, 400, "invalid_request")


def test_describe_shows_a_location(api: Api) -> None:
    # spec: §2.12 — ticket.escalate is served by the example project.
    reply = api.get("/capability/describe", name="ticket.escalate")
    assert reply.body["location"] == "http://testserver/support/escalate"
