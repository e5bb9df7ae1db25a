"""Password selectors (virt-customize's syntax), SHA-512 crypt hashing and /etc/shadow edits.

A password's clear text lives only in memory here: it is never logged, put in a manifest,
or passed on a command line.
"""

from __future__ import annotations

import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebuilder.guest.args import ArgContext, host_path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt


@dataclass(frozen=True)
class PasswordSpec:
    """How to set an account's password; `kind` is password, file, random or disabled."""

    kind: str
    source: str | Path | None = None
    locked: bool = False
    save_to: Path | None = None

    def describe(self) -> str:
        """A text for logs and manifests that never contains the password."""
        what = {"password": "inline password", "file": f"from file {self.source}",
                "random": f"random, saved to {self.save_to}", "disabled": "disabled"}[self.kind]
        return f"locked, {what}" if self.locked else what


def parse(value: Any, ctx: ArgContext) -> PasswordSpec:
    """`password:X`, `file:PATH`, `disabled`, `locked:…`, or a table {file=…}, {password=…}, {random=SAVE_TO}."""
    if isinstance(value, dict):
        return _parse_table(value, ctx)
    if not isinstance(value, str) or not value:
        raise ValueError("expected a selector such as \"file:secrets/root.pw\" or a table { file = \"…\" }")
    locked = value.startswith("locked:")
    if locked:
        value = value[len("locked:"):]
    kind, _, rest = value.partition(":")
    if kind == "password" and rest:
        return PasswordSpec("password", rest, locked)
    if kind == "file" and rest:
        return PasswordSpec("file", host_path(rest, ctx), locked)
    if kind == "disabled" and not rest:
        return PasswordSpec("disabled", None, locked)
    if kind == "random":
        raise ValueError("a random password must be saved somewhere: write { random = \"FILE\" }")
    raise ValueError(f"'{kind}' is not a password selector (use password:, file:, random, disabled or locked:)")


def _parse_table(value: dict[str, Any], ctx: ArgContext) -> PasswordSpec:
    keys = set(value) - {"locked"}
    locked = value.get("locked", False)
    if not isinstance(locked, bool):
        raise ValueError("'locked' must be true or false")
    if len(keys) != 1 or not keys <= {"file", "password", "random"}:
        raise ValueError("expected exactly one of 'file', 'password' or 'random' (and optionally 'locked')")
    (kind,) = keys
    item = value[kind]
    if not isinstance(item, str) or not item:
        raise ValueError(f"'{kind}' must be a non-empty string")
    if kind == "file":
        return PasswordSpec("file", host_path(item, ctx), locked)
    if kind == "random":
        return PasswordSpec("random", None, locked, (ctx.base_dir / item).resolve())
    return PasswordSpec("password", item, locked)


def shadow_field(spec: PasswordSpec) -> str:
    """The second field of the shadow line: a fresh SHA-512 crypt hash, '*' for disabled, '!' prefix if locked."""
    if spec.kind == "disabled":
        field = "*"
    else:
        field = crypt.crypt(_clear_text(spec), crypt.mksalt(crypt.METHOD_SHA512))
    return "!" + field if spec.locked else field


def _clear_text(spec: PasswordSpec) -> str:
    if spec.kind == "password":
        return str(spec.source)
    if spec.kind == "file":
        lines = Path(spec.source).read_text().splitlines()
        if not lines or not lines[0]:
            raise ValueError(f"password file {spec.source} is empty")
        return lines[0]
    password = secrets.token_urlsafe(12)
    _save_secret(spec.save_to, password)
    return password


def _save_secret(path: Path, value: str) -> None:
    """Write value to path, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(value + "\n")


def set_in_shadow(shadow: str, user: str, field: str) -> str:
    """Return the shadow file text with `user`'s password field replaced; KeyError if no such user."""
    out, found = [], False
    for line in shadow.splitlines():
        parts = line.split(":")
        if parts[0] == user and len(parts) > 2:
            parts[1] = field
            found = True
            line = ":".join(parts)
        out.append(line)
    if not found:
        raise KeyError(user)
    return "\n".join(out) + "\n"
