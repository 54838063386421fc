"""§5.13: every error the run provoked must have the ``{"error", "message"}`` shape."""

from __future__ import annotations

import re

from .model import Level, Skipped, check, require
from .session import Session

MUST = Level.MUST

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


@check("errors.shape", "§5.13", MUST, "every error body is {error: snake_case, message: string}")
def shape(s: Session) -> str | None:
    if not s.errors:
        raise Skipped("the run provoked no error responses")
    bad = []
    for seen in s.errors:
        body = seen.body
        ok = (
            isinstance(body, dict)
            and isinstance(body.get("error"), str)
            and SNAKE.match(body["error"])
            and isinstance(body.get("message"), str)
        )
        if not ok:
            bad.append(f"{seen.what} {seen.status}: {str(body)[:120]!r}")
    require(not bad, f"{len(bad)} of {len(s.errors)} errors: " + "; ".join(sorted(set(bad))[:6]))
    return f"{len(s.errors)} error bodies checked"


@check("errors.no_5xx", "§5.13", MUST, "no request of the run got a 5xx")
def no_5xx(s: Session) -> str | None:
    if not s.answers:
        raise Skipped("the server answered no request")
    bad = sorted({f"{e.what} {e.status}" for e in s.errors if e.status >= 500})
    require(not bad, "; ".join(bad))
    return None
