"""``manage.py seed_demo``: the demo's staff user and tickets. Safe to run again."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from example_project.support.models import Ticket

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"
ADMIN_URL = "http://127.0.0.1:8000/admin/"

P = Ticket.Priority
TICKETS = [
    ("Cannot log in after password reset", "The reset link says it expired.", P.HIGH),
    ("Invoice shows the wrong VAT number", "March invoice, company account.", P.NORMAL),
    ("Feature request: dark mode", "Would be nice for late shifts.", P.LOW),
    ("Checkout fails for all EU customers", "500 on /checkout since the deploy.", P.CRITICAL),
    ("Export to CSV drops accented characters", "Names like José come out garbled.", P.NORMAL),
]


class Command(BaseCommand):
    help = "Create the demo staff user and a few support tickets (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            user_created = self._ensure_user()
            tickets_created = self._ensure_tickets()

        self.stdout.write(
            self.style.SUCCESS(
                f"Demo user {'created' if user_created else 'ready'}; "
                f"{tickets_created} ticket(s) created, {Ticket.objects.count()} in total."
            )
        )
        self.stdout.write("")
        self.stdout.write(f"  Admin:    {ADMIN_URL}")
        self.stdout.write(f"  Username: {DEMO_USERNAME}")
        self.stdout.write(f"  Password: {DEMO_PASSWORD}")
        self.stdout.write("")

    def _ensure_user(self) -> bool:
        user_model = get_user_model()
        lookup: dict[str, Any] = {user_model.USERNAME_FIELD: DEMO_USERNAME}
        user, created = user_model.objects.get_or_create(**lookup)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(DEMO_PASSWORD)
        user.save()
        return created

    def _ensure_tickets(self) -> int:
        created_count = 0
        for subject, body, priority in TICKETS:
            _, created = Ticket.objects.get_or_create(
                subject=subject, defaults={"body": body, "priority": priority}
            )
            created_count += int(created)
        return created_count
