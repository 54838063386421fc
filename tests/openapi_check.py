"""Checks protocol responses against the OpenAPI document (``agentauth.openapi``).

``tests.conftest.Api`` passes every reply through :func:`check`, so each test that speaks the
protocol also proves that what the server sent is what the document promises: a documented
status, the documented content type and a body valid against the documented schema. (Some tests
provoke a documented ``500 internal_error`` on purpose; the flows of tests/api/test_openapi.py
allow none.)
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

from django.urls import Resolver404, resolve
from jsonschema import Draft202012Validator

from agentauth import openapi

#: Routes the document covers; anything else (pages, the JSON 404 fallback) is not checked.
DOCUMENTED = {op.route: op for op in openapi.OPERATIONS}


@functools.cache
def _validator(ref: str) -> Draft202012Validator:
    root = {"components": {"schemas": openapi.SCHEMAS}, "$ref": ref}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


class SchemaViolation(AssertionError):
    pass


def operation_for(method: str, path: str) -> dict[str, Any] | None:
    """The documented operation for a request, or ``None`` when the route is not documented."""
    try:
        match = resolve(urlsplit(path).path)
    except Resolver404:
        return None
    if match.namespace != "agentauth" or match.url_name not in DOCUMENTED:
        return None
    doc = _document()
    for item in doc["paths"].values():
        op = item.get(method.lower())
        if op is not None and op["operationId"] == match.url_name:
            return dict(op)
    return {}  # routed and documented, but not for this method: only errors are valid


@functools.cache
def _document() -> dict[str, Any]:
    return openapi.document()


def check(method: str, path: str, status: int, content_type: str, body: Any) -> None:
    if method.upper() in ("OPTIONS", "HEAD"):
        return
    op = operation_for(method, path)
    if op is None:
        return
    responses = op.get("responses", {})
    if not responses:
        # A method the route does not serve: only the spec's 405 body is acceptable.
        if status != 405:
            raise SchemaViolation(f"{method} {path}: undocumented method answered {status}")
        schema_ref = "#/components/schemas/Error"
    else:
        if str(status) not in responses:
            raise SchemaViolation(f"{method} {path}: status {status} is not documented")
        media = content_type.split(";")[0].strip()
        content = responses[str(status)]["content"]
        if media not in content:
            raise SchemaViolation(f"{method} {path}: {status} {media} is not documented")
        if media != "application/json":
            return
        schema_ref = content[media]["schema"]["$ref"]
    errors = sorted(_validator(schema_ref).iter_errors(body), key=str)
    if errors:
        details = "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
        raise SchemaViolation(f"{method} {path} -> {status} violates {schema_ref}: {details}")
