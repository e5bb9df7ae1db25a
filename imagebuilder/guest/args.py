"""Argument parsers shared by operations: each takes a TOML value and returns a normalized value.

They raise ValueError with a message meant for the user; the recipe loader adds file, line and key.
Host paths are resolved against the recipe's directory and must exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._:~=/-]*$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]*\$?$")


@dataclass(frozen=True)
class ArgContext:
    """What parsers need to know: the recipe's directory, for host paths."""

    base_dir: Path


def text(value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    if not value:
        raise ValueError("must not be empty")
    return value


def guest_path(value: Any) -> str:
    """An absolute path inside the guest."""
    path = text(value)
    if not path.startswith("/"):
        raise ValueError(f"guest path '{path}' must be absolute")
    if "\0" in path:
        raise ValueError("guest path contains a NUL byte")
    return path


def host_path(value: Any, ctx: ArgContext, want_dir: bool | None = False) -> Path:
    """A host file (or directory when want_dir is None/True) relative to the recipe; it must exist."""
    path = (ctx.base_dir / text(value)).resolve()
    if not path.exists():
        raise ValueError(f"host file '{value}' does not exist (looked for {path})")
    if want_dir is False and not path.is_file():
        raise ValueError(f"host path '{value}' is not a file")
    return path


def hostname(value: Any) -> str:
    """A valid host name (RFC 1123)."""
    name = text(value)
    if not _HOSTNAME.match(name):
        raise ValueError(f"'{name}' is not a valid host name")
    return name


def timezone(value: Any) -> str:
    """A tz database name such as Europe/Paris."""
    name = text(value)
    if not _TIMEZONE.match(name) or ".." in name:
        raise ValueError(f"'{name}' is not a time zone name such as \"Europe/Paris\"")
    return name


def packages(value: Any) -> tuple[str, ...]:
    """A list of package names, or a comma-separated string like virt-customize's --install."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError("expected a non-empty list of package names")
    names = []
    for item in items:
        if not isinstance(item, str) or not _PACKAGE.match(item.strip()):
            raise ValueError(f"'{item}' is not a package name")
        names.append(item.strip())
    return tuple(names)


def user_name(value: Any) -> str:
    """A login name."""
    name = text(value)
    if not _USER.match(name) or len(name) > 32:
        raise ValueError(f"'{name}' is not a valid user name")
    return name


def pair(value: Any, first: str, second: str) -> tuple[str, str]:
    """A table {first=…, second=…} or virt-customize's "FIRST:SECOND" string."""
    if isinstance(value, str):
        left, sep, right = value.partition(":")
        if not sep:
            raise ValueError(f"expected \"{first.upper()}:{second.upper()}\" or a table with '{first}' and '{second}'")
        return left, right
    if isinstance(value, dict):
        unknown = sorted(set(value) - {first, second})
        if unknown:
            raise ValueError(f"unknown key '{unknown[0]}' (expected '{first}' and '{second}')")
        missing = [k for k in (first, second) if k not in value]
        if missing:
            raise ValueError(f"missing key '{missing[0]}'")
        if not all(isinstance(value[k], str) for k in (first, second)):
            raise ValueError(f"'{first}' and '{second}' must be strings")
        return value[first], value[second]
    raise ValueError(f"expected a string or a table with '{first}' and '{second}'")
