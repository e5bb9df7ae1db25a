"""The checks of plain recipe values, shared by recipe/ and the operations of guest/: each takes a TOML
value and returns a normalized value. A neutral module of the bottom layer: it imports only `files`.

They raise ValueError with a message meant for the user; the recipe loader adds file, line and key.
Host paths are resolved against the recipe's directory (or the commands file's), must exist, and
are recorded with their content digest in the ArgContext, for the manifest and cache keys.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder.files import file_digest

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
# Never in a package spec of any package manager: shell syntax (specs go to the manager as argv
# elements, so this is not about quoting; such text is a mistake or an attack), and control characters.
_NOT_IN_PACKAGE_SPEC = re.compile(r"[;&|`$'\"\\!{}\x00-\x1f\x7f]")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]*\$?$")
_GROUP = _USER


@dataclass(frozen=True)
class HostFile:
    """A host file or directory a step reads: its path and the sha256 of its content.

    `digest` is None for secrets (password files): a digest of a short secret would let anyone
    holding the manifest guess it.
    """

    path: Path
    digest: str | None

    def record(self) -> dict[str, Any]:
        """The manifest entry."""
        return {"path": str(self.path), "sha256": self.digest} if self.digest else \
            {"path": str(self.path), "secret": True}


@dataclass(frozen=True)
class ArgContext:
    """What parsers need to know.

    `base_dir` is where relative host paths start (the recipe's directory, or a commands file's);
    `recipe_file` names the recipe (random passwords are saved beside it); every host file a parser
    reads is appended to `host_files`.
    """

    base_dir: Path
    recipe_file: Path | None = None
    host_files: list[HostFile] = field(default_factory=list, compare=False)
    root: Path | None = None        # --strict-paths: every host path must resolve inside this directory
    inline_secrets: bool = True     # False with --no-inline-secrets: password:TEXT selectors are refused

    def fresh(self, base_dir: Path | None = None) -> ArgContext:
        """A context for one step: same recipe and policies, an empty host file list."""
        return ArgContext(base_dir or self.base_dir, self.recipe_file, [], self.root, self.inline_secrets)

    def inside(self, raw: str, path: Path) -> Path:
        """`path` (resolved, symlinks followed), or ValueError when --strict-paths is on and it escapes
        the recipe's directory."""
        if self.root is not None and not path.is_relative_to(self.root):
            raise ValueError(f"host path '{raw}' is outside the recipe's directory (--strict-paths)")
        return path


