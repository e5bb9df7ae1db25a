"""Account operations: passwords, their hash algorithm, SSH keys and users."""

from __future__ import annotations

from typing import Any

from imagebuilder import values
from imagebuilder.guest import accounts, passwords
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.ops.registry import operation, plain
from imagebuilder.values import ArgContext


def _parse_password(value: Any, ctx: ArgContext) -> tuple[str, passwords.PasswordSpec]:
    if isinstance(value, str):
        user, sep, selector = value.partition(":")
        if not sep:
            raise ValueError("expected \"USER:SELECTOR\", e.g. \"alice:file:secrets/alice.pw\"")
        name = values.user_name(user)
        return name, passwords.parse(selector, ctx, name)
    if not isinstance(value, dict) or "user" not in value:
        raise ValueError("expected \"USER:SELECTOR\" or a table { user, file | password | random, locked }")
    name = values.user_name(value["user"])
    return name, passwords.parse({k: v for k, v in value.items() if k != "user"}, ctx, name)


@operation("root_password", "Set root's password: password:TEXT, file:PATH, random, disabled, locked:….",
           "SELECTOR", lambda v, c: passwords.parse(v, c, "root"), 'root_password = "file:secrets/root.pw"',
           table="{ file | password | random = SAVE_TO, locked }", describe=lambda spec: spec.describe(),
           details="Hashed with SHA-512 crypt (see password_crypto) in imagebuilder and written into "
                   "/etc/shadow. As in virt-customize, passwords are set after all the other steps, wherever "
                   "they are written. A random password is never printed: it is saved, readable by its owner "
                   "only, to `{ random = \"FILE\" }` or, for the plain `random` selector, to "
                   "`RECIPE.root.password` beside the recipe.")
def _root_password(ctx: GuestContext, spec: passwords.PasswordSpec) -> None:
    accounts.set_password(ctx, "root", spec)


@operation("password", "Set a user's password (the user must exist once the other steps ran): USER:SELECTOR.",
           "USER:SELECTOR",
           _parse_password, 'password = "alice:file:secrets/alice.pw"',
           table="{ user, file | password | random = SAVE_TO, locked }",
           describe=lambda a: f"{a[0]}: {a[1].describe()}",
           details="Selectors as for root_password; a plain `random` is saved to `RECIPE.USER.password` beside "
                   "the recipe. As in virt-customize it is set after all the other steps, so the user may be "
                   "created by a later step (`run_command = \"useradd -m bob\"`).")
def _password(ctx: GuestContext, arg: tuple[str, passwords.PasswordSpec]) -> None:
    accounts.set_password(ctx, arg[0], arg[1])


@operation("password_crypto", "Hash algorithm for every password the recipe sets: md5, sha256, sha512, yescrypt.",
           "md5|sha256|sha512|yescrypt", plain(passwords.crypto), 'password_crypto = "yescrypt"',
           details="As in virt-customize it applies to all passwords, wherever it appears; the last one wins. "
                   "The default is sha512.")
def _password_crypto(_ctx: GuestContext, _method: str) -> None:
    return None  # read before the steps run (see customize.py)


def _parse_ssh_inject(value: Any, ctx: ArgContext) -> tuple[str, tuple[str, ...]]:
    """virt-customize's USER[:file:PATH | :string:KEY], or a table { user, file | key }."""
    if isinstance(value, dict):
        table = values.keys(value, required=("user",), optional=("file", "key"))
        if len(set(table) & {"file", "key"}) != 1:
            raise ValueError("expected { user = \"…\", file = \"KEY.pub\" } or { user = \"…\", key = \"ssh-… …\" }")
        user = values.user_name(table["user"])
        kind = "file" if "file" in table else "string"
        return user, tuple(accounts.parse_key_source(values.text(table.get("file", table.get("key"))), ctx, kind))
    user, sep, selector = values.text(value).partition(":")
    user = values.user_name(user)
    if not sep:
        return user, tuple(accounts.default_public_key(ctx))
    kind, _, item = selector.partition(":")
    if kind not in ("file", "string") or not item:
        raise ValueError("expected \"USER\", \"USER:file:KEY.pub\" or \"USER:string:KEY\"")
    return user, tuple(accounts.parse_key_source(item, ctx, kind))


@operation("ssh_inject", "Add public keys to a user's ~/.ssh/authorized_keys (the user must exist).",
           "USER[:SELECTOR]", _parse_ssh_inject, 'ssh_inject = "root:file:keys/id.pub"',
           table="{ user, file | key }",
           describe=lambda a: f"{a[0]}: {len(a[1])} key(s)",
           details="SELECTOR is `file:KEY.pub` or `string:KEY`; without one, the newest ~/.ssh/id*.pub of "
                   "the user running imagebuilder (as ssh-copy-id picks it). ~/.ssh (0700) and "
                   "authorized_keys (0600) are made, owned by the user.")
def _ssh_inject(ctx: GuestContext, arg: tuple[str, tuple[str, ...]]) -> None:
    accounts.inject_keys(ctx, arg[0], arg[1])


@operation("user", "Create a user (or update an existing one) with groups, shell, password and SSH keys.",
           "NAME", accounts.parse_user,
           'user = { name = "alice", groups = ["sudo"], shell = "/bin/bash", password = "file:secrets/alice.pw", '
           'ssh_keys = ["keys/id.pub"] }',
           table="{ name, uid, group, groups, shell, home, comment, system, password, ssh_keys }",
           describe=lambda spec: spec.describe(), origin="imagebuilder",
           details="Runs the guest's useradd (with a home directory), or usermod if the user exists. "
                   "`password` takes a selector as root_password does; `ssh_keys` takes public key files "
                   "(relative to the recipe) or keys.")
def _user(ctx: GuestContext, spec: accounts.UserSpec) -> None:
    accounts.ensure_user(ctx, spec)
