"""Opaque, prefixed, unguessable identifiers (``hst_``, ``agt_``, ``apr_``...)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(18)}"


def host_id() -> str:
    return new_id("hst")


def agent_id() -> str:
    return new_id("agt")


def approval_id() -> str:
    return new_id("apr")


def job_id() -> str:
    return new_id("job")
