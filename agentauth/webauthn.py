"""WebAuthn ceremonies around py_webauthn (spec §8.11: physical presence, UV required).

Two ceremonies: registering a credential on the user's own page, and the step-up assertion that
approving a ``webauthn``-strength capability needs. A challenge lives in the session, is
single-use (popped before verification), expires, and for a step-up is bound to one approval
request, so an assertion made for one approval cannot be replayed for another.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import audit
from .conf import app_settings
from .errors import ProtocolError
from .models import WebAuthnCredential

REGISTRATION_KEY = "agentauth_webauthn_registration"
STEPUP_KEY = "agentauth_webauthn_stepup"
STEPUP_DONE_KEY = "agentauth_webauthn_verified"
CHALLENGE_TTL = 120
#: How long a completed step-up stays valid for the approval it was made for.
STEPUP_VALID_SECONDS = 300


def _py_webauthn() -> Any:
    """py_webauthn, which the ``[webauthn]`` extra installs.

    Imported on first use so that a project without WebAuthn step-up runs without it; system
    check ``agentauth.E062`` reports a ``webauthn``-strength capability declared without it.
    """
    try:
        import webauthn
        import webauthn.helpers.exceptions
        import webauthn.helpers.structs
    except ImportError as exc:
        raise ImproperlyConfigured(
            "WebAuthn step-up needs py_webauthn: pip install 'django-agentauth[webauthn]'"
        ) from exc
    return webauthn


def _failure(message: str) -> ProtocolError:
    return ProtocolError("webauthn_verification_failed", message, status=403)


def _pop_state(session: SessionBase, key: str) -> dict[str, Any]:
    state = session.pop(key, None)
    if not isinstance(state, dict) or time.time() - state.get("at", 0) > CHALLENGE_TTL:
        raise _failure("The WebAuthn challenge expired or was already used; start again")
    return state


def begin_registration(session: SessionBase, user: Any) -> dict[str, Any]:
    lib = _py_webauthn()
    existing = WebAuthnCredential.objects.filter(user=user)
    options = lib.generate_registration_options(
        rp_id=app_settings.WEBAUTHN_RP_ID,
        rp_name=app_settings.WEBAUTHN_RP_NAME,
        user_name=user.get_username(),
        user_id=str(user.pk).encode(),
        user_display_name=user.get_full_name() or user.get_username(),
        authenticator_selection=lib.helpers.structs.AuthenticatorSelectionCriteria(
            resident_key=lib.helpers.structs.ResidentKeyRequirement.PREFERRED,
            user_verification=lib.helpers.structs.UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            lib.helpers.structs.PublicKeyCredentialDescriptor(
                id=lib.helpers.base64url_to_bytes(c.credential_id)
            )
            for c in existing
        ],
    )
    session[REGISTRATION_KEY] = {
        "challenge": lib.helpers.bytes_to_base64url(options.challenge),
        "user": str(user.pk),
        "at": time.time(),
    }
    result: dict[str, Any] = json.loads(lib.options_to_json(options))
    return result


def complete_registration(
    session: SessionBase, user: Any, credential: Any, name: str = "Passkey"
) -> WebAuthnCredential:
    lib = _py_webauthn()
    state = _pop_state(session, REGISTRATION_KEY)
    if state.get("user") != str(user.pk):
        raise _failure("This registration was started by another user")
    try:
        verified = lib.verify_registration_response(
            credential=credential,
            expected_challenge=lib.helpers.base64url_to_bytes(state["challenge"]),
            expected_rp_id=app_settings.WEBAUTHN_RP_ID,
            expected_origin=list(app_settings.WEBAUTHN_ORIGINS),
            require_user_verification=True,
        )
    except (lib.helpers.exceptions.WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise _failure(f"WebAuthn registration failed: {exc}") from None
    transports = (
        credential.get("response", {}).get("transports", []) if isinstance(credential, dict) else []
    )
    return WebAuthnCredential.objects.create(
        user=user,
        name=name[:64] or "Passkey",
        confirmed=True,
        credential_id=lib.helpers.bytes_to_base64url(verified.credential_id),
        public_key=lib.helpers.bytes_to_base64url(verified.credential_public_key),
        sign_count=verified.sign_count,
        transports=[t for t in transports if isinstance(t, str)][:8],
        aaguid=str(verified.aaguid or ""),
    )


def revoke_credential(credential: WebAuthnCredential, *, by: Any) -> bool:
    """Stop a credential from approving anything (a lost or stolen key). The row stays, so the
    audit trail keeps naming it; a repeat changes nothing and records nothing."""
    with transaction.atomic():
        changed = WebAuthnCredential.objects.filter(pk=credential.pk, confirmed=True).update(
            confirmed=False
        )
        if changed:
            audit.record(
                "webauthn.revoked",
                actor_type="admin",
                actor_id=getattr(by, "pk", ""),
                user_id=credential.user_id,
                credential=credential.name,
            )
    return bool(changed)


def usable_credentials(user: Any) -> QuerySet[WebAuthnCredential]:
    """The credentials a step-up may use: the person's, not revoked (``confirmed``)."""
    return WebAuthnCredential.objects.filter(user=user, confirmed=True)


