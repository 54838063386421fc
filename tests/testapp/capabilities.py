"""Capabilities used by the test suite, modelled on the spec's banking examples.

Handlers only compute from their arguments, so tests can assert on results without fixtures.
"""

from __future__ import annotations

from typing import Any

from agentauth.capabilities import capability


@capability(
    "check_balance",
    description="Check the balance of a bank account",
    approval_strength="none",
    input={
        "type": "object",
        "required": ["account_id"],
        "properties": {
            "account_id": {"type": "string", "description": "The bank account ID to check"},
        },
    },
    output={
        "type": "object",
        "properties": {
            "account_id": {"type": "string"},
            "balance": {"type": "number"},
            "currency": {"type": "string"},
        },
    },
)
def check_balance(ctx: Any, *, account_id: str) -> dict[str, Any]:
    return {"account_id": account_id, "balance": 1234.5, "currency": "USD"}


@capability(
    "transfer",
    description="Transfer money to another account",
    approval_strength="webauthn",
    input={
        "type": "object",
        # ``currency`` is optional so tests can show that a constraint on an absent field fails
        # closed.
        "required": ["amount", "to"],
        "properties": {
            "amount": {"type": "number"},
            "currency": {"type": "string"},
            "to": {"type": "string"},
        },
    },
)
def transfer(ctx: Any, *, amount: float, to: str, currency: str = "USD") -> dict[str, Any]:
    return {"status": "completed", "amount": amount, "currency": currency, "to": to}


@capability(
    "read_only_note",
    description="Read a fixed note; takes no arguments",
    approval_strength="none",
)
def read_only_note(ctx: Any) -> dict[str, Any]:
    return {"note": "hello from the test app"}


@capability(
    "close_account",
    description="Close a bank account",
    approval_strength="session",
    public=False,
    input={
        "type": "object",
        "required": ["account_id"],
        "properties": {"account_id": {"type": "string"}},
    },
)
def close_account(ctx: Any, *, account_id: str) -> dict[str, Any]:
    user = getattr(ctx, "user", None)
    return {
        "account_id": account_id,
        "closed": True,
        "closed_for": getattr(user, "username", None),
    }


# --- execution modes and failure paths -------------------------------------------------


@capability(
    "slow_report",
    description="Build a report asynchronously",
    approval_strength="none",
    mode="async",
    input={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
)
def slow_report(ctx: Any, *, n: int) -> dict[str, Any]:
    return {"total": n * 2}


@capability(
    "failing_job",
    description="An asynchronous job that fails",
    approval_strength="none",
    mode="async",
)
def failing_job(ctx: Any) -> None:
    raise ValueError("the report source is unavailable")


@capability(
    "count_up",
    description="Stream the numbers below n",
    approval_strength="none",
    mode="stream",
    input={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
)
def count_up(ctx: Any, *, n: int) -> Any:
    for i in range(n):
        yield {"i": i}


@capability(
    "broken_stream",
    description="A stream that fails midway",
    approval_strength="none",
    mode="stream",
)
def broken_stream(ctx: Any) -> Any:
    yield {"i": 0}
    raise RuntimeError("lost the upstream")


@capability("explode", description="Fails unexpectedly", approval_strength="none")
def explode(ctx: Any) -> None:
    raise RuntimeError("internal details that must not leak")


@capability("over_limit", description="Always over its limit", approval_strength="none")
def over_limit(ctx: Any) -> None:
    from agentauth.errors import ProtocolError

    raise ProtocolError("limit_exceeded", "Daily limit reached")


@capability(
    "capped_transfer",
    description="Transfer, capped by server policy",
    approval_strength="none",
    constraints={"amount": {"max": 10000}},
    input={"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]},
)
def capped_transfer(ctx: Any, *, amount: float) -> dict[str, Any]:
    return {"sent": amount, "by": ctx.agent.pk}


# --- more failure paths (tests/api/test_execute_async.py, tests/api/test_execute.py) ---------
# Not public, so they never appear in anonymous listings that other tests compare.


@capability(
    "missing_record",
    description="Looks up a record that does not exist",
    approval_strength="none",
    public=False,
)
def missing_record(ctx: Any) -> None:
    raise LookupError("No record with that id")


@capability(
    "write_then_fail",
    description="Writes an audit row, then fails",
    approval_strength="none",
    public=False,
)
def write_then_fail(ctx: Any) -> None:
    from agentauth import audit

    audit.record("test.side_effect", actor_type="agent", agent=ctx.agent)
    raise RuntimeError("failed after writing")


@capability(
    "non_json_report",
    description="An asynchronous job whose result is not JSON",
    approval_strength="none",
    public=False,
    mode="async",
)
def non_json_report(ctx: Any) -> set[int]:
    return {1, 2}


@capability(
    "non_json_stream",
    description="A stream whose second chunk is not JSON",
    approval_strength="none",
    public=False,
    mode="stream",
)
def non_json_stream(ctx: Any) -> Any:
    yield {"i": 0}
    yield {1, 2}
    yield {"i": 2}


@capability(
    "non_json_sync",
    description="A sync capability that writes, then returns data that is not JSON",
    approval_strength="none",
    public=False,
)
def non_json_sync(ctx: Any) -> set[int]:
    from agentauth import audit

    audit.record("test.side_effect", actor_type="agent", agent=ctx.agent)
    return {1, 2}
