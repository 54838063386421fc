"""Guarding a project's own views with capabilities (spec §2.12 ``location``, §2.15).

The decorator and the DRF classes call these functions, which run the same verification as the
execute endpoint. The expected ``aud`` is this view's absolute URL when that URL is some
capability's ``location`` (the agent resolved it from ``describe``), else the issuer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from django.http import HttpRequest

from . import clocks, execution, ratelimit
from .capabilities import registry
from .conf import app_settings
from .errors import ProtocolError, invalid_request
from .models import CapabilityGrant
from .tokens import VerifiedAgent, bearer_token, verify_agent_jwt


def expected_audiences(request: HttpRequest) -> set[str]:
    url = app_settings.ORIGIN + request.path
    if any(cap.location and cap.url == url for cap in registry):
        return {url}
    return {app_settings.ISSUER}


def authenticate(request: HttpRequest) -> VerifiedAgent:
    verified = verify_agent_jwt(bearer_token(request), audiences=expected_audiences(request))
    ratelimit.hit("agent", verified.agent.pk)
    clocks.touch(verified.agent)
    return verified


def serves_location(request: HttpRequest, names: Sequence[str]) -> bool:
    """Whether this request's URL is the ``location`` of one of ``names``."""
    url = app_settings.ORIGIN + request.path
    caps = (registry.get(name) for name in names)
    return any(cap is not None and bool(cap.location) and cap.url == url for cap in caps)


def request_arguments(
    request: HttpRequest, view_kwargs: Mapping[str, Any], names: Sequence[str]
) -> tuple[dict[str, Any], bool]:
    """The arguments constraints are checked against, and whether the body used the execute
    contract (``{"capability", "arguments"}``, spec §2.15: "the same payload contract").

    The contract is honoured only at a capability's own ``location``: anywhere else the view
    acts on its URL kwargs and query, so checking a body's ``arguments`` instead would let an
    agent state one ticket and act on another. Otherwise the arguments are the URL kwargs, query
    parameters and a JSON object body, merged; one name given two different values is refused,
    so a constraint cannot be dodged by repetition.
    """
    body: Any = None
    if request.content_type == "application/json" and request.body:
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise invalid_request("Body is not valid JSON") from None
    query: dict[str, Any] = {}
    for key in request.GET:
        values = request.GET.getlist(key)
        if len(set(values)) > 1:
            raise invalid_request(f"Parameter '{key}' is given more than once")
        query[key] = values[0]
    if (
        isinstance(body, dict)
        and set(body) <= {"capability", "arguments"}
        and "capability" in body
        and serves_location(request, names)
    ):
        if body["capability"] not in names:
            raise invalid_request("This location serves a different capability")
        arguments = body.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise invalid_request("'arguments' must be an object")
        _merge([arguments, view_kwargs, query])  # the URL may not contradict the arguments
        return arguments, True
    return _merge([view_kwargs, query, body if isinstance(body, dict) else {}]), False


def _merge(sources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for source in sources:
        for key, value in source.items():
            if key in merged and merged[key] != value:
                raise invalid_request(f"'{key}' is given two different values")
            merged[key] = value
    return merged


def authorize(
    verified: VerifiedAgent,
    names: Sequence[str],
    arguments: dict[str, Any],
    *,
    validate_schema: bool,
) -> dict[str, CapabilityGrant]:
    """Every named capability must be granted, and its constraints must hold (spec §4.5)."""
    grants: dict[str, CapabilityGrant] = {}
    for name in names:
        cap = execution.lookup(name, verified)
        try:
            grants[name] = execution.authorize(verified, cap, arguments, schema=validate_schema)
        except ProtocolError as exc:
            execution.record(verified, name, error=exc)
            raise
    for name in names:
        execution.record(verified, name, mode="view")
    return grants
