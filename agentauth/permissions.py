"""DRF permissions: the agent must hold the view's capabilities, within their constraints."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .extras import missing_message

try:
    from rest_framework.permissions import BasePermission
    from rest_framework.request import Request
except ImportError as exc:  # the [drf] extra
    raise ImportError(
        missing_message("rest_framework", "agentauth.permissions (DRF permissions)")
    ) from exc

from . import guard
from .authentication import AgentAuthError
from .errors import ProtocolError
from .tokens import VerifiedAgent

logger = logging.getLogger("agentauth")


class HasCapability(BasePermission):
    """Reads ``view.required_capabilities`` (like DOT's ``required_scopes``).

    The view reads its arguments from ``request.agent_arguments`` only, never from
    ``request.data`` or ``request.query_params`` directly (see ``guard.protect``).
    """

    required: Sequence[str] | None = None

    def names(self, view: Any) -> tuple[str, ...]:
        names = self.required or getattr(view, "required_capabilities", None)
        if not names or isinstance(names, str):
            raise ImproperlyConfigured(
                f"{type(view).__name__} needs required_capabilities = ['name', ...] "
                "to use HasCapability"
            )
        return tuple(names)

    def has_permission(self, request: Request, view: Any) -> bool:
        names = self.names(view)
        verified = request.auth
        if not isinstance(verified, VerifiedAgent):
            if request.successful_authenticator is None:
                # DRF would answer {"detail": ...}; agents get the spec's body (§5.13), like
                # the plain decorator, and the challenge header (401 adds it, §5.14).
                raise AgentAuthError(
                    ProtocolError("invalid_jwt", "Missing Authorization: Bearer <jwt> header")
                )
            return False
        try:
            protected = guard.protect(
                request._request, names, getattr(view, "kwargs", {}), verified=verified
            )
        except ProtocolError as exc:
            raise AgentAuthError(exc) from exc
        except Exception as exc:
            logger.exception("agentauth: guard failed on %s", request.path)
            raise AgentAuthError(ProtocolError("internal_error")) from exc
        # Set on the Django request, so that DRF's request reads them through to it.
        protected.attach(request._request)
        return True


def capability_required(*names: str) -> type[HasCapability]:
    """``permission_classes = [capability_required("ticket.read")]``."""
    if not names:
        raise TypeError("capability_required() needs one or more capability names")
    return type("CapabilityRequired", (HasCapability,), {"required": tuple(names)})
