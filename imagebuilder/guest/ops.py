"""The one registry of customization operations, named after virt-customize's (dashes as underscores).

Each operation is declared once: its argument parser (TOML value → normalized value), its
apply function (runs in the appliance), a one-line doc, and how to describe it without secrets.
The registry drives recipe validation and `imagebuilder ops`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebuilder.errors import GuestError
from imagebuilder.guest import args, firstboot, packages, passwords
from imagebuilder.guest.args import ArgContext
from imagebuilder.guest.context import GuestContext


@dataclass(frozen=True)
class Op:
    """One operation: `parse` checks a recipe value, `apply` performs it in the guest."""

    name: str
    doc: str
    parse: Callable[[Any, ArgContext], Any]
    apply: Callable[[GuestContext, Any], None]
    describe: Callable[[Any], str] = repr
    needs_network: bool = False


REGISTRY: dict[str, Op] = {}


def operation(name: str, doc: str, parse: Callable[[Any, ArgContext], Any], *,
              describe: Callable[[Any], str] = repr, needs_network: bool = False):
    """Register the decorated apply function as operation `name`."""
    def register(apply: Callable[[GuestContext, Any], None]) -> Callable[[GuestContext, Any], None]:
        REGISTRY[name] = Op(name, doc, parse, apply, describe, needs_network)
        return apply
    return register


def _plain(parser: Callable[[Any], Any]) -> Callable[[Any, ArgContext], Any]:
    return lambda value, _ctx: parser(value)


def _guest_pair(first: str, second: str) -> Callable[[Any, ArgContext], tuple[str, str]]:
    def parse(value: Any, _ctx: ArgContext) -> tuple[str, str]:
        left, right = args.pair(value, first, second)
        return args.guest_path(left), right
    return parse


def _host_to_guest(want_dir: bool | None) -> Callable[[Any, ArgContext], tuple[Path, str]]:
    def parse(value: Any, ctx: ArgContext) -> tuple[Path, str]:
        local, remote = args.pair(value, "from", "to")
        return args.host_path(local, ctx, want_dir), args.guest_path(remote)
    return parse


@operation("hostname", "Set the host name (/etc/hostname and /etc/hosts).", _plain(args.hostname))
def _hostname(ctx: GuestContext, name: str) -> None:
    g = ctx.g
    g.write("/etc/hostname", name + "\n")
    if g.is_file("/etc/hosts"):
        short = name.split(".")[0]
        lines = [ln for ln in g.read_file("/etc/hosts").decode().splitlines() if not ln.startswith("127.0.1.1")]
        lines.insert(1 if lines else 0, f"127.0.1.1\t{name} {short}" if short != name else f"127.0.1.1\t{name}")
        g.write("/etc/hosts", "\n".join(lines) + "\n")


@operation("timezone", "Set the time zone (a tz database name such as Europe/Paris).", _plain(args.timezone))
def _timezone(ctx: GuestContext, zone: str) -> None:
    g = ctx.g
    zonefile = f"/usr/share/zoneinfo/{zone}"
    if not g.exists(zonefile):
        raise GuestError(f"time zone '{zone}' is not installed in the guest ({zonefile} is missing)")
    g.ln_sf(zonefile, "/etc/localtime")
    if g.is_file("/etc/timezone") or ctx.os.get("package_management") == "apt":
        g.write("/etc/timezone", zone + "\n")


@operation("write", "Write CONTENT to a guest file, replacing it: { path, content } or \"FILE:CONTENT\".",
           _guest_pair("path", "content"), describe=lambda a: f"{a[0]} ({len(a[1])} bytes)")
def _write(ctx: GuestContext, arg: tuple[str, str]) -> None:
    ctx.g.write(arg[0], arg[1])


@operation("append_line", "Append a line to a guest file, adding a newline before it if needed: { path, line }.",
           _guest_pair("path", "line"))
def _append_line(ctx: GuestContext, arg: tuple[str, str]) -> None:
    path, line = arg
    g = ctx.g
    if g.exists(path):
        current = g.read_file(path)
        prefix = b"" if not current or current.endswith(b"\n") else b"\n"
        g.write_append(path, prefix + line.encode() + b"\n")
    else:
        g.write(path, line + "\n")


@operation("mkdir", "Create a guest directory and its parents.", _plain(args.guest_path))
def _mkdir(ctx: GuestContext, path: str) -> None:
    ctx.g.mkdir_p(path)


@operation("copy_in", "Copy a host file or directory (recursively) into a guest directory: { from, to }.",
           _host_to_guest(None), describe=lambda a: f"{a[0]} -> {a[1]}")
def _copy_in(ctx: GuestContext, arg: tuple[Path, str]) -> None:
    local, remote = arg
    ctx.g.mkdir_p(remote)
    ctx.g.copy_in(str(local), remote)


@operation("upload", "Upload a host file to a guest file or directory: { from, to } or \"FILE:DEST\".",
           _host_to_guest(False), describe=lambda a: f"{a[0]} -> {a[1]}")
def _upload(ctx: GuestContext, arg: tuple[Path, str]) -> None:
    local, remote = arg
    if ctx.g.is_dir(remote):
        remote = posixpath.join(remote, local.name)
    ctx.g.upload(str(local), remote)


@operation("delete", "Delete a guest file or directory recursively; shell wildcards are expanded.",
           _plain(args.guest_path))
def _delete(ctx: GuestContext, pattern: str) -> None:
    for path in ctx.g.glob_expand(pattern) or []:
        ctx.g.rm_rf(path)


@operation("run_command", "Run a shell command in the guest (offline, in the appliance); it must exit 0.",
           _plain(args.text))
def _run_command(ctx: GuestContext, command: str) -> None:
    ctx.sh(command)


@operation("install", "Install packages with the guest's own package manager (needs the appliance network).",
           _plain(args.packages), describe=lambda a: ", ".join(a), needs_network=True)
def _install(ctx: GuestContext, names: tuple[str, ...]) -> None:
    manager = ctx.os.get("package_management", "unknown")
    try:
        ctx.sh(packages.install_command(manager, names))
    except GuestError as exc:
        raise GuestError(f"installing {', '.join(names)} failed: {exc}") from None


@operation("root_password", "Set root's password: file:PATH, password:TEXT, disabled, locked:…, or { random = SAVE_TO }.",
           passwords.parse, describe=lambda spec: spec.describe())
def _root_password(ctx: GuestContext, spec: passwords.PasswordSpec) -> None:
    shadow = ctx.g.read_file("/etc/shadow").decode()
    try:
        field = passwords.shadow_field(spec)
    except ValueError as exc:
        raise GuestError(str(exc)) from None
    ctx.g.write("/etc/shadow", passwords.set_in_shadow(shadow, "root", field))


def _parse_ssh_inject(value: Any, ctx: ArgContext) -> tuple[str, str]:
    """virt-customize's USER:file:PATH / USER:string:KEY, or a table { user, file | key }."""
    if isinstance(value, dict):
        extra = set(value) - {"user", "file", "key"}
        if extra or "user" not in value or len(set(value) & {"file", "key"}) != 1:
            raise ValueError("expected { user = \"…\", file = \"KEY.pub\" } or { user = \"…\", key = \"ssh-… …\" }")
        user, kind, item = value["user"], ("file" if "file" in value else "string"), value.get("file", value.get("key"))
    else:
        user, _, rest = args.text(value).partition(":")
        kind, _, item = rest.partition(":")
        if kind not in ("file", "string") or not item:
            raise ValueError("expected \"USER:file:KEY.pub\" or \"USER:string:KEY\"")
    user = args.user_name(user)
    key = args.host_path(item, ctx).read_text() if kind == "file" else args.text(item)
    key = key.strip()
    if not key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError("the key does not look like an OpenSSH public key")
    return user, key


