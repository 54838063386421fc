"""What a check is and what it yields: the vocabulary shared by checks, runner and reports."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import Session


class Level(enum.StrEnum):
    MUST = "MUST"
    SHOULD = "SHOULD"


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


class Failed(Exception):
    """Raised by a check whose rule the server broke; the message says how."""


class Skipped(Exception):
    """Raised by a check that could not run (no approver, capability missing...)."""


@dataclass(frozen=True)
class Check:
    id: str
    section: str
    level: Level
    title: str
    func: Callable[[Session], str | None]


@dataclass(frozen=True)
class CheckResult:
    id: str
    section: str
    level: Level
    title: str
    outcome: Outcome
    detail: str
    seconds: float


#: Every check in the order it runs; modules append to it at import through :func:`check`.
REGISTRY: list[Check] = []


def check(
    id: str, section: str, level: Level, title: str
) -> Callable[[Callable[[Session], str | None]], Callable[[Session], str | None]]:
    """Register a check. It passes by returning (optionally a note), fails by raising
    :class:`Failed` and is skipped by raising :class:`Skipped`."""

    def register(func: Callable[[Session], str | None]) -> Callable[[Session], str | None]:
        REGISTRY.append(Check(id, section, level, title, func))
        return func

    return register


def require(condition: object, message: str) -> None:
    if not condition:
        raise Failed(message)
