"""Client-side failures, as a subclass of the shared :class:`~agentauth.errors.ProtocolError`.

Callers catch one exception type for everything that goes wrong. Errors the server sent keep the
server's code and HTTP status; errors the client detects itself (unsupported version, untrusted
``status_url``, timeouts, network failures) use :class:`ClientError`, whose ``status`` is ``0``
because no HTTP response carried them.
"""

from __future__ import annotations

from typing import Any

from agentauth.errors import ProtocolError


class ClientError(ProtocolError):
    """A failure detected by the client rather than reported by the server."""

    def __init__(self, code: str, message: str | None = None, **extra: Any) -> None:
        super().__init__(code, message or code, **extra)
        self.status = 0
