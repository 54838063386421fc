"""``agentauth-conformance`` against our own server, over real HTTP (``live_server``).

The main test is the bar: our server passes every MUST check the
checker has. People's approvals go through ``agentauth_approve`` (the operator path), called
in-process because the live server's test database is not visible to a subprocess. The other
tests keep the checker honest: it must notice a rule being broken, give skip reasons, never
hang on a silent server, and stay importable without Django.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from agentauth.conformance import Level, Outcome, report, run
from agentauth.conformance.approvers import ApprovalFailed, command_approver
from agentauth.conformance.model import CheckResult
from example_project.support.models import Ticket

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(live_server: Any, settings: Any, user: Any) -> str:
    """Our server at ``live_server`` with the example project's ticket.read and ticket 1."""
    settings.AGENTAUTH_ISSUER = live_server.url + "/api/auth"
    settings.AGENTAUTH_APPROVAL_INTERVAL = 1
    Ticket.objects.create(subject="Conformance", body="the ticket the checker reads")
    return str(live_server.url)


def operator_approver(agent_id: str, user_code: str, verification_uri: str) -> None:
    call_command("agentauth_approve", agent_id, "--user", "alice", stdout=StringIO())


def by_id(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.id: r for r in results}


def test_our_server_passes_every_must_check(server: str) -> None:
    ticket_id = str(Ticket.objects.get().pk)
    results = run(
        server, approver=operator_approver, arguments={"ticket_id": ticket_id}, budget=300
    )
    failed = [f"{r.id}: {r.detail}" for r in results if r.outcome is Outcome.FAIL]
    must_failed = [
        f"{r.id}: {r.detail}"
        for r in results
        if r.outcome is Outcome.FAIL and r.level is Level.MUST
    ]
    assert not must_failed, must_failed
    assert report.conformant(results)
    # Only what cannot apply to ticket.read is skipped: async/stream shapes, optional jwks_uri.
    skipped = {r.id for r in results if r.outcome is Outcome.SKIP}
    assert skipped <= {
        "discovery.field.jwks_uri",
        "execute.async_poll",
        "execute.stream_done",
    }, skipped
    # The one SHOULD we knowingly miss: execution also accepts aud = issuer by default (§6.10).
    assert [f.split(":")[0] for f in failed] == ["agent_jwt.aud_issuer_at_execute"], failed


def test_the_checker_notices_a_broken_rule(server: str, settings: Any) -> None:
    # Accepting the issuer as execution audience fails the check; turning it off passes it.
    ticket_id = str(Ticket.objects.get().pk)
    kwargs: dict[str, Any] = {
        "approver": operator_approver,
        "arguments": {"ticket_id": ticket_id},
        "only": "agent_jwt.aud_issuer",
    }
    settings.AGENTAUTH_EXECUTE_ACCEPTS_ISSUER_AUD = True
    accepted = by_id(run(server, **kwargs))["agent_jwt.aud_issuer_at_execute"]
    settings.AGENTAUTH_EXECUTE_ACCEPTS_ISSUER_AUD = False
    refused = by_id(run(server, **kwargs))["agent_jwt.aud_issuer_at_execute"]
    assert accepted.outcome is Outcome.FAIL and "accepted with 200" in accepted.detail
    assert refused.outcome is Outcome.PASS


@pytest.mark.parametrize(
    ("capability", "mode_check"),
    [("slow_report", "execute.async_poll"), ("count_up", "execute.stream_done")],
)
def test_async_and_stream_capabilities_are_checked(
    server: str, capability: str, mode_check: str
) -> None:
    # tests.testapp's slow_report runs async (eager Celery) and count_up streams (§5.11).
    results = by_id(
        run(
            server,
            approver=operator_approver,
            capability=capability,
            arguments={"n": 3},
            only="execute.",
        )
    )
    assert results["execute.response"].outcome is Outcome.PASS, results["execute.response"]
    assert results[mode_check].outcome is Outcome.PASS, results[mode_check]