def text(value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    if not value:
        raise ValueError("must not be empty")
    return value


def string(value: Any) -> str:
    """Any string, empty allowed (file content, for example)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    return value


def flag(value: Any) -> bool:
    """An operation without argument: written `name = true` in a recipe."""
    if value is not True:
        raise ValueError("this operation takes no argument: write it as `= true`")
    return True


def guest_path(value: Any) -> str:
    """An absolute path inside the guest."""
    path = text(value)
    if not path.startswith("/"):
        raise ValueError(f"guest path '{path}' must be absolute")
    if "\0" in path:
        raise ValueError("guest path contains a NUL byte")
    return path


def host_path(value: Any, ctx: ArgContext, want_dir: bool | None = False, secret: bool = False) -> Path:
    """A host file (want_dir False), directory (True) or either (None), relative to ctx.base_dir.

    It must exist; it is recorded in ctx.host_files with its content digest.
    """
    raw = text(value)
    try:
        expanded = Path(raw).expanduser()
    except RuntimeError:  # ~user of a user this host does not have
        raise ValueError(f"host path '{raw}': no such user's home directory") from None
    path = ctx.inside(raw, (ctx.base_dir / expanded).resolve())
    if not path.exists():
        raise ValueError(f"host file '{raw}' does not exist (looked for {path})")
    if want_dir is False and not path.is_file():
        raise ValueError(f"host path '{raw}' is not a file")
    if want_dir is True and not path.is_dir():
        raise ValueError(f"host path '{raw}' is not a directory")
    try:
        digest = None if secret else content_digest(path)
    except OSError as exc:
        raise ValueError(f"cannot read host file '{raw}': {exc.strerror}") from None
    ctx.host_files.append(HostFile(path, digest))
    return path


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory tree (names, types, modes, contents, link targets)."""
    if not path.is_dir():
        return file_digest(path)
    tree = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(dirs + files):
            full = Path(root) / name
            info = full.lstat()
            rel = full.relative_to(path).as_posix()
            if stat.S_ISLNK(info.st_mode):
                entry = f"l {rel} {os.readlink(full)}"
            elif stat.S_ISREG(info.st_mode):
                entry = f"f {rel} {stat.S_IMODE(info.st_mode):o} {file_digest(full).removeprefix('sha256:')}"
            elif stat.S_ISDIR(info.st_mode):
                entry = f"d {rel} {stat.S_IMODE(info.st_mode):o}"
            else:
                entry = f"o {rel}"
            tree.update(entry.encode() + b"\0")
    return "sha256:" + tree.hexdigest()


def hostname(value: Any) -> str:
    """A valid host name (RFC 1123), optionally fully qualified."""
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
    """Package specs as the package manager reads them: names, `name=version`, globs (`kernel-*`),
    groups (`@Xfce Desktop`), provides (`perl(Foo)`), paths. A list, or a comma-separated string like
    virt-customize's --install. Each spec is one argument of the manager's command line (no shell),
    so only what cannot be a spec is refused: nothing, a leading `-` (an option), shell syntax,
    control characters."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError("expected a non-empty list of package names")
    specs = []
    for item in items:
        spec = item.strip(" \t") if isinstance(item, str) else item
        if not isinstance(spec, str) or not spec or spec.startswith("-") or _NOT_IN_PACKAGE_SPEC.search(spec):
            raise ValueError(f"'{item}' is not a package name or spec")
        specs.append(spec)
    return tuple(specs)


def user_name(value: Any) -> str:
    """A login name."""
    name = text(value)
    if not _USER.match(name) or len(name) > 32:
        raise ValueError(f"'{name}' is not a valid user name")
    return name


def group_name(value: Any) -> str:
    """A group name."""
    name = text(value)
    if not _GROUP.match(name) or len(name) > 32:
        raise ValueError(f"'{name}' is not a valid group name")
    return name


def names(value: Any, what: str = "service") -> tuple[str, ...]:
    """One name or a list of names (services, for example); no shell metacharacters."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"expected a {what} name or a list of them")
    for item in items:
        if not isinstance(item, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9@_.:\\-]*$", item):
            raise ValueError(f"'{item}' is not a {what} name")
    return tuple(items)


def pair(value: Any, first: str, second: str) -> tuple[str, str]:
    """A table {first=…, second=…} or virt-customize's "FIRST:SECOND" string (split at the first ':')."""
    if isinstance(value, str):
        left, sep, right = value.partition(":")
        if not sep:
            raise ValueError(f"expected \"{first.upper()}:{second.upper()}\" or a table with '{first}' and '{second}'")
        return left, right
    table = keys(value, required=(first, second))
    if not all(isinstance(table[k], str) for k in (first, second)):
        raise ValueError(f"'{first}' and '{second}' must be strings")
    return table[first], table[second]


def keys(value: Any, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A table with exactly the given required keys and some of the optional ones."""
    if not isinstance(value, dict):
        expected = ", ".join(required + optional)
        raise ValueError(f"expected a table with {expected}")
    allowed = required + optional
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key '{unknown[0]}' (expected {', '.join(repr(k) for k in allowed)})")
    missing = [k for k in required if k not in value]
    if missing:
        raise ValueError(f"missing key '{missing[0]}'")
    return value


def mode(value: Any) -> int:
    """File permissions: virt-customize's string (octal with a leading 0, else decimal) or a TOML integer.

    A string of three or four octal digits without the leading 0 (\"755\") is refused: virt-customize
    would read it as the decimal number 755 (mode 01363), which is never what anyone means.
    """
    if isinstance(value, bool):
        raise ValueError("expected permissions such as \"0755\" or 0o755")
    if isinstance(value, int):
        number = value
    else:
        raw = text(value)
        if not raw.isdigit():
            raise ValueError(f"'{raw}' is not a permission number such as 0755")
        if raw.startswith("0"):
            number = int(raw, 8) if set(raw) <= set("01234567") else -1
            if number < 0:
                raise ValueError(f"'{raw}' starts with 0 but is not an octal number")
        elif len(raw) in (3, 4) and set(raw) <= set("01234567"):
            raise ValueError(f"'{raw}' is ambiguous: write 0{raw} for octal "
                             f"(virt-customize would read it as decimal {raw}, mode 0{int(raw):o})")
        else:
            number = int(raw)
    if not 0 <= number <= 0o7777:
        raise ValueError(f"permissions {value!r} are out of range (0 to 07777)")
    return number


def owner_id(value: Any, what: str) -> int | str:
    """A numeric uid/gid, or a user/group name resolved in the guest."""
    if isinstance(value, bool):
        raise ValueError(f"expected a numeric {what} id or a name")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    elif isinstance(value, str) and value and value[0] == "-" and value[1:].isdigit():
        number = int(value)
    else:
        return user_name(value) if what == "user" else group_name(value)
    if number < -1 or number > 2**32 - 2:
        raise ValueError(f"{what} id {number} is out of range")
    return number


def _kind(value: Any) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", dict: "a table", list: "an array",
            float: "a number"}.get(type(value), type(value).__name__)
