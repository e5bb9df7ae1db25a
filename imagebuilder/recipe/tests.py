"""[[tests]]: the checks an image must pass, offline (files, packages) or booted (commands)."""

from __future__ import annotations

import re
from typing import Any

from imagebuilder import units, values
from imagebuilder.checks import Check
from imagebuilder.recipe.tables import Loader, Table


def parse_tests(loader: Loader, items: list[Any]) -> tuple[Check, ...]:
    """Each [[tests]] table: a command, a file or a package to check; names must differ."""
    checks = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise loader.error(("tests", index), "each test is a table: write [[tests]] with command, file or package")
        table = Table(loader, item, ("tests", index))
        kinds = [k for k in ("command", "file", "package") if k in item]
        if len(kinds) != 1:
            raise table.error(kinds[1] if len(kinds) > 1 else None,
                              "a test checks exactly one of 'command', 'file' or 'package'")
        kind = kinds[0]
        subject = table.get(kind, str)
        line = loader.line(("tests", index, kind))
        if kind == "command":
            stdout = table.convert("stdout", str, _check_regex)
            check = Check(name=table.get("name", str, subject), line=line, command=subject,
                          exit_code=table.get("exit_code", int, 0), stdout=stdout,
                          timeout=table.convert("timeout", (str, int), units.parse_duration, 60))
        elif kind == "file":
            check = Check(name=table.get("name", str, f"file {subject}"), line=line,
                          file=table.convert("file", str, values.guest_path),
                          contains=table.convert("contains", str, _check_regex))
        else:
            check = Check(name=table.get("name", str, f"package {subject}"), line=line,
                          package=table.convert("package", str, lambda p: values.packages([p])[0]))
        table.finish()
        checks.append(check)
    names = [c.name for c in checks]
    for index, check in enumerate(checks):
        if names.index(check.name) != index:
            raise loader.error(("tests", index, "name"), f"another test is already named '{check.name}'")
    return tuple(checks)


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern
