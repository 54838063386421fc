"""An agent's clocks (spec §2.4): session TTL, max lifetime, absolute lifetime.

Deadlines are stored on the agent when they are set: ``absolute_expires_at`` at creation,
``expires_at`` at activation and on use. The per-request check and the periodic sweep read the
same stored deadlines, so they can never disagree about an agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from . import agents, audit, signals
from .conf import app_settings
from .models import TERMINAL_AGENT_STATES, Agent, AgentStatus

REASON_ABSOLUTE_LIFETIME = "absolute_lifetime"


@dataclass(frozen=True)
class Clocks:
    session_ttl: int | None
    max_lifetime: int | None
    absolute_lifetime: int | None


def clocks_for(agent: Agent) -> Clocks:
    """The three clocks for this agent: settings, then the ``AGENTAUTH_AGENT_CLOCKS`` hook."""
    values: dict[str, int | None] = {
        "session_ttl": app_settings.SESSION_TTL,
        "max_lifetime": app_settings.MAX_LIFETIME,
        "absolute_lifetime": app_settings.ABSOLUTE_LIFETIME,
    }
    if app_settings.AGENT_CLOCKS:
        overrides = import_string(app_settings.AGENT_CLOCKS)(agent) or {}
        values.update({k: v for k, v in overrides.items() if k in values})
    return Clocks(**{k: (int(v) if v else None) for k, v in values.items()})


def set_absolute_deadline(agent: Agent) -> None:
    """Fix the absolute end at creation (spec §2.4: counted from creation, never reset)."""
    absolute = clocks_for(agent).absolute_lifetime
    agent.absolute_expires_at = agent.created_at + timedelta(seconds=absolute) if absolute else None


def session_expires_at(agent: Agent) -> datetime | None:
    """When the session ends if the agent stays idle (§2.4)."""
    clocks = clocks_for(agent)
    anchor = agent.activated_at or agent.created_at
    deadlines = [d for d in (agent.absolute_expires_at,) if d is not None]
    if clocks.session_ttl:
        deadlines.append((agent.last_used_at or anchor) + timedelta(seconds=clocks.session_ttl))
    if clocks.max_lifetime:
        deadlines.append(anchor + timedelta(seconds=clocks.max_lifetime))
    return min(deadlines) if deadlines else None


def _lifetime_over(agent: Agent, now: datetime) -> bool:
    return agent.absolute_expires_at is not None and now >= agent.absolute_expires_at


def _session_over(agent: Agent, now: datetime) -> bool:
    return (
        agent.status == AgentStatus.ACTIVE
        and agent.expires_at is not None
        and (now >= agent.expires_at)
    )


def transition_due(agent: Agent, now: datetime) -> bool:
    """Whether :func:`evaluate_clocks` would change a live ``agent`` now (without changing it)."""
    return _lifetime_over(agent, now) or _session_over(agent, now)


def evaluate_clocks(agent: Agent, now: datetime | None = None) -> None:
    """Apply the clocks to ``agent`` now, persisting any transition (§2.4).

    Runs on every authenticated request so an overdue agent is refused even if no sweep ran.
    """
    now = now or timezone.now()
    if agent.status in TERMINAL_AGENT_STATES:
        return
    if _lifetime_over(agent, now):
        agents.revoke_agent(agent, actor_type="system", reason=REASON_ABSOLUTE_LIFETIME)
        return
    if _session_over(agent, now):
        changed = Agent.objects.filter(pk=agent.pk, status=AgentStatus.ACTIVE).update(
            status=AgentStatus.EXPIRED, updated_at=now
        )
        agent.status = AgentStatus.EXPIRED
        if changed:
            audit.record("agent.expired", actor_type="system", agent=agent)
            transaction.on_commit(lambda: signals.agent_expired.send(sender=Agent, agent=agent))


def touch(agent: Agent, now: datetime | None = None) -> None:
    """Record an authenticated agent request: slides the session TTL (§2.4).

    The write is skipped while the last one is fresher than a tenth of the TTL (at most 30 s):
    the session still slides, and a busy agent costs one write per window, not per call.
    """
    now = now or timezone.now()
    ttl = clocks_for(agent).session_ttl or 300
    if agent.last_used_at is not None and (now - agent.last_used_at).total_seconds() < min(
        30, ttl / 10
    ):
        return
    agent.last_used_at = now
    agent.expires_at = session_expires_at(agent)
    Agent.objects.filter(pk=agent.pk, status=AgentStatus.ACTIVE).update(
        last_used_at=now, expires_at=agent.expires_at
    )


def activate(agent: Agent, now: datetime) -> None:
    """Start (or restart) the session and max-lifetime clocks; never the absolute one."""
    agent.status = AgentStatus.ACTIVE
    agent.activated_at = now
    agent.last_used_at = None
    agent.expires_at = session_expires_at(agent)
