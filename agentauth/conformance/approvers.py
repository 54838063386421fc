"""How a person's approval is obtained during a run: a command the operator supplies, or none.

The checker cannot be a person, so each server needs its own approver: for django-agentauth
``manage.py agentauth_approve`` (the operator path), for the reference server a script that signs
in and calls its approval endpoint (both in ``docs/conformance/approvers/``).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable

#: ``approve(agent_id, user_code, verification_uri)``; raises :class:`ApprovalFailed`.
Approver = Callable[[str, str, str], None]

PLACEHOLDERS = ("{agent_id}", "{user_code}", "{verification_uri}")


class ApprovalFailed(Exception):
    pass


def command_approver(template: str, *, timeout: float = 60.0) -> Approver:
    """An approver that runs ``template`` with the placeholders filled in.

    The template is split like a shell line but never run by a shell, and placeholders are
    replaced inside the split words, so a hostile ``user_code`` from the server under test
    cannot inject a command.
    """
    words = shlex.split(template)
    if not words:
        raise ValueError("--approver: empty command")

    def approve(agent_id: str, user_code: str, verification_uri: str) -> None:
        values = dict(zip(PLACEHOLDERS, (agent_id, user_code, verification_uri), strict=True))
        argv = []
        for word in words:
            for placeholder, value in values.items():
                word = word.replace(placeholder, value)
            argv.append(word)
        try:
            done = subprocess.run(  # noqa: S603 - the operator's own command, no shell
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ApprovalFailed(f"approver {argv[0]!r} did not run: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-300:]
            raise ApprovalFailed(f"approver exited {done.returncode}: {tail}")

    return approve
