"""Waiting for an approval on the server's event stream (spec §10.10.2) instead of polling.

The stream is optional: any problem with it (no ``notification_url``, a refusal, a dropped
connection, a stream that ends without an event) returns ``None`` and the caller polls
``GET /agent/status`` as §7.3 requires. The URL carries a host JWT, so it must be on the
issuer's origin and use HTTPS (plain http only where the client allows it).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ClientError
from .http import USER_AGENT, _limited_lines, _opener
from .urls import require_same_origin, require_transport

#: Stream bodies are small (one status body); this also bounds a hostile server.
MAX_STREAM_BYTES = 1024 * 1024
#: The server sends a comment at least every 15 s; a silent connection this long is dead.
READ_TIMEOUT = 45.0


def notification_url(approval: Mapping[str, Any] | None) -> str | None:
    value = approval.get("notification_url") if isinstance(approval, Mapping) else None
    return value if isinstance(value, str) and value else None


def wait_for_event(
    url: str,
    token: str,
    *,
    issuer: str,
    allow_insecure_http: bool,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[str, dict[str, Any]] | None:
    """The first event on ``url`` as ``(name, status body)``, or ``None`` to fall back."""
    try:
        require_transport(url, allow_insecure_http=allow_insecure_http)
        require_same_origin(url, issuer, what="notification_url")
    except ClientError:
        return None
    # Scheme checked by require_transport: only http(s) reaches urllib.
    req = urllib.request.Request(url, method="GET")  # noqa: S310
    req.add_header("Accept", "text/event-stream")
    req.add_header("User-Agent", USER_AGENT)
    req.add_unredirected_header("Authorization", f"Bearer {token}")
    timeout = max(1.0, min(READ_TIMEOUT, deadline - clock()))
    try:
        with _opener.open(req, timeout=timeout) as resp:
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            if resp.status != 200 or content_type != "text/event-stream":
                return None
            return _first_event(_limited_lines(resp, MAX_STREAM_BYTES), deadline, clock)
    except (OSError, ValueError, ClientError):
        return None  # refused (4xx/5xx raise HTTPError, an OSError), dropped or too large


def _first_event(
    lines: Any, deadline: float, clock: Callable[[], float]
) -> tuple[str, dict[str, Any]] | None:
    event, data = "", list[str]()
    for raw in lines:
        if clock() >= deadline:
            return None
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if event and data:
                body = json.loads("\n".join(data))
                return (event, body) if isinstance(body, dict) else None
            event, data = "", list[str]()
        elif line.startswith("event:"):
            event = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:") :].removeprefix(" "))
    return None
