"""Unknown paths under the protocol mount answer with a spec error body (§5.13), and the
catch-all shadows nothing of the project's own URLs."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/auth/agent/registerr"),
        ("post", "/api/auth/agent/unknown"),
        ("delete", "/api/auth/no/such/thing"),
        ("put", "/api/auth/"),
        ("options", "/api/auth/capability/run"),
    ],
)
def test_unknown_protocol_path_is_json_404(client: Any, method: str, path: str) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_found"
    assert set(response.json()) == {"error", "message"}


def test_known_path_with_unknown_method_is_still_405(client: Any) -> None:
    response = client.delete("/api/auth/agent/status")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_project_urls_after_the_mount_still_resolve(client: Any) -> None:
    # The support app is included after agentauth.urls in tests/urls.py.
    assert client.get("/support/escalate").status_code != 404
    # And a path outside the mount keeps the project's own 404 page.
    response = client.get("/not-the-protocol")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


@override_settings(ROOT_URLCONF="tests.urls_root_mount")
def test_root_mount_catches_only_protocol_prefixes(client: Any) -> None:
    assert client.get("/shop/basket").content == b"project page"
    assert client.get("/shop/other")["Content-Type"].startswith("text/html")
    response = client.post("/agent/unknown")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert client.get("/.well-known/agent-configuration").status_code == 200