@operation("ssh_inject", "Add a public key to a user's ~/.ssh/authorized_keys: \"USER:file:KEY.pub\" or { user, file }.",
           _parse_ssh_inject, describe=lambda a: f"{a[0]}: {a[1].split()[0]} key")
def _ssh_inject(ctx: GuestContext, arg: tuple[str, str]) -> None:
    user, key = arg
    g = ctx.g
    entry = next((ln.split(":") for ln in g.read_file("/etc/passwd").decode().splitlines()
                  if ln.split(":")[0] == user), None)
    if entry is None or len(entry) < 6:
        raise GuestError(f"user '{user}' does not exist in the guest")
    uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
    ssh_dir, keys = f"{home}/.ssh", f"{home}/.ssh/authorized_keys"
    if not g.is_dir(ssh_dir):
        g.mkdir_p(ssh_dir)
        g.chown(uid, gid, ssh_dir)
        g.chmod(0o700, ssh_dir)
    existing = g.read_file(keys).decode() if g.exists(keys) else ""
    if key not in existing.splitlines():
        sep = "" if not existing or existing.endswith("\n") else "\n"
        g.write(keys, existing + sep + key + "\n")
    g.chown(uid, gid, keys)
    g.chmod(0o600, keys)


@operation("firstboot_command", "Run a shell command once, at the guest's first boot.", _plain(args.text))
def _firstboot_command(ctx: GuestContext, command: str) -> None:
    firstboot.add_script(ctx.g, command.split()[0] if command.split() else "command", command)

