"""The line grammar of virt-builder's index files and repos.d files, read leniently.

As virt-builder's scanner (builder/index-scan.l) reads a line:

- `[NAME]` (letters, digits, `.`, `_`, `-`; blanks may follow) starts a section;
- `key=value` or `key[subkey]=value` at the start of a line is a field (keys are letters, digits,
  `_` and `.`, subkeys may also hold `,`; no space around `=`; the value is the rest of the line);
- a line starting with a space or a tab continues the previous field's value on a new line, minus
  that first blank (multi-line `notes`);
- `#` at the start of a line is a comment.

Blank lines: libguestfs up to 1.48 ended a section at an empty line, current libguestfs ignores
them anywhere. Both forms read the same here: an empty line never ends a section. An empty line
between two continuation lines is a blank line of the value, because gpg strips the trailing blank
of a " " line in the text it verifies.

Nothing here raises: a line that cannot be read is a Problem of the section it is in (the caller
skips that section), or of the file when it comes before the first section. CRLF line ends and a
missing final newline are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADER = re.compile(r"\[([A-Za-z0-9._-]+)\][ \t]*")
_FIELD = re.compile(r"([A-Za-z0-9_.]+)(?:\[([A-Za-z0-9_.,]+)\])?=(.*)")


@dataclass(frozen=True)
class Problem:
    """A line that could not be read, and why."""

    line: int
    text: str


class Unusable(Exception):
    """A section that cannot be used: the line at fault and why (the callers skip the section)."""

    def __init__(self, line: int, problem: str):
        super().__init__(problem)
        self.line, self.problem = line, problem


@dataclass(frozen=True)
class Field:
    """One `key[subkey]=value` line (with its continuation lines) and the line it starts on."""

    key: str
    subkey: str | None
    value: str
    line: int

    @property
    def label(self) -> str:
        """The key as written: `key` or `key[subkey]`."""
        return f"{self.key}[{self.subkey}]" if self.subkey is not None else self.key


@dataclass(frozen=True)
class Section:
    """A `[name]` header (None when the header itself is malformed), its fields in file order, and
    the lines inside it that could not be read."""

    name: str | None
    line: int
    fields: tuple[Field, ...]
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class Parsed:
    """The sections of a file, and the unreadable lines before its first section."""

    sections: tuple[Section, ...]
    problems: tuple[Problem, ...] = ()


@dataclass
class _Open:
    name: str | None
    line: int
    fields: list[list] = field(default_factory=list)  # [key, subkey, [value lines], line]
    problems: list[Problem] = field(default_factory=list)

    def close(self) -> Section:
        return Section(self.name, self.line, tuple(Field(k, s, "\n".join(v), n) for k, s, v, n in self.fields),
                       tuple(self.problems))


def read(text: str, first_line: int = 1) -> Parsed:
    """Split text into sections of fields. first_line is the number of text's first line in the
    file the user sees (a signed index has a few header lines before the signed text)."""
    sections: list[Section] = []
    outside: list[Problem] = []
    current: _Open | None = None
    value: list | None = None  # the field that continuation lines extend
    blanks = 0
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines, first_line):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.startswith("#"):
            continue
        if not line:
            blanks += 1
            continue
        problems = current.problems if current else outside
        if line[:1] in (" ", "\t"):
            if value is not None:
                value[2].extend([""] * blanks + [line[1:]])
            elif not problems:
                problems.append(Problem(number, "a line starting with a space continues a field, but no field "
                                                "precedes it"))
            blanks = 0
            continue
        blanks = 0
        if line.startswith("["):
            if current is not None:
                sections.append(current.close())
            match = _HEADER.fullmatch(line)
            current, value = _Open(match.group(1) if match else None, number), None
            if not match:
                current.problems.append(Problem(number, f"invalid section header {line!r}: write [NAME] with NAME "
                                                        "made of letters, digits, '.', '_' and '-'"))
            continue
        match = _FIELD.fullmatch(line)
        if current is None:
            outside.append(Problem(number, f"field '{line.split('=', 1)[0]}' is outside any section "
                                           "(before the first [NAME])" if match else _explain(line)))
            continue
        if not match:
            current.problems.append(Problem(number, _explain(line)))
            value = None
            continue
        value = [match.group(1), match.group(2), [match.group(3)], number]
        current.fields.append(value)
    if current is not None:
        sections.append(current.close())
    return Parsed(tuple(sections), tuple(outside))


def _explain(line: str) -> str:
    if "=" not in line:
        return f"expected 'key=value', '[NAME]', a '#' comment or an empty line, got {line!r}"
    key = line.split("=", 1)[0]
    if key != key.rstrip():
        return f"no space is allowed before '=' (in {line!r})"
    if not key:
        return "a field needs a key before '='"
    return f"invalid key '{key}': keys are letters, digits, '_' and '.', optionally followed by [SUBKEY]"
