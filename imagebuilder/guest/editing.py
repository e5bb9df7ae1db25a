"""The `edit` operation's expressions: Perl substitutions (`s/^x/y/g`), run in Python.

virt-customize's --edit runs a Perl expression over each line of a file, like `perl -pe EXPR`.
Almost every real use is one or more `s/PATTERN/REPLACEMENT/FLAGS` substitutions, so those are
parsed here and applied with Python's `re`, translated to keep Perl's meaning:

* the file is handled as bytes, line by line (each line with its newline, as `$_` in `perl -p`);
  patterns match bytes, and `\\w`, `\\d`, `\\s` are ASCII classes as in Perl without `use utf8`;
* flags g, i, m, s, x; delimiters of any kind (`s,a,b,`, `s{a}{b}`); several substitutions
  separated by `;`;
* in the replacement: `$1`, `${1}`, `$&`, `$+{name}`, `\\1`, and the escapes `\\n \\t \\r \\e \\0 \\xHH`.

Anything else (other Perl code, `e` and `r` flags, `\\U`/`\\L` case changes, variables, `\\Q`, …)
is not guessed at: such an expression runs with the guest's own `perl -p -i -e` instead, and fails
with a clear error in a guest without perl.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

_BRACKETS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_FLAGS = {"g": 0, "i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_HARMLESS_FLAGS = set("opdual")
_POSIX_CLASSES = {
    "alpha": "A-Za-z", "digit": "0-9", "alnum": "A-Za-z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "punct": r"!-/:-@\[-`{-~", "xdigit": "0-9A-Fa-f",
    "word": "A-Za-z0-9_", "cntrl": r"\x00-\x1f\x7f", "print": r"\x20-\x7e", "graph": r"\x21-\x7e",
}
_UNSUPPORTED_PATTERN_ESCAPES = set("QEKGRvVpPXNlLuUC")


class NeedsPerl(Exception):
    """The expression is valid Perl, perhaps, but not a substitution this module runs itself."""


@dataclass(frozen=True)
class Substitution:
    """One compiled `s///`."""

    pattern: re.Pattern[str]
    replace: Callable[[re.Match[str]], str]
    count: int


@dataclass(frozen=True)
class Expression:
    """A parsed edit expression; its one field, the source text, is its identity (for stage keys).

    `substitutions` (compiled once, cached) is None when the guest's perl must run it.
    """

    source: str

    @property
    def substitutions(self) -> tuple[Substitution, ...] | None:
        """The compiled substitutions, or None for Perl code left to the guest."""
        return _compile(self.source)

    @property
    def needs_perl(self) -> bool:
        """True if the guest's perl must run it."""
        return self.substitutions is None

    def apply(self, content: bytes) -> bytes:
        """Run the substitutions over each line of content (bytes in, bytes out)."""
        if self.substitutions is None:
            raise NeedsPerl(self.source)
        text = content.decode("latin-1")
        out = []
        for line in text.splitlines(keepends=True):
            for sub in self.substitutions:
                line = sub.pattern.sub(sub.replace, line, count=sub.count)
            out.append(line)
        return "".join(out).encode("latin-1")


def parse(source: str) -> Expression:
    """Parse an edit expression; ValueError for a malformed `s///`, Perl fallback for other code."""
    if not source.strip():
        raise ValueError("the edit expression is empty")
    _compile(source)  # refuse a malformed s/// now, at validation
    return Expression(source)


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> tuple[Substitution, ...] | None:
    try:
        return tuple(_parse_all(source))
    except NeedsPerl:
        return None


def _parse_all(source: str) -> list[Substitution]:
    subs, pos = [], 0
    while True:
        pos = _skip_space(source, pos)
        if pos >= len(source):
            break
        if source[pos] != "s" or pos + 1 >= len(source) or source[pos + 1].isalnum() \
                or source[pos + 1].isspace() or source[pos + 1] in "_=":
            raise NeedsPerl(source)
        sub, pos = _parse_one(source, pos + 1)
        subs.append(sub)
        pos = _skip_space(source, pos)
        if pos < len(source):
            if source[pos] != ";":
                raise NeedsPerl(source)
            pos += 1
    if not subs:
        raise NeedsPerl(source)
    return subs


def _skip_space(source: str, pos: int) -> int:
    while pos < len(source) and source[pos].isspace():
        pos += 1
    return pos


def _parse_one(source: str, pos: int) -> tuple[Substitution, int]:
    opener = source[pos]
    pattern, pos = _delimited(source, pos)
    if opener in _BRACKETS:
        pos = _skip_space(source, pos)
        if pos >= len(source):
            raise ValueError(f"substitution {source!r} has no replacement part")
        replacement_delim = source[pos]
        replacement, pos = _delimited(source, pos)
    else:
        replacement_delim = opener
        replacement, pos = _delimited(source, pos - 1)
    flags_start = pos
    while pos < len(source) and source[pos].isalpha():
        pos += 1
    flags = source[flags_start:pos]
    re_flags = re.ASCII
    for letter in flags:
        if letter in _FLAGS:
            re_flags |= _FLAGS[letter]
        elif letter not in _HARMLESS_FLAGS:
            raise NeedsPerl(source)  # e, ee, r, n, c … are Perl's business
    if replacement_delim == "'" or not pattern:
        raise NeedsPerl(source)  # no interpolation / "last pattern": rare, leave them to perl
    try:
        compiled = re.compile(_translate_pattern(pattern, opener), re_flags)
    except re.error:
        raise NeedsPerl(source) from None
    return Substitution(compiled, _translate_replacement(replacement, replacement_delim),
                        0 if "g" in flags else 1), pos


