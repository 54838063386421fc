"""Runs the registered checks in order against one server, within a time budget."""

from __future__ import annotations

import importlib
import time
from typing import Any

from .approvers import Approver
from .model import REGISTRY, CheckResult, Failed, Outcome, Skipped
from .session import Session

#: Check modules in run order: each builds on state the earlier ones left in the session, and
#: the §5.13 error-format checks judge every error the others provoked, so they come last.
CHECK_MODULES = ("discovery", "registration", "execution", "lifecycle", "error_format")
for _name in CHECK_MODULES:
    importlib.import_module(f"{__package__}.{_name}")

DEFAULT_CAPABILITY = "ticket.read"
DEFAULT_ARGUMENTS: dict[str, Any] = {"ticket_id": "1"}


def run(
    url: str,
    *,
    approver: Approver | None,
    capability: str = DEFAULT_CAPABILITY,
    arguments: dict[str, Any] | None = None,
    timeout: float = 10.0,
    budget: float = 240.0,
    only: str = "",
) -> list[CheckResult]:
    """Every check, in order; none runs once ``budget`` seconds have gone.

    ``only`` keeps checks whose id starts with it, plus the setup checks they rely on.
    """
    session = Session(
        url=url,
        approver=approver,
        capability=capability,
        arguments=DEFAULT_ARGUMENTS if arguments is None else arguments,
        timeout=timeout,
        budget=budget,
    )
    # What a selection still needs: the document, and (past discovery) the agent JWT iss the
    # server accepts.
    setup = {"discovery.published"}
    if not only.startswith("discovery"):
        setup.add("agent_jwt.iss_thumbprint")
    results = []
    for item in REGISTRY:
        if only and not item.id.startswith(only) and item.id not in setup:
            continue
        started = time.monotonic()
        try:
            if session.remaining() <= 1:
                raise Skipped("the run's time budget is used up")
            note = item.func(session)
            outcome, detail = Outcome.PASS, note or ""
        except Failed as exc:
            outcome, detail = Outcome.FAIL, str(exc)
        except Skipped as exc:
            outcome, detail = Outcome.SKIP, str(exc)
        except Exception as exc:  # a checker bug must not hide the other results
            outcome, detail = Outcome.FAIL, f"checker error {type(exc).__name__}: {exc}"
        results.append(
            CheckResult(
                item.id,
                item.section,
                item.level,
                item.title,
                outcome,
                detail,
                time.monotonic() - started,
            )
        )
    return results
