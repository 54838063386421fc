"""Run the lifecycle sweep once: the same code as the ``agentauth.sweep`` Celery task.

For projects that use cron instead of Celery beat: ``*/5 * * * * manage.py agentauth_sweep``.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from agentauth.sweep import sweep


class Command(BaseCommand):
    help = "Expire, revoke and clean up agents, grants, approvals and replay records."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(sweep(), sort_keys=True))
