"""Print the OpenAPI document: ``manage.py agentauth_openapi > openapi.json``.

The same document ``GET {mount}/openapi.json`` serves, for projects that publish it elsewhere
or turn the endpoint off (``AGENTAUTH_OPENAPI_ENABLED = False``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from agentauth.openapi import document


class Command(BaseCommand):
    help = "Write the OpenAPI 3.1 document of the protocol endpoints to standard output."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--indent", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(document(), indent=options["indent"] or None))
