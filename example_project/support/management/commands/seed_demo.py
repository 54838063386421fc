"""``manage.py seed_demo``: the demo's staff user, tickets and one trusted host. Safe to run again.

The trusted host is how the demo gives instant ``ticket.read`` without breaking spec §8.10: the
operator pre-registers it (spec §2.8, ``hosts.create_host``), linked to the demo user, with
``ticket.read`` in its defaults. Its private key is written to a file in the ``agentauth-agent``
state format, which the demo client (CLI or Python) uses. Any other key is a self-attested host
and gets nothing until a person approves it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from agentauth import hosts
from agentauth.client import Keypair
from agentauth.models import Host
from example_project.support.models import Ticket

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"
ADMIN_URL = "http://127.0.0.1:8000/admin/"
TRUSTED_HOST_NAME = "Demo trusted host"
TRUSTED_DEFAULTS = ["ticket.read"]

P = Ticket.Priority
TICKETS = [
    ("Cannot log in after password reset", "The reset link says it expired.", P.HIGH),
    ("Invoice shows the wrong VAT number", "March invoice, company account.", P.NORMAL),
    ("Feature request: dark mode", "Would be nice for late shifts.", P.LOW),
    ("Checkout fails for all EU customers", "500 on /checkout since the deploy.", P.CRITICAL),
    ("Export to CSV drops accented characters", "Names like José come out garbled.", P.NORMAL),
]


class Command(BaseCommand):
    help = "Create the demo staff user, a few support tickets and a trusted host (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--key-file",
            default=".demo/trusted-host.json",
            help="Where the trusted host's private key is kept (agentauth-agent state file)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        key_file = Path(options["key_file"])
        with transaction.atomic():
            user, user_created = self._ensure_user()
            tickets_created = self._ensure_tickets()
            host = self._ensure_trusted_host(user, key_file)

        self.stdout.write(
            self.style.SUCCESS(
                f"Demo user {'created' if user_created else 'ready'}; "
                f"{tickets_created} ticket(s) created, {Ticket.objects.count()} in total; "
                f"trusted host {host.pk}."
            )
        )
        self.stdout.write("")
        self.stdout.write(f"  Admin:    {ADMIN_URL}")
        self.stdout.write(f"  Username: {DEMO_USERNAME}")
        self.stdout.write(f"  Password: {DEMO_PASSWORD}")
        self.stdout.write(f"  Trusted host key (gets {', '.join(TRUSTED_DEFAULTS)} at once):")
        self.stdout.write(f"            {key_file.resolve()}")
        self.stdout.write("")

    def _ensure_user(self) -> tuple[Any, bool]:
        user_model = get_user_model()
        lookup: dict[str, Any] = {user_model.USERNAME_FIELD: DEMO_USERNAME}
        user, created = user_model.objects.get_or_create(**lookup)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(DEMO_PASSWORD)
        user.save()
        return user, created

    def _ensure_tickets(self) -> int:
        created_count = 0
        for subject, body, priority in TICKETS:
            _, created = Ticket.objects.get_or_create(
                subject=subject, defaults={"body": body, "priority": priority}
            )
            created_count += int(created)
        return created_count

    def _ensure_trusted_host(self, user: Any, key_file: Path) -> Host:
        """Reuse the key on disk when its host still exists; otherwise make a new pair."""
        state: dict[str, Any] = {"host": None, "agents": {}}
        if key_file.exists():
            state = json.loads(key_file.read_text())
            if state.get("host"):
                keypair = Keypair.from_private_jwk(state["host"])
                existing = Host.objects.filter(thumbprint=keypair.thumbprint).first()
                if existing is not None:
                    return existing
        keypair = Keypair.generate()
        host = hosts.create_host(
            keypair.public_jwk,
            name=TRUSTED_HOST_NAME,
            user=user,
            default_capabilities=TRUSTED_DEFAULTS,
            actor_type="system",
        )
        state = {"host": keypair.to_private_jwk(), "agents": {}}
        _write_private(key_file, state)
        return host


def _write_private(path: Path, state: dict[str, Any]) -> None:
    """Owner-only, like the agentauth-agent CLI's own state file (it holds a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
    os.chmod(path, 0o600)
