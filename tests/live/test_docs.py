"""Every Python and shell block in README.md and docs/*.md runs, as written, against a live server.

Each document is one session, top to bottom, in a fresh working directory: its Python blocks
share a namespace, its shell lines run in-process (``python manage.py ...`` through
``call_command``, ``agentauth-agent ...`` through the CLI's ``main``, ``curl URL`` as a GET).
The server is pytest-django's ``live_server`` over the example project's data (``seed_demo``);
``http://127.0.0.1:8000`` in a block means that server.

Two things stand in for what a reader does by hand, and nothing else:

- ids a block prints: where the document shows a command's JSON output, ids in it (``agt_...``,
  ``hst_...``) are mapped to the real ones, so later commands that name them work; ``AGENT_ID``
  is the agent the last ``register`` created;
- the person: ``wait_for_approval`` is where the documents say a person approves, so before it
  the test approves the agent as ``demo`` with the documented ``agentauth_approve`` command.

A block the test cannot run (it installs software, starts a server, or is a fragment) is
preceded by ``<!-- docs-test: skip: <why> -->``; keep those few.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from agentauth.capabilities import registry
from agentauth.client import AgentAuthClient, cli
from agentauth.conf import known_setting_names

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEMO_ORIGINS = ("http://127.0.0.1:8000", "https://support.example.com")
SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(.+?)\s*-->")
ID = re.compile(r"\b(?:agt|hst)_[A-Za-z0-9_-]{10,}")

pytestmark = [
    pytest.mark.django_db(transaction=True, reset_sequences=True),
    pytest.mark.skipif(
        not os.environ.get("AGENTAUTH_TEST_DOCS"), reason="docs tier: AGENTAUTH_TEST_DOCS=1"
    ),
]


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    skip: str | None
    output: str | None = None  # the ```json block right after it, if any


def blocks(doc: Path) -> list[Block]:
    lines = doc.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        indent, lang = fence.groups()
        end = i + 1
        while not lines[end].strip().startswith("```"):
            end += 1
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        skip = SKIP.search(previous)
        if lang == "json" and found and found[-1].output is None and found[-1].line > i - 6:
            found[-1].output = code
        if lang in ("python", "sh"):
            found.append(Block(doc, i + 1, lang, code, skip.group(1) if skip else None))
        i = end + 1
    return found


def test_blocks_are_found_and_skips_are_few() -> None:
    every = [b for doc in DOCS for b in blocks(doc)]
    skipped = [b for b in every if b.skip]
    assert len(every) > 30
    assert len(skipped) <= 10, [f"{b.doc.name}:{b.line} {b.skip}" for b in skipped]


@dataclass
class Session:
    base: str
    ns: dict[str, Any] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    last_agent: str | None = None

    def text(self, code: str) -> str:
        for origin in DEMO_ORIGINS:
            code = code.replace(origin, self.base)
        for example, real in self.ids.items():
            code = code.replace(example, real)
        return code

    def learn(self, shown: Any, real: Any) -> None:
        """Map the example ids of a shown output to the ids of the real one."""
        if isinstance(shown, dict) and isinstance(real, dict):
            for key, value in shown.items():
                self.learn(value, real.get(key))
        elif isinstance(shown, list) and isinstance(real, list):
            for a, b in zip(shown, real, strict=False):
                self.learn(a, b)
        elif isinstance(shown, str) and isinstance(real, str) and ID.fullmatch(shown):
            self.ids[shown] = real

    def run_python(self, block: Block) -> None:
        code = self.text(block.code)
        # A project's own app: "from .models import Ticket" is the example app's model.
        code = code.replace("from .models import", "from example_project.support.models import")
        if code.lstrip().startswith("# settings.py"):
            settings_ns: dict[str, Any] = {}
            exec(compile(code, f"{block.doc.name}:{block.line}", "exec"), settings_ns)
            unknown = {n for n in settings_ns if n.startswith("AGENTAUTH_")} - known_setting_names()
            assert not unknown, f"{block.doc.name}:{block.line} sets unknown {unknown}"
            return
        exec(compile(code, f"{block.doc.name}:{block.line}", "exec"), self.ns)

    def run_sh(self, block: Block) -> None:
        code = self.text(block.code).replace("\\\n", " ")
        outputs = []
        for raw in code.splitlines():
            line = raw.split("  #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            if self.last_agent:
                line = line.replace("AGENT_ID", self.last_agent)
            words = shlex.split(line)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                if words[:3] == ["python", "manage.py", "runserver"] or words[:2] == [
                    "make",
                    "demo",
                ]:
                    status = 0  # the live server, over the demo data, is already serving
                elif words[:2] == ["python", "manage.py"]:
                    call_command(*words[2:])
                    status = 0
                elif words[0] == "agentauth-agent":
                    status = cli.main(words[1:])
                elif words[0] == "curl":
                    with urllib.request.urlopen(words[1]) as response:
                        print(response.read().decode())
                    status = 0
                else:
                    raise AssertionError(
                        f"{block.doc.name}:{block.line}: cannot run {line!r}; mark the block "
                        "<!-- docs-test: skip: <why> --> if it is illustrative"
                    )
            expected_failure = "exit 1" in raw
            assert (status != 0) == expected_failure, (block.doc.name, block.line, out.getvalue())
            outputs.append(out.getvalue())
            with contextlib.suppress(ValueError):
                result = json.loads(out.getvalue())
                if isinstance(result, dict) and words[1:2] == ["--state"] and "register" in words:
                    self.last_agent = result.get("agent_id")
        if block.output and outputs:
            with contextlib.suppress(ValueError):
                self.learn(json.loads(self.text(block.output)), json.loads(outputs[-1]))


@pytest.fixture
def person(monkeypatch: pytest.MonkeyPatch) -> None:
    """Approve as ``demo`` where the documents have a person approve (see the module doc)."""
    real = AgentAuthClient.wait_for_approval

    def approve_then_wait(self: AgentAuthClient, agent: Any, **kwargs: Any) -> Any:
        agent_id = agent if isinstance(agent, str) else agent.agent_id
        with contextlib.redirect_stdout(io.StringIO()):
            call_command("agentauth_approve", agent_id, "--user", "demo")
        return real(self, agent, **kwargs)

    monkeypatch.setattr(AgentAuthClient, "wait_for_approval", approve_then_wait)


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_document_runs_as_written(
    doc: Path,
    live_server: Any,
    tmp_path: Path,
    person: None,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    settings.AGENTAUTH_ISSUER = f"{live_server.url}/api/auth"
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["ticket.read"]  # as the example project
    # seed_demo writes the trusted host's key under ./.demo, where the documents read it.
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        call_command("seed_demo")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("INTROSPECTION_SECRET", "a-secret-the-settings-block-reads")
    session = Session(live_server.url)
    runnable = [b for b in blocks(doc) if not b.skip]
    if not runnable:
        pytest.skip(f"{doc.name} has no runnable block")
    saved = dict(registry._by_name)
    try:
        for block in runnable:
            if block.lang == "python" and re.search(
                r"@capability\(|register\(\s*Capability", block.code
            ):
                for name in re.findall(r'(?:@capability\(\s*|name=)"([a-z0-9_.]+)"', block.code):
                    registry.unregister(name)
            try:
                (session.run_python if block.lang == "python" else session.run_sh)(block)
            except Exception as exc:
                raise AssertionError(f"{doc.name}:{block.line} failed: {exc!r}") from exc
    finally:
        registry._by_name.clear()
        registry._by_name.update(saved)
