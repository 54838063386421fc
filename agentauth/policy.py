"""Grant policy: what may be granted without a person, and for how long (spec §8.10, §3.3)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string

from .capabilities import Capability
from .conf import app_settings
from .models import Agent, AgentMode, Host


def auto_approvable(host: Host, mode: str, cap: Capability) -> bool:
    """May this capability be granted without a person? (spec §8.10: calibrate to risk).

    Only ``approval_strength="none"``, and only within the linked host's defaults (delegated) or
    the autonomous policy list (unlinked host, §2.8).
    """
    if cap.approval_strength != "none":
        return False
    if mode == AgentMode.DELEGATED:
        return host.user_id is not None and cap.name in (host.default_capabilities or [])
    policy = app_settings.AUTONOMOUS_AUTO_APPROVE
    return host.user_id is None and policy is not None and cap.name in policy


def grant_expiry(capability: str, agent: Agent, now: Any = None) -> Any:
    """When a grant activated now ends (``AGENTAUTH_GRANT_TTL`` hook), or ``None``."""
    if not app_settings.GRANT_TTL:
        return None
    seconds = import_string(app_settings.GRANT_TTL)(capability, agent)
    return (now or timezone.now()) + timedelta(seconds=int(seconds)) if seconds else None
