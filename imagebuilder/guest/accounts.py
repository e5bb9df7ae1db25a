"""Accounts in the guest: look-ups in /etc/passwd and /etc/group, passwords, SSH keys, new users."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder import values
from imagebuilder.errors import GuestError
from imagebuilder.guest import passwords
from imagebuilder.guest.context import GuestContext
from imagebuilder.values import ArgContext

_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-")


@dataclass(frozen=True)
class Account:
    """One /etc/passwd entry."""

    name: str
    uid: int
    gid: int
    home: str


def lookup_user(g: Any, name: str) -> Account | None:
    """The passwd entry of `name`, or None."""
    for line in g.read_file("/etc/passwd").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 6 and parts[0] == name:
            return Account(name, int(parts[2]), int(parts[3]), parts[5])
    return None


def lookup_group(g: Any, name: str) -> int | None:
    """The gid of group `name`, or None."""
    if not g.is_file("/etc/group"):
        return None
    for line in g.read_file("/etc/group").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[0] == name:
            return int(parts[2])
    return None


def numeric_owner(g: Any, user: int | str, group: int | str) -> tuple[int, int]:
    """uid and gid, resolving names with the guest's own passwd and group files."""
    if isinstance(user, str):
        account = lookup_user(g, user)
        if account is None:
            raise GuestError(f"user '{user}' does not exist in the guest")
        user = account.uid
    if isinstance(group, str):
        gid = lookup_group(g, group)
        if gid is None:
            raise GuestError(f"group '{group}' does not exist in the guest")
        group = gid
    return user, group


# --- passwords -------------------------------------------------------------------------------

def set_password(ctx: GuestContext, user: str, spec: passwords.PasswordSpec) -> None:
    """Replace the password field of `user` in /etc/shadow (hash made here, never on a command line)."""
    g = ctx.g
    if not g.is_file("/etc/shadow"):
        raise GuestError("the guest has no /etc/shadow")
    try:
        field_value = passwords.shadow_field(spec, ctx.state.get("password_crypto", passwords.DEFAULT_CRYPTO))
    except (ValueError, OSError) as exc:
        raise GuestError(f"the password of '{user}': {exc}") from None
    try:
        text = passwords.set_in_shadow(g.read_file("/etc/shadow").decode(), user, field_value)
    except KeyError:
        raise GuestError(f"user '{user}' does not exist in the guest (no /etc/shadow entry)") from None
    g.write("/etc/shadow", text)  # write() keeps the file's mode and owner
    if spec.kind == "random":
        ctx.reporter.info(f"    random password of {user} saved to {spec.save_to}")


# --- SSH keys --------------------------------------------------------------------------------

def parse_key_source(item: str, ctx: ArgContext, kind: str | None = None) -> list[str]:
    """Public keys from a selector: kind 'file' (a host file) or 'string' (the key itself)."""
    if kind is None:
        kind = "string" if item.startswith(_KEY_PREFIXES) else "file"
    if kind == "file":
        path = values.host_path(item, ctx)
        keys = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    else:
        keys = [item.strip()]
    if not keys:
        raise ValueError("no public key found")
    for key in keys:
        if not key.startswith(_KEY_PREFIXES) and " ssh-" not in key and " ecdsa-" not in key:
            raise ValueError("the key does not look like an OpenSSH public key")
    return keys