def begin_stepup(session: SessionBase, user: Any, approval_id: str) -> dict[str, Any]:
    lib = _py_webauthn()
    credentials = list(usable_credentials(user))
    if not credentials:
        raise ProtocolError(
            "webauthn_not_enrolled",
            "Register a passkey or security key before approving this capability",
            status=403,
        )
    options = lib.generate_authentication_options(
        rp_id=app_settings.WEBAUTHN_RP_ID,
        allow_credentials=[
            lib.helpers.structs.PublicKeyCredentialDescriptor(
                id=lib.helpers.base64url_to_bytes(c.credential_id)
            )
            for c in credentials
        ],
        # Spec §8.11: MUST be "required", never "preferred" or "discouraged".
        user_verification=lib.helpers.structs.UserVerificationRequirement.REQUIRED,
    )
    session[STEPUP_KEY] = {
        "challenge": lib.helpers.bytes_to_base64url(options.challenge),
        "user": str(user.pk),
        "approval": approval_id,
        "at": time.time(),
    }
    result: dict[str, Any] = json.loads(lib.options_to_json(options))
    return result


def complete_stepup(
    session: SessionBase, user: Any, approval_id: str, credential: Any
) -> WebAuthnCredential:
    lib = _py_webauthn()
    state = _pop_state(session, STEPUP_KEY)
    if state.get("user") != str(user.pk) or state.get("approval") != approval_id:
        raise _failure("This WebAuthn challenge was issued for another approval")
    credential_id = credential.get("id") if isinstance(credential, dict) else None
    device = WebAuthnCredential.objects.filter(
        user=user, confirmed=True, credential_id=credential_id
    ).first()
    if device is None:
        raise _failure("WebAuthn credential not recognised")
    try:
        verified = lib.verify_authentication_response(
            credential=credential,
            expected_challenge=lib.helpers.base64url_to_bytes(state["challenge"]),
            expected_rp_id=app_settings.WEBAUTHN_RP_ID,
            expected_origin=list(app_settings.WEBAUTHN_ORIGINS),
            credential_public_key=lib.helpers.base64url_to_bytes(device.public_key),
            credential_current_sign_count=device.sign_count,
            require_user_verification=True,
        )
    except (lib.helpers.exceptions.WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise _failure(f"WebAuthn verification failed: {exc}") from None
    # py_webauthn has refused a counter that did not move forward (a cloned authenticator).
    device.sign_count = verified.new_sign_count
    device.last_used_at = timezone.now()
    device.save(update_fields=["sign_count", "last_used_at"])
    session[STEPUP_DONE_KEY] = {"approval": approval_id, "user": str(user.pk), "at": time.time()}
    return device


def stepup_verified(session: SessionBase, user: Any, approval_id: str) -> bool:
    """Did this user complete a WebAuthn step-up for this approval, recently?"""
    done = session.get(STEPUP_DONE_KEY)
    return (
        isinstance(done, dict)
        and done.get("approval") == approval_id
        and done.get("user") == str(user.pk)
        and time.time() - done.get("at", 0) <= STEPUP_VALID_SECONDS
    )


def consume_stepup(session: SessionBase) -> None:
    session.pop(STEPUP_DONE_KEY, None)
