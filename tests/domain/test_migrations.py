from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_models_and_migrations_agree() -> None:
    out = StringIO()
    try:
        call_command(
            "makemigrations", "agentauth", "support", "--check", "--dry-run", stdout=out, stderr=out
        )
    except SystemExit as exc:
        pytest.fail(f"makemigrations --check exited with {exc.code}:\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()
