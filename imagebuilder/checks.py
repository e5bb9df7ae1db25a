"""Golden-image checks ([[tests]] in a recipe): what each one asks, and the report they produce.

A check is either run in the booted guest through the guest agent (`command`), or made offline
on the image (`file`, `package`).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Check:
    """One [[tests]] entry."""

    name: str
    line: int | None
    command: str | None = None
    exit_code: int = 0
    stdout: str | None = None
    timeout: int = 60
    file: str | None = None
    contains: str | None = None
    package: str | None = None

    @property
    def kind(self) -> str:
        """'command' (needs a booted guest), 'file' or 'package' (offline)."""
        return "command" if self.command else "file" if self.file else "package"


@dataclass
class Outcome:
    """What happened to one check."""

    check: Check
    passed: bool
    seconds: float
    message: str = ""
    output: str = ""


@dataclass
class Report:
    """All outcomes of one `imagebuilder test` run."""

    suite: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        """The outcomes that did not pass."""
        return [o for o in self.outcomes if not o.passed]

    def junit(self, path: Path) -> None:
        """Write a JUnit XML report (one testsuite, one testcase per check)."""
        suite = ET.Element("testsuite", name=self.suite, tests=str(len(self.outcomes)),
                           failures=str(len(self.failed)), errors="0",
                           time=f"{sum(o.seconds for o in self.outcomes):.3f}")
        for outcome in self.outcomes:
            case = ET.SubElement(suite, "testcase", classname=f"{self.suite}.{outcome.check.kind}",
                                 name=outcome.check.name, time=f"{outcome.seconds:.3f}")
            if not outcome.passed:
                ET.SubElement(case, "failure", message=outcome.message).text = outcome.output
            elif outcome.output:
                ET.SubElement(case, "system-out").text = outcome.output
        root = ET.Element("testsuites", tests=suite.get("tests"), failures=suite.get("failures"))
        root.append(suite)
        ET.indent(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)

    def summary(self) -> dict:
        """The JSON summary."""
        return {"suite": self.suite, "total": len(self.outcomes), "failed": len(self.failed),
                "checks": [{"name": o.check.name, "kind": o.check.kind, "passed": o.passed,
                            "seconds": round(o.seconds, 3), "message": o.message} for o in self.outcomes]}

    def write_summary(self, path: Path) -> None:
        """Write the JSON summary."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")


def judge_command(check: Check, exit_code: int, stdout: str) -> tuple[bool, str]:
    """(passed, message) for a command's result."""
    if exit_code != check.exit_code:
        return False, f"exit code {exit_code}, expected {check.exit_code}"
    if check.stdout is not None and not re.search(check.stdout, stdout, re.MULTILINE):
        return False, f"output does not match /{check.stdout}/"
    return True, ""
