"""§5.1 discovery document checks: presence, every field's type, caching."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .model import Failed, Level, Skipped, check, require
from .session import DISCOVERY_PATH, Session

MUST, SHOULD = Level.MUST, Level.SHOULD
VERSION = re.compile(r"^(\d+)\.(\d+)(-draft)?$")


def _candidates(url: str) -> list[str]:
    """The document under the given URL first, then under its origin (where §5.1 puts it)."""
    url = url.rstrip("/")
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return list(dict.fromkeys([url + DISCOVERY_PATH, origin + DISCOVERY_PATH]))


@check("discovery.published", "§5.1", SHOULD, "GET /.well-known/agent-configuration returns JSON")
def published(s: Session) -> str | None:
    problems = []
    for url in _candidates(s.url):
        resp = s.call("GET", url)
        if resp.ok and isinstance(resp.body, dict):
            s.discovery, s.discovery_headers = resp.body, resp.headers
            return f"found at {url}"
        problems.append(f"{url}: {resp.status}")
    s.discovery_problem = "; ".join(problems)
    raise Failed(s.discovery_problem)


def _field(name: str, kind: str, required: bool) -> None:
    def run(s: Session) -> str | None:
        doc = s.doc()
        if name not in doc:
            if required:
                raise Failed(f"'{name}' is missing")
            raise Skipped(f"optional '{name}' not published")
        value = doc[name]
        if kind == "string":
            require(isinstance(value, str) and value, f"'{name}' is {value!r}, not a string")
        elif kind == "string[]":
            require(
                isinstance(value, list) and value and all(isinstance(v, str) for v in value),
                f"'{name}' is {value!r}, not a non-empty array of strings",
            )
        elif kind == "object":
            require(
                isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
                f"'{name}' is {value!r}, not an object of endpoint strings",
            )
        elif kind == "url":
            require(
                isinstance(value, str) and urlsplit(value).scheme in ("http", "https"),
                f"'{name}' is {value!r}, not an absolute URL",
            )
        return None

    word = "required" if required else "optional"
    check(f"discovery.field.{name}", "§5.1", MUST, f"'{name}' ({word}) is a {kind}")(run)


for _name, _kind, _required in [
    ("version", "string", True),
    ("provider_name", "string", True),
    ("description", "string", True),
    ("issuer", "url", True),
    ("default_location", "url", False),
    ("algorithms", "string[]", True),
    ("modes", "string[]", True),
    ("approval_methods", "string[]", True),
    ("endpoints", "object", True),
    ("jwks_uri", "url", False),
]:
    _field(_name, _kind, _required)


@check("discovery.version", "§5.1.1", MUST, "'version' is MAJOR.MINOR[-draft] with major 1")
def version(s: Session) -> str | None:
    value = s.doc().get("version")
    match = VERSION.match(value) if isinstance(value, str) else None
    require(match, f"'version' is {value!r}")
    assert match is not None
    require(match.group(1) == "1", f"major version {match.group(1)} is not 1")
    return None


@check("discovery.ed25519", "§4.1", MUST, "'algorithms' lists Ed25519")
def ed25519(s: Session) -> str | None:
    require("Ed25519" in (s.doc().get("algorithms") or []), "Ed25519 is not listed")
    return None


@check("discovery.modes", "§5.1", MUST, "'modes' holds only delegated/autonomous")
def modes(s: Session) -> str | None:
    values = s.doc().get("modes") or []
    odd = [m for m in values if m not in ("delegated", "autonomous")]
    require(not odd, f"unknown modes {odd}")
    return None


@check("discovery.endpoints", "§5.1", MUST, "'endpoints' names register, status and execute")
def endpoints(s: Session) -> str | None:
    published: Any = s.doc().get("endpoints") or {}
    missing = [n for n in ("register", "status", "execute") if n not in published]
    require(not missing, f"missing {missing}")
    return None


@check("discovery.cache_control", "§5.1", SHOULD, "discovery carries Cache-Control")
def cache_control(s: Session) -> str | None:
    s.doc()
    value = s.discovery_headers.get("cache-control")
    require(value, "no Cache-Control header")
    return value
