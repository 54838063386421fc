"""``agentauth-conformance URL``: check an Agent Auth server from the outside.

Exit status: 0 when no MUST check failed, 1 when one did, 2 on bad arguments. Time is bounded:
each HTTP call by ``--timeout`` and the whole run by ``--budget``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import report
from .approvers import command_approver
from .runner import DEFAULT_ARGUMENTS, DEFAULT_CAPABILITY, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentauth-conformance",
        description="Black-box conformance checks for an Agent Auth (v1.0-draft) server.",
    )
    p.add_argument("url", help="the server's origin or issuer, e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--approver",
        required=True,
        help="'skip', or a command run for each approval; {agent_id}, {user_code} and "
        "{verification_uri} are replaced in its words",
    )
    p.add_argument("--capability", default=DEFAULT_CAPABILITY, help="capability to execute")
    p.add_argument(
        "--arguments",
        default=json.dumps(DEFAULT_ARGUMENTS),
        help="its arguments as a JSON object (the first scalar one is used for constraints)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP call")
    p.add_argument("--budget", type=float, default=240.0, help="seconds for the whole run")
    p.add_argument("--only", default="", help="run only checks whose id starts with this")
    p.add_argument("--junit-xml", type=Path, help="also write JUnit XML here")
    p.add_argument("--output", type=Path, help="also write the text report here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        arguments = json.loads(args.arguments)
    except ValueError as exc:
        print(f"--arguments is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(arguments, dict):
        print("--arguments must be a JSON object", file=sys.stderr)
        return 2
    approver = None if args.approver == "skip" else command_approver(args.approver)
    results = run(
        args.url,
        approver=approver,
        capability=args.capability,
        arguments=arguments,
        timeout=args.timeout,
        budget=args.budget,
        only=args.only,
    )
    text = report.text(args.url, results)
    sys.stdout.write(text)
    if args.output:
        args.output.write_text(text)
    if args.junit_xml:
        args.junit_xml.write_text(report.junit_xml(args.url, results))
    return 0 if report.conformant(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
