"""Approve or deny a pending agent from the shell: the operator path.

Goes through ``approvals.decide`` like the approval page and the admin. It decides in the name of
``--user`` (for a delegated agent, the person it acts for) with an ``Approver.operator`` that only
this command builds: no browser session, so no fresh sign-in or passkey step-up, and the audit row
says so (``actor_type="operator"``, ``actor_id="agentauth_approve:<OS user>"``).
"""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentauth import approvals
from agentauth.errors import ProtocolError
from agentauth.models import Agent


class Command(BaseCommand):
    help = "Approve (or --deny) what a pending agent is waiting for, as --user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("agent_id")
        parser.add_argument(
            "--user",
            required=True,
            help="Username the decision is made in the name of: for a delegated agent, the "
            "person it acts for (an unlinked host is linked to them)",
        )
        parser.add_argument(
            "--capability",
            action="append",
            dest="capabilities",
            metavar="NAME",
            help="Approve only this capability (repeatable); the other pending ones are denied",
        )
        parser.add_argument(
            "--constraints",
            metavar="JSON",
            help='Effective constraints per capability, e.g. \'{"ticket.close": {"priority": '
            '{"not_in": ["critical"]}}}\'',
        )
        parser.add_argument("--deny", action="store_true", help="Deny the connection")
        parser.add_argument("--reason", default="", help="Reason recorded on denied grants")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["user"]})
        except User.DoesNotExist:
            raise CommandError(f"No user {options['user']!r}") from None
        agent = Agent.objects.filter(pk=options["agent_id"]).first()
        if agent is None:
            raise CommandError(f"No agent {options['agent_id']!r}")
        constraints = None
        if options["constraints"]:
            try:
                constraints = json.loads(options["constraints"])
            except ValueError as exc:
                raise CommandError(f"--constraints is not JSON: {exc}") from None
            if not isinstance(constraints, dict) or not all(
                isinstance(v, dict) for v in constraints.values()
            ):
                raise CommandError(
                    "--constraints must be a JSON object mapping capability names to objects"
                )
        try:
            decision = approvals.decide(
                approvals.live_request(agent),
                approver=approvals.Approver.operator(user, name=f"agentauth_approve:{_whoami()}"),
                approve=options["capabilities"],
                reject=options["deny"],
                reason=options["reason"],
                constraints=constraints,
            )
        except ProtocolError as exc:
            raise CommandError(exc.message) from None
        agent.refresh_from_db()
        self.stdout.write(
            json.dumps(
                {
                    "agent_id": agent.pk,
                    "status": agent.status,
                    "approved": decision.approved,
                    "denied": decision.denied,
                }
            )
        )


def _whoami() -> str:
    """The OS account running the command, for the audit row; never fails the decision."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
