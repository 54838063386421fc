"""System checks: misconfiguration is reported at start-up, not discovered in production."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .capabilities import registry
from .conf import app_settings


@register(Tags.security, deploy=False)
def check_issuer(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    raw = getattr(settings, "AGENTAUTH_ISSUER", None)
    if not raw:
        level = Warning if settings.DEBUG else Error
        return [
            level(
                "AGENTAUTH_ISSUER is not set.",
                hint="Set it to the absolute base URL the protocol endpoints are served under, "
                "e.g. 'https://api.example.com/agent-auth'. It is never derived from the "
                "Host header.",
                id="agentauth.E001",
            )
        ]
    parts = urlsplit(str(raw))
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        return [Error("AGENTAUTH_ISSUER must be an absolute http(s) URL.", id="agentauth.E002")]
    if parts.scheme != "https" and not settings.DEBUG:
        return [
            Warning(
                "AGENTAUTH_ISSUER is not HTTPS; the protocol requires TLS (spec §8.9).",
                id="agentauth.W001",
            )
        ]
    return []


@register()
def check_capabilities(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = [Error(p, id="agentauth.E010") for p in registry.problems]
    for cap in registry:
        if isinstance(cap.handler, str):
            try:
                cap.resolve_handler()
            except ImportError as exc:
                errors.append(
                    Error(
                        f"Capability {cap.name!r}: handler {cap.handler!r} cannot be imported "
                        f"({exc}).",
                        id="agentauth.E011",
                    )
                )
    unknown = [n for n in app_settings.DEFAULT_HOST_CAPABILITIES if n not in registry]
    if unknown:
        errors.append(
            Error(
                f"AGENTAUTH_DEFAULT_HOST_CAPABILITIES names unknown capabilities: {unknown}.",
                id="agentauth.E012",
            )
        )
    modes = set(app_settings.MODES)
    if not modes or not modes <= {"delegated", "autonomous"}:
        errors.append(
            Error(
                "AGENTAUTH_MODES must be a non-empty subset of delegated/autonomous.",
                id="agentauth.E020",
            )
        )
    if "device_authorization" not in app_settings.APPROVAL_METHODS:
        errors.append(
            Error(
                "AGENTAUTH_APPROVAL_METHODS must include 'device_authorization' (spec §7).",
                id="agentauth.E021",
            )
        )
    return errors


@register()
def check_rate_limits(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """A bad rate would otherwise fail on every request of its scope."""
    from .ratelimit import DEFAULT_RATES, Rate

    errors: list[Any] = []
    configured = getattr(settings, "AGENTAUTH_RATE_LIMITS", None) or {}
    if not isinstance(configured, dict):
        return [Error("AGENTAUTH_RATE_LIMITS must be a dict.", id="agentauth.E030")]
    for scope, text in configured.items():
        if scope not in DEFAULT_RATES:
            errors.append(Error(f"Unknown rate-limit scope {scope!r}.", id="agentauth.E031"))
        elif text is not None:
            try:
                Rate.parse(str(text))
            except ValueError as exc:
                errors.append(Error(str(exc), id="agentauth.E032"))
    return errors


@register(Tags.security)
def check_introspection(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """An open introspection endpoint tells anyone whether a token is live and what it may do
    (spec §5.12); outside ``DEBUG`` it is closed until resource servers have secrets."""
    if settings.DEBUG or app_settings.INTROSPECTION_TOKENS:
        return []
    return [
        Error(
            "AGENTAUTH_INTROSPECTION_TOKENS is empty, so POST /agent/introspect refuses every "
            "caller.",
            hint="Give each resource server a long random secret and list them here, e.g. "
            "AGENTAUTH_INTROSPECTION_TOKENS = [os.environ['INTROSPECTION_SECRET']].",
            id="agentauth.E040",
        )
    ]


@register(Tags.security)
def check_jwks_fetching(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The JWKS guard's escape hatches are for tests and development only (spec §8.12)."""
    import ipaddress

    messages: list[Any] = []
    networks = app_settings.JWKS_ALLOWED_NETWORKS
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            messages.append(
                Error(
                    f"AGENTAUTH_JWKS_ALLOWED_NETWORKS: {network!r} is not a CIDR block.",
                    id="agentauth.E041",
                )
            )
    if networks and not settings.DEBUG:
        messages.append(
            Warning(
                "AGENTAUTH_JWKS_ALLOWED_NETWORKS lets JWKS URLs reach non-public addresses "
                "outside DEBUG.",
                hint="Clients choose JWKS URLs; admitting private networks lets them make the "
                "server fetch from its own infrastructure (SSRF, spec §8.12). Leave it empty in "
                "production.",
                id="agentauth.W010",
            )
        )
    if getattr(settings, "AGENTAUTH_JWKS_ALLOW_HTTP", False) and not settings.DEBUG:
        messages.append(
            Warning(
                "AGENTAUTH_JWKS_ALLOW_HTTP is ignored outside DEBUG: JWKS URLs must be https.",
                id="agentauth.W011",
            )
        )
    return messages
