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

from . import execution, lifecycle, ratelimit
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
    lifecycle.touch(verified.agent)
    return verified


def request_arguments(
    request: HttpRequest, view_kwargs: Mapping[str, Any], names: Sequence[str]
) -> tuple[dict[str, Any], bool]:
    """The arguments constraints are checked against, and whether the body used the execute
    contract (``{"capability", "arguments"}``, spec §2.15: "the same payload contract").

    Otherwise they are the URL kwargs, query parameters and a JSON object body, merged; one name
    given two different values is refused, so a constraint cannot be dodged by repetition.
    """
    body: Any = None
    if request.content_type == "application/json" and request.body:
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise invalid_request("Body is not valid JSON") from None
    if isinstance(body, dict) and set(body) <= {"capability", "arguments"} and "capability" in body:
        if body["capability"] not in names:
            raise invalid_request("This location serves a different capability")
        arguments = body.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise invalid_request("'arguments' must be an object")
        return arguments, True
    merged: dict[str, Any] = {}
    sources: list[Mapping[str, Any]] = [view_kwargs]
    sources.append({k: request.GET.getlist(k) for k in request.GET})
    if isinstance(body, dict):
        sources.append(body)
    for source in sources:
        for key, value in source.items():
            if isinstance(value, list) and source is sources[1]:
                if len(set(value)) > 1:
                    raise invalid_request(f"Parameter '{key}' is given more than once")
                value = value[0]
            if key in merged and merged[key] != value:
                raise invalid_request(f"'{key}' is given two different values")
            merged[key] = value
    return merged, False


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
