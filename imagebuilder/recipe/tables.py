"""Reading TOML tables with positions: every error names the file, the line and the key path.

Also the checks of names that more than one section takes (libvirt names, volume names).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from imagebuilder import tomlpos
from imagebuilder.errors import RecipeError
from imagebuilder.suggest import did_you_mean

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class Table:
    """Reads one TOML table, remembering which keys were used so the rest can be rejected."""

    def __init__(self, loader: Loader, data: dict[str, Any], path: tuple[str | int, ...]):
        self.loader, self.data, self.path = loader, data, path
        self.used: set[str] = set()

    def error(self, key: str | None, problem: str) -> RecipeError:
        """The error about `key` of this table (None: the table itself)."""
        return self.loader.error(self.path + ((key,) if key else ()), problem)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        """The value of `key`, checked to be of `kind`; `default` when it is missing."""
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.error(None, f"missing required key '{key}'") if self.path else \
                    self.loader.error((key,), "missing required section")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(_type_name(k) for k in kinds)
            raise self.error(key, f"expected {names}, got {_type_name(type(value))}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """A string that must be one of `choices`."""
        value = self.get(key, str, default)
        if value not in choices:
            raise self.error(key, f"'{value}' is not one of {', '.join(choices)}")
        return value

    def convert(self, key: str, kind: type | tuple[type, ...], parser: Any, default: Any = None) -> Any:
        """The value passed through `parser`, whose ValueError becomes the error of `key`."""
        value = self.get(key, kind)
        if value is None:
            return default
        try:
            return parser(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def table(self, key: str, required: bool = False) -> Table | None:
        """The sub-table `key`, or None when it is missing."""
        value = self.get(key, dict, required=required)
        return None if value is None else Table(self.loader, value, self.path + (key,))

    def tables(self, key: str) -> list[Table]:
        """The tables of an array of tables such as [[output.targets]]."""
        items = self.get(key, list, [])
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise self.error(key, f"each entry is a table: write [[{'.'.join(map(str, self.path + (key,)))}]]")
        return [Table(self.loader, item, self.path + (key, index)) for index, item in enumerate(items)]

    def finish(self, known: tuple[str, ...] = ()) -> None:
        """Reject keys that were neither read nor listed in `known`, suggesting the closest one."""
        allowed = self.used | set(known)
        for key in self.data:
            if key not in allowed:
                raise self.error(key, f"unknown key{did_you_mean(key, allowed)}")


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", dict: "a table",
            list: "an array", float: "a number"}.get(kind, kind.__name__)


class Loader:
    """The recipe file and its text: turns a key path into its line, or into an error at that line."""

    def __init__(self, file: Path, source: str):
        self.file, self.source = file, source
        self.display = str(file)

    @functools.cached_property
    def _key_lines(self) -> tomlpos.KeyLines:
        return tomlpos.KeyLines(self.source)  # the one scan of the source, when a line is first asked for

    def line(self, path: tuple[str | int, ...]) -> int | None:
        """The line of the key at `path` (or of its longest prefix found)."""
        return self._key_lines.line(path)

    def error(self, path: tuple[str | int, ...], problem: str) -> RecipeError:
        """The error about the key at `path` (such as ("steps", 0, "upload")), with its line."""
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
        return RecipeError(self.display, self.line(path), key or None, problem)


def check_name(value: str) -> str:
    """An image, domain, pool or network name; ValueError otherwise."""
    if len(value) > 200:
        raise ValueError(f"'{_clip(value)}' is too long (at most 200 characters)")
    if not _NAME.match(value):
        raise ValueError(f"'{value}' is not a valid name (letters, digits, '_', '.', '+', '-')")
    return value


def check_volume(value: str) -> str:
    """A name libvirt takes for a volume (a file in a dir pool): what storage.check_volume_name checks."""
    problem = None
    if not value:
        problem = "a volume name must not be empty"
    elif "/" in value or "\0" in value or "\n" in value:
        problem = f"'{_clip(value)}' is not a valid volume name: it must not contain '/', a newline or NUL"
    elif value.startswith("."):
        problem = f"'{_clip(value)}' is not a valid volume name: it must not start with '.'"
    elif len(value.encode()) > 255:
        problem = f"'{_clip(value)}' is not a valid volume name: it is longer than 255 bytes"
    if problem:
        raise ValueError(problem)
    return value


def _clip(value: str, length: int = 40) -> str:
    """A long value shortened for a one-line message."""
    return value if len(value) <= length else value[:length] + "…"
