"""Shared fixtures. Host/agent fixtures built on agentauth.testing come with those modules."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def user(django_user_model: Any) -> Any:
    """A regular, signed-up user who can approve agents for herself."""
    return django_user_model.objects.create_user(
        username="alice", email="alice@example.com", password="alice-password"
    )


@pytest.fixture
def staff_user(django_user_model: Any) -> Any:
    """A staff member (admin site access, no superuser powers)."""
    return django_user_model.objects.create_user(
        username="sam", email="sam@example.com", password="sam-password", is_staff=True
    )