def _delimited(source: str, pos: int) -> tuple[str, int]:
    """The text between source[pos] (an opening delimiter) and its closing one; returns (text, next pos)."""
    opener = source[pos]
    closer = _BRACKETS.get(opener, opener)
    depth, i, out = 0, pos + 1, []
    while i < len(source):
        char = source[i]
        if char == "\\" and i + 1 < len(source):
            out.append(source[i:i + 2])
            i += 2
            continue
        if char == closer and depth == 0:
            return "".join(out), i + 1
        if opener != closer:
            if char == opener:
                depth += 1
            elif char == closer:
                depth -= 1
        out.append(char)
        i += 1
    raise ValueError(f"unterminated substitution in {source!r} (missing closing '{closer}')")


def _to_bytes_text(text: str) -> str:
    """Perl without `use utf8` sees the expression as bytes; so does this module (via latin-1)."""
    return text.encode("utf-8").decode("latin-1")


def _translate_pattern(pattern: str, delimiter: str) -> str:
    pattern = _to_bytes_text(pattern)
    out, i = [], 0
    in_class = False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt in (delimiter, _BRACKETS.get(delimiter, delimiter)) and not nxt.isalnum():
                out.append(re.escape(nxt))
            elif nxt in _UNSUPPORTED_PATTERN_ESCAPES:
                raise NeedsPerl(pattern)
            elif nxt == "z":
                out.append(r"\Z")
            elif nxt == "Z":
                out.append(r"(?=\n?\Z)")
            elif nxt == "h":
                out.append(r"[ \t]" if not in_class else r" \t")
            elif nxt == "H":
                if in_class:
                    raise NeedsPerl(pattern)
                out.append(r"[^ \t]")
            elif nxt == "x" and i + 2 < len(pattern) and pattern[i + 2] == "{":
                end = pattern.find("}", i + 3)
                if end < 0:
                    raise NeedsPerl(pattern)
                try:
                    out.append(re.escape(chr(int(pattern[i + 3:end], 16))))
                except ValueError:
                    raise NeedsPerl(pattern) from None
                i = end + 1
                continue
            elif nxt == "k" and i + 2 < len(pattern) and pattern[i + 2] in "<{'":
                close = {"<": ">", "{": "}", "'": "'"}[pattern[i + 2]]
                end = pattern.find(close, i + 3)
                if end < 0:
                    raise NeedsPerl(pattern)
                out.append(f"(?P={pattern[i + 3:end]})")
                i = end + 1
                continue
            else:
                out.append(char + nxt)
            i += 2
            continue
        if in_class:
            if char == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2:end] if end > 0 else ""
                negate = name.startswith("^")
                if negate or name not in _POSIX_CLASSES:
                    raise NeedsPerl(pattern)
                out.append(_POSIX_CLASSES[name])
                i = end + 2
                continue
            if char == "]":
                in_class = False
            out.append(char)
            i += 1
            continue
        if char == "[":
            in_class = True
            out.append(char)
            i += 1
            if i < len(pattern) and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < len(pattern) and pattern[i] == "]":
                out.append(r"\]")
                i += 1
            continue
        if char in "$@" and i + 1 < len(pattern) and (pattern[i + 1].isalnum() or pattern[i + 1] in "_{:"):
            raise NeedsPerl(pattern)  # variable interpolation
        if char == "(" and pattern.startswith("(?<", i) and i + 3 < len(pattern) and pattern[i + 3] not in "=!":
            out.append("(?P<")
            i += 3
            continue
        out.append(char)
        i += 1
    return "".join(out)


_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "e": "\x1b", "a": "\x07", "0": "\0"}


def _translate_replacement(replacement: str, delimiter: str) -> Callable[[re.Match[str]], str]:
    text = _to_bytes_text(replacement)
    parts: list[str | tuple[str, int | str]] = []
    literal: list[str] = []

    def group(ref: int | str) -> None:
        parts.append("".join(literal))
        literal.clear()
        parts.append(("g", ref))

    i = 0
    while i < len(text):
        char = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if char == "\\" and nxt:
            if nxt in "uUlLEQ":
                raise NeedsPerl(replacement)
            if nxt in "123456789":
                group(int(nxt))
            elif nxt in _SIMPLE_ESCAPES:
                literal.append(_SIMPLE_ESCAPES[nxt])
            elif nxt == "x":
                match = re.match(r"\{([0-9A-Fa-f]+)\}|([0-9A-Fa-f]{1,2})", text[i + 2:])
                if not match:
                    raise NeedsPerl(replacement)
                literal.append(chr(int(match.group(1) or match.group(2), 16)))
                i += 2 + match.end()
                continue
            else:
                literal.append(nxt)
            i += 2
            continue
        if char == "$" and nxt:
            match = re.match(r"(\d+)|\{(\d+)\}|&|\+\{(\w+)\}", text[i + 1:])
            if match:
                if match.group(0) == "&":
                    group(0)
                elif match.group(3):
                    group(match.group(3))
                else:
                    group(int(match.group(1) or match.group(2)))
                i += 1 + match.end()
                continue
            if nxt.isalpha() or nxt in "_{:$":
                raise NeedsPerl(replacement)  # a Perl variable
        if char == "@" and nxt and (nxt.isalpha() or nxt in "_{:$"):
            raise NeedsPerl(replacement)  # Perl would interpolate an array here
        literal.append(char)
        i += 1
    parts.append("".join(literal))

    def replace(match: re.Match[str]) -> str:
        out = []
        for part in parts:
            if isinstance(part, tuple):
                try:
                    out.append(match.group(part[1]) or "")
                except IndexError:  # Perl gives "" for a group the pattern does not have
                    out.append("")
            else:
                out.append(part)
        return "".join(out)

    return replace
