"""Capabilities of the fault tier's server: an async job, so jobs can be lost and found."""

from __future__ import annotations

from typing import Any

from agentauth.capabilities import capability


@capability(
    "faults.tally",
    description="Add two numbers, later (an async job)",
    approval_strength="none",
    mode="async",
    input={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
def tally(ctx: Any, *, a: int, b: int) -> dict[str, Any]:
    return {"sum": a + b}
