"""GET /.well-known/agent-configuration (spec §5.1, §6.2.3, §6.11)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ISSUER

SPEC_KEYS = {
    "register",
    "capabilities",
    "describe_capability",
    "execute",
    "request_capability",
    "status",
    "reactivate",
    "revoke",
    "revoke_host",
    "rotate_key",
    "rotate_host_key",
    "introspect",
}


@pytest.mark.parametrize(
    "path", ["/.well-known/agent-configuration", "/api/auth/.well-known/agent-configuration"]
)
def test_discovery_document(client: Any, path: str) -> None:
    # spec: §5.1, §6.2.3
    response = client.get(path)
    assert response.status_code == 200
    doc = response.json()
    assert doc["version"] == "1.0-draft"
    assert doc["issuer"] == ISSUER
    assert doc["default_location"] == ISSUER + "/capability/execute"
    assert doc["algorithms"] == ["Ed25519"]
    assert doc["modes"] == ["delegated", "autonomous"]
    assert "device_authorization" in doc["approval_methods"]
    assert isinstance(doc["provider_name"], str) and isinstance(doc["description"], str)
    assert "jwks_uri" not in doc


def test_endpoints_are_relative_paths_of_routed_views(client: Any) -> None:
    # spec: §5.1, §5 — every advertised endpoint answers under the issuer.
    endpoints = client.get("/.well-known/agent-configuration").json()["endpoints"]
    assert set(endpoints) <= SPEC_KEYS
    assert {"register", "status", "revoke", "revoke_host"} <= set(endpoints)
    assert endpoints["register"] == "/agent/register"
    assert endpoints["revoke_host"] == "/host/revoke"
    for path in endpoints.values():
        assert path.startswith("/") and "://" not in path
        response = client.options(ISSUER.removeprefix("http://testserver") + path)
        assert response.status_code != 404, path


def test_discovery_is_cacheable(client: Any) -> None:
    # spec: §10.5
    response = client.get("/.well-known/agent-configuration")
    assert response.headers["Cache-Control"] == "public, max-age=3600"


def test_discovery_reads_settings_live(client: Any, settings: Any) -> None:
    settings.AGENTAUTH_PROVIDER_NAME = "support-api"
    settings.AGENTAUTH_JWKS_URI = "https://example.test/jwks.json"
    settings.AGENTAUTH_MODES = ["delegated"]
    doc = client.get("/.well-known/agent-configuration").json()
    assert doc["provider_name"] == "support-api"
    assert doc["jwks_uri"] == "https://example.test/jwks.json"
    assert doc["modes"] == ["delegated"]


def test_discovery_rejects_other_methods_with_a_spec_body(client: Any) -> None:
    # spec: §5.13
    response = client.post(
        "/.well-known/agent-configuration", data="{}", content_type="application/json"
    )
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_malformed_rate_limits_are_a_system_check_error(settings: Any) -> None:
    from agentauth.checks import check_rate_limits

    settings.AGENTAUTH_RATE_LIMITS = {"agent": "lots", "nope": "1/minute"}
    ids = {e.id for e in check_rate_limits()}
    assert ids == {"agentauth.E031", "agentauth.E032"}
    settings.AGENTAUTH_RATE_LIMITS = {"agent": "10/minute", "ip": None}
    assert check_rate_limits() == []