def test_without_an_approver_approval_checks_are_skipped_with_the_reason(server: str) -> None:
    results = by_id(run(server, approver=None, budget=120))
    assert results["discovery.field.issuer"].outcome is Outcome.PASS
    assert results["host_jwt.alg_none"].outcome is Outcome.PASS
    approved = results["registration.approved"]
    assert approved.outcome is Outcome.SKIP
    assert "--approver skip" in approved.detail
    assert results["lifecycle.revoke"].outcome is Outcome.SKIP


def test_a_rate_limited_registration_says_which_limit_to_raise(server: str, settings: Any) -> None:
    # The checker registers every agent under a new host from one address; a server that keeps
    # §8.13's limit on unknown hosts refuses it part way, and the report must say why.
    from django.core.cache import cache

    cache.clear()
    settings.AGENTAUTH_RATE_LIMITS = {"register_unknown_host": "1/hour"}
    try:
        results = by_id(run(server, approver=operator_approver, only="registration."))
    finally:
        cache.clear()
    approved = results["registration.approved"]
    assert approved.outcome is Outcome.FAIL
    assert "429" in approved.detail and "raise the server's limit" in approved.detail


def test_conformance_settings_raise_only_the_unknown_host_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # .ci/run serves the example with these settings; nothing else may differ from the example.
    import importlib

    monkeypatch.setenv("DJANGO_SECRET_KEY", "only-for-this-import")
    example = importlib.import_module("example_project.settings")
    conformance = importlib.import_module("example_project.settings_conformance")

    def names(module: Any) -> dict[str, Any]:
        return {k: v for k, v in vars(module).items() if k.isupper()}

    differ = {k for k in names(conformance) if names(conformance)[k] != names(example).get(k)}
    assert differ == {"AGENTAUTH_RATE_LIMITS"}
    assert conformance.AGENTAUTH_RATE_LIMITS == {"register_unknown_host": "1000/hour"}


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_silent_server_fails_discovery_and_the_rest_is_skipped(silent_server: str) -> None:
    results = run(silent_server, approver=None, timeout=0.5, budget=5)
    first, rest = results[0], results[1:]
    assert first.id == "discovery.published" and first.outcome is Outcome.FAIL
    assert "no usable answer within" in first.detail
    assert all(r.outcome is Outcome.SKIP for r in rest)


def test_junit_xml_and_text_report_carry_every_result() -> None:
    results = [
        CheckResult("a.one", "§5.1", Level.MUST, "first", Outcome.PASS, "", 0.1),
        CheckResult("a.two", "§4.6", Level.MUST, "second", Outcome.FAIL, "accepted", 0.1),
        CheckResult("b.one", "§5.11", Level.SHOULD, "third", Outcome.SKIP, "no async", 0.0),
    ]
    root = ET.fromstring(report.junit_xml("http://x", results))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = suite.findall("testcase")
    assert cases[1].find("failure") is not None and cases[2].find("skipped") is not None
    text = report.text("http://x", results)
    assert "3 checks: 1 passed, 1 failed (1 MUST, 0 SHOULD), 1 skipped" in text
    assert "conformant: no" in text


def test_command_approver_fills_placeholders_without_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "args.json"
    script = tmp_path / "approve.py"
    script.write_text(
        f"import json, sys\nopen({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    approve = command_approver(f"{sys.executable} {script} --agent {{agent_id}} {{user_code}}")
    approve("agt_1", "ABCD-EFGH; touch /tmp/pwned", "https://x/device")
    assert json.loads(out.read_text()) == ["--agent", "agt_1", "ABCD-EFGH; touch /tmp/pwned"]
    failing = command_approver(f"{sys.executable} -c 'import sys; sys.exit(3)'")
    with pytest.raises(ApprovalFailed, match="exited 3"):
        failing("agt_1", "", "")


def test_the_checker_imports_no_django() -> None:
    code = (
        "import sys, agentauth.conformance.cli\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