def default_public_key(ctx: ArgContext) -> list[str]:
    """Like ssh-copy-id: the most recently changed ~/.ssh/id*.pub of the user running imagebuilder."""
    if ctx.root is not None:
        raise ValueError("without a selector the key is read from ~/.ssh, outside the recipe's directory "
                         "(--strict-paths); write USER:file:KEY.pub")
    candidates = sorted(Path(os.path.expanduser("~/.ssh")).glob("id*.pub"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ValueError("no selector given and no ~/.ssh/id*.pub found: write USER:file:KEY.pub")
    return parse_key_source(str(candidates[-1]), ctx, "file")


def inject_keys(ctx: GuestContext, user: str, keys: tuple[str, ...]) -> None:
    """Append keys to ~USER/.ssh/authorized_keys, making the directory (0700) and file (0600) as needed."""
    g = ctx.g
    account = lookup_user(g, user)
    if account is None:
        raise GuestError(f"user '{user}' does not exist in the guest")
    if not g.is_dir(account.home):
        raise GuestError(f"the home directory of '{user}' ({account.home}) does not exist in the guest")
    ssh_dir, path = f"{account.home}/.ssh", f"{account.home}/.ssh/authorized_keys"
    if not g.exists(ssh_dir):
        g.mkdir(ssh_dir)
        g.chmod(0o700, ssh_dir)
        g.chown(account.uid, account.gid, ssh_dir)
    existing = g.read_file(path).decode(errors="replace") if g.exists(path) else ""
    new = [k for k in keys if k not in existing.splitlines()]
    if not g.exists(path):
        g.touch(path)
    g.chmod(0o600, path)
    g.chown(account.uid, account.gid, path)
    if new:
        sep = "\n" if existing and not existing.endswith("\n") else ""
        g.write_append(path, (sep + "\n".join(new) + "\n").encode())


# --- users -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class UserSpec:
    """A user to create (or to update, if the guest already has it)."""

    name: str
    uid: int | None = None
    group: str | None = None
    groups: tuple[str, ...] = ()
    shell: str | None = None
    home: str | None = None
    comment: str | None = None
    system: bool = False
    password: passwords.PasswordSpec | None = None
    ssh_keys: tuple[str, ...] = field(default=(), repr=False)

    def describe(self) -> str:
        """For logs and the manifest (no secrets)."""
        parts = [self.name]
        if self.groups:
            parts.append(f"groups {','.join(self.groups)}")
        if self.shell:
            parts.append(f"shell {self.shell}")
        if self.password:
            parts.append(f"password {self.password.describe()}")
        if self.ssh_keys:
            parts.append(f"{len(self.ssh_keys)} ssh key(s)")
        return ", ".join(parts)


_USER_KEYS = ("name", "uid", "group", "groups", "shell", "home", "comment", "system", "password", "ssh_keys")


def parse_user(value: Any, ctx: ArgContext) -> UserSpec:
    """`"NAME"` or `{ name, uid, group, groups, shell, home, comment, system, password, ssh_keys }`."""
    if isinstance(value, str):
        return UserSpec(values.user_name(value))
    table = values.keys(value, required=("name",), optional=_USER_KEYS[1:])
    name = values.user_name(table["name"])
    uid = table.get("uid")
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid < 2**31):
        raise ValueError("'uid' must be a number")
    groups = table.get("groups", [])
    if not isinstance(groups, list):
        raise ValueError("'groups' must be an array of group names")
    for key in ("shell", "home"):
        if key in table:
            values.guest_path(table[key])
    if "comment" in table and (not isinstance(table["comment"], str) or ":" in table["comment"]
                               or "\n" in table["comment"]):
        raise ValueError("'comment' must be a string without ':' or newlines")
    if not isinstance(table.get("system", False), bool):
        raise ValueError("'system' must be true or false")
    keys_value = table.get("ssh_keys", [])
    if not isinstance(keys_value, list) or not all(isinstance(k, str) and k for k in keys_value):
        raise ValueError("'ssh_keys' must be an array of key files or keys")
    keys: list[str] = []
    for item in keys_value:
        kind, sep, rest = item.partition(":")
        keys += parse_key_source(rest, ctx, kind) if sep and kind in ("file", "string") else \
            parse_key_source(item, ctx)
    password = passwords.parse(table["password"], ctx, name) if "password" in table else None
    return UserSpec(name, uid, values.group_name(table["group"]) if "group" in table else None,
                    tuple(values.group_name(g) for g in groups), table.get("shell"), table.get("home"),
                    table.get("comment"), table.get("system", False), password, tuple(keys))


def ensure_user(ctx: GuestContext, spec: UserSpec) -> None:
    """Create the user with useradd (or update it with usermod), then its password and keys."""
    g = ctx.g
    exists = lookup_user(g, spec.name) is not None
    if not exists:
        argv = ["useradd", "-m"]
        if spec.system:
            argv.append("-r")
        argv += _options(spec)
        if spec.uid is not None:
            argv += ["-u", str(spec.uid)]
        if spec.group:
            argv += ["-g", spec.group]
        if spec.home:
            argv += ["-d", spec.home]
        _command(g, argv + [spec.name], spec.name)
    else:
        options = _options(spec)
        if spec.group:
            options += ["-g", spec.group]
        if options:
            _command(g, ["usermod", "-a", *options, spec.name] if spec.groups else
                     ["usermod", *options, spec.name], spec.name)
    if spec.password:
        set_password(ctx, spec.name, spec.password)
    if spec.ssh_keys:
        inject_keys(ctx, spec.name, spec.ssh_keys)


def _options(spec: UserSpec) -> list[str]:
    argv: list[str] = []
    if spec.groups:
        argv += ["-G", ",".join(spec.groups)]
    if spec.shell:
        argv += ["-s", spec.shell]
    if spec.comment is not None:
        argv += ["-c", spec.comment]
    return argv


def _command(g: Any, argv: list[str], user: str) -> None:
    try:
        g.command(argv)
    except GuestError as exc:
        raise GuestError(f"{argv[0]} for '{user}' failed: {exc.message}") from None


def remove_users(g: Any, minimum_uid: int = 1000, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove ordinary accounts (uid ≥ minimum_uid, except nobody) with their homes and mail; names removed."""
    passwd = g.read_file("/etc/passwd").decode(errors="replace").splitlines()
    doomed = []
    for line in passwd:
        parts = line.split(":")
        if len(parts) >= 6 and parts[2].isdigit() and minimum_uid <= int(parts[2]) < 65534 \
                and parts[0] not in keep and parts[0] != "root":
            doomed.append((parts[0], parts[5]))
    if not doomed:
        return []
    names = {name for name, _ in doomed}
    for path in ("/etc/passwd", "/etc/shadow"):
        if g.is_file(path):
            lines = g.read_file(path).decode(errors="replace").splitlines()
            g.write(path, "".join(ln + "\n" for ln in lines if ln.split(":")[0] not in names))
    for path in ("/etc/group", "/etc/gshadow"):
        if g.is_file(path):
            out = []
            for line in g.read_file(path).decode(errors="replace").splitlines():
                parts = line.split(":")
                if len(parts) >= 4:
                    members = [m for m in parts[3].split(",") if m and m not in names]
                    parts[3] = ",".join(members)
                    if parts[0] in names and not members:
                        continue  # the user's own group, now empty
                out.append(":".join(parts))
            g.write(path, "".join(ln + "\n" for ln in out))
    for name, home in doomed:
        if home.startswith(("/home/", "/var/home/")):  # never a shared or system directory
            g.rm_rf(home)
        for spool in (f"/var/spool/mail/{name}", f"/var/mail/{name}"):
            g.rm_f(spool)
    return sorted(names)
