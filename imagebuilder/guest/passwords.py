"""Password selectors (virt-customize's syntax), crypt hashing and /etc/shadow edits.

Selectors: `password:TEXT`, `file:PATH` (first line of the file), `env:VAR` (the value of an
environment variable of the build, read when the step runs), `random`, `disabled`, and
`locked` / `locked:SELECTOR`; tables `{ password = … }`, `{ file = … }`, `{ env = "VAR" }`,
`{ random = "SAVE_TO" }` with an optional `locked = true`. With --no-inline-secrets (ArgContext
`inline_secrets=False`) a password written in the recipe itself is refused.

A random password is never printed (virt-customize prints it on stdout; that ends up in CI logs).
It is written to a file readable by its owner only: the path given in `{ random = "FILE" }`, or for
the plain `random` selector (as found in commands files) `RECIPE-STEM.USER.password` beside the
recipe. Clear text lives only in memory otherwise: never logged, put in a manifest, or passed on
a command line. Hashes are SHA-512 crypt unless a `password_crypto` step says otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebuilder.values import ArgContext, host_path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

CRYPTOS = ("md5", "sha256", "sha512", "yescrypt")
DEFAULT_CRYPTO = "sha512"


@dataclass(frozen=True)
class PasswordSpec:
    """How to set an account's password; `kind` is password, file, env, random or disabled."""

    kind: str
    source: str | Path | None = None
    locked: bool = False
    save_to: Path | None = None

    def describe(self) -> str:
        """A text for logs and manifests that never contains the password."""
        what = {"password": "inline password", "file": f"from file {self.source}",
                "env": f"from environment variable {self.source}",
                "random": f"random, saved to {self.save_to}", "disabled": "disabled"}[self.kind]
        return f"locked, {what}" if self.locked else what


def default_save_path(ctx: ArgContext, user: str) -> Path:
    """Where a plain `random` selector saves the password of `user`."""
    if ctx.recipe_file is not None:
        return ctx.recipe_file.resolve().parent / f"{ctx.recipe_file.stem}.{user}.password"
    return ctx.base_dir / f"{user}.password"


def parse(value: Any, ctx: ArgContext, user: str = "root") -> PasswordSpec:
    """A selector string or table (see the module doc) for the password of `user`."""
    if isinstance(value, dict):
        return _parse_table(value, ctx)
    if not isinstance(value, str) or not value:
        raise ValueError("expected a selector such as \"file:secrets/root.pw\" or a table { file = \"…\" }")
    locked = value == "locked" or value.startswith("locked:")
    if value == "locked":
        return PasswordSpec("disabled", None, True)
    if locked:
        value = value[len("locked:"):]
    kind, sep, rest = value.partition(":")
    if kind == "password" and sep:
        return PasswordSpec("password", _inline(rest, ctx), locked)
    if kind == "file" and rest:
        return PasswordSpec("file", host_path(rest, ctx, secret=True), locked)
    if kind == "env" and rest:
        return PasswordSpec("env", _env_name(rest), locked)
    if kind == "disabled" and not sep:
        return PasswordSpec("disabled", None, locked)
    if kind == "random" and not sep:
        return PasswordSpec("random", None, locked, default_save_path(ctx, user))
    # never echo the value: a mistyped selector ("pasword:…") may hold the password itself
    raise ValueError("not a password selector (use password:TEXT, file:PATH, env:VAR, random, disabled "
                     "or locked:…)")


def _inline(text: str, ctx: ArgContext) -> str:
    if not ctx.inline_secrets:
        raise ValueError("a password written in the recipe is refused (--no-inline-secrets); "
                         "use file:PATH or env:VAR")
    return text


def _env_name(name: str) -> str:
    """An environment variable's name; it must be set (and not empty) when the recipe is read."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"'{name}' is not an environment variable name")
    if not os.environ.get(name):
        raise ValueError(f"environment variable {name} is not set (or empty)")
    return name


def _parse_table(value: dict[str, Any], ctx: ArgContext) -> PasswordSpec:
    keys = set(value) - {"locked"}
    locked = value.get("locked", False)
    if not isinstance(locked, bool):
        raise ValueError("'locked' must be true or false")
    if len(keys) != 1 or not keys <= {"file", "password", "env", "random"}:
        raise ValueError("expected exactly one of 'file', 'password', 'env' or 'random' (and optionally 'locked')")
    (kind,) = keys
    item = value[kind]
    if not isinstance(item, str) or (not item and kind != "password"):
        raise ValueError(f"'{kind}' must be a non-empty string")
    if kind == "file":
        return PasswordSpec("file", host_path(item, ctx, secret=True), locked)
    if kind == "env":
        return PasswordSpec("env", _env_name(item), locked)
    if kind == "random":
        base = ctx.recipe_file.resolve().parent if ctx.recipe_file else ctx.base_dir
        return PasswordSpec("random", None, locked, ctx.inside(item, (base / item).resolve()))
    return PasswordSpec("password", _inline(item, ctx), locked)


def crypto(value: Any) -> str:
    """A password_crypto argument."""
    if value not in CRYPTOS:
        raise ValueError(f"unknown algorithm {value!r}: use {', '.join(CRYPTOS)}")
    return value


def shadow_field(spec: PasswordSpec, method: str = DEFAULT_CRYPTO) -> str:
    """The password field of a shadow line: a fresh hash, '*' when disabled, with '!' in front if locked."""
    field = "*" if spec.kind == "disabled" else hash_password(_clear_text(spec), method)
    return "!" + field if spec.locked else field


def hash_password(clear: str, method: str = DEFAULT_CRYPTO) -> str:
    """crypt(3) of clear with a new random salt."""
    if method == "yescrypt":
        salt = _gensalt(b"$y$")
    else:
        salt = crypt.mksalt({"md5": crypt.METHOD_MD5, "sha256": crypt.METHOD_SHA256,
                             "sha512": crypt.METHOD_SHA512}[method])
    hashed = crypt.crypt(clear, salt)
    if not hashed or not hashed.startswith(salt[:3]):
        raise ValueError(f"the host's crypt library cannot make {method} hashes")
    return hashed


def _gensalt(prefix: bytes) -> str:
    name = ctypes.util.find_library("crypt")
    if name is None:
        raise ValueError("libcrypt is missing on the host; it is needed for yescrypt")
    lib = ctypes.CDLL(name)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    salt = lib.crypt_gensalt(prefix, 0, None, 0)
    if not salt:
        raise ValueError("the host's libcrypt cannot make yescrypt salts")
    return salt.decode()


def read_secret(spec: PasswordSpec) -> str:
    """The first line of a file:PATH or env:VAR selector's secret (a key's passphrase, say)."""
    return _clear_text(spec)


def _clear_text(spec: PasswordSpec) -> str:
    if spec.kind == "password":
        return str(spec.source)
    if spec.kind == "file":
        lines = Path(spec.source).read_text().splitlines()
        if not lines or not lines[0]:
            raise ValueError(f"password file {spec.source} is empty")
        return lines[0]
    if spec.kind == "env":
        value = os.environ.get(str(spec.source), "").split("\n")[0]
        if not value:
            raise ValueError(f"environment variable {spec.source} is not set (or empty)")
        return value
    password = secrets.token_urlsafe(15)  # 120 bits, like virt-customize's random passwords
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
