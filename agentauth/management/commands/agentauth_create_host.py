"""Pre-register a host from its public JWK (spec §2.8), optionally linked to a user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentauth import hosts
from agentauth.errors import ProtocolError


class Command(BaseCommand):
    help = "Pre-register (and optionally link) a host from a public Ed25519 JWK."

    def add_arguments(self, parser: CommandParser) -> None:
        key = parser.add_mutually_exclusive_group(required=True)
        key.add_argument("--jwk", help="The public JWK as JSON")
        key.add_argument("--jwk-file", help="Path to a file holding the public JWK")
        parser.add_argument("--name", default="", help="Display name")
        parser.add_argument("--user", help="Username to link the host to")
        parser.add_argument(
            "--default-capability",
            action="append",
            dest="defaults",
            default=[],
            metavar="NAME",
            help="Capability auto-approvable for this host's delegated agents (repeatable)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            raw = options["jwk"] or Path(options["jwk_file"]).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read --jwk-file: {exc}") from None
        try:
            jwk = json.loads(raw)
        except ValueError as exc:
            raise CommandError(f"The JWK is not JSON: {exc}") from None
        user = None
        if options["user"]:
            User = get_user_model()
            try:
                user = User.objects.get(**{User.USERNAME_FIELD: options["user"]})
            except User.DoesNotExist:
                raise CommandError(f"No user {options['user']!r}") from None
        try:
            host = hosts.create_host(
                jwk, name=options["name"], user=user, default_capabilities=options["defaults"]
            )
        except ProtocolError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            json.dumps({"host_id": host.pk, "thumbprint": host.thumbprint, "status": host.status})
        )
