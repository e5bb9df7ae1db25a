"""Line numbers for keys in TOML source.

`tomllib` gives no positions, so this module re-scans the source with a tiny
tolerant parser that only tracks *where* each key path is defined.  It knows
enough TOML (strings of all four kinds, comments, arrays, inline tables,
dotted keys, table and array-of-tables headers) to never mistake the content
of a string or a comment for a key.  `KeyLines` scans a document once and
then answers any number of look-ups, so a recipe's validation costs one scan.
"""

from __future__ import annotations

import bisect
import re
import tomllib

Path = tuple[str | int, ...]

__all__ = ["KeyLines", "key_line", "parse_error_line"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ERROR_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_SCALAR_END = ",]}#\r\n"


class KeyLines:
    """The lines of every key path of one TOML document: the source is scanned once, when made."""

    def __init__(self, source: str) -> None:
        self._lines = _Scanner(source).scan()

    def line(self, path: Path) -> int | None:
        """Return the 1-based line where `path` is defined.

        `path` is a key path into the data `tomllib.loads(source)` returns; an
        int indexes an array (of tables, of inline tables or of plain values).
        If the full path is not found, the line of its longest prefix that is
        found is returned; None if not even the first key is found.
        """
        for end in range(len(path), 0, -1):
            line = self._lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def key_line(source: str, path: Path) -> int | None:
    """The line of one key path in TOML `source` (see KeyLines.line); for many keys, make one KeyLines."""
    return KeyLines(source).line(path)


def parse_error_line(exc: tomllib.TOMLDecodeError) -> int | None:
    """Return the line number of a `tomllib.TOMLDecodeError`, if it has one."""
    lineno = getattr(exc, "lineno", None)  # Python >= 3.14
    if isinstance(lineno, int):
        return lineno
    match = _ERROR_LINE.search(str(exc))
    return int(match.group(1)) if match else None


class _Bad(Exception):
    """The source is not TOML we understand; keep what was found so far."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self.lines: dict[Path, int] = {}
        self.aot_counts: dict[Path, int] = {}  # array-of-tables path -> entries

    # -- results -----------------------------------------------------------

    def scan(self) -> dict[Path, int]:
        try:
            self._document()
        except _Bad:
            pass
        return self.lines

    def _line(self, pos: int) -> int:
        return bisect.bisect_right(self.line_starts, pos)

    def _define(self, path: Path, pos: int) -> None:
        self.lines[path] = self._line(pos)

    def _implicit(self, path: Path, pos: int) -> None:
        self.lines.setdefault(path, self._line(pos))

    # -- low level ---------------------------------------------------------

    def _peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def _expect(self, s: str) -> None:
        if not self.text.startswith(s, self.pos):
            raise _Bad(f"expected {s!r} at {self.pos}")
        self.pos += len(s)

    def _skip_blanks(self) -> None:
        while self._peek() in (" ", "\t"):
            self.pos += 1

    def _skip_comment(self) -> None:
        if self._peek() == "#":
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end

    def _skip_space(self) -> None:
        """Skip blanks, newlines and comments (inside arrays, between statements)."""
        while True:
            self._skip_blanks()
            self._skip_comment()
            if self._peek() in ("\n", "\r"):
                self.pos += 1
            else:
                return

    def _string(self) -> str:
        """Skip a string of any kind at pos; return its raw source text."""
        start = self.pos
        quote = self._peek()
        if self._peek(3) == quote * 3:
            end = self._find_unescaped(quote * 3, start + 3, escapes=quote == '"') + 3
            for _ in range(2):  # the content may end with up to two quotes: """a""""
                if self.text[end : end + 1] == quote:
                    end += 1
        else:
            end = self._find_unescaped(quote, start + 1, escapes=quote == '"') + 1
            if "\n" in self.text[start:end]:
                raise _Bad("newline in single-line string")
        self.pos = end
        return self.text[start:end]

    def _find_unescaped(self, delim: str, pos: int, escapes: bool) -> int:
        while True:
            end = self.text.find(delim, pos)
            if end < 0:
                raise _Bad("unterminated string")
            backslashes = 0
            while escapes and self.text[end - 1 - backslashes] == "\\":
                backslashes += 1
            if backslashes % 2 == 0:
                return end
            pos = end + 1

    # -- grammar -----------------------------------------------------------

    def _key(self) -> list[tuple[str, int]]:
        """Parse a (dotted) key; return its parts with their positions."""
        parts = []
        while True:
            self._skip_blanks()
            start = self.pos
            if self._peek() in ('"', "'"):
                raw = self._string()
                parts.append((_decode_key(raw), start))
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if not match:
                    raise _Bad(f"expected a key at {self.pos}")
                self.pos = match.end()
                parts.append((match.group(), start))
            self._skip_blanks()
            if self._peek() != ".":
                return parts
            self.pos += 1

    def _document(self) -> None:
        table: Path = ()
        while True:
            self._skip_space()
            if self.pos >= len(self.text):
                return
            if self._peek() == "[":
                table = self._header()
            else:
                self._keyval(table)
            self._skip_blanks()
            self._skip_comment()
            if self.pos < len(self.text) and self._peek() not in ("\n", "\r"):
                raise _Bad(f"expected end of line at {self.pos}")

    def _header(self) -> Path:
        start = self.pos
        is_array = self._peek(2) == "[["
        self.pos += 2 if is_array else 1
        keys = [name for name, _ in self._key()]
        self._expect("]]" if is_array else "]")
        path: Path = ()
        for i, name in enumerate(keys):
            path += (name,)
            self._implicit(path, start)
            last = i == len(keys) - 1
            if is_array and last:
                index = self.aot_counts.get(path, 0)
                self.aot_counts[path] = index + 1
                path += (index,)
            elif path in self.aot_counts:  # [steps.write] -> last [[steps]] entry
                path += (self.aot_counts[path] - 1,)
            else:
                continue
            self._implicit(path, start)
        self._define(path, start)
        return path

    def _keyval(self, table: Path) -> None:
        path = table
        for name, pos in self._key():
            path += (name,)
            self._implicit(path, pos)
        self._define(path, pos)
        self._skip_blanks()
        self._expect("=")
        self._skip_blanks()
        self._value(path)

    def _value(self, path: Path) -> None:
        char = self._peek()
        if char in ('"', "'"):
            self._string()
        elif char == "[":
            self._array(path)
        elif char == "{":
            self._inline_table(path)
        else:
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] not in _SCALAR_END:
                self.pos += 1
            if not self.text[start : self.pos].strip():
                raise _Bad(f"expected a value at {start}")

    def _array(self, path: Path) -> None:
        self._expect("[")
        index = 0
        while True:
            self._skip_space()
            if self._peek() == "]":
                break
            self._define(path + (index,), self.pos)
            self._value(path + (index,))
            index += 1
            self._skip_space()
            if self._peek() != ",":
                break
            self.pos += 1
        self._expect("]")

    def _inline_table(self, path: Path) -> None:
        self._expect("{")
        while True:
            self._skip_space()  # newlines are TOML 1.1, but harmless to allow
            if self._peek() == "}":
                break
            self._keyval(path)
            self._skip_space()
            if self._peek() != ",":
                break
            self.pos += 1
        self._expect("}")


def _decode_key(raw: str) -> str:
    """The value of a quoted key as written in the source (escapes resolved)."""
    if raw.startswith("'"):
        return raw[1:-1]
    try:
        return tomllib.loads(f"k = {raw}")["k"]
    except tomllib.TOMLDecodeError:
        return raw[1:-1]
