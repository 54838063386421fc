"""Server-Sent Events for streaming capability execution (spec §5.11, §5.13).

The spec fixes three event types (``data``, ``error``, ``done``), makes ``data`` the default when
no ``event:`` field is sent, and requires clients to stop at ``done`` rather than wait for the
connection to close. A stream that ends without ``done`` is therefore truncated, not finished.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .errors import ClientError

DEFAULT_EVENT = "data"
TERMINAL_EVENT = "done"

SSEEvent = tuple[str, Any]


def _decode_data(lines: list[str]) -> Any:
    """Event data is JSON per §5.11; anything else is passed through as text, empty as ``None``."""
    text = "\n".join(lines)
    if text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_event_stream(lines: Iterable[bytes | str]) -> list[SSEEvent]:
    """Parse an SSE stream into ``(event, data)`` tuples, consuming input only up to ``done``.

    ``lines`` may be an open HTTP response: iteration stops right after the ``done`` event so the
    caller can close the connection as §5.11 requires. Comments (``:``), ``id`` and ``retry``
    fields are ignored, multi-line ``data`` is joined with newlines (WHATWG rules).
    """
    events: list[SSEEvent] = []
    event = ""
    data: list[str] = []
    has_data = False
    for raw in lines:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if line == "":
            if has_data or event:
                name = event or DEFAULT_EVENT
                events.append((name, _decode_data(data)))
                if name == TERMINAL_EVENT:
                    return events
            event, data, has_data = "", [], False
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
            has_data = True
    if event == TERMINAL_EVENT:
        # ``done`` as the very last line without the blank line that dispatches it.
        events.append((TERMINAL_EVENT, _decode_data(data)))
        return events
    raise ClientError(
        "stream_incomplete",
        "event stream ended without a 'done' event; the result may be truncated",
        events=events,
    )
