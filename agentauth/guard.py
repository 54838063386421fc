"""Guarding a project's own views with capabilities (spec §2.12 ``location``, §2.15).

The decorator and the DRF classes call ``protect()``, which runs the same verification as the
execute endpoint and hands the view the arguments it checked. The expected ``aud`` is this
view's absolute URL when that URL is some capability's ``location`` (the agent resolved it from
``describe``), else the issuer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest

from . import dpop, execution
from .capabilities import registry
from .conf import app_settings
from .errors import ProtocolError, invalid_request
from .models import CapabilityGrant
from .tokens import VerifiedAgent
from .views.auth import authenticate_agent
from .views.base import read_json_body


def expected_audiences(request: HttpRequest) -> set[str]:
    url = app_settings.ORIGIN + request.path
    if any(cap.location and cap.url == url for cap in registry):
        return {url}
    return {app_settings.ISSUER}


def authenticate(request: HttpRequest) -> VerifiedAgent:
    """The agent behind a guarded view's request: the same verification, metering and
    session slide as the protocol endpoints, with the audiences of this view's URL."""
    return authenticate_agent(request, expected_audiences(request))


def serves_location(request: HttpRequest, names: Sequence[str]) -> bool:
    """Whether this request's URL is the ``location`` of one of ``names``."""
    url = app_settings.ORIGIN + request.path
    caps = (registry.get(name) for name in names)
    return any(cap is not None and bool(cap.location) and cap.url == url for cap in caps)


@dataclass(frozen=True)
class Protected:
    """What a guarded view may rely on: who called, under which grants, with which arguments."""

    verified: VerifiedAgent
    grants: dict[str, CapabilityGrant]
    arguments: dict[str, Any]

    def attach(self, request: HttpRequest) -> None:
        """Set ``request.agent``, ``agent_grants``, ``agent_grant`` and ``agent_arguments``."""
        request.agent = self.verified.agent  # type: ignore[attr-defined]
        request.agent_grants = self.grants  # type: ignore[attr-defined]
        request.agent_grant = next(iter(self.grants.values()))  # type: ignore[attr-defined]
        request.agent_arguments = self.arguments  # type: ignore[attr-defined]


def protect(
    request: HttpRequest,
    names: Sequence[str],
    view_kwargs: Mapping[str, Any],
    verified: VerifiedAgent | None = None,
) -> Protected:
    """The one guard of project views (spec §2.13, §4.5 steps 10-12): what is checked is what
    the view gets.

    The input schema and the constraints of every named capability are checked against one
    argument set, built from everything the view could read (URL kwargs, query string, JSON
    body), and that set is handed to the view as ``request.agent_arguments``. A value that could
    be read elsewhere with another meaning (a repeated query name, a contradiction between
    sources, a body that is not strict JSON) fails the request. Errors are ``ProtocolError``.
    """
    if verified is None:
        verified = authenticate(request)
    try:
        arguments = request_arguments(request, view_kwargs, names)
    except SuspiciousOperation:
        # e.g. TooManyFieldsSent from request.GET: the client's fault.
        raise invalid_request("Malformed request") from None
    grants = authorize(verified, names, arguments)
    return Protected(verified, grants, arguments)


def request_arguments(
    request: HttpRequest, view_kwargs: Mapping[str, Any], names: Sequence[str]
) -> dict[str, Any]:
    """The URL kwargs, query parameters and JSON body members, as one argument set.

    At a capability's own ``location`` a body of the execute contract (``{"capability",
    "arguments"}``, spec §2.15: "the same payload contract") contributes its ``arguments``
    instead of its members. Anywhere else that shape has no meaning: the view acts on its URL,
    so a body's ``arguments`` are never checked in place of it. The body is read like a protocol
    endpoint's (size cap, ``application/json``, strict and depth-limited JSON, an object).
    """
    body = read_json_body(request, allow_empty=True)
    query: dict[str, Any] = {}
    for key in request.GET:
        if len(request.GET.getlist(key)) > 1:
            raise invalid_request(f"Parameter '{key}' is given more than once")
        query[key] = request.GET[key]
    kwargs = {key: _url_value(value) for key, value in view_kwargs.items()}
    contract = set(body) <= {"capability", "arguments"} and "capability" in body
    if contract and serves_location(request, names):
        if body["capability"] not in names:
            raise invalid_request("This location serves a different capability")
        arguments = body.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise invalid_request("'arguments' must be an object")
        return _merge([arguments, kwargs, query])
    return _merge([kwargs, query, body])


def _url_value(value: Any) -> Any:
    """URL converters may produce objects (a ``UUID``); arguments are JSON values."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _merge(sources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One name, one value: ``"1"`` and ``1``, or ``true`` and ``1``, are two values."""
    merged: dict[str, Any] = {}
    for source in sources:
        for key, value in source.items():
            if key in merged and _canonical(merged[key]) != _canonical(value):
                raise invalid_request(f"'{key}' is given two different values")
            merged[key] = value
    return merged


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def authorize(
    verified: VerifiedAgent, names: Sequence[str], arguments: dict[str, Any]
) -> dict[str, CapabilityGrant]:
    """Every named capability must be granted, its input schema must accept the arguments and
    its constraints must hold (spec §4.5 steps 10-12, §2.13)."""
    grants: dict[str, CapabilityGrant] = {}
    for name in names:
        cap = execution.lookup(name, verified)
        try:
            dpop.require_for(cap, verified)
            grants[name] = execution.authorize(verified, cap, arguments)
        except ProtocolError as exc:
            execution.record(verified, name, error=exc)
            raise
    for name in names:
        execution.record(verified, name, mode="view")
    return grants
