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
    if app_settings.DPOP == "off":
        for cap in registry:
            if cap.require_dpop:
                errors.append(
                    Error(
                        f"Capability {cap.name!r} has require_dpop=True but AGENTAUTH_DPOP is "
                        "'off', so no call to it can succeed.",
                        hint="Set AGENTAUTH_DPOP to 'optional' or 'required'.",
                        id="agentauth.E013",
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


@register()
def check_setting_names(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """A misspelt setting would otherwise be ignored silently, leaving the default in force."""
    import difflib

    from .conf import known_setting_names

    known = known_setting_names()
    warnings: list[Any] = []
    for name in sorted(dir(settings)):
        if not name.startswith("AGENTAUTH_") or name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        warnings.append(
            Warning(
                f"Unknown setting {name}: django-agentauth does not read it.",
                hint=f"Did you mean {close[0]}?" if close else "See docs/settings.md.",
                id="agentauth.W002",
            )
        )
    return warnings


def _needs_celery() -> list[str]:
    """What, in these settings and capabilities, sends work through Celery."""
    reasons = []
    if "ciba" in app_settings.APPROVAL_METHODS:
        reasons.append("'ciba' in AGENTAUTH_APPROVAL_METHODS")
    reasons += [f"async capability {cap.name!r}" for cap in registry if cap.mode == "async"]
    return reasons


@register()
def check_optional_dependencies(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Each extra the configuration relies on is installed, and Celery can deliver."""
    from .extras import installed, missing_message

    errors: list[Any] = []
    reasons = _needs_celery()
    if reasons and not installed("celery"):
        errors.append(
            Error(
                missing_message("celery", ", ".join(reasons)),
                hint="Or leave CIBA out of AGENTAUTH_APPROVAL_METHODS (it is opt-in).",
                id="agentauth.E060",
            )
        )
    elif reasons:
        from celery import current_app

        conf = current_app.conf
        if not conf.broker_url and not conf.task_always_eager:
            errors.append(
                Error(
                    f"{', '.join(reasons)} needs Celery, but the current Celery app has no "
                    "broker and does not run tasks eagerly, so the tasks cannot be queued.",
                    hint="Create a Celery app that reads Django's CELERY_* settings (docs/"
                    "lifecycle.md, 'Celery setup') with CELERY_BROKER_URL set and a worker "
                    "running; or, for development only, CELERY_TASK_ALWAYS_EAGER = True.",
                    id="agentauth.E061",
                )
            )
    strong = [cap.name for cap in registry if cap.approval_strength == "webauthn"]
    if strong and not installed("webauthn"):
        errors.append(
            Error(
                missing_message("webauthn", f"webauthn-strength capability {strong[0]!r}"),
                id="agentauth.E062",
            )
        )
    drf_settings = str(getattr(settings, "REST_FRAMEWORK", ""))
    uses_drf = "agentauth.authentication" in drf_settings or "agentauth.permissions" in drf_settings
    if uses_drf and not installed("rest_framework"):
        errors.append(
            Error(
                missing_message("rest_framework", "REST_FRAMEWORK's agentauth classes"),
                id="agentauth.E063",
            )
        )
    return errors


@register(Tags.urls)
def check_login_url(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """People sign in before they approve: LOGIN_URL must lead to a working sign-in page."""
    from django.contrib.auth import views as auth_views
    from django.shortcuts import resolve_url
    from django.template import TemplateDoesNotExist
    from django.template.loader import get_template
    from django.urls import NoReverseMatch, Resolver404, resolve

    login_url = str(settings.LOGIN_URL)
    try:
        path = urlsplit(resolve_url(login_url))
    except NoReverseMatch:
        path = urlsplit(login_url)
    if path.netloc:
        return []  # a sign-in service elsewhere: nothing to check from here
    try:
        match = resolve(path.path)
    except Resolver404:
        return [
            Error(
                f"LOGIN_URL {login_url!r} does not resolve to any view, so the approval pages "
                "cannot send people to sign in.",
                hint="Add path('accounts/', include('agentauth.login_urls')) to your urls.py "
                "(a sign-in page that needs no template of yours), or point LOGIN_URL at your "
                "own sign-in view.",
                id="agentauth.E050",
            )
        ]
    from .views.signin import SignInView

    view_class = getattr(match.func, "view_class", None)
    if (
        view_class is not None
        and issubclass(view_class, auth_views.LoginView)
        and not issubclass(view_class, SignInView)  # falls back to its own template
    ):
        initkwargs = getattr(match.func, "view_initkwargs", {})
        names = initkwargs.get("template_name", view_class.template_name)
        for name in [names] if isinstance(names, str) else list(names or []):
            try:
                get_template(name)
                return []
            except TemplateDoesNotExist:
                continue
        return [
            Warning(
                f"LOGIN_URL {login_url!r} is a LoginView whose template {names!r} does not "
                "exist: signing in would fail with TemplateDoesNotExist.",
                hint="Use agentauth's sign-in page (path('accounts/', "
                "include('agentauth.login_urls'))), or write the template.",
                id="agentauth.W051",
            )
        ]
    return []
