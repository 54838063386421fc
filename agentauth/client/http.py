"""Minimal JSON-over-HTTP on the standard library, so the client installs with no HTTP dependency.

Two choices differ from plain ``urllib``:

* 4xx/5xx responses are returned, not raised: protocol errors are data (``{"error","message"}``)
  that :func:`raise_for_error` turns into :class:`~agentauth.errors.ProtocolError`.
* Redirects are limited to 3 (§8.12), never downgrade ``https`` to ``http``, and carry the
  ``Authorization`` header only to the same origin, so a redirect cannot leak a JWT.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

from agentauth.errors import ProtocolError

from .errors import ClientError
from .sse import parse_event_stream
from .urls import origin, same_origin

#: §8.12 suggests capping client-side response bodies; 10 MiB also covers large capability output.
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_REDIRECTS = 3
USER_AGENT = "django-agentauth-client/0.1"
#: Members of an error body that are not passed on as ``ProtocolError.extra``.
_RESERVED_ERROR_KEYS = frozenset({"error", "message", "status", "headers", "code"})


@dataclass(frozen=True)
class Response:
    """An HTTP response. ``headers`` keys are lower-case; ``body`` is parsed JSON when the
    response is JSON, a list of ``(event, data)`` tuples for ``text/event-stream``, text for
    anything else, and ``None`` when empty."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        scheme = origin(newurl)[0]
        downgrade = origin(req.full_url)[0] == "https" and scheme != "https"
        if scheme not in ("http", "https") or downgrade:
            return None  # the 3xx is then returned to the caller as-is
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and same_origin(req.full_url, newurl):
            new.add_unredirected_header("Authorization", auth)
        return new


_opener = urllib.request.build_opener(_Redirects())


def _with_query(url: str, query: Mapping[str, Any] | None) -> str:
    params = {k: v for k, v in (query or {}).items() if v is not None}
    if not params:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _read_limited(fp: IO[bytes], max_bytes: int) -> bytes:
    data = fp.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ClientError("response_too_large", f"response body exceeds {max_bytes} bytes")
    return data


def _limited_lines(fp: IO[bytes], max_bytes: int) -> Iterator[bytes]:
    total = 0
    while True:
        line = fp.readline(max_bytes + 1)
        if not line:
            return
        total += len(line)
        if total > max_bytes:
            raise ClientError("response_too_large", f"event stream exceeds {max_bytes} bytes")
        yield line


def _decode(data: bytes, content_type: str) -> Any:
    if not data:
        return None
    text = data.decode("utf-8", errors="replace")
    if "json" in content_type or not content_type:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _response(status: int, raw_headers: Any, fp: IO[bytes] | None, max_bytes: int) -> Response:
    headers: dict[str, str] = {}
    for key, value in raw_headers.items() if raw_headers is not None else ():
        k = key.lower()
        headers[k] = f"{headers[k]}, {value}" if k in headers else value
    resp = Response(status, headers)
    if fp is None:
        return resp
    if resp.ok and resp.content_type == "text/event-stream":
        return Response(status, headers, parse_event_stream(_limited_lines(fp, max_bytes)))
    return Response(status, headers, _decode(_read_limited(fp, max_bytes), resp.content_type))


def request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    json_body: Any = None,
    query: Mapping[str, Any] | None = None,
    timeout: float = 10,
    headers: Mapping[str, str] | None = None,
    max_bytes: int = MAX_BODY_BYTES,
    scheme: str = "Bearer",
) -> Response:
    """Send one request and return the response, whatever its status.

    ``token`` becomes ``Authorization: <scheme> <token>`` (``Bearer``, or ``DPoP``). Network
    failures raise :class:`ClientError` (``network_error``) so callers only ever handle
    ``ProtocolError``.
    """
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ClientError("untrusted_url", f"only http(s) URLs are fetched, not {url!r}")
    data = None if json_body is None else json.dumps(json_body).encode("utf-8")
    # Scheme checked just above, so no file:// or ftp:// can reach urllib.
    req = urllib.request.Request(  # noqa: S310
        _with_query(url, query), data=data, method=method.upper()
    )
    req.add_header("Accept", "application/json")
    req.add_header("User-Agent", USER_AGENT)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    if token is not None:
        # Unredirected: only _Redirects may carry it on, and only to the same origin.
        req.add_unredirected_header("Authorization", f"{scheme} {token}")
    try:
        with _opener.open(req, timeout=timeout) as resp:
            return _response(resp.status, resp.headers, resp, max_bytes)
    except urllib.error.HTTPError as exc:
        try:
            return _response(exc.code, exc.headers, exc.fp, max_bytes)
        finally:
            if exc.fp is not None:
                exc.close()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClientError("network_error", f"{method.upper()} {url} failed: {reason}") from exc


def raise_for_error(resp: Response) -> Response:
    """Return ``resp`` if it is 2xx; otherwise raise its error as a ``ProtocolError``.

    Bodies in the §5.13 shape keep their code, message and extra members (``violations``,
    ``invalid_capabilities``...). Other failures fall back to the HTTP status (``http_<status>``),
    as §5.13 tells clients to do for codes they do not know.
    """
    if resp.ok:
        return resp
    body = resp.body
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body.get("message")
        extra = {k: v for k, v in body.items() if k not in _RESERVED_ERROR_KEYS}
        raise ProtocolError(
            body["error"],
            message if isinstance(message, str) else None,
            status=resp.status,
            headers=resp.headers,
            **extra,
        )
    detail = body if isinstance(body, str) and body else f"HTTP {resp.status}"
    raise ProtocolError(
        f"http_{resp.status}", detail[:500], status=resp.status, headers=resp.headers
    )


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or ``None``.

    ``headers`` must have lower-case keys, as :attr:`Response.headers` and the headers of a
    ``ProtocolError`` raised by :func:`raise_for_error` do.
    """
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
