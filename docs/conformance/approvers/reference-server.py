#!/usr/bin/env python3
"""Approver for agentauth-conformance against the TypeScript reference server.

    agentauth-conformance http://127.0.0.1:4100 --approver \
        'python3 docs/conformance/approvers/reference-server.py {agent_id} {user_code}'

Signs up a fresh person (a Better Auth session cookie) and approves through the reference's
own endpoint, as its README shows. ``REFERENCE_URL`` (default http://127.0.0.1:4100) is the
origin. Standard library only; every request has a timeout.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import sys
import urllib.error
import urllib.request
import uuid

TIMEOUT = 10


def main(agent_id: str, user_code: str) -> int:
    origin = os.environ.get("REFERENCE_URL", "http://127.0.0.1:4100").rstrip("/")
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )

    def post(path: str, body: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(  # noqa: S310 - the operator's own server
            origin + "/api/auth" + path,
            data=json.dumps(body).encode(),
            headers={"Origin": origin, "Content-Type": "application/json"},
        )
        try:
            with opener.open(request, timeout=TIMEOUT) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    status, text = post(
        "/sign-up/email",
        {
            "email": f"conformance-{uuid.uuid4().hex[:12]}@example.com",
            "password": "correct-horse-battery",
            "name": "Conformance approver",
        },
    )
    if status != 200:
        print(f"sign-up failed: {status} {text[:300]}", file=sys.stderr)
        return 1
    status, text = post(
        "/agent/approve-capability",
        {"agent_id": agent_id, "action": "approve", "user_code": user_code},
    )
    if status != 200:
        print(f"approve failed: {status} {text[:300]}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: reference-server.py AGENT_ID USER_CODE", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
