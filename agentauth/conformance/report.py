"""The run's two outputs: a text report for people and JUnit XML for CI dashboards."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence

from .model import CheckResult, Level, Outcome

MARK = {Outcome.PASS: "PASS", Outcome.FAIL: "FAIL", Outcome.SKIP: "SKIP"}


def summary(results: Sequence[CheckResult]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for r in results:
        counts[r.outcome.value] += 1
        if r.outcome is Outcome.FAIL:
            counts[f"fail_{r.level.value.lower()}"] += 1
    return counts


def conformant(results: Sequence[CheckResult]) -> bool:
    """No MUST check failed (skips are not failures; the report says why each was skipped)."""
    return not any(r.outcome is Outcome.FAIL and r.level is Level.MUST for r in results)


def text(url: str, results: Sequence[CheckResult]) -> str:
    lines = [f"Agent Auth conformance report for {url}", ""]
    width = max((len(r.id) for r in results), default=10)
    for r in results:
        line = f"{MARK[r.outcome]}  {r.level.value:<6} {r.id:<{width}}  {r.section:<18} {r.title}"
        lines.append(line.rstrip())
        if r.detail:
            lines.append(f"{'':>6}{'':<7}{'':<{width}}  -> {r.detail}")
    c = summary(results)
    lines += [
        "",
        f"{len(results)} checks: {c['pass']} passed, {c['fail']} failed "
        f"({c['fail_must']} MUST, {c['fail_should']} SHOULD), {c['skip']} skipped",
        "conformant: " + ("yes (no MUST check failed)" if conformant(results) else "no"),
    ]
    return "\n".join(lines) + "\n"


def junit_xml(url: str, results: Sequence[CheckResult]) -> str:
    c = summary(results)
    suite = ET.Element(
        "testsuite",
        name="agentauth-conformance",
        tests=str(len(results)),
        failures=str(c["fail"]),
        skipped=str(c["skip"]),
        errors="0",
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="url", value=url)
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"conformance.{r.id.split('.')[0]}",
            name=f"{r.id} [{r.level.value} {r.section}] {r.title}",
            time=f"{r.seconds:.3f}",
        )
        if r.outcome is Outcome.FAIL:
            ET.SubElement(
                case, "failure", message=r.detail[:500], type=r.level.value
            ).text = r.detail
        elif r.outcome is Outcome.SKIP:
            ET.SubElement(case, "skipped", message=r.detail[:500])
        elif r.detail:
            ET.SubElement(case, "system-out").text = r.detail
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
