"""Optional dependencies, each behind a named extra of the distribution.

The server core needs Django, cryptography, PyJWT, jsonschema and django-otp (the WebAuthn
credential model is a django-otp device). DRF, Celery and py_webauthn are extras, so a project
installs only what it uses; a missing one is reported by a system check at start-up and by a
clear ``ImportError`` where it is imported, never by a bare ``No module named ...``.
"""

from __future__ import annotations

import importlib

#: import name -> (distribution, extra)
EXTRAS: dict[str, tuple[str, str]] = {
    "rest_framework": ("djangorestframework", "drf"),
    "celery": ("celery", "celery"),
    "webauthn": ("webauthn", "webauthn"),
}


def installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def missing_message(module: str, feature: str) -> str:
    dist, extra = EXTRAS[module]
    return (
        f"{feature} needs {dist}, which is not installed: "
        f"pip install 'django-agentauth[{extra}]' (or '[all]')"
    )
