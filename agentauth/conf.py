"""Settings, read live from ``AGENTAUTH_*`` on every access.

Nothing is cached at import time, so ``override_settings`` and pytest-django's ``settings``
fixture work without a reload hook. Each property documents its default; ``docs/settings.md``
is the reference.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

#: The hard ceiling on ``exp - iat``: whatever a project configures, a JWT living longer than this
#: is refused, which keeps the replay store bounded (§4.6).
JWT_LIFETIME_HARD_MAX = 300


def _get(name: str, default: Any) -> Any:
    return getattr(settings, f"AGENTAUTH_{name}", default)


class AppSettings:
    # --- identity of this server -------------------------------------------------------------
    @property
    def ISSUER(self) -> str:
        """Base URL of the protocol endpoints, e.g. ``https://api.example.com/agent-auth``.

        Required outside DEBUG (system check ``agentauth.E001``); it is never derived from the
        ``Host`` header, which a client controls.
        """
        value = _get("ISSUER", None)
        if not value:
            value = "http://127.0.0.1:8000" if settings.DEBUG else ""
        return str(value).rstrip("/")

    @property
    def ORIGIN(self) -> str:
        parts = urlsplit(self.ISSUER)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def DEFAULT_LOCATION(self) -> str:
        return str(_get("DEFAULT_LOCATION", None) or f"{self.ISSUER}/capability/execute")

    @property
    def PROVIDER_NAME(self) -> str:
        return str(_get("PROVIDER_NAME", "agentauth"))

    @property
    def PROVIDER_DESCRIPTION(self) -> str:
        return str(_get("PROVIDER_DESCRIPTION", "Agent Auth enabled service"))

    @property
    def MODES(self) -> tuple[str, ...]:
        return tuple(_get("MODES", ("delegated", "autonomous")))

    @property
    def APPROVAL_METHODS(self) -> tuple[str, ...]:
        """Device authorization only by default: CIBA sends its notification through Celery,
        so it is opt-in for projects that run a broker and a worker (system check E061)."""
        return tuple(_get("APPROVAL_METHODS", ("device_authorization",)))

    @property
    def JWKS_URI(self) -> str | None:
        return _get("JWKS_URI", None)

    @property
    def DISCOVERY_MAX_AGE(self) -> int:
        return int(_get("DISCOVERY_MAX_AGE", 3600))

    @property
    def BASE_TEMPLATE(self) -> str:
        """The template the approval and connected-apps pages extend (default
        ``agentauth/layout.html``). Point it at your site's base so the pages carry your header
        and footer; it needs the blocks ``title``, ``extra_head``, ``content`` and ``scripts``."""
        return str(_get("BASE_TEMPLATE", None) or "agentauth/layout.html")

    @property
    def OPENAPI_ENABLED(self) -> bool:
        """Serve the OpenAPI document at ``{mount}/openapi.json`` (default ``True``). The
        document describes only public protocol endpoints; turn it off to keep it unlisted."""
        return bool(_get("OPENAPI_ENABLED", True))

    # --- tokens ------------------------------------------------------------------------------
    @property
    def JWT_MAX_LIFETIME(self) -> int:
        """Longest accepted ``exp - iat`` in seconds (default 60, spec §8.2); capped at 300."""
        return min(int(_get("JWT_MAX_LIFETIME", 60)), JWT_LIFETIME_HARD_MAX)

    @property
    def CLOCK_SKEW(self) -> int:
        """Tolerance for ``exp``/``iat`` in seconds; the spec allows at most 30."""
        return min(int(_get("CLOCK_SKEW", 30)), 30)

    @property
    def REQUIRE_AGENT_ISS(self) -> bool:
        """Refuse agent JWTs without ``iss``. Off by default: the official TypeScript client
        omits it, and spec §4.5 step 4 resolves the host from ``sub`` then."""
        return bool(_get("REQUIRE_AGENT_ISS", False))

    @property
    def EXECUTE_ACCEPTS_ISSUER_AUD(self) -> bool:
        """At the default execute location, also accept ``aud == issuer`` (spec §6.10, as the
        official client signs). A capability with its own ``location`` never accepts it."""
        return bool(_get("EXECUTE_ACCEPTS_ISSUER_AUD", True))

    @property
    def REPLAY_GUARD(self) -> str:
        """``"database"`` (default, shared by every process) or ``"cache"`` (Django cache,
        use Redis/Memcached; the local-memory cache is per process and so unsafe)."""
        return str(_get("REPLAY_GUARD", "database"))

    @property
    def REPLAY_CACHE_ALIAS(self) -> str:
        return str(_get("REPLAY_CACHE_ALIAS", "default"))

    # --- DPoP proof of possession (spec §4.4, §8.14; RFC 9449) ---------------------------
    @property
    def DPOP(self) -> str:
        """``"off"`` (default), ``"optional"`` (a proof is checked when sent, and a DPoP-bound
        agent JWT always needs one) or ``"required"`` (every agent-JWT request carries a proof
        and its JWT carries ``cnf.jkt``). Anything else counts as ``"required"``: fail closed."""
        value = str(_get("DPOP", "off"))
        return value if value in ("off", "optional") else "required"

    @property
    def DPOP_NONCE(self) -> bool:
        """Demand a server-issued ``nonce`` in every proof (RFC 9449 §9)."""
        return bool(_get("DPOP_NONCE", False))

    @property
    def DPOP_NONCE_LIFETIME(self) -> int:
        """Seconds a server nonce stays valid (it is stateless: a MAC over its issue time)."""
        return int(_get("DPOP_NONCE_LIFETIME", 300))

    @property
    def DPOP_PROOF_MAX_AGE(self) -> int:
        """How old a proof's ``iat`` may be, in seconds (RFC 9449 §11.1: a short window)."""
        return min(int(_get("DPOP_PROOF_MAX_AGE", 60)), JWT_LIFETIME_HARD_MAX)

    # --- keys by URL (spec §4.1, §4.2, §8.12, §10.4) ----------------------------------------
    @property
    def JWKS_FETCH_TIMEOUT(self) -> float:
        """Seconds one JWKS fetch may take in all: connect, TLS, redirects and body together
        (spec §8.12 suggests 5 s each for connect and read; we bound the sum)."""
        return float(_get("JWKS_FETCH_TIMEOUT", 5.0))

    @property
    def JWKS_MAX_BYTES(self) -> int:
        """Largest JWKS body accepted; the read stops one byte past it (spec §8.12)."""
        return int(_get("JWKS_MAX_BYTES", 64 * 1024))

    @property
    def JWKS_MAX_KEYS(self) -> int:
        """Most keys a JWKS may hold (spec §8.12 suggests 20)."""
        return int(_get("JWKS_MAX_KEYS", 20))

    @property
    def JWKS_REFRESH_INTERVAL(self) -> int:
        """Seconds fetched keys are used without asking the URL again (spec §10.4: 5 minutes)."""
        return int(_get("JWKS_REFRESH_INTERVAL", 300))

    @property
    def JWKS_MIN_REFRESH_INTERVAL(self) -> int:
        """Seconds between two fetches of one URL, whatever asks (an unknown ``kid``, an expired
        entry, a failed fetch): no caller can make the server fetch a URL more often (§8.12)."""
        return int(_get("JWKS_MIN_REFRESH_INTERVAL", 60))

    @property
    def JWKS_CACHE_MAX_AGE(self) -> int:
        """Seconds cached keys stay usable while the URL cannot be fetched (spec §10.4)."""
        return int(_get("JWKS_CACHE_MAX_AGE", 3600))

    @property
    def JWKS_CACHE_ALIAS(self) -> str:
        return str(_get("JWKS_CACHE_ALIAS", "default"))

    @property
    def JWKS_CA_FILE(self) -> str | None:
        """CA bundle that JWKS servers' certificates must chain to; default: system trust."""
        return _get("JWKS_CA_FILE", None)

    @property
    def JWKS_ALLOW_HTTP(self) -> bool:
        """Accept ``http://`` JWKS URLs. Honoured only when ``DEBUG`` is on (spec §8.12)."""
        return bool(_get("JWKS_ALLOW_HTTP", False)) and bool(settings.DEBUG)

    @property
    def JWKS_ALLOWED_NETWORKS(self) -> tuple[str, ...]:
        """CIDR blocks a JWKS URL may resolve into although they are not public (e.g.
        ``["127.0.0.1/32"]`` for tests). Empty by default; system check ``agentauth.W010``
        warns when set outside DEBUG."""
        return tuple(_get("JWKS_ALLOWED_NETWORKS", ()))

    @property
    def JWKS_RESOLVER(self) -> Any:
        """A callable, or its dotted path, ``f(host, port) -> list[str]`` of IP addresses.
        Default: the system resolver. Every address it returns is checked (spec §8.12)."""
        return _get("JWKS_RESOLVER", None)

    # --- requests ----------------------------------------------------------------------------
    @property
    def MAX_BODY_BYTES(self) -> int:
        return int(_get("MAX_BODY_BYTES", 64 * 1024))

    @property
    def MAX_CAPABILITIES_PER_REQUEST(self) -> int:
        return int(_get("MAX_CAPABILITIES_PER_REQUEST", 50))

    @property
    def STREAM_MAX_SECONDS(self) -> int:
        """Longest a streamed execution may run (spec §5.11)."""
        return int(_get("STREAM_MAX_SECONDS", 300))

    @property
    def STREAM_RECHECK_SECONDS(self) -> int:
        """How often a stream re-checks that its agent and host are still active (§5.11)."""
        return int(_get("STREAM_RECHECK_SECONDS", 60))

    @property
    def INTROSPECTION_TOKENS(self) -> tuple[str, ...]:
        """Bearer secrets resource servers present to ``/agent/introspect``. Empty (default):
        the endpoint is open but rate limited hard (spec §5.12)."""
        return tuple(_get("INTROSPECTION_TOKENS", ()))

    # --- registration policy -----------------------------------------------------------------
    @property
    def ALLOW_DYNAMIC_HOST_REGISTRATION(self) -> bool:
        """Accept registrations from hosts the server has never seen (they stay pending until a
        person approves, spec §2.8)."""
        return bool(_get("ALLOW_DYNAMIC_HOST_REGISTRATION", True))

    @property
    def AUTONOMOUS_AUTO_APPROVE(self) -> tuple[str, ...] | None:
        """Policy for autonomous agents (§2.8).

        ``None`` (default): an autonomous registration waits for an administrator.
        A list of capability names: the host is activated (unlinked), the agent is active, and
        requested capabilities in the list whose ``approval_strength`` is ``"none"`` are granted;
        anything else stays pending for an administrator.
        """
        value = _get("AUTONOMOUS_AUTO_APPROVE", None)
        return None if value is None else tuple(value)

    @property
    def DEFAULT_HOST_CAPABILITIES(self) -> tuple[str, ...]:
        """The ``default_capabilities`` a dynamically registered host starts with (spec §2.8,
        §3.1), editable per host in the admin afterwards.

        Defaults are what a host's agents get back on reactivation (§5.6 step 4) and what a
        linked host's delegated agents may be granted without asking. They grant nothing to a
        self-attested host by themselves (§8.10): auto-approval still needs a linked host, or
        for autonomous agents ``AUTONOMOUS_AUTO_APPROVE``, and ``approval_strength="none"``.
        """
        return tuple(_get("DEFAULT_HOST_CAPABILITIES", ()))

    @property
    def CAPABILITY_NAME_PATTERN(self) -> str:
        """Admits the spec's snake_case and dotted names such as ``ticket.read``."""
        return str(_get("CAPABILITY_NAME_PATTERN", r"[a-z0-9_]+(\.[a-z0-9_]+)*"))

    # --- approvals ---------------------------------------------------------------------------
    @property
    def APPROVAL_EXPIRES_IN(self) -> int:
        return int(_get("APPROVAL_EXPIRES_IN", 300))

    @property
    def APPROVAL_INTERVAL(self) -> int:
        return int(_get("APPROVAL_INTERVAL", 5))

    @property
    def APPROVAL_EVENTS(self) -> bool:
        """Serve the real-time approval profile (spec §10.10.2): an SSE ``notification_url`` in
        approval objects. Off by default: under WSGI every open stream holds a worker, so turn
        it on where the app runs under ASGI."""
        return bool(_get("APPROVAL_EVENTS", False))

    @property
    def APPROVAL_EVENTS_MAX_SECONDS(self) -> int:
        """How long one approval event stream stays open before the server ends it."""
        return int(_get("APPROVAL_EVENTS_MAX_SECONDS", 300))

    @property
    def APPROVAL_EVENTS_MAX_PER_HOST(self) -> int:
        """Open approval event streams one host may hold at once; more are refused (429)."""
        return int(_get("APPROVAL_EVENTS_MAX_PER_HOST", 10))

    @property
    def APPROVAL_EVENTS_MAX_STREAMS(self) -> int:
        """Open approval event streams across the whole server (counted in the cache)."""
        return int(_get("APPROVAL_EVENTS_MAX_STREAMS", 500))

    @property
    def VERIFICATION_URI(self) -> str:
        """Where a person enters the user code; default: the app's own device page."""
        value = _get("VERIFICATION_URI", None)
        if value:
            return str(value)
        from django.urls import NoReverseMatch, reverse

        try:
            path = reverse("agentauth:device")
        except NoReverseMatch:
            path = "/device"
        return f"{self.ORIGIN}{path}"

    @property
    def FRESH_AUTH_SECONDS(self) -> int:
        """How recent a person's authentication must be to approve (spec §8.11: fresh, e.g.
        5 minutes). Approving always needs it; denying never does."""
        return int(_get("FRESH_AUTH_SECONDS", 300))

    @property
    def USER_CODE_MAX_ATTEMPTS(self) -> int:
        """Wrong user codes a signed-in person may enter before a lock-out (RFC 8628 §5.1)."""
        return int(_get("USER_CODE_MAX_ATTEMPTS", 5))

    @property
    def USER_CODE_LOCKOUT_SECONDS(self) -> int:
        return int(_get("USER_CODE_LOCKOUT_SECONDS", 900))

    @property
    def CIBA_NOTIFIER(self) -> str:
        """Dotted path of the CIBA notifier: ``agentauth.notifications.EmailNotifier`` (default)
        or ``agentauth.notifications.WebhookNotifier``, or your own class."""
        return str(_get("CIBA_NOTIFIER", "agentauth.notifications.EmailNotifier"))

    @property
    def CIBA_WEBHOOK_URL(self) -> str | None:
        return _get("CIBA_WEBHOOK_URL", None)

    @property
    def CIBA_LOGIN_HINT_FIELDS(self) -> tuple[str, ...]:
        """User model fields a ``login_hint`` may match (exactly, case-insensitively)."""
        return tuple(_get("CIBA_LOGIN_HINT_FIELDS", ("email",)))

    @property
    def WEBAUTHN_RP_ID(self) -> str:
        """Relying-party id: the issuer's host name unless set."""
        value = _get("WEBAUTHN_RP_ID", None)
        return str(value or (urlsplit(self.ISSUER).hostname or "localhost"))

    @property
    def WEBAUTHN_RP_NAME(self) -> str:
        return str(_get("WEBAUTHN_RP_NAME", None) or self.PROVIDER_NAME)

    @property
    def WEBAUTHN_ORIGINS(self) -> tuple[str, ...]:
        """Origins a WebAuthn response may come from: the issuer's origin unless set."""
        return tuple(_get("WEBAUTHN_ORIGINS", None) or (self.ORIGIN,))

    # --- agent lifetime clocks (spec §2.4) ---------------------------------------------------
    @property
    def SESSION_TTL(self) -> int | None:
        return _opt_int(_get("SESSION_TTL", 3600))

    @property
    def MAX_LIFETIME(self) -> int | None:
        return _opt_int(_get("MAX_LIFETIME", 86400))

    @property
    def ABSOLUTE_LIFETIME(self) -> int | None:
        return _opt_int(_get("ABSOLUTE_LIFETIME", 30 * 86400))

    @property
    def AGENT_CLOCKS(self) -> str | None:
        """Dotted path to ``f(agent) -> dict`` returning any of ``session_ttl``,
        ``max_lifetime``, ``absolute_lifetime`` (seconds, ``None`` = no limit) for one agent, to
        vary the clocks by mode, host or capabilities (spec §2.4). Called when the clocks are set:
        at registration, activation and reactivation."""
        return _get("AGENT_CLOCKS", None)

    @property
    def GRANT_TTL(self) -> str | None:
        """Dotted path to ``f(capability_name, agent) -> seconds | None``: how long a grant lasts
        once active (spec §3.3 ``expires_at``). Default: grants last as long as the agent."""
        return _get("GRANT_TTL", None)

    @property
    def HOST_ROTATION_GRACE(self) -> int:
        """Seconds the previous host thumbprint is still accepted as an agent JWT's ``iss``
        after an inline host key rotation (§8.7). Host JWTs never get a grace."""
        return int(_get("HOST_ROTATION_GRACE", 300))

    @property
    def PENDING_RETENTION(self) -> int:
        """Seconds after which a still-pending agent (and a pending host left without agents)
        is deleted by the sweep (spec §10.9)."""
        return int(_get("PENDING_RETENTION", 7 * 86400))

    # --- delivery after commit (outbox) and retention ----------------------------------------
    @property
    def OUTBOX_REQUEUE_SECONDS(self) -> int:
        """A message handed to the broker but not done after this long is handed out again by
        the sweep (the broker may have lost it). The worker's claim makes repeats harmless."""
        return int(_get("OUTBOX_REQUEUE_SECONDS", 120))

    @property
    def OUTBOX_LEASE_SECONDS(self) -> int:
        """How long a worker's claim on a message lasts. It must exceed the longest async job:
        a job still claimed after it is taken for lost (its worker died) and failed, never run
        again."""
        return int(_get("OUTBOX_LEASE_SECONDS", 300))

    @property
    def OUTBOX_MAX_ATTEMPTS(self) -> int:
        return int(_get("OUTBOX_MAX_ATTEMPTS", 8))

    @property
    def PUBLISH_PAUSE_SECONDS(self) -> int:
        """After the broker refuses a message, this process stops trying for this long (the
        sweep delivers meanwhile), so a down or hung broker costs one request a short timeout,
        not every request."""
        return int(_get("PUBLISH_PAUSE_SECONDS", 10))

    @property
    def AUDIT_RETENTION(self) -> int | None:
        """Seconds audit rows are kept (default 365 days); ``None`` keeps them forever."""
        return _opt_int(_get("AUDIT_RETENTION", 365 * 86400))

    @property
    def AUDIT_EXPORT_ON_PRUNE(self) -> bool:
        """Log each pruned audit row as JSON on the ``agentauth.audit`` logger first."""
        return bool(_get("AUDIT_EXPORT_ON_PRUNE", False))

    @property
    def SWEEP_BATCH_SIZE(self) -> int:
        """Rows deleted per statement by the sweep's purges (short locks, small WAL bursts)."""
        return int(_get("SWEEP_BATCH_SIZE", 2000))

    @property
    def SWEEP_TIME_BUDGET(self) -> float:
        """Seconds after which the sweep's purges stop and leave the rest to the next run."""
        return float(_get("SWEEP_TIME_BUDGET", 20))


def _opt_int(value: Any) -> int | None:
    return None if value in (None, 0) else int(value)


app_settings = AppSettings()


#: Read outside this class (by ``ratelimit``); known to the unknown-setting check all the same.
OTHER_SETTINGS = ("RATE_LIMITS", "CLIENT_IP", "RATE_LIMIT_CACHE")
#: Properties derived from other settings, not settings themselves.
DERIVED = ("ORIGIN",)


def known_setting_names() -> set[str]:
    """Every ``AGENTAUTH_*`` name this app reads, for system check ``agentauth.W002``."""
    names = {
        name
        for name, value in vars(AppSettings).items()
        if isinstance(value, property) and name not in DERIVED
    }
    return {f"AGENTAUTH_{name}" for name in (*names, *OTHER_SETTINGS)}
