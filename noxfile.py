"""Supported versions: Python 3.11-3.13 x Django 5.2 LTS and 6.0.

Each cell runs a fast subset (discovery, registration, execution, approvals, the setup checks);
the full suite runs on the main cell in .ci/run. Django 6 needs Python 3.12+, so the 3.11 x 6.0
cell does not exist. Interpreters missing on a machine are skipped (``.ci/matrix`` says which).
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.11", "3.12", "3.13"]
DJANGOS = {"5.2": "Django>=5.2,<5.3", "6.0": "Django>=6.0,<6.1"}
FAST = [
    "tests/api/test_discovery.py",
    "tests/api/test_registration.py",
    "tests/api/test_execute.py",
    "tests/approvals/test_approval_pages.py",
    "tests/domain/test_project_setup.py",
    "tests/domain/test_client_unit.py",
]


@nox.session(python=PYTHONS)
@nox.parametrize("django", list(DJANGOS))
def tests(session: nox.Session, django: str) -> None:
    if django == "6.0" and session.python == "3.11":
        session.skip("Django 6.0 needs Python 3.12+")
    session.install("-e", ".[all,dev]", DJANGOS[django])
    # Deprecations of the next Django are errors, so they are fixed before they break.
    session.run(
        "pytest",
        "-q",
        "-W",
        "error::DeprecationWarning",
        "-W",
        "error::PendingDeprecationWarning",
        *(session.posargs or FAST),
    )
